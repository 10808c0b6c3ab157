import doctest
import functools
import unittest

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime

from onnx_diagnostic.export.custom import folding
from onnx_diagnostic.export.custom import passes as module_under_test
from onnx_diagnostic.export.custom.passes import (
    deduplicate_constants,
    eliminate_common_subexpressions,
    fold_constants,
    merge_unsqueeze,
    remove_identities,
    remove_unused,
    run_passes,
)
from onnx_diagnostic.ext_test_case import ExtTestCase

HEADER = '<ir_version: 10, opset_import: ["" : 23]>\n'


def _parse(text: str) -> onnx.ModelProto:
    return onnx.parser.parse_model(HEADER + text)


def _run(proto: onnx.ModelProto, feeds: dict) -> list:
    sess = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return sess.run(None, feeds)


def _feeds(proto: onnx.ModelProto, batch: int, seed: int = 0) -> dict:
    """Random inputs, every dynamic dimension set to ``batch``."""
    rnd = np.random.default_rng(seed)
    feeds = {}
    for inp in proto.graph.input:
        tt = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.integer):
            feeds[inp.name] = rnd.integers(-5, 5, size=shape).astype(dtype)
        else:
            feeds[inp.name] = rnd.standard_normal(shape).astype(dtype)
    return feeds


class _PassTestCase(ExtTestCase):
    def apply(self, text: str, fct, expected_count=None, batches=(2, 5)):
        """Applies ``fct``, checks the model is valid, its interface and its results."""
        proto = _parse(text)
        model = ir.serde.deserialize_model(proto)
        count = fct(model)
        after = ir.serde.serialize_model(model)
        onnx.checker.check_model(after, full_check=True)
        self.assertEqual([i.name for i in proto.graph.input], [i.name for i in after.graph.input])
        self.assertEqual([o.name for o in proto.graph.output], [o.name for o in after.graph.output])
        if expected_count is not None:
            self.assertEqual(count, expected_count)
        for batch in batches:
            feeds = _feeds(proto, batch)
            expected, got = _run(proto, feeds), _run(after, feeds)
            self.assertEqual(len(expected), len(got))
            for e, g in zip(expected, got):
                self.assertEqual(e.dtype, g.dtype)
                self.assertEqual(e.shape, g.shape)
                np.testing.assert_allclose(e, g, rtol=1e-6, atol=1e-6)
        return model, count

    @staticmethod
    def op_types(model: ir.Model) -> list[str]:
        return [n.op_type for n in model.graph]


