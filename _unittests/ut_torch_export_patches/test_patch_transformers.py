import copy
import unittest

import torch
import torch.utils._pytree as pytree
import transformers.cache_utils as cu
from transformers import AutoModelForCausalLM, LlamaConfig, Phi3Config

from onnx_diagnostic.cache_helpers import make_dynamic_cache
from onnx_diagnostic.ext_test_case import ExtTestCase, ignore_warnings
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.serialization import (
    register_cache_serialization,
    unregister,
)
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()

D = torch.export.Dim.DYNAMIC
COMMON = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    pad_token_id=0,
)


def _rope_model(kind):
    torch.manual_seed(0)
    if kind == "longrope":
        cfg = Phi3Config(
            **COMMON,
            max_position_embeddings=4096,
            original_max_position_embeddings=64,
            rope_scaling=dict(type="longrope", long_factor=[1.5] * 8, short_factor=[1.0] * 8),
        )
    else:
        cfg = LlamaConfig(
            **COMMON,
            head_dim=16,
            max_position_embeddings=64,
            rope_scaling=dict(rope_type="dynamic", factor=2.0),
        )
    return AutoModelForCausalLM.from_config(cfg).eval()


def _inputs(batch, seq, past):
    head_dim = 16
    return dict(
        input_ids=torch.randint(0, 100, (batch, seq)),
        attention_mask=torch.ones((batch, seq + past), dtype=torch.int64),
        position_ids=torch.arange(past, past + seq).unsqueeze(0).expand(batch, -1),
        **{
            CACHE: make_dynamic_cache(
                [(torch.randn(batch, 1, past, head_dim), torch.randn(batch, 1, past, head_dim))]
            )
        },
    )


DS = dict(
    input_ids={0: D, 1: D},
    attention_mask={0: D, 1: D},
    position_ids={0: D, 1: D},
    **{CACHE: [{0: D, 2: D}] * 2},
)


class TestDynamicRopePatch(ExtTestCase):
    def _check_eager_same(self, kind):
        model = _rope_model(kind)
        rotary = model.model.rotary_emb
        for past in (5, 100):  # below and beyond the original context length (64)
            inputs = _inputs(2, 3, past)
            fresh = _rope_model(kind)
            expected = fresh(**copy.deepcopy(inputs)).logits
            buffers = dict(rotary._buffers)
            attributes = set(vars(rotary))
            with torch_export_patches(patch_transformers=True):
                got = model(**copy.deepcopy(inputs)).logits
            self.assertEqualArray(expected, got, atol=1e-6)
            # The patched forward leaves the module as it was.
            self.assertEqual(set(vars(rotary)), attributes)
            for name, buf in buffers.items():
                self.assertIs(buf, rotary._buffers[name])

    def test_longrope_eager_unchanged(self):
        self._check_eager_same("longrope")

    def test_dynamic_eager_unchanged(self):
        self._check_eager_same("dynamic")

    @ignore_warnings((UserWarning, FutureWarning))
    def _check_export(self, kind):
        model = _rope_model(kind)
        reference = _rope_model(kind)
        with torch_export_patches(patch_transformers=True):
            ep = torch.export.export(
                model, (), kwargs=_inputs(2, 3, 5), dynamic_shapes=DS, strict=False
            )
        for batch, seq, past in [(3, 4, 7), (2, 5, 100)]:
            inputs = _inputs(batch, seq, past)
            expected = reference(**copy.deepcopy(inputs)).logits
            got = ep.module()(**copy.deepcopy(inputs)).logits
            self.assertEqualArray(expected, got, atol=1e-5)
            # The model used for the export still computes the right values.
            eager = model(**copy.deepcopy(inputs)).logits
            self.assertEqualArray(expected, eager, atol=1e-6)
        for value in vars(model.model.rotary_emb).values():
            self.assertNotIn("FakeTensor", type(value).__name__)

    def test_longrope_export(self):
        self._check_export("longrope")

    def test_dynamic_export(self):
        self._check_export("dynamic")

    def test_dynamic_export_fails_without_patches(self):
        # Documents the failure the patch fixes (data-dependent branch on max(position_ids)).
        model = _rope_model("dynamic")
        with self.assertRaises(Exception) as cm:
            torch.export.export(model, (), kwargs=_inputs(2, 3, 5), dynamic_shapes=DS, strict=False)
        self.assertIn("data-dependent", str(cm.exception))


class TestLazyInitializationPatch(ExtTestCase):
    def _model(self):
        torch.manual_seed(0)
        cfg = LlamaConfig(**COMMON, head_dim=16)
        return AutoModelForCausalLM.from_config(cfg).eval()

    def test_eager_generate_unchanged(self):
        model = self._model()
        input_ids = torch.randint(1, 100, (2, 5))
        expected = model.generate(input_ids, max_new_tokens=5, do_sample=False)
        with torch_export_patches(patch_transformers=True):
            got = model.generate(input_ids, max_new_tokens=5, do_sample=False)
        self.assertEqualArray(expected, got)

    def test_empty_layer_update(self):
        layer = cu.DynamicLayer()
        k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
        with torch_export_patches(patch_transformers=True):
            keys, values = layer.update(k, v)
        self.assertEqualArray(k, keys)
        self.assertEqualArray(v, values)
        self.assertEqual(layer.keys.shape, (2, 3, 4, 8))

    @ignore_warnings((UserWarning, FutureWarning))
    def test_prefill_export_has_no_lifted_constant(self):
        model = self._model()
        kwargs = dict(
            input_ids=torch.randint(0, 100, (2, 3)),
            attention_mask=torch.ones((2, 3), dtype=torch.int64),
            use_cache=True,
        )
        ds = dict(input_ids={0: D, 1: D}, attention_mask={0: D, 1: D}, use_cache=None)
        with torch_export_patches(patch_transformers=True):
            ep = torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=ds, strict=False)
        self.assertEqual([k for k in ep.constants if "lifted_tensor" in k], [])

    @ignore_warnings((UserWarning, FutureWarning))
    def test_hand_written_registration_exports_to_onnx(self):
        # A registration whose unflatten calls cache.update (what users write first)
        # made torch.onnx.export fail with lifted constants; the patch fixes the cause.
        def flatten(cache):
            return [t for layer in cache.layers for t in (layer.keys, layer.values)], len(
                cache.layers
            )

        def flatten_with_keys(cache):
            flat, ctx = flatten(cache)
            return [(pytree.SequenceKey(i), t) for i, t in enumerate(flat)], ctx

        def unflatten(values, n):
            cache = cu.DynamicCache()
            for i in range(n):
                cache.update(values[2 * i], values[2 * i + 1], i)
            return cache

        unregister(cu.DynamicCache)
        try:
            pytree.register_pytree_node(
                cu.DynamicCache,
                flatten,
                unflatten,
                serialized_type_name="test.DynamicCache",
                flatten_with_keys_fn=flatten_with_keys,
            )
            model = self._model()
            kwargs = _inputs(2, 3, 5)
            del kwargs["position_ids"]
            ds = {k: v for k, v in DS.items() if k in kwargs}
            with torch_export_patches(patch_transformers=True):
                onx = torch.onnx.export(
                    model, (), kwargs=kwargs, dynamic_shapes=ds, dynamo=True, verbose=False
                )
            self.assertIsNotNone(onx.model_proto)
            # The user's registration was kept.
            self.assertIs(pytree.SUPPORTED_NODES[cu.DynamicCache].unflatten_fn, unflatten)
        finally:
            unregister(cu.DynamicCache)
            register_cache_serialization()


if __name__ == "__main__":
    unittest.main(verbosity=2)
