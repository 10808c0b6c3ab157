import collections
import math
import subprocess
import sys
import unittest

import numpy as np
import torch
from torch.export import Dim
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutputWithPast

from onnx_diagnostic.cache_helpers import (
    make_dynamic_cache,
    make_encoder_decoder_cache,
    make_sliding_window_cache,
    make_static_cache,
)
from onnx_diagnostic.ext_test_case import ExtTestCase, hide_stdout, requires_cache_classes
from onnx_diagnostic.helpers import max_diff, string_type
from onnx_diagnostic.helpers.helper import flatten_object
from onnx_diagnostic.helpers.compat import output_cache_field

#: the cache field of model outputs as the installed transformers names it
OUT = output_cache_field()


def _cache(*shapes, value=None):
    return make_dynamic_cache(
        [
            (
                torch.full(s, value) if value is not None else torch.rand(s),
                torch.full(s, value) if value is not None else torch.rand(s),
            )
            for s in shapes
        ]
    )


class TestStringTypeTensors(ExtTestCase):
    def test_tensor_with_shape(self):
        self.assertEqual(
            string_type(torch.zeros((2, 30), dtype=torch.int64), with_shape=True), "T7s2x30"
        )
        self.assertEqual(string_type(torch.zeros((2, 1, 30, 96)), with_shape=True), "T1s2x1x30x96")

    def test_tensor_0d_with_shape(self):
        self.assertEqual(string_type(torch.tensor(1.0), with_shape=True), "T1s")

    def test_tensor_rank_without_shape(self):
        self.assertEqual(string_type(torch.zeros((2, 3))), "T1r2")
        self.assertEqual(string_type(torch.tensor(3)), "T7r0")

    def test_onnx_element_types(self):
        expected = {
            torch.float32: 1,
            torch.uint8: 2,
            torch.int8: 3,
            torch.int16: 5,
            torch.int32: 6,
            torch.int64: 7,
            torch.bool: 9,
            torch.float16: 10,
            torch.float64: 11,
            torch.complex64: 14,
            torch.complex128: 15,
            torch.bfloat16: 16,
            torch.float8_e4m3fn: 17,
            torch.float8_e4m3fnuz: 18,
            torch.float8_e5m2: 19,
            torch.float8_e5m2fnuz: 20,
        }
        for dtype, elem in expected.items():
            with self.subTest(dtype=dtype):
                t = torch.zeros((2, 3)).to(dtype)
                self.assertEqual(string_type(t, with_shape=True), f"T{elem}s2x3")

    def test_numpy_arrays(self):
        self.assertEqual(string_type(np.zeros((2, 3), dtype=np.float32), with_shape=True), "A1s2x3")
        self.assertEqual(string_type(np.arange(4)), "A7r1")
        self.assertEqual(string_type(np.zeros((2,), dtype=np.float16), with_shape=True), "A10s2")
        self.assertEqual(string_type(np.array([True]), with_shape=True), "A9s1")

    def test_numpy_min_max(self):
        self.assertEqual(
            string_type(np.arange(8), with_shape=True, with_min_max=True), "A7s8[0,7:A3.5]"
        )
        self.assertEqual(
            string_type(np.array([1.0, np.nan, 3.0]), with_shape=True, with_min_max=True),
            "A11s3[1.0,3.0:A2.0N1nans]",
        )
        self.assertEqual(
            string_type(np.zeros((0, 2)), with_shape=True, with_min_max=True), "A11s0x2[empty]"
        )

    def test_min_max_integers(self):
        self.assertEqual(
            string_type(torch.arange(8), with_shape=True, with_min_max=True), "T7s8[0,7:A3.5]"
        )
        self.assertEqual(
            string_type(torch.tensor([[2803]]), with_shape=True, with_min_max=True),
            "T7s1x1[2803,2803:A2803.0]",
        )

    def test_min_max_float32_repr_precision(self):
        self.assertEqual(
            string_type(torch.tensor([0.1, 0.2]), with_shape=True, with_min_max=True),
            "T1s2[0.10000000149011612,0.20000000298023224:A0.15000000223517418]",
        )

    def test_min_max_without_shape(self):
        self.assertEqual(
            string_type(torch.tensor([[1.0, 3.0]]), with_min_max=True), "T1r2[1.0,3.0:A2.0]"
        )

    def test_min_max_empty(self):
        self.assertEqual(
            string_type(torch.zeros((0, 3)), with_shape=True, with_min_max=True), "T1s0x3[empty]"
        )

    def test_min_max_0d(self):
        self.assertEqual(
            string_type(torch.tensor(1.5), with_shape=True, with_min_max=True), "T1s[1.5,1.5:A1.5]"
        )

    def test_min_max_nan_counted(self):
        t = torch.tensor([1.0, float("nan"), 3.0, float("nan")])
        self.assertEqual(
            string_type(t, with_shape=True, with_min_max=True), "T1s4[1.0,3.0:A2.0N2nans]"
        )

    def test_min_max_all_nan(self):
        t = torch.full((3,), float("nan"))
        self.assertEqual(
            string_type(t, with_shape=True, with_min_max=True), "T1s3[nan,nan:AnanN3nans]"
        )

    def test_min_max_inf(self):
        t = torch.tensor([1.0, float("inf")])
        self.assertEqual(string_type(t, with_shape=True, with_min_max=True), "T1s2[1.0,inf:Ainf]")

    def test_min_max_bool_as_int(self):
        t = torch.tensor([True, False, True])
        self.assertEqual(
            string_type(t, with_shape=True, with_min_max=True), "T9s3[0,1:A0.6666666666666666]"
        )

    def test_min_max_bfloat16_float16_float8(self):
        t = torch.tensor([1.0, 2.0])
        self.assertEqual(
            string_type(t.to(torch.bfloat16), with_shape=True, with_min_max=True),
            "T16s2[1.0,2.0:A1.5]",
        )
        self.assertEqual(
            string_type(t.to(torch.float16), with_shape=True, with_min_max=True),
            "T10s2[1.0,2.0:A1.5]",
        )
        self.assertEqual(
            string_type(t.to(torch.float8_e4m3fn), with_shape=True, with_min_max=True),
            "T17s2[1.0,2.0:A1.5]",
        )

    def test_min_max_complex_has_no_statistics(self):
        t = torch.zeros(2, dtype=torch.complex64)
        self.assertEqual(string_type(t, with_shape=True, with_min_max=True), "T14s2")

    def test_meta_tensor_has_no_statistics(self):
        t = torch.zeros((2, 3), device="meta")
        self.assertEqual(string_type(t, with_shape=True, with_min_max=True), "T1s2x3")

    def test_no_statistics_while_exporting(self):
        seen = []

        class Model(torch.nn.Module):
            def forward(self, x):
                seen.append(string_type((x, x.shape[0]), with_shape=True, with_min_max=True))
                return x + 1

        ep = torch.export.export(Model(), (torch.rand(3, 4),), dynamic_shapes=({0: Dim.DYNAMIC},))
        self.assertEqual(len(seen), 1)
        self.assertRegex(seen[0], r"^\(T1ss[0-9]+x4,SymInt\(s[0-9]+\)\)$")
        # nothing but the addition in the graph
        targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
        self.assertEqual(targets, [torch.ops.aten.add.Tensor])

    def test_fake_tensor_has_no_statistics(self):
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            t = torch.rand(2, 3)
        self.assertEqual(string_type(t, with_shape=True, with_min_max=True), "T1s2x3")

    def test_parameter(self):
        p = torch.nn.Parameter(torch.zeros(2, 3))
        self.assertEqual(string_type(p, with_shape=True), "T1s2x3")

    def test_symbolic_shape(self):
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        s = ShapeEnv().create_unbacked_symint()
        self.assertEqual(string_type(s), "SymInt(u0)")


