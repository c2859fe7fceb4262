//! Writes `docs/quantization.md`: for every fixture model and weight type (`flowrt export
//! --weights f16|bf16|int8`), the file size over f32, the largest velocity error against the
//! f32 model, how far 1-, 4- and 32-step Euler samples move from the f32 model's samples
//! drawn from the same noise, and the sample quality with its change from f32 (the quality
//! gates of issue 15): the exact W2 distance to a data sample of the training distribution
//! for the 2-D fixtures, the accuracy of a digit classifier for the image models.
//!
//! ```sh
//! cargo build --workspace --release && ./target/release/quantization > docs/quantization.md
//! ```
//!
//! Inputs besides the fixtures' `model.ts.onnx`: `tests/fixtures/data/{moons,checker}_2048.npy`
//! (`make_w2_data.py`) and `tests/fixtures/digit_classifier/model.onnx`
//! (`make_digit_classifier.py`); no Python at run time. Optional arguments, for trying
//! things out: `--seed N` draws other noise, model names restrict the table to them.

use std::fmt::Write as _;
use std::path::Path;

use flowrt::exec::CpuField;
use flowrt::field::{ConditionalField, Conditioning};
use flowrt::format::AlignedBytes;
use flowrt::solver::Method;
use flowrt::{CpuOps, Model};
use flowrt_export::gptq::Rounding;
use flowrt_export::weights::{WeightChoice, WeightKind};
use flowrt_export::ExportOptions;
use flowrt_host::{Backend, Frt, Noise, Request};
use flowrt_tests::w2::w2;

/// Noise rows per 2-D model: also the size of both point sets of each W2.
const ROWS: usize = 1024;
/// Noise rows per image model: [`CLASSES`] labels, 20 rows each (label = row % 10).
const IMAGE_ROWS: usize = 200;
const CLASSES: usize = 10;
/// Seed of flowrt's deterministic normal noise (Philox, `flowrt::rng::fill_normal`).
const NOISE_SEED: u64 = 15;
/// Network times the velocity error is measured at.
const TIMES: [f32; 3] = [0.0, 0.5, 0.9];
/// Euler step counts the sample deviation and quality are measured at.
const STEPS: [usize; 3] = [1, 4, 32];
/// A stored form of a model: its weight type, and whether Dense and Conv also run with int8
/// activations (`export --activations int8`, the full-integer mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    weights: WeightKind,
    act8: bool,
    /// int8 rounded to nearest (`export --rounding nearest`) instead of GPTQ (the default).
    nearest: bool,
    /// With `act8`: the activation functions in f32 (`export --activation-tables off`)
    /// instead of tables on their int8-quantized input (the default).
    exact: bool,
}

impl Kind {
    const fn w(weights: WeightKind) -> Kind {
        Kind {
            weights,
            act8: false,
            nearest: false,
            exact: false,
        }
    }

    fn name(self) -> &'static str {
        if self.act8 && self.exact {
            "int8 + act int8, f32 functions"
        } else if self.act8 {
            "int8 + act int8"
        } else if self.nearest {
            "int8 nearest"
        } else {
            self.weights.name()
        }
    }
}

const F32: Kind = Kind::w(WeightKind::F32);
const INT8: Kind = Kind::w(WeightKind::Int8);
const INT8_NEAREST: Kind = Kind {
    weights: WeightKind::Int8,
    act8: false,
    nearest: true,
    exact: false,
};
const INT8_ACT8: Kind = Kind {
    weights: WeightKind::Int8,
    act8: true,
    nearest: false,
    exact: false,
};
const INT8_ACT8_EXACT: Kind = Kind {
    exact: true,
    ..INT8_ACT8
};
const TYPES: [Kind; 6] = [
    Kind::w(WeightKind::F16),
    Kind::w(WeightKind::Bf16),
    INT8_NEAREST,
    INT8,
    INT8_ACT8_EXACT,
    INT8_ACT8,
];
/// Issue 15's gates for int8 weights: W2 within 2 % of f32, accuracy within 2 points.
const W2_GATE_PERCENT: f64 = 2.0;
const ACCURACY_GATE_POINTS: f64 = 2.0;