class TestFoldConstants(_PassTestCase):
    def test_folds_a_chain_of_shape_computations_in_one_call(self):
        model, _ = self.apply(
            """g (float[batch, 4] x) => (float[batch, 4] y) {
                s = Shape <start = 1> (x)
                one = Constant <value_ints = [1]> ()
                shape = Concat <axis = 0> (one, s)
                c = ConstantOfShape <value = float[1] {2.0}> (shape)
                y = Mul (x, c)
            }""",
            fold_constants,
            3,
        )
        self.assertEqual(self.op_types(model), ["Constant", "Mul"])
        mul = model.graph.node(1)
        self.assertEqual(mul.inputs[1].const_value.numpy().tolist(), [[2.0] * 4])

    def test_shape_of_a_dynamic_dimension_is_not_folded(self):
        model, count = self.apply(
            """g (float[batch, 4] x) => (int64[2] y) {
                y = Shape (x)
            }""",
            fold_constants,
        )
        self.assertEqual((count, self.op_types(model)), (0, ["Shape"]))

    def test_gather_of_shape_folds_static_dimension_only(self):
        model, _ = self.apply(
            """g (float[batch, 8] x) => (float[batch, 8] y, float[batch, 8] z) {
                s = Shape (x)
                i1 = Constant <value_int = 1> ()
                i0 = Constant <value_int = 0> ()
                d1 = Gather <axis = 0> (s, i1)
                d0 = Gather <axis = 0> (s, i0)
                f1 = Cast <to = 1> (d1)
                f0 = Cast <to = 1> (d0)
                y = Add (x, f1)
                z = Mul (x, f0)
            }""",
            fold_constants,
            2,
        )
        ops = self.op_types(model)
        self.assertEqual(ops.count("Gather"), 1)
        self.assertEqual(ops.count("Cast"), 1)
        add = next(n for n in model.graph if n.op_type == "Add")
        self.assertEqual(add.inputs[1].const_value.numpy().tolist(), 8.0)

    def test_graph_output_folded_keeps_its_name_with_a_constant_node(self):
        model, count = self.apply(
            """g (float[batch] x) => (float[batch] y, float[2] c) {
                a = Constant <value_floats = [1.0, 2.0]> ()
                b = Constant <value_floats = [3.0, 4.0]> ()
                c = Add (a, b)
                y = Neg (x)
            }""",
            fold_constants,
            1,
        )
        producer = model.graph.outputs[1].producer()
        self.assertEqual(producer.op_type, "Constant")
        self.assertEqual(model.graph.outputs[1].name, "c")
        self.assertFalse(model.graph.outputs[1].is_initializer())

    def test_refuses_outputs_over_size_limit(self):
        text = """g (float[batch, 1] x) => (float[batch, 100] y) {
                s = Constant <value_ints = [1, 100]> ()
                c = ConstantOfShape <value = float[1] {1.0}> (s)
                y = Mul (x, c)
            }"""
        model, count = self.apply(text, lambda m: fold_constants(m, size_limit=99))
        self.assertEqual((count, self.op_types(model)), (0, ["Constant", "ConstantOfShape", "Mul"]))
        model, count = self.apply(text, lambda m: fold_constants(m, size_limit=100))
        self.assertEqual(count, 1)

    def test_huge_range_is_neither_folded_nor_allocated(self):
        model, count = self.apply(
            """g (int64[batch] x) => (int64[batch] y) {
                start = Constant <value = int64 {0}> ()
                limit = Constant <value = int64 {1000000000000}> ()
                delta = Constant <value = int64 {1}> ()
                r = Range (start, limit, delta)
                n = Size (r)
                y = Add (x, n)
            }""",
            fold_constants,
            batches=(),
        )
        self.assertEqual(count, 0)
        self.assertIn("Range", self.op_types(model))

    def test_zero_d_constants(self):
        model, _ = self.apply(
            """g (float[batch] x) => (float[batch] y) {
                a = Constant <value = float {2.0}> ()
                b = Constant <value = float {3.0}> ()
                c = Mul (a, b)
                zero = Constant <value_ints = [0]> ()
                d = Unsqueeze (c, zero)
                y = Add (x, d)
            }""",
            fold_constants,
            2,
        )
        add = model.graph.node(len(model.graph) - 1)
        self.assertEqual(add.inputs[1].shape.dims, (1,))
        self.assertEqual(add.inputs[1].const_value.numpy().tolist(), [6.0])

    def test_bfloat16_cast_folding(self):
        model, count = self.apply(
            """g (float[batch, 3] x) => (float[batch, 3] y) {
                a = Constant <value_floats = [1.00390625, -2.3, 3.1415927]> ()
                b = Cast <to = 16> (a)
                c = Cast <to = 1> (b)
                y = Add (x, c)
            }""",
            fold_constants,
            2,
        )
        cst = model.graph.node(len(model.graph) - 1).inputs[1].const_value.numpy()
        expected = (
            np.array([1.00390625, -2.3, 3.1415927], dtype=np.float32)
            .astype(ml_dtypes.bfloat16)
            .astype(np.float32)
        )
        self.assertEqualArray(expected, cst)
        self.assertEqual(cst.tolist(), [1.0, -2.296875, 3.140625])

    def test_bfloat16_initializer_is_folded_into_bfloat16(self):
        model = ir.serde.deserialize_model(_parse("g (float[batch] x) => (float[batch] x) {}"))
        graph = model.graph
        w = ir.Value(
            name="w", const_value=ir.Tensor(np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16))
        )
        graph.register_initializer(w)
        neg = ir.Node("", "Neg", [w], graph=graph)
        neg.outputs[0].name = "y"
        graph.outputs.append(neg.outputs[0])
        self.assertEqual(fold_constants(model), 1)
        onnx.checker.check_model(ir.serde.serialize_model(model))
        out = graph.outputs[1]
        self.assertEqual((out.name, out.producer().op_type), ("y", "Constant"))
        tensor = out.producer().attributes["value"].value
        self.assertEqual(tensor.dtype, ir.DataType.BFLOAT16)
        self.assertEqual(tensor.numpy().astype(np.float32).tolist(), [-1.5, 2.0])

    def test_integer_division_and_negative_slice_match_onnxruntime(self):
        self.apply(
            """g (int64[batch] x) => (int64[batch, 4] y) {
                a = Constant <value_ints = [-7, 7, -8, 9]> ()
                b = Constant <value_ints = [2, -2, 3, 4]> ()
                q = Div (a, b)
                st = Constant <value_ints = [-1]> ()
                en = Constant <value_ints = [-100]> ()
                ax = Constant <value_ints = [0]> ()
                sp = Constant <value_ints = [-1]> ()
                r = Slice (q, st, en, ax, sp)
                zero = Constant <value_ints = [1]> ()
                xu = Unsqueeze (x, zero)
                y = Add (xu, r)
            }""",
            fold_constants,
            2,
        )

    def test_integer_division_by_zero_is_not_folded(self):
        model = ir.serde.deserialize_model(
            _parse(
                """g (int64[batch] x) => (int64[batch] y) {
                    a = Constant <value_ints = [1]> ()
                    b = Constant <value_ints = [0]> ()
                    q = Div (a, b)
                    y = Add (x, q)
                }"""
            )
        )
        self.assertEqual(fold_constants(model), 0)

    def test_op_without_numpy_kernel_uses_reference_evaluator(self):
        model, _ = self.apply(
            """g (float[batch, 3] x) => (float[batch, 3] y) {
                a = Constant <value = float[1, 3] {1.0, 2.0, 3.0}> ()
                s = Softmax <axis = 1> (a)
                y = Mul (x, s)
            }""",
            fold_constants,
            1,
        )
        self.assertNotIn("Softmax", self.op_types(model))

    def test_random_ops_are_not_folded(self):
        model = ir.serde.deserialize_model(
            _parse(
                """g (float[batch, 3] x) => (float[batch, 3] y) {
                    a = Constant <value = float[1, 3] {1.0, 2.0, 3.0}> ()
                    r = RandomNormalLike (a)
                    y = Mul (x, r)
                }"""
            )
        )
        self.assertEqual(fold_constants(model), 0)

    def test_many_ops_fold_like_onnxruntime(self):
        self.apply(
            """g (float[batch, 4] x) => (float[batch, 4] y, int64[4] z) {
                a = Constant <value = float[2, 2] {1.0, 4.0, 9.0, 16.0}> ()
                sq = Sqrt (a)
                rc = Reciprocal (sq)
                two = Constant <value = float {2.0}> ()
                pw = Pow (rc, two)
                tr = Transpose <perm = [1, 0]> (pw)
                k = Constant <value_int = 0> ()
                tl = Trilu <upper = 1> (tr, k)
                ax = Constant <value_int = 1> ()
                cs = CumSum <exclusive = 1> (tl, ax)
                shp = Constant <value_ints = [1, 4]> ()
                rs = Reshape (cs, shp)
                mx = Max (rs, two)
                mn = Min (mx, two, rs)
                y = Add (x, mn)
                i = Constant <value_ints = [3, 1, 4, 1]> ()
                pr = ReduceProd <keepdims = 0> (i)
                lt = Less (i, pr)
                nt = Not (lt)
                w = Where (nt, i, pr)
                ex = Expand (w, shp)
                zero = Constant <value_ints = [0]> ()
                z = Squeeze (ex, zero)
            }""",
            fold_constants,
            15,
        )

    def test_empty_graph(self):
        model, count = self.apply(
            """g (float[batch] x) => (float[batch] x) {
            }""",
            run_passes,
        )
        self.assertEqual(count, {k: 0 for k in count})
        self.assertEqual(len(model.graph), 0)


