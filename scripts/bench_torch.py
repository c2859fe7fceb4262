"""PyTorch-eager baseline for `flowrt bench --backend cuda` (issue 7): the fixture's own
PyTorch module with its trained weights, sampled with the same fixed-step Runge-Kutta loop
flowrt runs (same Butcher tableaux, same stage times, same uniform grid), timed whole-loop
on the same GPU (noise on the device, the loop, one synchronize; the read-back excluded,
as flowrt's run includes its one read-back).

Only torch is needed for the 2-D fixtures (moons_icfm, checker_fm: weights from
`state_dict.pt`, written by tests/fixtures/export_state_dicts.py); the image fixtures
(digits_unet, digits_dit) import the generator's module definitions, so they also need the
fixtures' Python packages (torchcfm, onnx, torchdiffeq); without them they are skipped with
the reason.

    python scripts/bench_torch.py --fixture moons_icfm --batches 1,4096,65536 --device cuda

Prints one JSON object per batch size (median / min seconds per sampling run) and, first, a
correctness check against the committed torchdiffeq reference samples of the fixture.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# flowrt's tableaux (runtime/src/solver.rs), f32 as there.
ONE_THIRD = float(np.float32(1.0 / 3.0))
TWO_THIRDS = float(np.float32(2.0 / 3.0))
TABLEAUX = {
    "euler": ([[]], [1.0], [0.0]),
    "midpoint": ([[], [0.5]], [0.0, 1.0], [0.0, 0.5]),
    "heun": ([[], [1.0]], [0.5, 0.5], [0.0, 1.0]),
    "rk4-38": (
        [[], [ONE_THIRD], [-ONE_THIRD, 1.0], [1.0, -1.0, 1.0]],
        [0.125, 0.375, 0.375, 0.125],
        [0.0, ONE_THIRD, TWO_THIRDS, 1.0],
    ),
}


class TorchcfmMLP(nn.Module):
    """torchcfm.models.models.MLP(dim=2, time_varying=True, w): SELU MLP on cat(x, t)."""

    def __init__(self, w: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, w), nn.SELU(), nn.Linear(w, w), nn.SELU(), nn.Linear(w, w), nn.SELU(),
            nn.Linear(w, 2),
        )

    def forward(self, x, t):
        return self.net(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], dim=1))


class CheckerMLP(nn.Module):
    """tests/fixtures/models.py CheckerMLP (flow_matching's 2-D notebook MLP, Swish)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        layers = [nn.Linear(3, hidden)]
        for _ in range(3):
            layers += [nn.SiLU(), nn.Linear(hidden, hidden)]
        layers += [nn.SiLU(), nn.Linear(hidden, 2)]
        self.main = nn.Sequential(*layers)

    def forward(self, x, t):
        return self.main(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], dim=1))


def load_model(name: str):
    """(module, labels needed?) for a fixture, weights loaded."""
    if name in ("moons_icfm", "checker_fm"):
        model = TorchcfmMLP(64) if name == "moons_icfm" else CheckerMLP(128)
        sd = torch.load(FIXTURES / name / "state_dict.pt")
        model.load_state_dict(sd)
        return model, False
    if name in ("digits_unet", "digits_dit"):
        sys.path.insert(0, str(FIXTURES))
        try:
            import make_image_fixtures as mif  # needs torchcfm, onnx, torchdiffeq
        except ImportError as e:
            raise SystemExit(f"skipped {name}: the image fixtures' module code needs {e.name}")
        model = mif.make_unet() if name == "digits_unet" else mif.DigitsDiT()
        model.load_state_dict(torch.load(FIXTURES / name / "model.pt"))
        return model, True
    raise SystemExit(f"unknown fixture {name}")


def sample(model, x, labels, method: str, steps: int):
    a, b, c = TABLEAUX[method]
    pts = torch.linspace(0, 1, steps + 1, dtype=torch.float32).tolist()
    batch = x.shape[0]
    args = (labels,) if labels is not None else ()
    for n in range(steps):
        t0, t1 = pts[n], pts[n + 1]
        dt = float(np.float32(t1) - np.float32(t0))
        ks = []
        for i in range(len(b)):
            xi = x
            for j, aij in enumerate(a[i]):
                if aij != 0.0:
                    xi = xi + (dt * aij) * ks[j]
            ti = t0 if c[i] == 0.0 else (t1 if c[i] == 1.0 else t0 + c[i] * dt)
            t = torch.full((batch,), ti, device=x.device, dtype=torch.float32)
            ks.append(model(xi, t, *args))
        for i, bi in enumerate(b):
            if bi != 0.0:
                x = x + (dt * bi) * ks[i]
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--batches", default="1,4096,65536")
    ap.add_argument("--method", default="rk4-38", choices=sorted(TABLEAUX))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 like flowrt
    torch.backends.cudnn.allow_tf32 = False
    model, labelled = load_model(args.fixture)
    model = model.to(dev).eval()
    d = FIXTURES / args.fixture
    shape = np.load(d / "noise.npy").shape[1:]

    with torch.no_grad():
        # Correctness: the fixture's noise against its torchdiffeq reference samples.
        ref = d / "samples" / f"{args.method}_{args.steps}.npy"
        if ref.exists():
            noise = torch.from_numpy(np.load(d / "noise.npy")).to(dev)
            lab = torch.from_numpy(np.load(d / "labels.npy")).to(dev) if labelled else None
            got = sample(model, noise, lab, args.method, args.steps).cpu().numpy()
            diff = float(np.abs(got - np.load(ref)).max())
            print(json.dumps({"fixture": args.fixture, "check": str(ref.relative_to(ROOT)),
                              "max_abs_diff": diff}))
        for batch in [int(v) for v in args.batches.split(",")]:
            g = torch.Generator(device=dev).manual_seed(0)
            noise = torch.randn((batch, *shape), generator=g, device=dev)
            lab = (torch.arange(batch, device=dev) % 10) if labelled else None
            times = []
            for i in range(args.warmup + args.runs):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                out = sample(model, noise, lab, args.method, args.steps)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
            assert torch.isfinite(out).all()
            print(json.dumps({
                "fixture": args.fixture, "backend": f"torch-eager-{dev.type}",
                "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                "torch": torch.__version__, "method": args.method, "steps": args.steps,
                "batch": batch, "median_s": statistics.median(times), "min_s": min(times),
            }))


if __name__ == "__main__":
    main()
