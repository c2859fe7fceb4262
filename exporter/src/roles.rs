//! Signature detection: which ONNX input is the state `x`, the time `t`, `xt`, or one of the
//! conditioning inputs (`label`, `cond`, `guidance`).

use anyhow::{anyhow, bail, Result};
use flowrt::ir::Role;

use crate::import::DeclaredInput;

/// Role names accepted by `--role NAME=ROLE`.
const ROLE_NAMES: &str = "x, t, xt, label, cond, guidance, step";

/// Parses a role name as used by `--role NAME=ROLE`: `x`, `t`, `xt`, `label`, `cond`,
/// `guidance`.
pub fn parse_role(s: &str) -> Result<Role> {
    match s {
        "x" => Ok(Role::X),
        "t" => Ok(Role::T),
        "xt" => Ok(Role::Xt),
        "label" => Ok(Role::Label),
        "cond" => Ok(Role::Cond),
        "guidance" => Ok(Role::Guidance),
        "step" => Ok(Role::Step),
        other => bail!("unknown role `{other}` (known roles: {ROLE_NAMES})"),
    }
}

/// Parses one `NAME=ROLE` override.
pub fn parse_role_override(s: &str) -> Result<(String, Role)> {
    let (name, role) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("--role expects ONNX_INPUT_NAME=ROLE, got `{s}`"))?;
    Ok((name.to_string(), parse_role(role)?))
}

/// Short name of a role, as written on the command line.
pub fn role_name(role: Role) -> &'static str {
    role.name()
}

/// Names that suggest a role, matched in any case: whole names, prefixes, and parts.
struct NameHint(
    /// Whole names.
    &'static [&'static str],
    /// Prefixes.
    &'static [&'static str],
    /// Parts.
    &'static [&'static str],
);

impl NameHint {
    fn matches(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        self.0.contains(&n.as_str())
            || self.1.iter().any(|p| n.starts_with(p))
            || self.2.iter().any(|p| n.contains(p))
    }
}

/// `t`, `s`, `sigma(s)`, or any name with `time` (`timestep(s)`).
const TIME_NAMES: NameHint = NameHint(&["t", "s", "sigma", "sigmas"], &[], &["time"]);

/// `y`, `class(es)`, or any name with `label` (`labels`, `class_labels`).
const LABEL_NAMES: NameHint = NameHint(&["y", "class", "classes"], &[], &["label"]);

/// `c`, `cond...` (`condition`, `conditioning`), or any name with `context`.
const COND_NAMES: NameHint = NameHint(&["c"], &["cond"], &["context"]);

/// Names that can only mean guidance (`guidance`, `guidance_scale`, `cfg`, `cfg_scale`).
const SURELY_GUIDANCE: NameHint = NameHint(&[], &["cfg"], &["guidance"]);

/// Short names that may mean guidance (`g`, `w`) when another input is the time.
const MAYBE_GUIDANCE: NameHint = NameHint(&["g", "w"], &[], &[]);

/// A name that few-step models give their second time input: mean flows' `r` / `h`,
/// shortcut models' `d` / `dt` / `dt_base`.
pub fn looks_like_second_time(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "r" | "h"
            | "d"
            | "dt"
            | "dt_base"
            | "delta"
            | "delta_t"
            | "step"
            | "step_size"
            | "log2_steps"
            | "t_end"
            | "t_next"
    )
}

/// The second-time form a name implies (`r`/`t_end`/`t_next` → r, `h`/`delta` → h,
/// `dt_base`/`log2_steps` → log2 steps, `d`/`dt`/`step(_size)` → step size).
pub fn second_time_from_name(name: &str) -> flowrt::time::SecondTime {
    use flowrt::time::SecondTime as S;
    match name.to_ascii_lowercase().as_str() {
        "r" | "t_end" | "t_next" => S::R,
        "h" | "delta" | "delta_t" => S::H,
        "dt_base" | "log2_steps" => S::Log2Steps,
        _ => S::StepSize,
    }
}

