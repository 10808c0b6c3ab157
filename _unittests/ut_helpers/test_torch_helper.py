import collections
import os
import tempfile
import unittest

import numpy as np
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from onnx_diagnostic.cache_helpers import (
    get_cache_kv,
    get_cache_layer_types,
    make_dynamic_cache,
    make_encoder_decoder_cache,
    make_sliding_window_cache,
    make_static_cache,
)
from onnx_diagnostic.ext_test_case import (
    requires_cache_classes,
    ExtTestCase,
    has_onnxruntime,
    hide_stdout,
    ignore_warnings,
)
from onnx_diagnostic.helpers import max_diff, string_type
from onnx_diagnostic.helpers.torch_helper import (
    dummy_llm,
    get_weight_type,
    to_any,
    torch_deepcopy,
)
from onnx_diagnostic.helpers.compat import output_cache_field

#: the cache field of model outputs as the installed transformers names it
OUT = output_cache_field()


def _pair(*shape):
    return torch.rand(shape), torch.rand(shape)


class TestToAny(ExtTestCase):
    def test_dtype_casts_only_floating_tensors(self):
        inputs = dict(
            input_ids=torch.zeros((2, 3), dtype=torch.int64),
            mask=torch.ones((2, 3), dtype=torch.bool),
            x=torch.rand(2, 3),
        )
        res = to_any(inputs, torch.float16)
        self.assertEqual(string_type(res), "dict(input_ids:T7r2,mask:T9r2,x:T10r2)")
        self.assertIs(res["input_ids"], inputs["input_ids"])
        self.assertEqual(inputs["x"].dtype, torch.float32)
        self.assertEqualArray(res["x"], inputs["x"].to(torch.float16))

    def test_returns_new_containers(self):
        inputs = [dict(a=torch.zeros(1)), (torch.zeros(1),)]
        res = to_any(inputs, torch.float64)
        self.assertIsNot(res, inputs)
        self.assertIsNot(res[0], inputs[0])
        self.assertEqual(string_type(res), "#2[dict(a:T11r1),(T11r1,)]")
        self.assertEqual(string_type(inputs), "#2[dict(a:T1r1),(T1r1,)]")

    def test_dtype_as_string_and_device(self):
        self.assertEqual(to_any(torch.zeros(1), "bfloat16").dtype, torch.bfloat16)
        self.assertEqual(to_any(torch.zeros(1), "torch.float16").dtype, torch.float16)
        res = to_any([torch.zeros(1)], "cpu")
        self.assertEqual(res[0].device, torch.device("cpu"))
        res = to_any([torch.zeros(1)], torch.device("meta"))
        self.assertEqual(res[0].device.type, "meta")

    def test_leaves_untouched(self):
        a = np.zeros(2)
        res = to_any((1, "s", None, a, 0.5), torch.float16)
        self.assertEqual(res[:3], (1, "s", None))
        self.assertIs(res[3], a)

    def test_namedtuple_and_sets(self):
        Point = collections.namedtuple("Point", ["x", "y"])
        res = to_any(Point(torch.zeros(1), 2), torch.float16)
        self.assertIsInstance(res, Point)
        self.assertEqual(res.x.dtype, torch.float16)
        self.assertEqual(to_any({1, 2}, torch.float16), {1, 2})

    def test_dynamic_cache(self):
        cache = make_dynamic_cache([_pair(1, 2, 3, 4), _pair(1, 2, 3, 4)])
        res = to_any(cache, torch.float16)
        self.assertIs(type(res), type(cache))
        self.assertEqual(
            string_type(res, with_shape=True),
            "DynamicCache(key_cache=#2[T10s1x2x3x4,T10s1x2x3x4], "
            "value_cache=#2[T10s1x2x3x4,T10s1x2x3x4])",
        )
        self.assertEqual(
            string_type(cache), string_type(make_dynamic_cache([_pair(1, 2, 3, 4)] * 2))
        )
        k, v = get_cache_kv(cache)
        k2, v2 = get_cache_kv(res)
        self.assertEqualArray(k[1].to(torch.float16), k2[1])
        self.assertEqualArray(v[0].to(torch.float16), v2[0])

    def test_empty_dynamic_cache(self):
        res = to_any(make_dynamic_cache([]), torch.float16)
        self.assertEqual(string_type(res), "DynamicCache(key_cache=#0[], value_cache=#0[])")

    def test_sliding_window_cache_keeps_layer_types(self):
        t = _pair(1, 2, 3, 4)
        cache = make_dynamic_cache(
            [t, t], layer_types=["sliding_attention", "full_attention"], sliding_window=5
        )
        res = to_any(cache, torch.float64)
        self.assertEqual(get_cache_layer_types(res), ["sliding_attention", "full_attention"])
        self.assertEqual(res.layers[0].sliding_window, 5)
        self.assertEqual(res.layers[0].keys.dtype, torch.float64)
        res = to_any(make_sliding_window_cache([t], 8), torch.float16)
        self.assertEqual(get_cache_layer_types(res), ["sliding_attention"])

    def test_encoder_decoder_cache(self):
        cache = make_encoder_decoder_cache(
            make_dynamic_cache([_pair(1, 2, 3, 4)]), make_dynamic_cache([_pair(1, 2, 5, 4)])
        )
        res = to_any(cache, torch.bfloat16)
        self.assertEqual(
            string_type(res, with_shape=True),
            "EncoderDecoderCache(self_attention_cache=DynamicCache(key_cache=#1[T16s1x2x3x4], "
            "value_cache=#1[T16s1x2x3x4]), cross_attention_cache=DynamicCache("
            "key_cache=#1[T16s1x2x5x4], value_cache=#1[T16s1x2x5x4]))",
        )
        self.assertEqual(
            string_type(cache.self_attention_cache),
            "DynamicCache(key_cache=#1[T1r4], value_cache=#1[T1r4])",
        )

    def test_static_cache(self):
        cache = make_static_cache([_pair(1, 2, 3, 4)], 6)
        res = to_any(cache, torch.float16)
        self.assertIs(type(res), type(cache))
        self.assertIsNot(res.layers[0], cache.layers[0])
        self.assertEqual(
            string_type(res, with_shape=True),
            "StaticCache(key_cache=#1[T10s1x2x6x4], value_cache=#1[T10s1x2x6x4])",
        )
        self.assertEqual(res.layers[0].dtype, torch.float16)
        self.assertEqual(cache.layers[0].keys.dtype, torch.float32)
        self.assertEqual(cache.layers[0].dtype, torch.float32)

    def test_model_output(self):
        out = CausalLMOutputWithPast(
            logits=torch.rand(2, 3), **{OUT: make_dynamic_cache([_pair(1, 2, 3, 4)])}
        )
        res = to_any(out, torch.float16)
        self.assertIs(type(res), CausalLMOutputWithPast)
        self.assertEqual(
            string_type(res),
            f"CausalLMOutputWithPast(logits:T10r2,{OUT}:"
            "DynamicCache(key_cache=#1[T10r4], value_cache=#1[T10r4]))",
        )

    def test_module_is_moved(self):
        model = torch.nn.Linear(2, 2)
        res = to_any(model, torch.float16)
        self.assertIs(res, model)
        self.assertEqual(model.weight.dtype, torch.float16)

    def test_bad_target(self):
        with self.assertRaises(TypeError) as cm:
            to_any(torch.zeros(1), 3)
        self.assertIn("dtype_or_device", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            to_any(torch.zeros(1), "not-a-device")
        self.assertIn("dtype_or_device='not-a-device'", str(cm.exception))


class TestTorchDeepcopy(ExtTestCase):
    def test_nested(self):
        obj = dict(a=[torch.rand(2), (torch.rand(3), 5, "s", None)], b=np.zeros(2))
        res = torch_deepcopy(obj)
        self.assertEqualAny(obj, res)
        self.assertIsNot(res["a"][0], obj["a"][0])
        self.assertIsNot(res["b"], obj["b"])
        res["a"][0][0] = 100
        self.assertNotEqual(float(obj["a"][0][0]), 100)

    def test_cache_copy_is_independent(self):
        cache = make_dynamic_cache([_pair(1, 2, 3, 4), _pair(1, 2, 3, 4)])
        keep = get_cache_kv(cache)[0][0].clone()
        res = torch_deepcopy(cache)
        self.assertEqualAny(cache, res)
        get_cache_kv(res)[0][0].add_(1)
        res.update(torch.rand(1, 2, 1, 4), torch.rand(1, 2, 1, 4), 0)
        self.assertEqualArray(get_cache_kv(cache)[0][0], keep)
        self.assertEqual(
            string_type(cache, with_shape=True),
            "DynamicCache(key_cache=#2[T1s1x2x3x4,T1s1x2x3x4], "
            "value_cache=#2[T1s1x2x3x4,T1s1x2x3x4])",
        )

    def test_encoder_decoder_and_static_caches(self):
        ed = make_encoder_decoder_cache(
            make_dynamic_cache([_pair(1, 2, 3, 4)]), make_dynamic_cache([_pair(1, 2, 5, 4)])
        )
        self.assertEqualAny(ed, torch_deepcopy(ed))
        st = make_static_cache([_pair(1, 2, 3, 4)], 6)
        res = torch_deepcopy(st)
        self.assertEqualAny(st, res)
        self.assertIsNot(res.layers[0].keys, st.layers[0].keys)

    def test_model_output(self):
        out = CausalLMOutputWithPast(
            logits=torch.rand(2, 3), **{OUT: make_dynamic_cache([_pair(1, 2, 3, 4)])}
        )
        res = torch_deepcopy(out)
        self.assertEqualAny(out, res)
        self.assertIsNot(res.logits, out.logits)

    def test_tensor_with_graph(self):
        x = torch.rand(2, requires_grad=True)
        y = x * 2  # not a leaf: copy.deepcopy refuses it
        res = torch_deepcopy([y])
        self.assertTrue(res[0].requires_grad)
        self.assertEqualArray(res[0].detach(), y.detach())

    def test_other_objects_are_deep_copied(self):
        class Holder:
            def __init__(self):
                self.values = [1, 2]

        h = Holder()
        res = torch_deepcopy([h])
        self.assertIsNot(res[0], h)
        self.assertIsNot(res[0].values, h.values)
        self.assertEqual(res[0].values, [1, 2])


class TestGetWeightType(ExtTestCase):
    def test_float16(self):
        self.assertEqual(get_weight_type(torch.nn.Linear(4, 4).to(torch.float16)), torch.float16)

    def test_dominant_type(self):
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(20, 20))
        model[0].to(torch.float64)
        self.assertEqual(get_weight_type(model), torch.float32)
        model[1].to(torch.bfloat16)
        self.assertEqual(get_weight_type(model), torch.bfloat16)

    def test_buffers_only(self):
        model = torch.nn.Module()
        model.register_buffer("b", torch.zeros(3, dtype=torch.float16))
        self.assertEqual(get_weight_type(model), torch.float16)

    def test_no_floating_weight(self):
        with self.assertRaises(ValueError) as cm:
            get_weight_type(torch.nn.ReLU())
        self.assertIn("ReLU", str(cm.exception))

    def test_not_a_module(self):
        with self.assertRaises(TypeError) as cm:
            get_weight_type(torch.zeros(2))
        self.assertIn("model must be a torch.nn.Module", str(cm.exception))


