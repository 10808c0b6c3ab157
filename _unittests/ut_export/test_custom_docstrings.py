"""Runs the examples written in the docstrings of the custom exporter."""

import unittest

from onnx_diagnostic.ext_test_case import ExtTestCase


class TestCustomDocstrings(ExtTestCase):
    def test_docstring_examples(self):
        for name in [
            "",
            ".translator",
            ".builder",
            ".aten_ops",
            ".aten_shapes",
            ".aten_nn",
            ".passes",
            ".fusions",
            ".fusions_attention",
            ".fusion_patterns",
            ".folding",
        ]:
            with self.subTest(module=name):
                self.assertDocstringExamples(f"onnx_diagnostic.export.custom{name}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