class TestRemoveIdentities(_PassTestCase):
    def test_removes_identity_like_nodes(self):
        model, _ = self.apply(
            """g (float[batch, 4, 8] x) => (float[batch, 4, 8] y) {
                a = Identity (x)
                b = Cast <to = 1> (a)
                p = Transpose <perm = [0, 1, 2]> (b)
                one = Constant <value = float {1.0}> ()
                m = Mul (p, one)
                zero = Constant <value = float[1] {0.0}> ()
                s = Add (zero, m)
                d = Div (s, one)
                r_in = Sub (d, zero)
                c = Constant <value_ints = [0, 0, 8]> ()
                r = Reshape (r_in, c)
                sh = Shape (r)
                e = Expand (r, sh)
                e2s = Constant <value_ints = [1, 8]> ()
                e2 = Expand (e, e2s)
                y = Neg (e2)
            }""",
            remove_identities,
            10,
        )
        model2 = ir.serde.deserialize_model(ir.serde.serialize_model(model))
        remove_unused(model2)
        self.assertEqual(self.op_types(model2), ["Neg"])

    def test_identity_of_an_input_producing_an_output_stays(self):
        model, count = self.apply(
            """g (float[batch] x) => (float[batch] y) {
                y = Identity (x)
            }""",
            remove_identities,
        )
        self.assertEqual((count, self.op_types(model)), (0, ["Identity"]))

    def test_identity_to_an_output_renames_its_producer(self):
        model, count = self.apply(
            """g (float[batch] x) => (float[batch] y, float[batch] z) {
                t = Neg (x)
                y = Identity (t)
                z = Abs (t)
            }""",
            remove_identities,
            1,
        )
        self.assertEqual(self.op_types(model), ["Neg", "Abs"])
        self.assertEqual(model.graph.node(0).outputs[0].name, "y")

    def test_identity_like_node_on_an_output_becomes_identity(self):
        model, count = self.apply(
            """g (float[batch] x) => (float[batch] y) {
                one = Constant <value = float {1.0}> ()
                y = Mul (x, one)
            }""",
            run_passes,
        )
        self.assertEqual(self.op_types(model), ["Identity"])
        self.assertEqual(count["remove_identities"], 1)

    def test_cast_float32_float16_float32_is_kept(self):
        model, count = self.apply(
            """g (float[batch] x) => (float[batch] y) {
                a = Cast <to = 10> (x)
                y = Cast <to = 1> (a)
            }""",
            remove_identities,
        )
        self.assertEqual((count, self.op_types(model)), (0, ["Cast", "Cast"]))

    def test_cast_float16_float32_float16_is_removed(self):
        model, count = self.apply(
            """g (float16[batch] x) => (float16[batch] y, float16[batch] z) {
                a = Cast <to = 1> (x)
                b = Cast <to = 10> (a)
                y = Neg (b)
                c = Cast <to = 7> (a)
                d = Cast <to = 10> (c)
                z = Abs (d)
            }""",
            remove_identities,
        )
        self.assertEqual(self.op_types(model), ["Neg", "Cast", "Cast", "Abs"])
        self.assertIs(model.graph.node(0).inputs[0], model.graph.inputs[0])
        self.assertIs(model.graph.node(1).inputs[0], model.graph.inputs[0])

    def test_types_and_ranks_of_untyped_intermediate_results_are_inferred(self):
        # the translator casts after every float op, the intermediate result has no type
        model, count = self.apply(
            """g (float[batch, 4] x, int64[batch, 4] i) => (float[batch, 4] y, float[batch, 4] z) {
                m = Mul (x, x)
                c = Cast <to = 1> (m)
                zero = Constant <value = float[1] {0.0}> ()
                y = Add (c, zero)
                p = Mul (i, i)
                z = Cast <to = 1> (p)
            }""",
            remove_identities,
            2,
        )
        self.assertEqual(self.op_types(model), ["Mul", "Constant", "Mul", "Cast"])
        self.assertEqual(model.graph.node(0).outputs[0].name, "y")

    def test_add_zero_to_an_untyped_scalar_result_is_kept(self):
        model, count = self.apply(
            """g (float x) => (float[1] y) {
                m = Mul (x, x)
                zero = Constant <value = float[1] {0.0}> ()
                y = Add (m, zero)
            }""",
            remove_identities,
            batches=(1,),
        )
        self.assertEqual(count, 0)

    def test_unsqueeze_squeeze_same_axes_only(self):
        model, count = self.apply(
            """g (float[batch, 3] x) => (float[batch, 3] y, float[3, batch] z) {
                ax = Constant <value_ints = [-1]> ()
                ax2 = Constant <value_ints = [2]> ()
                u = Unsqueeze (x, ax)
                s = Squeeze (u, ax2)
                y = Neg (s)
                t = Transpose <perm = [1, 0, 2]> (u)
                z = Squeeze (t, ax2)
            }""",
            remove_identities,
            1,
        )
        self.assertEqual(
            self.op_types(model),
            ["Constant", "Constant", "Unsqueeze", "Neg", "Transpose", "Squeeze"],
        )
        self.assertIs(model.graph.node(3).inputs[0], model.graph.inputs[0])

    def test_slice_over_the_full_range_only(self):
        model, count = self.apply(
            """g (float[batch, 4] x) => (float[batch, 4] y, float[batch, 3] z) {
                st = Constant <value_ints = [0, 0]> ()
                en = Constant <value_ints = [9223372036854775807, 4]> ()
                ax = Constant <value_ints = [0, -1]> ()
                s = Slice (x, st, en, ax)
                y = Neg (s)
                st1 = Constant <value_ints = [1]> ()
                en1 = Constant <value_ints = [9223372036854775807]> ()
                ax1 = Constant <value_ints = [1]> ()
                z = Slice (x, st1, en1, ax1)
            }""",
            remove_identities,
            1,
        )
        self.assertEqual(self.op_types(model).count("Slice"), 1)

    def test_add_zero_that_broadcasts_is_kept(self):
        model, count = self.apply(
            """g (float x) => (float[1] y, float[2] z, float w) {
                zero = Constant <value = float[1] {0.0}> ()
                y = Add (x, zero)
                zeros = Constant <value = float[2] {0.0, 0.0}> ()
                z = Add (x, zeros)
                zero0 = Constant <value = float {0.0}> ()
                w = Sub (zero0, x)
            }""",
            remove_identities,
            batches=(1,),
        )
        self.assertEqual(count, 0)

    def test_mul_by_one_on_the_left_and_by_two(self):
        model, count = self.apply(
            """g (int64[batch] x) => (int64[batch] y) {
                one = Constant <value = int64 {1}> ()
                y = Mul (one, x)
            }""",
            remove_identities,
        )
        self.assertEqual(count, 1)
        model = ir.serde.deserialize_model(
            _parse(
                """g (float[batch] x) => (float[batch] y) {
                    one = Constant <value = float {2.0}> ()
                    y = Mul (one, x)
                }"""
            )
        )
        self.assertEqual(remove_identities(model), 0)