class TestDummyLLM(ExtTestCase):
    def test_submodules_as_seed_002(self):
        model, inputs = dummy_llm()
        prefix = "onnx_diagnostic.helpers.torch_helper.dummy_llm.<locals>."
        expected = [
            ("", prefix + "LLM"),
            ("embedding", prefix + "Embedding"),
            ("embedding.embedding", "torch.nn.modules.sparse.Embedding"),
            ("embedding.pe", "torch.nn.modules.sparse.Embedding"),
            ("decoder", prefix + "DecoderLayer"),
            ("decoder.attention", prefix + "MultiAttentionBlock"),
            ("decoder.attention.attention", "torch.nn.modules.container.ModuleList"),
            ("decoder.attention.attention.0", prefix + "AttentionBlock"),
            ("decoder.attention.attention.0.query", "torch.nn.modules.linear.Linear"),
            ("decoder.attention.attention.0.key", "torch.nn.modules.linear.Linear"),
            ("decoder.attention.attention.0.value", "torch.nn.modules.linear.Linear"),
            ("decoder.attention.attention.1", prefix + "AttentionBlock"),
            ("decoder.attention.attention.1.query", "torch.nn.modules.linear.Linear"),
            ("decoder.attention.attention.1.key", "torch.nn.modules.linear.Linear"),
            ("decoder.attention.attention.1.value", "torch.nn.modules.linear.Linear"),
            ("decoder.attention.linear", "torch.nn.modules.linear.Linear"),
            ("decoder.feed_forward", prefix + "FeedForward"),
            ("decoder.feed_forward.linear_1", "torch.nn.modules.linear.Linear"),
            ("decoder.feed_forward.relu", "torch.nn.modules.activation.ReLU"),
            ("decoder.feed_forward.linear_2", "torch.nn.modules.linear.Linear"),
            ("decoder.norm_1", "torch.nn.modules.normalization.LayerNorm"),
            ("decoder.norm_2", "torch.nn.modules.normalization.LayerNorm"),
        ]
        got = [
            (name, f"{type(m).__module__}.{type(m).__qualname__}")
            for name, m in model.named_modules()
        ]
        self.assertEqual(got, expected)
        self.assertEqual(
            str(type(model)),
            "<class 'onnx_diagnostic.helpers.torch_helper.dummy_llm.<locals>.LLM'>",
        )

    def test_inputs_and_dynamic_shapes(self):
        model, inputs, ds = dummy_llm(dynamic_shapes=True)
        self.assertEqual(string_type(inputs, with_shape=True), "(T7s2x30,)")
        self.assertEqual(
            string_type(ds, with_shape=True), "dict(input_ids:{0:Dim(batch),1:Dim(length)})"
        )
        self.assertLess(int(inputs[0].max()), 1024)
        self.assertGreaterEqual(int(inputs[0].min()), 0)
        self.assertEqual(model.embedding.embedding.num_embeddings, 1024)
        self.assertEqual(len(dummy_llm()), 2)

    def test_forward(self):
        model, inputs = dummy_llm()
        with torch.no_grad():
            out = model(*inputs)
        self.assertEqual(string_type(out, with_shape=True), "T1s2x30x16")
        self.assertFalse(torch.isnan(out).any())
        # causal: the first positions do not depend on the last tokens
        other = inputs[0].clone()
        other[:, -1] = (other[:, -1] + 1) % 1024
        with torch.no_grad():
            out2 = model(other)
        self.assertEqualArray(out[:, :-1], out2[:, :-1], atol=1e-6)
        self.assertGreater(float((out[:, -1] - out2[:, -1]).abs().max()), 0)

    def test_torch_export_dynamic(self):
        model, inputs, ds = dummy_llm(dynamic_shapes=True)
        ep = torch.export.export(model, inputs, dynamic_shapes=ds)
        x = torch.randint(0, 1024, (3, 7))
        self.assertEqualArray(model(x), ep.module()(x), atol=1e-5)

    @unittest.skipIf(not has_onnxruntime("1.18"), "onnxruntime is needed")
    @ignore_warnings((UserWarning, FutureWarning, DeprecationWarning))
    @hide_stdout()
    def test_onnx_export_dynamo_and_onnxruntime(self):
        import onnxruntime

        model, inputs, ds = dummy_llm(dynamic_shapes=True)
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "dummy_llm.onnx")
            epo = torch.onnx.export(model, inputs, dynamic_shapes=ds, dynamo=True)
            epo.save(name)
            self.assertExists(name)
            sess = onnxruntime.InferenceSession(name, providers=["CPUExecutionProvider"])
        self.assertEqual([i.name for i in sess.get_inputs()], ["input_ids"])
        for shape in [(2, 30), (3, 7), (1, 1)]:
            x = torch.randint(0, 1024, shape)
            got = sess.run(None, {"input_ids": x.numpy()})
            diff = max_diff(model(x), got)
            self.assertNotIn("error", diff)
            self.assertLess(diff["abs"], 1e-4)


