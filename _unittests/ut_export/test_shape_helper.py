import unittest

import torch

from onnx_diagnostic.cache_helpers import make_dynamic_cache, make_encoder_decoder_cache
from onnx_diagnostic.export.shape_helper import (
    all_dynamic_shape_from_inputs,
    all_dynamic_shapes_from_inputs,
    guess_dynamic_shapes_from_inputs,
    pytree_children,
)
from onnx_diagnostic.ext_test_case import ExtTestCase

DYN = torch.export.Dim.DYNAMIC


def _cache(batch: int = 2, length: int = 3, n_layers: int = 2):
    return make_dynamic_cache(
        [(torch.randn(batch, 4, length, 8), torch.randn(batch, 4, length, 8))] * n_layers
    )


class TestAllDynamicShapes(ExtTestCase):
    def test_names_per_tensor(self):
        inputs = dict(
            input_ids=torch.ones((2, 3), dtype=torch.int64),
            mask=(torch.ones((2, 5)), None, 3),
            past_key_values=_cache(n_layers=1),
        )
        ds = all_dynamic_shapes_from_inputs(inputs)
        self.assertEqual(
            ds,
            {
                "input_ids": {0: "d_0_0", 1: "d_0_1"},
                "mask": ({0: "d_1_0", 1: "d_1_1"}, None, None),
                "past_key_values": [
                    {0: "d_2_0", 1: "d_2_1", 2: "d_2_2", 3: "d_2_3"},
                    {0: "d_3_0", 1: "d_3_1", 2: "d_3_2", 3: "d_3_3"},
                ],
            },
        )
        self.assertIs(all_dynamic_shape_from_inputs, all_dynamic_shapes_from_inputs)

    def test_prefix_and_dim_values(self):
        self.assertEqual(all_dynamic_shapes_from_inputs([torch.ones(2)], "b"), [{0: "b_0_0"}])
        ds = all_dynamic_shapes_from_inputs((torch.ones(2, 3),), DYN)
        self.assertEqual(ds, ({0: DYN, 1: DYN},))
        ds = all_dynamic_shapes_from_inputs(torch.ones(()), torch.export.Dim.AUTO)
        self.assertEqual(ds, {})

    def test_canonical_cache_layout(self):
        cache = _cache(n_layers=3)
        ds = all_dynamic_shapes_from_inputs(cache, DYN)
        self.assertIsInstance(ds, list)
        self.assertEqual(len(ds), 6)  # key_0, value_0, key_1, value_1, key_2, value_2

    def test_encoder_decoder_cache(self):
        ed = make_encoder_decoder_cache(_cache(), _cache(length=7))
        ds = all_dynamic_shapes_from_inputs(dict(c=ed), DYN)
        self.assertEqual([len(x) for x in ds["c"]], [4, 4])

    def test_export_accepts_them(self):
        class Model(torch.nn.Module):
            def forward(self, x, c):
                return x.sum() + c.layers[0].keys.sum()

        inputs = dict(x=torch.ones(3, 4), c=_cache(n_layers=1))
        ds = all_dynamic_shapes_from_inputs(inputs, DYN)
        ds["c"] = [{0: DYN, 2: DYN}] * 2
        ep = torch.export.export(Model(), (), kwargs=inputs, dynamic_shapes=ds, strict=False)
        # x: 2 dynamic dimensions, cache: batch and length (batch shared with nothing)
        self.assertGreaterOrEqual(len(ep.range_constraints), 3)

    def test_empty_and_bad_input(self):
        self.assertEqual(all_dynamic_shapes_from_inputs({}), {})
        self.assertEqual(all_dynamic_shapes_from_inputs(()), ())
        self.assertRaise(lambda: all_dynamic_shapes_from_inputs([torch.ones(1)], ""), ValueError)
        self.assertRaise(lambda: all_dynamic_shapes_from_inputs([torch.ones(1)], None), TypeError)

        class Unknown:
            pass

        self.assertRaise(
            lambda: all_dynamic_shapes_from_inputs(dict(a=[Unknown()])),
            TypeError,
            "inputs['a'][0]: type Unknown is not registered",
        )

    def test_pytree_children(self):
        children, context = pytree_children(_cache(n_layers=2))
        self.assertEqual(len(children), 4)
        self.assertRaise(lambda: pytree_children(object(), "x"), TypeError, "x: type object")


class TestGuessDynamicShapes(ExtTestCase):
    def test_kwargs_and_cache(self):
        inputs = [
            dict(input_ids=torch.ones((2, 3), dtype=torch.int64), past_key_values=_cache(2, 5)),
            dict(input_ids=torch.ones((3, 4), dtype=torch.int64), past_key_values=_cache(3, 6)),
        ]
        args, kwargs = guess_dynamic_shapes_from_inputs(inputs)
        self.assertEqual(args, ())
        self.assertEqual(kwargs["input_ids"], {0: DYN, 1: DYN})
        self.assertEqual(kwargs["past_key_values"], [{0: DYN, 2: DYN}] * 4)

    def test_auto_values(self):
        inputs = [(torch.ones(2, 3), torch.ones(5)), (torch.ones(2, 4), torch.ones(6))]
        self.assertEqual(guess_dynamic_shapes_from_inputs(inputs)[0], ({1: DYN}, {0: DYN}))
        auto = guess_dynamic_shapes_from_inputs(inputs, auto=True)[0]
        self.assertEqual(auto, ({1: torch.export.Dim.AUTO}, {0: torch.export.Dim.AUTO}))
        self.assertEqual(
            guess_dynamic_shapes_from_inputs(inputs, auto="s")[0], ({1: "s_0"}, {0: "s_1"})
        )
        named = guess_dynamic_shapes_from_inputs(inputs, auto="dim")[0]
        self.assertIsInstance(named[0][1], torch.export.Dim)

    def test_single_set_is_static_with_warning(self):
        with self.assertWarns(UserWarning):
            self.assertEqual(guess_dynamic_shapes_from_inputs([(torch.ones(2),)]), (({},), {}))

    def test_bad_input(self):
        from onnx_diagnostic.export.dynamic_shapes import DynamicShapesError

        self.assertRaise(lambda: guess_dynamic_shapes_from_inputs([]), ValueError)
        self.assertRaise(
            lambda: guess_dynamic_shapes_from_inputs(
                [dict(x=torch.ones(2)), dict(y=torch.ones(2))]
            ),
            DynamicShapesError,
            "named arguments",
        )
        self.assertRaise(
            lambda: guess_dynamic_shapes_from_inputs([(torch.ones(2),)], auto=""), ValueError
        )

    def test_examples_in_docstrings_run(self):
        self.assertDocstringExamples("onnx_diagnostic.export.shape_helper")


if __name__ == "__main__":
    unittest.main(verbosity=2)