fn export(onnx: &Path, kind: Kind) -> Vec<u8> {
    let opts = ExportOptions {
        weights: WeightChoice {
            kind: kind.weights,
            keep_f32: Vec::new(),
        },
        int8_activations: kind.act8.then(Default::default),
        exact_activations: kind.exact,
        rounding: if kind.nearest {
            Rounding::Nearest
        } else {
            Rounding::default()
        },
        ..Default::default()
    };
    flowrt_export::export_onnx(onnx, &opts)
        .unwrap_or_else(|e| panic!("export {}: {e:#}", onnx.display()))
}

/// One model in one stored type.
struct Variant {
    bytes: Vec<u8>,
}

impl Variant {
    fn export(onnx: &Path, kind: Kind) -> Variant {
        Variant {
            bytes: export(onnx, kind),
        }
    }

    /// Velocities at every time of [`TIMES`] for the rows `x` (labels `labels`).
    fn velocities(&self, x: &[f32], labels: Option<&[i64]>) -> Vec<f32> {
        let file = AlignedBytes::copy_from(&self.bytes);
        let model = Model::from_bytes(file.as_slice()).expect("load");
        let batch = x.len() / model.state_dim();
        let mut arena = AlignedBytes::zeroed(model.required_arena_bytes(batch).expect("arena"));
        let mut field = CpuField::new(&model, batch, arena.as_mut_slice()).expect("field");
        let cond = Conditioning {
            label: labels,
            ..Default::default()
        };
        let mut out = Vec::new();
        for t in TIMES {
            let mut v = vec![0f32; x.len()];
            ConditionalField::eval_cond(&mut field, &mut CpuOps, t, x, &cond, &mut v)
                .expect("eval");
            out.extend(v);
        }
        out
    }

    /// Euler samples with `steps` steps from `noise` (labels `labels`).
    fn samples(&self, noise: &[f32], labels: Option<&[i64]>, steps: usize) -> Vec<f32> {
        let frt = Frt::from_vec(&self.bytes, "variant").expect("frt");
        let mut req = Request::default().method(Method::Euler).steps(steps);
        if let Some(l) = labels {
            req = req.labels(l.to_vec());
        }
        frt.sample(Backend::Cpu, &req, Noise::Given(noise.to_vec()))
            .expect("sample")
            .data
    }
}

/// The digit classifier (`tests/fixtures/digit_classifier/model.onnx`) exported to a float32
/// `.frt` and run with flowrt on the CPU.
struct Classifier {
    file: AlignedBytes,
    held_out: f64,
}

impl Classifier {
    fn load(dir: &Path) -> Classifier {
        let text = std::fs::read_to_string(dir.join("manifest.json")).expect("classifier manifest");
        let man: serde_json::Value = serde_json::from_str(&text).expect("json");
        Classifier {
            file: AlignedBytes::copy_from(&export(&dir.join("model.onnx"), F32)),
            held_out: man["held_out_accuracy"]
                .as_f64()
                .expect("held_out_accuracy"),
        }
    }

