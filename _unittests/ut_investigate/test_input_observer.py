import os
import tempfile
import unittest

import onnx
import onnx.helper as oh
import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.export.dynamic_shapes import DynamicShapesError
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.helpers.cache_helper import make_dynamic_cache
from onnx_diagnostic.investigate import InputObserver
from onnx_diagnostic.torch_export_patches.serialization import register_flattening_functions

DYN = torch.export.Dim.DYNAMIC


class AddModel(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class LLMLikeModel(torch.nn.Module):
    def forward(self, input_ids, attention_mask=None, past_key_values=None):
        return input_ids, past_key_values


class MultimodalModel(torch.nn.Module):
    def forward(self, input_ids, pixel_values=None, attention_mask=None, past_key_values=None):
        return input_ids, past_key_values


class OptionModel(torch.nn.Module):
    def forward(self, x, mask=None, scale: float = 1.0, flag: bool = False, **kwargs):
        y = x * scale
        if mask is not None:
            y = y * mask
        return y + kwargs["extra"] if "extra" in kwargs else y


def _cache(n_layers, batch, seq, heads=4, dim=32):
    return make_dynamic_cache(
        [
            (torch.rand(batch, heads, seq, dim), torch.rand(batch, heads, seq, dim))
            for _ in range(n_layers)
        ]
    )


def _add_onnx(op="Add"):
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["a", "b"])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, "b"])
    z = oh.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["a", "b"])
    graph = oh.make_graph([oh.make_node(op, ["x", "y"], ["z"])], "g", [x, y], [z])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=9)


