"""flowrt_export's flowrt side without torch: the committed fixture ONNX files exported with the
command lines a Plan builds, then check_frt() on the fixtures' own probe points against their
committed PyTorch velocities (v_torch.npy, from tests/fixtures/make_*.py) — and a perturbed
reference, a wrong signature and a refused input must each fail loudly.

Needs numpy and a flowrt build ($FLOWRT, else target/release/flowrt); no torch. From the
repository root (scripts/test.sh runs it with .venv-ort's Python, which has numpy):

    FLOWRT=target/release/flowrt PYTHONPATH=python .venv-ort/bin/python -m unittest discover -s python/tests -p 'test_check_frt.py' -v
"""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path

import numpy as np

import flowrt_export as fe
from flowrt_export import cli
from flowrt_export.probe import probe_inputs

ROOT = Path(__file__).resolve().parents[2]
FX = ROOT / "tests" / "fixtures"
TOL = 1e-5


def flowrt() -> str:
    """$FLOWRT, else the repository's release build; a missing binary fails the tests."""
    exe = os.environ.get("FLOWRT") or str(ROOT / "target" / "release" / "flowrt")
    return fe.find_flowrt(exe)


def npy(model: str, name: str) -> np.ndarray:
    return np.load(FX / model / name)


class CheckFrt(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.exe = flowrt()
        cls.tmp = tempfile.TemporaryDirectory(prefix="flowrt-check-test-")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def export(self, model: str, plan: fe.Plan, tag: str = "") -> Path:
        frt = Path(self.tmp.name) / f"{model}{tag}.frt"
        cli.run(cli.export_command(self.exe, FX / model / "model.ts.onnx", frt, plan))
        return frt

    def check(self, model: str, plan: fe.Plan, files: list) -> dict:
        frt = self.export(model, plan)
        inputs = {i.name: npy(model, f) for i, f in zip(plan.inputs, files)}
        rep = fe.check_frt(frt, plan, inputs, npy(model, "v_torch.npy"), flowrt=self.exe,
                           atol=TOL, rtol=TOL)
        self.assertEqual(rep["probes"], len(inputs[plan.inputs[0].name]))
        self.assertLessEqual(rep["max_ratio"], 1.0)
        return rep

    def test_every_signature_against_the_pytorch_reference(self):
        self.check("digits_unet", fe.plan("torchcfm-unet", state_shape=(1, 8, 8),
                                          num_classes=11),
                   ["probe_x.npy", "probe_t.npy", "probe_y.npy"])
        self.check("checker_fm", fe.plan("flow-matching", state_shape=2),
                   ["probe_x.npy", "probe_t.npy"])
        self.check("moons_cfg", fe.plan("flow-matching", state_shape=2, num_classes=3),
                   ["probe_x.npy", "probe_t.npy", "probe_y.npy"])
        self.check("moons_sigma", fe.plan("diffusers", state_shape=2,
                                          input_names={"sample": "x"}),
                   ["probe_x.npy", "probe_timestep.npy"])
        self.check("moons_meanflow", fe.plan("meanflow", state_shape=2),
                   ["probe_z.npy", "probe_t.npy", "probe_h.npy"])
        self.check("moons_shortcut", fe.plan("shortcut", state_shape=2),
                   ["probe_x.npy", "probe_t.npy", "probe_dt_base.npy"])
        # 0-dim time: every probe row evaluated alone.
        self.check("checker_fm_scalar_t", fe.plan("x-t", state_shape=2, time_shape="scalar"),
                   ["probe_x.npy", "probe_t.npy"])

    def test_xt_input(self):
        plan = fe.plan("torchcfm-mlp", state_shape=2)
        frt = self.export("moons_icfm", plan)
        xt = np.concatenate([npy("moons_icfm", "probe_x.npy"),
                             npy("moons_icfm", "probe_t.npy")[:, None]], axis=1)
        rep = fe.check_frt(frt, plan, {"xt": xt}, npy("moons_icfm", "v_torch.npy"),
                           flowrt=self.exe)
        self.assertLess(rep["max_abs_error"], 1e-5 * (1 + rep["max_abs_reference"]))

    def test_a_perturbed_reference_fails(self):
        plan = fe.plan("torchcfm-unet", state_shape=(1, 8, 8), num_classes=11)
        frt = self.export("digits_unet", plan, "-perturbed")
        inputs = {i.name: npy("digits_unet", f) for i, f in
                  zip(plan.inputs, ["probe_x.npy", "probe_t.npy", "probe_y.npy"])}
        ref = npy("digits_unet", "v_torch.npy").copy()
        ref[5, 0, 3, 4] += 1e-3
        with self.assertRaises(fe.VerificationError) as ctx:
            fe.check_frt(frt, plan, inputs, ref, flowrt=self.exe)
        e = ctx.exception
        self.assertIn("differs from the reference on 1 of 2048 values", str(e))
        self.assertEqual(e.report["worst_index"], 5 * 64 + 3 * 8 + 4)
        # The committed reference passes at 1e-5 and fails at 1e-9: the check is not vacuous.
        ref = npy("digits_unet", "v_torch.npy")
        fe.check_frt(frt, plan, inputs, ref, flowrt=self.exe, atol=1e-5, rtol=1e-5)
        with self.assertRaises(fe.VerificationError):
            fe.check_frt(frt, plan, inputs, ref, flowrt=self.exe, atol=1e-9, rtol=1e-9)

    def test_a_wrong_signature_fails(self):
        # Exported as a t-axis model; checked as the diffusers (sigma, x1000) model it is.
        as_t = fe.plan("x-t", state_shape=2, input_names={"t": "timestep"})
        frt = self.export("moons_sigma", as_t, "-t-axis")
        want = fe.plan("diffusers", state_shape=2, input_names={"sample": "x"})
        inputs = {"x": npy("moons_sigma", "probe_x.npy"),
                  "timestep": npy("moons_sigma", "probe_timestep.npy")}
        with self.assertRaisesRegex(fe.VerificationError, "time axis.*time scale"):
            fe.check_frt(frt, want, inputs, npy("moons_sigma", "v_torch.npy"),
                         flowrt=self.exe)

    def test_flowrt_refusals_surface(self):
        plan = fe.plan("flow-matching", state_shape=2)
        frt = self.export("checker_fm", plan, "-refusal")
        x = npy("checker_fm", "probe_x.npy")
        with self.assertRaises(fe.FlowrtCommandError) as ctx:
            fe.check_frt(frt, plan, {"x": x, "t": x}, npy("checker_fm", "v_torch.npy"),
                         flowrt=self.exe)
        self.assertIn("does not fit input `t`", str(ctx.exception))
        # An ONNX flowrt cannot export: its error, from `flowrt export`.
        bad = Path(self.tmp.name) / "not.onnx"
        bad.write_bytes(b"not an onnx file")
        with self.assertRaises(fe.FlowrtCommandError) as ctx:
            cli.run(cli.export_command(self.exe, bad, Path(self.tmp.name) / "x.frt", plan))
        self.assertNotEqual(ctx.exception.returncode, 0)


class Probes(unittest.TestCase):
    def test_probe_inputs_fit_the_plan(self):
        p = fe.plan("flow-matching", state_shape=(1, 4, 4), num_classes=5, cond_dim=3,
                    guidance=True)
        a = probe_inputs(p, 16, seed=1)
        self.assertEqual(list(a), ["x", "t", "y", "cond", "guidance"])
        self.assertEqual(a["x"].shape, (16, 1, 4, 4))
        self.assertEqual(a["x"].dtype, np.float32)
        self.assertEqual((a["t"][0], a["t"][1]), (0.0, 1.0))
        self.assertTrue(((a["t"] >= 0) & (a["t"] <= 1)).all())
        self.assertEqual(a["y"].dtype, np.int64)
        self.assertTrue(((a["y"] >= 0) & (a["y"] < 5)).all())
        self.assertEqual(a["y"][-1], 4)
        self.assertEqual(a["cond"].shape, (16, 3))
        self.assertTrue(((a["guidance"] >= 1) & (a["guidance"] <= 8)).all())
        b = probe_inputs(p, 16, seed=1)
        self.assertTrue(all((a[k] == b[k]).all() for k in a))

    def test_time_scale_and_second_times(self):
        a = probe_inputs(fe.plan("diffusers", state_shape=2), 8)
        self.assertEqual((a["timestep"][0], a["timestep"][1]), (0.0, 1000.0))
        m = probe_inputs(fe.plan("meanflow", state_shape=2), 32)
        self.assertTrue(((m["h"] >= 0) & (m["h"] <= m["t"])).all())
        s = probe_inputs(fe.plan("shortcut", state_shape=2), 32)
        self.assertTrue(set(s["dt_base"].tolist()) <= set(float(k) for k in range(8)))
        xt = probe_inputs(fe.plan("xt", state_shape=2), 4)["xt"]
        self.assertEqual(xt.shape, (4, 3))
        self.assertEqual(list(xt[:2, -1]), [0.0, 1.0])
        c = probe_inputs(fe.plan("x-t", state_shape=2, time_shape="column"), 4)
        self.assertEqual(c["t"].shape, (4, 1))
        with self.assertRaises(fe.SignatureError):
            probe_inputs(fe.plan("x-t", state_shape=2), 0)


if __name__ == "__main__":
    unittest.main()
