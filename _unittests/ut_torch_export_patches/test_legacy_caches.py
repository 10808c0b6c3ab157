"""
The cache classes of transformers 4.x models keeping states (MambaCache,
HybridMambaAttentionDynamicCache...): flattening, names, placeholders, contexts independent of
the batch, errors, copies, and the patch of their mixers (applied, restored). The mechanics are
tested on every version with stand-ins of these classes; the real classes where the installed
transformers has them (4.x).
"""

import json
import unittest
import warnings

import torch
import torch.utils._pytree as pytree

from onnx_diagnostic.cache_helpers import get_cache_layer_types, is_cache
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.compat import transformers_version, version_at_least
from onnx_diagnostic.helpers.torch_helper import torch_deepcopy
from onnx_diagnostic.torch_export_patches import _legacy_caches as lc
from onnx_diagnostic.torch_export_patches import serialization
from onnx_diagnostic.torch_export_patches.patches import patch_transformers_states as pst

V4 = not version_at_least(transformers_version(), "5")


class HybridMambaAttentionDynamicCache:
    """Stand-in of the class of bamba in transformers 4.x (same attributes)."""

    def __init__(self, batch, layers_block_type, dtype=torch.float32):
        self.layers_block_type = list(layers_block_type)
        self.has_previous_state = True
        self.dtype = dtype
        self.transformer_layers = [i for i, t in enumerate(layers_block_type) if t == "attention"]
        self.conv_states, self.ssm_states, self.key_cache, self.value_cache = [], [], [], []
        for kind in layers_block_type:
            empty = torch.tensor([[]] * batch)
            if kind == "mamba":
                self.conv_states.append(torch.rand(batch, 8, 4, dtype=dtype))
                self.ssm_states.append(torch.rand(batch, 2, 4, 3, dtype=dtype))
                self.key_cache.append(empty)
                self.value_cache.append(empty)
            else:
                self.conv_states.append(empty)
                self.ssm_states.append(empty)
                self.key_cache.append(torch.rand(batch, 2, 5, 4, dtype=dtype))
                self.value_cache.append(torch.rand(batch, 2, 5, 4, dtype=dtype))


class Mamba2Cache:
    """Stand-in of mamba2's cache in transformers 4.x: states stacked over the layers."""

    def __init__(self, batch, layers=2):
        self.dtype = torch.float32
        self.conv_kernel_size = 4
        self.conv_states = torch.rand(layers, batch, 6, 4)
        self.ssm_states = torch.rand(layers, batch, 2, 3, 5)


class MambaCache:
    """Stand-in of mamba's cache in transformers 4.x (max_batch_size is the batch)."""

    def __init__(self, batch, layers=2):
        self.max_batch_size = batch
        self._dtype = torch.float32
        self.conv_kernel_size = 4
        self.conv_states = [torch.rand(batch, 6, 4) for _ in range(layers)]
        self.ssm_states = [torch.rand(batch, 6, 3) for _ in range(layers)]


for _cls in (HybridMambaAttentionDynamicCache, Mamba2Cache, MambaCache):
    _cls.__module__ = "transformers.models.stand_in.modeling_stand_in"
del _cls


def _roundtrip(cache):
    leaves, context = lc._flatten(cache)
    return leaves, context, lc._make_unflatten(type(cache))(leaves, context)


