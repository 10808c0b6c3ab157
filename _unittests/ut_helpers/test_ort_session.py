import os
import tempfile
import unittest

import ml_dtypes
import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime
import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.ort_session import (
    InferenceSessionForNumpy,
    InferenceSessionForTorch,
    numpy_to_torch,
    onnx_type_of_numpy,
    torch_to_numpy,
)

TP = onnx.TensorProto


def _model(op: str = "Add", elem_type: int = TP.FLOAT, n_inputs: int = 2) -> onnx.ModelProto:
    names = ["X", "Y"][:n_inputs]
    return oh.make_model(
        oh.make_graph(
            [oh.make_node(op, names, ["Z"])],
            "g",
            [oh.make_tensor_value_info(n, elem_type, [None, None]) for n in names],
            [oh.make_tensor_value_info("Z", elem_type, [None, None])],
        ),
        opset_imports=[oh.make_opsetid("", 18)],
        ir_version=9,
    )


def _two_outputs() -> onnx.ModelProto:
    return oh.make_model(
        oh.make_graph(
            [
                oh.make_node("Cast", ["X"], ["F"], to=TP.FLOAT),
                oh.make_node("Identity", ["X"], ["B"]),
            ],
            "g",
            [oh.make_tensor_value_info("X", TP.BFLOAT16, [None])],
            [
                oh.make_tensor_value_info("F", TP.FLOAT, [None]),
                oh.make_tensor_value_info("B", TP.BFLOAT16, [None]),
            ],
        ),
        opset_imports=[oh.make_opsetid("", 18)],
        ir_version=9,
    )


class TestConversions(ExtTestCase):
    def test_torch_numpy_round_trip_keeps_bits(self):
        for dtype in [
            torch.float32,
            torch.int64,
            torch.bool,
            torch.float16,
            torch.bfloat16,
            torch.float8_e4m3fn,
            torch.float8_e5m2,
        ]:
            with self.subTest(dtype=dtype):
                t = torch.tensor([[0.5, -1.25], [3.0, 0.0]]).to(dtype)
                a = torch_to_numpy(t)
                back = numpy_to_torch(a)
                self.assertEqual(back.dtype, dtype)
                self.assertEqual(tuple(a.shape), (2, 2))
                self.assertTrue(torch.equal(back.view(torch.uint8), t.view(torch.uint8)))

    def test_bfloat16_values(self):
        a = torch_to_numpy(torch.tensor([1.5, -2.0], dtype=torch.bfloat16))
        self.assertEqual(a.dtype, np.dtype(ml_dtypes.bfloat16))
        self.assertEqual(a.astype(np.float32).tolist(), [1.5, -2.0])

    def test_non_contiguous_and_grad(self):
        t = torch.arange(6, dtype=torch.float32, requires_grad=True).reshape(2, 3).T
        a = torch_to_numpy(t)
        self.assertEqual(a.tolist(), [[0, 3], [1, 4], [2, 5]])
        b = numpy_to_torch(np.arange(6).reshape(2, 3).T)
        self.assertEqual(b.tolist(), [[0, 3], [1, 4], [2, 5]])

    def test_empty(self):
        self.assertEqual(torch_to_numpy(torch.zeros((0, 3), dtype=torch.bfloat16)).shape, (0, 3))
        self.assertEqual(tuple(numpy_to_torch(np.zeros((0, 2), np.float32)).shape), (0, 2))

    def test_bad_input(self):
        self.assertRaise(lambda: torch_to_numpy(np.zeros(2)), TypeError, "tensor must be")
        self.assertRaise(lambda: numpy_to_torch([1.0]), TypeError, "array must be")
        self.assertRaise(
            lambda: numpy_to_torch(np.array(["a"])), TypeError, "torch has no type for"
        )
        self.assertRaise(lambda: onnx_type_of_numpy("nodtype"), TypeError, "no ONNX type")
        self.assertEqual(onnx_type_of_numpy(object), TP.STRING)

    def test_onnx_type_of_numpy(self):
        self.assertEqual(onnx_type_of_numpy(np.float32), TP.FLOAT)
        self.assertEqual(onnx_type_of_numpy(ml_dtypes.bfloat16), TP.BFLOAT16)
        self.assertEqual(onnx_type_of_numpy(ml_dtypes.float8_e4m3fn), TP.FLOAT8E4M3FN)


