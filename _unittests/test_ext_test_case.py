import os
import subprocess
import sys
import tempfile
import unittest
import warnings

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutputWithPast

from onnx_diagnostic.cache_helpers import (
    make_dynamic_cache,
    make_encoder_decoder_cache,
    make_sliding_window_cache,
)
from onnx_diagnostic.ext_test_case import (
    requires_cache_classes,
    ExtTestCase,
    has_onnxruntime,
    has_torch,
    has_transformers,
    hide_stdout,
    ignore_warnings,
    requires_onnxruntime,
    requires_torch,
    requires_transformers,
    unit_test_going,
)
from onnx_diagnostic.helpers import compat


class TestAssertEqualArray(ExtTestCase):
    def test_equal_torch_numpy_mixed(self):
        self.assertEqualArray(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0], dtype=np.float32))
        self.assertEqualArray(np.array([1, 2]), torch.tensor([1, 2]))
        self.assertEqualArray(torch.tensor(3.0), torch.tensor(3.0))
        self.assertEqualArray(torch.tensor(1.0), np.array(1.0, dtype=np.float32))
        self.assertEqualArray(torch.zeros((0, 2)), torch.zeros((0, 2)))

    def test_values_differ(self):
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualArray(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.5, 3.0]))
        msg = str(cm.exception)
        self.assertIn("1/3 values differ", msg)
        self.assertIn("max abs diff 0.5 at (1,)", msg)
        self.assertIn("expected 2.0, got 2.5", msg)

    def test_tolerance(self):
        e, v = torch.tensor([1.0, 100.0]), torch.tensor([1.05, 101.0])
        self.assertEqualArray(e, v, atol=1.0)
        self.assertEqualArray(e, v, atol=0.06, rtol=0.01)
        with self.assertRaises(AssertionError):
            self.assertEqualArray(e, v, atol=0.06)
        with self.assertRaises(AssertionError):
            self.assertEqualArray(e, v, rtol=0.01)

    def test_dtype_mismatch(self):
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualArray(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float16))
        self.assertIn("dtype float32 vs float16", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualArray(torch.tensor([1]), np.array([1], dtype=np.int32))
        self.assertIn("dtype int64 vs int32", str(cm.exception))

    def test_shape_mismatch(self):
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualArray(torch.zeros(2, 3), torch.zeros(3, 2), msg="here")
        self.assertEqual(str(cm.exception), "here: shape (2, 3) vs (3, 2)")

    def test_nan_and_inf(self):
        nan, inf = float("nan"), float("inf")
        self.assertEqualArray(torch.tensor([nan, inf, 1.0]), torch.tensor([nan, inf, 1.0]))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualArray(torch.tensor([nan, 1.0]), torch.tensor([1.0, 1.0]))
        self.assertIn("NaN at different positions", str(cm.exception))
        with self.assertRaises(AssertionError):
            self.assertEqualArray(torch.tensor([inf]), torch.tensor([1.0]), atol=10)
        with self.assertRaises(AssertionError):
            self.assertEqualArray(torch.tensor([inf]), torch.tensor([1.0]), rtol=1)
        with self.assertRaises(AssertionError):
            self.assertEqualArray(torch.tensor([1.0]), torch.tensor([-inf]), rtol=1)

    def test_bfloat16_and_bool(self):
        self.assertEqualArray(
            torch.tensor([1.0, 2.0], dtype=torch.bfloat16),
            torch.tensor([1.0, 2.0], dtype=torch.bfloat16),
        )
        with self.assertRaises(AssertionError):
            self.assertEqualArray(torch.tensor([True]), torch.tensor([False]))


class TestAssertAlmostEqual(ExtTestCase):
    def test_arrays_default_places(self):
        self.assertAlmostEqual(torch.tensor([1.0, 2.0]), np.array([1.0, 2.00000001]))
        with self.assertRaises(AssertionError):
            self.assertAlmostEqual(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.001]))

    def test_arrays_with_tolerance(self):
        self.assertAlmostEqual(torch.tensor([1.0]), torch.tensor([1.001]), atol=1e-2)
        self.assertAlmostEqual(torch.tensor([1.0]), [1.001], delta=1e-2)
        self.assertAlmostEqual(np.array([1.0]), torch.tensor([1.001]), places=2)

    def test_numbers(self):
        self.assertAlmostEqual(1.0, 1.0 + 1e-9)
        self.assertAlmostEqual(1.0, 1.01, atol=0.02)
        self.assertAlmostEqual(100.0, 101.0, rtol=0.02)
        with self.assertRaises(AssertionError):
            self.assertAlmostEqual(1.0, 1.1, atol=0.02)
        with self.assertRaises(TypeError):
            self.assertAlmostEqual(1.0, 1.1, atol=0.02, places=2)


