import json
import os
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import torch

from onnx_diagnostic._command_lines import get_parser, main
from onnx_diagnostic.ext_test_case import ExtTestCase


class TestCommandLines(ExtTestCase):
    def test_docstring_examples(self):
        import doctest

        from onnx_diagnostic import _command_lines

        res = self.capture(
            lambda: doctest.testmod(_command_lines, optionflags=doctest.ELLIPSIS, verbose=False)
        )[0]
        self.assertGreater(res.attempted, 2)
        self.assertEqual(0, res.failed)

    def test_validate_tiny_llm_exits_0(self):
        with tempfile.TemporaryDirectory() as tmp:
            rc, out, _ = self.capture(
                lambda: main(
                    [
                        "validate",
                        "-m",
                        "arnir0/Tiny-LLM",
                        "--export",
                        "onnx-dynamo",
                        "--run",
                        "-o",
                        tmp,
                    ]
                )
            )
            self.assertEqual(0, rc, msg=out)
            with open(os.path.join(tmp, "summary.json")) as f:
                summary = json.load(f)
            self.assertExists(os.path.join(tmp, "arnir0_Tiny-LLM.onnx-dynamo.onnx"))
        self.assertEqual("ok", summary["status"])
        for key in ("disc_abs", "disc2_abs"):
            self.assertLess(summary[key], 1e-4)
        for key in ("time_export", "onnx_size_mb", "onnx_n_nodes", "latency_torch", "latency_ort"):
            self.assertGreater(summary[key], 0, msg=key)
            self.assertIn(key, out)
        self.assertNotIn("ERR_", out)

    def test_broken_forward_exits_1_with_the_error(self):
        import transformers

        forward = transformers.LlamaForCausalLM.forward

        def _broken(self, *args, **kwargs):
            raise RuntimeError("this forward is broken on purpose")

        with mock.patch.object(transformers.LlamaForCausalLM, "forward", _broken):
            rc, out, _ = self.capture(
                lambda: main(
                    ["validate", "-m", "arnir0/Tiny-LLM", "--export", "onnx-dynamo", "--run"]
                )
            )
        self.assertIs(forward, transformers.LlamaForCausalLM.forward)
        self.assertEqual(1, rc)
        self.assertIn("FAILED: run_torch, export", out)
        self.assertIn("ERR_run_torch", out)
        self.assertIn("ERR_export", out)
        self.assertIn("this forward is broken on purpose", out)

    def test_discrepancy_above_threshold_exits_1(self):
        from onnx_diagnostic.helpers import rt_helper

        run_session = rt_helper.run_session

        def _shifted(session, feeds):
            return [t + 1 if t.is_floating_point() else t for t in run_session(session, feeds)]

        with mock.patch.object(rt_helper, "run_session", _shifted):
            rc, out, _ = self.capture(
                lambda: main(
                    ["validate", "-m", "arnir0/Tiny-LLM", "--export", "onnx-dynamo", "--run"]
                )
            )
        self.assertIs(run_session, rt_helper.run_session)
        self.assertEqual(1, rc)
        self.assertIn("FAILED: disc_abs=1>0.0001, disc2_abs=1>0.0001", out)

    def test_validate_without_export_runs_torch_only(self):
        rc, out, _ = self.capture(lambda: main(["validate", "-m", "arnir0/Tiny-LLM"]))
        self.assertEqual(0, rc)
        self.assertIn("latency_torch", out)
        self.assertNotIn("time_export", out)

    def test_unknown_model_id_exits_1(self):
        rc, out, _ = self.capture(lambda: main(["validate", "-m", "unknown/model-id"]))
        self.assertEqual(1, rc)
        self.assertIn("ERR_create", out)
        self.assertIn("unknown/model-id", out)

    def test_list(self):
        rc, out, _ = self.capture(lambda: main(["validate", "--list"]))
        self.assertEqual(0, rc)
        line = [li for li in out.splitlines() if "arnir0/Tiny-LLM" in li]
        self.assertEqual(1, len(line), msg=out)
        self.assertIn("text-generation", line[0])

    def test_validate_needs_a_model_id(self):
        rc, _, err = self.capture(lambda: main(["validate"]))
        self.assertEqual(2, rc)
        self.assertIn("-m MODEL_ID is required", err)

    def test_parser_model_kwargs(self):
        args = get_parser().parse_args(
            ["validate", "-m", "x", "--mop", "num_hidden_layers=2", "--mop", "name=a"]
        )
        self.assertEqual([("num_hidden_layers", 2), ("name", "a")], args.mop)
        with self.assertRaises(SystemExit):
            self.capture(lambda: get_parser().parse_args(["validate", "--mop", "novalue"]))

    def test_print_dump(self):
        from onnx_diagnostic.helpers.mini_onnx_builder import (
            create_onnx_model_from_input_tensors,
        )

        dump = {("model", 0): (torch.ones((2, 3)),), ("model", 1): dict(x=torch.tensor(2))}
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "dump.onnx")
            with open(name, "wb") as f:
                f.write(create_onnx_model_from_input_tensors(dump).SerializeToString())
            rc, out, _ = self.capture(lambda: main(["print", name]))
        self.assertEqual(0, rc)
        self.assertIn("dump with 2 entries", out)
        self.assertIn("('model', 0): (T1s2x3[1.0,1.0:A1.0],)", out)
        self.assertIn("('model', 1): dict(x:T7s[2,2:A2.0])", out)

    def test_print_onnx_model(self):
        from onnx_diagnostic.export.api import to_onnx

        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "linear.onnx")
            to_onnx(torch.nn.Linear(3, 4), (torch.rand(2, 3),), filename=name)
            rc, out, _ = self.capture(lambda: main(["print", name]))
        self.assertEqual(0, rc)
        self.assertIn("input input: elem_type=1 shape=[2, 3]", out)
        self.assertIn("Gemm: 1", out)

    def test_print_missing_or_bad_file(self):
        rc, _, err = self.capture(lambda: main(["print", "does_not_exist.onnx"]))
        self.assertEqual(1, rc)
        self.assertIn("does not exist", err)
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "bad.onnx")
            with open(name, "w") as f:
                f.write("not an onnx file")
            rc, _, err = self.capture(lambda: main(["print", name]))
        self.assertEqual(1, rc)
        self.assertIn("cannot read", err)

    def test_python_dash_m(self):
        res = subprocess.run(
            [sys.executable, "-m", "onnx_diagnostic", "validate", "--list"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.assertEqual(0, res.returncode, msg=res.stderr)
        self.assertIn("arnir0/Tiny-LLM", res.stdout)


class TestCommandLineVersions(ExtTestCase):
    def test_versions_text(self):
        from onnx_diagnostic.helpers import compat

        rc, out, _ = self.capture(lambda: main(["versions"]))
        self.assertEqual(0, rc)
        lines = out.splitlines()
        self.assertEqual(["package", "version", "tested", "status"], lines[0].split())
        for package in ("python", "torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
            row = [li for li in lines if li.split()[:1] == [package]]
            self.assertEqual(1, len(row), msg=f"{package}\n{out}")
        row = next(li for li in lines if li.startswith("transformers "))
        self.assertIn(compat.transformers_version(), row)
        self.assertIn(" .. ".join(compat.TESTED_VERSIONS["transformers"]), row)
        self.assertIn(f"cache argument of forward: {compat.default_cache_arg_name()}", out)
        self.assertIn(f"cache field of the outputs: {compat.output_cache_field()}", out)
        self.assertIn("patches of torch_export_patches:", out)
        self.assertIn("transformers:DynamicLayer.lazy_initialization", out)

    def test_versions_json(self):
        from onnx_diagnostic.helpers import compat
        from onnx_diagnostic.torch_export_patches import list_patches

        rc, out, _ = self.capture(lambda: main(["versions", "--format", "json"]))
        self.assertEqual(0, rc)
        data = json.loads(out)
        self.assertEqual(
            ["cache_arg_name", "output_cache_field", "packages", "patches"], sorted(data)
        )
        self.assertIn(data["cache_arg_name"], compat.CACHE_ARG_NAMES)
        rows = {r["package"]: r for r in data["packages"]}
        self.assertEqual(compat.transformers_version(), rows["transformers"]["version"])
        self.assertEqual(
            list(compat.TESTED_VERSIONS["torch"]), rows["torch"]["tested"], msg=str(rows)
        )
        self.assertEqual([p["name"] for p in list_patches()], [p["name"] for p in data["patches"]])
        for p in data["patches"]:
            self.assertIn(p["status"], ("applies", "skipped"))

    def test_versions_does_not_patch(self):
        import transformers.cache_utils

        before = transformers.cache_utils.DynamicLayer.__dict__["lazy_initialization"]
        self.capture(lambda: main(["versions"]))
        after = transformers.cache_utils.DynamicLayer.__dict__["lazy_initialization"]
        self.assertIs(before, after)

    def test_versions_patch_skipped_and_why(self):
        from onnx_diagnostic import _command_lines

        rows = [
            dict(
                name="transformers:A.f",
                library="transformers",
                applies=False,
                versions="transformers<4.50",
                targets=[],
            ),
            dict(
                name="transformers:B.g",
                library="transformers",
                applies=True,
                versions="any",
                targets=["transformers.B.g"],
            ),
        ]
        with mock.patch(
            "onnx_diagnostic.torch_export_patches.patches.list_patches", return_value=rows
        ):
            rc, out, _ = self.capture(lambda: _command_lines.main(["versions"]))
        self.assertEqual(0, rc)
        line_a = next(li for li in out.splitlines() if "transformers:A.f" in li)
        self.assertIn("skipped", line_a)
        self.assertIn(
            "not needed with the installed versions (needed for transformers<4.50)", line_a
        )
        line_b = next(li for li in out.splitlines() if "transformers:B.g" in li)
        self.assertIn("applies", line_b)
        self.assertIn("transformers.B.g", line_b)

    def test_versions_outside_tested_range(self):
        from onnx_diagnostic.helpers import compat

        rows = [
            dict(package="transformers", version="4.40.0", tested=("4.57", "5.24"), in_range=False),
            dict(package="onnxscript", version=None, tested=("0.7", "0.7"), in_range=None),
            dict(package="onnxruntime-genai", version="0.9.0", tested=None, in_range=None),
        ]
        with mock.patch.object(compat, "version_report", return_value=rows):
            rc, out, _ = self.capture(lambda: main(["versions"]))
        self.assertEqual(0, rc)
        lines = out.splitlines()
        self.assertIn("OUTSIDE the tested range", next(li for li in lines if "4.40.0" in li))
        self.assertIn("not installed", next(li for li in lines if li.startswith("onnxscript")))
        genai = next(li for li in lines if li.startswith("onnxruntime-genai"))
        self.assertIn("untested", genai)
        self.assertIn("no tested range", genai)

    def test_version_report_and_range(self):
        from onnx_diagnostic.helpers import compat

        self.assertTrue(
            compat.in_tested_range("transformers", compat.TESTED_VERSIONS["transformers"][1] + ".9")
        )
        self.assertFalse(compat.in_tested_range("torch", "2.12.1"))
        self.assertFalse(compat.in_tested_range("torch", "2.99.0"))
        self.assertTrue(compat.in_tested_range("torch", "2.13.0+cpu"))
        self.assertIsNone(compat.in_tested_range("onnxruntime-genai", "0.9.0"))
        rows = compat.version_report()
        self.assertEqual(
            ["python", "torch", "transformers", "onnx", "onnxruntime", "onnxscript"],
            [r["package"] for r in rows][:6],
        )
        self.assertEqual(compat.transformers_version(), rows[2]["version"])
        # the metadata of a CUDA wheel says 2.15.0 where torch.__version__ says 2.15.0+cu132
        self.assertEqual(torch.__version__.split("+")[0], rows[1]["version"].split("+")[0])

    def test_python_dash_m_versions(self):
        res = subprocess.run(
            [sys.executable, "-m", "onnx_diagnostic", "versions", "--format", "json"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.assertEqual(0, res.returncode, msg=res.stderr)
        self.assertIn("transformers", [r["package"] for r in json.loads(res.stdout)["packages"]])


if __name__ == "__main__":
    unittest.main(verbosity=2)
