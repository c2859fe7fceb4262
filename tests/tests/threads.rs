//! The CPU executor on several threads (`flowrt_host::parallel`, `--threads`): the rows of each
//! evaluation are split into blocks, one per thread (each evaluated in cache-sized chunks of
//! rows), so the samples must be byte-identical to
//! one thread's, for every thread count, with conditioning (labels, guidance's doubled batch,
//! a few-step model's step input) sliced along with the rows, and still match the committed
//! torchdiffeq references.

use flowrt::exec::CpuField;
use flowrt::field::{ConditionalField, Conditioning};
use flowrt::format::AlignedBytes;
use flowrt::{CpuOps, Model};
use flowrt_export::ExportOptions;
use flowrt_host::parallel::ParallelCpuField;
use flowrt_host::{Backend, Frt, Noise, Request};
use flowrt_tests::{fixtures_dir, max_abs_diff, npy};

fn export(onnx: &str) -> Vec<u8> {
    flowrt_export::export_onnx(&fixtures_dir().join(onnx), &ExportOptions::default())
        .unwrap_or_else(|e| panic!("export {onnx}: {e:#}"))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One evaluation of `rows` rows through a single `CpuField` and through `ParallelCpuField`
/// with 1..=4 blocks: the same bits.
fn parallel_eval_matches(onnx: &str, rows: usize, label: bool, step: Option<f32>) {
    let bytes = AlignedBytes::copy_from(&export(onnx));
    let model = Model::from_bytes(bytes.as_slice()).unwrap();
    let d = model.state_dim();
    let x: Vec<f32> = (0..rows * d)
        .map(|i| ((i * 7919) % 401) as f32 / 100.0 - 2.0)
        .collect();
    let labels: Vec<i64> = (0..rows as i64).map(|i| i % 10).collect();
    let cond = Conditioning {
        label: label.then_some(&labels[..]),
        step,
        ..Default::default()
    };
    let mut arena = AlignedBytes::zeroed(model.required_arena_bytes(rows).unwrap());
    let mut one = CpuField::new(&model, rows, arena.as_mut_slice()).unwrap();
    let mut want = vec![0f32; rows * d];
    one.eval_cond(0.375, &x, &cond, &mut want).unwrap();
    for parts in 1..=4 {
        let sizes = ParallelCpuField::arena_sizes(&model, rows, parts).unwrap();
        let mut arenas: Vec<AlignedBytes> = sizes.into_iter().map(AlignedBytes::zeroed).collect();
        let slices = arenas.iter_mut().map(|a| a.as_mut_slice()).collect();
        let mut par = ParallelCpuField::new(&model, rows, slices).unwrap();
        let mut got = vec![f32::NAN; rows * d];
        ConditionalField::eval_cond(&mut par, &mut CpuOps, 0.375, &x, &cond, &mut got).unwrap();
        assert_eq!(
            bits(&got),
            bits(&want),
            "{onnx}: {parts} blocks of {rows} rows"
        );
    }
}

#[test]
fn blocks_of_rows_evaluate_to_the_same_bits() {
    parallel_eval_matches("moons_icfm/model.ts.onnx", 7, false, None);
    parallel_eval_matches("digits_unet/model.ts.onnx", 6, true, None);
    parallel_eval_matches("digits_dit/model.ts.onnx", 5, true, None);
    parallel_eval_matches("moons_meanflow/model.ts.onnx", 9, false, Some(0.25));
    // More rows than one chunk (`parallel::chunk_rows`: 256 KB of activations, at least 16
    // rows): each block is evaluated in several chunks, labels sliced with them.
    for (onnx, rows, label) in [
        ("moons_icfm/model.ts.onnx", 1001, false),
        ("digits_unet/model.ts.onnx", 37, true),
    ] {
        let bytes = AlignedBytes::copy_from(&export(onnx));
        let model = Model::from_bytes(bytes.as_slice()).unwrap();
        let chunk = flowrt_host::parallel::chunk_rows(&model, rows).unwrap();
        assert!(
            2 * chunk < rows,
            "{onnx}: {rows} rows are one chunk of {chunk}"
        );
        parallel_eval_matches(onnx, rows, label, None);
    }
}

/// Samples through the host API with `threads` threads.
fn sample(frt: &Frt, req: impl Fn() -> Request, threads: usize, noise: &[f32]) -> Vec<f32> {
    frt.sample(
        Backend::Cpu,
        &req().threads(threads),
        Noise::Given(noise.to_vec()),
    )
    .unwrap_or_else(|e| panic!("{threads} threads: {e}"))
    .data
}

#[test]
fn samples_are_byte_identical_for_every_thread_count() {
    // The class-conditional UNet with classifier-free guidance (a doubled batch of labels and
    // null labels) at a batch big enough for every requested thread to get rows.
    let frt = Frt::from_vec(&export("digits_unet/model.ts.onnx"), "digits_unet").unwrap();
    let noise = npy(&fixtures_dir().join("digits_unet/noise.npy")).0;
    let req = || {
        Request::default()
            .method(flowrt::solver::Method::Rk4_38)
            .steps(2)
            .label_cycle(10)
            .guidance(2.0)
            .null_label(10)
    };
    let one = sample(&frt, req, 1, &noise);
    for threads in [2, 3, 4] {
        assert_eq!(
            bits(&sample(&frt, req, threads, &noise)),
            bits(&one),
            "digits_unet, {threads} threads"
        );
    }
}

#[test]
fn threaded_samples_still_match_torchdiffeq() {
    // moons_icfm at the reference's own batch, 8 rk4-38 steps, two threads.
    let dir = fixtures_dir().join("moons_icfm");
    let noise = npy(&dir.join("noise.npy")).0;
    let want = npy(&dir.join("samples/rk4-38_8.npy")).0;
    let frt = Frt::from_vec(&export("moons_icfm/model.ts.onnx"), "moons_icfm").unwrap();
    let req = || {
        Request::default()
            .method(flowrt::solver::Method::Rk4_38)
            .steps(8)
    };
    let two = sample(&frt, req, 2, &noise);
    assert_eq!(bits(&two), bits(&sample(&frt, req, 1, &noise)));
    let err = max_abs_diff(&two, &want);
    assert!(
        err < 5e-5,
        "moons_icfm rk4-38 x 8 on 2 threads: {err} from torchdiffeq"
    );
}