class TestRemoveUnused(_PassTestCase):
    def test_removes_chains_and_initializers(self):
        model, count = self.apply(
            """g (float[batch] x) => (float[batch] y) <float[1] w = {2.0}, float[1] v = {1.0}> {
                a = Mul (x, w)
                b = Neg (a)
                y = Add (x, v)
            }""",
            remove_unused,
            3,
        )
        self.assertEqual(self.op_types(model), ["Add"])
        self.assertEqual(list(model.graph.initializers), ["v"])

    def test_keeps_initializers_which_are_inputs_and_unknown_domains(self):
        proto = _parse(
            """g (float[batch] x, float[1] w) => (float[batch] y) <float[1] w = {2.0}> {
                y = Neg (x)
            }"""
        )
        model = ir.serde.deserialize_model(proto)
        custom = ir.Node("my.domain", "Print", [model.graph.inputs[0]])
        model.graph.insert_before(model.graph.node(0), custom)
        model.opset_imports["my.domain"] = 1
        self.assertEqual(remove_unused(model), 0)
        self.assertEqual(list(model.graph.initializers), ["w"])
        self.assertEqual(self.op_types(model), ["Print", "Neg"])


class TestDeduplicateConstants(_PassTestCase):
    def test_merges_identical_small_initializers(self):
        model, count = self.apply(
            """g (float[batch] x) => (float[batch] y)
                <float[1] a = {2.0}, float[1] b = {2.0}, double[1] c = {2.0}, float d = {2.0}> {
                t = Mul (x, a)
                u = Mul (t, b)
                cd = Cast <to = 1> (c)
                v = Add (u, cd)
                y = Sub (v, d)
            }""",
            deduplicate_constants,
            1,
        )
        self.assertEqual(list(model.graph.initializers), ["a", "c", "d"])

    def test_large_initializers_are_not_merged(self):
        oh, onh = onnx.helper, onnx.numpy_helper
        ones = np.ones((1024,), dtype=np.float32)
        proto = oh.make_model(
            oh.make_graph(
                [oh.make_node("Mul", ["x", "v"], ["z"]), oh.make_node("Add", ["z", "w"], ["y"])],
                "g",
                [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 1])],
                [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 1024])],
                [onh.from_array(ones, "v"), onh.from_array(ones, "w")],
            ),
            opset_imports=[oh.make_opsetid("", 23)],
            ir_version=10,
        )
        model = ir.serde.deserialize_model(proto)
        self.assertEqual(deduplicate_constants(model), 0)
        self.assertEqual(deduplicate_constants(model, max_size=2048), 1)
        after = ir.serde.serialize_model(model)
        onnx.checker.check_model(after)
        feeds = _feeds(proto, 3)
        self.assertEqualArray(_run(proto, feeds)[0], _run(after, feeds)[0])


