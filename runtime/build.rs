//! Sets `cfg(flowrt_dsp)` for ARMv7E-M targets (Cortex-M4/M7: `thumbv7em-*`), whose DSP
//! extension (`SMLAD`, `SXTB16`) the full-integer kernels use (`src/ops/int8_packed.rs`).
//! The extension is part of ARMv7E-M; stable Rust does not expose it as a `target_feature`
//! cfg, so the target name decides. Every other target builds the portable kernels.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(flowrt_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em-") {
        println!("cargo::rustc-cfg=flowrt_dsp");
    }
}
