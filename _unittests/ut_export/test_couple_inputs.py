import unittest

import torch

from onnx_diagnostic.cache_helpers import make_dynamic_cache, make_encoder_decoder_cache
from onnx_diagnostic.export import CoupleInputsDynamicShapes
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import string_type

Dim = torch.export.Dim
DYN = Dim.DYNAMIC


def _cache(batch: int = 2, length: int = 3, n_layers: int = 2):
    return make_dynamic_cache(
        [(torch.randn(batch, 4, length, 8), torch.randn(batch, 4, length, 8))] * n_layers
    )


class TestInvalidDimensions(ExtTestCase):
    def test_sizes_0_and_1_are_reported(self):
        kwargs = {"A": torch.ones(3, 4), "B": (torch.ones(3, 1), torch.ones(0, 5))}
        ds = {"A": {0: "batch"}, "B": ({0: "batch", 1: "seq"}, {0: DYN, 1: 5})}
        self.assertEqual(
            CoupleInputsDynamicShapes((), kwargs, ds).invalid_dimensions_for_export(),
            {"B": ({1: "d=[1]"}, {0: "d=[0]"})},
        )

    def test_valid_returns_none(self):
        kwargs = {"A": torch.ones(3, 4), "B": (torch.ones(3, 2),)}
        ds = {"A": {0: "batch"}, "B": ({0: "batch", 1: "seq"},)}
        self.assertIsNone(CoupleInputsDynamicShapes((), kwargs, ds).invalid_dimensions_for_export())

    def test_dim_bounds(self):
        ds = ({0: Dim("batch", min=4, max=8)},)
        res = CoupleInputsDynamicShapes((torch.ones(3),), {}, ds).invalid_dimensions_for_export()
        self.assertEqual(res, ({0: "d=[3] not in [4, 8]"},))

    def test_cache_and_args(self):
        cache = _cache(batch=1, length=3, n_layers=2)
        ds = ({0: "batch"}, [{0: "batch", 2: "cache"}] * 4)
        res = CoupleInputsDynamicShapes(
            (torch.ones(1, 2), cache), {}, ds
        ).invalid_dimensions_for_export()
        self.assertEqual(res, ({0: "d=[1]"}, [{0: "d=[1]"}] * 4))

    def test_old_nested_cache_layout_is_accepted(self):
        cache = _cache(batch=2, length=1, n_layers=2)
        ds = {"c": [[{2: "cache"}, {2: "cache"}], [{2: "cache"}, {2: "cache"}]]}
        res = CoupleInputsDynamicShapes((), {"c": cache}, ds).invalid_dimensions_for_export()
        self.assertEqual(res, {"c": [{2: "d=[1]"}] * 4})

    def test_args_and_kwargs_with_names(self):
        class Model(torch.nn.Module):
            def forward(self, x, y):
                return x + y

        x, y = torch.ones(1, 3), torch.ones(2, 3)
        cpl = CoupleInputsDynamicShapes((x,), {"y": y}, {"x": {0: "b"}, "y": {0: "b"}}, Model())
        self.assertEqual(cpl.invalid_dimensions_for_export(), (({0: "d=[1]"},), {}))


class TestReplace(ExtTestCase):
    def test_replace_string_by(self):
        kwargs = {"A": torch.ones(3, 4), "B": [torch.ones(3, 2)]}
        ds = {"A": {0: "batch"}, "B": [{0: "batch", 1: 2}]}
        cpl = CoupleInputsDynamicShapes((), kwargs, ds)
        self.assertEqual(cpl.replace_string_by(), {"A": {0: DYN}, "B": [{0: DYN, 1: 2}]})
        auto = Dim.AUTO
        self.assertEqual(cpl.replace_string_by(auto), {"A": {0: auto}, "B": [{0: auto, 1: 2}]})
        self.assertEqual(ds, {"A": {0: "batch"}, "B": [{0: "batch", 1: 2}]})

    def test_replace_by_string(self):
        batch = Dim("batch")
        ds = ({0: batch, 1: DYN}, {0: batch, 1: Dim.AUTO, 2: batch + 1, 3: "seq"})
        args = (torch.ones(2, 3), torch.ones(2, 3, 3, 4))
        self.assertEqual(
            CoupleInputsDynamicShapes(args, {}, ds).replace_by_string(),
            ({0: "batch", 1: "Dim0"}, {0: "batch", 1: "Dim1", 2: "batch + 1", 3: "seq"}),
        )

    def test_dynamic_shapes_from_model_inputs(self):
        from onnx_diagnostic.export import ModelInputs

        class Model(torch.nn.Module):
            def forward(self, x, y=None):
                return x + y

        sets = [
            ((torch.ones(2, 3),), dict(y=torch.ones(2, 3))),
            ((torch.ones(3, 3),), dict(y=torch.ones(3, 3))),
        ]
        ds = ModelInputs(Model(), sets).guess_dynamic_shapes()
        cpl = CoupleInputsDynamicShapes(*sets[0], ds)
        self.assertEqual(cpl.replace_by_string(), (({0: "Dim0"},), {"y": {0: "Dim1"}}))