class TestRemoveIdentitiesSqueeze(_PassTestCase):
    def test_unsqueeze_of_squeeze_on_the_same_axes_is_removed(self):
        model, count = self.apply(
            """g (float[batch, 1, 3] x) => (float[batch, 1, 3] y, float[1, batch, 3] z) {
                ax = Constant <value_ints = [1]> ()
                ax0 = Constant <value_ints = [0]> ()
                axn = Constant <value_ints = [-2]> ()
                s = Squeeze (x, ax)
                u = Unsqueeze (s, axn)
                y = Neg (u)
                z = Unsqueeze (s, ax0)
            }""",
            remove_identities,
            1,
        )
        self.assertEqual(self.op_types(model).count("Unsqueeze"), 1)
        self.assertIs(
            next(n for n in model.graph if n.op_type == "Neg").inputs[0], model.graph.inputs[0]
        )

    def test_removed_node_tells_the_shape_of_its_untyped_source(self):
        model = ir.serde.deserialize_model(
            _parse(
                """g (float[batch, 3] x) => (int64[1] y) {
                    ax = Constant <value_ints = [0]> ()
                    s = Shape <start = 1> (x)
                    sq = Squeeze (s, ax)
                    u = Unsqueeze (sq, ax)
                    y = Neg (u)
                }"""
            )
        )
        u = next(n for n in model.graph if n.op_type == "Unsqueeze").outputs[0]
        u.shape, u.type = ir.Shape([1]), ir.TensorType(ir.DataType.INT64)
        source = next(n for n in model.graph if n.op_type == "Shape").outputs[0]
        self.assertIsNone(source.shape)
        self.assertEqual(remove_identities(model), 1)
        self.assertEqual(source.shape, ir.Shape([1]))
        self.assertEqual(source.dtype, ir.DataType.INT64)
        self.assertIs(model.graph.node(3).inputs[0], source)
        # a graph input is never changed
        model = ir.serde.deserialize_model(
            _parse(
                """g (int64[1] x) => (int64[1] y) {
                    ax = Constant <value_ints = [0]> ()
                    sq = Squeeze (x, ax)
                    u = Unsqueeze (sq, ax)
                    y = Neg (u)
                }"""
            )
        )
        model.graph.inputs[0].shape = None
        next(n for n in model.graph if n.op_type == "Unsqueeze").outputs[0].shape = ir.Shape([1])
        self.assertEqual(remove_identities(model), 1)
        self.assertIsNone(model.graph.inputs[0].shape)


def _unsqueeze_graph(op: str, axes1: list[int], axes2: list[int], shape: list, out: list) -> str:
    def _type(dims: list) -> str:
        return f"float[{', '.join(str(d) for d in dims)}]" if dims else "float"

    return f"""g ({_type(shape)} x) => ({_type(out)} y) {{
        a1 = Constant <value_ints = {axes1}> ()
        a2 = Constant <value_ints = {axes2}> ()
        t = {op} (x, a1)
        y = {op} (t, a2)
    }}"""


