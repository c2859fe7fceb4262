"""flowrt_export's logic that needs neither torch nor numpy nor a flowrt build: signatures and
their options, the roles and time flags they produce, the flowrt command lines, finding
flowrt, failed commands, the comparison rule, the signature check, and export()'s errors
with torch absent. Plain `python3 -m unittest` (scripts/test.sh runs it):

    PYTHONPATH=python python3 -m unittest discover -s python/tests -p 'test_logic.py' -v
"""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import flowrt_export as fe
from flowrt_export import cli
from flowrt_export.signatures import canonical

PYTHON_DIR = Path(__file__).resolve().parents[1]


def roles(p: fe.Plan) -> list:
    return [(i.name, i.role, i.shape, i.dtype) for i in p.inputs]


class Signatures(unittest.TestCase):
    def test_names_and_aliases(self):
        self.assertEqual(canonical("torchcfm-mlp"), "torchcfm-mlp")
        self.assertEqual(canonical("XT"), "torchcfm-mlp")
        self.assertEqual(canonical("torchcfm_unet"), "torchcfm-unet")
        self.assertEqual(canonical("meta"), "flow-matching")
        self.assertEqual(canonical("sigma"), "diffusers")
        with self.assertRaises(fe.SignatureError) as ctx:
            canonical("stable-cascade")
        msg = str(ctx.exception)
        self.assertIn("unknown signature `stable-cascade`", msg)
        for name in fe.SIGNATURES:
            self.assertIn(name, msg)
        with self.assertRaises(fe.SignatureError):
            canonical(3)

    def test_torchcfm_mlp_is_xt_with_time_last(self):
        p = fe.plan("torchcfm-mlp", state_shape=(2,))
        self.assertEqual(roles(p), [("xt", "xt", (None, 3), "float32")])
        self.assertEqual(p.call, "xt")
        self.assertEqual(p.export_flags(), ["--role", "xt=xt"])
        self.assertEqual(fe.plan("xt", state_shape=5).inputs[0].shape, (None, 6))

    def test_torchcfm_unet_with_and_without_labels(self):
        p = fe.plan("torchcfm-unet", state_shape=(1, 8, 8), num_classes=11)
        self.assertEqual(roles(p), [("x", "x", (None, 1, 8, 8), "float32"),
                                    ("t", "t", (None,), "float32"),
                                    ("y", "label", (None,), "int64")])
        self.assertEqual(p.call, "txy")
        self.assertEqual(p.export_flags(),
                         ["--role", "x=x", "--role", "t=t", "--role", "y=label"])
        self.assertEqual(len(fe.plan("unet", state_shape=(3, 32, 32)).inputs), 2)

    def test_flow_matching_extras_in_order(self):
        p = fe.plan("flow-matching", state_shape=(2,), num_classes=3, cond_dim=4,
                    guidance=True)
        self.assertEqual(roles(p), [("x", "x", (None, 2), "float32"),
                                    ("t", "t", (None,), "float32"),
                                    ("y", "label", (None,), "int64"),
                                    ("cond", "cond", (None, 4), "float32"),
                                    ("guidance", "guidance", (None,), "float32")])
        self.assertEqual(p.time_axis, "t")
        self.assertEqual(p.time_scale, 1.0)
        self.assertNotIn("--time", p.export_flags())

    def test_time_shapes(self):
        self.assertEqual(fe.plan("x-t", state_shape=2, time_shape="column").inputs[1].shape,
                         (None, 1))
        p = fe.plan("x-t", state_shape=2, time_shape="scalar")
        self.assertEqual(p.inputs[1].shape, ())
        self.assertFalse(p.inputs[1].batched)
        self.assertTrue(p.scalar_time)
        self.assertFalse(fe.plan("x-t", state_shape=2).scalar_time)

    def test_diffusers_is_the_sigma_axis_times_1000(self):
        p = fe.plan("diffusers", state_shape=(4, 16, 16))
        self.assertEqual(p.names, ["sample", "timestep"])
        self.assertEqual(p.export_flags(), ["--role", "sample=x", "--role", "timestep=t",
                                            "--time", "sigma", "--time-scale", "1000"])
        p = fe.plan("diffusers", state_shape=2, time_scale=1.5, negate_output=True)
        self.assertEqual(p.export_flags()[-4:],
                         ["sigma", "--time-scale", "1.5", "--negate-output"])

    def test_two_time_models(self):
        p = fe.plan("meanflow", state_shape=(2,))
        self.assertEqual(roles(p)[2], ("h", "step", (None,), "float32"))
        self.assertEqual(p.export_flags()[-4:], ["--time", "sigma", "--second-time", "h"])
        p = fe.plan("meanflow", state_shape=(2,), second_time="r")
        self.assertEqual(p.names, ["z", "t", "r"])
        p = fe.plan("shortcut", state_shape=(2,))
        self.assertEqual(p.names, ["x", "t", "dt_base"])
        self.assertEqual(p.export_flags()[-2:], ["--second-time", "log2-steps"])
        self.assertNotIn("--time", p.export_flags())
        self.assertEqual(fe.plan("shortcut", state_shape=2, second_time="step-size").names[2],
                         "dt")

    def test_renaming_inputs(self):
        p = fe.plan("diffusers", state_shape=2, input_names={"sample": "x"})
        self.assertEqual(p.export_flags()[:4], ["--role", "x=x", "--role", "timestep=t"])
        with self.assertRaisesRegex(fe.SignatureError, "renames s, which this signature"):
            fe.plan("diffusers", state_shape=2, input_names={"s": "x"})
        with self.assertRaisesRegex(fe.SignatureError, "distinct"):
            fe.plan("diffusers", state_shape=2, input_names={"sample": "timestep"})

    def test_bad_options_are_named(self):
        cases = [
            (dict(signature="x-t", state_shape=None), "needs state_shape"),
            (dict(signature="x-t", state_shape=(0,)), "positive ints"),
            (dict(signature="x-t", state_shape=(2.5,)), "positive ints"),
            (dict(signature="x-t", state_shape="ab"), "tuple of ints"),
            (dict(signature="unet", state_shape=(8, 8)), "rank 3"),
            (dict(signature="xt", state_shape=(2,), num_classes=3), "takes one input (xt)"),
            (dict(signature="xt", state_shape=(2,), guidance=True), "guidance"),
            (dict(signature="unet", state_shape=(1, 8, 8), cond_dim=4), "no cond or guidance"),
            (dict(signature="x-t", state_shape=2, time_shape="matrix"), "time_shape `matrix`"),
            (dict(signature="meanflow", state_shape=2, time_shape="scalar"),
             "takes time_shape vector or column"),
            (dict(signature="xt", state_shape=2, time_shape="column"), "time_shape vector"),
            (dict(signature="meanflow", state_shape=2, second_time="dt"), "second_time `dt`"),
            (dict(signature="x-t", state_shape=2, second_time="h"), "no second time input"),
            (dict(signature="x-t", state_shape=2, num_classes=0), "num_classes"),
            (dict(signature="x-t", state_shape=2, num_classes=2.0), "num_classes"),
            (dict(signature="x-t", state_shape=2, cond_dim=-1), "cond_dim"),
            (dict(signature="x-t", state_shape=2, time_scale=0), "time_scale"),
            (dict(signature="x-t", state_shape=2, time_scale=float("nan")), "time_scale"),
            (dict(signature="x-t", state_shape=2, time_axis="tau"), "time_axis `tau`"),
        ]
        for kw, needle in cases:
            with self.subTest(kw=kw):
                with self.assertRaises(fe.SignatureError) as ctx:
                    fe.plan(kw.pop("signature"), **kw)
                self.assertIn(needle, str(ctx.exception))


