//! The web module's sampling, run natively, against the host API's CPU path (what
//! `flowrt sample --backend cpu` runs), bit for bit; and its typed errors on bad input. The
//! same comparison in a real browser is web/browser_test.py.

use flowrt::solver::Method;
use flowrt_host::{Backend, Frt, Noise, Request};
use flowrt_web::session::{self, Labels, Loaded, Options, WebError};

fn root(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(p)
}

/// An unconditional 2-D model and a 2-D model with a label input (3 classes, 2 = null).
const ICFM: &str = "runtime/tests/data/moons_icfm.frt";
const CFG: &str = "fuzz/corpus/frt_load_sample/moons_cfg_label.frt";

fn load(p: &str) -> (Loaded, Frt) {
    let raw = std::fs::read(root(p)).expect("fixture");
    (
        Loaded::new(&raw).expect("loads"),
        Frt::open(root(p)).expect("opens"),
    )
}

fn opts(method: Method, steps: usize, seed: u64, num: usize) -> Options {
    Options {
        method,
        steps: Some(steps),
        seed,
        num,
        labels: Labels::None,
        guidance: None,
        null_label: None,
        trajectory: true,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn unconditional_samples_and_trajectories_equal_the_host_cpu_path() {
    let (web, host) = load(ICFM);
    let m = web.model().unwrap();
    for method in [
        Method::Euler,
        Method::Midpoint,
        Method::Rk4,
        Method::Rk4_38,
        Method::Ab3,
    ] {
        let o = opts(method, 5, 7, 33);
        let got = session::sample(&m, &o).unwrap();
        let req = Request::default().method(method).steps(5).trajectory();
        let want = host
            .sample(Backend::Cpu, &req, Noise::Seed { seed: 7, num: 33 })
            .unwrap();
        assert_eq!(bits(&got.samples), bits(&want.data), "{method}");
        let t = want.trajectory.unwrap();
        assert_eq!(got.states, t.times.len(), "{method}");
        assert_eq!(bits(&got.trajectory), bits(&t.states), "{method}");
        assert_eq!(got.evaluations, want.report.evaluations, "{method}");
        // Samples moved away from the noise (the run did something).
        assert_ne!(bits(&got.samples), bits(&got.trajectory[..66]));
    }
}

#[test]
fn guided_label_samples_equal_the_host_cpu_path() {
    let (web, host) = load(CFG);
    let m = web.model().unwrap();
    let o = Options {
        labels: Labels::Cycle(2),
        guidance: Some(1.5),
        null_label: Some(2),
        ..opts(Method::Heun, 4, 3, 10)
    };
    let got = session::sample(&m, &o).unwrap();
    let req = Request::default()
        .method(Method::Heun)
        .steps(4)
        .label_cycle(2)
        .guidance(1.5)
        .null_label(2)
        .trajectory();
    let want = host
        .sample(Backend::Cpu, &req, Noise::Seed { seed: 3, num: 10 })
        .unwrap();
    assert_eq!(bits(&got.samples), bits(&want.data));
    assert_eq!(
        bits(&got.trajectory),
        bits(&want.trajectory.unwrap().states)
    );
    // Guidance changes the samples (it is applied, not ignored).
    let plain = session::sample(
        &m,
        &Options {
            guidance: None,
            ..o
        },
    )
    .unwrap();
    assert_ne!(bits(&plain.samples), bits(&got.samples));
}

fn request_error(p: &str, o: Options) -> String {
    let (web, _) = load(p);
    match session::sample(&web.model().unwrap(), &o) {
        Err(WebError::Request(msg)) => msg,
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[test]
fn bad_requests_are_typed_errors() {
    let base = opts(Method::Euler, 2, 0, 4);
    assert!(request_error(ICFM, Options { num: 0, ..base }).contains("num must be at least 1"));
    assert!(request_error(
        ICFM,
        Options {
            num: usize::MAX,
            ..base
        }
    )
    .contains("is too large"));
    assert!(request_error(
        ICFM,
        Options {
            steps: Some(0),
            ..base
        }
    )
    .contains("steps 0"));
    assert!(request_error(
        ICFM,
        Options {
            labels: Labels::All(1),
            ..base
        }
    )
    .contains("no label input"));
    assert!(request_error(CFG, base).contains("has a label input"));
    assert!(request_error(
        CFG,
        Options {
            labels: Labels::All(5),
            ..base
        }
    )
    .contains("label 5 is out of range"));
    assert!(request_error(
        CFG,
        Options {
            labels: Labels::All(0),
            guidance: Some(2.0),
            null_label: Some(7),
            ..base
        }
    )
    .contains("null label 7 is out of range"));
    assert!(request_error(
        ICFM,
        Options {
            guidance: Some(2.0),
            ..base
        }
    )
    .contains("needs a label input"));
    assert!(request_error(
        "fuzz/corpus/frt_load_sample/moons_latent_decoder_pipeline.frt",
        base
    )
    .contains("multi-network"));
}

#[test]
fn bad_files_are_typed_errors() {
    assert!(matches!(
        Loaded::new(b"not a model"),
        Err(WebError::BadFile(
            flowrt::Error::BadMagic | flowrt::Error::Truncated { .. }
        ))
    ));
    let mut raw = std::fs::read(root(ICFM)).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    assert!(matches!(Loaded::new(&raw), Err(WebError::BadFile(_))));
}

/// The extern "C" interface the page calls, driven natively.
#[test]
fn c_interface_reports_errors_as_text() {
    use flowrt_web::*;
    fn text() -> String {
        let (p, n) = (flowrt_text_ptr(), flowrt_text_len());
        // SAFETY: the module's message text is `n` valid UTF-8 bytes at `p` until the next call.
        String::from_utf8(unsafe { std::slice::from_raw_parts(p, n) }.to_vec()).unwrap()
    }
    fn put(bytes: &[u8]) -> usize {
        let p = flowrt_alloc(bytes.len());
        // SAFETY: `flowrt_alloc` returned room for `bytes.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        bytes.len()
    }
    assert_eq!(flowrt_info(), -1);
    assert_eq!(text(), "no model loaded");
    assert_eq!(flowrt_load(put(b"junk")), -1);
    assert!(
        text().starts_with("the .frt file does not load"),
        "{}",
        text()
    );
    assert_eq!(flowrt_load(99), -1);
    assert!(text().contains("only 4 were allocated"), "{}", text());

    let raw = std::fs::read(root(CFG)).unwrap();
    assert_eq!(flowrt_load(put(&raw)), 0);
    assert_eq!(flowrt_info(), 0);
    let info = text();
    assert!(
        info.contains("\"state_dim\":2") && info.contains("\"classes\":3"),
        "{info}"
    );
    assert_eq!(
        flowrt_sample(put(b"rk5"), 4, 0, 0, 8, 1, 0, f32::NAN, -1, 0),
        -1
    );
    assert!(text().starts_with("method `rk5`"), "{}", text());
    assert_eq!(
        flowrt_sample(put(b"rk4"), 4, 0, 0, 8, 9, 0, f32::NAN, -1, 0),
        -1
    );
    assert!(text().contains("label mode 9"), "{}", text());
    assert_eq!(flowrt_sample(put(b"rk4"), 4, 1, 0, 8, 2, 2, 1.5, 2, 1), 0);
    assert_eq!(flowrt_samples_len(), 16);
    assert_eq!(flowrt_states(), 5);
    assert_eq!(flowrt_trajectory_len(), 5 * 16);
    assert_eq!(flowrt_evaluations(), 16);
}