class TestMergeUnsqueeze(_PassTestCase):
    def test_chain_of_three_becomes_one_node_in_one_call(self):
        model, _ = self.apply(
            """g (float[batch] x) => (float[batch, 1, 1, 1] y)
            <int64[1] one = {1}, int64[1] two = {2}, int64[1] three = {3}> {
                a = Unsqueeze (x, one)
                b = Unsqueeze (a, two)
                y = Unsqueeze (b, three)
            }""",
            merge_unsqueeze,
            2,
        )
        self.assertEqual(self.op_types(model), ["Unsqueeze"])
        node = model.graph.node(0)
        self.assertIs(node.inputs[0], model.graph.inputs[0])
        self.assertEqual(node.inputs[1].const_value.numpy().tolist(), [1, 2, 3])
        # the axes of the removed nodes are removed as well
        self.assertEqual(len(model.graph.initializers), 1)

    def test_every_composition_matches_onnxruntime(self):
        cases = [
            ("Unsqueeze", [0], [0], ["batch", 3], [1, 1, "batch", 3]),
            ("Unsqueeze", [-1], [0], ["batch", 3], [1, "batch", 3, 1]),
            ("Unsqueeze", [1, -1], [-2, 0], ["batch", 3], [1, "batch", 1, 3, 1, 1]),
            ("Unsqueeze", [2], [1], ["batch", 3], ["batch", 1, 3, 1]),
            ("Unsqueeze", [0], [-1, 1], [], [1, 1, 1]),
            ("Squeeze", [0], [-1], [1, "batch", 3, 1], ["batch", 3]),
            ("Squeeze", [-2, 0], [1], [1, "batch", 1, 1, 3], ["batch", 3]),
            ("Squeeze", [2], [0], [1, "batch", 1], ["batch"]),
        ]
        for op, a1, a2, shape, out in cases:
            with self.subTest(op=op, a1=a1, a2=a2):
                model, _ = self.apply(_unsqueeze_graph(op, a1, a2, shape, out), merge_unsqueeze, 1)
                # the Constant nodes of the old axes are removed as well
                self.assertEqual(self.op_types(model), [op])

    def test_negative_axes_on_an_unknown_rank_stay(self):
        model, _ = self.apply(
            """g (float[batch, 4] x, int64[2] shape) => (float[1, 4, batch, 1] y) {
                r = Reshape (x, shape)
                a1 = Constant <value_ints = [-1]> ()
                a2 = Constant <value_ints = [0]> ()
                t = Unsqueeze (r, a1)
                y = Unsqueeze (t, a2)
            }""",
            lambda m: merge_unsqueeze(m),
            0,
            batches=(),
        )
        self.assertEqual(self.op_types(model).count("Unsqueeze"), 2)

    def test_inner_node_used_elsewhere_or_graph_output_stays(self):
        for outputs, extra in [
            ("float[batch, 1] t, float[batch, 1, 1] y", ""),
            ("float[batch, 1, 1] y, float[batch, 1] z", "z = Neg (t)"),
        ]:
            with self.subTest(outputs=outputs):
                model, _ = self.apply(
                    f"""g (float[batch] x) => ({outputs}) {{
                        a1 = Constant <value_ints = [1]> ()
                        a2 = Constant <value_ints = [2]> ()
                        t = Unsqueeze (x, a1)
                        y = Unsqueeze (t, a2)
                        {extra}
                    }}""",
                    merge_unsqueeze,
                    0,
                )
                self.assertEqual(self.op_types(model).count("Unsqueeze"), 2)

    def test_axes_computed_at_runtime_or_squeeze_without_axes_stay(self):
        self.apply(
            """g (float[batch] x, int64[1] a1) => (float[batch, 1, 1] y) {
                a2 = Constant <value_ints = [2]> ()
                t = Unsqueeze (x, a1)
                y = Unsqueeze (t, a2)
            }""",
            merge_unsqueeze,
            0,
            batches=(),
        )
        self.apply(
            """g (float[1, batch, 1] x) => (float[batch] y) {
                a1 = Constant <value_ints = [0]> ()
                t = Squeeze (x, a1)
                y = Squeeze (t)
            }""",
            merge_unsqueeze,
            0,
            batches=(2,),
        )

    def test_squeeze_then_unsqueeze_is_not_merged(self):
        self.apply(
            _unsqueeze_graph("Squeeze", [0], [0], [1, "batch"], [1, "batch"]).replace(
                "y = Squeeze", "y = Unsqueeze"
            ),
            merge_unsqueeze,
            0,
        )

    def test_axes_attribute_before_opset_13(self):
        proto = onnx.parser.parse_model(
            """<ir_version: 7, opset_import: ["" : 11]>
            g (float[batch] x) => (float[1, batch, 1] y) {
                t = Unsqueeze <axes = [0]> (x)
                y = Unsqueeze <axes = [-1]> (t)
            }"""
        )
        model = ir.serde.deserialize_model(proto)
        self.assertEqual(merge_unsqueeze(model), 1)
        after = ir.serde.serialize_model(model)
        onnx.checker.check_model(after, full_check=True)
        self.assertEqual(list(model.graph.node(0).attributes["axes"].value), [0, 2])
        feeds = _feeds(proto, 3)
        self.assertEqualArray(_run(proto, feeds)[0], _run(after, feeds)[0])

    def test_empty_graph(self):
        model = ir.serde.deserialize_model(_parse("g (float x) => (float x) {}"))
        self.assertEqual(merge_unsqueeze(model), 0)