class TestDocstrings(ExtTestCase):
    def test_examples_in_docstrings_run(self):
        from onnx_diagnostic.helpers import torch_helper as module_under_test

        self.assertDocstringExamples(module_under_test)


# Caches holding the layer classes of transformers 5.23+ (DynamicIndexedLayer,
# LinearAttention*Layer, DummyLayer), built through their public API as the models do
# (see test_serialization.py).


def _seeded(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _layer_of(kind, seed=0):
    """A filled layer: full, indexed (with positions), linear, conv, hybrid, hybrid_sliding."""
    from onnx_diagnostic.helpers import compat

    names = {
        "full": "DynamicLayer",
        "indexed": "DynamicIndexedLayer",
        "linear": "LinearAttentionLayer",
        "conv": "LinearAttentionLayer",
        "hybrid": "LinearAttentionAndFullAttentionLayer",
        "hybrid_sliding": "LinearAttentionAndSlidingWindowAttentionLayer",
        "dummy": "DummyLayer",
    }
    cls = compat.cache_class(names[kind])
    layer = cls(sliding_window=8, number_of_states=2) if kind == "hybrid_sliding" else cls()
    if kind in ("full", "indexed", "hybrid", "hybrid_sliding"):
        layer.update(_seeded(2, 4, 3, 8, seed=seed), _seeded(2, 4, 3, 8, seed=seed + 1))
    if kind == "indexed":
        layer.update_indexer(_seeded(2, 3, 6, seed=seed + 2))
        layer.indexer_position_ids = torch.arange(3).expand(3, 2, 3).clone()
    if kind in ("linear", "conv", "hybrid", "hybrid_sliding"):
        for s in range(layer.number_of_states):
            layer.update_conv_state(_seeded(2, 12, 4, seed=seed + 3 + s), state_idx=s)
            if kind != "conv":
                layer.update_recurrent_state(_seeded(2, 2, 4, 4, seed=seed + 5 + s), state_idx=s)
    return layer


def _dynamic_cache_of(layers, cls=None):
    from onnx_diagnostic.helpers import compat

    cache = (cls or compat.cache_class("DynamicCache"))()
    cache.layers = list(layers)
    return cache


#: kind -> (layer classes it needs, the layers of the cache)
_NEW_LAYER_CACHES = {
    "linear": (("LinearAttentionLayer",), ["linear", "full", "linear"]),  # qwen3_next
    "conv": (("LinearAttentionLayer",), ["conv", "full"]),  # lfm2
    "indexed": (("DynamicIndexedLayer",), ["indexed", "indexed"]),  # glm_moe_dsa, qwen4_exp
    "hybrid": (("LinearAttentionAndFullAttentionLayer",), ["hybrid", "linear"]),  # zamba2
    "hybrid_sliding": (
        ("LinearAttentionAndSlidingWindowAttentionLayer",),
        ["hybrid_sliding", "full"],
    ),  # inkling
    "dummy": (("DummyLayer", "LinearAttentionLayer"), ["linear", "dummy", "full", "dummy"]),
}


def _new_layer_cache(kind, seed=0):
    return _dynamic_cache_of(
        _layer_of(k, seed=seed + 10 * i) for i, k in enumerate(_NEW_LAYER_CACHES[kind][1])
    )


def _available_kinds():
    from onnx_diagnostic.helpers import compat

    return [
        kind
        for kind, (needed, _) in _NEW_LAYER_CACHES.items()
        if all(compat.cache_class(n) is not None for n in needed)
    ]


class TestNewLayerClassesDeepcopyAndToAny(ExtTestCase):
    def _leaves(self, cache):
        return torch.utils._pytree.tree_leaves(cache)

    @requires_cache_classes("LinearAttentionLayer")
    def test_deepcopy_keeps_every_layer_and_state(self):
        for kind in _available_kinds():
            with self.subTest(kind=kind):
                cache = _new_layer_cache(kind)
                res = torch_deepcopy(cache)
                self.assertIs(type(res), type(cache))
                self.assertEqual([type(la) for la in res.layers], [type(la) for la in cache.layers])
                self.assertEqualAny(cache, res)
                leaves, copies = self._leaves(cache), self._leaves(res)
                self.assertEqual(len(leaves), len(copies))
                for a, b in zip(leaves, copies):
                    self.assertIsNot(a, b)
                    self.assertEqualArray(a, b)

    @requires_cache_classes("LinearAttentionLayer")
    def test_deepcopy_of_a_qwen3_next_cache_is_independent(self):
        cache = _new_layer_cache("linear")
        keep = cache.layers[0].conv_states[0].clone()
        res = torch_deepcopy(cache)
        res.layers[0].conv_states[0].add_(1)
        res.update_conv_state(torch.zeros_like(keep), 2)
        self.assertEqualArray(cache.layers[0].conv_states[0], keep)
        self.assertIsNot(res.layers[0].conv_states, cache.layers[0].conv_states)
        self.assertTrue(res.has_previous_state(0))
        self.assertIsNotNone(res.get_recurrent_state(0))

    @requires_cache_classes("LinearAttentionAndSlidingWindowAttentionLayer")
    def test_deepcopy_keeps_the_window_and_the_number_of_states(self):
        cache = _new_layer_cache("hybrid_sliding")
        res = torch_deepcopy(cache)
        self.assertEqual(res.layers[0].sliding_window, 8)
        self.assertEqual(res.layers[0].number_of_states, 2)
        self.assertIsNot(res.layers[0].conv_states, cache.layers[0].conv_states)

    @requires_cache_classes("LinearAttentionLayer")
    def test_to_any_converts_every_floating_state(self):
        for kind in _available_kinds():
            with self.subTest(kind=kind):
                cache = _new_layer_cache(kind)
                res = to_any(cache, torch.float16)
                self.assertEqual([type(la) for la in res.layers], [type(la) for la in cache.layers])
                leaves, converted = self._leaves(cache), self._leaves(res)
                self.assertEqual(len(leaves), len(converted))
                for a, b in zip(leaves, converted):
                    expected = torch.float16 if a.is_floating_point() else a.dtype
                    self.assertEqual(b.dtype, expected)
                    self.assertEqualArray(a.to(expected), b)
                # the given cache is left unchanged
                self.assertEqual(
                    [t.dtype for t in self._leaves(cache)],
                    [t.dtype for t in self._leaves(_new_layer_cache(kind))],
                )

    @requires_cache_classes("DynamicIndexedLayer")
    def test_to_any_keeps_integer_indexer_positions(self):
        res = to_any(_new_layer_cache("indexed"), torch.bfloat16)
        self.assertEqual(res.layers[0].indexer_position_ids.dtype, torch.int64)
        self.assertEqual(res.layers[0].indexer_keys.dtype, torch.bfloat16)
        self.assertEqual(res.layers[0].keys.dtype, torch.bfloat16)

    @requires_cache_classes("LinearAttentionLayer")
    def test_layers_never_updated_keep_their_place(self):
        from onnx_diagnostic.helpers import compat

        linear_cls = compat.cache_class("LinearAttentionLayer")
        cache = _dynamic_cache_of(
            [_layer_of("full"), linear_cls(), compat.cache_class("DynamicLayer")()]
        )
        cache.layer_class_to_replicate = None  # as DynamicCache(config=...) does
        res = torch_deepcopy(cache)
        self.assertEqual([type(la) for la in res.layers], [type(la) for la in cache.layers])
        self.assertEqual([la.is_initialized for la in res.layers[::2]], [True, False])
        self.assertIsNone(res.layer_class_to_replicate)
        self.assertIsNot(res.layers[1], cache.layers[1])
        self.assertEqualAny(cache, res)

    @requires_cache_classes("DummyLayer", "LinearAttentionLayer")
    def test_dummy_layers_keep_their_place(self):
        cache = _new_layer_cache("dummy")
        res = to_any(cache, torch.float64)
        self.assertEqual(
            [type(la).__name__ for la in res.layers],
            ["LinearAttentionLayer", "DummyLayer", "DynamicLayer", "DummyLayer"],
        )
        self.assertEqual(res.layers[2].keys.dtype, torch.float64)

    def test_attributes_of_a_cache_subclass_are_carried(self):
        from onnx_diagnostic.helpers import compat

        class MyCache(compat.cache_class("DynamicCache")):
            """Keeps more state, as MiniMaxCache (linear_cache) or DFlashCache (an int)."""

        cache = make_dynamic_cache([_pair(1, 2, 3, 4)])
        cache.__class__ = MyCache
        cache.extra = [torch.rand(2, 3), 5]
        res = to_any(cache, torch.float16)
        self.assertIs(type(res), MyCache)
        self.assertEqual(res.extra[0].dtype, torch.float16)
        self.assertEqual(res.extra[1], 5)
        self.assertEqual(res.layers[0].keys.dtype, torch.float16)
        copied = torch_deepcopy(cache)
        self.assertIsNot(copied.extra, cache.extra)
        self.assertIsNot(copied.extra[0], cache.extra[0])
        self.assertEqualArray(copied.extra[0], cache.extra[0])

    def test_unknown_layer_class_raises_the_serialization_error(self):
        from onnx_diagnostic.helpers import compat
        from onnx_diagnostic.torch_export_patches.serialization import CacheSerializationError

        class MyLayer(compat.cache_class("DynamicLayer")):
            pass

        unknown = MyLayer()
        unknown.update(*_pair(1, 2, 3, 4))
        cache = _dynamic_cache_of([_layer_of("full"), unknown])
        for fct in (torch_deepcopy, lambda c: to_any(c, torch.float16)):
            with self.assertRaises(CacheSerializationError) as cm:
                fct(dict(cache=cache))
            self.assertEqual(cm.exception.layer_index, 1)
            self.assertIs(cm.exception.layer_class, MyLayer)
            self.assertIn("DynamicCache.layers[1]", str(cm.exception))

    def test_sliding_layers_keep_their_own_window(self):
        from onnx_diagnostic.helpers import compat

        t = _pair(1, 2, 3, 4)
        if compat.cache_class("DynamicSlidingWindowLayer") is None:
            self.skipTest("the installed transformers has no DynamicSlidingWindowLayer")
        sliding = make_sliding_window_cache([t], 4)
        cache = _dynamic_cache_of([sliding.layers[0], make_dynamic_cache([t]).layers[0]])
        cache.layers.append(make_sliding_window_cache([t], 8).layers[0])
        res = torch_deepcopy(cache)
        self.assertEqual([la.sliding_window for la in res.layers[::2]], [4, 8])
        self.assertEqualAny(cache, res)


class TestNestedStructureErrors(ExtTestCase):
    """to_any and torch_deepcopy name the place of what they cannot process."""

    def test_structure_containing_itself(self):
        cyclic = [torch.ones(1), {"a": None}]
        cyclic[1]["a"] = cyclic
        for f in (torch_deepcopy, lambda o: to_any(o, torch.float16)):
            with self.assertRaises(ValueError) as cm:
                f(cyclic)
            self.assertIn("obj[1]['a']: the structure contains itself", str(cm.exception))
        # one object twice is not a cycle
        shared = torch.ones(1)
        copied = torch_deepcopy([shared, [shared]])
        self.assertEqual(copied[1][0].tolist(), [1.0])

    def test_object_that_cannot_be_copied(self):
        with self.assertRaises(TypeError) as cm:
            torch_deepcopy({"ok": torch.ones(1), "gen": [(i for i in range(2))]})
        msg = str(cm.exception)
        self.assertIn("obj['gen'][0]: cannot process an object of type generator", msg)
        self.assertIn("pickle", msg)

    def test_bad_dtype_or_device_lists_valid_values(self):
        with self.assertRaises(ValueError) as cm:
            to_any(torch.ones(1), "float17")
        msg = str(cm.exception)
        self.assertIn("dtype_or_device='float17' is neither a dtype nor a device", msg)
        self.assertIn("bfloat16", msg)
        self.assertIn("cuda:1", msg)


class TestOnnxDiagnosticTorchHelperNames(ExtTestCase):
    """to_numpy, is_torchdynamo_exporting, dummy_llm(cls_name)"""

    def test_to_numpy(self):
        from onnx_diagnostic.helpers.torch_helper import to_numpy

        a = to_numpy(torch.arange(6, dtype=torch.float32).reshape((2, 3)))
        self.assertIsInstance(a, np.ndarray)
        self.assertEqual(a.shape, (2, 3))
        self.assertEqual(a.dtype, np.float32)
        self.assertEqual(to_numpy(torch.zeros((0, 3))).shape, (0, 3))
        x = torch.tensor([1.5, -2.0, 3.25], requires_grad=True)
        self.assertEqualArray(to_numpy(x), np.array([1.5, -2.0, 3.25], dtype=np.float32))
        arr = np.ones(2)
        self.assertIs(to_numpy(arr), arr)

    def test_to_numpy_bfloat16_keeps_bits(self):
        import ml_dtypes

        from onnx_diagnostic.helpers.torch_helper import to_numpy

        t = torch.tensor([1.5, 2.0, -0.0078125], dtype=torch.bfloat16)
        a = to_numpy(t)
        self.assertEqual(a.dtype, np.dtype(ml_dtypes.bfloat16))
        self.assertEqual(a.view(np.int16).tolist(), t.view(torch.int16).tolist())

    def test_to_numpy_bad_input(self):
        from onnx_diagnostic.helpers.torch_helper import to_numpy

        self.assertRaise(lambda: to_numpy([1, 2]), TypeError, "tensor must be a torch.Tensor")

    def test_is_torchdynamo_exporting(self):
        from onnx_diagnostic.helpers.torch_helper import is_torchdynamo_exporting

        self.assertFalse(is_torchdynamo_exporting())
        seen = []

        class Model(torch.nn.Module):
            def forward(self, x):
                seen.append(is_torchdynamo_exporting())
                return x + 1

        torch.export.export(Model(), (torch.ones(2),))
        self.assertIn(True, seen)
        self.assertFalse(is_torchdynamo_exporting())

    def test_dummy_llm_every_class(self):
        for name in [None, "LLM", "Embedding", "DecoderLayer", "MultiAttentionBlock"]:
            for cls in ["AttentionBlock", "FeedForward"] if name is None else [name]:
                with self.subTest(cls=cls):
                    model, inputs, ds = dummy_llm(cls, dynamic_shapes=True)
                    self.assertEqual(type(model).__name__, cls or "LLM")
                    self.assertEqual(model(*inputs).shape, (2, 30, 16))
                    self.assertEqual(list(ds), ["input_ids" if cls == "LLM" else "x"])
                    ep = torch.export.export(model, inputs, dynamic_shapes=ds)
                    self.assertEqual(len(ep.graph_signature.user_inputs), 1)
        model, inputs = dummy_llm("DecoderLayer")
        self.assertEqual(string_type(inputs, with_shape=True), "(T1s2x30x16,)")
        model, inputs = dummy_llm(None)
        self.assertEqual(string_type(inputs, with_shape=True), "(T7s2x30,)")

    def test_dummy_llm_bad_cls_name(self):
        self.assertRaise(lambda: dummy_llm("Transformer"), ValueError, "unknown cls_name")
        self.assertRaise(lambda: dummy_llm(True), TypeError, "dummy_llm(dynamic_shapes=True)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