class TestLegacyFlattening(ExtTestCase):
    def test_is_legacy_cache(self):
        self.assertTrue(lc.is_legacy_cache(MambaCache(2)))
        self.assertFalse(lc.is_legacy_cache(None))
        self.assertFalse(lc.is_legacy_cache(torch.zeros(1)))

        class MambaCacheOfMine:  # same name, not a class of transformers
            pass

        self.assertFalse(lc.is_legacy_cache(MambaCacheOfMine()))

    def test_hybrid_names_and_placeholders(self):
        cache = HybridMambaAttentionDynamicCache(2, ["mamba", "attention", "mamba"])
        leaves, context, rebuilt = _roundtrip(cache)
        self.assertEqual(
            list(context[3]),
            [
                "conv_state_0",
                "recurrent_state_0",
                "key_1",
                "value_1",
                "conv_state_2",
                "recurrent_state_2",
            ],
        )
        self.assertEqual(len(leaves), 6)
        self.assertEqual(rebuilt.layers_block_type, cache.layers_block_type)
        self.assertEqual(rebuilt.transformer_layers, [1])
        self.assertIs(rebuilt.has_previous_state, True)
        self.assertEqual(rebuilt.dtype, torch.float32)
        for name in ("conv_states", "ssm_states", "key_cache", "value_cache"):
            for a, b in zip(getattr(cache, name), getattr(rebuilt, name)):
                self.assertEqual(a.shape, b.shape)
                self.assertEqual(a.dtype, b.dtype)
                self.assertEqualArray(a, b)
        # states are copies (the models update them in place), keys are the leaves
        self.assertIsNot(rebuilt.conv_states[0], leaves[0])
        self.assertIs(rebuilt.key_cache[1], leaves[2])
        self.assertEqual(
            lc.legacy_layer_types(cache), ["linear_attention", "full_attention", "linear_attention"]
        )

    def test_context_does_not_depend_on_the_batch(self):
        for make in (MambaCache, Mamba2Cache):
            with self.subTest(cls=make.__name__):
                _, c2 = lc._flatten(make(2))
                _, c3 = lc._flatten(make(3))
                self.assertEqual(c2, c3)
        _, c2, rebuilt = _roundtrip(MambaCache(5))
        self.assertEqual(rebuilt.max_batch_size, 5)

    def test_context_json_roundtrip(self):
        for cache in (
            HybridMambaAttentionDynamicCache(2, ["attention", "mamba"], dtype=torch.bfloat16),
            Mamba2Cache(2),
            MambaCache(1),
        ):
            with self.subTest(cls=type(cache).__name__):
                _, context = lc._flatten(cache)
                text = serialization._context_to_json(context)
                self.assertEqual(serialization._context_from_json(text), context)
                json.loads(text)

    def test_stacked_states(self):
        cache = Mamba2Cache(3, layers=2)
        leaves, context, rebuilt = _roundtrip(cache)
        self.assertEqual(
            list(context[3]),
            ["conv_state_0", "recurrent_state_0", "conv_state_1", "recurrent_state_1"],
        )
        # copies, not views of one storage
        self.assertIsNone(leaves[0]._base)
        self.assertIsInstance(rebuilt.conv_states, lc.LayerStates)
        self.assertEqual(rebuilt.conv_states.shape, cache.conv_states.shape)
        self.assertEqual(rebuilt.ssm_states.device, cache.ssm_states.device)
        self.assertEqual(rebuilt.ssm_states.dtype, torch.float32)
        self.assertEqualArray(torch.stack(list(rebuilt.ssm_states)), cache.ssm_states)
        rebuilt.conv_states.zero_()
        self.assertEqual(float(torch.stack(list(rebuilt.conv_states)).abs().sum()), 0.0)
        # the input leaves were not modified
        self.assertEqualArray(leaves[0], cache.conv_states[0])

    def test_nothing_but_placeholders(self):
        cache = HybridMambaAttentionDynamicCache(2, ["attention"])
        cache.key_cache = [torch.tensor([[]] * 2)]
        cache.value_cache = [torch.tensor([[]] * 2)]
        leaves, context, rebuilt = _roundtrip(cache)
        self.assertEqual(leaves, [])
        self.assertEqual(tuple(rebuilt.key_cache[0].shape), (0, 0))
        self.assertEqual(lc.legacy_layer_types(cache), ["dummy"])

    def test_bad_attribute_names_the_place(self):
        cache = MambaCache(2)
        cache.config = object()
        with self.assertRaises(lc.LegacyCacheError) as cm:
            lc._flatten(cache)
        self.assertIn("MambaCache.config", str(cm.exception))
        cache = MambaCache(2)
        cache.conv_states[1] = "not a tensor"
        with self.assertRaises(lc.LegacyCacheError) as cm:
            lc._flatten(cache)
        self.assertIn("MambaCache.conv_states[1]", str(cm.exception))

    def test_string_type(self):
        from onnx_diagnostic.helpers import string_type

        cache = HybridMambaAttentionDynamicCache(2, ["mamba", "attention"])
        self.assertEqual(
            string_type(dict(cache=cache), with_shape=True),
            "dict(cache:HybridMambaAttentionDynamicCache(conv_state_0:T1s2x8x4, "
            "recurrent_state_0:T1s2x2x4x3, key_1:T1s2x2x5x4, value_1:T1s2x2x5x4))",
        )

    def test_compare_and_flatten_object(self):
        from onnx_diagnostic.helpers import max_diff
        from onnx_diagnostic.helpers.helper import flatten_object

        cache = HybridMambaAttentionDynamicCache(2, ["mamba", "attention"])
        copied = torch_deepcopy(cache)
        self.assertEqualAny(cache, copied)
        self.assertEqual(len(flatten_object(dict(cache=cache))), 4)
        self.assertEqual(max_diff(cache, copied)["abs"], 0)
        copied.ssm_states[0] = copied.ssm_states[0] + 1
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(cache, copied)
        self.assertIn("recurrent_state_0", str(cm.exception))
        self.assertAlmostEqual(max_diff(cache, copied)["abs"], 1, places=5)

    def test_deepcopy(self):
        cache = HybridMambaAttentionDynamicCache(2, ["mamba", "attention"])
        copied = torch_deepcopy(dict(cache=cache))["cache"]
        self.assertIsInstance(copied, HybridMambaAttentionDynamicCache)
        self.assertIsNot(copied.conv_states[0], cache.conv_states[0])
        self.assertEqualArray(copied.key_cache[1], cache.key_cache[1])
        self.assertEqual(copied.layers_block_type, cache.layers_block_type)