class TestInputObserverSeed004(ExtTestCase):
    """The calls of seed 004 (imports mapped to this package) and what it printed."""

    def test_simple_model(self):
        model_add = AddModel()
        inputs_add = [
            (torch.randn(2, 6), torch.randn(1, 6)),
            (torch.randn(3, 7), torch.randn(1, 7)),
            (torch.randn(4, 8), torch.randn(1, 8)),
        ]
        observer_add = InputObserver()
        with observer_add(model_add):
            for x, y in inputs_add:
                model_add(x, y)
        self.assertEqual(observer_add.num_obs(), 3)
        dyn_add = observer_add.infer_dynamic_shapes()
        self.assertEqual(
            str(dyn_add), "({0: DimHint(DYNAMIC), 1: DimHint(DYNAMIC)}, {1: DimHint(DYNAMIC)})"
        )
        args_add = observer_add.infer_arguments()
        self.assertEqual(string_type(args_add, with_shape=True), "(T1s2x6,T1s1x6)")
        self.assertIsNot(args_add[0], observer_add._calls[0].values["x"])
        self.assertEqualArray(args_add[0], inputs_add[0][0])
        torch.export.export(model_add, args_add, dynamic_shapes=dyn_add)

    def test_llm_like_model(self):
        llm_inputs = [
            dict(
                input_ids=torch.randint(0, 1000, (1, 10)),
                attention_mask=torch.ones(1, 10, dtype=torch.int64),
                past_key_values=_cache(2, 1, 10),
            ),
            dict(
                input_ids=torch.randint(0, 1000, (1, 1)),
                attention_mask=torch.ones(1, 11, dtype=torch.int64),
                past_key_values=_cache(2, 1, 11),
            ),
        ]
        model_llm = LLMLikeModel()
        observer_llm = InputObserver()
        with register_flattening_functions(patch_transformers=True), observer_llm(model_llm):
            for kwargs in llm_inputs:
                model_llm(**kwargs)
        self.assertEqual(observer_llm.num_obs(), 2)
        with register_flattening_functions(patch_transformers=True):
            dyn_llm = observer_llm.infer_dynamic_shapes(set_batch_dimension_for=True)
            kwargs_llm = observer_llm.infer_arguments()
        self.assertEqual(
            str(dyn_llm),
            "{'input_ids': {0: DimHint(DYNAMIC), 1: DimHint(DYNAMIC)}, "
            "'attention_mask': {0: DimHint(DYNAMIC), 1: DimHint(DYNAMIC)}, "
            "'past_key_values': [{0: DimHint(DYNAMIC), 2: DimHint(DYNAMIC)}, "
            "{0: DimHint(DYNAMIC), 2: DimHint(DYNAMIC)}, {0: DimHint(DYNAMIC), 2: "
            "DimHint(DYNAMIC)}, {0: DimHint(DYNAMIC), 2: DimHint(DYNAMIC)}]}",
        )
        self.assertEqual(
            string_type(kwargs_llm, with_shape=True),
            "dict(input_ids:T7s1x10,attention_mask:T7s1x10,past_key_values:DynamicCache("
            "key_cache=#2[T1s1x4x10x32,T1s1x4x10x32], value_cache=#2[T1s1x4x10x32,T1s1x4x10x32]))",
        )

    def test_multimodal_model(self):
        n_heads, head_dim, image_h, image_w = 4, 32, 224, 224
        mm_inputs = [
            dict(
                input_ids=torch.randint(0, 1000, (1, 20)),
                pixel_values=torch.rand(1, 3, image_h, image_w),
                attention_mask=torch.ones(1, 20, dtype=torch.int64),
            ),
            dict(
                input_ids=torch.randint(0, 1000, (1, 1)),
                attention_mask=torch.ones(1, 21, dtype=torch.int64),
                past_key_values=_cache(2, 1, 20, n_heads, head_dim),
            ),
            dict(
                input_ids=torch.randint(0, 1000, (1, 1)),
                attention_mask=torch.ones(1, 22, dtype=torch.int64),
                past_key_values=_cache(2, 1, 21, n_heads, head_dim),
            ),
        ]
        model_mm = MultimodalModel()
        observer_mm = InputObserver(
            value_if_missing=dict(
                pixel_values=torch.empty((0, 3, image_h, image_w), dtype=torch.float32)
            )
        )
        with register_flattening_functions(patch_transformers=True), observer_mm(model_mm):
            for kwargs in mm_inputs:
                model_mm(**kwargs)
        self.assertEqual(observer_mm.num_obs(), 3)
        with register_flattening_functions(patch_transformers=True):
            dyn_mm = observer_mm.infer_dynamic_shapes(set_batch_dimension_for=True)
            kwargs_mm = observer_mm.infer_arguments()
        self.assertEqual(
            str(dyn_mm),
            "{'input_ids': {0: DimHint(DYNAMIC), 1: DimHint(DYNAMIC)}, "
            "'pixel_values': {0: DimHint(DYNAMIC)}, "
            "'attention_mask': {0: DimHint(DYNAMIC), 1: DimHint(DYNAMIC)}, "
            "'past_key_values': [{0: DimHint(DYNAMIC), 2: DimHint(DYNAMIC)}, "
            "{0: DimHint(DYNAMIC), 2: DimHint(DYNAMIC)}, {0: DimHint(DYNAMIC), 2: "
            "DimHint(DYNAMIC)}, {0: DimHint(DYNAMIC), 2: DimHint(DYNAMIC)}]}",
        )
        self.assertEqual(
            string_type(kwargs_mm, with_shape=True),
            "dict(input_ids:T7s1x1,pixel_values:T1s0x3x224x224,attention_mask:T7s1x21,"
            "past_key_values:DynamicCache(key_cache=#2[T1s1x4x20x32,T1s1x4x20x32], "
            "value_cache=#2[T1s1x4x20x32,T1s1x4x20x32]))",
        )