class TestChangeDynamicDimensions(ExtTestCase):
    def test_named_dimensions_change_together(self):
        kwargs = {"A": torch.rand(3, 4), "B": (torch.rand(3, 15), torch.rand(3, 20))}
        ds = {"A": {0: "batch"}, "B": ({0: "batch"}, {0: "batch", 1: "seq"})}
        new = CoupleInputsDynamicShapes((), kwargs, ds).change_dynamic_dimensions()
        self.assertEqual(string_type(new, with_shape=True), "dict(A:T1s4x4,B:(T1s4x15,T1s4x21))")
        # values repeat the existing ones
        self.assertEqualArray(new["A"][3], kwargs["A"][0])
        self.assertEqualArray(new["B"][1][:3, 20], kwargs["B"][1][:, 0])
        self.assertEqual(tuple(kwargs["A"].shape), (3, 4))

    def test_desired_values_and_only_desired(self):
        args = (torch.rand(3, 5), torch.rand(3, 7))
        ds = ({0: "batch", 1: "seq"}, {0: "batch", 1: DYN})
        cpl = CoupleInputsDynamicShapes(args, {}, ds)
        new = cpl.change_dynamic_dimensions({"seq": 2})
        self.assertEqual([tuple(t.shape) for t in new], [(4, 2), (4, 8)])
        new = cpl.change_dynamic_dimensions({"seq": 9}, only_desired=True)
        self.assertEqual([tuple(t.shape) for t in new], [(3, 9), (3, 7)])
        new_args, new_kwargs = cpl.change_dynamic_dimensions(args_kwargs=True)
        self.assertEqual((len(new_args), new_kwargs), (2, {}))

    def test_derived_dimension_follows_its_root(self):
        seq = Dim("seq")
        args = (torch.rand(2, 5), torch.rand(2, 6))
        ds = ({1: seq}, {1: seq + 1})
        new = CoupleInputsDynamicShapes(args, {}, ds).change_dynamic_dimensions({"seq": 9})
        self.assertEqual([tuple(t.shape) for t in new], [(2, 9), (2, 10)])
        new = CoupleInputsDynamicShapes(
            args, {}, ({1: seq + 1}, {1: seq})
        ).change_dynamic_dimensions()
        self.assertEqual([tuple(t.shape) for t in new], [(2, 6), (2, 5)])

    def test_cache_is_rebuilt(self):
        cache = _cache(batch=2, length=3, n_layers=2)
        kwargs = dict(input_ids=torch.ones((2, 1), dtype=torch.int64), cache=cache)
        ds = dict(input_ids={0: "batch"}, cache=[{0: "batch", 2: "length"}] * 4)
        new = CoupleInputsDynamicShapes((), kwargs, ds).change_dynamic_dimensions({"length": 5})
        self.assertEqual(type(new["cache"]), type(cache))
        self.assertEqual(tuple(new["cache"].layers[1].keys.shape), (3, 4, 5, 8))
        self.assertEqual(tuple(new["input_ids"].shape), (3, 1))
        self.assertEqual(tuple(cache.layers[1].keys.shape), (2, 4, 3, 8))

    def test_encoder_decoder_cache(self):
        ed = make_encoder_decoder_cache(_cache(length=3), _cache(length=5))
        ds = {"c": [[{2: "length"}] * 4, [{2: "enc"}] * 4]}
        new = CoupleInputsDynamicShapes((), {"c": ed}, ds).change_dynamic_dimensions(
            {"length": 4, "enc": 6}, only_desired=True
        )
        self.assertEqual(type(new["c"]), type(ed))
        self.assertEqual(new["c"].self_attention_cache.layers[0].keys.shape[2], 4)
        self.assertEqual(new["c"].cross_attention_cache.layers[1].values.shape[2], 6)

    def test_empty_tensor_and_bfloat16(self):
        args = (torch.zeros((0, 3), dtype=torch.bfloat16),)
        new = CoupleInputsDynamicShapes(args, {}, ({0: "n"},)).change_dynamic_dimensions()
        self.assertEqual((tuple(new[0].shape), new[0].dtype), ((1, 3), torch.bfloat16))

    def test_bad_input(self):
        x = torch.ones(2, 3)
        self.assertRaise(lambda: CoupleInputsDynamicShapes([x], {}, ({},)), TypeError, "args")
        self.assertRaise(lambda: CoupleInputsDynamicShapes((x,), [], ({},)), TypeError, "kwargs")
        self.assertRaise(
            lambda: CoupleInputsDynamicShapes((x,), {}, ({}, {})), ValueError, "2 elements for 1"
        )
        self.assertRaise(
            lambda: CoupleInputsDynamicShapes((), {"x": x}, {"z": {}}), ValueError, "['z']"
        )
        self.assertRaise(
            lambda: CoupleInputsDynamicShapes((), {"x": x}, ({},)), TypeError, "must be a dict"
        )
        self.assertRaise(
            lambda: CoupleInputsDynamicShapes((x,), {"y": x}, {"x": {}, "y": {}}),
            ValueError,
            "args_names",
        )
        self.assertRaise(
            lambda: CoupleInputsDynamicShapes((), {"x": x}, {"x": {5: "a"}}).replace_string_by(),
            ValueError,
            "dynamic_shapes['x']: axes [5]",
        )
        self.assertRaise(
            lambda: CoupleInputsDynamicShapes((), {"x": [x]}, {"x": [{}, {}]}).replace_string_by(),
            ValueError,
            "dynamic_shapes['x']",
        )
        cpl = CoupleInputsDynamicShapes((), {"c": _cache()}, {"c": [{}] * 3})
        self.assertRaise(cpl.invalid_dimensions_for_export, ValueError, "3 elements")
        self.assertRaise(
            lambda: CoupleInputsDynamicShapes((x,), {}, ({},)).change_dynamic_dimensions({"a": -1}),
            ValueError,
            "desired_values['a']",
        )
        self.assertIn(
            "CoupleInputsDynamicShapes(args=(T1s2x3,)",
            str(CoupleInputsDynamicShapes((x,), {}, None)),
        )

    def test_examples_in_docstrings_run(self):
        self.assertDocstringExamples("onnx_diagnostic.export.couple_inputs")


if __name__ == "__main__":
    unittest.main(verbosity=2)
