"""Probe inputs for the check, and the check itself on the flowrt side: the `.frt`'s network
evaluated by `flowrt eval` on the probes, compared with reference outputs. Needs numpy (not
torch): the reference can come from torch (export()) or from files (check_frt())."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import cli
from .compare import ATOL, RTOL, check_signature, compare
from .errors import SignatureError, VerificationError
from .signatures import Plan


def _np():
    import numpy as np

    return np


def probe_inputs(plan: Plan, n: int = 16, seed: int = 0) -> dict:
    """`n` probe rows for every input of the plan (name -> numpy array, ONNX dtype; a 0-dim
    time input gets one value per row, shape [n]). States are standard normal; model times
    uniform in [0, 1] with rows 0 and 1 at the two ends, fed as time_scale * time; labels
    cover 0..num_classes-1 (the last row is the largest class, often the null label);
    cond vectors standard normal; guidance scales uniform in [1, 8]; a second time input
    r or h uniform in [0, t], a step size 2^-k, log2 steps k for k in 0..7."""
    np = _np()
    if n < 1:
        raise SignatureError(f"probes must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    tau = rng.uniform(0.0, 1.0, n)
    tau[: min(n, 2)] = [0.0, 1.0][: min(n, 2)]
    out = {}
    for inp in plan.inputs:
        rows = tuple(n if d is None else d for d in inp.shape) if inp.shape else (n,)
        if inp.kind == "state":
            v = rng.standard_normal(rows)
        elif inp.kind == "xt":
            v = rng.standard_normal(rows)
            v[:, -1] = tau * plan.time_scale
        elif inp.kind == "time":
            v = (tau * plan.time_scale).reshape(rows)
        elif inp.kind == "step":
            k = rng.integers(0, 8, n)
            if plan.second_time in ("r", "h"):
                v = tau * rng.uniform(0.0, 1.0, n)
            elif plan.second_time == "step-size":
                v = 2.0 ** -k
            else:
                v = k.astype(np.float64)
            v = v.reshape(rows)
        elif inp.kind == "label":
            v = rng.integers(0, plan.num_classes, n)
            v[-1] = plan.num_classes - 1
        elif inp.kind == "cond":
            v = rng.standard_normal(rows)
        elif inp.kind == "guidance":
            v = rng.uniform(1.0, 8.0, rows)
        else:
            raise SignatureError(f"input {inp.name}: unknown kind {inp.kind}")
        out[inp.name] = np.ascontiguousarray(v, dtype=np.int64 if inp.dtype == "int64"
                                             else np.float32)
    return out


def row(plan: Plan, inputs: dict, i: int) -> dict:
    """Row `i` of probe inputs as a batch of one (a 0-dim time input: one 0-dim value)."""
    out = {}
    for inp in plan.inputs:
        a = inputs[inp.name]
        out[inp.name] = a[i:i + 1].reshape(()) if inp.shape == () else a[i:i + 1]
    return out


def flowrt_eval(flowrt: str, frt, inputs: dict, workdir) -> "object":
    """The `.frt`'s network output on `inputs` (name -> array, one batch), by `flowrt eval`
    with the arrays written as .npy files in `workdir`.

    Raises FlowrtCommandError when flowrt refuses them."""
    np = _np()
    files = {}
    for name, a in inputs.items():
        p = Path(workdir) / f"in_{len(files)}.npy"
        np.save(p, a)
        files[name] = str(p)
    out = Path(workdir) / "out.npy"
    if out.exists():
        out.unlink()
    cli.run(cli.eval_command(flowrt, frt, files, out))
    return np.load(out)


def check_frt(frt, plan: Plan, inputs: dict, reference, *, flowrt: str | None = None,
              atol: float = ATOL, rtol: float = RTOL, single_rows: tuple = (0,)) -> dict:
    """Checks a `.frt` against reference outputs: its signature (`flowrt inspect --json`)
    must be the plan's, and its network output on `inputs` (name -> array of n rows) must
    match `reference` (n rows) within atol + rtol·|ref| — as one batch, and each row of
    `single_rows` again as a batch of one (the dynamic batch). With a 0-dim time input every
    row is evaluated on its own. Returns the report (max errors, probe count).

    Raises VerificationError (with the numbers) on a mismatch, FlowrtNotFoundError /
    FlowrtCommandError when flowrt is missing or fails."""
    np = _np()
    exe = cli.find_flowrt(flowrt)
    check_signature(cli.inspect(exe, frt), plan)
    ref = np.asarray(reference, dtype=np.float32)
    n = ref.shape[0] if ref.ndim else 1
    with tempfile.TemporaryDirectory(prefix="flowrt-check-") as tmp:
        if plan.scalar_time:
            got = np.concatenate([flowrt_eval(exe, frt, row(plan, inputs, i), tmp)
                                  for i in range(n)])
            reports = [compare(got.ravel().tolist(), ref.ravel().tolist(), atol=atol,
                               rtol=rtol, what=f"{os.fspath(frt)}, {n} probes row by row")]
        else:
            got = flowrt_eval(exe, frt, inputs, tmp)
            if got.shape != ref.shape:
                raise VerificationError(
                    f"{os.fspath(frt)}: output shape {list(got.shape)}, reference "
                    f"{list(ref.shape)}", {"shape": list(got.shape)})
            reports = [compare(got.ravel().tolist(), ref.ravel().tolist(), atol=atol,
                               rtol=rtol, what=f"{os.fspath(frt)}, {n} probes as one batch")]
            for i in single_rows:
                if i < n:
                    one = flowrt_eval(exe, frt, row(plan, inputs, i), tmp)
                    reports.append(compare(one.ravel().tolist(), ref[i:i + 1].ravel().tolist(),
                                           atol=atol, rtol=rtol,
                                           what=f"{os.fspath(frt)}, probe {i} alone"))
    return {
        "probes": n,
        "max_abs_error": max(r["max_abs_error"] for r in reports),
        "max_ratio": max(r["max_ratio"] for r in reports),
        "max_abs_reference": float(np.abs(ref).max()) if ref.size else 0.0,
        "atol": atol,
        "rtol": rtol,
    }
