"""flowrt_export: PyTorch flow-matching models to flowrt `.frt` files in one call, checked
against torch.

    from flowrt_export import export
    export(model, "torchcfm-mlp", "moons.frt")          # torchcfm MLP, time the last column
    export(unet, "torchcfm-unet", "digits.frt")         # torchcfm UNet (t, x, y)

export() wraps torch.onnx.export (input names, dynamic batch, opset), runs `flowrt export`
with the roles and time flags of the model's signature, and compares the `.frt`'s network
(`flowrt eval`) with the torch model on probe points. torch is imported only inside
export(); plan(), the command builders and check_frt() need no torch. See docs/python.md.
"""

from .cli import ENV_VAR, find_flowrt
from .compare import ATOL, RTOL, compare, signature_problems
from .errors import (
    FlowrtCommandError,
    FlowrtExportError,
    FlowrtNotFoundError,
    SignatureError,
    TorchMissingError,
    VerificationError,
)
from .export import ExportResult, export
from .probe import check_frt, probe_inputs
from .signatures import ALIASES, SIGNATURES, Input, Plan, plan

__all__ = [
    "ALIASES", "ATOL", "ENV_VAR", "RTOL", "SIGNATURES", "ExportResult", "FlowrtCommandError",
    "FlowrtExportError", "FlowrtNotFoundError", "Input", "Plan", "SignatureError",
    "TorchMissingError", "VerificationError", "check_frt", "compare", "export", "find_flowrt",
    "plan", "probe_inputs", "signature_problems",
]
__version__ = "0.1.0"
