import doctest
import json
import os
import tempfile
import unittest

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.torch_models import validate
from onnx_diagnostic.torch_models.validate import (
    summary_frame,
    threshold_for,
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

    def test_verbose_prints_progress_and_failures(self):
        (summary, _), out, err = self.capture(
            lambda: validate_model("not/shipped", exporter=None, verbose=1)
        )
        self.assertIn("[validate] step 'create' failed", out)
        self.assertIn("create", err)  # the progress bar names the step
        self.assertTrue(summary["status"].startswith("FAILED"))

    def test_summary_frame_puts_errors_last(self):
        df = summary_frame(dict(ERR_export="a\nb", status="FAILED: export", disc_abs=0.5))
        self.assertEqual(["status", "disc_abs", "ERR_export"], list(df["key"]))
        self.assertEqual(["FAILED: export", "0.5", "a"], list(df["value"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
