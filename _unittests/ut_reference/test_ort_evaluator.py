import os
import tempfile
import unittest

import ml_dtypes
import numpy as np
import onnx
import onnx.helper as oh
import torch
from onnx import TensorProto

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.reference import OnnxruntimeEvaluator
from onnx_diagnostic.reference.ort_evaluator import outer_scope_names, to_torch

from _reference_tools import one_node_model, ort_run


def _model():
    return oh.make_model(
        oh.make_graph(
            [
                oh.make_node("Mul", ["X", "W"], ["xw"], name="mul"),
                oh.make_node("ReduceSum", ["xw", "axes"], ["s"], name="sum", keepdims=0),
                oh.make_node("Sqrt", ["s"], ["Y"], name="sqrt"),
            ],
            "g",
            [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["a", 3])],
            [oh.make_tensor_value_info("Y", TensorProto.FLOAT, ["a"])],
            [
                onnx.numpy_helper.from_array(np.array([1, 2, 3], np.float32), "W"),
                onnx.numpy_helper.from_array(np.array([1], np.int64), "axes"),
            ],
        ),
        opset_imports=[oh.make_opsetid("", 18)],
        ir_version=10,
    )


class TestOnnxruntimeEvaluator(ExtTestCase):
    def test_outputs_and_intermediate_results(self):
        model = _model()
        x = np.abs(np.random.randn(4, 3).astype(np.float32))
        ev = OnnxruntimeEvaluator(model)
        expected = ort_run(model, {"X": x})
        got = ev.run(None, {"X": x})
        self.assertEqualArray(expected[0], got[0], atol=1e-6)
        res = ev.run(None, {"X": x}, intermediate=True)
        self.assertEqual(set(res), {"X", "W", "axes", "xw", "s", "Y"})
        self.assertEqualArray(x * np.array([1, 2, 3], np.float32), res["xw"])
        # an intermediate result can be asked by name
        self.assertEqualArray(res["s"], ev.run(["s"], {"X": x})[0])
        self.assertEqual(len(ev.sessions), 3)
        # same types: the sessions are reused, other shapes included
        ev.run(None, {"X": x[:2]})
        self.assertEqual(len(ev.sessions), 3)

    def test_torch_in_torch_out_and_file(self):
        model = _model()
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "m.onnx")
            onnx.save(model, name)
            ev = OnnxruntimeEvaluator(name)
        x = torch.rand(2, 3)
        got = ev.run(None, {"X": x})
        self.assertIsInstance(got[0], torch.Tensor)
        self.assertEqualArray(
            torch.sqrt((x * torch.tensor([1.0, 2, 3])).sum(-1)), got[0], atol=1e-6
        )
        whole = OnnxruntimeEvaluator(ev, whole=True).run(None, {"X": x})
        self.assertEqualArray(got[0], whole[0], atol=1e-6)
        with self.assertRaises(ValueError):
            OnnxruntimeEvaluator(model, whole=True).run(None, {"X": x}, intermediate=True)

    def test_zero_d_empty_bfloat16(self):
        model, feeds = one_node_model("Add", [np.array(3, np.int64), np.array(30, np.int64)])
        got = OnnxruntimeEvaluator(model).run(None, feeds)[0]
        self.assertEqual(got.shape, ())
        self.assertEqual(int(got), 33)
        model, feeds = one_node_model("Add", [np.zeros((0, 2), np.float32)] * 2)
        self.assertEqual(OnnxruntimeEvaluator(model).run(None, feeds)[0].shape, (0, 2))
        xb = np.array([1.5, 2.0], dtype=ml_dtypes.bfloat16)
        model, feeds = one_node_model("Identity", [xb])
        got = OnnxruntimeEvaluator(model).run(None, feeds)[0]
        self.assertEqual(got.dtype, ml_dtypes.bfloat16)
        self.assertEqualArray(np.array([1.5, 2], dtype=np.float32), got.astype(np.float32))
        self.assertEqual(to_torch(np.array(2.0, np.float32)).shape, ())

    def test_if_runs_as_one_session_with_outer_names(self):
        then = oh.make_graph(
            [oh.make_node("Add", ["X", "X"], ["r"])],
            "t",
            [],
            [oh.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        )
        other = oh.make_graph(
            [oh.make_node("Neg", ["Z"], ["r"])],
            "e",
            [],
            [oh.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        )
        node = oh.make_node("If", ["C"], ["Y"], then_branch=then, else_branch=other)
        self.assertEqual(sorted(outer_scope_names(node)), ["X", "Z"])
        model = oh.make_model(
            oh.make_graph(
                [oh.make_node("Abs", ["X"], ["Z"]), node],
                "g",
                [
                    oh.make_tensor_value_info("C", TensorProto.BOOL, []),
                    oh.make_tensor_value_info("X", TensorProto.FLOAT, [2]),
                ],
                [oh.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
            ),
            opset_imports=[oh.make_opsetid("", 18)],
        )
        ev = OnnxruntimeEvaluator(model)
        x = np.array([1.0, -2.0], np.float32)
        self.assertEqualArray(2 * x, ev.run(None, {"C": np.array(True), "X": x})[0])
        self.assertEqualArray(-np.abs(x), ev.run(None, {"C": np.array(False), "X": x})[0])

    def test_graph_node_and_function(self):
        model = _model()
        with self.assertRaises(ValueError):
            OnnxruntimeEvaluator(model.graph)
        ev = OnnxruntimeEvaluator(model.graph, opsets=18)
        x = np.ones((1, 3), np.float32)
        self.assertEqualArray(
            np.array([np.sqrt(6)], np.float32), ev.run(None, {"X": x})[0], atol=1e-6
        )
        ev = OnnxruntimeEvaluator(oh.make_node("Neg", ["A"], ["B"]), opsets={"": 18})
        self.assertEqual((ev.input_names, ev.output_names), (["A"], ["B"]))
        self.assertEqualArray(-x, ev.run(None, {"A": x})[0])

    def test_errors_name_the_node(self):
        model = _model()
        ev = OnnxruntimeEvaluator(model)
        with self.assertRaises(RuntimeError) as cm:
            ev.run(None, {"X": np.ones((2, 4), np.float32)})
        self.assertIn("node 0 Mul('') 'mul' failed", str(cm.exception))
        self.assertIn("X: float32(2, 4)", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            ev.run(None, {})
        self.assertIn("missing inputs ['X']", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            ev.run(["nope"], {"X": np.ones((2, 3), np.float32)})
        self.assertIn("nope", str(cm.exception))
        with self.assertRaises(TypeError):
            OnnxruntimeEvaluator(3)
        model, feeds = one_node_model("NotAnOp", [np.ones(2, np.float32)])
        with self.assertRaises(RuntimeError) as cm:
            OnnxruntimeEvaluator(model).run(None, feeds)
        self.assertIn("NotAnOp", str(cm.exception))

    def test_docstring_examples(self):
        self.assertDocstringExamples("onnx_diagnostic.reference.ort_evaluator")


if __name__ == "__main__":
    unittest.main(verbosity=2)