class TestInferenceSessionForNumpy(ExtTestCase):
    def test_run_float(self):
        sess = InferenceSessionForNumpy(_model())
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        got = sess.run(None, {"X": x, "Y": x})
        self.assertIsInstance(got, list)
        self.assertEqualArray(got[0], x * 2)
        self.assertEqual(sess.input_names, ["X", "Y"])
        self.assertEqual(sess.output_names, ["Z"])
        self.assertEqual(sess.input_types, ["tensor(float)", "tensor(float)"])

    def test_bfloat16_in_and_out(self):
        sess = InferenceSessionForNumpy(_two_outputs())
        x = np.array([1.5, -2.0, 0.25], dtype=ml_dtypes.bfloat16)
        f, b = sess.run(None, {"X": x})
        self.assertEqual(f.dtype, np.float32)
        self.assertEqual(f.tolist(), [1.5, -2.0, 0.25])
        self.assertEqual(b.dtype, np.dtype(ml_dtypes.bfloat16))
        self.assertEqual(b.astype(np.float32).tolist(), [1.5, -2.0, 0.25])

    def test_torch_feeds_accepted_and_output_selection(self):
        sess = InferenceSessionForNumpy(_two_outputs())
        (b,) = sess.run(["B"], {"X": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)})
        self.assertEqual(b.astype(np.float32).tolist(), [1.0, 2.0])
        self.assertEqual(len(sess.run_dlpack(None, {"X": np.zeros(2, ml_dtypes.bfloat16)})), 2)

    def test_empty_tensor(self):
        sess = InferenceSessionForNumpy(_model())
        x = np.zeros((0, 3), dtype=np.float32)
        self.assertEqual(sess.run(None, {"X": x, "Y": x})[0].shape, (0, 3))

    def test_model_sources(self):
        model = _model()
        x = np.ones((1, 2), dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.onnx")
            onnx.save(model, path)
            for src in [path, model.SerializeToString()]:
                got = InferenceSessionForNumpy(src).run(None, {"X": x, "Y": x})[0]
                self.assertEqualArray(got, x * 2)
        ort = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        self.assertIs(InferenceSessionForNumpy(ort).sess, ort)

    def test_options(self):
        sess = InferenceSessionForNumpy(
            _model(), providers="cpu", graph_optimization_level=False, log_severity_level=3
        )
        self.assertEqual(sess.sess.get_providers(), ["CPUExecutionProvider"])
        opts = onnxruntime.SessionOptions()
        InferenceSessionForNumpy(_model(), session_options=opts)

    def test_bad_input(self):
        sess = InferenceSessionForNumpy(_model())
        x = np.ones((1, 2), dtype=np.float32)
        self.assertRaise(lambda: sess.run(None, {"X": x}), ValueError, "missing inputs ['Y']")
        self.assertRaise(
            lambda: sess.run(None, {"X": x, "Y": x, "W": x}), ValueError, "unexpected inputs"
        )
        self.assertRaise(lambda: sess.run(None, [x, x]), TypeError, "feeds must be a dict")
        self.assertRaise(lambda: sess.run(None, {"X": x, "Y": [1]}), TypeError, "feeds['Y']")
        self.assertRaise(lambda: sess.run(["W"], {"X": x, "Y": x}), ValueError, "output_names")
        self.assertRaise(lambda: InferenceSessionForNumpy(3), TypeError, "sess must be")
        self.assertRaise(
            lambda: InferenceSessionForNumpy("/no/such/model.onnx"), FileNotFoundError, "sess="
        )
        self.assertRaise(lambda: InferenceSessionForNumpy(_model(), providers="tpu"), ValueError)
        self.assertRaise(
            lambda: InferenceSessionForNumpy(sess.sess, providers="cpu"),
            ValueError,
            "already an InferenceSession",
        )
        self.assertRaise(
            lambda: InferenceSessionForNumpy(
                _model(), session_options=onnxruntime.SessionOptions(), log_severity_level=3
            ),
            ValueError,
            "session_options is given",
        )


class TestInferenceSessionForTorch(ExtTestCase):
    def test_run_float_returns_tensors(self):
        sess = InferenceSessionForTorch(_model())
        x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        got = sess.run(None, {"X": x, "Y": x})
        self.assertIsInstance(got, tuple)
        self.assertIsInstance(got[0], torch.Tensor)
        self.assertEqualArray(got[0], x * 2)

    def test_bfloat16_and_bool(self):
        sess = InferenceSessionForTorch(_two_outputs())
        x = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
        f, b = sess.run(None, {"X": x})
        self.assertEqual(f.dtype, torch.float32)
        self.assertEqual(b.dtype, torch.bfloat16)
        self.assertEqualArray(b, x)
        sess = InferenceSessionForTorch(_model("And", TP.BOOL))
        t = torch.tensor([[True, False]])
        (z,) = sess.run(None, {"X": t, "Y": torch.tensor([[True, True]])})
        self.assertEqualArray(z, t)

    def test_non_contiguous_inputs_and_numpy_feeds(self):
        sess = InferenceSessionForTorch(_model())
        x = torch.arange(6, dtype=torch.float32).reshape(2, 3).T
        (z,) = sess.run(None, {"X": x, "Y": x.numpy()})
        self.assertEqualArray(z, x * 2)

    def test_empty_tensor_and_run_dlpack(self):
        sess = InferenceSessionForTorch(_model())
        x = torch.zeros((0, 4))
        (z,) = sess.run_dlpack(None, {"X": x, "Y": x})
        self.assertEqual(tuple(z.shape), (0, 4))

    def test_inputs_not_modified(self):
        sess = InferenceSessionForTorch(_model())
        x = torch.ones((2, 2))
        sess.run(None, {"X": x, "Y": x})
        self.assertEqualArray(x, torch.ones((2, 2)))

    def test_bad_input(self):
        sess = InferenceSessionForTorch(_model())
        x = torch.ones((1, 2))
        self.assertRaise(lambda: sess.run(None, {"X": x}), ValueError, "missing inputs ['Y']")
        self.assertRaise(lambda: sess.run(None, {"X": x, "Y": "a"}), TypeError, "feeds['Y']")


class TestDocstrings(ExtTestCase):
    def test_examples_in_docstrings_run(self):
        self.assertDocstringExamples("onnx_diagnostic.helpers.ort_session")


class TestZeroDimensional(ExtTestCase):
    """0-d arrays and tensors keep their shape () both ways (a 0-d Add returns 33, not [33])."""

    def test_0d_through_sessions(self):
        import onnx.helper as oh

        from onnx_diagnostic.helpers.ort_session import (
            InferenceSessionForNumpy,
            InferenceSessionForTorch,
            numpy_to_torch,
        )

        x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [])
        z = oh.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [])
        model = oh.make_model(
            oh.make_graph([oh.make_node("Add", ["x", "x"], ["z"])], "g", [x], [z]),
            opset_imports=[oh.make_opsetid("", 18)],
            ir_version=9,
        )
        got = InferenceSessionForNumpy(model).run(None, {"x": np.array(16.5, dtype=np.float32)})
        self.assertEqual(got[0].shape, ())
        self.assertEqual(float(got[0]), 33.0)
        got = InferenceSessionForTorch(model).run(None, {"x": torch.tensor(16.5)})
        self.assertEqual(tuple(got[0].shape), ())
        self.assertEqual(tuple(numpy_to_torch(np.array(2.0, dtype=np.float32)).shape), ())


if __name__ == "__main__":
    unittest.main(verbosity=2)