/// A declared shape that a time input can have: `[]`, `[B]`, `[1]`, `[B, 1]`, `[1, 1]`.
fn time_shaped(d: &DeclaredInput) -> bool {
    matches!(d.dims.as_slice(), [] | [_] | [_, Some(1)])
}

/// A declared shape a label can have: `[B]` or `[B, 1]`.
fn label_shaped(d: &DeclaredInput) -> bool {
    matches!(d.dims.as_slice(), [_] | [_, Some(1)])
}

/// The indices in `among` of the inputs that satisfy `pred`.
fn which(
    inputs: &[DeclaredInput],
    among: &[usize],
    pred: impl Fn(&DeclaredInput) -> bool,
) -> Vec<usize> {
    among
        .iter()
        .copied()
        .filter(|&i| pred(&inputs[i]))
        .collect()
}

/// Assigns a role to every input (in ONNX order). `overrides` win; the rest is detected from
/// names, dtypes and shapes:
///
/// * an integer input is the `label` (if there are several, the one named like `y`,
///   `label(s)`, `class`, `class_labels`);
/// * a float `[B, C]` input named like `cond`, `c`, `context`, `condition` is `cond`, and a
///   time-shaped input named `guidance*` / `cfg*` (or `g` / `w` when another input can be
///   the time) is `guidance` — as long as a state (resp. time) input remains;
/// * the rest is `x` + `t` or one `xt`, as before.
///
/// Errors explain what is ambiguous and how to say it with `--role`.
pub fn assign_roles(
    inputs: &[DeclaredInput],
    outputs: &[DeclaredInput],
    overrides: &[(String, Role)],
) -> Result<Vec<Role>> {
    for (name, _) in overrides {
        if !inputs.iter().any(|i| &i.name == name) {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            bail!("--role names `{name}`, but the model's inputs are {names:?}");
        }
    }
    let hint = format!("pass --role ONNX_INPUT_NAME=ROLE ({ROLE_NAMES}) for each input");
    let mut roles: Vec<Option<Role>> = inputs
        .iter()
        .map(|i| {
            overrides
                .iter()
                .find(|(n, _)| *n == i.name)
                .map(|(_, r)| *r)
        })
        .collect();
    let taken = |roles: &[Option<Role>], r: Role| roles.contains(&Some(r));
    let open = |roles: &[Option<Role>]| -> Vec<usize> {
        (0..inputs.len()).filter(|&i| roles[i].is_none()).collect()
    };

    // Label: integer inputs.
    let ints = which(inputs, &open(&roles), |d| d.integer);
    if !ints.is_empty() && !taken(&roles, Role::Label) {
        let named = which(inputs, &ints, |d| LABEL_NAMES.matches(&d.name));
        let pick = match (ints.as_slice(), named.as_slice()) {
            ([one], _) | (_, [one]) => *one,
            _ => bail!(
                "the integer inputs {:?} could each be the class label; {hint}",
                ints.iter().map(|&i| &inputs[i].name).collect::<Vec<_>>()
            ),
        };
        roles[pick] = Some(Role::Label);
    }
    // Cond: a float [B, C] input named like a condition, if another state candidate remains.
    let open_now = open(&roles);
    let conds = which(inputs, &open_now, |d| {
        !d.integer && d.dims.len() == 2 && COND_NAMES.matches(&d.name)
    });
    if let [c] = conds.as_slice() {
        let state_left = taken(&roles, Role::X)
            || taken(&roles, Role::Xt)
            || open_now
                .iter()
                .any(|&i| i != *c && !inputs[i].integer && inputs[i].dims.len() >= 2);
        if state_left && !taken(&roles, Role::Cond) {
            roles[*c] = Some(Role::Cond);
        }
    }
    // Guidance: a time-shaped input named like guidance.
    let open_now = open(&roles);
    let time_like = which(inputs, &open_now, |d| !d.integer && time_shaped(d));
    let sure = which(inputs, &time_like, |d| SURELY_GUIDANCE.matches(&d.name));
    let maybe = which(inputs, &time_like, |d| MAYBE_GUIDANCE.matches(&d.name));
    let guidance = match (sure.as_slice(), maybe.as_slice()) {
        ([g], _) => Some(*g),
        ([], [g]) => {
            // `g` / `w` only when something else can be the time.
            let time_left = taken(&roles, Role::T) || time_like.iter().any(|&i| i != *g);
            time_left.then_some(*g)
        }
        _ => None,
    };
    if let Some(g) = guidance {
        if !taken(&roles, Role::Guidance) {
            roles[g] = Some(Role::Guidance);
        }
    }

    // Step: a few-step model's second time input, when two more inputs remain for x and t.
    let open_now = open(&roles);
    let steps = which(inputs, &open_now, |d| {
        !d.integer && time_shaped(d) && looks_like_second_time(&d.name)
    });
    if let [st] = steps.as_slice() {
        let others = (0..inputs.len())
            .filter(|&i| i != *st && !roles[i].is_some_and(|r| r.is_conditioning()))
            .count();
        if others >= 2 && !taken(&roles, Role::Step) {
            roles[*st] = Some(Role::Step);
        }
    }

    // The core: x + t, or xt, among the inputs without a conditioning or step role.
    let core: Vec<usize> = (0..inputs.len())
        .filter(|&i| !roles[i].is_some_and(|r| r.is_conditioning() || r == Role::Step))
        .collect();
    let core_open: Vec<usize> = core
        .iter()
        .copied()
        .filter(|&i| roles[i].is_none())
        .collect();
    let out_width = outputs
        .first()
        .and_then(|o| o.dims.last().copied().flatten());
    match (core.as_slice(), core_open.as_slice()) {
        (_, []) => {}
        ([only], [_]) => {
            let only = *only;
            let width = inputs[only].dims.last().copied().flatten();
            match (width, out_width) {
                (Some(w), Some(o)) if w == o + 1 => roles[only] = Some(Role::Xt),
                // Same width in and out, no time: a state-to-state map (rollout).
                (Some(w), Some(o)) if w == o => roles[only] = Some(Role::X),
                // Output shape unknown before analysis: assume xt; lowering checks the
                // output is [B, width - 1].
                (Some(_), None) => roles[only] = Some(Role::Xt),
                _ => bail!(
                    "the model has one state input `{}` {:?} and output width {:?}: cannot \
                     tell whether it is `xt` (state with time appended) or `x`; {hint}",
                    inputs[only].name,
                    inputs[only].dims,
                    out_width
                ),
            }
        }
        ([_, _], open2) => {
            if let [one] = open2 {
                let other = core
                    .iter()
                    .find(|&&i| i != *one)
                    .and_then(|&i| roles[i])
                    .ok_or_else(|| anyhow!("{hint}"))?;
                roles[*one] = Some(match other {
                    Role::T => Role::X,
                    Role::X => Role::T,
                    _ => bail!("an `xt` input leaves no role for a second input; {hint}"),
                });
            } else {
                let by_name = which(inputs, open2, |d| TIME_NAMES.matches(&d.name));
                let by_shape = which(inputs, open2, time_shaped);
                let t = match (by_name.as_slice(), by_shape.as_slice()) {
                    ([t], _) => *t,
                    (_, [t]) => *t,
                    _ => bail!(
                        "cannot tell which of the inputs {:?} is the time; {hint}",
                        open2
                            .iter()
                            .map(|&i| (&inputs[i].name, &inputs[i].dims))
                            .collect::<Vec<_>>()
                    ),
                };
                roles[t] = Some(Role::T);
                let x = open2.iter().copied().find(|&i| i != t).unwrap_or(t);
                roles[x] = Some(Role::X);
            }
        }
        (core, _) => bail!(
            "the model has inputs {:?}; flowrt velocity fields take x and t (or xt), plus \
             optionally a label, a cond vector and a guidance scale; {hint}",
            core.iter().map(|&i| &inputs[i].name).collect::<Vec<_>>()
        ),
    }
    let roles: Vec<Role> = roles
        .into_iter()
        .map(|r| r.ok_or_else(|| anyhow!("{hint}")))
        .collect::<Result<_>>()?;
    let count = |r: Role| roles.iter().filter(|x| **x == r).count();
    match (count(Role::X), count(Role::T), count(Role::Xt)) {
        (1, 1, 0) | (0, 0, 1) => {}
        // A state-to-state network (autoregressive rollout, `flowrt rollout`).
        (1, 0, 0) if count(Role::Step) == 0 => {}
        (1, 0, 0) => bail!("the model has a step input but no time input; {hint}"),
        (x, t, xt) => bail!("invalid roles: {x} x, {t} t, {xt} xt inputs (need x + t, or one xt)"),
    }
    for r in [Role::Label, Role::Cond, Role::Guidance, Role::Step] {
        if count(r) > 1 {
            bail!("{} inputs have the role `{}`; {hint}", count(r), r.name());
        }
    }
    for (input, role) in inputs.iter().zip(&roles) {
        let bad = |what: &str| {
            anyhow!(
                "{} input `{}` has shape {:?}; {what}",
                role.name(),
                input.name,
                input.dims
            )
        };
        match role {
            Role::T if !time_shaped(input) => {
                return Err(bad("t must be [], [B], [1] or [B, 1]"));
            }
            Role::Guidance if !time_shaped(input) => {
                return Err(bad("guidance must be [], [B], [1] or [B, 1]"));
            }
            Role::Step if !time_shaped(input) => {
                return Err(bad("step must be [], [B], [1] or [B, 1]"));
            }
            Role::X | Role::Xt if input.dims.len() < 2 => {
                return Err(bad("x must be [B, features...]"));
            }
            Role::Label if !label_shaped(input) => {
                return Err(bad("a label must be [B] or [B, 1]"))
            }
            Role::Cond if input.dims.len() != 2 => return Err(bad("cond must be [B, C]")),
            _ => {}
        }
        if input.integer && *role != Role::Label {
            bail!(
                "input `{}` is an integer tensor but has the role `{}`; only a label may be \
                 an integer (flowrt inputs are f32); {hint}",
                input.name,
                role.name()
            );
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, dims: &[Option<usize>]) -> DeclaredInput {
        DeclaredInput {
            name: name.into(),
            dims: dims.to_vec(),
            integer: false,
        }
    }

    fn int(name: &str, dims: &[Option<usize>]) -> DeclaredInput {
        DeclaredInput {
            integer: true,
            ..d(name, dims)
        }
    }

    #[test]
    fn detects_label_cond_guidance() {
        let out = [d("v", &[None, Some(2)])];
        let (x, t) = (d("x", &[None, Some(2)]), d("t", &[None]));
        let r = assign_roles(&[x.clone(), t.clone(), int("y", &[None])], &out, &[]).unwrap();
        assert_eq!(r, vec![Role::X, Role::T, Role::Label]);
        // Any integer input is the label, wherever it is.
        let r = assign_roles(&[int("k", &[None]), x.clone(), t.clone()], &out, &[]).unwrap();
        assert_eq!(r, vec![Role::Label, Role::X, Role::T]);
        // Two integer inputs: the one named like a label.
        let r = assign_roles(
            &[
                x.clone(),
                t.clone(),
                int("class_labels", &[None]),
                int("k", &[None]),
            ],
            &out,
            &[],
        );
        assert!(r.is_err(), "the second integer input has no role");
        let ins = [
            x.clone(),
            t.clone(),
            int("class_labels", &[None, Some(1)]),
            d("cond", &[None, Some(4)]),
            d("guidance", &[None]),
        ];
        let r = assign_roles(&ins, &out, &[]).unwrap();
        assert_eq!(
            r,
            vec![Role::X, Role::T, Role::Label, Role::Cond, Role::Guidance]
        );
        // xt + context + cfg scale (scalar).
        let ins = [
            d("xt", &[None, Some(3)]),
            d("context", &[None, Some(5)]),
            d("cfg_scale", &[]),
        ];
        let r = assign_roles(&ins, &out, &[]).unwrap();
        assert_eq!(r, vec![Role::Xt, Role::Cond, Role::Guidance]);
        // `w` is guidance only when another input is the time.
        let r = assign_roles(&[x.clone(), t.clone(), d("w", &[None, Some(1)])], &out, &[]).unwrap();
        assert_eq!(r, vec![Role::X, Role::T, Role::Guidance]);
        let r = assign_roles(&[x.clone(), d("w", &[None, Some(1)])], &out, &[]).unwrap();
        assert_eq!(r, vec![Role::X, Role::T]);
        // `c` is cond only when another input can be the state.
        let r = assign_roles(&[d("c", &[None, Some(2)]), t.clone()], &out, &[]).unwrap();
        assert_eq!(r, vec![Role::X, Role::T]);
    }

    #[test]
    fn conditioning_overrides_and_errors() {
        let out = [d("v", &[None, Some(2)])];
        let ins = [
            d("a", &[None, Some(2)]),
            d("b", &[None]),
            d("e", &[None, Some(3)]),
        ];
        assert!(assign_roles(&ins, &out, &[]).is_err());
        let r = assign_roles(
            &ins,
            &out,
            &[("e".into(), Role::Cond), ("b".into(), Role::T)],
        )
        .unwrap();
        assert_eq!(r, vec![Role::X, Role::T, Role::Cond]);
        let r = assign_roles(&ins, &out, &[("e".into(), Role::Cond)]).unwrap();
        assert_eq!(r, vec![Role::X, Role::T, Role::Cond]);
        // A label of the wrong shape, an integer input that is not the label, two guidances.
        let x = d("x", &[None, Some(2)]);
        let t = d("t", &[None]);
        let e = assign_roles(
            &[x.clone(), t.clone(), int("y", &[None, Some(3)])],
            &out,
            &[],
        );
        assert!(e.unwrap_err().to_string().contains("[B] or [B, 1]"));
        let e = assign_roles(
            &[x.clone(), t.clone(), int("y", &[None])],
            &out,
            &[("y".into(), Role::Guidance)],
        );
        assert!(e.unwrap_err().to_string().contains("integer"));
        let e = assign_roles(
            &[x.clone(), t.clone(), d("g1", &[None]), d("g2", &[None])],
            &out,
            &[("g1".into(), Role::Guidance), ("g2".into(), Role::Guidance)],
        );
        assert!(e.is_err());
        assert_eq!(parse_role("label").unwrap(), Role::Label);
        assert_eq!(parse_role("cond").unwrap(), Role::Cond);
        assert_eq!(parse_role("guidance").unwrap(), Role::Guidance);
        assert!(parse_role("y")
            .unwrap_err()
            .to_string()
            .contains("guidance"));
    }

    #[test]
    fn detects_xt() {
        let r = assign_roles(
            &[d("xt", &[None, Some(3)])],
            &[d("v", &[None, Some(2)])],
            &[],
        )
        .unwrap();
        assert_eq!(r, vec![Role::Xt]);
    }

    #[test]
    fn detects_x_and_t_by_name_and_shape() {
        let out = [d("v", &[None, Some(2)])];
        let r = assign_roles(&[d("x", &[None, Some(2)]), d("t", &[None])], &out, &[]).unwrap();
        assert_eq!(r, vec![Role::X, Role::T]);
        let r = assign_roles(&[d("tt", &[]), d("inp", &[None, Some(2)])], &out, &[]).unwrap();
        assert_eq!(r, vec![Role::T, Role::X]);
    }

    #[test]
    fn ambiguous_needs_override() {
        let out = [d("v", &[None, Some(1)])];
        let ins = [d("a", &[None, Some(1)]), d("b", &[None, Some(1)])];
        assert!(assign_roles(&ins, &out, &[]).is_err());
        let r = assign_roles(&ins, &out, &[("b".into(), Role::T)]).unwrap();
        assert_eq!(r, vec![Role::X, Role::T]);
        assert!(assign_roles(&ins, &out, &[("zzz".into(), Role::T)]).is_err());
    }
}
