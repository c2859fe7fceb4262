//! flowrt in the browser: a `wasm32-unknown-unknown` module with a plain `extern "C"`
//! interface (no wasm-bindgen) that loads a `.frt` file handed over by JavaScript and samples
//! it on flowrt's CPU executor. The samples are the bytes `flowrt sample --backend cpu`
//! writes for the same seed, method and steps (the runtime's fused multiply-adds are
//! correctly rounded on every target, here in software, its transcendentals are its own, and
//! the noise comes from flowrt's Philox generator, `docs/rng.md`).
//!
//! The page (`web/static/`) calls, in order:
//!
//! 1. [`flowrt_alloc`]`(len)` and copies the `.frt` bytes to the returned pointer, then
//!    [`flowrt_load`]`(len)`; [`flowrt_info`] describes the model as JSON text.
//! 2. [`flowrt_alloc`] again for the method name (UTF-8), then [`flowrt_sample`].
//! 3. [`flowrt_samples_ptr`] / [`flowrt_samples_len`] (f32 values) and, when asked for,
//!    [`flowrt_trajectory_ptr`] / [`flowrt_trajectory_len`] / [`flowrt_states`].
//!
//! Every call that can fail returns 0 on success and -1 on failure, with the message in
//! [`flowrt_text_ptr`] / [`flowrt_text_len`] (UTF-8). Nothing panics on bad input.

#![deny(missing_docs)]

pub mod session;

use std::cell::RefCell;

use flowrt::format::InputRole;
use flowrt::solver::Method;

use session::{Labels, Loaded, Options, Output, WebError};

/// The module's state: the page drives one model at a time from one thread.
#[derive(Default)]
struct State {
    /// Bytes written by JavaScript ([`flowrt_alloc`]).
    input: Vec<u8>,
    /// The loaded model.
    model: Option<Loaded>,
    /// The last result.
    output: Output,
    /// The last message (error or [`flowrt_info`] JSON).
    text: String,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Runs `f` on the state; an error becomes the message text and -1.
fn with_state(f: impl FnOnce(&mut State) -> Result<(), WebError>) -> i32 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        match f(&mut s) {
            Ok(()) => 0,
            Err(e) => {
                s.text = e.to_string();
                -1
            }
        }
    })
}

/// Makes room for `len` bytes from JavaScript and returns where to write them (valid until
/// the next call into the module). Returns null when the memory cannot be allocated.
#[no_mangle]
pub extern "C" fn flowrt_alloc(len: usize) -> *mut u8 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.input.clear();
        if s.input.try_reserve_exact(len).is_err() {
            return core::ptr::null_mut();
        }
        s.input.resize(len, 0);
        s.input.as_mut_ptr()
    })
}

/// The first `len` bytes written to [`flowrt_alloc`]'s buffer.
///
/// Errors: `len` larger than the buffer.
fn input(s: &State, len: usize) -> Result<&[u8], WebError> {
    s.input.get(..len).ok_or_else(|| {
        WebError::Request(format!(
            "{len} bytes asked for, but only {} were allocated",
            s.input.len()
        ))
    })
}

/// Loads (copies and validates) the `.frt` file in the first `len` bytes of the input
/// buffer. Returns 0, or -1 with the runtime's reason in the message text.
#[no_mangle]
pub extern "C" fn flowrt_load(len: usize) -> i32 {
    with_state(|s| {
        s.model = None;
        s.output = Output::default();
        s.model = Some(Loaded::new(input(s, len)?)?);
        Ok(())
    })
}

/// Writes a JSON description of the loaded model to the message text: `state_dim`,
/// `row_shape`, `label` (has a label input), `classes`, the file's defaults (`method`,
/// `steps`, `guidance`, `null_label`), `params` and `file_bytes`. Returns 0, or -1 without a
/// model.
#[no_mangle]
pub extern "C" fn flowrt_info() -> i32 {
    with_state(|s| {
        let text = {
            let m = s.model.as_ref().ok_or(WebError::NoModel)?.model()?;
            info_json(&m)
        };
        s.text = text;
        Ok(())
    })
}