class TestStringTypeContainers(ExtTestCase):
    def test_tuples(self):
        t = torch.zeros((2, 30), dtype=torch.int64)
        self.assertEqual(string_type((t,), with_shape=True), "(T7s2x30,)")
        self.assertEqual(string_type((), with_shape=True), "()")
        self.assertEqual(string_type((t, t)), "(T7r2,T7r2)")
        self.assertEqual(string_type(((t,), {}), with_shape=True), "((T7s2x30,),{})")

    def test_lists(self):
        self.assertEqual(string_type([]), "#0[]")
        self.assertEqual(string_type([1, 2.0, [None]]), "#3[int,float,#1[None]]")

    def test_dict_str_keys(self):
        d = dict(a=torch.zeros(2), b=[1])
        self.assertEqual(string_type(d, with_shape=True), "dict(a:T1s2,b:#1[int])")

    def test_empty_dict(self):
        self.assertEqual(string_type({}), "{}")

    def test_dict_other_keys(self):
        ds = {0: Dim("batch"), 1: Dim("length")}
        self.assertEqual(string_type(ds), "{0:Dim(batch),1:Dim(length)}")
        self.assertEqual(string_type({("a", 0): 1}), "{('a', 0):int}")

    def test_dynamic_shapes_seed_002(self):
        ds = dict(input_ids={0: Dim("batch"), 1: Dim("length")})
        self.assertEqual(
            string_type(ds, with_shape=True), "dict(input_ids:{0:Dim(batch),1:Dim(length)})"
        )

    def test_sets(self):
        self.assertEqual(string_type({1.0, 2}), "{float,int}")
        self.assertEqual(string_type(set()), "set()")
        self.assertEqual(string_type(frozenset([None])), "{None}")

    def test_namedtuple_as_tuple(self):
        Point = collections.namedtuple("Point", ["x", "y"])
        self.assertEqual(string_type(Point(1, 2.0)), "(int,float)")

    def test_ordered_dict_subclass(self):
        self.assertEqual(string_type(collections.OrderedDict(a=1)), "dict(a:int)")


class TestStringTypeScalars(ExtTestCase):
    def test_scalars_without_values(self):
        self.assertEqual(string_type([1, 0.5, True, "s", None]), "#5[int,float,bool,str,None]")

    def test_scalars_with_values(self):
        self.assertEqual(
            string_type([5, 0.5, True, "s", None], with_min_max=True),
            "#5[int=5,float=0.5,bool=True,str,None]",
        )

    def test_numpy_scalars(self):
        self.assertEqual(string_type(np.float32(2)), "float32")
        self.assertEqual(string_type(np.int64(3), with_min_max=True), "int64=3")

    def test_dims_and_hints(self):
        self.assertEqual(string_type(Dim("batch")), "Dim(batch)")
        self.assertEqual(string_type(Dim.DYNAMIC), "DYNAMIC")
        self.assertEqual(string_type(Dim.AUTO), "AUTO")
        self.assertEqual(string_type(Dim.STATIC), "STATIC")
        self.assertEqual(string_type(Dim.DYNAMIC(min=2, max=8)), "DYNAMIC(min=2,max=8)")

    def test_derived_dim(self):
        batch = Dim("batch")
        self.assertEqual(string_type(2 * batch), "Dim(2*batch)")
        self.assertEqual(string_type(batch + 1), "Dim(batch + 1)")

    def test_dtype_device(self):
        self.assertEqual(string_type(torch.float32), "float32")
        self.assertEqual(string_type(torch.bfloat16), "bfloat16")
        self.assertEqual(string_type(torch.device("cpu")), "cpu")
        self.assertEqual(string_type(np.dtype("float16")), "float16")

    def test_other_objects_give_class_name(self):
        class Anything:
            pass

        self.assertEqual(string_type(Anything()), "Anything")
        self.assertEqual(string_type(torch.nn.Linear(2, 2)), "Linear")
        self.assertEqual(string_type(object()), "object")

    def test_never_raises(self):
        class BrokenTuple(tuple):
            def __iter__(self):
                raise RuntimeError("broken")

        self.assertEqual(string_type(BrokenTuple((1, 2))), "BrokenTuple")
        self.assertEqual(string_type([BrokenTuple((1, 2))]), "list")


