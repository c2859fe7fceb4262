"""The errors of flowrt_export: each names its cause and, where there is one, the fix."""

from __future__ import annotations


class FlowrtExportError(Exception):
    """Base class of every error this package raises."""


class SignatureError(FlowrtExportError, ValueError):
    """An unknown signature name or options that do not fit it (missing state shape, a
    label without its class count, ...)."""


class TorchMissingError(FlowrtExportError, ImportError):
    """torch (or onnx / onnxscript, which torch.onnx.export writes through) is not installed."""


class FlowrtNotFoundError(FlowrtExportError, FileNotFoundError):
    """The `flowrt` command line tool was found neither where given, nor in $FLOWRT, nor on
    PATH."""


class FlowrtCommandError(FlowrtExportError, RuntimeError):
    """A `flowrt` command failed; holds the command line, exit status and its stderr."""

    def __init__(self, command: list[str], returncode: int, stderr: str):
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "(no message)"
        super().__init__(
            f"`{' '.join(command)}` failed with exit status {returncode}: {last}"
        )


class VerificationError(FlowrtExportError, AssertionError):
    """The `.frt` does not reproduce the torch model: its network output differs by more than
    the tolerance on a probe point, or its signature (roles, time axis) is not the one asked
    for. `report` holds the numbers."""

    def __init__(self, message: str, report: dict | None = None):
        self.report = report or {}
        super().__init__(message)
