import contextlib
import io
import unittest

import torch
import torch.utils._pytree as pytree
import transformers.cache_utils as cu
from transformers import LlamaConfig, Phi3Config
from transformers.models.llama.modeling_llama import LlamaForCausalLM
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

from onnx_diagnostic.cache_helpers import make_dynamic_cache
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.torch_export_patches import (
    active_patches,
    bypass_export_some_errors,
    list_patches,
    register_flattening_functions,
    torch_export_patches,
)
from onnx_diagnostic.torch_export_patches.patches import known_patches
from onnx_diagnostic.torch_export_patches.serialization import (
    register_cache_serialization,
    unregister,
)
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()


def _snapshot_targets():
    """(owner, attribute) -> object found in the owner's __dict__ for every patch target."""
    snap = {}
    for spec in known_patches():
        for owner, attr in spec.targets():
            snap[owner, attr] = vars(owner).get(attr, None)
    return snap


def _snapshot_registry():
    return {cls: node for cls, node in pytree.SUPPORTED_NODES.items()}


class TestTorchExportPatches(ExtTestCase):
    @classmethod
    def setUpClass(cls):
        # Loads the rotary classes so that the rope patch has targets.
        Phi3RotaryEmbedding(Phi3Config(hidden_size=32, num_attention_heads=2))

    def assert_restored(self, before_targets, before_registry):
        after_targets = _snapshot_targets()
        self.assertEqual(set(before_targets), set(after_targets))
        for key, obj in before_targets.items():
            self.assertIs(obj, after_targets[key], msg=f"{key} not restored")
        after_registry = _snapshot_registry()
        self.assertEqual(set(before_registry), set(after_registry))
        for cls, node in before_registry.items():
            self.assertIs(node, after_registry[cls], msg=f"registration of {cls} replaced")

    def test_patches_have_targets(self):
        targets = _snapshot_targets()
        names = {f"{getattr(o, '__name__', o)}.{a}" for o, a in targets}
        self.assertIn("DynamicLayer.lazy_initialization", names)
        self.assertIn("Phi3RotaryEmbedding.forward", names)

    def test_applies_then_restores_every_attribute(self):
        before_t, before_r = _snapshot_targets(), _snapshot_registry()
        with torch_export_patches(patch_transformers=True):
            during = _snapshot_targets()
            for key, obj in before_t.items():
                self.assertIsNot(obj, during[key], msg=f"{key} not patched")
                self.assertTrue(getattr(during[key], "__onnx_diagnostic_patch__", False))
        self.assert_restored(before_t, before_r)

    def test_restores_after_exception(self):
        before_t, before_r = _snapshot_targets(), _snapshot_registry()
        with self.assertRaises(ZeroDivisionError):
            with torch_export_patches(patch_transformers=True):
                1 / 0  # noqa: B018
        self.assert_restored(before_t, before_r)

    def test_nested_contexts(self):
        before_t, before_r = _snapshot_targets(), _snapshot_registry()
        with torch_export_patches(patch_transformers=True):
            outer = _snapshot_targets()
            with torch_export_patches(patch_transformers=True):
                inner = _snapshot_targets()
                for key in outer:
                    self.assertIs(outer[key], inner[key], msg="patched twice")
            after_inner = _snapshot_targets()
            for key in outer:
                self.assertIs(outer[key], after_inner[key], msg="inner exit undid outer patch")
        self.assert_restored(before_t, before_r)

    def test_same_object_entered_again(self):
        before_t, before_r = _snapshot_targets(), _snapshot_registry()
        cm = torch_export_patches(patch_transformers=True)
        for _ in range(2):  # one after the other
            with cm as modificator:
                self.assertTrue(callable(modificator))
                self.assertEqual(active_patches(), dict(patch_transformers=True, patch_torch=True))
            self.assert_restored(before_t, before_r)
            self.assertIsNone(active_patches())
        with cm:  # nested
            outer = _snapshot_targets()
            with cm:
                self.assertEqual(outer, _snapshot_targets())
            self.assertEqual(outer, _snapshot_targets())
        self.assert_restored(before_t, before_r)
        with self.assertRaises(ZeroDivisionError):
            with cm:
                1 / 0  # noqa: B018
        self.assert_restored(before_t, before_r)
        reg = register_flattening_functions()
        for _ in range(2):
            with reg:
                pass
        self.assert_restored(before_t, before_r)

    def test_used_as_a_decorator(self):
        before_t, before_r = _snapshot_targets(), _snapshot_registry()

        @torch_export_patches(patch_transformers=True)
        def inside():
            return active_patches()

        self.assertEqual(inside(), dict(patch_transformers=True, patch_torch=True))
        self.assertEqual(inside(), dict(patch_transformers=True, patch_torch=True))
        self.assert_restored(before_t, before_r)

    def test_restores_when_a_patch_fails_to_apply(self):
        from unittest import mock

        import onnx_diagnostic.torch_export_patches as tep
        from onnx_diagnostic.torch_export_patches.patches.registry import PatchSpec

        before_t, before_r = _snapshot_targets(), _snapshot_registry()
        import types

        real = known_patches(patch_transformers=True)
        owner = types.SimpleNamespace(f=len)

        def fail(original):
            raise RuntimeError("cannot build this patch")

        broken = PatchSpec(
            name="test:broken",
            library="transformers",
            reason="test",
            fixes="test",
            versions="all",
            targets=lambda: [(owner, "f")],
            make=fail,
        )
        # every real patch applied first, then one that fails: all of them undone
        with mock.patch.object(tep, "known_patches", lambda **kw: [*real, broken]):
            with self.assertRaises(RuntimeError) as cm:
                with torch_export_patches(patch_transformers=True):
                    self.fail("the body must not run")
        self.assertIn("cannot build this patch", str(cm.exception))
        self.assert_restored(before_t, before_r)
        self.assertIsNone(active_patches())
        self.assertIs(owner.f, len)

    def test_reusable_context_docstring(self):
        import doctest

        from onnx_diagnostic.torch_export_patches import _reusable

        res = doctest.testmod(_reusable, verbose=False)
        self.assertEqual(res.failed, 0)
        self.assertGreater(res.attempted, 3)
        cm = _reusable.reusable_context(lambda: iter([1]))()
        with self.assertRaises(RuntimeError) as e:
            cm.__exit__(None, None, None)
        self.assertIn("__exit__ without __enter__", str(e.exception))

    def test_no_transformers_patch_when_not_asked(self):
        before_t = _snapshot_targets()
        with torch_export_patches(patch_transformers=False):
            during = _snapshot_targets()
            for key, obj in before_t.items():
                self.assertIs(obj, during[key])

    def test_registers_unregistered_caches_and_removes_them(self):
        unregister(cu.DynamicCache)
        try:
            self.assertNotIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
            with torch_export_patches():
                self.assertIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
            self.assertNotIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
            with self.assertRaises(RuntimeError):
                with torch_export_patches():
                    self.assertIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
                    raise RuntimeError("boom")
            self.assertNotIn(cu.DynamicCache, pytree.SUPPORTED_NODES)
        finally:
            register_cache_serialization()
        self.assertIn(cu.DynamicCache, pytree.SUPPORTED_NODES)

    def test_register_flattening_functions_restores(self):
        unregister(cu.EncoderDecoderCache)
        try:
            with register_flattening_functions(patch_transformers=True) as done:
                self.assertIn(cu.EncoderDecoderCache, done)
            self.assertNotIn(cu.EncoderDecoderCache, pytree.SUPPORTED_NODES)
        finally:
            register_cache_serialization()

    def test_verbose_lists_what_was_patched(self):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            with torch_export_patches(patch_transformers=True, verbose=1):
                pass
        text = buf.getvalue()
        self.assertIn("patches transformers.cache_utils.DynamicLayer.lazy_initialization", text)
        self.assertIn("Phi3RotaryEmbedding.forward", text)
        self.assertIn("restores transformers.cache_utils.DynamicLayer.lazy_initialization", text)

    def test_modificator(self):
        with torch_export_patches(patch_transformers=True) as modificator:
            inputs = dict(x=torch.ones(2))
            self.assertIs(modificator(inputs), inputs)
            legacy = dict(
                input_ids=torch.ones((1, 2), dtype=torch.int64),
                past_key_values=((torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4)),),
            )
            converted = modificator(legacy)
            self.assertIsInstance(converted["past_key_values"], cu.DynamicCache)
            layer = converted["past_key_values"].layers[0]
            self.assertIs(legacy["past_key_values"][0][1], layer.values)
            self.assertIsInstance(legacy["past_key_values"], tuple)

    def test_alias(self):
        self.assertIs(bypass_export_some_errors, torch_export_patches)

    def test_list_patches(self):
        rows = list_patches()
        self.assertEqual(len(rows), len(known_patches()))
        for row in rows:
            self.assertEqual(
                set(row), {"name", "library", "applies", "versions", "reason", "fixes", "targets"}
            )
            self.assertTrue(row["reason"])
            self.assertTrue(row["fixes"])
        self.assertEqual(list_patches(patch_transformers=False), [])

    def test_patch_disabled(self):
        before_t = _snapshot_targets()
        with torch_export_patches(patch_transformers=True, patch=False):
            during = _snapshot_targets()
            for key, obj in before_t.items():
                self.assertIs(obj, during[key])

    def test_export_inside_patches_leaves_model_usable(self):
        cfg = LlamaConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        )
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).eval()
        cache = make_dynamic_cache([(torch.randn(2, 1, 4, 16), torch.randn(2, 1, 4, 16))])
        kwargs = dict(
            input_ids=torch.randint(0, 100, (2, 3)),
            attention_mask=torch.ones((2, 7), dtype=torch.int64),
            **{CACHE: cache},
        )
        D = torch.export.Dim.DYNAMIC
        ds = {"input_ids": {0: D, 1: D}, "attention_mask": {0: D, 1: D}, CACHE: [{0: D, 2: D}] * 2}
        with torch_export_patches(patch_transformers=True) as modificator:
            ep = torch.export.export(
                model, (), kwargs=modificator(kwargs), dynamic_shapes=ds, strict=False
            )
        self.assertIn(CACHE, str(ep.graph_signature))
        # The inputs were not mutated by the export.
        self.assertEqual(cache.layers[0].keys.shape, (2, 1, 4, 16))