class TestStringTypeTransformers(ExtTestCase):
    def test_dynamic_cache(self):
        cache = _cache((2, 1, 30, 96))
        self.assertEqual(
            string_type(cache, with_shape=True),
            "DynamicCache(key_cache=#1[T1s2x1x30x96], value_cache=#1[T1s2x1x30x96])",
        )

    def test_dynamic_cache_two_layers_seed_001(self):
        cache = _cache((2, 4, 3, 7), (2, 4, 3, 7))
        self.assertEqual(
            string_type((cache, torch.zeros((1, 1, 1, 7))), with_shape=True),
            "(DynamicCache(key_cache=#2[T1s2x4x3x7,T1s2x4x3x7], "
            "value_cache=#2[T1s2x4x3x7,T1s2x4x3x7]),T1s1x1x1x7)",
        )

    def test_empty_dynamic_cache(self):
        self.assertEqual(
            string_type(make_dynamic_cache([]), with_shape=True),
            "DynamicCache(key_cache=#0[], value_cache=#0[])",
        )

    def test_dynamic_cache_min_max(self):
        cache = _cache((1, 1, 2, 2), value=0.5)
        self.assertEqual(
            string_type(cache, with_shape=True, with_min_max=True),
            "DynamicCache(key_cache=#1[T1s1x1x2x2[0.5,0.5:A0.5]], "
            "value_cache=#1[T1s1x1x2x2[0.5,0.5:A0.5]])",
        )

    def test_sliding_layers_are_listed(self):
        t = torch.zeros((1, 2, 3, 4))
        cache = make_dynamic_cache(
            [(t, t), (t, t)],
            layer_types=["sliding_attention", "full_attention"],
            sliding_window=4,
        )
        self.assertEqual(
            string_type(cache, with_shape=True),
            "DynamicCache(key_cache=#2[T1s1x2x3x4,T1s1x2x3x4], "
            "value_cache=#2[T1s1x2x3x4,T1s1x2x3x4], layers=[sliding,full])",
        )

    def test_only_sliding_layers_are_listed(self):
        t = torch.zeros((1, 2, 3, 4))
        cache = make_sliding_window_cache([(t, t)], 8)
        self.assertEqual(
            string_type(cache),
            "DynamicCache(key_cache=#1[T1r4], value_cache=#1[T1r4], layers=[sliding])",
        )

    def test_encoder_decoder_cache(self):
        cache = make_encoder_decoder_cache(_cache((1, 2, 3, 4)), _cache((1, 2, 5, 4)))
        self.assertEqual(
            string_type(cache, with_shape=True),
            "EncoderDecoderCache("
            "self_attention_cache=DynamicCache(key_cache=#1[T1s1x2x3x4], "
            "value_cache=#1[T1s1x2x3x4]), "
            "cross_attention_cache=DynamicCache(key_cache=#1[T1s1x2x5x4], "
            "value_cache=#1[T1s1x2x5x4]))",
        )

    def test_static_cache(self):
        t = torch.zeros((1, 2, 3, 4))
        cache = make_static_cache([(t, t)], 6)
        self.assertEqual(
            string_type(cache, with_shape=True),
            "StaticCache(key_cache=#1[T1s1x2x6x4], value_cache=#1[T1s1x2x6x4])",
        )

    def test_model_output(self):
        cache = _cache((2, 1, 33, 96))
        out = CausalLMOutputWithPast(logits=torch.zeros((2, 3, 32000)), **{OUT: cache})
        self.assertEqual(
            string_type(out, with_shape=True),
            "CausalLMOutputWithPast(logits:T1s2x3x32000,"
            f"{OUT}:DynamicCache(key_cache=#1[T1s2x1x33x96], "
            "value_cache=#1[T1s2x1x33x96]))",
        )

    def test_model_output_skips_none(self):
        out = BaseModelOutput(last_hidden_state=torch.zeros(1, 2), hidden_states=None)
        self.assertEqual(string_type(out), "BaseModelOutput(last_hidden_state:T1r2)")

    def test_seed_000_forward_inputs(self):
        inputs = (
            (),
            dict(
                cache_position=torch.arange(8),
                past_key_values=make_dynamic_cache([]),
                input_ids=torch.tensor([[1, 29901, 3, 4, 5, 6, 7, 20]]),
                inputs_embeds=None,
                use_cache=True,
                return_dict=True,
            ),
        )
        self.assertEqual(
            string_type(inputs, with_shape=True, with_min_max=True),
            "((),dict(cache_position:T7s8[0,7:A3.5],"
            "past_key_values:DynamicCache(key_cache=#0[], value_cache=#0[]),"
            "input_ids:T7s1x8[1,29901:A3743.375],inputs_embeds:None,"
            "use_cache:bool=True,return_dict:bool=True))",
        )

    def test_seed_000_tiny_llm_inputs(self):
        inputs = dict(
            input_ids=torch.zeros((2, 3), dtype=torch.int64),
            attention_mask=torch.ones((2, 33), dtype=torch.int64),
            position_ids=torch.zeros((2, 3), dtype=torch.int64),
            past_key_values=_cache((2, 1, 30, 96)),
        )
        self.assertEqual(
            string_type(inputs, with_shape=True),
            "dict(input_ids:T7s2x3,attention_mask:T7s2x33,position_ids:T7s2x3,"
            "past_key_values:DynamicCache(key_cache=#1[T1s2x1x30x96], "
            "value_cache=#1[T1s2x1x30x96]))",
        )

    def test_does_not_import_transformers(self):
        code = (
            "import sys, torch\n"
            "from onnx_diagnostic.helpers import string_type, max_diff\n"
            "from onnx_diagnostic.helpers.helper import flatten_object\n"
            "string_type(dict(a=torch.zeros(2)), with_shape=True, with_min_max=True)\n"
            "max_diff([torch.zeros(2)], [torch.zeros(2)])\n"
            "flatten_object([torch.zeros(2)])\n"
            "print('transformers' in sys.modules)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(out.strip(), "False")


class TestFlattenObject(ExtTestCase):
    def test_nested_order_and_identity(self):
        a, b, c = torch.zeros(1), torch.zeros(2), torch.zeros(3)
        flat = flatten_object((a, [b, None], dict(x=c, y=None)))
        self.assertEqual(len(flat), 3)
        for x, y in zip(flat, [a, b, c]):
            self.assertIs(x, y)

    def test_empty(self):
        self.assertEqual(flatten_object(()), [])
        self.assertEqual(flatten_object(None), [])
        self.assertEqual(flatten_object(make_dynamic_cache([])), [])

    def test_dynamic_cache_canonical_order(self):
        cache = _cache((1, 2, 3, 4), (1, 2, 3, 4))
        k0, k1 = cache.layers[0].keys, cache.layers[1].keys
        v0, v1 = cache.layers[0].values, cache.layers[1].values
        flat = flatten_object(cache)
        self.assertEqual(len(flat), 4)
        for x, y in zip(flat, [k0, v0, k1, v1]):
            self.assertIs(x, y)

    def test_same_order_as_pytree(self):
        cache = _cache((1, 2, 3, 4), (1, 2, 3, 4))
        out = CausalLMOutputWithPast(logits=torch.zeros(2), **{OUT: cache})
        leaves = torch.utils._pytree.tree_leaves(out)
        flat = flatten_object(out)
        self.assertEqual(len(flat), len(leaves))
        for x, y in zip(flat, leaves):
            self.assertIs(x, y)

    def test_model_output_skips_none(self):
        cache = _cache((1, 2, 3, 4))
        logits = torch.zeros(2, 3)
        out = CausalLMOutputWithPast(loss=None, logits=logits, **{OUT: cache})
        flat = flatten_object(out)
        self.assertEqual(len(flat), 3)
        self.assertIs(flat[0], logits)
        self.assertIs(flat[1], cache.layers[0].keys)

    def test_encoder_decoder_cache(self):
        sa, ca = _cache((1, 2, 3, 4)), _cache((1, 2, 5, 4))
        flat = flatten_object(make_encoder_decoder_cache(sa, ca))
        expected = [sa.layers[0].keys, sa.layers[0].values, ca.layers[0].keys, ca.layers[0].values]
        self.assertEqual(len(flat), 4)
        for x, y in zip(flat, expected):
            self.assertIs(x, y)

    def test_scalars_and_numpy(self):
        a = np.zeros(2)
        flat = flatten_object([a, 3, 0.5, np.float32(1)])
        self.assertIs(flat[0], a)
        self.assertEqualArray(flat[1], torch.tensor(3))
        self.assertEqualArray(flat[2], torch.tensor(0.5))
        self.assertEqualArray(flat[3], np.array(1, dtype=np.float32))

    def test_bad_input_names_the_place(self):
        with self.assertRaises(TypeError) as cm:
            flatten_object((torch.zeros(1), dict(text="a")))
        self.assertIn("obj[1]['text']", str(cm.exception))
        self.assertIn("str", str(cm.exception))


class TestMaxDiff(ExtTestCase):
    def test_identical(self):
        t = torch.rand(3, 4)
        d = max_diff(t, t.clone())
        self.assertEqual(
            d, dict(abs=0.0, rel=0.0, sum=0.0, n=12, dnan=0, argm=(0, 0), where="expected")
        )

    def test_values(self):
        d = max_diff((torch.tensor([1.0, 2.0]),), (torch.tensor([1.0, 2.5]),))
        self.assertEqual(d["abs"], 0.5)
        self.assertAlmostEqual(d["rel"], 0.5 / (2 + 1e-5))
        self.assertEqual(d["sum"], 0.5)
        self.assertEqual(d["n"], 2)
        self.assertEqual(d["argm"], (1,))
        self.assertEqual(d["where"], "expected[0]")
        self.assertNotIn("error", d)

    def test_nested_where(self):
        e = dict(a=torch.zeros(2, 2), b=[torch.zeros(3), torch.zeros(1)])
        g = dict(a=torch.zeros(2, 2), b=[torch.tensor([0.0, 0.0, 1.0]), torch.ones(1) * 0.5])
        d = max_diff(e, g)
        self.assertEqual(d["abs"], 1.0)
        self.assertEqual(d["sum"], 1.5)
        self.assertEqual(d["n"], 8)
        self.assertEqual(d["argm"], (2,))
        self.assertEqual(d["where"], "expected['b'][0]")

    def test_caches_and_model_outputs(self):
        cache = _cache((1, 2, 3, 4))
        out = CausalLMOutputWithPast(logits=torch.zeros(2, 3), **{OUT: cache})
        cache2 = make_dynamic_cache([(cache.layers[0].keys.clone(), cache.layers[0].values + 0.25)])
        out2 = CausalLMOutputWithPast(logits=torch.zeros(2, 3), **{OUT: cache2})
        d = max_diff(out, out2)
        self.assertAlmostEqual(d["abs"], 0.25, atol=1e-6)
        self.assertEqual(d["n"], 6 + 2 * 24)
        self.assertEqual(d["where"], f"expected.{OUT}.value_0")

    def test_flat_onnxruntime_outputs(self):
        cache = _cache((1, 2, 3, 4), (1, 2, 3, 4))
        out = CausalLMOutputWithPast(logits=torch.rand(2, 3), **{OUT: cache})
        got = [t.numpy().copy() for t in flatten_object(out)]
        got[3][0, 0, 0, 0] += 1
        d = max_diff(out, got)
        self.assertAlmostEqual(d["abs"], 1.0, atol=1e-6)
        self.assertEqual(d["where"], f"expected.{OUT}.key_1")
        self.assertEqual(d["argm"], (0, 0, 0, 0))
        self.assertEqual(d["n"], 6 + 4 * 24)

    def test_none_outputs_are_skipped_against_flat_list(self):
        t = torch.rand(2, 3)
        d = max_diff((t, None), [t.numpy()])
        self.assertEqual((d["abs"], d["n"]), (0.0, 6))

    def test_single_tensor_against_onnxruntime_list(self):
        t = torch.rand(2, 3)
        d = max_diff(t, [t.numpy()])
        self.assertEqual(d["abs"], 0.0)
        self.assertEqual(d["n"], 6)

    def test_flatten_argument(self):
        e = (torch.zeros(2), [torch.zeros(3)])
        g = [[torch.zeros(2)], (torch.ones(3),)]
        self.assertEqual(max_diff(e, g, flatten=True)["abs"], 1.0)
        self.assertIn("error", max_diff(e, g))

    def test_shape_mismatch_names_the_path(self):
        c1 = make_dynamic_cache([(torch.zeros(2, 4, 3, 7), torch.zeros(2, 4, 3, 7))])
        c2 = make_dynamic_cache([(torch.zeros(3, 4, 4, 8), torch.zeros(3, 4, 4, 8))])
        e = (torch.zeros(1), CausalLMOutputWithPast(logits=torch.zeros(1), **{OUT: c1}))
        g = (torch.zeros(1), CausalLMOutputWithPast(logits=torch.zeros(1), **{OUT: c2}))
        d = max_diff(e, g)
        self.assertEqual(d["abs"], math.inf)
        self.assertEqual(d["error"], f"expected[1].{OUT}.key_0: shape (2, 4, 3, 7) vs (3, 4, 4, 8)")

    def test_structure_mismatches(self):
        self.assertEqual(
            max_diff([torch.zeros(1)], [torch.zeros(1), torch.zeros(1)])["error"],
            "expected: length 1 vs 2",
        )
        self.assertEqual(
            max_diff(dict(a=torch.zeros(1)), dict(b=torch.zeros(1)))["error"],
            "expected: keys ['a'] vs ['b']",
        )
        self.assertEqual(
            max_diff([torch.zeros(1), None], [torch.zeros(1), [torch.zeros(1)]])["error"],
            "expected[1]: None vs #1[T1s1]",
        )
        self.assertEqual(
            max_diff([torch.zeros(1), [torch.zeros(2)]], [[torch.zeros(1)], [torch.zeros(2)]])[
                "error"
            ],
            "expected[0]: T1s1 vs #1[T1s1]",
        )
        self.assertEqual(
            max_diff(_cache((1, 2, 3, 4)), _cache((1, 2, 3, 4), (1, 2, 3, 4)))["error"],
            "expected: 2 tensors vs 4 once flattened "
            "(#2[T1s1x2x3x4,T1s1x2x3x4] vs #4[T1s1x2x3x4,T1s1x2x3x4,T1s1x2x3x4,T1s1x2x3x4])",
        )

    def test_flat_list_too_short(self):
        out = CausalLMOutputWithPast(logits=torch.zeros(2), **{OUT: _cache((1, 1, 1, 1))})
        d = max_diff(out, [np.zeros(2, dtype=np.float32)])
        self.assertEqual(d["abs"], math.inf)
        self.assertIn("3 tensors vs 1 once flattened", d["error"])

    def test_unflattenable_object_is_reported(self):
        d = max_diff([torch.zeros(1), object()], [np.zeros(1)])
        self.assertEqual(d["abs"], math.inf)
        self.assertIn("expected[1]", d["error"])

    def test_strings(self):
        self.assertEqual(max_diff(["a", torch.zeros(1)], ["a", torch.zeros(1)])["abs"], 0)
        self.assertEqual(max_diff(["a"], ["b"])["error"], "expected[0]: str vs str")

    def test_nan(self):
        nan = float("nan")
        d = max_diff(torch.tensor([nan, 1.0, 2.0]), torch.tensor([nan, nan, 2.5]))
        self.assertEqual(d["dnan"], 1)
        self.assertEqual(d["abs"], 0.5)
        self.assertEqual(d["n"], 3)

    def test_inf(self):
        inf = float("inf")
        self.assertEqual(max_diff(torch.tensor([inf, -inf]), torch.tensor([inf, -inf]))["abs"], 0)
        d = max_diff(torch.tensor([inf, 0.0]), torch.tensor([1.0, 0.0]))
        self.assertEqual(d["abs"], inf)
        self.assertEqual(d["rel"], inf)
        self.assertNotIn("error", d)

    def test_mixed_dtypes(self):
        d = max_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5], dtype=torch.float16))
        self.assertEqual(d["abs"], 0.5)
        d = max_diff(torch.tensor([1, 2]), np.array([1.0, 4.0]))
        self.assertEqual(d["abs"], 2.0)
        d = max_diff(torch.tensor([True, False]), torch.tensor([True, True]))
        self.assertEqual(d["abs"], 1.0)
        d = max_diff(torch.tensor([1.0]).to(torch.bfloat16), torch.tensor([1.5]))
        self.assertEqual(d["abs"], 0.5)

    def test_scalars(self):
        self.assertEqual(max_diff(3, 3.5)["abs"], 0.5)
        self.assertEqual(max_diff(torch.tensor(3.0), 3.5)["abs"], 0.5)
        self.assertEqual(max_diff(None, None)["n"], 0)

    def test_zero_d_and_empty(self):
        d = max_diff(torch.tensor(1.0), torch.tensor(1.25))
        self.assertEqual(d["abs"], 0.25)
        self.assertEqual(d["argm"], ())
        d = max_diff(torch.zeros((0, 3)), torch.zeros((0, 3)))
        self.assertEqual((d["abs"], d["n"]), (0.0, 0))
        self.assertEqual(max_diff([], [])["n"], 0)
        # a 0-d array (what onnxruntime returns for a scalar output) stays 0-d
        d = max_diff(torch.tensor(1.0), np.array(1.5, dtype=np.float32))
        self.assertEqual((d["abs"], d.get("error")), (0.5, None))

    def test_complex(self):
        d = max_diff(torch.tensor([1 + 1j]), torch.tensor([1 + 2j]))
        self.assertEqual(d["abs"], 1.0)

    def test_hist(self):
        d = max_diff(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.0, 0.05, 0.5]), hist=[0, 0.1])
        self.assertEqual(d["rep"], {">0": 2, ">0.1": 1})
        self.assertIn(">0.0001", max_diff(torch.zeros(1), torch.zeros(1), hist=True)["rep"])

    @hide_stdout()
    def test_verbose(self):
        _, out, _ = self.capture(lambda: max_diff([torch.zeros(2)], [torch.ones(2)], verbose=2))
        self.assertIn("[max_diff] expected[0]: abs=1.0", out)
        self.assertIn("[max_diff] abs=1.0", out)
        _, out, _ = self.capture(lambda: max_diff([torch.zeros(2)], [], verbose=1))
        self.assertIn("[max_diff] error: expected: length 1 vs 0", out)

    def test_does_not_modify_inputs(self):
        e = [torch.tensor([1.0, 2.0])]
        g = [np.array([1.0, 3.0], dtype=np.float32)]
        max_diff(e, g)
        self.assertEqualArray(e[0], torch.tensor([1.0, 2.0]))
        self.assertEqualArray(g[0], np.array([1.0, 3.0], dtype=np.float32))


