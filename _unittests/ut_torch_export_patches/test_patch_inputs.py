"""Tests of :mod:`onnx_diagnostic.torch_export_patches.patch_inputs`."""

import copy
import unittest

import torch

from onnx_diagnostic.cache_helpers import CacheInputError, get_cache_kv, make_dynamic_cache
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.torch_export_patches.patch_inputs import (
    convert_legacy_caches,
    use_dyn_not_str,
)

DYN = torch.export.Dim.DYNAMIC


def _kv(batch=2, heads=4, seq=3, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, heads, seq, dim, generator=g),
        torch.randn(batch, heads, seq, dim, generator=g),
    )


class TestUseDynNotStr(ExtTestCase):
    def test_strings_become_dynamic(self):
        out = use_dyn_not_str({"input_ids": {0: "batch", 1: "seq_length"}})
        self.assertEqual(list(out), ["input_ids"])
        self.assertEqual(list(out["input_ids"]), [0, 1])
        self.assertIs(out["input_ids"][0], DYN)
        self.assertIs(out["input_ids"][1], DYN)

    def test_nested_dicts_lists_tuples(self):
        ds = {
            "input_ids": {0: "batch", 1: "seq"},
            "past_key_values": [{0: "batch", 2: "cache"}, {0: "batch", 2: "cache"}],
            "pair": ({0: "batch"}, [{1: "seq"}, ({2: "x"},)]),
        }
        out = use_dyn_not_str(ds)
        self.assertIsInstance(out["past_key_values"], list)
        self.assertIsInstance(out["pair"], tuple)
        self.assertIsInstance(out["pair"][1], list)
        self.assertIsInstance(out["pair"][1][1], tuple)
        self.assertIs(out["past_key_values"][1][2], DYN)
        self.assertIs(out["pair"][0][0], DYN)
        self.assertIs(out["pair"][1][0][1], DYN)
        self.assertIs(out["pair"][1][1][0][2], DYN)
        self.assertEqual(list(out["past_key_values"][0]), [0, 2])

    def test_positional_form(self):
        out = use_dyn_not_str(({0: "batch"}, None, [{0: "batch", 2: "cache"}]))
        self.assertIsInstance(out, tuple)
        self.assertEqual(len(out), 3)
        self.assertIs(out[0][0], DYN)
        self.assertIsNone(out[1])
        self.assertIs(out[2][0][2], DYN)

    def test_keeps_ints_none_and_dims(self):
        batch = torch.export.Dim("batch", min=1, max=64)
        ds = {
            "a": {0: batch, 1: "seq", 2: None, 3: 7},
            "b": None,
            "c": {0: batch * 2},
            "d": {0: torch.export.Dim.AUTO, 1: torch.export.Dim.STATIC, 2: DYN},
        }
        out = use_dyn_not_str(ds)
        self.assertIs(out["a"][0], batch)
        self.assertIs(out["a"][1], DYN)
        self.assertIsNone(out["a"][2])
        self.assertEqual(out["a"][3], 7)
        self.assertIsNone(out["b"])
        self.assertIs(out["c"][0], ds["c"][0])
        self.assertIs(out["d"][0], torch.export.Dim.AUTO)
        self.assertIs(out["d"][1], torch.export.Dim.STATIC)
        self.assertIs(out["d"][2], DYN)

    def test_top_level_values(self):
        self.assertIsNone(use_dyn_not_str(None))
        self.assertIs(use_dyn_not_str("batch"), DYN)
        self.assertEqual(use_dyn_not_str({}), {})
        self.assertEqual(use_dyn_not_str([]), [])
        self.assertEqual(use_dyn_not_str(()), ())

    def test_default_value(self):
        out = use_dyn_not_str({"x": {0: "batch", 1: 3}}, default_value=torch.export.Dim.AUTO)
        self.assertIs(out["x"][0], torch.export.Dim.AUTO)
        self.assertEqual(out["x"][1], 3)

    def test_copies_and_does_not_mutate(self):
        inner = {0: "batch", 2: "cache"}
        cache_ds = [inner, {0: "batch"}]
        ds = {"x": {0: "batch"}, "past_key_values": cache_ds}
        expected = copy.deepcopy(ds)
        out = use_dyn_not_str(ds)
        self.assertEqual(ds, expected)
        self.assertIs(ds["past_key_values"], cache_ds)
        self.assertIs(ds["past_key_values"][0], inner)
        self.assertIsNot(out, ds)
        self.assertIsNot(out["past_key_values"], cache_ds)
        self.assertIsNot(out["past_key_values"][0], inner)
        # modifying the result does not modify the input
        out["past_key_values"][0][3] = DYN
        self.assertNotIn(3, inner)

    def test_result_exports(self):
        class Model(torch.nn.Module):
            def forward(self, x, cache):
                keys, values = get_cache_kv(cache)
                return x + keys[0].sum(dim=2) + values[0].sum(dim=2)

        cache = make_dynamic_cache([_kv()])
        ds = use_dyn_not_str(({0: "batch"}, [{0: "batch", 2: "cache"}, {0: "batch", 2: "cache"}]))
        ep = torch.export.export(
            Model(), (torch.randn(2, 4, 8), cache), dynamic_shapes=ds, strict=False
        )
        x2, c2 = torch.randn(3, 4, 8), make_dynamic_cache([_kv(batch=3, seq=5, seed=1)])
        self.assertEqualArray(Model()(x2, c2), ep.module()(x2, c2), atol=1e-5)

    def test_bad_input_names_the_path(self):
        with self.assertRaises(TypeError) as cm:
            use_dyn_not_str({"past_key_values": [{0: "batch"}, {2: object()}]})
        msg = str(cm.exception)
        self.assertIn("dynamic_shapes['past_key_values'][1][2]", msg)
        self.assertIn("object", msg)

    def test_bad_input_at_top_level_and_in_tuples(self):
        cases = [
            (object(), "dynamic_shapes:"),
            (({0: "batch"}, 1.5), "dynamic_shapes[1]:"),
            ([{0: {"batch"}}], "dynamic_shapes[0][0]:"),
            ({"x": torch.zeros(2)}, "dynamic_shapes['x']:"),
        ]
        for bad, path in cases:
            with self.subTest(path=path):
                with self.assertRaises(TypeError) as cm:
                    use_dyn_not_str(bad)
                self.assertIn(path, str(cm.exception))