class TestStatesPatchHelpers(ExtTestCase):
    def test_eager_semantics(self):
        self.assertFalse(pst.past_started(torch.tensor([0])))
        self.assertTrue(pst.past_started(torch.tensor([2])))
        self.assertEqual(int(pst.target_length(torch.tensor([3, 4]), torch.ones(1, 9))), 5)
        self.assertTrue(pst.empty_entry([]))
        self.assertTrue(pst.empty_entry(torch.zeros(0)))
        self.assertFalse(pst.empty_entry(torch.zeros(2, 2, 3, 4)))
        self.assertEqual(pst.conv_slot(torch.tensor([1]), 4).tolist(), [1])

    def test_traced_semantics(self):
        class Model(torch.nn.Module):
            def forward(self, cache_position, mask):
                started = pst.past_started(cache_position)
                slot = pst.conv_slot(cache_position, 4)
                length = pst.target_length(cache_position, mask)
                step = cache_position + 1 if started else cache_position - 1
                return step, slot, mask[:, :length]

        pos, mask = torch.tensor([0]), torch.ones(2, 6)
        ep = torch.export.export(
            Model(), (pos, mask), dynamic_shapes=({}, {1: torch.export.Dim.DYNAMIC}), strict=False
        )
        got = ep.module()(pos, mask)
        # traced: the recurrent step, the last slot, the length of the mask
        self.assertEqual(got[0].tolist(), [1])
        self.assertEqual(got[1].tolist(), [3])
        self.assertEqual(tuple(got[2].shape), (2, 6))


@unittest.skipUnless(V4, "the per-model cache classes are those of transformers 4.x")
class TestLegacyClassesV4(ExtTestCase):
    def _mamba(self):
        import transformers

        config = transformers.MambaConfig(
            vocab_size=99, hidden_size=16, num_hidden_layers=2, state_size=4, expand=2
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return transformers.MambaForCausalLM(config).eval()

    def test_registered_once_seen(self):
        from transformers.models.mamba.modeling_mamba import MambaCache as Real

        model = self._mamba()
        cache = Real(model.config, 2, dtype=torch.float32)
        self.assertTrue(is_cache(cache))
        self.assertIn(Real, pytree.SUPPORTED_NODES)
        leaves, spec = pytree.tree_flatten(cache)
        self.assertEqual(len(leaves), 4)
        rebuilt = pytree.tree_unflatten(leaves, spec)
        self.assertIsInstance(rebuilt, Real)
        self.assertEqual(get_cache_layer_types(cache), ["linear_attention"] * 2)

    def test_patch_applied_and_restored(self):
        from transformers.models.mamba import modeling_mamba

        from onnx_diagnostic.torch_export_patches import torch_export_patches

        self._mamba()
        original = modeling_mamba.MambaCache.update_conv_state
        targets = pst._state_targets()
        self.assertIn((modeling_mamba.MambaCache, "update_conv_state"), targets)
        with torch_export_patches(patch_transformers=True):
            patched = modeling_mamba.MambaCache.update_conv_state
            self.assertIsNot(patched, original)
            self.assertTrue(getattr(patched, "__onnx_diagnostic_patch__", False))
            # tracebacks give the lines of the original file
            self.assertEqual(patched.__code__.co_firstlineno, original.__code__.co_firstlineno)
        self.assertIs(modeling_mamba.MambaCache.update_conv_state, original)
        with self.assertRaises(RuntimeError):
            with torch_export_patches(patch_transformers=True):
                raise RuntimeError("escapes")
        self.assertIs(modeling_mamba.MambaCache.update_conv_state, original)

    def test_eager_unchanged_by_the_patch(self):
        from onnx_diagnostic.torch_export_patches import torch_export_patches

        model = self._mamba()
        ids = torch.randint(0, 99, (2, 5))
        with torch.no_grad():
            expected = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
            with torch_export_patches(patch_transformers=True):
                got = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        self.assertEqualArray(expected, got)


@unittest.skipIf(V4, "transformers 5 replaced the per-model cache classes")
class TestLegacyClassesV5(ExtTestCase):
    def test_none_on_transformers_5(self):
        self.assertEqual(lc.legacy_cache_classes(import_modules=True), [])
        self.assertEqual(pst._state_targets(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