class TestDocstrings(ExtTestCase):
    def test_examples_in_docstrings_run(self):
        from onnx_diagnostic.helpers import helper as module_under_test

        self.assertDocstringExamples(module_under_test)

    def test_examples_in_docstrings_of_max_diff_run(self):
        from onnx_diagnostic.helpers import _max_diff

        self.assertDocstringExamples(_max_diff)


# Caches holding the layer classes of transformers 5.23+ (DynamicIndexedLayer,
# LinearAttention*Layer, DummyLayer), built through their public API as the models do
# (see test_serialization.py).


def _cache_class(name):
    from onnx_diagnostic.helpers import compat

    return compat.cache_class(name)


def _filled(cls_name, seed=0, states=0, recurrent=True, **kwargs):
    """A layer holding keys and values (unless states only), ``states`` conv/recurrent states."""
    layer = _cache_class(cls_name)(**kwargs)
    g = torch.Generator().manual_seed(seed)
    if cls_name != "LinearAttentionLayer":
        layer.update(torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 2, 3, 4, generator=g))
    for s in range(states):
        layer.update_conv_state(torch.randn(1, 6, 4, generator=g), state_idx=s)
        if recurrent:
            layer.update_recurrent_state(torch.randn(1, 2, 4, 4, generator=g), state_idx=s)
    return layer


