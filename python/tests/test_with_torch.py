"""flowrt_export.export() on the repository's trained fixture models, with real PyTorch.

Each test rebuilds a committed fixture model in torch from its stored weights (state_dict.pt,
model.pt, or the initializers of its committed ONNX file, whose names are the parameter
names), first checks that the rebuilt model reproduces the fixture's committed PyTorch
velocities (`v_torch.npy`, written by tests/fixtures/make_*.py) to 1e-6, then exports it with
ONE export() call (which itself checks flowrt against torch on its own probe points within
1e-5 + 1e-5·|v|), and finally evaluates the `.frt` on the fixture's probe points against
`v_torch.npy` with the same tolerance (check_frt).

Needs torch, onnx, numpy, torchcfm (the UNet and MLP classes) and POT (imported by torchcfm);
the dynamo test needs onnxscript. From the repository root (docs/python.md):

    python3 -m venv .venv
    .venv/bin/pip install ./python torch onnx onnxscript POT && .venv/bin/pip install --no-deps torchcfm==1.0.7
    cargo build --release -p flowrt-cli
    FLOWRT=target/release/flowrt .venv/bin/python -m unittest python/tests/test_with_torch.py -v
"""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

import flowrt_export as fe

ROOT = Path(__file__).resolve().parents[2]
FX = ROOT / "tests" / "fixtures"
#: export()'s check, and how closely the rebuilt torch model must reproduce the committed
#: v_torch.npy (written on another machine: the UNet's last bits differ, 5e-6):
#: |a - b| <= TOL + TOL * |b|.
TOL = 1e-5
RESULTS: list[str] = []


def npy(model: str, name: str) -> np.ndarray:
    return np.load(FX / model / name)


def onnx_state(model: str) -> dict:
    """The fixture's TorchScript-exported ONNX initializers as a state dict."""
    m = onnx.load(str(FX / model / "model.ts.onnx"))
    return {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
            for i in m.graph.initializer}


def mlp(sizes, act=nn.SiLU):
    """make_fewstep_fixtures.mlp: Linear layers with `act` between them."""
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


# The fixture models (copied from tests/fixtures/models.py and make_fewstep_fixtures.py, which
# import training-only packages; the v_torch reproduction below proves the copies exact).

class Swish(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x) * x


class CheckerMLP(nn.Module):
    """flow_matching's 2-D notebook MLP: forward(x [B,2], t [B])."""

    def __init__(self, hidden=128):
        super().__init__()
        self.main = nn.Sequential(nn.Linear(3, hidden), Swish(), nn.Linear(hidden, hidden),
                                  Swish(), nn.Linear(hidden, hidden), Swish(),
                                  nn.Linear(hidden, hidden), Swish(), nn.Linear(hidden, 2))

    def forward(self, x, t):
        sz = x.size()
        x = x.reshape(-1, 2)
        t = t.reshape(-1, 1).float()
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        return self.main(torch.cat([x, t], dim=1)).reshape(*sz)