/// The JSON text of [`flowrt_info`].
fn info_json(m: &flowrt::Model<'_>) -> String {
    use flowrt::format::Dim;
    let row: Vec<String> = m
        .output_shape()
        .dims()
        .filter_map(|d| match d {
            Dim::Fixed(n) => Some(n.to_string()),
            Dim::Batch => None,
        })
        .collect();
    let d = m.solver_defaults().unwrap_or_default();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    format!(
        "{{\"state_dim\":{},\"row_shape\":[{}],\"label\":{},\"classes\":{},\"method\":{},\
         \"steps\":{},\"guidance\":{},\"null_label\":{},\"params\":{},\"file_bytes\":{},\
         \"pipeline\":{}}}",
        m.state_dim(),
        row.join(","),
        m.input_by_role(InputRole::Label).is_some(),
        opt(m.label_classes().map(|n| n.to_string())),
        opt(d.method.map(|x| format!("\"{}\"", x.name()))),
        opt(d.steps.map(|n| n.to_string())),
        opt(d.guidance.scale.map(|g| g.to_string())),
        opt(d.guidance.null_label.map(|n| n.to_string())),
        m.param_count(),
        m.file_len(),
        m.pipeline().is_some(),
    )
}

/// Samples the loaded model, as `flowrt sample MODEL --seed S --num N --method M --steps K`
/// with the label and guidance flags below would.
///
/// * `method_len`: the method name (`euler`, `rk4`, ...) is the first `method_len` bytes of
///   the input buffer ([`flowrt_alloc`]).
/// * `steps`: 0 for the file's default (else 1).
/// * `seed_lo`, `seed_hi`: the 64-bit seed's low and high halves.
/// * `label_mode`: 0 none, 1 every sample gets `label`, 2 sample `i` gets `i % label`.
/// * `guidance`: the classifier-free guidance scale, NaN for the file's default (else none).
/// * `null_label`: the null class for guidance, negative for the file's default.
/// * `trajectory`: nonzero to record every step's state.
///
/// Returns 0, or -1 with the reason in the message text.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn flowrt_sample(
    method_len: usize,
    steps: u32,
    seed_lo: u32,
    seed_hi: u32,
    num: u32,
    label_mode: u32,
    label: i32,
    guidance: f32,
    null_label: i32,
    trajectory: u32,
) -> i32 {
    with_state(|s| {
        let name = core::str::from_utf8(input(s, method_len)?)
            .map_err(|_| WebError::Request("the method name is not UTF-8".into()))?;
        let method: Method = name
            .parse()
            .map_err(|e| WebError::Request(format!("method `{name}`: {e}")))?;
        let labels = match label_mode {
            0 => Labels::None,
            1 => Labels::All(label.into()),
            2 => Labels::Cycle(label.into()),
            k => {
                return Err(WebError::Request(format!(
                    "label mode {k}: expected 0, 1 or 2"
                )))
            }
        };
        let opts = Options {
            method,
            steps: (steps > 0).then_some(steps as usize),
            seed: u64::from(seed_lo) | (u64::from(seed_hi) << 32),
            num: num as usize,
            labels,
            guidance: (!guidance.is_nan()).then_some(guidance),
            null_label: (null_label >= 0).then_some(null_label.into()),
            trajectory: trajectory != 0,
        };
        s.output = Output::default();
        let out = {
            let m = s.model.as_ref().ok_or(WebError::NoModel)?.model()?;
            session::sample(&m, &opts)?
        };
        s.output = out;
        Ok(())
    })
}

/// Where the last samples start (`f32` values, row-major).
#[no_mangle]
pub extern "C" fn flowrt_samples_ptr() -> *const f32 {
    STATE.with(|s| s.borrow().output.samples.as_ptr())
}

/// How many `f32` values the last samples hold.
#[no_mangle]
pub extern "C" fn flowrt_samples_len() -> usize {
    STATE.with(|s| s.borrow().output.samples.len())
}

/// Where the last trajectory starts (`states × samples` `f32` values).
#[no_mangle]
pub extern "C" fn flowrt_trajectory_ptr() -> *const f32 {
    STATE.with(|s| s.borrow().output.trajectory.as_ptr())
}

/// How many `f32` values the last trajectory holds.
#[no_mangle]
pub extern "C" fn flowrt_trajectory_len() -> usize {
    STATE.with(|s| s.borrow().output.trajectory.len())
}

/// How many states the last trajectory holds (the initial noise and one per step).
#[no_mangle]
pub extern "C" fn flowrt_states() -> usize {
    STATE.with(|s| s.borrow().output.states)
}

/// Network evaluations of the last run.
#[no_mangle]
pub extern "C" fn flowrt_evaluations() -> usize {
    STATE.with(|s| s.borrow().output.evaluations)
}

/// Where the message text starts (UTF-8: the last error, or [`flowrt_info`]'s JSON).
#[no_mangle]
pub extern "C" fn flowrt_text_ptr() -> *const u8 {
    STATE.with(|s| s.borrow().text.as_ptr())
}

/// The length of the message text in bytes.
#[no_mangle]
pub extern "C" fn flowrt_text_len() -> usize {
    STATE.with(|s| s.borrow().text.len())
}