def _layers_cache(*layers):
    cache = _cache_class("DynamicCache")()
    cache.layers = list(layers)
    return cache


def _qwen3_next_cache(seed=0):
    return _layers_cache(
        _filled("LinearAttentionLayer", seed, states=1),
        _filled("LinearAttentionLayer", seed + 1, states=1),
        _filled("DynamicLayer", seed + 2),
    )


class TestStringTypeNewCacheLayers(ExtTestCase):
    @requires_cache_classes("LinearAttentionLayer")
    def test_linear_attention_layers(self):
        self.assertEqual(
            string_type(_qwen3_next_cache(), with_shape=True),
            "DynamicCache(key_cache=#1[T1s1x2x3x4], value_cache=#1[T1s1x2x3x4], "
            "conv_states=#2[T1s1x6x4,T1s1x6x4], recurrent_states=#2[T1s1x2x4x4,T1s1x2x4x4], "
            "layers=[linear,linear,full])",
        )

    @requires_cache_classes("LinearAttentionLayer")
    def test_conv_layers_without_recurrent_states(self):
        cache = _layers_cache(
            _filled("LinearAttentionLayer", states=1, recurrent=False), _filled("DynamicLayer")
        )
        self.assertEqual(
            string_type(cache),
            "DynamicCache(key_cache=#1[T1r4], value_cache=#1[T1r4], conv_states=#1[T1r3], "
            "layers=[linear,full])",
        )

    @requires_cache_classes("DynamicIndexedLayer")
    def test_indexed_layers(self):
        layer = _filled("DynamicIndexedLayer")
        layer.update_indexer(torch.zeros(1, 3, 5))
        layer.indexer_position_ids = torch.arange(3).expand(3, 1, 3).clone()
        cache = _layers_cache(layer, _filled("DynamicIndexedLayer", 1))
        self.assertEqual(
            string_type(cache, with_shape=True),
            "DynamicCache(key_cache=#2[T1s1x2x3x4,T1s1x2x3x4], "
            "value_cache=#2[T1s1x2x3x4,T1s1x2x3x4], indexer_keys=#1[T1s1x3x5], "
            "indexer_position_ids=#1[T7s3x1x3], layers=[indexed,indexed])",
        )

    @requires_cache_classes(
        "LinearAttentionAndFullAttentionLayer",
        "LinearAttentionAndSlidingWindowAttentionLayer",
        "DummyLayer",
    )
    def test_hybrid_and_dummy_layers(self):
        cache = _layers_cache(
            _filled("LinearAttentionAndSlidingWindowAttentionLayer", states=1, sliding_window=8),
            _cache_class("DummyLayer")(),
            _filled("LinearAttentionAndFullAttentionLayer", 1, states=1, recurrent=False),
        )
        self.assertEqual(
            string_type(cache),
            "DynamicCache(key_cache=#2[T1r4,T1r4], value_cache=#2[T1r4,T1r4], "
            "conv_states=#2[T1r3,T1r3], recurrent_states=#1[T1r4], "
            "layers=[hybrid_sliding,dummy,hybrid])",
        )

    @requires_cache_classes("LinearAttentionLayer")
    def test_with_min_max(self):
        cache = _layers_cache(_filled("LinearAttentionLayer", states=1, recurrent=False))
        cache.layers[0].conv_states[0] = torch.ones(1, 2, 2)
        self.assertEqual(
            string_type(cache, with_shape=True, with_min_max=True),
            "DynamicCache(key_cache=#0[], value_cache=#0[], "
            "conv_states=#1[T1s1x2x2[1.0,1.0:A1.0]], layers=[linear])",
        )

    def test_full_layers_are_printed_as_before(self):
        cache = _layers_cache(_filled("DynamicLayer"), _filled("DynamicLayer", 1))
        self.assertEqual(
            string_type(cache),
            "DynamicCache(key_cache=#2[T1r4,T1r4], value_cache=#2[T1r4,T1r4])",
        )
        # a layer never updated holds nothing
        cache.layers.append(_cache_class("DynamicLayer")())
        self.assertEqual(
            string_type(cache),
            "DynamicCache(key_cache=#2[T1r4,T1r4], value_cache=#2[T1r4,T1r4])",
        )

    def test_unknown_layer_class_is_named(self):
        class MyLayer(_cache_class("DynamicLayer")):
            pass

        cache = _layers_cache(_filled("DynamicLayer"), _filled("DynamicLayer", 1))
        cache.layers[1].__class__ = MyLayer
        self.assertEqual(string_type(cache), "DynamicCache(unsupported layers[1]:MyLayer)")
        self.assertEqual(
            string_type(dict(cache=cache)),
            "dict(cache:DynamicCache(unsupported layers[1]:MyLayer))",
        )