class TestConvertLegacyCaches(ExtTestCase):
    def test_tuple_of_pairs_becomes_a_dynamic_cache(self):
        pairs = (_kv(seed=0), _kv(seed=1))
        inputs = {"input_ids": torch.ones(2, 3, dtype=torch.int64), "past_key_values": pairs}
        out = convert_legacy_caches(inputs)
        self.assertIsNot(out, inputs)
        self.assertIs(out["input_ids"], inputs["input_ids"])
        cache = out["past_key_values"]
        self.assertEqual(type(cache).__name__, "DynamicCache")
        keys, values = get_cache_kv(cache)
        self.assertEqual(len(keys), 2)
        for i, (k, v) in enumerate(pairs):
            self.assertIs(keys[i], k)
            self.assertIs(values[i], v)
        # the input dictionary is not modified
        self.assertIs(inputs["past_key_values"], pairs)
        self.assertEqual(list(inputs), ["input_ids", "past_key_values"])

    def test_list_of_lists(self):
        k, v = _kv()
        out = convert_legacy_caches({"past_key_values": [[k, v]]})
        self.assertIs(get_cache_kv(out["past_key_values"])[0][0], k)

    def test_identity_when_nothing_to_convert(self):
        cache = make_dynamic_cache([_kv()])
        cases = [
            {"input_ids": torch.ones(2, 3)},
            {"past_key_values": cache},
            {"past_key_values": None},
            {"past_key_values": ()},
            {},
            torch.ones(2),
            None,
            (torch.ones(2), torch.ones(3)),
            [{"past_key_values": (_kv(),)}],
        ]
        for inputs in cases:
            with self.subTest(inputs=type(inputs).__name__):
                self.assertIs(convert_legacy_caches(inputs), inputs)

    def test_not_pairs_of_tensors_are_left_alone(self):
        k, v = _kv()
        for pkv in (((k, v, v),), ((k, 1),), ((k, v), "x")):
            with self.subTest(pkv=len(pkv)):
                inputs = {"past_key_values": pkv}
                self.assertIs(convert_legacy_caches(inputs), inputs)

    def test_args_kwargs_form(self):
        args = (torch.ones(2, 3),)
        kwargs = {"attention_mask": torch.ones(2, 6), "past_key_values": (_kv(),)}
        out = convert_legacy_caches((args, kwargs))
        self.assertIsInstance(out, tuple)
        self.assertEqual(len(out), 2)
        self.assertIs(out[0], args)
        self.assertIsNot(out[1], kwargs)
        self.assertIs(out[1]["attention_mask"], kwargs["attention_mask"])
        self.assertEqual(type(out[1]["past_key_values"]).__name__, "DynamicCache")
        self.assertIsInstance(kwargs["past_key_values"], tuple)

    def test_args_kwargs_form_identity(self):
        inputs = ((torch.ones(2),), {"x": torch.ones(2)})
        self.assertIs(convert_legacy_caches(inputs), inputs)

    def test_converted_inputs_run_a_model(self):
        class Model(torch.nn.Module):
            def forward(self, input_ids, past_key_values=None):
                keys, _ = get_cache_kv(past_key_values)
                return input_ids.float().sum() + keys[0].sum()

        pairs = (_kv(),)
        out = convert_legacy_caches({"input_ids": torch.ones(2, 3), "past_key_values": pairs})
        self.assertAlmostEqual(Model()(**out), torch.tensor(6.0) + pairs[0][0].sum(), atol=1e-4)

    def test_bad_legacy_cache_raises(self):
        k, v = _kv()
        # rank 3 is a valid full attention layer since make_dynamic_cache follows
        # DynamicLayer (onnx-diagnostic), rank 2 is not
        with self.assertRaises(CacheInputError):
            convert_legacy_caches({"past_key_values": ((k[0, 0], v[0, 0]),)})

    # patch_inputs.py, convert_legacy_caches: the error comes from make_dynamic_cache and
    # names its own argument (``key_value_pairs[0] key must have 4 dimensions``), not the
    # place in the user's inputs (``past_key_values[0]``) as DESIGN.md asks.
    def test_bad_legacy_cache_error_names_past_key_values(self):
        k, v = _kv()
        with self.assertRaisesRegex(CacheInputError, r"past_key_values\[1\]"):
            convert_legacy_caches({"past_key_values": ((k, v), (k[0], v[0]))})


