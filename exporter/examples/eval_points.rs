//! Debug aid: evaluate a .frt velocity field at given points: `eval_points M.frt X.npy T.npy OUT.npy`
//! (X: [N, D], T: [N]); one row per call so scalar-t models work too.
use flowrt::format::AlignedBytes;
fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let bytes = AlignedBytes::copy_from(&std::fs::read(&a[1])?);
    let m = flowrt::Model::from_bytes(bytes.as_slice()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (x, shape) = flowrt_export::npy::read_f32(a[2].as_ref())?;
    let (t, _) = flowrt_export::npy::read_f32(a[3].as_ref())?;
    let d = m.state_dim();
    let mut arena = AlignedBytes::zeroed(
        m.required_arena_bytes(1)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let mut out = vec![0f32; x.len()];
    for r in 0..shape[0] {
        let mut f = flowrt::exec::CpuField::new(&m, 1, arena.as_mut_slice())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        f.eval_into(t[r], &x[r * d..(r + 1) * d], &mut out[r * d..(r + 1) * d])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    flowrt_export::npy::write_f32(a[4].as_ref(), &out, &shape)
}
