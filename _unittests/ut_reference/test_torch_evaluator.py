import unittest

import numpy as np
import onnx.helper as oh
import torch
from onnx import TensorProto

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.reference import TorchOnnxEvaluator
from onnx_diagnostic.reference.torch_evaluator import get_kernels

from _reference_tools import one_node_model, ort_run

MS = "com.microsoft"
rnd = np.random.default_rng(1)


def f32(*shape):
    return rnd.standard_normal(shape).astype(np.float32)


def i64(*values):
    return np.array(values, dtype=np.int64)


B, S, N, KV, H = 2, 3, 4, 2, 16

#: (op_type, inputs, number of outputs, domain, attributes)
CASES = [
    ("Add", [f32(2, 3), f32(3)], 1, "", {}),
    ("Sub", [f32(2, 3), f32(2, 1)], 1, "", {}),
    ("Mul", [f32(2, 3), f32(1)], 1, "", {}),
    ("Div", [f32(2, 3), f32(3) + 3], 1, "", {}),
    ("Div", [i64(7, -7, 9), i64(2, 2, -4)], 1, "", {}),
    ("Pow", [np.abs(f32(2, 3)), np.array(2.0, np.float32)], 1, "", {}),
    ("Sqrt", [np.abs(f32(2, 3))], 1, "", {}),
    ("Reciprocal", [f32(4) + 5], 1, "", {}),
    ("Neg", [f32(2)], 1, "", {}),
    ("Exp", [f32(2, 2)], 1, "", {}),
    ("Log", [np.abs(f32(3)) + 0.1], 1, "", {}),
    ("Tanh", [f32(3)], 1, "", {}),
    ("Sigmoid", [f32(3)], 1, "", {}),
    ("Cos", [f32(3)], 1, "", {}),
    ("Sin", [f32(3)], 1, "", {}),
    ("Softmax", [f32(2, 5)], 1, "", {"axis": -1}),
    ("Softmax", [f32(2, 5, 3)], 1, "", {"axis": 1}),
    ("Cast", [f32(2, 3) * 10], 1, "", {"to": TensorProto.INT64}),
    ("Cast", [f32(2, 3)], 1, "", {"to": TensorProto.FLOAT16}),
    ("MatMul", [f32(2, 3, 4), f32(4, 5)], 1, "", {}),
    ("Gemm", [f32(3, 4), f32(5, 4), f32(5)], 1, "", {"transB": 1, "alpha": 0.5}),
    ("Reshape", [f32(2, 3, 4), i64(0, -1)], 1, "", {}),
    ("Transpose", [f32(2, 3, 4)], 1, "", {"perm": [2, 0, 1]}),
    ("Concat", [f32(2, 3), f32(2, 1)], 1, "", {"axis": -1}),
    ("Slice", [f32(5, 6), i64(1, 0), i64(4, 100), i64(0, 1), i64(2, 1)], 1, "", {}),
    ("Slice", [f32(5, 6), i64(-1), i64(-100), i64(1), i64(-2)], 1, "", {}),
    ("Gather", [f32(5, 3), i64(0, -1, 2)], 1, "", {"axis": 0}),
    ("Gather", [f32(5, 3), np.array(1, np.int64)], 1, "", {"axis": 1}),
    (
        "GatherElements",
        [f32(3, 4), np.array([[0, 1], [2, 3], [1, 0]], np.int64)],
        1,
        "",
        {"axis": 1},
    ),
    ("GatherND", [f32(3, 4), np.array([[0, 1], [2, 3]], np.int64)], 1, "", {}),
    ("Unsqueeze", [f32(2, 3), i64(0, -1)], 1, "", {}),
    ("Squeeze", [f32(1, 3, 1), i64(0)], 1, "", {}),
    ("Shape", [f32(2, 3, 4)], 1, "", {"start": 1}),
    ("Expand", [f32(3, 1), i64(2, 1, 4)], 1, "", {}),
    ("Where", [rnd.integers(0, 2, (2, 3)).astype(bool), f32(2, 3), f32(3)], 1, "", {}),
    ("Equal", [i64(1, 2, 3), i64(1, 0, 3)], 1, "", {}),
    ("Less", [f32(3), f32(3)], 1, "", {}),
    ("LessOrEqual", [i64(1, 2), i64(2, 2)], 1, "", {}),
    ("Greater", [f32(3), f32(3)], 1, "", {}),
    ("And", [np.array([True, False]), np.array([True, True])], 1, "", {}),
    ("Or", [np.array([True, False]), np.array([False, False])], 1, "", {}),
    ("Not", [np.array([True, False])], 1, "", {}),
    ("Range", [np.array(1, np.int64), np.array(9, np.int64), np.array(3, np.int64)], 1, "", {}),
    ("ConstantOfShape", [i64(2, 3)], 1, "", {}),
    ("Identity", [f32(2)], 1, "", {}),
    ("ReduceMean", [f32(2, 3, 4), i64(-1)], 1, "", {}),
    ("ReduceSum", [f32(2, 3, 4), i64(0, 2)], 1, "", {"keepdims": 0}),
    ("ReduceMax", [f32(2, 3, 4)], 1, "", {"keepdims": 0}),
    ("Trilu", [f32(4, 4), np.array(1, np.int64)], 1, "", {"upper": 0}),
    ("ScatterND", [f32(4, 3), np.array([[1], [3]], np.int64), f32(2, 3)], 1, "", {}),
    ("CumSum", [f32(2, 4), np.array(1, np.int64)], 1, "", {"exclusive": 1, "reverse": 1}),
    ("Split", [f32(2, 6), i64(2, 4)], 2, "", {"axis": 1}),
    ("LayerNormalization", [f32(2, 3, 8), f32(8), f32(8)], 1, "", {"epsilon": 1e-3}),
    ("RMSNormalization", [f32(2, 3, 8), f32(8)], 1, "", {}),
    ("SimplifiedLayerNormalization", [f32(2, 3, 8), f32(8)], 1, "", {}),
    ("SkipSimplifiedLayerNormalization", [f32(2, 3, 8), f32(2, 3, 8), f32(8)], 4, MS, {}),
    (
        "RotaryEmbedding",
        [f32(B, N, S, H), f32(8, H // 2), f32(8, H // 2), i64(0, 1, 2)[None].repeat(B, 0)],
        1,
        "",
        {},
    ),
    (
        "RotaryEmbedding",
        [f32(B, S, N * H), f32(B, S, H // 2), f32(B, S, H // 2)],
        1,
        "",
        {"num_heads": N, "interleaved": 1},
    ),
    (
        "RotaryEmbedding",
        [f32(B, S, N * H), i64(2), f32(8, H // 2), f32(8, H // 2)],
        1,
        MS,
        {"num_heads": N},
    ),
    (
        "Attention",
        [
            f32(B, N, S, H),
            f32(B, KV, S, H),
            f32(B, KV, S, H),
            f32(B, 1, S, S + 2),
            f32(B, KV, 2, H),
            f32(B, KV, 2, H),
        ],
        3,
        "",
        {"scale": 0.2},
    ),
    ("Attention", [f32(B, N, S, H), f32(B, N, S, H), f32(B, N, S, H)], 1, "", {"is_causal": 1}),
    (
        "GroupQueryAttention",
        [
            f32(B, 1, N * H),
            f32(B, 1, KV * H),
            f32(B, 1, KV * H),
            f32(B, KV, 4, H),
            f32(B, KV, 4, H),
            np.array([4, 4], np.int32),
            np.array(5, np.int32),
        ],
        3,
        MS,
        {"num_heads": N, "kv_num_heads": KV},
    ),
]


class TestTorchKernels(ExtTestCase):
    def test_each_kernel_against_onnxruntime(self):
        for op, inputs, n, domain, atts in CASES:
            with self.subTest(op=op, atts=atts, shapes=[getattr(i, "shape", None) for i in inputs]):
                model, feeds = one_node_model(op, inputs, n, domain=domain, **atts)
                expected = ort_run(model, feeds)
                got = TorchOnnxEvaluator(model).run(
                    None, {k: torch.from_numpy(v) for k, v in feeds.items()}
                )
                self.assertEqual(len(expected), len(got))
                for e, g in zip(expected, got):
                    self.assertIsInstance(g, torch.Tensor)
                    self.assertEqualArray(e, g, atol=1e-4)

    def test_numpy_in_numpy_out_and_float16(self):
        model, feeds = one_node_model("Add", [f32(2).astype(np.float16)] * 2)
        got = TorchOnnxEvaluator(model).run(None, feeds)
        self.assertIsInstance(got[0], np.ndarray)
        self.assertEqualArray(ort_run(model, feeds)[0], got[0])

    def test_bfloat16_rms_and_empty_and_zero_d(self):
        model, _ = one_node_model("RMSNormalization", [f32(2, 8), f32(8)])
        x, w = torch.randn(2, 8, dtype=torch.bfloat16), torch.ones(8, dtype=torch.bfloat16)
        y = TorchOnnxEvaluator(model).run(None, {"i0": x, "i1": w})[0]
        self.assertEqual(y.dtype, torch.bfloat16)
        xf = x.float()
        self.assertEqualArray(
            (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16),
            y,
            atol=1e-2,
        )
        model, feeds = one_node_model("Add", [np.zeros((0, 3), np.float32), f32(3)])
        self.assertEqual(TorchOnnxEvaluator(model).run(None, feeds)[0].shape, (0, 3))
        model, feeds = one_node_model("Mul", [np.array(2.0, np.float32)] * 2)
        got = TorchOnnxEvaluator(model).run(None, feeds)[0]
        self.assertEqual(got.shape, ())
        self.assertEqual(float(got), 4.0)

    def test_if_and_local_function(self):
        then = oh.make_graph(
            [oh.make_node("Add", ["X", "X"], ["r"])],
            "t",
            [],
            [oh.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        )
        other = oh.make_graph(
            [oh.make_node("Neg", ["X"], ["r"])],
            "e",
            [],
            [oh.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        )
        fct = oh.make_function(
            "local",
            "Twice",
            ["a"],
            ["b"],
            [oh.make_node("Add", ["a", "a"], ["b"])],
            [oh.make_opsetid("", 18)],
        )
        model = oh.make_model(
            oh.make_graph(
                [
                    oh.make_node("If", ["C"], ["Y"], then_branch=then, else_branch=other),
                    oh.make_node("Twice", ["Y"], ["Z"], domain="local"),
                ],
                "g",
                [
                    oh.make_tensor_value_info("C", TensorProto.BOOL, []),
                    oh.make_tensor_value_info("X", TensorProto.FLOAT, [2]),
                ],
                [oh.make_tensor_value_info("Z", TensorProto.FLOAT, [2])],
            ),
            opset_imports=[oh.make_opsetid("", 18), oh.make_opsetid("local", 1)],
            functions=[fct],
        )
        ev = TorchOnnxEvaluator(model)
        x = torch.tensor([1.0, -2.0])
        self.assertEqualArray(4 * x, ev.run(None, {"C": torch.tensor(True), "X": x})[0])
        self.assertEqualArray(-2 * x, ev.run(None, {"C": torch.tensor(False), "X": x})[0])

    def test_missing_kernel_names_the_node(self):
        model, _ = one_node_model("Einsum", [f32(2, 2)], equation="ii->i")
        model.graph.node[0].name = "my_einsum"
        with self.assertRaises(NotImplementedError) as cm:
            TorchOnnxEvaluator(model)
        self.assertIn("'Einsum'", str(cm.exception))
        self.assertIn("my_einsum", str(cm.exception))

    def test_bad_inputs(self):
        model, feeds = one_node_model("Reshape", [f32(2, 3), i64(4, -1)])
        model.graph.node[0].name = "bad_reshape"
        with self.assertRaises(RuntimeError) as cm:
            TorchOnnxEvaluator(model).run(None, feeds)
        self.assertIn("Reshape node 'bad_reshape'", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            TorchOnnxEvaluator(model).run(None, {"i0": torch.zeros(2)})
        self.assertIn("missing inputs ['i1']", str(cm.exception))
        model, feeds = one_node_model(
            "GatherND", [f32(2, 2), np.zeros((1, 1), np.int64)], batch_dims=1
        )
        with self.assertRaises(NotImplementedError) as cm:
            TorchOnnxEvaluator(model).run(None, feeds)
        self.assertIn("batch_dims", str(cm.exception))

    def test_kernel_table(self):
        kernels = get_kernels()
        for op in [
            "MatMul",
            "Gemm",
            "Softmax",
            "ScatterND",
            "CumSum",
            "Trilu",
            "Attention",
            "RotaryEmbedding",
            "RMSNormalization",
            "SimplifiedLayerNormalization",
        ]:
            self.assertIn(("", op), kernels)
        self.assertIn((MS, "GroupQueryAttention"), kernels)

    def test_docstring_examples(self):
        self.assertDocstringExamples("onnx_diagnostic.reference.torch_evaluator")


if __name__ == "__main__":
    unittest.main(verbosity=2)