class _Target:
    def value(self):
        return 1


class _PatchTarget:
    _PATCHED_CLASS_ = _Target
    _PATCHES_ = ["value", "extra"]

    def value(self):
        return 2

    def extra(self):
        return 3


class TestTorchExportPatchesOnnxDiagnosticArguments(ExtTestCase):
    def test_custom_patches_applied_and_restored(self):
        original = _Target.__dict__["value"]
        cm = torch_export_patches(custom_patches=[_PatchTarget])
        for _ in range(2):  # re-enterable
            with cm:
                self.assertEqual(_Target().value(), 2)
                self.assertEqual(_Target().extra(), 3)
            self.assertIs(_Target.__dict__["value"], original)
            self.assertNotIn("extra", _Target.__dict__)

    def test_custom_patches_restored_on_exception(self):
        original = _Target.__dict__["value"]

        def run():
            with torch_export_patches(custom_patches=[_PatchTarget], patch_transformers=True):
                raise KeyError("inside")

        self.assertRaise(run, KeyError, "inside")
        self.assertIs(_Target.__dict__["value"], original)
        self.assertNotIn("extra", _Target.__dict__)

    def test_custom_patches_bad(self):
        class NoTarget:
            _PATCHES_ = ["value"]

        class Missing:
            _PATCHED_CLASS_ = _Target
            _PATCHES_ = ["nothing"]

        for bad, exc, msg in [
            (_PatchTarget, TypeError, "must be a list"),
            ([3], TypeError, "custom_patches[0] must be a class"),
            ([NoTarget], TypeError, "_PATCHED_CLASS_"),
            ([Missing], AttributeError, "does not define ['nothing']"),
        ]:
            with self.subTest(msg=msg):

                def run(bad=bad):
                    with torch_export_patches(custom_patches=bad):
                        pass

                self.assertRaise(run, exc, msg)
        self.assertEqual(_Target().value(), 1)

    def test_onnx_diagnostic_arguments_accepted(self):
        with torch_export_patches(
            patch_sympy=True,
            patch_torch=True,
            patch_transformers=True,
            patch_diffusers=False,
            catch_constraints=True,
            stop_if_static=1,
            verbose=0,
            patch=True,
            custom_patches=None,
            rewrite=None,
            dump_rewriting=None,
        ) as f:
            self.assertEqual(f({"x": 1}), {"x": 1})

        def run():
            with torch_export_patches(rewrite=[object]):
                pass

        # rewrite is implemented (torch_export_rewrite): a bad element is refused by name
        self.assertRaise(run, TypeError, "rewrite[0]")

        def run2():
            with torch_export_patches(stop_if_static="yes"):
                pass

        self.assertRaise(run2, TypeError, "stop_if_static")


class TestOptionsWithoutEffect(ExtTestCase):
    def test_warns_once_for_options_without_effect(self):
        import warnings

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with torch_export_patches(patch_details=1, patch_diffusers=True):
                pass
        messages = [str(x.message) for x in w if "has no effect" in str(x.message)]
        self.assertEqual(len(messages), 1)
        self.assertIn("patch_diffusers=True, patch_details=1 has no effect", messages[0])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with torch_export_patches(stop_if_static=1):  # implemented: no warning
                pass
        self.assertEqual([x for x in w if "has no effect" in str(x.message)], [])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with torch_export_patches(catch_constraints=False):
                pass
        self.assertEqual([x for x in w if "has no effect" in str(x.message)], [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