    /// Accuracy in percent of the predicted classes of the images `x` against `labels`.
    fn accuracy(&self, x: &[f32], labels: &[i64]) -> f64 {
        let model = Model::from_bytes(self.file.as_slice()).expect("classifier");
        let batch = labels.len();
        assert_eq!(x.len(), batch * model.state_dim(), "classifier input");
        assert_eq!(model.output_dim(), CLASSES, "classifier output");
        let mut logits = vec![0f32; batch * CLASSES];
        let mut arena = AlignedBytes::zeroed(model.graph_arena_bytes(batch).expect("arena"));
        flowrt::exec::run(&model, batch, &[x], &mut logits, arena.as_mut_slice())
            .expect("classify");
        let right = logits
            .chunks_exact(CLASSES)
            .zip(labels)
            .filter(|(l, y)| argmax(l) as i64 == **y)
            .count();
        100.0 * right as f64 / batch as f64
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// How the samples of a model are scored.
enum Quality<'a> {
    /// W2 to the first [`ROWS`] rows of a data sample.
    W2(Vec<f32>),
    /// Accuracy of the classifier on the samples against their labels.
    Accuracy(&'a Classifier),
}

impl Quality<'_> {
    fn score(&self, samples: &[f32], dim: usize, labels: Option<&[i64]>) -> f64 {
        match self {
            Quality::W2(data) => w2(samples, data, dim),
            Quality::Accuracy(c) => c.accuracy(samples, labels.expect("labels")),
        }
    }

    /// The change of `score` from the f32 model's `base`: percent (W2) or points (accuracy).
    fn change(&self, score: f64, base: f64) -> f64 {
        match self {
            Quality::W2(_) => 100.0 * (score - base) / base,
            Quality::Accuracy(_) => score - base,
        }
    }

    fn passes(&self, change: f64) -> bool {
        match self {
            Quality::W2(_) => change.abs() <= W2_GATE_PERCENT,
            Quality::Accuracy(_) => change.abs() <= ACCURACY_GATE_POINTS,
        }
    }

    fn cell(&self, score: f64, change: Option<f64>) -> String {
        match (self, change) {
            (Quality::W2(_), None) => format!("W2 {score:.4}"),
            (Quality::W2(_), Some(c)) => format!("{score:.4} ({c:+.2} %)"),
            (Quality::Accuracy(_), None) => format!("acc {score:.1} %"),
            (Quality::Accuracy(_), Some(c)) => format!("{score:.1} % ({c:+.1})"),
        }
    }
}

/// Largest absolute value.
fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// Root mean square over rows of the distance between matching rows of `a` and `b`.
fn rms_distance(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let rows = a.len() / dim;
    let sum: f64 = a
        .chunks_exact(dim)
        .zip(b.chunks_exact(dim))
        .map(|(p, q)| {
            p.iter()
                .zip(q)
                .map(|(x, y)| f64::from(x - y).powi(2))
                .sum::<f64>()
        })
        .sum();
    (sum / rows as f64).sqrt()
}

/// Root mean square distance of the rows of `a` from their mean (the spread).
fn spread(a: &[f32], dim: usize) -> f64 {
    let rows = a.len() / dim;
    let mut mean = vec![0f64; dim];
    for r in a.chunks_exact(dim) {
        for (m, x) in mean.iter_mut().zip(r) {
            *m += f64::from(*x) / rows as f64;
        }
    }
    let sum: f64 = a
        .chunks_exact(dim)
        .map(|r| {
            r.iter()
                .zip(&mean)
                .map(|(x, m)| (f64::from(*x) - m).powi(2))
                .sum::<f64>()
        })
        .sum();
    (sum / rows as f64).sqrt()
}

/// The committed data sample a 2-D fixture was trained on.
fn data_file(model: &str) -> &'static str {
    if model.starts_with("moons") {
        "moons_2048.npy"
    } else if model.starts_with("checker") {
        "checker_2048.npy"
    } else {
        panic!("{model}: which data set?")
    }
}

/// One gated measurement: a typed model at one step count.
struct Gate {
    image: bool,
    kind: Kind,
    model: String,
    steps: usize,
    change: f64,
    pass: bool,
}

/// The verdict of the gate of `kind` on the 2-D (`image` false) or the image models, or
/// `None` when the table has no such rows.
fn verdict(gates: &[Gate], kind: Kind, image: bool) -> Option<String> {
    let mine: Vec<&Gate> = gates
        .iter()
        .filter(|g| g.kind == kind && g.image == image)
        .collect();
    let worst = mine
        .iter()
        .max_by(|a, b| a.change.abs().total_cmp(&b.change.abs()))?;
    let failed: Vec<String> = mine
        .iter()
        .filter(|g| !g.pass)
        .map(|g| format!("{} at {} steps", g.model, g.steps))
        .collect();
    let unit = if image { " points" } else { " %" };
    let verdict = if failed.is_empty() {
        format!("**holds** (all {} measurements)", mine.len())
    } else {
        format!(
            "**fails** for {} of {} measurements: {}",
            failed.len(),
            mine.len(),
            failed.join(", ")
        )
    };
    Some(if worst.change == 0.0 {
        format!("{verdict}; no change")
    } else {
        format!(
            "{verdict}; largest change {:+.2}{unit} ({}, {} steps)",
            worst.change, worst.model, worst.steps
        )
    })
}