class TestMaxDiffNewCacheLayers(ExtTestCase):
    @requires_cache_classes("LinearAttentionLayer")
    def test_every_state_is_compared(self):
        expected, got = _qwen3_next_cache(), _qwen3_next_cache()
        d = max_diff(expected, got)
        self.assertEqual(d["abs"], 0)
        # 2 conv states (24), 2 recurrent states (32), keys and values (24)
        self.assertEqual(d["n"], 2 * 24 + 2 * 32 + 2 * 24)
        got.layers[1].recurrent_states[0][0, 1, 2, 3] += 0.5
        d = max_diff(expected, got)
        self.assertAlmostEqual(d["abs"], 0.5, atol=1e-6)
        self.assertEqual(d["where"], "expected.recurrent_state_1")
        self.assertEqual(d["argm"], (0, 1, 2, 3))

    @requires_cache_classes("LinearAttentionLayer")
    def test_paths_inside_model_outputs(self):
        expected = CausalLMOutputWithPast(logits=torch.zeros(2), **{OUT: _qwen3_next_cache()})
        cache = _qwen3_next_cache()
        cache.layers[0].conv_states[0][0, 0, 0] -= 2
        got = CausalLMOutputWithPast(logits=torch.zeros(2), **{OUT: cache})
        d = max_diff(expected, got)
        self.assertAlmostEqual(d["abs"], 2, atol=1e-6)
        self.assertEqual(d["where"], f"expected.{OUT}.conv_state_0")

    @requires_cache_classes("LinearAttentionLayer")
    def test_flat_outputs_follow_the_pytree_order(self):
        cache = _qwen3_next_cache()
        flat = flatten_object(cache)
        leaves = torch.utils._pytree.tree_leaves(cache)
        self.assertEqual(len(flat), len(leaves))
        for a, b in zip(flat, leaves):
            self.assertIs(a, b)
        got = [t.numpy().copy() for t in flat]
        got[4][0, 0, 0, 0] += 1  # key_2, after the states of the two linear layers
        d = max_diff(cache, got)
        self.assertAlmostEqual(d["abs"], 1, atol=1e-6)
        self.assertEqual(d["where"], "expected.key_2")
        d = max_diff(cache, got[:-1])
        self.assertIn("6 tensors vs 5 once flattened", d["error"])

    @requires_cache_classes("DynamicIndexedLayer")
    def test_indexer_keys_are_compared(self):
        def cache(value):
            layer = _filled("DynamicIndexedLayer")
            layer.update_indexer(torch.full((1, 3, 5), value))
            return _layers_cache(layer)

        d = max_diff(cache(1.0), cache(1.25))
        self.assertAlmostEqual(d["abs"], 0.25, atol=1e-6)
        self.assertEqual(d["where"], "expected.indexer_key_0")

    def test_unknown_layer_class_gives_an_error_naming_it(self):
        class MyLayer(_cache_class("DynamicLayer")):
            pass

        cache = _layers_cache(_filled("DynamicLayer"), _filled("DynamicLayer", 1))
        cache.layers[1].__class__ = MyLayer
        d = max_diff([cache], [cache])
        self.assertEqual(d["abs"], math.inf)
        self.assertTrue(d["error"].startswith("expected[0]: DynamicCache.layers[1] is a "))
        self.assertIn("MyLayer", d["error"])


