//! Signature detection: which ONNX input is the state `x`, the time `t`, or `xt`.

use anyhow::{anyhow, bail, Result};
use flowrt::ir::Role;

use crate::import::DeclaredInput;

/// Parses a role name as used by `--role NAME=ROLE`: `x`, `t`, `xt`.
pub fn parse_role(s: &str) -> Result<Role> {
    match s {
        "x" => Ok(Role::X),
        "t" => Ok(Role::T),
        "xt" => Ok(Role::Xt),
        other => bail!("unknown role `{other}` (known roles: x, t, xt)"),
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
    match role {
        Role::X => "x",
        Role::T => "t",
        Role::Xt => "xt",
    }
}

fn looks_like_time(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "t" | "s" | "time" | "times" | "timestep" | "timesteps" | "sigma" | "sigmas"
    ) || n.contains("time")
}

/// A declared shape that a time input can have: `[]`, `[B]`, `[1]`, `[B, 1]`, `[1, 1]`.
fn time_shaped(d: &DeclaredInput) -> bool {
    matches!(d.dims.as_slice(), [] | [_] | [_, Some(1)])
}

/// Assigns a role to every input (in ONNX order). `overrides` win; the rest is detected from
/// names and shapes. Errors explain what is ambiguous and how to say it with `--role`.
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
    let mut roles: Vec<Option<Role>> = inputs
        .iter()
        .map(|i| {
            overrides
                .iter()
                .find(|(n, _)| *n == i.name)
                .map(|(_, r)| *r)
        })
        .collect();
    let open: Vec<usize> = (0..inputs.len()).filter(|&i| roles[i].is_none()).collect();
    let out_width = outputs
        .first()
        .and_then(|o| o.dims.last().copied().flatten());
    let hint = "pass --role ONNX_INPUT_NAME=ROLE (x, t or xt) for each input";
    match (inputs.len(), open.as_slice()) {
        (_, []) => {}
        (1, [0]) => {
            let width = inputs[0].dims.last().copied().flatten();
            match (width, out_width) {
                (Some(w), Some(o)) if w == o + 1 => roles[0] = Some(Role::Xt),
                // Output shape unknown before analysis: assume xt; lowering checks the
                // output is [B, width - 1].
                (Some(_), None) => roles[0] = Some(Role::Xt),
                _ => bail!(
                    "the model has one input `{}` {:?} and output width {:?}: cannot tell \
                     whether it is `xt` (state with time appended) or `x`; {hint}",
                    inputs[0].name,
                    inputs[0].dims,
                    out_width
                ),
            }
        }
        (2, open) => {
            let taken: Vec<Role> = roles.iter().flatten().copied().collect();
            if open.len() == 1 {
                let other = taken[0];
                roles[open[0]] = Some(match other {
                    Role::T => Role::X,
                    Role::X => Role::T,
                    Role::Xt => bail!("an `xt` input leaves no role for a second input; {hint}"),
                });
            } else {
                let by_name: Vec<usize> = open
                    .iter()
                    .copied()
                    .filter(|&i| looks_like_time(&inputs[i].name))
                    .collect();
                let by_shape: Vec<usize> = open
                    .iter()
                    .copied()
                    .filter(|&i| time_shaped(&inputs[i]))
                    .collect();
                let t = match (by_name.as_slice(), by_shape.as_slice()) {
                    ([t], _) => *t,
                    (_, [t]) => *t,
                    _ => bail!(
                        "cannot tell which of the inputs {:?} is the time; {hint}",
                        inputs
                            .iter()
                            .map(|i| (&i.name, &i.dims))
                            .collect::<Vec<_>>()
                    ),
                };
                roles[t] = Some(Role::T);
                roles[1 - t] = Some(Role::X);
            }
        }
        (n, _) => bail!(
            "the model has {n} inputs {:?}; flowrt velocity fields take x and t (or xt); {hint}",
            inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
        ),
    }
    let roles: Vec<Role> = roles
        .into_iter()
        .map(|r| r.ok_or_else(|| anyhow!("{hint}")))
        .collect::<Result<_>>()?;
    let count = |r: Role| roles.iter().filter(|x| **x == r).count();
    match (count(Role::X), count(Role::T), count(Role::Xt)) {
        (1, 1, 0) | (0, 0, 1) => {}
        (1, 0, 0) => bail!("the model has a state input but no time input; {hint}"),
        (x, t, xt) => bail!("invalid roles: {x} x, {t} t, {xt} xt inputs (need x + t, or one xt)"),
    }
    for (input, role) in inputs.iter().zip(&roles) {
        if *role == Role::T && !time_shaped(input) {
            bail!(
                "time input `{}` has shape {:?}; t must be [], [B], [1] or [B, 1]",
                input.name,
                input.dims
            );
        }
        if matches!(role, Role::X | Role::Xt) && input.dims.len() < 2 {
            bail!(
                "state input `{}` has shape {:?}; x must be [B, features...]",
                input.name,
                input.dims
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
        }
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
