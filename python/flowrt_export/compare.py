"""The two checks of an exported `.frt`, in plain Python: its network output against the
reference values (`compare`), and its signature as `flowrt inspect --json` reports it
against the Plan (`signature_problems`)."""

from __future__ import annotations

import math

from .errors import VerificationError
from .signatures import Plan

#: Default tolerances: |flowrt - torch| <= atol + rtol * |torch| on every value.
ATOL = 1e-5
RTOL = 1e-5


def compare(got, want, *, atol: float = ATOL, rtol: float = RTOL, what: str = "output"
            ) -> dict:
    """Compares two flat sequences of floats: every value must satisfy
    |got - want| <= atol + rtol * |want| (a NaN or infinity on either side fails).

    Returns the report {"values", "max_abs_error", "max_ratio" (largest error over its
    allowance), "worst_index", "bad"}; raises VerificationError with that report (the worst
    value, its index, the count of bad values) when any value fails or the lengths differ."""
    got, want = list(got), list(want)
    if len(got) != len(want):
        raise VerificationError(
            f"{what}: flowrt gave {len(got)} values, the reference has {len(want)}",
            {"values": len(want), "got_values": len(got)},
        )
    max_abs, max_ratio, worst, bad = 0.0, 0.0, None, 0
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = float(g), float(w)
        allowed = atol + rtol * abs(w)
        err = abs(g - w) if math.isfinite(g) and math.isfinite(w) else math.inf
        ratio = err / allowed if allowed > 0 else (0.0 if err == 0 else math.inf)
        if not ratio <= 1.0:
            bad += 1
        if worst is None or ratio > max_ratio:
            max_ratio, worst = ratio, i
        max_abs = max(max_abs, err)
    report = {"values": len(want), "max_abs_error": max_abs, "max_ratio": max_ratio,
              "worst_index": worst, "bad": bad, "atol": atol, "rtol": rtol}
    if bad:
        i = worst
        raise VerificationError(
            f"{what}: flowrt differs from the reference on {bad} of {len(want)} values "
            f"(tolerance {atol:g} + {rtol:g}·|ref|); worst at flat index {i}: flowrt "
            f"{float(got[i])!r}, reference {float(want[i])!r} "
            f"(|diff| {abs(float(got[i]) - float(want[i])):.3e})",
            report,
        )
    return report


def signature_problems(info: dict, plan: Plan) -> list[str]:
    """What differs between the `.frt`'s signature (`flowrt inspect --json`: inputs with name
    and role, time axis, scale, negate_output) and the plan; empty when they agree."""
    problems = []
    have = [(i.get("name"), i.get("role")) for i in info.get("inputs", [])]
    want = [(i.name, i.role) for i in plan.inputs]
    if have != want:
        problems.append(f"inputs (name, role): the .frt has {have}, expected {want}")
    t = info.get("time", {})
    if t.get("axis") != plan.time_axis:
        problems.append(f"time axis: the .frt has {t.get('axis')!r}, expected "
                        f"{plan.time_axis!r}")
    scale = t.get("scale")
    if not isinstance(scale, (int, float)) or abs(scale - plan.time_scale) > 1e-6 * max(
            1.0, plan.time_scale):
        problems.append(f"time scale: the .frt has {scale!r}, expected {plan.time_scale!r}")
    if bool(t.get("negate_output")) != plan.negate_output:
        problems.append(f"negate_output: the .frt has {t.get('negate_output')!r}, expected "
                        f"{plan.negate_output!r}")
    if plan.num_classes is not None and info.get("label_classes") not in (
            None, plan.num_classes):
        problems.append(f"label classes: the .frt has {info.get('label_classes')!r}, "
                        f"expected {plan.num_classes}")
    return problems


def check_signature(info: dict, plan: Plan) -> None:
    """Raises VerificationError listing `signature_problems(info, plan)` if there are any."""
    problems = signature_problems(info, plan)
    if problems:
        raise VerificationError("the .frt's signature is not the one exported: "
                                + "; ".join(problems), {"problems": problems})
