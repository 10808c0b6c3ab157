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
    has_onnxruntime_genai,
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


class TestOnnxDiagnosticHelpers(ExtTestCase):
    """Module-level helpers onnx-diagnostic documents."""

    def test_every_documented_name_is_exported(self):
        import onnx_diagnostic.ext_test_case as m

        for name in m.__all__:
            self.assertHasAttr(m, name)
        self.assertIs(m.requires_experimental_experiment, m.requires_experimental)
        self.assertEqual(m.BOOLEAN_VALUES[:2], (1, "1"))

    def test_platforms(self):
        from onnx_diagnostic.ext_test_case import is_apple, is_azure, is_linux, is_windows

        self.assertEqual(
            sum([is_apple(), is_linux(), is_windows()]),
            1 if sys.platform in ("darwin", "linux", "win32") else 0,
        )
        with self.set_env("AZURE_HTTP_USER_AGENT", "agent"):
            self.assertTrue(is_azure())
        with self.set_env("AZURE_HTTP_USER_AGENT", "undefined"):
            self.assertFalse(is_azure())

    def test_skipif_ci(self):
        from onnx_diagnostic import _ext_test_requirements as req

        def f(self):
            pass

        with self.set_env("AZURE_HTTP_USER_AGENT", "agent"):
            skip = {
                "win32": req.skipif_ci_windows,
                "linux": req.skipif_ci_linux,
                "darwin": req.skipif_ci_apple,
            }[sys.platform]("slow")(f)
            self.assertTrue(skip.__unittest_skip__)
            self.assertIn("slow", skip.__unittest_skip_why__)
        os.environ.pop("AZURE_HTTP_USER_AGENT", None)
        self.assertIs(req.skipif_ci_linux("x")(f), f)
        self.assertIs(req.skipif_ci_windows()(f), f)

    def test_has_functions(self):
        from onnx_diagnostic.ext_test_case import (
            has_cuda,
            has_onnx_ir,
            has_onnxruntime_genai,
            has_onnxruntime_training,
            has_onnxscript,
            has_sklearn,
        )

        self.assertTrue(has_torch())
        self.assertTrue(has_transformers())
        self.assertTrue(has_onnxruntime())
        self.assertTrue(has_onnxscript())
        self.assertTrue(has_onnxscript("0.1"))
        self.assertFalse(has_onnxscript("999"))
        self.assertFalse(has_onnx_ir("999"))
        self.assertFalse(has_sklearn("999"))
        self.assertEqual(has_cuda(), torch.cuda.device_count() > 0)
        self.assertIsInstance(has_onnxruntime_genai(), bool)
        self.assertIsInstance(has_onnxruntime_training(push_back_batch=True), bool)

    def test_requires_missing_module(self):
        from onnx_diagnostic import _ext_test_requirements as req

        f = req._requires_module("no_such_module_xyz", "xyz", "", "needed")(lambda self: 0)
        self.assertEqual(f.__unittest_skip_why__, "xyz not installed: needed")
        self.assertFalse(req._has_module("no_such_module_xyz"))

    def test_requires_decorators_more(self):
        from onnx_diagnostic.ext_test_case import (
            requires_cuda,
            requires_diffusers,
            requires_experimental,
            requires_numpy,
            requires_onnx,
            requires_onnx_array_api,
            requires_onnx_ir,
            requires_onnxruntime_genai,
            requires_onnxscript,
            requires_python,
            requires_sklearn,
        )

        def f(self):
            pass

        def skipped(deco):
            return getattr(deco(f), "__unittest_skip__", False)

        for deco in [
            requires_onnxscript("999"),
            requires_onnx("999"),
            requires_onnx_ir("999"),
            requires_numpy("999"),
            requires_sklearn("999"),
            requires_diffusers("999"),
            requires_experimental("999"),
            requires_onnx_array_api("999"),
            requires_python((99,)),
            requires_transformers("4.0", or_older_than="4.1"),
        ]:
            self.assertTrue(skipped(deco))
        for deco in [
            requires_onnxscript(),
            requires_onnx("1.0"),
            requires_numpy("1.0"),
            requires_python((3,)),
            requires_torch(),
            requires_transformers("4.0", or_older_than="999"),
        ]:
            self.assertFalse(skipped(deco))
        self.assertEqual(skipped(requires_cuda()), not torch.cuda.is_available())
        self.assertEqual(skipped(requires_onnxruntime_genai()), not has_onnxruntime_genai())
        self.assertIn("onnxscript 0", requires_onnxscript("999")(f).__unittest_skip_why__)
        self.assertRaise(lambda: requires_python("3.12"), TypeError, "tuple")

    def test_env_flags(self):
        from onnx_diagnostic.ext_test_case import long_test, never_test, requires_zoo

        def f(self):
            pass

        for deco, var in [
            (long_test, "LONGTEST"),
            (never_test, "NEVERTEST"),
            (requires_zoo, "ZOO"),
        ]:
            with self.set_env(var, "0"):
                self.assertTrue(deco("why")(f).__unittest_skip__)
                self.assertIn("why", deco("why")(f).__unittest_skip_why__)
            with self.set_env(var, "1"):
                self.assertIs(deco()(f), f)

    def test_ignore_errors(self):
        from onnx_diagnostic.ext_test_case import ignore_errors

        class T(ExtTestCase):
            @ignore_errors((OSError, KeyError))
            def test_skipped(self):
                raise OSError("no network")

            @ignore_errors(OSError)
            def test_failed(self):
                raise ValueError("real bug")

            @ignore_errors(OSError)
            def test_ok(self):
                pass

        r = unittest.TestResult()
        for name in ["test_skipped", "test_failed", "test_ok"]:
            T(name).run(r)
        self.assertEqual(len(r.skipped), 1)
        self.assertIn("expected error OSError: no network", r.skipped[0][1])
        self.assertEqual(len(r.errors), 1)
        self.assertEqual(r.testsRun, 3)
        self.assertRaise(lambda: ignore_errors("OSError"), TypeError, "exception classes")

    def test_ignore_warnings_tracer_warning(self):
        @ignore_warnings("TracerWarning")
        def f():
            warnings.warn("traced", torch.jit.TracerWarning)
            return 1

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.assertEqual(f(), 1)
        self.assertEqual(w, [])

    def test_measure_time(self):
        from onnx_diagnostic.ext_test_case import measure_time

        res = measure_time("sum(values)", context={"values": [1, 2, 3]}, repeat=3, number=4)
        self.assertEqual((res["repeat"], res["number"], res["size"]), (3, 4, 3))
        self.assertLessOrEqual(res["min_exec"], res["average"])
        self.assertLessOrEqual(res["average"], res["max_exec"])
        res = measure_time(lambda: sum(range(10)), max_time=0.01)
        self.assertGreaterOrEqual(res["ttime"], 0.01)
        self.assertIn("context_size", res)
        self.assertRaise(lambda: measure_time(3), TypeError, "stmt")
        self.assertRaise(lambda: measure_time("1", repeat=0), ValueError, "repeat=0")
        self.assertRaise(
            lambda: measure_time("1", max_time=1, div_by_number=False), ValueError, "div_by"
        )

    def test_statistics(self):
        from onnx_diagnostic.ext_test_case import statistics_on_file, statistics_on_folder

        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "sub"))
            with open(os.path.join(tmp, "a.py"), "w") as f:
                f.write("x = 1\n\n)\n  y = 2\n")
            with open(os.path.join(tmp, "sub", "b.rst"), "w") as f:
                f.write("title\n")
            with open(os.path.join(tmp, "c.bin"), "wb") as f:
                f.write(b"1234")
            self.assertEqual(
                statistics_on_file(os.path.join(tmp, "a.py")), dict(lines=2, chars=7, ext=".py")
            )
            self.assertEqual(statistics_on_file(os.path.join(tmp, "c.bin")), {"size": 4})
            rows = statistics_on_folder(tmp)
            self.assertEqual(
                sorted(r["name"] for r in rows), ["a.py", os.path.join("sub", "b.rst")]
            )
            rows = statistics_on_folder([tmp], aggregation=2)
            self.assertEqual(
                sorted(r["dir"] for r in rows),
                sorted(
                    [
                        os.path.join(os.path.basename(tmp), ""),
                        os.path.join(os.path.basename(tmp), "sub"),
                    ]
                ),
            )
            self.assertEqual(statistics_on_folder(tmp, pattern=".*[.]md$"), [])
            self.assertRaise(
                lambda: statistics_on_file(os.path.join(tmp, "no.py")), FileNotFoundError
            )
            self.assertRaise(
                lambda: statistics_on_folder(os.path.join(tmp, "no")), FileNotFoundError, "folder="
            )

    def test_get_figure(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from onnx_diagnostic.ext_test_case import get_figure

        fig, ax = plt.subplots(1, 1)
        self.assertIs(get_figure(ax), fig)
        plt.close(fig)
        fig, axs = plt.subplots(1, 3)
        self.assertIs(get_figure(axs), fig)
        plt.close(fig)
        self.assertRaise(lambda: get_figure(np.array([], dtype=object)), ValueError, "empty")

    def test_private_modules_docstrings(self):
        self.assertDocstringExamples(
            "onnx_diagnostic._ext_test_requirements",
            "onnx_diagnostic._ext_test_tools",
            "onnx_diagnostic._ext_test_compare",
        )


class TestOnnxDiagnosticMethods(ExtTestCase):
    """ExtTestCase methods onnx-diagnostic documents."""

    def test_assert_raise(self):
        e = self.assertRaise(lambda: 1 / 0, ZeroDivisionError)
        self.assertIsInstance(e, ZeroDivisionError)
        self.assertRaise(lambda: int("x"), ValueError, msg="invalid literal")
        self.assertRaise(lambda: int("x"), (TypeError, ValueError), look_for="literal")
        with self.assertRaises(AssertionError) as cm:
            self.assertRaise(lambda: None, ValueError)
        self.assertIn("no exception raised, expected ValueError", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assertRaise(lambda: int("x"), ValueError, "other text")
        self.assertIn("'other text' is not in its message", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assertRaise(lambda: 1 / 0, (KeyError, ValueError))
        self.assertIn("expected KeyError or ValueError, got ZeroDivisionError", str(cm.exception))

    def test_empty_not_empty(self):
        for v in [None, [], {}, (), "", set(), torch.zeros(0), np.zeros((0, 2))]:
            self.assertEmpty(v)
        for v in [[0], {"a": 1}, "a", torch.zeros(1), np.zeros(1), 0, object()]:
            self.assertNotEmpty(v)
        self.assertRaise(lambda: self.assertEmpty([1], msg="here"), AssertionError, "here:")
        self.assertRaise(lambda: self.assertNotEmpty(None), AssertionError, "value is empty")
        self.assertRaise(lambda: self.assertNotEmpty(torch.zeros(0)), AssertionError)

    def test_simple_assertions(self):
        self.assertEqualTrue(True)
        self.assertRaise(lambda: self.assertEqualTrue(1), AssertionError, "not True: 1")
        self.assertGreaterOrEqual(2, 1)
        self.assertRaise(lambda: self.assertGreaterOrEqual(1, 2), AssertionError, "1 < 2")
        self.assertLessOrEqual(1, 1)
        self.assertRaise(lambda: self.assertLessOrEqual(2, 1), AssertionError, "2 > 1")
        self.assertInOr(("a", "zz"), "xzz")
        self.assertRaise(lambda: self.assertInOr(("a", "b"), "xyz"), AssertionError, "none of")
        self.assertRaise(lambda: self.assertInOr("ab", "xyz"), TypeError, "not a string")
        self.assertSetContained([1, 2], {1, 2, 3})
        self.assertRaise(lambda: self.assertSetContained({4}, {1}), AssertionError, "[4]")
        self.assertStartsWith("past", "past_key_values")
        self.assertRaise(lambda: self.assertStartsWith("x", "abc"), AssertionError, "start")
        self.assertEndsWith("values", "past_key_values")
        self.assertRaise(lambda: self.assertEndsWith("x", "abc"), AssertionError, "end with")
        self.assertHasAttr(self, "assertRaise")
        self.assertRaise(lambda: self.assertHasAttr(1, "nope"), AssertionError, "'nope'")

    def test_assert_almost_equal_positional_onnx_diagnostic_order(self):
        self.assertAlmostEqual(np.array([1.0]), np.array([1.05]), 0.1)
        self.assertAlmostEqual(np.array([100.0]), np.array([101.0]), 0.0, 0.02)
        self.assertRaise(
            lambda: self.assertAlmostEqual(np.array([1.0]), np.array([1.5]), 0.1), AssertionError
        )
        self.assertAlmostEqual(1.0, 1.0001, 3)

    def test_assert_equal_arrays(self):
        self.assertEqualArrays([torch.ones(2), np.zeros(1)], [torch.ones(2), np.zeros(1)])
        self.assertRaise(
            lambda: self.assertEqualArrays([torch.ones(2)], []), AssertionError, "length 1 vs 0"
        )
        self.assertRaise(
            lambda: self.assertEqualArrays(
                [torch.ones(2), torch.ones(2)], [torch.ones(2), torch.zeros(2)]
            ),
            AssertionError,
            "[1]",
        )

    def test_assert_equal_array_any_reports_everything(self):
        cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
        self.assertEqualArrayAny(
            dict(a=[torch.ones(2), 1, "x", None], c=cache),
            dict(a=[torch.ones(2), 1, "x", None], c=cache),
        )
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualArrayAny(
                dict(a=[torch.zeros(2), 1, torch.ones(1)], b=None),
                dict(a=[torch.ones(2), 1, torch.ones(2)], b=None),
                msg="ctx",
            )
        text = str(cm.exception)
        self.assertIn("ctx: Found 2 discrepancies", text)
        self.assertIn("expected['a'][0]: 2/2 values differ", text)
        self.assertIn("expected['a'][2]: shape (1,) vs (2,)", text)
        with self.assertRaises(AssertionError) as cm:
            self.assertEqualArrayAny([1], [1, 2])
        self.assertIn("Found 1 discrepancy\nexpected: length 1 vs 2", str(cm.exception))

    def test_assert_equal_any_dims(self):
        Dim = torch.export.Dim
        self.assertEqualAny({0: Dim("a"), 1: Dim.DYNAMIC}, {0: Dim("a"), 1: Dim.DYNAMIC})
        self.assertEqualAny(Dim("a", min=2) + 1, Dim("a", min=2) + 1)
        for other in [Dim("b"), Dim("a", max=10), Dim.DYNAMIC, "a"]:
            with self.assertRaises(AssertionError) as cm:
                self.assertEqualAny([Dim("a")], [other])
            self.assertIn("expected[0]: Dim('a'", str(cm.exception))

    def test_to_numpy(self):
        a = self.to_numpy(torch.tensor([1.0, 2.0], dtype=torch.bfloat16))
        self.assertEqual(a.dtype.name, "bfloat16")
        self.assertEqual(self.to_numpy(torch.ones(2, requires_grad=True)).tolist(), [1.0, 1.0])
        x = np.zeros(1)
        self.assertIs(self.to_numpy(x), x)
        self.assertRaise(lambda: self.to_numpy([1]), TypeError, "torch.Tensor")

    def test_assert_equal_dataframe(self):
        import pandas

        self.assertEqualDataFrame(pandas.DataFrame({"a": [1]}), pandas.DataFrame({"a": [1]}))
        self.assertRaise(
            lambda: self.assertEqualDataFrame(
                pandas.DataFrame({"a": [1]}), pandas.DataFrame({"a": [2]}), msg="df"
            ),
            AssertionError,
            "df:",
        )

    def test_dump_files(self):
        import onnx.helper as oh

        with tempfile.TemporaryDirectory() as tmp:
            old = os.getcwd()
            os.chdir(tmp)
            try:
                self.clean_dump()  # missing folder: nothing to do
                path = self.get_dump_file("a.txt")
                self.assertEqual(path, os.path.join("dump_test", "a.txt"))
                self.assertExists("dump_test")
                self.assertEqual(self.get_dump_file("b.txt", folder=""), "b.txt")
                self.assertEqual(
                    self.get_dump_file("c", folder="other"), os.path.join("other", "c")
                )
                sub = self.get_dump_folder("sub")
                self.assertEqual(sub, os.path.join("dump_test", "sub"))
                self.assertExists(sub)
                text_path = self.dump_text("t.txt", "hello")
                with open(text_path) as f:
                    self.assertEqual(f.read(), "hello")
                model = oh.make_model(oh.make_graph([], "g", [], []))
                onx_path = self.dump_onnx("m.onnx", model)
                self.assertExists(onx_path)
                _, out, _ = self.capture(lambda: self.print_model(onx_path))
                self.assertIn("g", out)
                self.clean_dump()
                self.assertEqual(os.listdir("dump_test"), [])
                self.assertRaise(lambda: self.get_dump_file(""), ValueError, "name")
                self.assertRaise(lambda: self.get_dump_folder(""), ValueError, "folder")
                self.assertRaise(lambda: self.dump_onnx("x.onnx", "text"), TypeError, "proto")
            finally:
                os.chdir(old)

    def test_try_call(self):
        self.assertEqual(self.tryCall(lambda: 3), 3)
        self.assertIsNone(self.tryCall(lambda: 1 / 0, none_if="division by zero"))
        self.assertRaise(lambda: self.tryCall(lambda: 1 / 0, msg="failed"), AssertionError)
        self.assertRaise(lambda: self.tryCall(lambda: 1 / 0), ZeroDivisionError)

    def test_capture_keeps_output_of_failure(self):
        def f():
            print("before")
            raise ValueError("boom")

        with self.assertRaises(ValueError) as cm:
            self.capture(f)
        self.assertIn("before", "\n".join(cm.exception.__notes__))

    def test_misc(self):
        self.assertEqual(self.string_type(torch.ones(2), with_shape=True), "T1s2")
        self.assertEqual(self.max_diff(torch.ones(2), torch.ones(2))["abs"], 0)
        self.assertEqual(self.unit_test_going(), unit_test_going())
        with self.set_env("VERBOSE", "2"):
            self.assertEqual(self.verbose, 2)
        with self.set_env("VERBOSE", "x"):
            self.assertRaise(lambda: self.verbose, ValueError, "VERBOSE")
        with self.set_env("DEBUG", "1"):
            self.assertTrue(self._debug())
        self.assertRaise(lambda: self.set_env("A", 1).__enter__(), TypeError, "string")

    def test_subloop(self):
        self.assertEqual(list(self.subloop([1, 2])), [1, 2])
        self.assertEqual(list(self.subloop([1, 2], "ab")), [(1, "a"), (1, "b"), (2, "a"), (2, "b")])
        self.assertRaise(lambda: list(self.subloop()), TypeError)

    def test_todo(self):
        class T(ExtTestCase):
            def test_a(self):
                self.todo(T.test_a, "later")

        T("test_a").run(unittest.TestResult())
        _, _, err = self.capture(T.tearDownClass)
        self.assertEqual(err, "TODO T::test_a: later\n")
        self.assertNotIn("_todos", ExtTestCase.__dict__)

    def test_check_ort_and_assert_onnx_disc(self):
        import onnx.helper as oh

        TP = oh.TensorProto
        onx = oh.make_model(
            oh.make_graph(
                [oh.make_node("Add", ["x", "y"], ["z"])],
                "g",
                [oh.make_tensor_value_info(n, TP.FLOAT, [None]) for n in "xy"],
                [oh.make_tensor_value_info("z", TP.FLOAT, [None])],
            ),
            opset_imports=[oh.make_opsetid("", 18)],
            ir_version=9,
        )

        class Model(torch.nn.Module):
            def forward(self, x, y):
                return x + y

        self.assertEqual([i.name for i in self.check_ort(onx).get_inputs()], ["x", "y"])
        x = torch.tensor([1.0, 2.0])
        for use_ort in [False, True]:
            diff = self.assert_onnx_disc("", onx, Model(), (x, x), use_ort=use_ort)
            self.assertEqual(diff["abs"], 0)
        self.assert_onnx_disc("", onx, Model(), dict(y=x, x=x))

        class Wrong(torch.nn.Module):
            def forward(self, x, y):
                return x - y

        self.assertRaise(
            lambda: self.assert_onnx_disc("", onx, Wrong(), (x, x)), AssertionError, "abs=4.0"
        )
        self.assertRaise(
            lambda: self.assert_onnx_disc("", onx, Model(), (x,)), AssertionError, "1 tensors"
        )
        self.assertRaise(
            lambda: self.assert_onnx_disc("", onx, Model(), [x, x]), TypeError, "tuple or a dict"
        )

    def test_assert_onnx_disc_flattens_caches(self):
        import onnx.helper as oh

        TP = oh.TensorProto
        onx = oh.make_model(
            oh.make_graph(
                [oh.make_node("Add", ["x", "value_0"], ["z"])],
                "g",
                [
                    oh.make_tensor_value_info(n, TP.FLOAT, [None, None, None, None])
                    for n in ["x", "key_0", "value_0"]
                ],
                [oh.make_tensor_value_info("z", TP.FLOAT, [None, None, None, None])],
            ),
            opset_imports=[oh.make_opsetid("", 18)],
            ir_version=9,
        )

        class Model(torch.nn.Module):
            def forward(self, x, cache):
                return x + cache.layers[0].values

        cache = make_dynamic_cache([(torch.zeros(1, 2, 3, 4), torch.rand(1, 2, 3, 4))])
        diff = self.assert_onnx_disc("", onx, Model(), (torch.ones(1, 2, 3, 4), cache))
        self.assertEqual(diff["abs"], 0)
        self.assertEqual(diff["n"], 24)


class TestDocstrings(ExtTestCase):
    def test_examples_in_docstrings_run(self):
        from onnx_diagnostic import ext_test_case as module_under_test

        self.assertDocstringExamples(module_under_test)


class TestAssertConversionWithOrtOnCpu(ExtTestCase):
    def _model(self):
        import onnx
        import onnx.helper as oh

        return oh.make_model(
            oh.make_graph(
                [oh.make_node("Add", ["x", "y"], ["z"])],
                "g",
                [oh.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2]) for n in "xy"],
                [oh.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [2])],
            ),
            opset_imports=[oh.make_opsetid("", 18)],
            ir_version=9,
        )

    def test_passes_and_fails(self):
        x, y = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5])
        for use_python in (False, True):
            with self.subTest(use_python=use_python):
                self.assert_conversion_with_ort_on_cpu(
                    self._model(), (x + y,), (x, y), use_python=use_python
                )
                self.assert_conversion_with_ort_on_cpu(
                    self._model(), x + y + 1e-3, (x, y), atol=1e-2, use_python=use_python
                )
                with self.assertRaises(AssertionError) as cm:
                    self.assert_conversion_with_ort_on_cpu(
                        self._model(), x + y + 1, (x, y), msg=lambda: "ctx", use_python=use_python
                    )
                self.assertIn("output 0: 2/2 values differ", str(cm.exception))
                self.assertIn("(ctx)", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assert_conversion_with_ort_on_cpu(self._model(), x, (x,))
        self.assertIn("the model has 2 inputs ['x', 'y'], 1 were given", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            self.assert_conversion_with_ort_on_cpu(self._model(), (x, x), (x, y))
        self.assertIn("1 outputs, 2 expected", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