/// `f` over `items` on up to `available_parallelism` threads; results in the order of `items`
/// (each item runs alone, so the results do not depend on the thread count).
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                done.lock().expect("results").push((i, r));
            });
        }
    });
    let mut done = done.into_inner().expect("results");
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// What one model measures: per weight type (f32 first), the velocities at [`TIMES`] and the
/// samples and their quality at every step count of [`STEPS`].
struct Measured {
    size: usize,
    velocities: Vec<f32>,
    samples: Vec<(Vec<f32>, f64)>,
}

fn main() {
    let root = flowrt_tests::fixtures_dir();
    let classifier = Classifier::load(&root.join("digit_classifier"));
    let mut models: Vec<(String, bool)> = flowrt_tests::fixtures()
        .into_iter()
        .map(|f| (f.name, false))
        .collect();
    models.extend([("digits_unet".into(), true), ("digits_dit".into(), true)]);
    // Optional arguments, for trying things out: `--seed N` (another noise draw than
    // NOISE_SEED) and model names (only these models, a partial table).
    let mut seed = NOISE_SEED;
    let mut only: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--seed" {
            seed = args.next().and_then(|s| s.parse().ok()).expect("--seed N");
        } else {
            only.push(a);
        }
    }
    models.retain(|(m, _)| only.is_empty() || only.contains(m));
    let kinds: Vec<Kind> = std::iter::once(F32).chain(TYPES).collect();
    let mut table = String::new();
    let mut gates: Vec<Gate> = Vec::new();
    let mut floors: Vec<(&str, f64)> = Vec::new();
    // (type, model, file size over f32), for the size gates.
    let mut sizes: Vec<(Kind, String, f64)> = Vec::new();
    for (name, image) in models {
        let clock = std::time::Instant::now();
        let onnx = root.join(&name).join("model.ts.onnx");
        let variants: Vec<Variant> = kinds.iter().map(|k| Variant::export(&onnx, *k)).collect();
        let dim = {
            let file = AlignedBytes::copy_from(&variants[0].bytes);
            Model::from_bytes(file.as_slice())
                .expect("load")
                .state_dim()
        };
        let rows = if image { IMAGE_ROWS } else { ROWS };
        let mut noise = vec![0f32; rows * dim];
        flowrt::rng::fill_normal(seed, &mut noise);
        let labels: Option<Vec<i64>> =
            image.then(|| (0..rows).map(|i| (i % CLASSES) as i64).collect());
        let labels = labels.as_deref();
        let quality = if image {
            Quality::Accuracy(&classifier)
        } else {
            let file = data_file(&name);
            let (data, shape) = flowrt_tests::npy(&root.join("data").join(file));
            assert!(shape == [2 * ROWS, dim], "{file}: {shape:?}");
            if !floors.iter().any(|(f, _)| *f == file) {
                floors.push((file, w2(&data[..ROWS * dim], &data[ROWS * dim..], dim)));
            }
            Quality::W2(data[..ROWS * dim].to_vec())
        };
        // Every (type, velocities or step count) is one job.
        let jobs: Vec<(usize, Option<usize>)> = (0..kinds.len())
            .flat_map(|k| std::iter::once((k, None)).chain(STEPS.map(|s| (k, Some(s)))))
            .collect();
        let mut results = par_map(&jobs, |(k, steps)| match steps {
            None => (variants[*k].velocities(&noise, labels), f64::NAN),
            Some(s) => {
                let x = variants[*k].samples(&noise, labels, *s);
                let q = quality.score(&x, dim, labels);
                (x, q)
            }
        })
        .into_iter();
        let measured: Vec<Measured> = variants
            .iter()
            .map(|v| Measured {
                size: v.bytes.len(),
                velocities: results.next().expect("velocities").0,
                samples: STEPS.map(|_| results.next().expect("samples")).to_vec(),
            })
            .collect();
        let base = &measured[0];
        let mut row = format!("| {name} | f32 | 1.000 | — | — | — | — |");
        for (_, q) in &base.samples {
            let _ = write!(row, " {} |", quality.cell(*q, None));
        }
        row.push_str(" — |");
        let _ = writeln!(table, "{row}");
        for (kind, typed) in TYPES.iter().zip(&measured[1..]) {
            let size = typed.size as f64 / base.size as f64;
            sizes.push((*kind, name.clone(), size));
            let verr = flowrt_export::max_abs_diff(&typed.velocities, &base.velocities)
                / max_abs(&base.velocities);
            let mut row = format!("| {name} | {} | {size:.3} | {verr:.1e} |", kind.name());
            let mut cells = String::new();
            let mut pass = true;
            for ((s, (got, q)), (base_samples, q0)) in
                STEPS.iter().zip(&typed.samples).zip(&base.samples)
            {
                let dev = rms_distance(got, base_samples, dim) / spread(base_samples, dim);
                let _ = write!(row, " {dev:.1e} |");
                let change = quality.change(*q, *q0);
                let _ = write!(cells, " {} |", quality.cell(*q, Some(change)));
                pass &= quality.passes(change);
                gates.push(Gate {
                    image,
                    kind: *kind,
                    model: name.clone(),
                    steps: *s,
                    change,
                    pass: quality.passes(change),
                });
            }
            let _ = write!(row, "{cells} {} |", if pass { "pass" } else { "**FAIL**" });
            let _ = writeln!(table, "{row}");
        }
        eprintln!("{name}: {:.1} s", clock.elapsed().as_secs_f64());
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Weight types: size and quality\n\n\
         Generated by `cargo build --workspace --release && ./target/release/quantization > \
         docs/quantization.md` (`tests/src/bin/quantization.rs`; the fixtures' \
         `model.ts.onnx`, exported with `--weights`).\n"
    );
    let _ = writeln!(
        md,
        "**Quality gates (issue 15)**, typed weights against the f32 model at 1, 4 and 32 \
         Euler steps (q@N below):\n"
    );
    for (kind, gated) in [
        (INT8, "gated"),
        (INT8_NEAREST, "GPTQ off, not gated, same limits"),
        (INT8_ACT8, "full-integer mode, not gated, same limits"),
        (
            INT8_ACT8_EXACT,
            "full-integer mode without tables, not gated, same limits",
        ),
        (Kind::w(WeightKind::F16), "not gated, same limits"),
        (Kind::w(WeightKind::Bf16), "not gated, same limits"),
    ] {
        let k = kind.name();
        if let Some(v) = verdict(&gates, kind, false) {
            let _ = writeln!(
                md,
                "* {k} ({gated}), W2 within {W2_GATE_PERCENT} % on the 2-D fixtures: {v}."
            );
        }
        if let Some(v) = verdict(&gates, kind, true) {
            let _ = writeln!(
                md,
                "* {k} ({gated}), classifier accuracy within {ACCURACY_GATE_POINTS} points on \
                 the image models: {v}."
            );
        }
    }
    // Size gates: every fixture's int8 file <= 0.27 and f16 file <= 0.51 of its f32 file.
    for (kind, limit) in [(INT8, 0.27), (Kind::w(WeightKind::F16), 0.51)] {
        let mine: Vec<&(Kind, String, f64)> = sizes.iter().filter(|s| s.0 == kind).collect();
        let Some(largest) = mine.iter().max_by(|a, b| a.2.total_cmp(&b.2)) else {
            continue;
        };
        let over: Vec<String> = mine
            .iter()
            .filter(|s| s.2 > limit)
            .map(|s| format!("{} {:.4}", s.1, s.2))
            .collect();
        let verdict = if over.is_empty() {
            format!("**holds** (all {} models)", mine.len())
        } else {
            format!(
                "**fails** for {} of {}: {}",
                over.len(),
                mine.len(),
                over.join(", ")
            )
        };
        let _ = writeln!(
            md,
            "* {} file size at most {limit} of the f32 file: {verdict}; largest {:.4} ({}).",
            kind.name(),
            largest.2,
            largest.1
        );
    }
    md.push('\n');
    let floor_text: Vec<String> = floors
        .iter()
        .map(|(f, w)| format!("`{f}` {w:.4}"))
        .collect();
    let _ = writeln!(
        md,
        "* **type**: the stored weights (`export --weights`). **int8** rounds the Dense \
         weights with GPTQ (the default `--rounding gptq`: each rounding error is moved onto \
         the inputs not yet rounded, weighted by the layer's input statistics on 256 rows x \
         16 Euler steps of the f32 model; `exporter/src/gptq.rs`); **int8 nearest** rounds \
         every weight to its nearest step (`--rounding nearest`); **int8 + act int8** is the \
         full-integer mode (`--weights int8 --activations int8`, GPTQ weights: Dense and Conv \
         quantize their inputs with scales calibrated on the same trajectories, each the \
         clipping point with the least expected squared error, and sum in integers; SiLU, \
         GELU, sigmoid, tanh, softplus, ELU and SELU become 255-entry tables read with their \
         int8-quantized input, `Lut`); **int8 + act int8, f32 functions** is the same with \
         `--activation-tables off` (those functions in f32).\n\
         * **size**: the `.frt` file over the f32 file, both as `flowrt export` writes them \
         (format v3: compact records, the signature's names only; int8 weights with one 8-bit \
         scale per output channel, int8 biases with one each; constants that only \
         element-wise ops read stored f16 behind a `Widen` node in the f16, bf16 and int8 \
         files). The issue's size gates: int8 <= 0.27, f16 <= 0.51.\n\
         * **v err**: the largest velocity difference from the f32 model over the noise rows \
         ({ROWS} for the 2-D models, {IMAGE_ROWS} for the image models; flowrt's \
         deterministic normal noise, seed {seed}) at t = 0, 0.5, 0.9, relative to the \
         largest f32 velocity.\n\
         * **dev@N**: the root-mean-square distance between a sample of the typed model and \
         the f32 model's sample from the same noise after N Euler steps, relative to the f32 \
         samples' spread (their RMS distance from their mean). It bounds the W2 distance \
         between the two sample sets from above.\n\
         * **q@N**, 2-D models: the exact W2 distance between the {ROWS} samples after N \
         Euler steps and the first {ROWS} rows of a sample of the training distribution \
         (`tests/fixtures/data/`, drawn by `tests/fixtures/make_w2_data.py`), with its \
         change relative to the f32 model's W2 in parentheses. W2 = sqrt(mean squared \
         Euclidean distance under the optimal assignment), solved exactly by `lsap` (scipy's \
         algorithm; `tests/tests/w2.rs` checks it against scipy and POT). The sampling noise \
         floor, W2 between the first and last {ROWS} rows of the data sample: {}. The same \
         noise and the same data enter every row of a model, so the change measures the \
         weights alone, for this noise: a few outlying samples carry much of the squared \
         cost, so W2 and its change move with the draw (`quantization --seed N MODEL...` \
         redraws it); check a failure with other seeds before reading it as systematic.\n\
         * **q@N**, image models: the accuracy of a CNN digit classifier \
         (`tests/fixtures/digit_classifier/`, trained by \
         `tests/fixtures/make_digit_classifier.py`, {:.1} % on held-out digits, exported \
         and run by flowrt in f32) on the {IMAGE_ROWS} class-conditional samples after N \
         Euler steps ({} per label 0..9, label = row mod 10), with the change from f32 in \
         points in parentheses.\n\
         * **gate**: every q@N of the row within {W2_GATE_PERCENT} % (W2) or \
         {ACCURACY_GATE_POINTS} points (accuracy) of f32. The issue gates the int8 rows; \
         f16 and bf16 are marked against the same limits.\n",
        floor_text.join(", "),
        100.0 * classifier.held_out,
        IMAGE_ROWS / CLASSES,
    );
    let _ = writeln!(
        md,
        "| model | type | size | v err | dev@1 | dev@4 | dev@32 | q@1 | q@4 | q@32 | gate |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    md.push_str(&table);
    print!("{md}");
}