class TestEliminateCommonSubexpressions(_PassTestCase):
    def test_duplicated_chains_collapse_in_one_call(self):
        model, _ = self.apply(
            """g (float[batch, 4] x) => (float[batch, 4] y) {
                ax = Constant <value_ints = [0]> ()
                ax2 = Constant <value_ints = [0]> ()
                s1 = Shape <start = 1> (x)
                q1 = Squeeze (s1, ax)
                s2 = Shape <start = 1> (x)
                q2 = Squeeze (s2, ax2)
                a = Add (q1, q2)
                c = Cast <to = 1> (a)
                y = Mul (x, c)
            }""",
            eliminate_common_subexpressions,
            3,
        )
        self.assertEqual(
            self.op_types(model), ["Constant", "Shape", "Squeeze", "Add", "Cast", "Mul"]
        )
        add = model.graph.node(3)
        self.assertIs(add.inputs[0], add.inputs[1])

    def test_different_attributes_or_input_order_stay(self):
        self.apply(
            """g (float[batch, 4] x, float[batch, 4] z) => (float[batch, 4] y, float[4, batch] w) {
                a = Sub (x, z)
                b = Sub (z, x)
                y = Add (a, b)
                t1 = Transpose <perm = [1, 0]> (x)
                t2 = Transpose <perm = [0, 1]> (x)
                t3 = Transpose (t2)
                w = Add (t1, t3)
                s1 = Shape <start = 1> (x)
                s2 = Shape <start = 0> (x)
            }""",
            eliminate_common_subexpressions,
            0,
        )

    def test_duplicated_outputs_keep_their_names(self):
        model, _ = self.apply(
            """g (float[batch] x) => (float[batch] y1, float[batch] y2, float[batch] z) {
                y1 = Exp (x)
                y2 = Exp (x)
                e = Exp (x)
                z = Neg (e)
            }""",
            eliminate_common_subexpressions,
            2,
        )
        self.assertEqual(self.op_types(model), ["Exp", "Identity", "Neg"])
        model, _ = self.apply(
            """g (float[batch] x) => (float[batch] y, float[batch] z) {
                e = Exp (x)
                z = Neg (e)
                y = Exp (x)
            }""",
            eliminate_common_subexpressions,
            1,
        )
        self.assertEqual(self.op_types(model), ["Exp", "Neg"])
        self.assertEqual(model.graph.node(0).outputs[0].name, "y")

    def test_multiple_outputs_and_constant_nodes(self):
        model, _ = self.apply(
            """g (float[batch, 4] x) => (float[batch, 2] y, float[batch, 2] z) {
                k1 = Constant <value_ints = [2]> ()
                k2 = Constant <value_ints = [2]> ()
                v1, i1 = TopK <axis = -1> (x, k1)
                v2, i2 = TopK <axis = -1> (x, k2)
                y = Add (v1, v2)
                f1 = Cast <to = 1> (i1)
                f2 = Cast <to = 1> (i2)
                z = Sub (f1, f2)
            }""",
            eliminate_common_subexpressions,
            3,
        )
        self.assertEqual(self.op_types(model), ["Constant", "TopK", "Add", "Cast", "Sub"])

    def test_random_subgraph_large_constant_and_unknown_domain_nodes_stay(self):
        for body, batches in [
            (
                """r1 = RandomUniformLike (x)
                r2 = RandomUniformLike (x)
                y = Add (r1, r2)""",
                (),
            ),
            (
                """d1 = Dropout (x)
                d2 = Dropout (x)
                y = Add (d1, d2)""",
                (2,),
            ),
            (
                """c = ReduceSum <keepdims = 0> (x)
                cond = Greater (c, c)
                i1 = If (cond) <then_branch = g1 () => (float[N] o) { o = Neg (x) },
                                else_branch = g2 () => (float[N] o) { o = Abs (x) }>
                i2 = If (cond) <then_branch = g1 () => (float[N] o) { o = Neg (x) },
                                else_branch = g2 () => (float[N] o) { o = Abs (x) }>
                y = Add (i1, i2)""",
                (2,),
            ),
        ]:
            with self.subTest(body=body.split()[2]):
                self.apply(
                    f"g (float[N] x) => (float[N] y) {{\n{body}\n}}",
                    eliminate_common_subexpressions,
                    0,
                    batches=batches,
                )
        model, _ = self.apply(
            """g (float[N] x) => (float[N] y) {
                c1 = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
                c2 = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
                s1 = ReduceSum <keepdims = 0> (c1)
                s2 = ReduceSum <keepdims = 0> (c2)
                a = Add (s1, s2)
                y = Mul (x, a)
            }""",
            functools.partial(eliminate_common_subexpressions, max_size=2),
            0,
        )
        model = ir.serde.deserialize_model(
            _parse(
                """g (float[N] x) => (float[N] y) {
                    a = Custom.Op (x)
                    b = Custom.Op (x)
                    y = Add (a, b)
                }"""
            )
        )
        self.assertEqual(eliminate_common_subexpressions(model), 0)

    def test_bad_max_size_names_the_argument(self):
        model = ir.serde.deserialize_model(_parse("g (float x) => (float x) {}"))
        self.assertEqual(eliminate_common_subexpressions(model), 0)
        with self.assertRaisesRegex(TypeError, "max_size"):
            eliminate_common_subexpressions(model, max_size=-1)


