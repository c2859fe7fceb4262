"""export(): a PyTorch flow model to a checked `.frt` in one call — torch.onnx.export with the
signature's input names, dynamic batch and opset, `flowrt export` with its roles and time
flags, then the `.frt`'s network against the torch model on probe points (`flowrt eval`).
torch is imported here, inside export(), so the rest of the package works without it."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import cli
from .compare import ATOL, RTOL
from .errors import SignatureError, TorchMissingError, VerificationError
from .probe import check_frt, probe_inputs, row
from .signatures import Plan, canonical, plan as make_plan

#: Batch size of the example inputs the export traces with (odd and unlike typical state
#: dims, so the batch dim cannot be confused with another dim of the same size).
EXAMPLE_BATCH = 7

#: Opsets of the two torch exporters, as the repository's fixtures use them.
OPSETS = {"torchscript": 17, "dynamo": 18}


@dataclass
class ExportResult:
    """What export() wrote and checked: the `.frt` and ONNX paths, the plan (inputs, roles,
    time convention), the `flowrt export` command line, `flowrt inspect --json` of the
    result, and the check's report (None with check=False)."""

    frt: Path
    onnx: Path
    plan: Plan
    command: list
    info: dict
    check: dict | None


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise TorchMissingError(
            "flowrt_export.export() needs PyTorch: pip install torch onnx (and onnxscript for "
            "exporter='dynamo'); check_frt() works without it"
        ) from e
    return torch


def _infer(torch, model, name: str, state_shape, num_classes):
    """state_shape / num_classes read off torchcfm models when not given."""
    if name == "torchcfm-mlp" and state_shape is None:
        first = next((m for m in model.modules() if isinstance(m, torch.nn.Linear)), None)
        if first is not None:
            state_shape = (first.in_features - 1,)
    if name == "torchcfm-unet":
        if state_shape is None and hasattr(model, "in_channels") and hasattr(model,
                                                                             "image_size"):
            state_shape = (int(model.in_channels), int(model.image_size),
                           int(model.image_size))
        if num_classes is None and getattr(model, "num_classes", None) is not None:
            num_classes = int(model.num_classes)
    return state_shape, num_classes


def _adapter(torch, model, plan: Plan, call):
    """A module whose forward takes the ONNX inputs in plan order and returns one tensor."""

    class Adapter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            if call is not None:
                out = call(self.model, *args)
            elif plan.call == "xt":
                out = self.model(args[0])
            elif plan.call == "txy":
                out = self.model(args[1], args[0], *args[2:])
            else:
                out = self.model(*args)
            if hasattr(out, "sample"):
                out = out.sample
            elif isinstance(out, dict) and "sample" in out:
                out = out["sample"]
            elif isinstance(out, (tuple, list)):
                out = out[0]
            return out

    return Adapter()


def _tensors(torch, arrays: dict, plan: Plan, device) -> tuple:
    return tuple(torch.from_numpy(arrays[i.name]).to(device) for i in plan.inputs)


