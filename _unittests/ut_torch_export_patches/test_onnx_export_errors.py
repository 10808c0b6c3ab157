import contextlib
import io
import unittest

import torch
import torch.utils._pytree as pytree
import transformers.cache_utils as cu

from onnx_diagnostic.cache_helpers import make_dynamic_cache
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.compat import cache_arg_name
from onnx_diagnostic.torch_export_patches import onnx_export_errors as old
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.serialization import (
    register_cache_serialization,
    unregister,
)


class TestOldModulePath(ExtTestCase):
    def test_names_are_the_package_ones(self):
        import onnx_diagnostic.torch_export_patches as pkg

        self.assertIs(old.torch_export_patches, pkg.torch_export_patches)
        self.assertIs(old.bypass_export_some_errors, pkg.torch_export_patches)
        self.assertEqual(
            sorted(old.__all__),
            [
                "bypass_export_some_errors",
                "register_additional_serialization_functions",
                "torch_export_patches",
            ],
        )

    def test_torch_export_patches_from_old_path(self):
        with old.torch_export_patches(patch_transformers=True) as modificator:
            self.assertEqual(modificator({"x": 1}), {"x": 1})


class TestRegisterAdditionalSerializationFunctions(ExtTestCase):
    def test_yields_identity_or_the_modificator(self):
        inputs = {cache_arg_name(): ((torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4)),)}
        with old.register_additional_serialization_functions() as f:
            self.assertIs(f(inputs), inputs)
        with old.register_additional_serialization_functions(patch_transformers=True) as f:
            converted = f(inputs)
        self.assertEqual(type(converted[cache_arg_name()]).__name__, "DynamicCache")
        self.assertIsInstance(inputs[cache_arg_name()], tuple)  # not modified

    def test_registers_and_restores_exactly(self):
        unregister(cu.DynamicCache)
        try:
            self.assertNotIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
            with old.register_additional_serialization_functions():
                self.assertIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
                cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
                flat, _ = pytree.tree_flatten(cache)
                self.assertEqual(len(flat), 2)
            self.assertNotIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
            with self.assertRaises(ValueError):
                with old.register_additional_serialization_functions():
                    raise ValueError("boom")
            self.assertNotIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
        finally:
            register_cache_serialization()
        self.assertIn(cu.DynamicCache, pytree.SUPPORTED_NODES)

    def test_existing_registration_is_kept(self):
        before = pytree.SUPPORTED_NODES[cu.DynamicCache]
        with old.register_additional_serialization_functions(replace_existing=True):
            self.assertIs(pytree.SUPPORTED_NODES[cu.DynamicCache], before)
        self.assertIs(pytree.SUPPORTED_NODES[cu.DynamicCache], before)

    def test_runs_an_exported_program_with_a_cache(self):
        class Model(torch.nn.Module):
            def forward(self, x, cache):
                return x + cache.layers[0].keys.sum()

        cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
        with torch_export_patches():
            ep = torch.export.export(Model(), (torch.ones(2), cache), strict=False)
        with old.register_additional_serialization_functions(patch_transformers=True) as f:
            got = ep.module()(*f((torch.ones(2), cache)))
        self.assertEqualArray(got, torch.full((2,), 25.0))

    def test_verbose(self):
        unregister(cu.DynamicCache)
        try:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                with old.register_additional_serialization_functions(verbose=1):
                    pass
            self.assertIn("DynamicCache", buf.getvalue())
        finally:
            register_cache_serialization()

    def test_bad_input(self):
        def enter(**kwargs):
            with old.register_additional_serialization_functions(**kwargs):
                pass

        self.assertRaise(lambda: enter(patch_transformers="yes"), TypeError, "patch_transformers")
        self.assertRaise(lambda: enter(verbose=None), TypeError, "verbose")

    def test_examples_in_docstrings_run(self):
        self.assertDocstringExamples(old)


if __name__ == "__main__":
    unittest.main(verbosity=2)