class TestMaxDiffUnusualTensors(ExtTestCase):
    """Tensors max_diff used to let escape raw errors on, or compare wrongly."""

    def test_int64_above_2_53_compared_exactly(self):
        a = torch.tensor([2**53, 7, -(2**63), 2**63 - 1])
        b = torch.tensor([2**53 + 1, 7, 2**63 - 1, -(2**63)])
        d = max_diff(a, a.clone())
        self.assertEqual((d["abs"], d["n"]), (0.0, 4))
        d = max_diff(a[:2], b[:2])
        self.assertEqual(d["abs"], 1.0)
        self.assertEqual(d["argm"], (0,))
        # opposite signs at the extremes: no overflow, the largest difference wins
        d = max_diff(a, b)
        self.assertEqual(d["argm"], (2,))
        self.assertEqual(d["abs"], float(2**64 - 1))
        d = max_diff(np.array([2**60], dtype=np.int64), np.array([2**60 + 1], dtype=np.int64))
        self.assertEqual(d["abs"], 1.0)
        # integers against floats keep comparing as numbers
        self.assertEqual(max_diff(torch.tensor([1, 2]), torch.tensor([1.5, 2.0]))["abs"], 0.5)
        self.assertEqual(max_diff(torch.tensor([True]), torch.tensor([False]))["abs"], 1.0)

    def test_sparse_tensors_compared_dense(self):
        dense = torch.tensor([[0.0, 1.5], [0.0, 0.0]])
        other = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
        d = max_diff(dense.to_sparse(), other)
        self.assertNotIn("error", d)
        self.assertEqual((d["abs"], d["argm"], d["n"]), (0.5, (0, 1), 4))
        self.assertEqual(max_diff(dense.to_sparse_csr(), dense.to_sparse())["abs"], 0.0)
        self.assertEqual(max_diff([dense.to_sparse()], [dense])["abs"], 0.0)

    def test_quantized_tensors_compared_dequantized(self):
        q = torch.quantize_per_tensor(torch.tensor([1.0, 2.0]), 0.1, 0, torch.quint8)
        d = max_diff(q, torch.tensor([1.0, 2.05]))
        self.assertNotIn("error", d)
        self.assertAlmostEqual(d["abs"], 0.05, atol=1e-6)
        self.assertEqual(max_diff(q, q)["abs"], 0.0)

    def test_meta_tensor_reported_not_raised(self):
        d = max_diff([torch.empty(2, device="meta")], [torch.ones(2)])
        self.assertEqual(d["abs"], math.inf)
        self.assertIn("expected[0]: cannot compare", d["error"])
        self.assertIn("meta", d["error"])

    def test_structures_containing_themselves(self):
        a = [torch.ones(1)]
        a.append(a)
        b = [torch.ones(1)]
        b.append(b)
        d = max_diff(a, b)
        self.assertEqual(d["abs"], math.inf)
        self.assertIn("expected[1]: the structures contain themselves", d["error"])
        d = max_diff(a, [torch.ones(1), [torch.ones(1)]])
        self.assertIn("contains itself", d["error"])
        with self.assertRaises(TypeError) as cm:
            flatten_object({"x": a})
        self.assertIn("obj['x'][1]: the structure contains itself", str(cm.exception))
        # one object twice is not a cycle
        shared = [torch.ones(1)]
        self.assertEqual(max_diff((shared, shared), (shared, shared))["n"], 2)


class TestMaxDiffArguments(ExtTestCase):
    def test_bad_hist_and_verbose(self):
        for bad in (["a"], "0.1", [True], 3):
            with self.subTest(hist=bad):
                with self.assertRaises(TypeError) as cm:
                    max_diff(torch.ones(2), torch.ones(2), hist=bad)
                self.assertIn(
                    "max_diff: hist must be True, None or a list of numbers", str(cm.exception)
                )
        with self.assertRaises(TypeError) as cm:
            max_diff(torch.ones(2), torch.ones(2), verbose="x")
        self.assertIn("max_diff: verbose must be an int", str(cm.exception))
        self.assertEqual(max_diff(torch.ones(2), torch.ones(2), hist=[])["abs"], 0.0)
        self.assertEqual(
            max_diff(torch.ones(2), torch.ones(2), hist=(0, 1))["rep"], {">0": 0, ">1": 0}
        )


