//! Bit-identity on microcontrollers: for every fixture model, the samples `flowrt sample`
//! computes on the host must equal, byte for byte, the samples the firmware computes in QEMU
//! on a Cortex-M4F (`mps2-an386`) and on riscv32imac (`virt`), through `targets/run-qemu.sh`.
//!
//! These tests need `qemu-system-arm` and `qemu-system-riscv32` (`scripts/test.sh` installs
//! them with `targets/install-qemu.sh`) and FAIL when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowrt_tests::{export, fixtures, npy};

/// Noise rows per run (the fixtures' noise files have more; keep QEMU runs short).
const ROWS: usize = 32;
/// (method, steps) pairs checked for every fixture.
const CONFIGS: [(&str, usize); 2] = [("euler", 1), ("rk4-38", 8)];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The `flowrt` binary cargo built next to this test (`cargo test --workspace` builds it for
/// the exporter's CLI tests).
fn flowrt_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("flowrt{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A fresh temporary folder named after `tag` and this process.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowrt-qemu-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes the first `rows` rows of the `.npy` file `from` (all, when it has fewer) to `to`.
fn write_rows(from: &Path, rows: usize, to: &Path) {
    let (all, shape) = npy(from);
    let rows = rows.min(shape[0]);
    let row_len: usize = shape[1..].iter().product();
    let mut small = shape.clone();
    small[0] = rows;
    flowrt_export::npy::write_f32(to, &all[..rows * row_len], &small).expect("noise");
}

/// Writes the first `rows` labels of fixture `name` to `dir/TAG-labels.npy`; returns the path.
fn labels_file(dir: &Path, tag: &str, name: &str, rows: usize) -> PathBuf {
    let path = dir.join(format!("{tag}-labels.npy"));
    let all = flowrt_export::npy::read_labels(
        &flowrt_tests::fixtures_dir().join(name).join("labels.npy"),
    )
    .expect("labels")
    .0;
    flowrt_export::npy::write_i64(&path, &all[..rows]).expect("labels");
    path
}

/// One sampling run: a model, its noise (and labels to embed), a method and a step count.
struct Run<'a> {
    frt: &'a Path,
    noise: &'a Path,
    labels: Option<&'a Path>,
    method: &'a str,
    steps: usize,
}

/// Runs `flowrt sample MODEL --noise NOISE [--label LABELS] --method M --steps N -o OUT` on
/// the host.
fn host_sample(run: &Run<'_>, out: &Path) {
    let mut cmd = Command::new(flowrt_bin());
    cmd.arg("sample").arg(run.frt).arg("--noise").arg(run.noise);
    if let Some(l) = run.labels {
        cmd.arg("--label").arg(l);
    }
    let status = cmd
        .args([
            "--method",
            run.method,
            "--steps",
            &run.steps.to_string(),
            "-o",
        ])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run flowrt sample");
    assert!(
        status.success(),
        "flowrt sample failed for {}",
        run.frt.display()
    );
}

/// Runs on a device that must give the host's bytes; the failures are collected.
#[derive(Default)]
struct Tally {
    checked: usize,
    failures: Vec<String>,
}

impl Tally {
    /// Counts the result of [`device_matches_host`].
    fn add(&mut self, r: Result<usize, String>) {
        match r {
            Ok(_) => self.checked += 1,
            Err(e) => self.failures.push(e),
        }
    }

    /// Fails on any failure, else removes `dir` and returns how many runs were checked.
    fn finish(self, dir: &Path) -> usize {
        assert!(self.failures.is_empty(), "{}", self.failures.join("\n"));
        let _ = std::fs::remove_dir_all(dir);
        self.checked
    }
}

/// One sampling run on a device through `targets/run-qemu.sh` (with embedded labels when
/// given), compared byte for byte with the host's output `host`: `Ok(bytes)` when identical,
/// else a message naming `what`.
fn device_matches_host(
    target: &str,
    run: &Run<'_>,
    host: &Path,
    dev: &Path,
    what: &str,
) -> Result<usize, String> {
    let mut cmd = Command::new(repo_root().join("targets/run-qemu.sh"));
    cmd.arg(target).args([run.frt, run.noise, dev]).args([
        "--method",
        run.method,
        "--steps",
        &run.steps.to_string(),
    ]);
    if let Some(l) = run.labels {
        cmd.arg("--labels").arg(l);
    }
    let status = cmd.status().expect("run targets/run-qemu.sh");
    if !status.success() {
        return Err(format!("{what}: run-qemu.sh failed ({status})"));
    }
    let (h, d) = (
        std::fs::read(host).expect("host"),
        std::fs::read(dev).expect("dev"),
    );
    if h == d {
        println!("{what}: {} bytes identical", h.len());
        Ok(h.len())
    } else {
        Err(format!(
            "{what}: output differs from the host ({} vs {})",
            host.display(),
            dev.display()
        ))
    }
}

fn check_target(target: &str) {
    let dir = temp_dir(target);
    let mut tally = Tally::default();
    let only = std::env::var("FLOWRT_QEMU_ONLY").ok();
    for fx in fixtures() {
        if only.as_deref().is_some_and(|o| o != fx.name) {
            continue;
        }
        let frt = dir.join(format!("{}.frt", fx.name));
        std::fs::write(&frt, export(&fx.dir.join("model.ts.onnx")).as_slice()).expect("write frt");
        let noise = dir.join(format!("{}-noise.npy", fx.name));
        write_rows(&fx.dir.join("noise.npy"), ROWS, &noise);
        for (method, steps) in CONFIGS {
            let host = dir.join(format!("{}-{method}-{steps}-host.npy", fx.name));
            let dev = dir.join(format!("{}-{method}-{steps}-{target}.npy", fx.name));
            let run = Run {
                frt: &frt,
                noise: &noise,
                labels: None,
                method,
                steps,
            };
            host_sample(&run, &host);
            let what = format!("{} {method} x{steps} on {target}", fx.name);
            tally.add(device_matches_host(target, &run, &host, &dev, &what));
        }
    }
    let checked = tally.finish(&dir);
    assert!(checked >= 2, "only {checked} runs checked");
}

#[test]
fn cortex_m4_matches_host_bit_for_bit() {
    check_target("cortex-m4");
}

#[test]
fn riscv32_matches_host_bit_for_bit() {
    check_target("riscv32");
}

/// The Cortex-M firmware logs through the runtime's `defmt` feature over semihosting; the log
/// decodes with `defmt-print` (installed by `scripts/test.sh`) and shows one line per solver
/// step.
#[test]
fn cortex_m4_defmt_log_decodes() {
    let dir = temp_dir("defmt");
    let fx = &fixtures()[0];
    let frt = dir.join("model.frt");
    std::fs::write(&frt, export(&fx.dir.join("model.ts.onnx")).as_slice()).expect("write frt");
    let noise = dir.join("noise.npy");
    write_rows(&fx.dir.join("noise.npy"), 4, &noise);
    let log = dir.join("defmt.txt");
    let status = Command::new(repo_root().join("targets/run-qemu.sh"))
        .args(["cortex-m4".as_ref(), frt.as_os_str(), noise.as_os_str()])
        .arg(dir.join("out.npy"))
        .args(["--method", "rk4-38", "--steps", "8"])
        .env("FLOWRT_DEFMT_LOG", &log)
        .status()
        .expect("run targets/run-qemu.sh");
    assert!(
        status.success(),
        "run-qemu.sh with FLOWRT_DEFMT_LOG failed ({status})"
    );
    let text = std::fs::read_to_string(&log).expect("decoded defmt log");
    println!("{text}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        text.contains("flowrt firmware: 4 rows x 2, rk4-38 x 8 steps"),
        "{text}"
    );
    let steps = text.lines().filter(|l| l.contains("flowrt: step")).count();
    assert_eq!(steps, 8, "one debug line per step expected:\n{text}");
    assert!(text.contains("flowrt: step 7 done, t = 1"), "{text}");
}

/// The one-step paths of the few-step families (MeanFlow on the sigma axis with its `h`
/// input, a shortcut model with `log2` steps) on both targets: 1 and 4 steps, byte for byte.
#[test]
fn few_step_models_match_host_bit_for_bit() {
    use flowrt::time::{TimeAxis, TimeConvention};
    let dir = temp_dir("fewstep");
    let root = flowrt_tests::fixtures_dir();
    let sigma = flowrt_export::ExportOptions {
        time: TimeConvention {
            axis: TimeAxis::Sigma,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut tally = Tally::default();
    for (name, opts) in [
        ("moons_meanflow", sigma),
        ("moons_shortcut", flowrt_export::ExportOptions::default()),
    ] {
        let frt = dir.join(format!("{name}.frt"));
        let bytes = flowrt_export::export_onnx(&root.join(name).join("model.ts.onnx"), &opts)
            .expect("export");
        std::fs::write(&frt, bytes).expect("write frt");
        let noise = dir.join(format!("{name}-noise.npy"));
        write_rows(&root.join(name).join("noise.npy"), ROWS, &noise);
        for target in ["cortex-m4", "riscv32"] {
            for steps in [1usize, 4] {
                let host = dir.join(format!("{name}-{steps}-host.npy"));
                let dev = dir.join(format!("{name}-{steps}-{target}.npy"));
                let run = Run {
                    frt: &frt,
                    noise: &noise,
                    labels: None,
                    method: "euler",
                    steps,
                };
                host_sample(&run, &host);
                let what = format!("{name} euler x{steps} on {target}");
                tally.add(device_matches_host(target, &run, &host, &dev, &what));
            }
        }
    }
    assert_eq!(tally.finish(&dir), 8);
}

/// The image models (issue 4): the class-conditional digits UNet (Conv, GroupNorm through
/// reductions, attention einsums, Softmax, nearest Resize) and DiT (LayerNorm, attention
/// MatMuls, GELU-tanh, patchify Conv, 6-D unpatchify Transpose) with embedded labels, on both
/// targets: the host's AVX2 kernels and the devices' scalar ones give the same bytes.
#[test]
fn image_models_match_host_bit_for_bit() {
    let dir = temp_dir("image");
    let root = flowrt_tests::fixtures_dir();
    let mut tally = Tally::default();
    for (name, onnx, method, steps) in [
        ("digits_unet", "model.ts.onnx", "euler", 1usize),
        ("digits_dit", "model.dynamo.onnx", "midpoint", 2),
    ] {
        let frt = dir.join(format!("{name}.frt"));
        std::fs::write(&frt, export(&root.join(name).join(onnx)).as_slice()).expect("write frt");
        let rows = 2;
        let noise = dir.join(format!("{name}-noise.npy"));
        write_rows(&root.join(name).join("noise.npy"), rows, &noise);
        let labels = labels_file(&dir, name, name, rows);
        let host = dir.join(format!("{name}-host.npy"));
        let run = Run {
            frt: &frt,
            noise: &noise,
            labels: Some(&labels),
            method,
            steps,
        };
        host_sample(&run, &host);
        for target in ["cortex-m4", "riscv32"] {
            let dev = dir.join(format!("{name}-{target}.npy"));
            let what = format!("{name} {method} x{steps} on {target}");
            tally.add(device_matches_host(target, &run, &host, &dev, &what));
        }
    }
    assert_eq!(tally.finish(&dir), 4);
}

/// Typed weights (`flowrt export --weights f16|bf16|int8`) on both targets: the MLP fixture
/// in every type (Dense kernels with dequantized weight runs) and the class-conditional
/// digits UNet in int8 (Conv, ConvTranspose-free up path, the label table as an int8
/// Gather), byte for byte against the host; and both in the full-integer mode
/// (`--activations int8`: integer Dense and Conv).
#[test]
fn typed_weights_match_host_bit_for_bit() {
    use flowrt_export::weights::{WeightChoice, WeightKind};
    let dir = temp_dir("weights");
    let root = flowrt_tests::fixtures_dir();
    let mut tally = Tally::default();
    // (fixture, weights, full-integer activations, method, steps, labelled rows)
    let cases = [
        (
            "moons_icfm",
            WeightKind::F16,
            false,
            "rk4-38",
            8usize,
            0usize,
        ),
        ("moons_icfm", WeightKind::Bf16, false, "rk4-38", 8, 0),
        ("moons_icfm", WeightKind::Int8, false, "rk4-38", 8, 0),
        ("digits_unet", WeightKind::Int8, false, "euler", 1, 2),
        ("moons_icfm", WeightKind::Int8, true, "rk4-38", 8, 0),
        ("digits_unet", WeightKind::Int8, true, "euler", 1, 2),
    ];
    for (name, kind, int8_act, method, steps, labelled) in cases {
        let opts = flowrt_export::ExportOptions {
            weights: WeightChoice {
                kind,
                keep_f32: Vec::new(),
            },
            int8_activations: int8_act.then(Default::default),
            ..Default::default()
        };
        let tag = format!("{name}-{kind:?}{}", if int8_act { "-act8" } else { "" });
        let frt = dir.join(format!("{tag}.frt"));
        let bytes = flowrt_export::export_onnx(&root.join(name).join("model.ts.onnx"), &opts)
            .expect("export");
        let model_bytes = flowrt::format::AlignedBytes::copy_from(&bytes);
        let model = flowrt::Model::from_bytes(model_bytes.as_slice()).expect("load");
        assert_eq!(model.version(), flowrt::format::VERSION_COMPACT, "{tag}");
        std::fs::write(&frt, &bytes).expect("write frt");
        let rows = if labelled > 0 { labelled } else { ROWS };
        let noise = dir.join(format!("{tag}-noise.npy"));
        write_rows(&root.join(name).join("noise.npy"), rows, &noise);
        let labels = (labelled > 0).then(|| labels_file(&dir, &tag, name, rows));
        let host = dir.join(format!("{tag}-host.npy"));
        let run = Run {
            frt: &frt,
            noise: &noise,
            labels: labels.as_deref(),
            method,
            steps,
        };
        host_sample(&run, &host);
        for target in ["cortex-m4", "riscv32"] {
            let dev = dir.join(format!("{tag}-{target}.npy"));
            let what = format!("{tag} {method} x{steps} on {target}");
            tally.add(device_matches_host(target, &run, &host, &dev, &what));
        }
    }
    assert_eq!(tally.finish(&dir), 2 * cases.len());
}

/// Multi-network files on both targets (`flowrt::pipeline`): the latent flow with its
/// decoder (the firmware prints the decoded rows), and a class-conditional flow with a
/// decoder in int8 with int8 activations, labels embedded — byte for byte against the host.
#[test]
fn pipelines_match_host_bit_for_bit() {
    use flowrt::pipeline::StageKind;
    use flowrt_export::weights::{WeightChoice, WeightKind};
    let dir = temp_dir("pipelines");
    let root = flowrt_tests::fixtures_dir();
    let decoder = root.join("moons_latent_decoder/model.ts.onnx");
    let mut tally = Tally::default();
    // (tag, flow fixture, weights, int8 activations, labelled)
    let cases = [
        ("latent", "moons_latent_flow", WeightKind::F32, false, false),
        ("cond-int8", "moons_cfg", WeightKind::Int8, true, true),
    ];
    for (tag, name, kind, int8_act, labelled) in cases {
        let opts = flowrt_export::ExportOptions {
            pipeline: vec![(StageKind::Decoder, decoder.clone())],
            weights: WeightChoice {
                kind,
                keep_f32: Vec::new(),
            },
            int8_activations: int8_act.then(Default::default),
            ..Default::default()
        };
        let bytes = flowrt_export::export_onnx(&root.join(name).join("model.ts.onnx"), &opts)
            .expect("export");
        let frt = dir.join(format!("{tag}.frt"));
        std::fs::write(&frt, &bytes).expect("write frt");
        let noise = dir.join(format!("{tag}-noise.npy"));
        write_rows(&root.join(name).join("noise.npy"), 6, &noise);
        let labels = labelled.then(|| labels_file(&dir, tag, name, 6));
        let run = Run {
            frt: &frt,
            noise: &noise,
            labels: labels.as_deref(),
            method: "heun",
            steps: 4,
        };
        let host = dir.join(format!("{tag}-host.npy"));
        host_sample(&run, &host);
        assert_eq!(npy(&host).1, [6, 8], "{tag}: the decoded rows");
        for target in ["cortex-m4", "riscv32"] {
            let dev = dir.join(format!("{tag}-{target}.npy"));
            let what = format!("{tag} heun x4 on {target}");
            tally.add(device_matches_host(target, &run, &host, &dev, &what));
        }
    }
    assert_eq!(tally.finish(&dir), 2 * cases.len());
}

/// The edge-scale latent model (`tests/fixtures/edge_digits`: a 1.6 M-parameter class-
/// conditional latent DiT and its convolutional decoder to 32x32 digits) exported with int8
/// weights and int8 activations, linked on both targets against a memory map of exactly
/// 2 MiB of flash and 256 KiB of RAM (`memory-2m-256k.x`: the link fails if the model, the
/// arena or the stack reserve does not fit), one image per label in 2 Euler steps, byte for
/// byte against the host; prints the instructions per image and the stack high-water mark.
#[test]
fn edge_model_fits_2m_256k_and_matches_host_bit_for_bit() {
    use flowrt::pipeline::StageKind;
    use flowrt_export::weights::{WeightChoice, WeightKind};
    let root = flowrt_tests::fixtures_dir().join("edge_digits");
    let dir = temp_dir("edge");
    let opts = flowrt_export::ExportOptions {
        pipeline: vec![(StageKind::Decoder, root.join("decoder.ts.onnx"))],
        weights: WeightChoice {
            kind: WeightKind::Int8,
            keep_f32: Vec::new(),
        },
        int8_activations: Some(Default::default()),
        ..Default::default()
    };
    let bytes = flowrt_export::export_onnx(&root.join("flow.ts.onnx"), &opts).expect("export");
    assert!(
        bytes.len() < 2 << 20,
        "the .frt alone is {} bytes",
        bytes.len()
    );
    let frt = dir.join("edge.frt");
    std::fs::write(&frt, &bytes).expect("write frt");
    let noise = dir.join("edge-noise.npy");
    write_rows(&root.join("noise.npy"), 1, &noise);
    let labels = labels_file(&dir, "edge", "edge_digits", 1);
    let run = Run {
        frt: &frt,
        noise: &noise,
        labels: Some(&labels),
        method: "euler",
        steps: 2,
    };
    let host = dir.join("edge-host.npy");
    host_sample(&run, &host);
    assert_eq!(npy(&host).1, [1, 1, 32, 32], "one decoded 32x32 image");
    let mut tally = Tally::default();
    for target in ["cortex-m4", "riscv32"] {
        let dev = dir.join(format!("edge-{target}.npy"));
        let log = dir.join(format!("edge-{target}.log"));
        let mut cmd = Command::new(repo_root().join("targets/run-qemu.sh"));
        cmd.arg(target)
            .args([&frt, &noise, &dev])
            .args(["--method", "euler", "--steps", "2", "--labels"])
            .arg(&labels)
            .env("FLOWRT_MEMORY", "memory-2m-256k.x")
            .env("FLOWRT_QEMU_LOG", &log)
            .env("FLOWRT_QEMU_TIMEOUT", "600");
        let status = cmd.status().expect("run targets/run-qemu.sh");
        assert!(
            status.success(),
            "{target}: build (2 MiB / 256 KiB map) or run failed"
        );
        let text = std::fs::read_to_string(&log).expect("log");
        let stats = text
            .lines()
            .find(|l| l.starts_with("FLOWRT-STATS"))
            .expect("stats line");
        println!("edge model on {target}: {stats}");
        let stack: usize = stats
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("stack_bytes="))
            .and_then(|v| v.parse().ok())
            .expect("stack_bytes");
        assert!(
            stack < 16 * 1024,
            "{target}: stack {stack} B above the 16 KiB reserve"
        );
        let same = std::fs::read(&host).expect("host") == std::fs::read(&dev).expect("dev");
        tally.add(if same {
            println!("edge model on {target}: identical to the host");
            Ok(1)
        } else {
            Err(format!("edge model on {target}: differs from the host"))
        });
    }
    assert_eq!(tally.finish(&dir), 2);
}