class TestConvertDynamicAxes(ExtTestCase):
    def test_args_cache_and_outputs(self):
        from onnx_diagnostic.cache_helpers import get_cache_kv
        from onnx_diagnostic.helpers.compat import cache_arg_name
        from onnx_diagnostic.torch_export_patches.patch_inputs import (
            convert_dynamic_axes_into_dynamic_shapes,
        )

        name = cache_arg_name()

        class Model(torch.nn.Module):
            def forward(self, input_ids, attention_mask=None, **kwargs):
                return input_ids

        kv = [(torch.zeros(2, 4, 3, 8), torch.zeros(2, 4, 3, 8)) for _ in range(2)]
        dynamic_axes = {
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": [0, 1],
            "past_key_values.0.key": {0: "batch", 2: "past"},
            "past_key_values.0.value": {0: "batch", 2: "past"},
            "past_key_values.1.key": {0: "batch", 2: "past"},
            "past_key_values.1.value": {0: "batch", 2: "past"},
            "logits": {0: "batch"},
            "present.0.key": {0: "batch"},
        }
        args, kwargs, ds = convert_dynamic_axes_into_dynamic_shapes(
            Model(),
            (torch.zeros(2, 3, dtype=torch.int64),),
            {"attention_mask": torch.ones(2, 6), name: kv},
            dynamic_axes=dynamic_axes,
        )
        self.assertEqual(args, ())
        self.assertEqual(list(kwargs), ["input_ids", "attention_mask", name])
        self.assertEqual(len(get_cache_kv(kwargs[name])[0]), 2)
        self.assertEqual(ds["input_ids"], {0: "batch", 1: "seq"})
        self.assertEqual(ds["attention_mask"], {0: "attention_mask_0", 1: "attention_mask_1"})
        self.assertEqual(ds[name], [{0: "batch", 2: "past"}] * 4)
        self.assertNotIn("logits", ds)

    def test_prefix_mapping_and_errors(self):
        from onnx_diagnostic.torch_export_patches.patch_inputs import (
            convert_dynamic_axes_into_dynamic_shapes as conv,
        )

        def f(x, kv):
            return x

        t = torch.zeros(1, 2, 3, 4)
        _, kw, ds = conv(
            f, (t, [(t, t)]), dynamic_axes={"pkv.0.key": {2: "s"}}, prefix_mapping={"pkv": "kv"}
        )
        self.assertEqual(ds, {"kv": [{2: "s"}, {}]})
        self.assertRaise(lambda: conv(f, (t, t, t)), ValueError, "positional parameters")
        self.assertRaise(lambda: conv(f, (t,), {"x": t}), ValueError, "'x' is given in args")
        self.assertRaise(lambda: conv(f, dynamic_axes=[1]), TypeError, "dynamic_axes must be")
        self.assertRaise(
            lambda: conv(f, (t, [(t, t)]), dynamic_axes={"kv.3.key": {0: "b"}}),
            ValueError,
            "holds 1 layers only",
        )
        self.assertEqual(conv(f), ((), {}, {}))


if __name__ == "__main__":
    unittest.main(verbosity=2)