class Commands(unittest.TestCase):
    def test_command_lines(self):
        p = fe.plan("meanflow", state_shape=2)
        self.assertEqual(
            cli.export_command("/bin/flowrt", "m.onnx", "m.frt", p, ["--weights", "f16"]),
            ["/bin/flowrt", "export", "m.onnx", "-o", "m.frt", "--role", "z=x", "--role",
             "t=t", "--role", "h=step", "--time", "sigma", "--second-time", "h",
             "--weights", "f16"])
        self.assertEqual(
            cli.eval_command("flowrt", "m.frt", {"z": "/tmp/a.npy", "t": "/tmp/b.npy"},
                             "/tmp/o.npy"),
            ["flowrt", "eval", "m.frt", "--input", "z=/tmp/a.npy", "--input", "t=/tmp/b.npy",
             "-o", "/tmp/o.npy"])
        self.assertEqual(cli.inspect_command("flowrt", "m.frt"),
                         ["flowrt", "inspect", "m.frt", "--json"])


class FindingFlowrt(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def script(self, name: str, body: str, executable: bool = True) -> Path:
        p = self.dir / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        if executable:
            p.chmod(p.stat().st_mode | stat.S_IXUSR)
        return p

    def test_argument_then_env_then_path(self):
        a = self.script("flowrt-a", "exit 0")
        b = self.script("flowrt", "exit 0")
        with mock.patch.dict(os.environ, {"FLOWRT": str(b), "PATH": ""}):
            self.assertEqual(fe.find_flowrt(a), str(a))
            self.assertEqual(fe.find_flowrt(), str(b))
        with mock.patch.dict(os.environ, {"PATH": str(self.dir)}):
            os.environ.pop("FLOWRT", None)
            self.assertEqual(fe.find_flowrt(), str(b))
            self.assertEqual(fe.find_flowrt("flowrt-a"), str(a))

    def test_missing_flowrt_says_how_to_fix_it(self):
        with mock.patch.dict(os.environ, {"PATH": str(self.dir)}):
            os.environ.pop("FLOWRT", None)
            with self.assertRaises(fe.FlowrtNotFoundError) as ctx:
                fe.find_flowrt()
            for needle in ("not found", "flowrt=", "$FLOWRT", "PATH", "cargo build"):
                self.assertIn(needle, str(ctx.exception))
            with self.assertRaisesRegex(fe.FlowrtNotFoundError, "does not exist"):
                fe.find_flowrt(self.dir / "nope" / "flowrt")
            with self.assertRaisesRegex(fe.FlowrtNotFoundError, "is not on PATH"):
                fe.find_flowrt("flowrt-nope")
            plain = self.script("plain", "exit 0", executable=False)
            with self.assertRaisesRegex(fe.FlowrtNotFoundError, "not an executable file"):
                fe.find_flowrt(plain)
        with mock.patch.dict(os.environ, {"FLOWRT": str(self.dir / "gone")}):
            with self.assertRaisesRegex(fe.FlowrtNotFoundError, r"\$FLOWRT.*does not exist"):
                fe.find_flowrt()

    def test_a_failing_command_keeps_its_message(self):
        bad = self.script("flowrt", "echo 'warming up' >&2; echo 'error: no input named `q`' >&2; exit 1")
        with self.assertRaises(fe.FlowrtCommandError) as ctx:
            cli.run([str(bad), "eval", "m.frt"])
        e = ctx.exception
        self.assertEqual(e.returncode, 1)
        self.assertIn("error: no input named `q`", str(e))
        self.assertIn("eval m.frt", str(e))
        self.assertIn("warming up", e.stderr)
        good = self.script("ok", "echo hello")
        self.assertEqual(cli.run([str(good)]), "hello\n")
        with self.assertRaises(fe.FlowrtNotFoundError):
            cli.run([str(self.dir / "missing")])
        notjson = self.script("nj", "echo not json")
        with self.assertRaisesRegex(fe.FlowrtCommandError, "not JSON"):
            cli.inspect(str(notjson), "m.frt")


class Comparison(unittest.TestCase):
    def test_the_tolerance_is_absolute_plus_relative(self):
        r = fe.compare([1.0, 0.0, 100.0], [1.0 + 1.5e-5, 9e-6, 100.0 + 9e-4])
        self.assertEqual(r["bad"], 0)
        self.assertAlmostEqual(r["max_abs_error"], 9e-4, delta=1e-9)
        self.assertLessEqual(r["max_ratio"], 1.0)
        self.assertEqual(fe.compare([2.0], [2.0])["max_abs_error"], 0.0)

    def test_a_mismatch_is_loud(self):
        with self.assertRaises(fe.VerificationError) as ctx:
            fe.compare([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0 + 1e-3, 3.0 + 2e-5], what="probe")
        e = ctx.exception
        self.assertIn("probe: flowrt differs from the reference on 1 of 4 values", str(e))
        self.assertIn("worst at flat index 2", str(e))
        self.assertEqual(e.report["bad"], 1)
        self.assertEqual(e.report["worst_index"], 2)
        self.assertIsInstance(e, AssertionError)
        with self.assertRaisesRegex(fe.VerificationError, "on 1 of 2"):
            fe.compare([0.0, 1.0], [0.0, 1.0 + 1e-4], atol=1e-6, rtol=1e-6)

    def test_non_finite_and_length(self):
        for got in ([math.nan], [math.inf]):
            with self.assertRaises(fe.VerificationError):
                fe.compare(got, [0.0])
        with self.assertRaises(fe.VerificationError):
            fe.compare([0.0], [math.nan])
        with self.assertRaisesRegex(fe.VerificationError, "gave 2 values, the reference has 3"):
            fe.compare([0.0, 0.0], [0.0, 0.0, 0.0])


class SignatureCheck(unittest.TestCase):
    def info(self, **over):
        d = {"inputs": [{"name": "sample", "role": "x", "shape": "[B, 2]"},
                        {"name": "timestep", "role": "t", "shape": "[B]"}],
             "time": {"axis": "sigma", "scale": 1000.0, "negate_output": False},
             "label_classes": None}
        d.update(over)
        return d

    def test_agreement_and_each_difference(self):
        p = fe.plan("diffusers", state_shape=2)
        self.assertEqual(fe.signature_problems(self.info(), p), [])
        probs = fe.signature_problems(
            self.info(time={"axis": "t", "scale": 1.0, "negate_output": True}), p)
        self.assertEqual(len(probs), 3)
        self.assertIn("time axis", probs[0])
        self.assertIn("time scale", probs[1])
        self.assertIn("negate_output", probs[2])
        swapped = self.info(inputs=[{"name": "sample", "role": "t"},
                                    {"name": "timestep", "role": "x"}])
        self.assertIn("inputs (name, role)", fe.signature_problems(swapped, p)[0])
        c = fe.plan("x-t", state_shape=2, num_classes=3, time_axis="sigma",
                    time_scale=1000, input_names={"x": "sample", "t": "timestep"})
        labelled = self.info(inputs=self.info()["inputs"] + [{"name": "y", "role": "label"}],
                             label_classes=5)
        self.assertEqual(fe.signature_problems(labelled, c),
                         ["label classes: the .frt has 5, expected 3"])


class WithoutTorch(unittest.TestCase):
    def test_importing_needs_neither_torch_nor_numpy(self):
        code = ("import sys, flowrt_export; "
                "sys.exit(('torch' in sys.modules) + 2 * ('numpy' in sys.modules))")
        env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
        done = subprocess.run([sys.executable, "-c", code], env=env, check=False)
        self.assertEqual(done.returncode, 0, "flowrt_export imported torch (1) / numpy (2)")

    def test_export_errors_before_and_without_torch(self):
        with self.assertRaisesRegex(fe.SignatureError, "unknown signature"):
            fe.export(object(), "nope", "m.frt")
        with self.assertRaisesRegex(fe.SignatureError, "exporter `jit`"):
            fe.export(object(), "xt", "m.frt", exporter="jit")
        with tempfile.TemporaryDirectory() as d:
            missing = Path(d) / "flowrt"
            with self.assertRaises(fe.FlowrtNotFoundError):
                fe.export(object(), "xt", Path(d) / "m.frt", flowrt=missing)
            missing.write_text("#!/bin/sh\nexit 0\n")
            missing.chmod(0o755)
            with mock.patch.dict(sys.modules, {"torch": None}):
                with self.assertRaises(fe.TorchMissingError) as ctx:
                    fe.export(object(), "xt", Path(d) / "m.frt", flowrt=missing)
            self.assertIn("pip install torch", str(ctx.exception))
            self.assertIsInstance(ctx.exception, ImportError)


if __name__ == "__main__":
    unittest.main()
