//! Sampling from a Rust application through the host API (`flowrt-host`), the same calls the
//! `flowrt` CLI makes: a class-conditional model with classifier-free guidance, optionally as
//! an SDE, on any backend (`auto` picks one; the SDE runs on cpu and ort).
//!
//! ```sh
//! ./scripts/demo.sh    # writes out/demo/digits_unet.frt
//! cargo run --release -p flowrt-examples --bin host -- out/demo/digits_unet.frt cpu const:0.3
//! ```

use flowrt_host::{Backend, Frt, Noise, Request};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let frt = Frt::open(args.next().unwrap_or("out/demo/digits_unet.frt".into()))?;
    let backend: Backend = args.next().unwrap_or("auto".into()).parse()?;
    let mut req = Request::default()
        .steps(8)
        .label_cycle(10)
        .guidance(2.0)
        .null_label(10);
    if let Some(diffusion) = args.next() {
        req = req.sde(&diffusion);
    }
    let out = frt.sample(backend, &req, Noise::Seed { seed: 0, num: 10 })?;
    let r = &out.report;
    println!(
        "{} samples {:?} by {} x {} on {}",
        out.rows(),
        out.row_shape,
        r.method,
        r.steps,
        r.backend.name()
    );
    Ok(())
}
