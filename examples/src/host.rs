//! Sampling from a Rust application through the host API (`flowrt-host`), the same calls the
//! `flowrt` CLI makes: a class-conditional model with classifier-free guidance, optionally as
//! an SDE, on any backend (`auto` picks one; the SDE runs on cpu and ort). The marked part of
//! `main` is the snippet in `docs/embed.md` (`tests/tests/doc_snippets.rs` checks it).
//!
//! ```sh
//! ./scripts/demo.sh    # writes out/demo/digits_unet.frt
//! cargo run --release -p flowrt-examples --bin host -- out/demo/digits_unet.frt cpu const:0.3
//! ```

use flowrt_host::{Backend, Frt, Noise, Request};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or("out/demo/digits_unet.frt".into());
    let backend: Backend = args.next().unwrap_or("auto".into()).parse()?;
    let sde = args.next();

    // README: host API (begin)
    let frt = Frt::open(&path)?; // read and validated once
    let mut req = Request::default() // typed overrides of the defaults baked into the file
        .steps(8)
        .label_cycle(10) // labels 0, 1, ..., 9, 0, ...
        .guidance(2.0)
        .null_label(10);
    if let Some(diffusion) = &sde {
        req = req.sde(diffusion); // Euler-Maruyama, e.g. "const:0.3", instead of the ODE
    }
    let out = frt.sample(backend, &req, Noise::Seed { seed: 0, num: 10 })?;
    // README: host API (end)

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