def _device(torch, model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _example(plan: Plan, seed: int) -> dict:
    """Probe rows as the traced example: EXAMPLE_BATCH rows, a 0-dim time as one value."""
    arrays = probe_inputs(plan, EXAMPLE_BATCH, seed + 1)
    for i in plan.inputs:
        if i.shape == ():
            arrays[i.name] = arrays[i.name][:1].reshape(())
    return arrays


def _onnx_export(torch, module, example: tuple, plan: Plan, onnx: Path, exporter: str,
                 opset: int) -> None:
    names = plan.names
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            dyn = {i.name: {0: "batch"} for i in plan.inputs if i.batched}
            dyn[plan.output] = {0: "batch"}
            torch.onnx.export(module, example, str(onnx), dynamo=False, opset_version=opset,
                              input_names=names, output_names=[plan.output],
                              dynamic_axes=dyn, do_constant_folding=True)
        else:
            try:
                import onnxscript  # noqa: F401
            except ImportError as e:
                raise TorchMissingError(
                    "exporter='dynamo' needs onnxscript: pip install onnxscript") from e
            batch = torch.export.Dim("batch")
            # One entry per forward parameter: the adapter's is `*args`, a tuple.
            shapes = (tuple({0: batch} if i.batched else None for i in plan.inputs),)
            torch.onnx.export(module, example, str(onnx), dynamo=True, opset_version=opset,
                              input_names=names, output_names=[plan.output],
                              dynamic_shapes=shapes, external_data=True, verbose=False)


def export(model, signature: str, path, *, state_shape=None, num_classes: int | None = None,
           cond_dim: int | None = None, guidance: bool = False, time_shape: str = "vector",
           time_axis: str | None = None, time_scale: float | None = None,
           second_time: str | None = None, negate_output: bool = False,
           input_names: dict | None = None, call=None, exporter: str = "torchscript",
           opset: int | None = None, onnx_path=None, flowrt=None, flowrt_args=(),
           check: bool = True, probes: int = 16, seed: int = 0, atol: float = ATOL,
           rtol: float = RTOL) -> ExportResult:
    """Exports `model` (a torch.nn.Module) to the `.frt` file `path` and checks it.

    * `signature`: the model's shape — "torchcfm-mlp" (forward(cat([x, t])), time last),
      "torchcfm-unet" (forward(t, x, y)), "flow-matching" (v(x, t)), "diffusers"
      (forward(sample, timestep) on the sigma axis, timestep = 1000 sigma), "meanflow"
      (u(z, t, h)), "shortcut" (v(x, t, dt_base)); see signatures.SIGNATURES and ALIASES.
    * `state_shape`: one sample's shape without the batch dim (read off torchcfm models).
    * `num_classes` (class labels `y`, null label included), `cond_dim` (`cond` vectors),
      `guidance` (an embedded guidance-scale input): extra inputs, passed after the others.
    * `time_shape` ("vector" [B], "column" [B, 1], "scalar" 0-dim), `time_axis`,
      `time_scale`, `second_time`, `negate_output`: override the signature's convention.
    * `input_names`: rename inputs (default name -> ONNX name); `call(model, *inputs)`:
      call the model some other way (inputs in plan order), e.g.
      `lambda m, x, t, y: m(x, t, extra={"label": y})`.
    * `exporter`: "torchscript" (opset 17, weights inline) or "dynamo" (opset 18, external
      data); `opset` overrides. The ONNX goes to `onnx_path` (default: `path` with .onnx).
    * `flowrt`: the flowrt binary (else $FLOWRT, else PATH); `flowrt_args`: more
      `flowrt export` options (e.g. ["--weights", "f16"]; loosen atol/rtol to match).
    * `check`: evaluate the `.frt` (`flowrt eval`) and the torch model on `probes` probe
      points (seed `seed`) and require |flowrt - torch| <= atol + rtol |torch| everywhere.

    Returns an ExportResult. Raises SignatureError (bad options), TorchMissingError,
    FlowrtNotFoundError, FlowrtCommandError (flowrt refused the ONNX; its message) or
    VerificationError (the `.frt` differs from torch; the files are kept for inspection)."""
    name = canonical(signature)
    if exporter not in OPSETS:
        raise SignatureError(f"exporter `{exporter}` is not one of {', '.join(OPSETS)}")
    exe = cli.find_flowrt(flowrt)
    torch = _import_torch()
    state_shape, num_classes = _infer(torch, model, name, state_shape, num_classes)
    plan = make_plan(name, state_shape=state_shape, num_classes=num_classes,
                     cond_dim=cond_dim, guidance=guidance, time_shape=time_shape,
                     time_axis=time_axis, time_scale=time_scale, second_time=second_time,
                     negate_output=negate_output, input_names=input_names)
    frt = Path(path)
    onnx = Path(onnx_path) if onnx_path is not None else frt.with_suffix(".onnx")
    if onnx.resolve() == frt.resolve():
        raise SignatureError(f"onnx_path and path are the same file: {frt}")
    device = _device(torch, model)
    module = _adapter(torch, model, plan, call)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            example = _tensors(torch, _example(plan, seed), plan, device)
            _onnx_export(torch, module, example, plan, onnx, exporter,
                         opset if opset is not None else OPSETS[exporter])
        cmd = cli.export_command(exe, onnx, frt, plan, list(flowrt_args))
        cli.run(cmd)
        info = cli.inspect(exe, frt)
        report = None
        if check:
            inputs = probe_inputs(plan, probes, seed)
            reference = torch_outputs(torch, module, plan, inputs, device)
            try:
                report = check_frt(frt, plan, inputs, reference, flowrt=exe, atol=atol,
                                   rtol=rtol)
            except VerificationError as e:
                raise VerificationError(f"{e} [torch model vs {frt}; ONNX {onnx}]",
                                        e.report) from None
    finally:
        model.train(was_training)
    return ExportResult(frt=frt, onnx=onnx, plan=plan, command=cmd, info=info, check=report)


def torch_outputs(torch, module, plan: Plan, inputs: dict, device):
    """The module's outputs on probe inputs (name -> array) as a float32 numpy array: one
    batch, or row by row for a 0-dim time input."""
    import numpy as np

    with torch.no_grad():
        if plan.scalar_time:
            n = len(inputs[plan.inputs[0].name])
            outs = [module(*_tensors(torch, row(plan, inputs, i), plan, device))
                    for i in range(n)]
            out = torch.cat(outs)
        else:
            out = module(*_tensors(torch, inputs, plan, device))
    return np.ascontiguousarray(out.detach().float().cpu().numpy())