class TestInputObserver(ExtTestCase):
    def _observe(self, model, calls, **kwargs):
        observer = InputObserver(**kwargs)
        with observer(model):
            for args, kw in calls:
                model(*args, **kw)
        return observer

    def test_restores_forward(self):
        model = AddModel()
        before = dict(model.__dict__)
        observer = InputObserver()
        with observer(model):
            self.assertIn("forward", model.__dict__)
            model(torch.ones(1), torch.ones(1))
        self.assertEqual(list(before), list(model.__dict__))
        for k, v in before.items():
            self.assertIs(v, model.__dict__[k])

    def test_restores_forward_after_exception(self):
        model = AddModel()
        patched = lambda x, y: x - y  # noqa: E731
        model.forward = patched
        observer = InputObserver()
        with self.assertRaises(RuntimeError):
            with observer(model):
                model(torch.ones(2), torch.ones(3))  # shapes do not broadcast
        self.assertIs(model.__dict__["forward"], patched)
        self.assertEqual(observer.num_obs(), 0)
        other = AddModel()
        with self.assertRaises(KeyError):
            with observer(other):
                raise KeyError("inside")
        self.assertNotIn("forward", other.__dict__)

    def test_signature_is_kept(self):
        import inspect

        model = OptionModel()
        with InputObserver()(model):
            self.assertEqual(
                list(inspect.signature(model.forward).parameters),
                ["x", "mask", "scale", "flag", "kwargs"],
            )

    def test_store_n_calls(self):
        model = AddModel()
        calls = [((torch.ones(n), torch.ones(n)), {}) for n in range(1, 6)]
        observer = self._observe(model, calls, store_n_calls=2)
        self.assertEqual(observer.num_obs(), 2)
        with observer(model, store_n_calls=1):
            model(torch.ones(7), torch.ones(7))
            model(torch.ones(8), torch.ones(8))
        self.assertEqual(observer.num_obs(), 3)
        self.assertEqual(observer.infer_arguments(2)[0].shape, (7,))
        self.assertEqual(observer.infer_arguments(-1)[0].shape, (7,))

    def test_inputs_and_outputs_are_copied(self):
        class InPlace(torch.nn.Module):
            def forward(self, x, cache):
                cache.layers[0].keys += 1
                return x, cache

        model = InPlace()
        cache = _cache(1, 1, 2)
        keys = cache.layers[0].keys.clone()
        x = torch.zeros(2)
        observer = InputObserver()
        with observer(model):
            model(x, cache)
            model(x, cache)
        x += 5
        call0, call1 = observer._calls
        self.assertEqualArray(keys, call0.values["cache"].layers[0].keys)
        self.assertEqualArray(keys + 1, call1.values["cache"].layers[0].keys)
        self.assertEqualArray(keys + 1, call0.output[1].layers[0].keys)
        self.assertEqual(call0.values["x"].tolist(), [0.0, 0.0])
        # running the model on the inferred arguments leaves the records unchanged
        model(*observer.infer_arguments(0))
        self.assertEqualArray(keys, observer._calls[0].values["cache"].layers[0].keys)

    def test_nothing_recorded_while_exporting(self):
        model = AddModel()
        observer = InputObserver()
        with observer(model):
            torch.export.export(model, (torch.ones(2), torch.ones(2)))
        self.assertEqual(observer.num_obs(), 0)
        with self.assertRaises(RuntimeError) as cm:
            observer.infer_arguments()
        self.assertIn("no call was recorded", str(cm.exception))
        with self.assertRaises(RuntimeError):
            observer.infer_dynamic_shapes()

    def test_positional_gaps_are_none(self):
        model = MultimodalModel()
        x = torch.ones(1, 3)
        calls = [
            ((x, None, torch.ones(1, 3)), {}),
            ((torch.ones(1, 4), None, torch.ones(1, 4)), {}),
        ]
        observer = self._observe(model, calls)
        self.assertEqual(observer.infer_dynamic_shapes(), ({1: DYN}, None, {1: DYN}))
        args = observer.infer_arguments()
        self.assertEqual(len(args), 3)
        self.assertIsNone(args[1])

    def test_constants(self):
        model = OptionModel()
        calls = [
            ((torch.ones(2, 3),), dict(scale=2.0, flag=False, mode="a")),
            ((torch.ones(2, 5),), dict(scale=2.0, mode="a")),
        ]
        observer = self._observe(model, calls)
        ds = observer.infer_dynamic_shapes()
        # flag=False is the default, mode goes through **kwargs: both are left out
        self.assertEqual(ds, {"x": {1: DYN}, "scale": None})
        args = observer.infer_arguments()
        self.assertEqual(list(args), ["x", "scale"])
        self.assertEqual(args["scale"], 2.0)
        ep = torch.export.export(model, (), kwargs=args, dynamic_shapes=ds)
        got = ep.module()(x=torch.ones(2, 7), scale=2.0)
        self.assertEqualArray(got, torch.full((2, 7), 2.0))

    def test_tensors_caught_by_var_keyword_are_nested(self):
        model = OptionModel()
        calls = [
            ((torch.ones(2, 3),), dict(extra=torch.ones(2, 3))),
            ((torch.ones(2, 5),), dict(extra=torch.ones(2, 5))),
        ]
        observer = self._observe(model, calls)
        # torch.export (2.13) validates this structure but does not export it yet
        ds = observer.infer_dynamic_shapes()
        self.assertEqual(ds, {"x": {1: DYN}, "kwargs": {"extra": {1: DYN}}})
        self.assertEqual(list(observer.infer_arguments()), ["x", "extra"])

    def test_value_if_missing_by_name_and_position(self):
        model = MultimodalModel()
        empty = torch.empty((0, 3, 8, 8))
        for key in ("pixel_values", 1):
            with self.subTest(key=key):
                calls = [
                    ((torch.ones(1, 5),), dict(pixel_values=torch.ones(1, 3, 8, 8))),
                    ((torch.ones(1, 1),), dict(past_key_values=_cache(1, 1, 5))),
                ]
                observer = self._observe(model, calls, value_if_missing={key: empty})
                args = observer.infer_arguments()
                self.assertEqual(args["pixel_values"].shape, (0, 3, 8, 8))
                self.assertEqual(args["input_ids"].shape, (1, 1))

    def test_value_if_missing_errors(self):
        model = AddModel()
        with self.assertRaises(ValueError) as cm:
            with InputObserver(value_if_missing={"z": torch.ones(1)})(model):
                pass
        self.assertIn("'z' is not an argument", str(cm.exception))
        with self.assertRaises(ValueError):
            with InputObserver(value_if_missing={5: torch.ones(1)})(model):
                pass
        with self.assertRaises(TypeError):
            with InputObserver(value_if_missing={1.5: torch.ones(1)})(model):
                pass
        with self.assertRaises(TypeError):
            InputObserver(value_if_missing=[torch.ones(1)])
        with self.assertRaises(ValueError):
            InputObserver(store_n_calls=0)
        with self.assertRaises(ValueError):
            with InputObserver()(model, method_name="generate"):
                pass

    def test_prefill_without_cache_gets_an_empty_cache(self):
        model = LLMLikeModel()
        calls = [
            ((), dict(input_ids=torch.ones(2, 8, dtype=torch.int64))),
            (
                (),
                dict(
                    input_ids=torch.ones(2, 1, dtype=torch.int64), past_key_values=_cache(2, 2, 8)
                ),
            ),
            (
                (),
                dict(
                    input_ids=torch.ones(2, 1, dtype=torch.int64), past_key_values=_cache(2, 2, 9)
                ),
            ),
        ]
        observer = self._observe(model, calls)
        args = observer.infer_arguments()
        self.assertEqual(args["past_key_values"].layers[0].keys.shape, (2, 4, 8, 32))
        prefill = observer.infer_arguments(0)
        self.assertEqual(
            string_type(prefill, with_shape=True),
            "dict(input_ids:T7s2x8,past_key_values:DynamicCache("
            "key_cache=#2[T1s2x4x0x32,T1s2x4x0x32], value_cache=#2[T1s2x4x0x32,T1s2x4x0x32]))",
        )
        self.assertEqual(
            observer.infer_dynamic_shapes(),
            {"input_ids": {1: DYN}, "past_key_values": [{2: DYN}] * 4},
        )
        with self.assertRaises(IndexError):
            observer.infer_arguments(3)

    def test_empty_cache_counts_as_missing(self):
        model = LLMLikeModel()
        calls = [
            ((), dict(input_ids=torch.ones(1, 8), past_key_values=make_dynamic_cache([]))),
            ((), dict(input_ids=torch.ones(1, 1), past_key_values=_cache(1, 1, 8))),
        ]
        observer = self._observe(model, calls)
        self.assertEqual(observer.infer_dynamic_shapes()["past_key_values"], [{}, {}])

    def test_call_with_most_arguments_is_chosen(self):
        model = MultimodalModel()
        calls = [
            ((torch.ones(1, 3),), {}),
            ((torch.ones(1, 4),), dict(attention_mask=torch.ones(1, 4))),
            ((torch.ones(1, 5),), dict(pixel_values=torch.ones(1, 3, 2, 2))),
        ]
        observer = self._observe(model, calls)
        args = observer.infer_arguments()
        self.assertEqual(list(args), ["input_ids", "pixel_values", "attention_mask"])
        self.assertEqual(args["input_ids"].shape, (1, 4))
        self.assertEqual(args["pixel_values"].shape, (1, 3, 2, 2))  # no dynamic dimension

    def test_set_batch_dimension_for(self):
        model = LLMLikeModel()
        calls = [
            ((torch.ones(2, 3), torch.ones(2, 3)), {}),
            ((torch.ones(2, 4), torch.ones(2, 4)), {}),
        ]
        observer = self._observe(model, calls)
        self.assertEqual(observer.infer_dynamic_shapes(), ({1: DYN}, {1: DYN}))
        self.assertEqual(
            observer.infer_dynamic_shapes(set_batch_dimension_for={"attention_mask"}),
            ({1: DYN}, {0: DYN, 1: DYN}),
        )
        self.assertEqual(
            observer.infer_dynamic_shapes(set_batch_dimension_for={0}), ({0: DYN, 1: DYN}, {1: DYN})
        )
        with self.assertRaises(TypeError):
            observer.infer_dynamic_shapes(set_batch_dimension_for="x")

    def test_different_structures_name_the_call(self):
        model = LLMLikeModel()
        calls = [
            ((torch.ones(1, 3),), dict(past_key_values=_cache(2, 1, 3))),
            ((torch.ones(1, 4),), dict(past_key_values=_cache(1, 1, 4))),
        ]
        observer = self._observe(model, calls)
        with self.assertRaises(DynamicShapesError) as cm:
            observer.infer_dynamic_shapes()
        self.assertIn("calls[1]['past_key_values']", str(cm.exception))
        self.assertIn("#1[T1s1x4x4x32]", str(cm.exception))

    def test_for_export_grows_dimensions_of_size_one(self):
        model = LLMLikeModel()

        def call(seq, past):
            kw = dict(
                input_ids=torch.arange(seq, dtype=torch.int64)[None] + 10,
                attention_mask=torch.ones(1, seq + past, dtype=torch.int64),
            )
            if past:
                kw["past_key_values"] = _cache(1, 1, past)
            return (), kw

        observer = self._observe(model, [call(8, 0), call(1, 8), call(1, 9)])
        args = observer.infer_arguments(for_export=True, set_batch_dimension_for=True)
        self.assertEqual(
            string_type(args, with_shape=True),
            "dict(input_ids:T7s2x2,attention_mask:T7s2x10,past_key_values:DynamicCache("
            "key_cache=#1[T1s2x4x8x32], value_cache=#1[T1s2x4x8x32]))",
        )
        self.assertEqual(args["input_ids"].tolist(), [[10, 10], [10, 10]])
        # without for_export, the call is returned as it was
        plain = observer.infer_arguments()
        self.assertEqual(plain["input_ids"].shape, (1, 1))
        # batch is not dynamic without set_batch_dimension_for, it stays 1
        args = observer.infer_arguments(for_export=True)
        self.assertEqual(args["input_ids"].shape, (1, 2))
        self.assertEqual(args["attention_mask"].shape, (1, 10))

    def test_for_export_keeps_empty_inputs_empty(self):
        model = MultimodalModel()
        empty = torch.empty((0, 3, 4, 4))
        calls = [
            ((torch.ones(1, 5),), dict(pixel_values=torch.ones(1, 3, 4, 4))),
            ((torch.ones(1, 1),), dict(past_key_values=_cache(1, 1, 5))),
            ((torch.ones(1, 1),), dict(past_key_values=_cache(1, 1, 6))),
        ]
        observer = self._observe(model, calls, value_if_missing=dict(pixel_values=empty))
        args = observer.infer_arguments(for_export=True, set_batch_dimension_for=True)
        self.assertEqual(args["pixel_values"].shape, (0, 3, 4, 4))
        self.assertEqual(args["input_ids"].shape, (2, 2))

    def test_check_discrepancies(self):
        model = AddModel()
        calls = [((torch.randn(n, n + 1), torch.randn(1, n + 1)), {}) for n in (2, 3, 4)]
        observer = self._observe(model, calls)
        res = observer.check_discrepancies(_add_onnx())
        self.assertEqual(len(res), 3)
        for i, row in enumerate(res):
            self.assertEqual(row["index"], i)
            self.assertTrue(row["SUCCESS"])
            self.assertLess(row["abs"], 1e-6)
            self.assertEqual(row["n_inputs"], 2)
            self.assertIn("duration_ort", row)
        res = observer.check_discrepancies(_add_onnx("Sub"))
        self.assertFalse(any(r["SUCCESS"] for r in res))
        self.assertGreater(res[0]["abs"], 0.01)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "add.onnx")
            onnx.save(_add_onnx(), path)
            self.assertTrue(all(r["SUCCESS"] for r in observer.check_discrepancies(path)))

    def test_check_discrepancies_errors(self):
        model = AddModel()
        observer = self._observe(model, [((torch.randn(2, 3), torch.randn(1, 3)), {})])
        x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["a", "b"])
        z = oh.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["a", "b"])
        one_input = oh.make_model(
            oh.make_graph([oh.make_node("Neg", ["x"], ["z"])], "g", [x], [z]),
            opset_imports=[oh.make_opsetid("", 18)],
            ir_version=9,
        )
        res = observer.check_discrepancies(one_input)
        self.assertFalse(res[0]["SUCCESS"])
        self.assertIn("the model has 1 inputs ['x'] but calls[0] gives 2 tensors", res[0]["error"])
        two_outputs = _add_onnx()
        two_outputs.graph.output.append(
            oh.make_tensor_value_info("x2", onnx.TensorProto.FLOAT, None)
        )
        two_outputs.graph.node.append(oh.make_node("Identity", ["x"], ["x2"]))
        res = observer.check_discrepancies(two_outputs)
        self.assertFalse(res[0]["SUCCESS"])
        self.assertIn("error", res[0])
        with self.assertRaises(TypeError) as cm:
            observer.check_discrepancies(3)
        self.assertIn("check_discrepancies: onnx_model_or_path must be", str(cm.exception))
        with self.assertRaises(FileNotFoundError) as cm:
            observer.check_discrepancies("missing.onnx")
        self.assertIn("onnx_model_or_path='missing.onnx' does not exist", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            observer.check_discrepancies(b"not a model")
        self.assertIn("is not an ONNX model", str(cm.exception))
        for name, bad in (("atol", -1), ("rtol", float("nan")), ("atol", "1e-3"), ("rtol", True)):
            with self.assertRaises(ValueError) as cm:
                observer.check_discrepancies(_add_onnx(), **{name: bad})
            self.assertIn(f"check_discrepancies: {name} must be a number >= 0", str(cm.exception))


class TestInputObserverInfo(ExtTestCase):
    """InputObserver.info, infer_arguments(dict) and _infer_dynamic_dimensions."""

    def test_infer_dynamic_dimensions(self):
        from onnx_diagnostic.investigate.input_observer import _infer_dynamic_dimensions

        self.assertEqual(_infer_dynamic_dimensions([(2, 3, 8), (2, 4, 8), (3, 4, 8)]), [0, 1])
        self.assertEqual(_infer_dynamic_dimensions([(2, 3)]), [])
        self.assertEqual(_infer_dynamic_dimensions([(2, 3)], set_batch_dimension=True), [0])
        self.assertEqual(_infer_dynamic_dimensions([torch.Size([1, 2]), (1, 3)]), [1])
        self.assertEqual(_infer_dynamic_dimensions([(), ()], set_batch_dimension=True), [])

    def test_infer_dynamic_dimensions_bad_input(self):
        from onnx_diagnostic.investigate.input_observer import _infer_dynamic_dimensions

        with self.assertRaisesRegex(ValueError, "shape_list is empty"):
            _infer_dynamic_dimensions([])
        with self.assertRaisesRegex(ValueError, "same rank"):
            _infer_dynamic_dimensions([(2, 3), (2, 3, 4)])
        with self.assertRaisesRegex(TypeError, r"shape_list\[1\]"):
            _infer_dynamic_dimensions([(2, 3), "2x3"])

    def test_info_is_none_before_observing(self):
        self.assertIsNone(InputObserver().info)

    def test_info_llm_like(self):
        model, observer = LLMLikeModel(), InputObserver()
        with observer(model):
            model(torch.ones((2, 3), dtype=torch.int64), attention_mask=torch.ones(2, 3))
            model(
                torch.ones((2, 1), dtype=torch.int64),
                attention_mask=torch.ones(2, 4),
                past_key_values=_cache(2, 2, 3),
            )
            model(
                torch.ones((2, 1), dtype=torch.int64),
                attention_mask=torch.ones(2, 5),
                past_key_values=_cache(2, 2, 4),
            )
        info = observer.info
        self.assertEqual(len(info), 3)
        self.assertEqual(info.signature_names, ["input_ids", "attention_mask", "past_key_values"])
        self.assertEqual(list(info.arguments), ["input_ids", "attention_mask", "past_key_values"])
        ids = info.arguments["input_ids"]
        self.assertEqual(ids.kinds, ("Tensor",))
        self.assertEqual(ids.dtypes, (torch.int64,))
        self.assertEqual(ids.shapes, (((2, 3),), ((2, 1),), ((2, 1),)))
        self.assertEqual(ids.dynamic_dimensions, ((1,),))
        self.assertEqual(ids.missing_in, ())
        cache = info.arguments["past_key_values"]
        self.assertEqual(cache.kinds, ("DynamicCache",))
        self.assertEqual(cache.missing_in, (0,))
        self.assertIsNone(cache.shapes[0])
        self.assertEqual(len(cache.shapes[1]), 4)
        self.assertEqual(cache.dynamic_dimensions, ((2,), (2,), (2,), (2,)))
        self.assertEqual(cache.dtypes, (torch.float32,) * 4)
        self.assertFalse(cache.value_if_missing)
        self.assertEqual(len(info.latencies), 3)
        self.assertEqual(len(info.outputs), 3)
        text = str(info)
        self.assertIn("past_key_values: DynamicCache", text)
        self.assertIn("missing_in=[0]", text)

    def test_info_constants_defaults_and_missing(self):
        model = OptionModel()
        observer = InputObserver(value_if_missing={"mask": torch.ones(2, 0)})
        with observer(model):
            model(torch.ones(2, 3), scale=2.0)
            model(torch.ones(2, 4), mask=torch.ones(2, 4))
        info = observer.info
        self.assertEqual(info.default_values, {"scale": 1.0, "flag": False})
        self.assertEqual(info.constants, [{"scale": 2.0}, {}])
        self.assertEqual(list(info.missing), ["mask"])
        self.assertTrue(info.arguments["mask"].value_if_missing)
        self.assertEqual(info.arguments["mask"].missing_in, (0,))
        self.assertIn("calls[0] constants: {'scale': 2.0}", str(info))

    def test_info_is_a_snapshot(self):
        model, observer = AddModel(), InputObserver()
        with observer(model):
            model(torch.ones(2, 3), torch.ones(1, 3))
        info = observer.info
        with observer(model):
            model(torch.ones(3, 3), torch.ones(1, 3))
        self.assertEqual(len(info), 1)
        self.assertEqual(len(observer.info), 2)
        self.assertEqual(observer.info.arguments["x"].dynamic_dimensions, ((0,),))

    def test_infer_arguments_from_dict_completes_missing(self):
        model, observer = LLMLikeModel(), InputObserver()
        with observer(model):
            model(torch.ones((2, 3), dtype=torch.int64), attention_mask=torch.ones(2, 3))
            model(
                torch.ones((2, 1), dtype=torch.int64),
                attention_mask=torch.ones(2, 4),
                past_key_values=_cache(1, 2, 3),
            )
            model(
                torch.ones((2, 1), dtype=torch.int64),
                attention_mask=torch.ones(2, 5),
                past_key_values=_cache(1, 2, 4),
            )
        new_ids = torch.ones((2, 7), dtype=torch.int64)
        kwargs = observer.infer_arguments(
            {"input_ids": new_ids, "attention_mask": torch.ones(2, 7)}
        )
        self.assertIsInstance(kwargs, dict)
        self.assertEqual(list(kwargs), ["input_ids", "attention_mask", "past_key_values"])
        self.assertEqual(kwargs["input_ids"].shape, (2, 7))
        self.assertIsNot(kwargs["input_ids"], new_ids)
        self.assertEqual(
            string_type(kwargs["past_key_values"], with_shape=True),
            "DynamicCache(key_cache=#1[T1s2x4x0x32], value_cache=#1[T1s2x4x0x32])",
        )
        # the dict was not recorded as a call
        self.assertEqual(observer.num_obs(), 3)
        flat = observer.infer_arguments({"input_ids": new_ids}, flat=True)
        self.assertEqual(
            [tuple(t.shape) for t in flat], [(2, 7), (2, 0), (2, 4, 0, 32), (2, 4, 0, 32)]
        )

    def test_infer_arguments_from_dict_and_tuple_positional(self):
        model, observer = AddModel(), InputObserver()
        with observer(model):
            model(torch.ones(2, 3), torch.ones(1, 3))
            model(torch.ones(3, 4), torch.ones(1, 4))
        args = observer.infer_arguments({"x": torch.ones(5, 6), "y": torch.ones(1, 6)})
        self.assertIsInstance(args, tuple)
        self.assertEqual([tuple(a.shape) for a in args], [(5, 6), (1, 6)])
        args = observer.infer_arguments((torch.ones(5, 6), torch.ones(1, 6)))
        self.assertEqual([tuple(a.shape) for a in args], [(5, 6), (1, 6)])
        grown = observer.infer_arguments((torch.ones(1, 6), torch.ones(1, 6)), for_export=True)
        self.assertEqual(tuple(grown[0].shape), (2, 6))

    def test_infer_arguments_from_dict_keeps_constants(self):
        model, observer = OptionModel(), InputObserver()
        with observer(model):
            model(torch.ones(2, 3), mask=torch.ones(2, 3))
            model(torch.ones(2, 4), mask=torch.ones(2, 4))
        kwargs = observer.infer_arguments({"x": torch.ones(2, 5), "scale": 3.0})
        self.assertEqual(kwargs["scale"], 3.0)
        self.assertEqual(tuple(kwargs["mask"].shape), (2, 0))

    def test_infer_arguments_bad_input(self):
        model, observer = AddModel(), InputObserver()
        with self.assertRaisesRegex(RuntimeError, "no call was recorded"):
            observer.infer_arguments({"x": torch.ones(2, 3)})
        with observer(model):
            model(torch.ones(2, 3), torch.ones(1, 3))
        with self.assertRaisesRegex(TypeError, "infer_arguments: index=.*does not match"):
            observer.infer_arguments({"z": torch.ones(2, 3)})
        with self.assertRaisesRegex(TypeError, "keys must be argument names"):
            observer.infer_arguments({0: torch.ones(2, 3)})
        with self.assertRaisesRegex(IndexError, "index='x'"):
            observer.infer_arguments("x")
        with self.assertRaisesRegex(IndexError, "index=3"):
            observer.infer_arguments(3)
        with self.assertRaisesRegex(DynamicShapesError, "index"):
            observer.infer_arguments({"x": torch.ones(2, 3, 4), "y": torch.ones(1, 3)})

    def test_infer_arguments_unknown_tensor_argument(self):
        model, observer = OptionModel(), InputObserver()
        with observer(model):
            model(torch.ones(2, 3))
        with self.assertRaisesRegex(ValueError, r"gives arguments \['mask'\]"):
            observer.infer_arguments({"x": torch.ones(2, 3), "mask": torch.ones(2, 3)})


if __name__ == "__main__":
    unittest.main(verbosity=2)


class NewNamesModel(torch.nn.Module):
    """Declares the cache argument as transformers>=5.24 does (the old name goes to **kwargs)."""

    def forward(self, input_ids, attention_mask=None, cache=None, **kwargs):
        return input_ids


class OldNamesModel(torch.nn.Module):
    """Declares the cache argument as transformers<5.24 does."""

    def forward(self, input_ids, attention_mask=None, past_key_values=None, **kwargs):
        return input_ids


class KwargsModel(torch.nn.Module):
    """Declares no cache argument, receives it through **kwargs."""

    def forward(self, input_ids, **kwargs):
        return input_ids


class TestInputObserverCacheNames(ExtTestCase):
    def _calls(self, model, names):
        observer = InputObserver()
        with observer(model):
            for i, name in enumerate(names):
                seq = 3 + i
                model(
                    torch.ones((2, 1), dtype=torch.int64),
                    attention_mask=torch.ones((2, seq + 1), dtype=torch.int64),
                    **{name: _cache(1, 2, seq)},
                )
        return observer

    def test_calls_mixing_names_are_one_argument(self):
        for model, expected in ((NewNamesModel(), "cache"), (OldNamesModel(), "past_key_values")):
            with self.subTest(model=type(model).__name__):
                observer = self._calls(model, ["past_key_values", "cache", "past_key_values"])
                self.assertEqual(observer.num_obs(), 3)
                kwargs = observer.infer_arguments()
                self.assertIn(expected, kwargs)
                ds = observer.infer_dynamic_shapes()
                self.assertIn(expected, ds)
                self.assertNotIn("past_key_values" if expected == "cache" else "cache", ds)
                self.assertEqual(len(ds[expected]), 2)
                self.assertIn(2, ds[expected][0])

    def test_undeclared_cache_keeps_the_first_name_met(self):
        observer = self._calls(KwargsModel(), ["cache", "past_key_values"])
        self.assertEqual(observer.num_obs(), 2)
        kwargs = observer.infer_arguments()
        self.assertIn("cache", kwargs)
        self.assertNotIn("past_key_values", kwargs)

    def test_both_names_in_one_call_is_left_to_the_model(self):
        observer = InputObserver()
        model = KwargsModel()
        with observer(model):
            model(torch.ones((2, 1)), cache=_cache(1, 2, 3), past_key_values=_cache(1, 2, 3))
        # the call ran, it was not recorded: the model decides what both names mean
        self.assertEqual(observer.num_obs(), 0)
