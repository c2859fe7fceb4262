"""Finding and running the `flowrt` command line tool: the `export`, `eval` and `inspect`
command lines a Plan needs, run with their failures turned into FlowrtCommandError."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .errors import FlowrtCommandError, FlowrtNotFoundError
from .signatures import Plan

#: The environment variable that names the flowrt binary when no path is given.
ENV_VAR = "FLOWRT"


def find_flowrt(flowrt: str | os.PathLike | None = None) -> str:
    """The flowrt binary to run: `flowrt` if given (a path, or a name looked up on PATH),
    else $FLOWRT, else `flowrt` on PATH.

    Raises FlowrtNotFoundError saying where it looked and how to fix it."""
    if flowrt is not None:
        return _resolve(str(flowrt), "the flowrt argument")
    env = os.environ.get(ENV_VAR)
    if env:
        return _resolve(env, f"${ENV_VAR}")
    found = shutil.which("flowrt")
    if found:
        return found
    raise FlowrtNotFoundError(
        "the flowrt command line tool was not found: pass flowrt='/path/to/flowrt', set "
        f"${ENV_VAR}, or put it on PATH (`cargo build --release -p flowrt-cli` builds "
        "target/release/flowrt)"
    )


def _resolve(candidate: str, where: str) -> str:
    if os.sep in candidate or (os.altsep and os.altsep in candidate):
        p = Path(candidate)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        what = "is not an executable file" if p.exists() else "does not exist"
        raise FlowrtNotFoundError(f"flowrt from {where}: {candidate} {what}")
    found = shutil.which(candidate)
    if found is None:
        raise FlowrtNotFoundError(f"flowrt from {where}: `{candidate}` is not on PATH")
    return found


def export_command(flowrt: str, onnx: str | os.PathLike, frt: str | os.PathLike, plan: Plan,
                   extra: list[str] | tuple = ()) -> list[str]:
    """`flowrt export ONNX -o FRT` with the plan's roles and time flags, then `extra` (any
    other `flowrt export` options, e.g. ["--weights", "int8"])."""
    return [flowrt, "export", str(onnx), "-o", str(frt), *plan.export_flags(),
            *[str(a) for a in extra]]


def eval_command(flowrt: str, frt: str | os.PathLike, files: dict, out: str | os.PathLike
                 ) -> list[str]:
    """`flowrt eval FRT --input NAME=FILE ... -o OUT` for `files` (ONNX input name -> .npy)."""
    cmd = [flowrt, "eval", str(frt)]
    for name, path in files.items():
        cmd += ["--input", f"{name}={path}"]
    return cmd + ["-o", str(out)]


def inspect_command(flowrt: str, frt: str | os.PathLike) -> list[str]:
    """`flowrt inspect FRT --json`."""
    return [flowrt, "inspect", str(frt), "--json"]


def run(cmd: list[str]) -> str:
    """Runs a flowrt command line and returns its stdout.

    Raises FlowrtCommandError (command, exit status, stderr) when it fails, and
    FlowrtNotFoundError when the binary cannot be started."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise FlowrtNotFoundError(f"cannot run {cmd[0]}: {e}") from e
    if done.returncode != 0:
        raise FlowrtCommandError(cmd, done.returncode, done.stderr)
    return done.stdout


def inspect(flowrt: str, frt: str | os.PathLike) -> dict:
    """`flowrt inspect FRT --json`, parsed.

    Raises FlowrtCommandError when the command fails or prints no JSON."""
    cmd = inspect_command(flowrt, frt)
    out = run(cmd)
    try:
        return json.loads(out)
    except json.JSONDecodeError as e:
        raise FlowrtCommandError(cmd, 0, f"output is not JSON ({e}): {out[:200]}") from e
