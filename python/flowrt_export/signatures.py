"""The model shapes export() knows: for each, the ONNX inputs it writes (names, flowrt roles,
shapes, dtypes), how the model is called with them, and the `flowrt export` flags (roles,
time axis and scale, second time input) that tell flowrt what they mean.

Plain Python (no torch, no numpy): `plan()` turns a signature name and options into a
`Plan`, which export(), the probes and the command lines all read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SignatureError

#: Roles flowrt's `--role NAME=ROLE` accepts.
ROLES = ("x", "t", "xt", "label", "cond", "guidance", "step")

#: Shapes of the time input: `[B]`, `[B, 1]`, or one 0-dim value for the whole batch.
TIME_SHAPES = ("vector", "column", "scalar")

#: Forms of a few-step model's second time input, as `flowrt export --second-time` names
#: them: `r` (the step's end time), `h` (= t - r, MeanFlow), `step-size` (|r - t|),
#: `log2-steps` (log2 of 1/|r - t|, shortcut models' dt_base).
SECOND_TIME_FORMS = ("r", "h", "step-size", "log2-steps")


@dataclass(frozen=True)
class Input:
    """One ONNX input: its name, flowrt role, shape (None = the batch dim; () = 0-dim),
    dtype ("float32" or "int64") and how probe values are drawn for it (`kind`: "state",
    "xt", "time", "label", "cond", "guidance" or "step")."""

    name: str
    role: str
    shape: tuple
    dtype: str
    kind: str

    @property
    def batched(self) -> bool:
        """True when the input has a batch dim (dynamic in the ONNX export)."""
        return None in self.shape


@dataclass(frozen=True)
class Plan:
    """Everything export() needs to know about one model: the ONNX inputs in call order, the
    output name, how to call the model (`call`), the time convention and the class count.

    `call`: "xt" (model(xt)), "txy" (torchcfm UNet: model(t, x, *extras)), "positional"
    (model(*inputs)) or "diffusers" (model(*inputs), the `.sample` / first element of what
    it returns)."""

    signature: str
    inputs: tuple
    call: str
    time_axis: str = "t"
    time_scale: float = 1.0
    negate_output: bool = False
    second_time: str | None = None
    num_classes: int | None = None
    output: str = "v"
    flags: tuple = field(default=())

    @property
    def names(self) -> list[str]:
        """The ONNX input names, in call order."""
        return [i.name for i in self.inputs]

    @property
    def scalar_time(self) -> bool:
        """True when the time input is one 0-dim value (probes are then checked row by row)."""
        return any(i.kind == "time" and i.shape == () for i in self.inputs)

    def input(self, kind: str) -> Input | None:
        """The input of this kind, if any."""
        return next((i for i in self.inputs if i.kind == kind), None)

    def export_flags(self) -> list[str]:
        """The `flowrt export` flags that declare this plan: one `--role NAME=ROLE` per input,
        then `--time sigma`, `--time-scale S`, `--negate-output`, `--second-time FORM` where
        they differ from flowrt's defaults."""
        out: list[str] = []
        for i in self.inputs:
            out += ["--role", f"{i.name}={i.role}"]
        if self.time_axis != "t":
            out += ["--time", self.time_axis]
        if self.time_scale != 1.0:
            out += ["--time-scale", _number(self.time_scale)]
        if self.negate_output:
            out.append("--negate-output")
        if self.second_time is not None:
            out += ["--second-time", self.second_time]
        return out


