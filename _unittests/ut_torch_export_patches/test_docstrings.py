"""Runs the examples written in the docstrings of the export-core modules."""

import unittest

from onnx_diagnostic.ext_test_case import ExtTestCase

MODULES = [
    "onnx_diagnostic.cache_helpers",
    "onnx_diagnostic.helpers.compat",
    "onnx_diagnostic.torch_export_patches",
    "onnx_diagnostic.torch_export_patches.serialization",
    "onnx_diagnostic.torch_export_patches.patch_inputs",
    "onnx_diagnostic.torch_export_patches.patches",
    "onnx_diagnostic.torch_export_patches.patches.registry",
    "onnx_diagnostic.torch_export_patches.patches.patch_transformers",
    "onnx_diagnostic.torch_export_patches.patches.patch_transformers_states",
    "onnx_diagnostic.torch_export_patches.patches._rewrite",
    "onnx_diagnostic.torch_export_patches._legacy_caches",
    "onnx_diagnostic.tasks._cache_probe",
]


class TestDocstrings(ExtTestCase):
    def test_docstring_examples(self):
        for name in MODULES:
            with self.subTest(module=name):
                self.assertDocstringExamples(name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
