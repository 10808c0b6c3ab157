"""Tests of :mod:`onnx_diagnostic.cache_helpers` (and its alias ``helpers.cache_helper``)."""

import unittest

import numpy as np
import torch

from onnx_diagnostic.cache_helpers import (
    CacheInputError,
    flatten_dynamic_cache,
    get_cache_kv,
    get_cache_layer_types,
    is_cache,
    make_dynamic_cache,
    make_encoder_decoder_cache,
    make_sliding_window_cache,
    make_static_cache,
)
from onnx_diagnostic.ext_test_case import ExtTestCase, requires_cache_classes
from onnx_diagnostic.helpers import compat

HAS_SLIDING_LAYER = compat.cache_class("DynamicSlidingWindowLayer") is not None
NO_SLIDING_REASON = "the installed transformers has no DynamicSlidingWindowLayer"


def _kv(batch=2, heads=4, seq=3, dim=7, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    key = torch.randn(batch, heads, seq, dim, generator=g).to(dtype)
    value = torch.randn(batch, heads, seq, dim, generator=g).to(dtype)
    return key, value


def _layer_class_names(cache):
    return [type(layer).__name__ for layer in cache.layers]


class TestMakeDynamicCache(ExtTestCase):
    def test_keeps_the_given_tensors_in_order(self):
        pairs = [_kv(seed=0), _kv(seed=1)]
        cache = make_dynamic_cache(pairs)
        self.assertEqual(type(cache).__name__, "DynamicCache")
        self.assertEqual(_layer_class_names(cache), ["DynamicLayer", "DynamicLayer"])
        keys, values = get_cache_kv(cache)
        self.assertEqual(len(keys), 2)
        self.assertEqual(len(values), 2)
        for i, (k, v) in enumerate(pairs):
            self.assertIs(keys[i], k)
            self.assertIs(values[i], v)
        self.assertEqual(cache.get_seq_length(), 3)
        self.assertEqual(get_cache_layer_types(cache), ["full_attention", "full_attention"])

    def test_accepts_lists_and_tuples_as_pairs(self):
        k0, v0 = _kv(seed=0)
        k1, v1 = _kv(seed=1)
        cache = make_dynamic_cache(((k0, v0), [k1, v1]))
        keys, values = get_cache_kv(cache)
        self.assertIs(keys[1], k1)
        self.assertIs(values[1], v1)

    def test_empty_list_gives_an_empty_cache(self):
        for empty in ([], ()):
            with self.subTest(empty=type(empty).__name__):
                cache = make_dynamic_cache(empty)
                self.assertEqual(type(cache).__name__, "DynamicCache")
                self.assertEqual(len(cache.layers), 0)
                self.assertEqual(get_cache_kv(cache), ([], []))
                self.assertEqual(get_cache_layer_types(cache), [])
                self.assertEqual(cache.get_seq_length(), 0)
                self.assertTrue(is_cache(cache))

    def test_empty_cache_is_usable_by_a_model(self):
        # A model fills an empty cache on its first call.
        cache = make_dynamic_cache([])
        k, v = _kv(seq=2)
        keys, values = cache.update(k, v, 0)
        self.assertEqualArray(k, keys)
        self.assertEqualArray(v, values)
        self.assertEqual(cache.get_seq_length(), 2)

    def test_more_layers_than_given_are_appended(self):
        cache = make_dynamic_cache([_kv(seed=0)])
        k, v = _kv(seq=1, seed=2)
        cache.update(k, v, 1)
        self.assertEqual(len(cache.layers), 2)
        self.assertEqual(type(cache.layers[1]).__name__, "DynamicLayer")
        self.assertEqualArray(k, get_cache_kv(cache)[0][1])

    def test_zero_length_sequence(self):
        k, v = _kv(seq=0)
        cache = make_dynamic_cache([(k, v)])
        keys, values = get_cache_kv(cache)
        self.assertEqual(tuple(keys[0].shape), (2, 4, 0, 7))
        self.assertEqual(tuple(values[0].shape), (2, 4, 0, 7))
        self.assertEqual(cache.get_seq_length(), 0)
        # the first update concatenates the new tokens after the 0 positions
        nk, nv = _kv(seq=2, seed=3)
        keys, _ = cache.update(nk, nv, 0)
        self.assertEqualArray(nk, keys)

    def test_low_precision_dtypes_are_kept(self):
        for dtype in (torch.bfloat16, torch.float16):
            with self.subTest(dtype=dtype):
                pairs = [_kv(dtype=dtype, seed=0), _kv(dtype=dtype, seed=1)]
                cache = make_dynamic_cache(pairs)
                keys, values = get_cache_kv(cache)
                for t in keys + values:
                    self.assertEqual(t.dtype, dtype)
                for layer in cache.layers:
                    self.assertEqual(layer.dtype, dtype)
                self.assertEqualArray(pairs[1][0], keys[1])

    def test_key_and_value_head_dims_may_differ(self):
        # Some attention types (MLA) store values with another head dimension.
        k = torch.randn(1, 2, 3, 8)
        v = torch.randn(1, 2, 3, 4)
        keys, values = get_cache_kv(make_dynamic_cache([(k, v)]))
        self.assertIs(keys[0], k)
        self.assertIs(values[0], v)

    @unittest.skipIf(not HAS_SLIDING_LAYER, NO_SLIDING_REASON)
    def test_sliding_layers(self):
        pairs = [_kv(seed=0), _kv(seed=1)]
        cache = make_dynamic_cache(
            pairs, layer_types=["sliding_attention", "sliding_attention"], sliding_window=5
        )
        self.assertEqual(
            _layer_class_names(cache), ["DynamicSlidingWindowLayer", "DynamicSlidingWindowLayer"]
        )
        self.assertEqual([layer.sliding_window for layer in cache.layers], [5, 5])
        self.assertEqual(get_cache_layer_types(cache), ["sliding_attention", "sliding_attention"])
        keys, values = get_cache_kv(cache)
        self.assertIs(keys[0], pairs[0][0])
        self.assertIs(values[1], pairs[1][1])

    @unittest.skipIf(not HAS_SLIDING_LAYER, NO_SLIDING_REASON)
    def test_sliding_layer_keeps_a_sequence_longer_than_the_window(self):
        k, v = _kv(seq=10)
        cache = make_dynamic_cache([(k, v)], layer_types=["sliding_attention"], sliding_window=4)
        keys, values = get_cache_kv(cache)
        self.assertIs(keys[0], k)
        self.assertIs(values[0], v)
        self.assertEqual(cache.get_seq_length(), 10)

    @unittest.skipIf(not HAS_SLIDING_LAYER, NO_SLIDING_REASON)
    def test_mixed_layers(self):
        pairs = [_kv(seed=i) for i in range(3)]
        types = ["sliding_attention", "full_attention", "sliding_attention"]
        cache = make_dynamic_cache(pairs, layer_types=types, sliding_window=2)
        self.assertEqual(
            _layer_class_names(cache),
            ["DynamicSlidingWindowLayer", "DynamicLayer", "DynamicSlidingWindowLayer"],
        )
        self.assertEqual(get_cache_layer_types(cache), types)
        self.assertEqual(cache.layers[0].sliding_window, 2)
        self.assertEqual(cache.layers[2].sliding_window, 2)
        keys, _ = get_cache_kv(cache)
        for i in range(3):
            self.assertIs(keys[i], pairs[i][0])

    def test_full_attention_ignores_sliding_window(self):
        cache = make_dynamic_cache([_kv()], layer_types=["full_attention"], sliding_window=3)
        self.assertEqual(_layer_class_names(cache), ["DynamicLayer"])

    def test_input_list_is_not_mutated(self):
        pairs = [_kv(seed=0), _kv(seed=1)]
        snapshot = [(k, v) for k, v in pairs]
        copies = [(k.clone(), v.clone()) for k, v in pairs]
        cache = make_dynamic_cache(pairs)
        nk, nv = _kv(seq=1, seed=5)
        cache.update(nk, nv, 0)
        self.assertEqual(len(pairs), 2)
        for (k, v), (sk, sv), (ck, cv) in zip(pairs, snapshot, copies):
            self.assertIs(k, sk)
            self.assertIs(v, sv)
            self.assertEqualArray(ck, k)
            self.assertEqualArray(cv, v)
            self.assertEqual(tuple(k.shape), (2, 4, 3, 7))


class TestMakeDynamicCacheErrors(ExtTestCase):
    def test_not_a_list(self):
        k, v = _kv()
        for bad in (k, {"key": k, "value": v}, None, 3):
            with self.subTest(bad=type(bad).__name__):
                with self.assertRaises(CacheInputError) as cm:
                    make_dynamic_cache(bad)
                msg = str(cm.exception)
                self.assertIn("key_value_pairs", msg)
                self.assertIn(type(bad).__name__, msg)

    def test_string_is_rejected(self):
        with self.assertRaisesRegex(CacheInputError, r"key_value_pairs"):
            make_dynamic_cache("kv")

    def test_error_is_a_value_error(self):
        self.assertTrue(issubclass(CacheInputError, ValueError))
        with self.assertRaises(ValueError):
            make_dynamic_cache([(torch.zeros(1),)])

    def test_tuple_of_three_elements(self):
        k, v = _kv()
        with self.assertRaisesRegex(CacheInputError, r"key_value_pairs\[1\].*3 elements"):
            make_dynamic_cache([(k, v), (k, v, v)])

    def test_pair_of_one_element(self):
        k, _ = _kv()
        with self.assertRaisesRegex(CacheInputError, r"key_value_pairs\[0\].*1 elements"):
            make_dynamic_cache([(k,)])

    def test_pair_is_a_tensor(self):
        k, v = _kv()
        with self.assertRaisesRegex(CacheInputError, r"key_value_pairs\[1\].*Tensor"):
            make_dynamic_cache([(k, v), k])

    def test_non_tensor_value(self):
        k, v = _kv()
        with self.assertRaises(CacheInputError) as cm:
            make_dynamic_cache([(k, v), (k, v.numpy())])
        msg = str(cm.exception)
        self.assertIn("key_value_pairs[1]", msg)
        self.assertIn("value", msg)
        self.assertIn("ndarray", msg)

    def test_non_tensor_key(self):
        _, v = _kv()
        with self.assertRaisesRegex(CacheInputError, r"key_value_pairs\[0\] key.*list"):
            make_dynamic_cache([([1, 2], v)])

    def test_three_dimensional_tensor(self):
        k, v = _kv()
        with self.assertRaises(CacheInputError) as cm:
            make_dynamic_cache([(k, v), (k[0], v[0])])
        msg = str(cm.exception)
        self.assertIn("key_value_pairs[1]", msg)
        self.assertIn("4 dimensions", msg)
        self.assertIn("(4, 3, 7)", msg)

    def test_zero_dimensional_tensor(self):
        with self.assertRaisesRegex(CacheInputError, r"key_value_pairs\[0\] key.*\(\)"):
            make_dynamic_cache([(torch.tensor(1.0), torch.tensor(2.0))])

    def test_key_value_shape_mismatch(self):
        k, v = _kv()
        with self.assertRaises(CacheInputError) as cm:
            make_dynamic_cache([(k, v), (k, v[:, :, :2])])
        msg = str(cm.exception)
        self.assertIn("key_value_pairs[1]", msg)
        self.assertIn("(2, 4, 3, 7)", msg)
        self.assertIn("(2, 4, 2, 7)", msg)

    def test_batch_mismatch_across_layers(self):
        k, v = _kv(batch=2)
        k3, v3 = _kv(batch=3)
        with self.assertRaises(CacheInputError) as cm:
            make_dynamic_cache([(k, v), (k, v), (k3, v3)])
        msg = str(cm.exception)
        self.assertIn("key_value_pairs[2]", msg)
        self.assertIn("key_value_pairs[0]", msg)
        self.assertIn("batch", msg)

    def test_dtype_mismatch(self):
        k, v = _kv()
        with self.assertRaises(CacheInputError) as cm:
            make_dynamic_cache([(k, v.to(torch.float16))])
        msg = str(cm.exception)
        self.assertIn("key_value_pairs[0]", msg)
        self.assertIn("torch.float32", msg)
        self.assertIn("torch.float16", msg)

    def test_unknown_layer_type(self):
        with self.assertRaises(CacheInputError) as cm:
            make_dynamic_cache([_kv(), _kv()], layer_types=["full_attention", "banana"])
        msg = str(cm.exception)
        self.assertIn("layer_types[1]", msg)
        self.assertIn("banana", msg)

    def test_layer_types_length_mismatch(self):
        with self.assertRaisesRegex(CacheInputError, r"layer_types has 1 .* has 2"):
            make_dynamic_cache([_kv(), _kv()], layer_types=["full_attention"])

    def test_sliding_without_window(self):
        for window in (None, 0, -3):
            with self.subTest(window=window):
                with self.assertRaises(CacheInputError) as cm:
                    make_dynamic_cache(
                        [_kv(), _kv()],
                        layer_types=["full_attention", "sliding_attention"],
                        sliding_window=window,
                    )
                msg = str(cm.exception)
                self.assertIn("layer_types[1]", msg)
                self.assertIn("sliding_window", msg)
                self.assertIn(repr(window), msg)

    def test_error_on_a_later_layer_builds_nothing(self):
        # The checks run before anything is built: the first pair is left as it is.
        k, v = _kv()
        pairs = [(k, v), (k, "not a tensor")]
        with self.assertRaises(CacheInputError):
            make_dynamic_cache(pairs)
        self.assertIs(pairs[0][0], k)
        self.assertEqual(len(pairs), 2)


@unittest.skipIf(not HAS_SLIDING_LAYER, NO_SLIDING_REASON)
class TestMakeSlidingWindowCache(ExtTestCase):
    def test_all_layers_are_sliding(self):
        pairs = [_kv(seed=0), _kv(seed=1)]
        cache = make_sliding_window_cache(pairs, 8)
        self.assertEqual(type(cache).__name__, "DynamicCache")
        self.assertEqual(
            _layer_class_names(cache), ["DynamicSlidingWindowLayer", "DynamicSlidingWindowLayer"]
        )
        self.assertEqual([layer.sliding_window for layer in cache.layers], [8, 8])
        self.assertEqual(get_cache_layer_types(cache), ["sliding_attention", "sliding_attention"])
        keys, values = get_cache_kv(cache)
        self.assertIs(keys[1], pairs[1][0])
        self.assertIs(values[0], pairs[0][1])

    def test_empty_list(self):
        cache = make_sliding_window_cache([], 4)
        self.assertEqual(len(cache.layers), 0)
        self.assertEqual(get_cache_kv(cache), ([], []))

    def test_bad_window(self):
        # None is valid since onnx-diagnostic's signature was adopted (window = key length)
        for window in (0, -1):
            with self.subTest(window=window):
                with self.assertRaisesRegex(CacheInputError, r"sliding_window must be a positive"):
                    make_sliding_window_cache([_kv()], window)

    def test_bad_pairs(self):
        with self.assertRaisesRegex(CacheInputError, r"key_value_pairs\[0\].*3 elements"):
            make_sliding_window_cache([(*_kv(), None)], 4)

    def test_update_keeps_the_window(self):
        cache = make_sliding_window_cache([_kv(seq=3)], 4)
        k, v = _kv(seq=2, seed=7)
        keys, _ = cache.update(k, v, 0)
        # the attention sees every token; the cache keeps at most the window
        self.assertEqual(keys.shape[2], 5)
        self.assertLessEqual(get_cache_kv(cache)[0][0].shape[2], 4)


class TestMakeEncoderDecoderCache(ExtTestCase):
    def test_self_and_cross_caches(self):
        self_cache = make_dynamic_cache([_kv(seq=3, seed=0), _kv(seq=3, seed=1)])
        cross_cache = make_dynamic_cache([_kv(seq=5, seed=2), _kv(seq=5, seed=3)])
        cache = make_encoder_decoder_cache(self_cache, cross_cache)
        self.assertEqual(type(cache).__name__, "EncoderDecoderCache")
        self.assertIs(cache.self_attention_cache, self_cache)
        self.assertIs(cache.cross_attention_cache, cross_cache)
        self.assertTrue(is_cache(cache))
        keys, values = get_cache_kv(cache)
        sk, sv = get_cache_kv(self_cache)
        ck, cv = get_cache_kv(cross_cache)
        self.assertEqual(len(keys), 4)
        for got, expected in zip(keys + values, sk + ck + sv + cv):
            self.assertIs(got, expected)
        self.assertEqual(cache.get_seq_length(), 3)

    def test_empty_caches(self):
        cache = make_encoder_decoder_cache(make_dynamic_cache([]), make_dynamic_cache([]))
        self.assertEqual(get_cache_kv(cache), ([], []))

    def test_self_cache_is_not_mutated(self):
        pairs = [_kv(seq=3, seed=0)]
        self_cache = make_dynamic_cache(pairs)
        cross_cache = make_dynamic_cache([_kv(seq=5, seed=2)])
        layers = list(self_cache.layers)
        make_encoder_decoder_cache(self_cache, cross_cache)
        self.assertEqual(len(self_cache.layers), 1)
        self.assertIs(self_cache.layers[0], layers[0])
        self.assertIs(get_cache_kv(self_cache)[0][0], pairs[0][0])
        self.assertEqual(get_cache_kv(cross_cache)[0][0].shape[2], 5)

    def test_not_a_cache(self):
        cache = make_dynamic_cache([_kv()])
        with self.assertRaises(CacheInputError) as cm:
            make_encoder_decoder_cache([_kv()], cache)
        self.assertIn("self_attention_cache", str(cm.exception))
        self.assertIn("list", str(cm.exception))
        with self.assertRaises(CacheInputError) as cm:
            make_encoder_decoder_cache(cache, None)
        self.assertIn("cross_attention_cache", str(cm.exception))
        self.assertIn("NoneType", str(cm.exception))


class TestMakeStaticCache(ExtTestCase):
    def test_pads_with_zeros(self):
        pairs = [_kv(seq=3, seed=0), _kv(seq=3, seed=1)]
        cache = make_static_cache(pairs, 6)
        self.assertEqual(type(cache).__name__, "StaticCache")
        self.assertTrue(is_cache(cache))
        keys, values = get_cache_kv(cache)
        self.assertEqual(len(keys), 2)
        for (k, v), gk, gv in zip(pairs, keys, values):
            self.assertEqual(tuple(gk.shape), (2, 4, 6, 7))
            self.assertEqual(tuple(gv.shape), (2, 4, 6, 7))
            self.assertEqualArray(k, gk[:, :, :3])
            self.assertEqualArray(v, gv[:, :, :3])
            self.assertEqualArray(torch.zeros(2, 4, 3, 7), gk[:, :, 3:])
            self.assertEqualArray(torch.zeros(2, 4, 3, 7), gv[:, :, 3:])
        self.assertEqual(int(cache.get_seq_length()), 3)
        self.assertEqual(get_cache_layer_types(cache), ["full_attention", "full_attention"])

    def test_max_cache_len_equal_to_sequence(self):
        k, v = _kv(seq=4)
        keys, values = get_cache_kv(make_static_cache([(k, v)], 4))
        self.assertEqualArray(k, keys[0])
        self.assertEqualArray(v, values[0])

    def test_low_precision_dtypes_are_kept(self):
        for dtype in (torch.bfloat16, torch.float16):
            with self.subTest(dtype=dtype):
                k, v = _kv(dtype=dtype)
                cache = make_static_cache([(k, v)], 5)
                keys, values = get_cache_kv(cache)
                self.assertEqual(keys[0].dtype, dtype)
                self.assertEqual(values[0].dtype, dtype)
                self.assertEqualArray(k, keys[0][:, :, :3])

    def test_user_tensors_are_copied_not_aliased(self):
        k, v = _kv(seq=3)
        k0, v0 = k.clone(), v.clone()
        cache = make_static_cache([(k, v)], 5)
        nk, nv = _kv(seq=1, seed=9)
        cache.update(nk, nv, 0, cache_kwargs={"cache_position": torch.tensor([3])})
        keys, _ = get_cache_kv(cache)
        self.assertEqualArray(nk[:, :, 0], keys[0][:, :, 3])
        self.assertEqualArray(k0, k)
        self.assertEqualArray(v0, v)
        self.assertEqual(tuple(k.shape), (2, 4, 3, 7))

    def test_empty_list(self):
        cache = make_static_cache([], 4)
        self.assertEqual(type(cache).__name__, "StaticCache")
        self.assertEqual(get_cache_kv(cache), ([], []))

    def test_max_cache_len_smaller_than_sequence(self):
        with self.assertRaises(CacheInputError) as cm:
            make_static_cache([_kv(seq=2), _kv(seq=5)], 4)
        msg = str(cm.exception)
        self.assertIn("key_value_pairs[1]", msg)
        self.assertIn("max_cache_len=4", msg)
        self.assertIn("5", msg)

    def test_bad_max_cache_len(self):
        for bad in (0, -1, 4.0, "4", None):
            with self.subTest(bad=bad):
                with self.assertRaisesRegex(CacheInputError, r"max_cache_len"):
                    make_static_cache([_kv()], bad)

    def test_bad_pairs(self):
        k, v = _kv()
        with self.assertRaisesRegex(CacheInputError, r"key_value_pairs\[0\].*float16"):
            make_static_cache([(k, v.half())], 4)


class TestCacheAccessors(ExtTestCase):
    def _all_caches(self):
        caches = {
            "dynamic": make_dynamic_cache([_kv(seed=0), _kv(seed=1)]),
            "static": make_static_cache([_kv(seed=0), _kv(seed=1)], 5),
            "encoder_decoder": make_encoder_decoder_cache(
                make_dynamic_cache([_kv(seed=0)]), make_dynamic_cache([_kv(seq=6, seed=1)])
            ),
        }
        if HAS_SLIDING_LAYER:
            caches["sliding"] = make_sliding_window_cache([_kv(seed=0), _kv(seed=1)], 4)
            caches["mixed"] = make_dynamic_cache(
                [_kv(seed=0), _kv(seed=1)],
                layer_types=["full_attention", "sliding_attention"],
                sliding_window=4,
            )
        return caches

    def test_get_cache_kv_on_every_cache_type(self):
        expected_seq = {
            "dynamic": [3, 3],
            "static": [5, 5],
            "encoder_decoder": [3, 6],
            "sliding": [3, 3],
            "mixed": [3, 3],
        }
        for name, cache in self._all_caches().items():
            with self.subTest(cache=name):
                keys, values = get_cache_kv(cache)
                self.assertIsInstance(keys, list)
                self.assertIsInstance(values, list)
                self.assertEqual([k.shape[2] for k in keys], expected_seq[name])
                self.assertEqual([v.shape[2] for v in values], expected_seq[name])
                self.assertTrue(all(isinstance(t, torch.Tensor) for t in keys + values))

    def test_get_cache_kv_returns_new_lists(self):
        cache = make_dynamic_cache([_kv()])
        keys, _ = get_cache_kv(cache)
        keys.append(torch.zeros(1))
        keys.clear()
        self.assertEqual(len(get_cache_kv(cache)[0]), 1)

    def test_get_cache_kv_skips_layers_never_filled(self):
        import transformers.cache_utils as cu

        cache = make_dynamic_cache([_kv()])
        cache.layers.append(cu.DynamicLayer())
        keys, values = get_cache_kv(cache)
        self.assertEqual(len(keys), 1)
        self.assertEqual(len(values), 1)

    def test_get_cache_kv_rejects_other_objects(self):
        for bad in (None, [_kv()], {"past_key_values": None}, torch.zeros(2)):
            with self.subTest(bad=type(bad).__name__):
                with self.assertRaises(TypeError) as cm:
                    get_cache_kv(bad)
                self.assertIn("cache", str(cm.exception))
                self.assertIn(type(bad).__name__, str(cm.exception))

    def test_get_cache_layer_types(self):
        caches = self._all_caches()
        self.assertEqual(
            get_cache_layer_types(caches["dynamic"]), ["full_attention", "full_attention"]
        )
        self.assertEqual(
            get_cache_layer_types(caches["static"]), ["full_attention", "full_attention"]
        )
        if HAS_SLIDING_LAYER:
            self.assertEqual(
                get_cache_layer_types(caches["sliding"]),
                ["sliding_attention", "sliding_attention"],
            )
            self.assertEqual(
                get_cache_layer_types(caches["mixed"]), ["full_attention", "sliding_attention"]
            )
        self.assertEqual(get_cache_layer_types(make_dynamic_cache([])), [])

    def test_is_cache(self):
        for name, cache in self._all_caches().items():
            with self.subTest(cache=name):
                self.assertTrue(is_cache(cache))
        k, v = _kv()
        for other in (None, k, [(k, v)], ((k, v),), {"key_0": k}, 1, "cache", np.zeros(2)):
            with self.subTest(other=type(other).__name__):
                self.assertFalse(is_cache(other))


class TestLegacyProperties(ExtTestCase):
    def test_key_cache_and_value_cache(self):
        pairs = [_kv(seed=0), _kv(seed=1)]
        cache = make_dynamic_cache(pairs)
        self.assertEqual(len(cache.key_cache), 2)
        self.assertEqual(len(cache.value_cache), 2)
        for i, (k, v) in enumerate(pairs):
            self.assertIs(cache.key_cache[i], k)
            self.assertIs(cache.value_cache[i], v)

    def test_on_static_and_sliding_caches(self):
        k, v = _kv()
        static = make_static_cache([(k, v)], 5)
        self.assertEqualArray(k, static.key_cache[0][:, :, :3])
        self.assertEqualArray(v, static.value_cache[0][:, :, :3])
        if HAS_SLIDING_LAYER:
            sliding = make_sliding_window_cache([(k, v)], 4)
            self.assertIs(sliding.key_cache[0], k)
            self.assertIs(sliding.value_cache[0], v)

    def test_follow_updates(self):
        cache = make_dynamic_cache([_kv(seq=3)])
        cache.update(*_kv(seq=2, seed=4), 0)
        self.assertEqual(cache.key_cache[0].shape[2], 5)
        self.assertEqual(cache.value_cache[0].shape[2], 5)

    def test_empty_cache(self):
        cache = make_dynamic_cache([])
        self.assertEqual(list(cache.key_cache), [])
        self.assertEqual(list(cache.value_cache), [])

    def test_seed_001_model_runs_and_exports(self):
        # seed 001: forward(cache, z) reads cache.key_cache[0] ... cache.value_cache[1]
        class Model(torch.nn.Module):
            def forward(self, cache, z):
                return (
                    z
                    + cache.key_cache[0]
                    + cache.key_cache[1]
                    + cache.value_cache[0]
                    + cache.value_cache[1]
                )

        pairs = [_kv(seed=0), _kv(seed=1)]
        cache = make_dynamic_cache(pairs)
        z = torch.randn(1, 1, 1, 7)
        expected = z + pairs[0][0] + pairs[1][0] + pairs[0][1] + pairs[1][1]
        self.assertEqualArray(expected, Model()(cache, z))

        dyn = torch.export.Dim.DYNAMIC
        ds = ([{0: dyn, 2: dyn, 3: dyn}] * 4, {3: dyn})
        ep = torch.export.export(Model(), (cache, z), dynamic_shapes=ds, strict=False)
        pairs2 = [_kv(batch=3, seq=5, dim=8, seed=2), _kv(batch=3, seq=5, dim=8, seed=3)]
        z2 = torch.randn(1, 1, 1, 8)
        got = ep.module()(make_dynamic_cache(pairs2), z2)
        self.assertEqualArray(Model()(make_dynamic_cache(pairs2), z2), got, atol=1e-6)

    def test_properties_are_read_only(self):
        cache = make_dynamic_cache([_kv()])
        with self.assertRaises(AttributeError):
            cache.key_cache = []
        with self.assertRaises(AttributeError):
            cache.value_cache = []


class TestAliasModule(ExtTestCase):
    def test_helpers_cache_helper_is_an_alias(self):
        import onnx_diagnostic.cache_helpers as main
        import onnx_diagnostic.helpers.cache_helper as alias

        self.assertEqual(list(alias.__all__), list(main.__all__))
        for name in main.__all__:
            with self.subTest(name=name):
                self.assertIs(getattr(alias, name), getattr(main, name))

    def test_alias_builds_the_same_cache(self):
        from onnx_diagnostic.helpers.cache_helper import make_dynamic_cache as mdc

        k, v = _kv()
        cache = mdc([(k, v)])
        self.assertIs(get_cache_kv(cache)[0][0], k)


# Layer classes of transformers 5.23+ (DynamicIndexedLayer, LinearAttention*Layer, DummyLayer),
# built through their public API as the models do (update, update_indexer,
# update_conv_state, update_recurrent_state), see test_serialization.py.


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _updated(layer, seed):
    layer.update(*_kv(seed=seed))
    return layer


def _with_states(layer, seed, recurrent=True):
    for s in range(layer.number_of_states):
        layer.update_conv_state(_randn(2, 12, 4, seed=seed + 20 + s), state_idx=s)
        if recurrent:
            layer.update_recurrent_state(_randn(2, 2, 4, 4, seed=seed + 30 + s), state_idx=s)
    return layer


def _new_layer(kind, seed=0):
    """One filled layer of every kind a DynamicCache of transformers 5.24 may hold."""
    cls = {
        "full": "DynamicLayer",
        "indexed": "DynamicIndexedLayer",
        "linear": "LinearAttentionLayer",
        "hybrid": "LinearAttentionAndFullAttentionLayer",
        "hybrid_sliding": "LinearAttentionAndSlidingWindowAttentionLayer",
        "dummy": "DummyLayer",
    }[kind]
    cls = compat.cache_class(cls)
    if kind == "full":
        return _updated(cls(), seed)
    if kind == "indexed":
        layer = _updated(cls(), seed)
        layer.update_indexer(_randn(2, 3, 6, seed=seed + 10))
        return layer
    if kind == "linear":
        return _with_states(cls(), seed)
    if kind == "hybrid":
        return _with_states(_updated(cls(), seed), seed)
    if kind == "hybrid_sliding":
        return _with_states(_updated(cls(sliding_window=8), seed), seed)
    return cls()


def _cache_of(layers):
    cache = compat.cache_class("DynamicCache")()
    cache.layers = list(layers)
    return cache


class _UnknownLayer(compat.cache_class("DynamicLayer")):
    """A layer class onnx_diagnostic does not know (a model's own layer may hold more)."""


_ALL_NEW_LAYERS = (
    "DynamicIndexedLayer",
    "LinearAttentionLayer",
    "LinearAttentionAndFullAttentionLayer",
    "LinearAttentionAndSlidingWindowAttentionLayer",
    "DummyLayer",
)


class TestNewLayerClasses(ExtTestCase):
    def _cache(self):
        # qwen3_next, nemotron_h, glm_moe_dsa, zamba2, inkling in one cache
        kinds = ["linear", "full", "dummy", "indexed", "hybrid", "hybrid_sliding"]
        return _cache_of(_new_layer(kind, seed=i) for i, kind in enumerate(kinds))

    @requires_cache_classes(*_ALL_NEW_LAYERS)
    def test_layer_types_as_transformers_names_them(self):
        self.assertEqual(
            get_cache_layer_types(self._cache()),
            [
                "linear_attention",
                "full_attention",
                "dummy",
                "indexed_attention",
                "hybrid",
                "hybrid_sliding",
            ],
        )

    @requires_cache_classes(*_ALL_NEW_LAYERS)
    def test_layer_types_include_layers_never_updated(self):
        cache = _cache_of(
            [
                _new_layer("full"),
                compat.cache_class("LinearAttentionLayer")(),
                compat.cache_class("DynamicLayer")(),
            ]
        )
        self.assertEqual(
            get_cache_layer_types(cache), ["full_attention", "linear_attention", "full_attention"]
        )

    @requires_cache_classes(*_ALL_NEW_LAYERS)
    def test_kv_are_the_attention_keys_and_values_only(self):
        cache = self._cache()
        keys, values = get_cache_kv(cache)
        with_attention = [1, 3, 4, 5]  # full, indexed, hybrid, hybrid_sliding
        self.assertEqual(len(keys), len(with_attention))
        self.assertEqual(len(values), len(with_attention))
        for j, i in enumerate(with_attention):
            self.assertIs(keys[j], cache.layers[i].keys)
            self.assertIs(values[j], cache.layers[i].values)
        # the legacy properties follow get_cache_kv
        self.assertIs(cache.key_cache[1], cache.layers[3].keys)

    @requires_cache_classes("LinearAttentionLayer")
    def test_kv_of_a_cache_of_linear_layers_only_is_empty(self):
        cache = _cache_of([_new_layer("linear", 0), _new_layer("linear", 1)])
        self.assertEqual(get_cache_kv(cache), ([], []))

    @requires_cache_classes(*_ALL_NEW_LAYERS)
    def test_flatten_dynamic_cache_is_the_pytree_flattening(self):
        import torch.utils._pytree as pytree

        cache = self._cache()
        named, layer_types = flatten_dynamic_cache(cache)
        with_path = pytree.tree_flatten_with_path(cache)[0]
        self.assertEqual([n for n, _ in named], [path[-1].key for path, _ in with_path])
        for (_, a), (_, b) in zip(named, with_path):
            self.assertIs(a, b)
        self.assertEqual(layer_types, get_cache_layer_types(cache))
        self.assertEqual(
            [n for n, _ in named][:6],
            ["conv_state_0", "recurrent_state_0", "full_key_1", "full_value_1", "indexed_key_3"]
            + ["indexed_value_3"],
        )
        self.assertIn("indexer_key_3", [n for n, _ in named])

    def test_flatten_dynamic_cache_rejects_other_caches(self):
        with self.assertRaises(TypeError) as cm:
            flatten_dynamic_cache(make_static_cache([_kv()], 4))
        self.assertIn("must be a DynamicCache, not StaticCache", str(cm.exception))

    def test_unknown_layer_class_raises_the_serialization_error(self):
        from onnx_diagnostic.torch_export_patches.serialization import CacheSerializationError

        unknown = _updated(_UnknownLayer(), 1)
        cache = _cache_of([_updated(compat.cache_class("DynamicLayer")(), 0), unknown])
        for fct in (get_cache_kv, get_cache_layer_types, flatten_dynamic_cache):
            with self.subTest(fct=fct.__name__):
                with self.assertRaises(CacheSerializationError) as cm:
                    fct(cache)
                self.assertEqual(cm.exception.layer_index, 1)
                self.assertIs(cm.exception.layer_class, _UnknownLayer)
                self.assertIn("DynamicCache.layers[1]", str(cm.exception))
                self.assertIn("_UnknownLayer", str(cm.exception))

    def test_full_and_sliding_caches_are_unchanged(self):
        pairs = [_kv(seed=0), _kv(seed=1)]
        self.assertEqual(get_cache_layer_types(make_dynamic_cache(pairs)), ["full_attention"] * 2)
        keys, _ = get_cache_kv(make_dynamic_cache(pairs))
        self.assertIs(keys[1], pairs[1][0])
        if HAS_SLIDING_LAYER:
            cache = make_dynamic_cache(
                pairs, layer_types=["sliding_attention", "full_attention"], sliding_window=4
            )
            self.assertEqual(get_cache_layer_types(cache), ["sliding_attention", "full_attention"])
            named, _ = flatten_dynamic_cache(cache)
            self.assertEqual(
                [n for n, _ in named],
                ["sliding_key_0", "sliding_value_0", "full_key_1", "full_value_1"],
            )

    def test_docstring_examples(self):
        import onnx_diagnostic.cache_helpers as module_under_test

        self.assertDocstringExamples(module_under_test)


class TestCacheBuilderArguments(ExtTestCase):
    """Arguments of the cache builders: the wrong kind of value is named at the call."""

    def _pairs(self, n=2, batch=1):
        return [(torch.ones(batch, 2, 3, 4), torch.ones(batch, 2, 3, 4)) for _ in range(n)]

    def test_layer_types_as_a_string(self):
        with self.assertRaises(CacheInputError) as cm:
            make_dynamic_cache(self._pairs(), layer_types="full_attention")
        msg = str(cm.exception)
        self.assertIn("not the string 'full_attention'", msg)
        self.assertIn("['full_attention'] * 2", msg)

    def test_window_and_length_must_be_positive_ints(self):
        for bad in (0.5, 4.0, True, False, "4", 0, -3, np.float32(2)):
            with self.subTest(window=bad):
                with self.assertRaises(CacheInputError) as cm:
                    make_sliding_window_cache(self._pairs(), bad)
                self.assertIn("sliding_window must be a positive int", str(cm.exception))
                self.assertIn(repr(bad), str(cm.exception))
        for bad in (2.5, True, "6", 0):
            with self.subTest(max_cache_len=bad):
                with self.assertRaises(CacheInputError) as cm:
                    make_static_cache(self._pairs(), bad)
                self.assertIn("max_cache_len must be a positive int", str(cm.exception))
        with self.assertRaises(CacheInputError) as cm:
            make_dynamic_cache(self._pairs(1), ["sliding_attention"], sliding_window=1.5)
        self.assertIn(
            "sliding_window (needed by layer_types[0]='sliding_attention') must be",
            str(cm.exception),
        )
        # numpy integers are integers
        c = make_sliding_window_cache(self._pairs(), np.int64(5))
        self.assertEqual(get_cache_layer_types(c), ["sliding_attention"] * 2)
        self.assertEqual(type(c.layers[0].sliding_window), int)
        c = make_static_cache(self._pairs(), np.int32(6))
        self.assertEqual(tuple(get_cache_kv(c)[0][0].shape), (1, 2, 6, 4))

    def test_encoder_decoder_caches_must_match(self):
        self_cache = make_dynamic_cache(self._pairs(2))
        with self.assertRaises(CacheInputError) as cm:
            make_encoder_decoder_cache(self_cache, make_dynamic_cache(self._pairs(1)))
        self.assertIn(
            "self_attention_cache has 2 layers but cross_attention_cache has 1", str(cm.exception)
        )
        with self.assertRaises(CacheInputError) as cm:
            make_encoder_decoder_cache(self_cache, make_dynamic_cache(self._pairs(2, batch=3)))
        msg = str(cm.exception)
        self.assertIn("self_attention_cache.key_0 has batch size 1", msg)
        self.assertIn("cross_attention_cache.key_0 has 3", msg)
        # an empty cross attention cache (before the first step) is a valid state
        c = make_encoder_decoder_cache(self_cache, make_dynamic_cache([]))
        self.assertEqual(type(c).__name__, "EncoderDecoderCache")


class TestOnnxDiagnosticCacheNames(ExtTestCase):
    """CacheKeyValue, flatten_unflatten_for_dynamic_shapes, cls_layers, optional window"""

    def test_cache_key_value_of_cache(self):
        from onnx_diagnostic.cache_helpers import CacheKeyValue
        from onnx_diagnostic.helpers.cache_helper import CacheKeyValue as Alias

        self.assertIs(CacheKeyValue, Alias)
        pairs = [_kv(seed=1), _kv(seed=2)]
        ckv = CacheKeyValue(make_dynamic_cache(pairs))
        self.assertEqual(ckv.n_layers, 2)
        self.assertEqual(len(ckv), 4)
        self.assertEqualArray(ckv.key_cache[1], pairs[1][0])
        self.assertEqualArray(ckv.value_cache[0], pairs[0][1])
        self.assertEqual(
            [t.data_ptr() for t in ckv.aslist()], [t.data_ptr() for p in pairs for t in p]
        )
        back = ckv.make_dynamic_cache()
        self.assertEqualAny(back, make_dynamic_cache(pairs))

    def test_cache_key_value_sliding_and_static(self):
        from onnx_diagnostic.cache_helpers import CacheKeyValue

        pairs = [_kv(seed=1), _kv(seed=2)]
        c = make_dynamic_cache(
            pairs, layer_types=["sliding_attention", "full_attention"], sliding_window=6
        )
        back = CacheKeyValue(c).make_dynamic_cache()
        self.assertEqual(get_cache_layer_types(back), ["sliding_attention", "full_attention"])
        self.assertEqual(back.layers[0].sliding_window, 6)
        static = make_static_cache(pairs, max_cache_len=5)
        ckv = CacheKeyValue(static)
        self.assertEqual(ckv.n_layers, 2)
        self.assertEqual(get_cache_layer_types(ckv.make_dynamic_cache()), ["full_attention"] * 2)

    def test_cache_key_value_list_none_and_errors(self):
        from onnx_diagnostic.cache_helpers import CacheKeyValue

        k, v = _kv()
        ckv = CacheKeyValue([k, v, k, v], cls_layers="DynamicSlidingWindowLayer")
        self.assertEqual(ckv.n_layers, 2)
        c = ckv.make_dynamic_cache()
        self.assertEqual(get_cache_layer_types(c), ["sliding_attention"] * 2)
        self.assertEqual(c.layers[0].sliding_window, k.shape[2])
        empty = CacheKeyValue()
        self.assertIsNone(empty.key_cache)
        self.assertEqual((empty.n_layers, len(empty), empty.aslist()), (0, 0, []))
        self.assertRaise(empty.make_dynamic_cache, CacheInputError, "no keys and values")
        self.assertRaise(lambda: CacheKeyValue([k, v, k]), CacheInputError, "even length")
        self.assertRaise(lambda: CacheKeyValue("cache"), TypeError, "cache must be")
        self.assertRaise(
            lambda: CacheKeyValue(make_dynamic_cache([(k, v)]), cls_layers="DynamicLayer"),
            CacheInputError,
            "cls_layers cannot be given",
        )

    def test_make_dynamic_cache_cls_layers(self):
        k, v = _kv(seq=5)
        c = make_dynamic_cache([(k, v), (k, v)], cls_layers="DynamicLayer")
        self.assertEqual(get_cache_layer_types(c), ["full_attention"] * 2)
        sliding = compat.cache_class("DynamicSlidingWindowLayer")
        c = make_dynamic_cache(
            [(k, v), (k, v)],
            cls_layers=[compat.cache_class("DynamicLayer"), sliding],
            cls_kwargs=[{}, dict(sliding_window=8)],
        )
        self.assertEqual(get_cache_layer_types(c), ["full_attention", "sliding_attention"])
        self.assertEqual(c.layers[1].sliding_window, 8)
        c = make_dynamic_cache([k, v], cls_layers=[sliding])
        self.assertEqual(c.layers[0].sliding_window, 5)
        self.assertEqual(len(make_dynamic_cache([], cls_layers="DynamicLayer").layers), 0)

    def test_make_dynamic_cache_cls_layers_errors(self):
        k, v = _kv()
        self.assertRaise(
            lambda: make_dynamic_cache([(k, v)], cls_layers="StaticLayer"),
            CacheInputError,
            "cls_layers[0]='StaticLayer' is not supported",
        )
        self.assertRaise(
            lambda: make_dynamic_cache([(k, v)], cls_layers=["DynamicLayer"] * 2),
            CacheInputError,
            "one per layer (1)",
        )
        self.assertRaise(
            lambda: make_dynamic_cache(
                [(k, v)], layer_types=["full_attention"], cls_layers="DynamicLayer"
            ),
            CacheInputError,
            "not both",
        )
        self.assertRaise(
            lambda: make_dynamic_cache([(k, v)], cls_kwargs=dict(sliding_window=2)),
            CacheInputError,
            "cls_kwargs needs cls_layers",
        )
        self.assertRaise(
            lambda: make_dynamic_cache(
                [(k, v)], cls_layers="DynamicSlidingWindowLayer", cls_kwargs=dict(size=2)
            ),
            CacheInputError,
            "unsupported keys ['size']",
        )

    def test_three_and_five_dimensional_full_layers(self):
        for shape in [(2, 5, 4), (2, 3, 4, 5, 6)]:
            with self.subTest(shape=shape):
                k, v = torch.rand(shape), torch.rand(shape)
                c = make_dynamic_cache([(k, v), (k + 1, v + 1)])
                self.assertEqual(c.get_seq_length(), shape[-2])
                flat, spec = torch.utils._pytree.tree_flatten(c)
                self.assertEqual(len(flat), 4)
                self.assertEqualAny(torch.utils._pytree.tree_unflatten(flat, spec), c)
        k = torch.rand(2, 5, 4)
        self.assertRaise(
            lambda: make_dynamic_cache(
                [(k, k)], layer_types=["sliding_attention"], sliding_window=3
            ),
            CacheInputError,
            "a sliding layer needs 4 dimensions",
        )
        self.assertRaise(
            lambda: make_dynamic_cache([(torch.rand(2, 4), torch.rand(2, 4))]),
            CacheInputError,
            "at least 3 dimensions",
        )
        self.assertRaise(
            lambda: make_dynamic_cache([(k, torch.rand(2, 6, 4))]),
            CacheInputError,
            "key and value disagree",
        )

    def test_sliding_window_cache_default_window(self):
        c = make_sliding_window_cache([_kv(seq=3), _kv(seq=3)])
        self.assertEqual([la.sliding_window for la in c.layers], [3, 3])
        k, v = _kv(seq=4)
        self.assertEqual(make_sliding_window_cache([k, v]).layers[0].sliding_window, 4)
        self.assertEqual(len(make_sliding_window_cache([]).layers), 0)

    def test_flatten_unflatten_for_dynamic_shapes(self):
        from onnx_diagnostic.cache_helpers import flatten_unflatten_for_dynamic_shapes as fu

        k, v = _kv()
        cache = make_dynamic_cache([(k, v), (k, v)])
        inputs = dict(input_ids=torch.zeros((2, 3)), cache=cache, extra=(torch.ones(1), None))
        res = fu(inputs)
        self.assertIsInstance(res, list)
        self.assertEqual(len(res), 3)
        self.assertEqual(len(res[1]), 4)
        self.assertIs(res[1][0], k)
        shapes = fu(inputs, use_dict=True, change_function=lambda t: t.shape[0])
        self.assertEqual(shapes, dict(input_ids=2, cache=[2, 2, 2, 2], extra=(1, None)))
        self.assertIs(fu(k), k)
        self.assertEqual(fu([]), [])
        enc = make_encoder_decoder_cache(cache, make_dynamic_cache([(k, v), (k, v)]))
        self.assertEqual(fu(enc, change_function=lambda t: 0), [[0, 0, 0, 0], [0, 0, 0, 0]])
        self.assertRaise(lambda: fu(inputs, change_function=3), TypeError, "change_function")


if __name__ == "__main__":
    unittest.main(verbosity=2)