def _number(v: float) -> str:
    """A float as a command-line word: `1000` rather than `1000.0`, else repr."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass(frozen=True)
class _Spec:
    """A signature's fixed facts: its ONNX names (state, time, second time), call style,
    time axis, default time scale, second-time form, what it accepts."""

    description: str
    state: str
    time: str | None
    call: str
    time_axis: str = "t"
    time_scale: float = 1.0
    second_time: str | None = None
    extras: bool = True
    time_shapes: tuple = TIME_SHAPES
    state_rank: int | None = None


#: The known model shapes (see docs/python.md for one example each).
SIGNATURES: dict[str, _Spec] = {
    "torchcfm-mlp": _Spec(
        "torchcfm MLP(dim, time_varying=True): forward(cat([x, t])), time the LAST column; "
        "ONNX input xt [B, D+1]",
        state="xt", time=None, call="xt", extras=False, time_shapes=("vector",), state_rank=1,
    ),
    "torchcfm-unet": _Spec(
        "torchcfm UNetModel(Wrapper): forward(t, x, y=None); ONNX inputs x [B, C, H, W], "
        "t [B], y [B] int64 when class-conditional",
        state="x", time="t", call="txy", state_rank=3,
    ),
    "flow-matching": _Spec(
        "Meta flow_matching-style v(x, t[, y, cond, guidance]); t = 0 noise, 1 data",
        state="x", time="t", call="positional",
    ),
    "diffusers": _Spec(
        "diffusers-style forward(sample, timestep[, ...]) on the sigma axis (1 = noise, "
        "0 = data), timestep = 1000 * sigma, output noise - data (.sample of the output)",
        state="sample", time="timestep", call="diffusers", time_axis="sigma",
        time_scale=1000.0,
    ),
    "meanflow": _Spec(
        "MeanFlow u(z, t, h) (official: t = 1 noise, 0 data; h = t - r), step "
        "z <- z - (t - r) u(z, t, t - r)",
        state="z", time="t", call="positional", time_axis="sigma", second_time="h",
        time_shapes=("vector", "column"),
    ),
    "shortcut": _Spec(
        "shortcut model v(x, t, dt_base) (t = 0 noise, 1 data; dt_base = log2 of the step "
        "count), step x <- x + d v(x, t, log2(1/d))",
        state="x", time="t", call="positional", second_time="log2-steps",
        time_shapes=("vector", "column"),
    ),
}

#: Other names accepted for the signatures above.
ALIASES = {
    "xt": "torchcfm-mlp",
    "mlp": "torchcfm-mlp",
    "unet": "torchcfm-unet",
    "x-t": "flow-matching",
    "meta": "flow-matching",
    "sigma": "diffusers",
}

#: Default ONNX names of a second time input, per form.
_SECOND_TIME_NAMES = {"r": "r", "h": "h", "step-size": "dt", "log2-steps": "dt_base"}


def canonical(signature: str) -> str:
    """The signature's canonical name (aliases resolved).

    Raises SignatureError for an unknown name, listing the known ones."""
    if not isinstance(signature, str):
        raise SignatureError(f"signature must be a string, got {type(signature).__name__}")
    key = signature.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in SIGNATURES:
        known = ", ".join(list(SIGNATURES) + sorted(ALIASES))
        raise SignatureError(f"unknown signature `{signature}` (known: {known})")
    return key


def _time_shape(kind: str) -> tuple:
    return {"vector": (None,), "column": (None, 1), "scalar": ()}[kind]


def plan(
    signature: str,
    *,
    state_shape,
    num_classes: int | None = None,
    cond_dim: int | None = None,
    guidance: bool = False,
    time_shape: str = "vector",
    time_axis: str | None = None,
    time_scale: float | None = None,
    second_time: str | None = None,
    negate_output: bool = False,
    input_names: dict | None = None,
) -> Plan:
    """The Plan of `signature` for a model whose state (one sample, no batch dim) has
    `state_shape`, with optional extra inputs appended in this order: class labels
    (`num_classes` classes, null label included: input `y` [B] int64, role label),
    conditioning vectors (`cond_dim`: `cond` [B, C], role cond), an embedded guidance scale
    (`guidance=True`: `guidance` [B], role guidance). `time_axis`, `time_scale`,
    `second_time` override the signature's convention; `input_names` renames inputs
    (default name -> ONNX name).

    Raises SignatureError for an unknown signature or options that do not fit it."""
    name = canonical(signature)
    spec = SIGNATURES[name]
    shape = _state_shape(name, spec, state_shape)
    if time_shape not in TIME_SHAPES:
        raise SignatureError(f"time_shape `{time_shape}` is not one of {', '.join(TIME_SHAPES)}")
    if time_shape not in spec.time_shapes:
        raise SignatureError(
            f"signature {name} takes time_shape {' or '.join(spec.time_shapes)}, "
            f"not `{time_shape}`"
        )
    axis = spec.time_axis if time_axis is None else time_axis
    if axis not in ("t", "sigma"):
        raise SignatureError(f"time_axis `{axis}` is not `t` or `sigma`")
    scale = spec.time_scale if time_scale is None else float(time_scale)
    if not scale > 0.0 or scale != scale or scale == float("inf"):
        raise SignatureError(f"time_scale must be a positive finite number, got {time_scale}")
    form = spec.second_time if second_time is None else second_time
    if second_time is not None and spec.second_time is None:
        raise SignatureError(
            f"signature {name} has no second time input (second_time is for meanflow and "
            "shortcut models)"
        )
    if form is not None and form not in SECOND_TIME_FORMS:
        raise SignatureError(
            f"second_time `{form}` is not one of {', '.join(SECOND_TIME_FORMS)}"
        )
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise SignatureError(f"num_classes must be a positive integer, got {num_classes!r}")
    if cond_dim is not None and (not isinstance(cond_dim, int) or cond_dim < 1):
        raise SignatureError(f"cond_dim must be a positive integer, got {cond_dim!r}")
    extras = [w for w, on in (("num_classes", num_classes is not None),
                              ("cond_dim", cond_dim is not None),
                              ("guidance", bool(guidance))) if on]
    if extras and not spec.extras:
        raise SignatureError(
            f"signature {name} takes one input (xt) only; {', '.join(extras)} need a model "
            "with more inputs (e.g. signature flow-matching)"
        )
    if name == "torchcfm-unet" and (cond_dim is not None or guidance):
        raise SignatureError("torchcfm-unet takes (t, x, y) only: no cond or guidance input")

    inputs: list[Input] = []
    if spec.state == "xt":
        inputs.append(Input("xt", "xt", (None, shape[0] + 1), "float32", "xt"))
    else:
        inputs.append(Input(spec.state, "x", (None, *shape), "float32", "state"))
        tshape = _time_shape(time_shape)
        inputs.append(Input(spec.time, "t", tshape, "float32", "time"))
        if form is not None:
            inputs.append(Input(_SECOND_TIME_NAMES[form], "step", tshape, "float32", "step"))
    if num_classes is not None:
        inputs.append(Input("y", "label", (None,), "int64", "label"))
    if cond_dim is not None:
        inputs.append(Input("cond", "cond", (None, cond_dim), "float32", "cond"))
    if guidance:
        inputs.append(Input("guidance", "guidance", (None,), "float32", "guidance"))
    inputs = _rename(inputs, input_names or {})
    return Plan(
        signature=name,
        inputs=tuple(inputs),
        call=spec.call,
        time_axis=axis,
        time_scale=scale,
        negate_output=bool(negate_output),
        second_time=form,
        num_classes=num_classes,
    )


def _state_shape(name: str, spec: _Spec, state_shape) -> tuple:
    if state_shape is None:
        raise SignatureError(
            f"signature {name} needs state_shape (one sample's shape without the batch dim, "
            "e.g. (2,) or (1, 8, 8))"
        )
    if isinstance(state_shape, int):
        state_shape = (state_shape,)
    try:
        shape = tuple(int(d) for d in state_shape)
    except (TypeError, ValueError):
        raise SignatureError(f"state_shape must be a tuple of ints, got {state_shape!r}") from None
    if not shape or any(d < 1 for d in shape) or any(
            float(d) != float(o) for d, o in zip(shape, state_shape)):
        raise SignatureError(f"state_shape must be positive ints, got {state_shape!r}")
    if spec.state_rank is not None and len(shape) != spec.state_rank:
        raise SignatureError(
            f"signature {name} needs a state of rank {spec.state_rank} "
            f"(got state_shape {shape})"
        )
    return shape


def _rename(inputs: list[Input], names: dict) -> list[Input]:
    known = {i.name for i in inputs}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SignatureError(
            f"input_names renames {', '.join(unknown)}, which this signature does not have "
            f"(its inputs: {', '.join(i.name for i in inputs)})"
        )
    out = [Input(str(names.get(i.name, i.name)), i.role, i.shape, i.dtype, i.kind)
           for i in inputs]
    seen = [i.name for i in out]
    if len(set(seen)) != len(seen) or any(not n for n in seen):
        raise SignatureError(f"input names must be distinct and non-empty, got {seen}")
    return out