class TestAssertEqualAny(ExtTestCase):
    def test_nested_equal(self):
        obj = dict(a=[torch.zeros(2), (1, "s", None, 0.5)], b=np.ones(2))
        self.assertEqualAny(obj, dict(a=[torch.zeros(2), (1, "s", None, 0.5)], b=np.ones(2)))

    def test_path_in_message(self):
        e = [
            torch.zeros(1),
            dict(past_key_values=make_dynamic_cache([(torch.zeros(2, 4, 3, 7),) * 2])),
        ]
        v = [
            torch.zeros(1),
            dict(past_key_values=make_dynamic_cache([(torch.zeros(3, 4, 4, 8),) * 2])),
        ]
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(e, v)
        self.assertEqual(
            str(cm.exception),
            "expected[1]['past_key_values'].key_0: shape (2, 4, 3, 7) vs (3, 4, 4, 8)",
        )

    def test_tolerance(self):
        self.assertEqualAny([torch.tensor([1.0])], [torch.tensor([1.01])], atol=0.1)
        self.assertEqualAny([1.0], [1.01], atol=0.1)
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny([1.0], [1.2], atol=0.1)
        self.assertIn("expected[0]: 1.0 vs 1.2", str(cm.exception))

    def test_type_and_length_mismatch(self):
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny((torch.zeros(1),), [torch.zeros(1)])
        self.assertIn("expected: type tuple vs list", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny([1], [1, 2])
        self.assertEqual(str(cm.exception), "expected: length 1 vs 2")
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(dict(a=1), dict(b=1), msg="m")
        self.assertEqual(str(cm.exception), "m: expected: keys ['a'] vs ['b']")
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny([None], [torch.zeros(1)])
        self.assertIn("expected[0]: None vs tensor", str(cm.exception))
        with self.assertRaises(AssertionError):
            self.assertEqualAny([True], [1])
        with self.assertRaises(AssertionError):
            self.assertEqualAny(["a"], ["b"])

    def test_caches(self):
        def cache(value):
            return make_dynamic_cache([(torch.full((1, 2, 3, 4), value),) * 2] * 2)

        self.assertEqualAny(cache(1.0), cache(1.0))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(cache(1.0), cache(2.0))
        self.assertIn("expected.key_0: 24/24 values differ", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(cache(1.0), make_dynamic_cache([(torch.zeros(1, 2, 3, 4),) * 2]))
        self.assertEqual(str(cm.exception), "expected: 2 layers vs 1")
        t = (torch.zeros(1, 2, 3, 4),) * 2
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(make_dynamic_cache([t]), make_sliding_window_cache([t], 4))
        self.assertEqual(
            str(cm.exception),
            "expected: layer types ['full_attention'] vs ['sliding_attention']",
        )
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(make_dynamic_cache([t]), [t])
        self.assertIn("expected: type DynamicCache vs list", str(cm.exception))

    def test_encoder_decoder_cache(self):
        def ed(value):
            return make_encoder_decoder_cache(
                make_dynamic_cache([(torch.zeros(1, 2, 3, 4),) * 2]),
                make_dynamic_cache([(torch.full((1, 2, 5, 4), value),) * 2]),
            )

        self.assertEqualAny(ed(1.0), ed(1.0))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(ed(1.0), ed(0.0))
        self.assertIn("expected.cross_attention_cache.key_0", str(cm.exception))

    def test_model_outputs(self):
        out = CausalLMOutputWithPast(logits=torch.zeros(2))
        self.assertEqualAny(out, CausalLMOutputWithPast(logits=torch.zeros(2)))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(out, CausalLMOutputWithPast(logits=torch.ones(2)))
        self.assertIn("expected.logits: 2/2 values differ", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(out, BaseModelOutput(last_hidden_state=torch.zeros(2)))
        self.assertIn("type CausalLMOutputWithPast vs BaseModelOutput", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(out, dict(logits=torch.zeros(2)))
        self.assertIn("type CausalLMOutputWithPast vs dict", str(cm.exception))


class TestOtherAssertions(ExtTestCase):
    def test_assert_exists(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.assertExists(tmp)
            with self.assertRaises(AssertionError) as cm:
                self.assertExists(os.path.join(tmp, "missing.onnx"))
            self.assertIn("missing.onnx' does not exist", str(cm.exception))

    def test_capture(self):
        def f():
            print("out")
            print("err", file=sys.stderr)
            return 5

        res, out, err = self.capture(f)
        self.assertEqual((res, out, err), (5, "out\n", "err\n"))


class TestVersions(ExtTestCase):
    def test_has_versions(self):
        self.assertTrue(has_torch("2.0"))
        self.assertFalse(has_torch("99.0"))
        self.assertTrue(has_transformers("4.57"))
        self.assertFalse(has_transformers("99"))
        self.assertEqual(
            has_transformers("5.0"), compat.version_at_least(compat.transformers_version(), "5")
        )
        self.assertTrue(has_onnxruntime("1.0"))
        self.assertFalse(has_onnxruntime("99.0"))

    def test_requires_decorators(self):
        def f():
            pass

        self.assertTrue(getattr(requires_torch("99.0")(f), "__unittest_skip__", False))
        skipped = requires_transformers("99.0", "needs the future")(f)
        self.assertTrue(skipped.__unittest_skip__)
        self.assertIn("< 99.0: needs the future", skipped.__unittest_skip_why__)
        self.assertTrue(getattr(requires_onnxruntime("99.0")(f), "__unittest_skip__", False))
        self.assertFalse(getattr(requires_torch("2.0")(f), "__unittest_skip__", False))
        self.assertFalse(getattr(requires_transformers("4.0")(f), "__unittest_skip__", False))

    def test_unit_test_going(self):
        old = os.environ.get("UNITTEST_GOING", None)
        try:
            os.environ["UNITTEST_GOING"] = "1"
            self.assertTrue(unit_test_going())
            os.environ["UNITTEST_GOING"] = "0"
            self.assertFalse(unit_test_going())
            del os.environ["UNITTEST_GOING"]
            self.assertFalse(unit_test_going())
        finally:
            if old is None:
                os.environ.pop("UNITTEST_GOING", None)
            else:
                os.environ["UNITTEST_GOING"] = old

    def test_import_loads_neither_transformers_nor_onnxruntime(self):
        code = (
            "import sys\n"
            "import onnx_diagnostic.ext_test_case as m\n"
            "m.has_torch('2.0')\n"
            "print('transformers' in sys.modules, 'onnxruntime' in sys.modules)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(out.strip(), "False False")


class TestDecorators(ExtTestCase):
    def test_ignore_warnings(self):
        @ignore_warnings(UserWarning)
        def f():
            warnings.warn("hidden", UserWarning)
            warnings.warn("shown", RuntimeWarning)
            return 3

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.assertEqual(f(), 3)
        self.assertEqual([str(x.message) for x in w], ["shown"])

    def test_ignore_warnings_list(self):
        @ignore_warnings([UserWarning, FutureWarning])
        def f():
            warnings.warn("a", UserWarning)
            warnings.warn("b", FutureWarning)

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            f()
        self.assertEqual(w, [])

    def test_ignore_warnings_bad_input(self):
        with self.assertRaises(TypeError):
            ignore_warnings("UserWarning")

    def test_hide_stdout_with_callback(self):
        seen = []

        class T:
            @hide_stdout(seen.append)
            def method(self):
                print("hidden text")
                return 7

        res, out, _ = self.capture(T().method)
        self.assertEqual(res, 7)
        self.assertEqual(out, "")
        self.assertEqual(seen, ["hidden text\n"])

    def test_hide_stdout_without_parentheses(self):
        class T:
            @hide_stdout
            def method(self):
                print("hidden text")
                return 8

        res, out, _ = self.capture(T().method)
        self.assertEqual((res, out), (8, ""))

    def test_hide_stdout_adds_output_to_failure(self):
        class T:
            @hide_stdout()
            def method(self):
                print("useful context")
                raise AssertionError("failed")

        with self.assertRaises(AssertionError) as cm:
            self.capture(T().method)
        if hasattr(cm.exception, "__notes__"):
            self.assertIn("useful context", cm.exception.__notes__[0])

    def test_unhide(self):
        class T:
            @hide_stdout()
            def method(self):
                print("visible")

        old = os.environ.get("UNHIDE", None)
        os.environ["UNHIDE"] = "1"
        try:
            _, out, _ = self.capture(T().method)
        finally:
            if old is None:
                del os.environ["UNHIDE"]
            else:
                os.environ["UNHIDE"] = old
        self.assertEqual(out, "visible\n")


# Caches holding the layer classes of transformers 5.23+, built through their public API
# as the models do (see test_serialization.py).


def _seeded(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _full_layer(seed=0, cls_name="DynamicLayer", **kwargs):
    layer = compat.cache_class(cls_name)(**kwargs)
    layer.update(_seeded(2, 4, 3, 8, seed=seed), _seeded(2, 4, 3, 8, seed=seed + 1))
    return layer


def _linear_layer(seed=0, kernel=None):
    layer = compat.cache_class("LinearAttentionLayer")()
    layer.update_conv_state(_seeded(2, 12, 4, seed=seed + 2))
    layer.update_recurrent_state(_seeded(2, 2, 4, 4, seed=seed + 3))
    if kernel is not None:
        layer.conv_kernel_size[0] = kernel
    return layer


def _indexed_layer(seed=0):
    layer = _full_layer(seed, "DynamicIndexedLayer")
    layer.update_indexer(_seeded(2, 3, 6, seed=seed + 4))
    return layer


def _cache_of(*layers):
    cache = compat.cache_class("DynamicCache")()
    cache.layers = list(layers)
    return cache


class TestAssertEqualAnyNewCacheLayers(ExtTestCase):
    def _qwen3_next(self, seed=0, kernel=None):
        return _cache_of(_linear_layer(seed, kernel), _full_layer(seed + 10))

    @requires_cache_classes("LinearAttentionLayer")
    def test_equal_linear_caches(self):
        self.assertEqualAny(self._qwen3_next(), self._qwen3_next())

    @requires_cache_classes("LinearAttentionLayer")
    def test_conv_and_recurrent_states_are_compared(self):
        for attribute, name in (
            ("conv_states", "conv_state_0"),
            ("recurrent_states", "recurrent_state_0"),
        ):
            with self.subTest(name=name):
                value = self._qwen3_next()
                getattr(value.layers[0], attribute)[0].add_(1)
                with self.assertRaises(AssertionError) as cm:
                    self.assertEqualAny(dict(cache=self._qwen3_next()), dict(cache=value))
                self.assertIn(f"expected['cache'].{name}: ", str(cm.exception))
                self.assertIn("values differ", str(cm.exception))

    @requires_cache_classes("DynamicIndexedLayer")
    def test_indexer_keys_are_compared(self):
        value = _cache_of(_indexed_layer())
        value.layers[0].indexer_keys.mul_(2)
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(_cache_of(_indexed_layer()), value)
        self.assertIn("expected.indexer_key_0: ", str(cm.exception))

    @requires_cache_classes("LinearAttentionLayer")
    def test_attention_keys_keep_their_layer_index(self):
        value = self._qwen3_next()
        value.layers[1].keys.add_(1)
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(self._qwen3_next(), value)
        self.assertIn("expected.key_1: ", str(cm.exception))

    @requires_cache_classes("LinearAttentionLayer")
    def test_layer_types_are_compared(self):
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(self._qwen3_next(), _cache_of(_full_layer(), _full_layer(10)))
        self.assertEqual(
            str(cm.exception),
            "expected: layer types ['linear_attention', 'full_attention'] vs "
            "['full_attention', 'full_attention']",
        )

    @requires_cache_classes("LinearAttentionLayer")
    def test_layer_settings_are_compared(self):
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(self._qwen3_next(kernel=4), self._qwen3_next(kernel=3))
        self.assertIn("expected: flattened layers ", str(cm.exception))

    @unittest.skipIf(
        compat.cache_class("DynamicSlidingWindowLayer") is None,
        "the installed transformers has no DynamicSlidingWindowLayer",
    )
    def test_sliding_windows_are_compared(self):
        def cache(window):
            return _cache_of(_full_layer(0, "DynamicSlidingWindowLayer", sliding_window=window))

        self.assertEqualAny(cache(4), cache(4))
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualAny(cache(4), cache(8))
        self.assertEqual(
            str(cm.exception),
            "expected: flattened layers ('sliding_attention:4',) vs ('sliding_attention:8',)",
        )

    def test_unknown_layer_class_raises_the_serialization_error(self):
        from onnx_diagnostic.torch_export_patches.serialization import CacheSerializationError

        class MyLayer(compat.cache_class("DynamicLayer")):
            pass

        cache = _cache_of(_full_layer(), _full_layer(1, "DynamicLayer"))
        cache.layers[1].__class__ = MyLayer
        with self.assertRaises(CacheSerializationError) as cm:
            self.assertEqualAny([cache], [cache])
        self.assertEqual(cm.exception.layer_index, 1)
        self.assertIs(cm.exception.layer_class, MyLayer)
        self.assertTrue(str(cm.exception).startswith("expected[0]: DynamicCache.layers[1] "))


class TestDocstrings(ExtTestCase):
    def test_examples_in_docstrings_run(self):
        from onnx_diagnostic import ext_test_case as module_under_test

        self.assertDocstringExamples(module_under_test)


if __name__ == "__main__":
    unittest.main(verbosity=2)