class TestExportedModel(_PassTestCase):
    def test_optimized_tiny_llm_has_no_duplicates_nor_unsqueeze_chains(self):
        import copy

        import torch

        from onnx_diagnostic.export.api import onnx_feeds, to_onnx
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs

        data = get_untrained_model_with_inputs("arnir0/Tiny-LLM", add_second_input=True)
        with torch_export_patches(patch_transformers=True):
            raw = to_onnx(
                data.model,
                (),
                kwargs=copy.deepcopy(data.inputs),
                dynamic_shapes=data.dynamic_shapes,
                exporter="custom",
                optimize=False,
            )
        model = ir.serde.deserialize_model(raw)
        counts = run_passes(
            model, [merge_unsqueeze, eliminate_common_subexpressions, remove_unused]
        )
        self.assertGreater(counts["merge_unsqueeze"], 0)
        self.assertGreater(counts["eliminate_common_subexpressions"], 0)
        self.assertEqual(merge_unsqueeze(model), 0)
        self.assertEqual(eliminate_common_subexpressions(model), 0)
        for node in model.graph:
            if node.op_type == "Unsqueeze":
                producer = node.inputs[0].producer()
                self.assertFalse(producer is not None and producer.op_type == "Unsqueeze")
        after = ir.serde.serialize_model(model)
        onnx.checker.check_model(after)
        sessions = [
            onnxruntime.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
            for p in (raw, after)
        ]
        for inputs in (data.inputs, data.inputs2):
            feeds = {
                k: v.numpy() for k, v in onnx_feeds(data.model, (), copy.deepcopy(inputs)).items()
            }
            with torch.no_grad():
                expected = data.model(**copy.deepcopy(inputs)).logits.numpy()
            for sess in sessions:
                self.assertEqualArray(expected, sess.run(None, feeds)[0], atol=1e-4)


class TestRunPasses(_PassTestCase):
    def test_default_passes_clean_a_naive_graph(self):
        model, counts = self.apply(
            """g (float[batch, 4] x) => (float[batch, 4] y)
            <float[1] w = {1.0}, float[1] v = {1.0}, float[batch, 4] a> {
                s = Shape <start = 1> (x)
                one = Constant <value_ints = [1]> ()
                shape = Concat <axis = 0> (one, s)
                c = ConstantOfShape <value = float[1] {0.0}> (shape)
                a = Add (x, c)
                b = Cast <to = 1> (a)
                d = Mul (b, w)
                y = Add (d, v)
            }""",
            run_passes,
        )
        self.assertEqual(self.op_types(model), ["Add", "Add"])
        self.assertEqual(len(model.graph.initializers), 2)
        self.assertEqual(counts["deduplicate_constants"], 1)
        self.assertGreater(counts["fold_constants"], 0)

    def test_accepts_any_callable_and_prints(self):
        calls = []

        def count_nodes(model: ir.Model) -> int:
            calls.append(len(model.graph))
            return 0

        model = ir.serde.deserialize_model(
            _parse(
                """g (float[batch] x) => (float[batch] y) {
                    a = Identity (x)
                    y = Neg (a)
                }"""
            )
        )
        counts, out, _ = self.capture(
            lambda: run_passes(
                model, [functools.partial(remove_identities), count_nodes], verbose=1
            )
        )
        self.assertEqual(counts, {"remove_identities": 1, "count_nodes": 0})
        self.assertEqual(calls, [1, 1])
        self.assertIn("[run_passes] round 0 remove_identities: 1 rewrites", out)

    def test_stops_after_max_rounds(self):
        self.assertEqual(
            run_passes(
                ir.serde.deserialize_model(_parse("g (float x) => (float x) {}")),
                [lambda m: 1],
                max_rounds=3,
            ),
            {"<lambda>": 3},
        )

    def test_bad_pass_names_the_argument(self):
        model = ir.serde.deserialize_model(_parse("g (float x) => (float x) {}"))
        with self.assertRaisesRegex(TypeError, r"passes\[1\]"):
            run_passes(model, [remove_unused, "fold"])
        with self.assertRaisesRegex(TypeError, r"passes\[0\].*must return an int"):
            run_passes(model, [lambda m: None])

    def test_bad_model_names_the_argument(self):
        proto = _parse("g (float x) => (float x) {}")
        for fct in [
            fold_constants,
            remove_identities,
            remove_unused,
            deduplicate_constants,
            merge_unsqueeze,
            eliminate_common_subexpressions,
            run_passes,
        ]:
            with self.subTest(fct=fct.__name__):
                with self.assertRaisesRegex(TypeError, f"{fct.__name__}: argument 'model'"):
                    fct(proto)
                with self.assertRaisesRegex(TypeError, "argument 'model'.*NoneType"):
                    fct(None)

    def test_examples_in_docstrings_run(self):
        for module in (module_under_test, folding):
            with self.subTest(module=module.__name__):
                res = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
                self.assertGreater(res.attempted, 0)
                self.assertEqual(res.failed, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