class ScalarT(nn.Module):
    """checker_fm_scalar_t: the same weights, t one 0-dim value for the batch."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, t):
        return self.inner.main(torch.cat([x, t.reshape(1, 1).expand(x.shape[0], 1)], dim=1))


class GeluTanhMLP(nn.Module):
    """moons_gelu_tanh: forward(x [B,2], t [B,1])."""

    def __init__(self, w=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, w), nn.GELU(), nn.Linear(w, w), nn.Tanh(),
                                 nn.Linear(w, w), nn.Softplus(), nn.Linear(w, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t], dim=1))


class CondMLP(nn.Module):
    """moons_cfg: forward(x, t, y int64), null label 2."""

    def __init__(self, w=64):
        super().__init__()
        self.emb = nn.Embedding(3, 16)
        self.net = nn.Sequential(nn.Linear(19, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU(),
                                 nn.Linear(w, w), nn.SiLU(), nn.Linear(w, 2))

    def forward(self, x, t, y):
        return self.net(torch.cat([x, t[:, None], self.emb(y)], dim=-1))


class DiffusersOutput:
    """What a diffusers model returns: an object with `.sample`."""

    def __init__(self, sample):
        self.sample = sample


class SigmaMLP(nn.Module):
    """moons_sigma, called diffusers-style: forward(sample, timestep = 1000 sigma)."""

    def __init__(self, w=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU(),
                                 nn.Linear(w, 2))

    def forward(self, sample, timestep):
        return DiffusersOutput(self.net(torch.cat([sample, (timestep / 1000.0)[:, None]], -1)))


class TwoTimeNet(nn.Module):
    """MeanFlowNet u(z, t, h) / ShortcutNet v(x, t, dt_base): net(cat([state, t, s]))."""

    def __init__(self, w=64):
        super().__init__()
        self.net = mlp([4, w, w, w, 2])

    def forward(self, x, t, s):
        return self.net(torch.cat([x, t[:, None], s[:, None]], dim=-1))


def loaded(module: nn.Module, state: dict) -> nn.Module:
    module.load_state_dict(state)
    return module.eval()


class WithTorch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.tmp = tempfile.TemporaryDirectory(prefix="flowrt-export-test-")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        print("\nflowrt vs torch (max |diff| / max |v|): export() probes | fixture probes")
        for line in RESULTS:
            print("  " + line)

    def rebuilt(self, model: str, module, args: tuple, want: np.ndarray | None = None):
        """Asserts that `module(*args)` reproduces the fixture's v_torch.npy."""
        with torch.no_grad():
            got = module(*args)
        got = getattr(got, "sample", got).numpy()
        want = npy(model, "v_torch.npy") if want is None else want
        fe.compare(got.ravel(), want.ravel(), atol=TOL, rtol=TOL,
                   what=f"{model}: rebuilt torch model vs v_torch.npy")

    def one_call(self, model: str, module, signature: str, fixture_inputs: list,
                 reference: np.ndarray | None = None, **kw) -> fe.ExportResult:
        """export() (with its check) then check_frt on the fixture's probe points."""
        res = fe.export(module, signature, Path(self.tmp.name) / f"{model}-{signature}.frt",
                        atol=TOL, rtol=TOL, **kw)
        self.assertLessEqual(res.check["max_ratio"], 1.0)
        inputs = {i.name: a for i, a in zip(res.plan.inputs, fixture_inputs)}
        ref = npy(model, "v_torch.npy") if reference is None else reference
        fixture = fe.check_frt(res.frt, res.plan, inputs, ref, atol=TOL, rtol=TOL)
        RESULTS.append(
            f"{model:20s} {signature:14s} {kw.get('exporter', 'torchscript'):11s} "
            f"{res.check['max_abs_error']:.2e} / {res.check['max_abs_reference']:.2f} "
            f"({res.check['probes']} probes) | {fixture['max_abs_error']:.2e} / "
            f"{fixture['max_abs_reference']:.2f} ({fixture['probes']} probes)")
        return res

    def test_torchcfm_mlp_moons_icfm(self):
        from torchcfm.models.models import MLP

        m = loaded(MLP(dim=2, time_varying=True, w=64),
                   torch.load(FX / "moons_icfm" / "state_dict.pt"))
        x, t = npy("moons_icfm", "probe_x.npy"), npy("moons_icfm", "probe_t.npy")
        xt = np.concatenate([x, t[:, None]], axis=1)
        self.rebuilt("moons_icfm", m, (torch.from_numpy(xt),))
        res = self.one_call("moons_icfm", m, "torchcfm-mlp", [xt])
        self.assertEqual(res.plan.names, ["xt"])
        self.assertEqual(res.info["inputs"], [{"name": "xt", "role": "xt", "shape": "[B, 3]"}])
        self.one_call("moons_icfm", m, "torchcfm-mlp", [xt], exporter="dynamo")

    def test_torchcfm_unet_digits(self):
        from torchcfm.models.unet.unet import UNetModelWrapper

        kwargs = dict(dim=(1, 8, 8), num_channels=32, num_res_blocks=1, channel_mult=(1, 1),
                      attention_resolutions="4", num_heads=2, dropout=0.0, class_cond=True,
                      num_classes=11, use_scale_shift_norm=True)
        sd = torch.load(FX / "digits_unet" / "model.pt")
        unet = loaded(UNetModelWrapper(**kwargs),
                      {k.removeprefix("net."): v for k, v in sd.items()})
        x, t, y = (npy("digits_unet", f) for f in ("probe_x.npy", "probe_t.npy",
                                                   "probe_y.npy"))
        self.rebuilt("digits_unet", lambda *a: unet(a[1], a[0], a[2]),
                     tuple(torch.from_numpy(a) for a in (x, t, y)))
        res = self.one_call("digits_unet", unet, "torchcfm-unet", [x, t, y])
        self.assertEqual([(i["name"], i["role"]) for i in res.info["inputs"]],
                         [("x", "x"), ("t", "t"), ("y", "label")])
        self.assertEqual(res.info["label_classes"], 11)
        self.one_call("digits_unet", unet, "torchcfm-unet", [x, t, y], exporter="dynamo")

    def test_flow_matching_checker(self):
        m = loaded(CheckerMLP(), torch.load(FX / "checker_fm" / "state_dict.pt"))
        x, t = npy("checker_fm", "probe_x.npy"), npy("checker_fm", "probe_t.npy")
        self.rebuilt("checker_fm", m, (torch.from_numpy(x), torch.from_numpy(t)))
        self.one_call("checker_fm", m, "flow-matching", [x, t], state_shape=(2,))
        self.one_call("checker_fm", m, "flow-matching", [x, t], state_shape=(2,),
                      exporter="dynamo")

    def test_scalar_and_column_time(self):
        inner = loaded(CheckerMLP(), torch.load(FX / "checker_fm" / "state_dict.pt"))
        m = ScalarT(inner).eval()
        x, t = npy("checker_fm_scalar_t", "probe_x.npy"), npy("checker_fm_scalar_t",
                                                               "probe_t.npy")
        with torch.no_grad():
            rows = torch.cat([m(torch.from_numpy(x[i:i + 1]), torch.tensor(t[i]))
                              for i in range(len(t))]).numpy()
        fe.compare(rows.ravel(), npy("checker_fm_scalar_t", "v_torch.npy").ravel(), atol=TOL,
                   rtol=TOL, what="checker_fm_scalar_t: rebuilt torch model vs v_torch.npy")
        self.one_call("checker_fm_scalar_t", m, "flow-matching", [x, t], state_shape=(2,),
                      time_shape="scalar")

        g = loaded(GeluTanhMLP(), onnx_state("moons_gelu_tanh"))
        x, t = npy("moons_gelu_tanh", "probe_x.npy"), npy("moons_gelu_tanh", "probe_t.npy")
        self.rebuilt("moons_gelu_tanh", g, (torch.from_numpy(x), torch.from_numpy(t[:, None])))
        self.one_call("moons_gelu_tanh", g, "flow-matching", [x, t[:, None]],
                      state_shape=(2,), time_shape="column")

    def test_class_labels_moons_cfg(self):
        m = loaded(CondMLP(), onnx_state("moons_cfg"))
        x, t, y = (npy("moons_cfg", f) for f in ("probe_x.npy", "probe_t.npy", "probe_y.npy"))
        self.rebuilt("moons_cfg", m, tuple(torch.from_numpy(a) for a in (x, t, y)))
        res = self.one_call("moons_cfg", m, "flow-matching", [x, t, y], state_shape=(2,),
                            num_classes=3)
        self.assertEqual(res.info["label_classes"], 3)

    def test_diffusers_sigma_axis(self):
        m = loaded(SigmaMLP(), onnx_state("moons_sigma"))
        x, ts = npy("moons_sigma", "probe_x.npy"), npy("moons_sigma", "probe_timestep.npy")
        self.rebuilt("moons_sigma", m, (torch.from_numpy(x), torch.from_numpy(ts)))
        res = self.one_call("moons_sigma", m, "diffusers", [x, ts], state_shape=(2,))
        self.assertEqual(res.info["time"], {"axis": "sigma", "scale": 1000.0,
                                            "negate_output": False})

    def test_meanflow_and_shortcut(self):
        for model, sig, files in (
                ("moons_meanflow", "meanflow", ("probe_z.npy", "probe_t.npy", "probe_h.npy")),
                ("moons_shortcut", "shortcut", ("probe_x.npy", "probe_t.npy",
                                                "probe_dt_base.npy"))):
            m = loaded(TwoTimeNet(), onnx_state(model))
            arrays = [npy(model, f) for f in files]
            self.rebuilt(model, m, tuple(torch.from_numpy(a) for a in arrays))
            res = self.one_call(model, m, sig, arrays, state_shape=(2,))
            self.assertEqual(res.info["inputs"][2]["role"], "step")
        self.assertIn("--second-time", res.command)

    def test_guidance_input(self):
        """An embedded guidance-scale input (Flux-style), on a small seeded random net (no
        fixture has one; the reference is the torch model itself)."""
        torch.manual_seed(3)
        net = mlp([4, 32, 32, 2]).eval()

        class Guided(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x, t, g):
                return self.net(torch.cat([x, t[:, None], g[:, None] / 8.0], dim=-1))

        res = fe.export(Guided().eval(), "flow-matching",
                        Path(self.tmp.name) / "guided.frt", state_shape=(2,), guidance=True)
        self.assertEqual([i["role"] for i in res.info["inputs"]], ["x", "t", "guidance"])
        self.assertLessEqual(res.check["max_ratio"], 1.0)

    def test_a_mismatch_is_detected(self):
        """A model that adds 1e-3 while being exported: the .frt then differs from the eager
        model, and export() must raise VerificationError naming the numbers."""
        inner = loaded(CheckerMLP(), torch.load(FX / "checker_fm" / "state_dict.pt"))

        class Drifting(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x, t):
                v = self.inner(x, t)
                return v + 1e-3 if torch.onnx.is_in_onnx_export() else v

        with self.assertRaises(fe.VerificationError) as ctx:
            fe.export(Drifting().eval(), "flow-matching", Path(self.tmp.name) / "drift.frt",
                      state_shape=(2,))
        self.assertIn("differs from the reference", str(ctx.exception))
        self.assertGreater(ctx.exception.report["max_abs_error"], 9e-4)


if __name__ == "__main__":
    unittest.main()
