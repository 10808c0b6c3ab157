import doctest
import json
import os
import tempfile
import unittest
from unittest import mock

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.torch_models import validate
from onnx_diagnostic.export.api import quiet_third_party_noise
from onnx_diagnostic.torch_models.validate import (
    aggregate_summaries,
    aggregate_views,
    check_model_kwargs,
    export_sample_script,
    format_summary,
    model_config,
    save_summary,
    summary_frame,
    threshold_for,
    unit_of,
    validate_model,
)


class TestValidate(ExtTestCase):
    def test_docstring_examples(self):
        res = doctest.testmod(validate, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertGreater(res.attempted, 3)
        self.assertEqual(0, res.failed)

    def test_torch_only_with_dump_folder(self):
        with tempfile.TemporaryDirectory() as tmp:
            summary, data = validate_model(
                "arnir0/Tiny-LLM", exporter=None, dump_folder=tmp, repeat=1
            )
            with open(os.path.join(tmp, "summary.json")) as f:
                saved = json.load(f)
        self.assertEqual("ok", summary["status"])
        self.assertEqual(summary["status"], saved["status"])
        self.assertEqual("float32", summary["dtype"])
        self.assertEqual(1e-4, summary["threshold"])
        self.assertGreater(summary["latency_torch"], 0)
        self.assertIn("expected", data)
        self.assertIn("expected2", data)
        self.assertEqual((2, 3, 32000), tuple(data["expected"].logits.shape))
        self.assertNotIn("time_export", summary)

    def test_dtype_changes_the_threshold_and_the_size(self):
        summary, data = validate_model("arnir0/Tiny-LLM", exporter=None, dtype="bfloat16", repeat=1)
        self.assertEqual("bfloat16", summary["dtype"])
        self.assertEqual(1e-2, summary["threshold"])
        self.assertEqual(torch.bfloat16, data["expected"].logits.dtype)
        ref, _ = validate_model("arnir0/Tiny-LLM", exporter=None, repeat=1)
        self.assertAlmostEqual(ref["size_mb"] / 2, summary["size_mb"], delta=1e-6)

    def test_failing_step_goes_into_the_summary(self):
        summary, data = validate_model("not/shipped", exporter="onnx-dynamo", do_run=True)
        self.assertTrue(summary["status"].startswith("FAILED: create"))
        self.assertIn("not/shipped", summary["ERR_create"])
        self.assertNotIn("time_export", summary)
        self.assertEqual({}, data)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(TypeError, "model_id must be a non empty string"):
            validate_model("")
        with self.assertRaisesRegex(ValueError, "repeat must be an int >= 1"):
            validate_model("arnir0/Tiny-LLM", repeat=0)
        with self.assertRaisesRegex(ValueError, "no threshold for dtype torch.int64"):
            threshold_for(torch.int64)

    def test_verbose_prints_the_failure_once_on_stderr(self):
        (summary, _), out, err = self.capture(
            lambda: validate_model("not/shipped", exporter=None, verbose=1, progress=False)
        )
        self.assertEqual("", out)
        self.assertEqual(1, err.count("[validate] step 'create' failed"), msg=err)
        self.assertEqual(1, err.count("is not shipped"), msg=err)
        self.assertTrue(summary["status"].startswith("FAILED"))

    def test_progress_bar_stops_at_the_failing_step(self):
        from onnx_diagnostic.export import api

        def _fail(*args, **kwargs):
            raise RuntimeError("export broken on purpose")

        with mock.patch.object(api, "to_onnx", _fail):
            (summary, _), _, err = self.capture(
                lambda: validate_model(
                    "arnir0/Tiny-LLM", exporter="custom", do_run=True, repeat=1, progress=True
                )
            )
        self.assertEqual("FAILED: export", summary["status"])
        self.assertIn("export FAILED", err)
        self.assertIn("2/5", err)  # create and run_torch done, the bar stops there
        self.assertNotIn("3/5", err)
        self.assertNotIn("session", err)
        self.assertEqual(0, err.count("export broken on purpose"))  # verbose=0: summary only

    def test_no_progress_bar_when_stderr_is_not_a_terminal(self):
        _, _, err = self.capture(lambda: validate_model("arnir0/Tiny-LLM", exporter=None, repeat=1))
        self.assertEqual("", err)

    def test_summary_frame_puts_errors_last(self):
        df = summary_frame(dict(ERR_export="a\nb", status="FAILED: export", disc_abs=0.5))
        self.assertEqual(["status", "disc_abs", "ERR_export"], list(df["key"]))
        self.assertEqual(["FAILED: export", "0.5", "a"], list(df["value"]))
        self.assertEqual(["", "", ""], list(df["unit"]))

    def test_units(self):
        self.assertEqual("s", unit_of("latency_torch"))
        self.assertEqual("s", unit_of("time_export"))
        self.assertEqual("MB", unit_of("onnx_size_mb"))
        self.assertEqual("MB", unit_of("size_mb"))
        self.assertEqual("x", unit_of("speedup"))
        self.assertEqual("", unit_of("disc_abs"))

    def test_format_summary_is_narrow_and_keeps_the_whole_error(self):
        error = "RuntimeError: " + " ".join(f"word{i}" for i in range(120)) + "\nsecond line"
        summary = dict(
            model_id="arnir0/Tiny-LLM",
            latency_ort=0.00123,
            onnx_size_mb=15.4,
            status="FAILED: export",
            ERR_export=error,
        )
        text = format_summary(summary, width=60)
        lines = text.splitlines()
        self.assertLessEqual(max(len(li) for li in lines), 60, msg=text)
        self.assertIn("latency_ort   0.00123 s", text)
        self.assertIn("onnx_size_mb  15.4 MB", text)
        self.assertTrue(lines[-1].strip().endswith("second line"), msg=text)
        self.assertIn("word119", text)
        # values are left-aligned right after the keys, not pushed by the error width
        self.assertEqual("model_id      arnir0/Tiny-LLM", lines[0])
        self.assertEqual("ERR_export    RuntimeError: word0 word1 word2 word3 word4", lines[4])

    def test_latency_has_warmup_and_is_a_median(self):
        calls = []

        def fct():
            calls.append(1)

        with mock.patch.object(validate.time, "perf_counter", side_effect=[0, 5, 0, 1, 0, 3]):
            res = validate._latency(fct, repeat=3, warmup=2)
        self.assertEqual(5, len(calls))
        self.assertEqual(3, res)  # median of 5, 1, 3

    def test_bad_dtype_and_exporter_listed(self):
        with self.assertRaisesRegex(ValueError, "dtype='float17'.*float32, float16, bfloat16"):
            validate_model("arnir0/Tiny-LLM", dtype="float17")
        with self.assertRaisesRegex(
            ValueError, "exporter=.foo. is unknown, valid values: onnx-dynamo, custom"
        ):
            validate_model("arnir0/Tiny-LLM", exporter="foo")

    def test_dtypes_and_exporters_match_the_command_line(self):
        from onnx_diagnostic import _command_lines
        from onnx_diagnostic.export.api import EXPORTERS

        self.assertEqual(set(EXPORTERS), set(_command_lines.EXPORTER_NAMES))
        self.assertEqual(validate.DTYPES, _command_lines.DTYPE_NAMES)

    def test_unknown_model_kwargs(self):
        check_model_kwargs("arnir0/Tiny-LLM", {"num_hidden_layers": 1, "vocab_size": 10})
        with self.assertRaisesRegex(ValueError, "did you mean: num_hidden_layers"):
            check_model_kwargs("arnir0/Tiny-LLM", {"num_hiden_layers": 1})
        summary, _ = validate_model(
            "arnir0/Tiny-LLM", exporter=None, model_kwargs={"not_a_field": 3}
        )
        self.assertIn("'not_a_field' is not a field", summary["ERR_create"])
        self.assertTrue(summary["status"].startswith("FAILED: create"))

    def test_quiet_third_party_noise(self):
        import logging
        import warnings

        reg = logging.getLogger("torch.onnx._internal.exporter._registration")
        with self.assertLogs(reg, level="WARNING") as logs:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with quiet_third_party_noise():
                    reg.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
                    reg.warning("another message")
                    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
                    warnings.warn("the user's own warning", UserWarning)
                warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
                reg.warning("torchvision is not installed. Skipping %s", "after")
        messages = [r.getMessage() for r in logs.records]
        self.assertEqual(
            ["another message", "torchvision is not installed. Skipping after"], messages
        )
        self.assertEqual(
            ["the user's own warning", "`isinstance(treespec, LeafSpec)` is deprecated"],
            [str(w.message) for w in caught],
        )
        self.assertEqual([], reg.filters)

    def test_custom_exporter_stores_a_tied_weight_once(self):
        import onnx

        from onnx_diagnostic.export.api import to_onnx

        class Tied(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(300, 16)
                self.dec = torch.nn.Linear(16, 300, bias=False)
                self.dec.weight = self.emb.weight

            def forward(self, ids):
                return self.dec(self.emb(ids))

        model = Tied()
        ids = torch.randint(0, 300, (2, 5))
        for optimize in (False, True):
            with self.subTest(optimize=optimize), tempfile.TemporaryDirectory() as tmp:
                name = os.path.join(tmp, "tied.onnx")
                to_onnx(model, (ids,), filename=name, exporter="custom", optimize=optimize)
                proto = onnx.load(name)
                self.assertEqual([(300, 16)], [tuple(i.dims) for i in proto.graph.initializer])
                self.assertLess(os.path.getsize(name), 300 * 16 * 4 * 1.2)
                self.assertIn("Transpose", [n.op_type for n in proto.graph.node])
                from onnx_diagnostic.helpers.rt_helper import make_session, run_session

                got = run_session(make_session(name), {proto.graph.input[0].name: ids})[0]
                self.assertEqualArray(model(ids).detach(), got, atol=1e-5)

    def test_untied_linear_keeps_its_transposed_initializer(self):
        import onnx

        from onnx_diagnostic.export.api import to_onnx

        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "linear.onnx")
            to_onnx(torch.nn.Linear(8, 300, bias=False), (torch.rand(2, 8),), filename=name,
                    exporter="custom")  # fmt: skip
            proto = onnx.load(name)
        self.assertEqual([(8, 300)], [tuple(i.dims) for i in proto.graph.initializer])
        self.assertNotIn("Transpose", [n.op_type for n in proto.graph.node])

    def test_save_summary_json_csv(self):
        import csv

        summary = dict(model_id="m", status="ok", latency_ort=0.5, dtype=torch.float16)
        with tempfile.TemporaryDirectory() as tmp:
            save_summary(summary, os.path.join(tmp, "sub", "s.json"))
            save_summary(summary, os.path.join(tmp, "s.csv"))
            with open(os.path.join(tmp, "sub", "s.json")) as f:
                self.assertEqual(
                    dict(model_id="m", status="ok", latency_ort=0.5, dtype="torch.float16"),
                    json.load(f),
                )
            with open(os.path.join(tmp, "s.csv")) as f:
                rows = list(csv.DictReader(f))
            self.assertEqual([dict(model_id="m", status="ok", latency_ort="0.5",
                                   dtype="torch.float16")], rows)  # fmt: skip
            with self.assertRaisesRegex(ValueError, "must end with .json or .csv"):
                save_summary(summary, os.path.join(tmp, "s.txt"))

    def test_aggregate_summaries_and_views(self):
        with tempfile.TemporaryDirectory() as tmp:
            save_summary(dict(model_id="a", exporter="custom", status="ok", disc_abs=1e-6),
                         os.path.join(tmp, "x", "a.json"))  # fmt: skip
            save_summary(dict(model_id="a", exporter="onnx-dynamo", status="FAILED: export"),
                         os.path.join(tmp, "b.csv"))  # fmt: skip
            with open(os.path.join(tmp, "other.json"), "w") as f:
                json.dump([1, 2], f)
            df = aggregate_summaries(tmp)
            with self.assertRaisesRegex(ValueError, "no summary found"):
                aggregate_summaries(os.path.join(tmp, "other.json"))
            with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
                aggregate_summaries(os.path.join(tmp, "missing"))
        self.assertEqual(["model_id", "exporter", "status", "disc_abs", "source"], list(df.columns))
        self.assertEqual(2, len(df))
        views = aggregate_views(df)
        self.assertEqual(["runs", "status", "disc_abs"], list(views))
        self.assertEqual([["ok", "FAILED: export"]], views["status"].values.tolist())

    def test_model_config_reduced_or_not(self):
        full = model_config("arnir0/Tiny-LLM", reduced=False)
        small = model_config("arnir0/Tiny-LLM")
        one = model_config("arnir0/Tiny-LLM", model_kwargs={"num_hidden_layers": 1})
        self.assertEqual("llama", full["model_type"])
        self.assertLessEqual(small["num_hidden_layers"], full["num_hidden_layers"])
        self.assertEqual(1, one["num_hidden_layers"])
        with self.assertRaisesRegex(ValueError, "not a field"):
            model_config("arnir0/Tiny-LLM", model_kwargs={"nope": 1})

    def test_export_sample_script_runs(self):
        import subprocess
        import sys

        script = export_sample_script("arnir0/Tiny-LLM", exporter="custom",
                                      model_kwargs={"num_hidden_layers": 1})  # fmt: skip
        self.assertIn("--mop num_hidden_layers=1", script)
        with self.assertRaisesRegex(
            ValueError, "exporter=.bad. is unknown, valid values: onnx-dynamo, custom"
        ):
            export_sample_script("arnir0/Tiny-LLM", exporter="bad")
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "sample.py")
            with open(name, "w") as f:
                f.write(script)
            res = subprocess.run(
                [sys.executable, name],
                capture_output=True,
                text=True,
                cwd=tmp,
                check=False,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            self.assertEqual(0, res.returncode, msg=res.stderr[-3000:])
            self.assertExists(os.path.join(tmp, "arnir0_Tiny-LLM.custom.onnx"))
        lines = [li for li in res.stdout.splitlines() if "discrepancies" in li]
        self.assertEqual(2, len(lines), msg=res.stdout)
        for li in lines:
            abs_err = float(li.split("'abs': ")[1].split(",")[0])
            self.assertLess(abs_err, 1e-4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