class TestOnnxDiagnosticHelperNames(ExtTestCase):
    """string_diff, size_type, flatten_object(drop_keys), string_type(verbose, limit...)"""

    def test_string_diff_equal_and_different(self):
        from onnx_diagnostic.helpers import string_diff

        same = max_diff(torch.ones(3), torch.ones(3))
        self.assertEqual(string_diff(same), "abs=0.0, rel=0.0")
        d = max_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
        text = string_diff(d)
        self.assertStartsWith("abs=0.5, rel=0.2499", text)
        self.assertEndsWith(", n=2", text)

    def test_string_diff_nan_hist_error(self):
        from onnx_diagnostic.helpers import string_diff

        d = max_diff(torch.tensor([1.0, math.nan]), torch.tensor([1.5, 2.0]), hist=[0.1, 1])
        text = string_diff(d)
        self.assertIn("dnan=1", text)
        self.assertIn("rep=>0.1:1", text)
        err = string_diff(max_diff([torch.zeros(2)], [torch.zeros(3)]))
        self.assertIn("abs=inf", err)
        self.assertIn("error=expected[0]: shape (2,) vs (3,)", err)

    def test_string_diff_bad_input(self):
        from onnx_diagnostic.helpers import string_diff

        self.assertRaise(lambda: string_diff(None), TypeError, "diff must be")
        self.assertRaise(lambda: string_diff(dict(abs=0)), TypeError, "keys abs, rel")

    def test_size_type(self):
        from onnx_diagnostic.helpers import size_type
        import ml_dtypes
        from onnx import TensorProto

        self.assertEqual(size_type(TensorProto.FLOAT), 4)
        self.assertEqual(size_type(TensorProto.BFLOAT16), 2)
        self.assertEqual(size_type(TensorProto.COMPLEX128), 16)
        self.assertEqual(size_type(TensorProto.FLOAT8E4M3FN), 1)
        self.assertEqual(size_type(torch.bfloat16), 2)
        self.assertEqual(size_type(torch.int64), 8)
        self.assertEqual(size_type(torch.bool), 1)
        self.assertEqual(size_type(np.float16), 2)
        self.assertEqual(size_type(np.dtype("uint32")), 4)
        self.assertEqual(size_type(ml_dtypes.bfloat16), 2)

    def test_size_type_bad_input(self):
        from onnx_diagnostic.helpers import size_type

        self.assertRaise(lambda: size_type(8), ValueError, "ONNX element type 8")
        self.assertRaise(lambda: size_type(22), ValueError, "no whole number")
        self.assertRaise(lambda: size_type(np.str_), ValueError, "no fixed number")
        self.assertRaise(lambda: size_type(True), TypeError, "dtype must be a type")
        self.assertRaise(lambda: size_type(object()), TypeError, "dtype must be")

    def test_flatten_object_drop_keys(self):
        obj = dict(a=torch.zeros(2), b=[torch.ones(3), None])
        self.assertEqual(len(flatten_object(obj, drop_keys=True)), 2)
        self.assertEqual(len(flatten_object(obj, drop_keys=False)), 2)
        self.assertEqual(flatten_object({}, drop_keys=True), [])
        self.assertRaise(lambda: flatten_object(obj, drop_keys="yes"), TypeError, "drop_keys")

    def test_string_type_long_sequences(self):
        self.assertEqual(string_type(list(range(100))), "#100[int,...]")
        self.assertEqual(string_type(list(range(19))).count("int"), 19)
        self.assertEqual(string_type(tuple(range(30))), "#30(int,...)")
        self.assertEqual(string_type((1,)), "(int,)")
        self.assertEqual(
            string_type(list(range(100)), with_min_max=True), "#100[int=0,...][0,99:49.5]"
        )
        ts = [torch.zeros((2, 3))] * 20
        self.assertEqual(string_type(ts, with_shape=True), "#20[T1s2x3,...]")
        self.assertEqual(string_type(ts, limit=50).count("T1r2"), 20)
        self.assertEqual(string_type([], limit=2), "#0[]")

    def test_string_type_limit_bad(self):
        self.assertRaise(lambda: string_type([1], limit=0), ValueError, "limit must be")
        self.assertRaise(lambda: string_type([1], limit=True), ValueError, "limit must be")

    def test_string_type_device_and_verbose(self):
        self.assertEqual(string_type(torch.zeros(2), with_device=True), "CT1r1")
        self.assertEqual(
            string_type([torch.zeros(2)], with_shape=True, with_device=True), "#1[CT1s2]"
        )
        self.assertEqual(string_type(torch.zeros(2), ignore=True), "T1r1")
        text, out, _ = self.capture(lambda: string_type([torch.zeros(2)], verbose=1))
        self.assertEqual(text, "#1[T1r1]")
        self.assertIn("[string_type] _fmt_list:list", out)
        self.assertIn("_fmt_tensor:Tensor", out)
        # the options do not leak into the next call
        self.assertEqual(string_type(list(range(25))), "#25[int,...]")
        self.assertEqual(string_type(torch.zeros(2)), "T1r1")

    def test_string_type_ort_value(self):
        import onnxruntime

        v = onnxruntime.OrtValue.ortvalue_from_numpy(np.zeros((2, 3), dtype=np.float32))
        self.assertEqual(string_type(v), "OV1r2")
        self.assertEqual(string_type(v, with_shape=True), "OV1s2x3")
        self.assertEqual(string_type(v, with_device=True), "COV1r2")
        self.assertEqual(
            string_type(v, with_shape=True, with_min_max=True), "OV(A1s2x3[0.0,0.0:A0.0])"
        )
        self.assertEqual(string_type([v, v], with_shape=True), "#2[OV1s2x3,OV1s2x3]")
        from onnx_diagnostic.helpers.ort_session import _ortvalue_from_torch

        b = _ortvalue_from_torch(torch.ones(4, dtype=torch.bfloat16), torch.device("cpu"))
        self.assertEqual(string_type(b), "OV16r1")
        self.assertEqual(string_type(b, with_min_max=True), "OV(A16r1[1.0,1.0:A1.0])")


class TestCheckOutputFile(ExtTestCase):
    def test_errors_name_the_argument(self):
        import os
        import tempfile

        from onnx_diagnostic.helpers.helper import check_output_file

        with tempfile.TemporaryDirectory() as tmp:
            check_output_file(os.path.join(tmp, "a.onnx"), "filename")
            with self.assertRaises(IsADirectoryError) as cm:
                check_output_file(tmp, "dump_file", "steal_forward")
            self.assertIn(f"steal_forward: dump_file={tmp!r} is a folder", str(cm.exception))
            missing = os.path.join(tmp, "no", "a.onnx")
            with self.assertRaises(FileNotFoundError) as cm:
                check_output_file(missing, "filename", nothing="nothing ran")
            self.assertIn("does not exist, create it first (nothing ran)", str(cm.exception))
        with self.assertRaises(TypeError) as cm:
            check_output_file(None, "filename", "to_onnx")
        self.assertIn("to_onnx: filename must be a file name, not NoneType", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
