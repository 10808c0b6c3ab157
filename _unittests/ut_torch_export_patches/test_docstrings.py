"""Runs the examples written in the docstrings of the export-core modules."""

import doctest
import importlib
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
]


class TestDocstrings(ExtTestCase):
    def test_docstring_examples(self):
        for name in MODULES:
            with self.subTest(module=name):
                module = importlib.import_module(name)
                res = doctest.testmod(
                    module,
                    optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                    verbose=False,
                )
                self.assertGreater(res.attempted, 0, msg=f"{name} has no example")
                self.assertEqual(res.failed, 0, msg=f"{name}: {res.failed} failed examples")


if __name__ == "__main__":
    unittest.main(verbosity=2)
