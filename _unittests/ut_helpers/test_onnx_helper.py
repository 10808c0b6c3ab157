import doctest
import json
import os
import tempfile
import unittest

import ml_dtypes
import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import torch
from onnx import TensorProto

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import onnx_helper
from onnx_diagnostic.helpers.onnx_helper import (
    LIGHTEN_THRESHOLD,
    OnnxLoadError,
    from_array_extended,
    get_onnx_signature,
    load_onnx,
    onnx_dtype_name,
    onnx_find,
    onnx_lighten,
    onnx_partition,
    onnx_stats,
    onnx_unlighten,
    optimize_onnx,
    pretty_onnx,
    to_dot,
    type_info,
)


def small_model() -> onnx.ModelProto:
    """x (float[N, 100]) -> MatMul(w 100x100) -> Add(b) -> Relu -> y, Shape(x) -> s."""
    rng = np.random.default_rng(0)
    w = from_array_extended(rng.normal(0.5, 2.0, (100, 100)).astype(np.float32), name="w")
    b = from_array_extended(np.arange(100).astype(np.float32), name="b")
    return oh.make_model(
        oh.make_graph(
            [
                oh.make_node("MatMul", ["x", "w"], ["t"], name="mm"),
                oh.make_node("Add", ["t", "b"], ["u"], name="add"),
                oh.make_node("Relu", ["u"], ["y"], name="relu"),
                oh.make_node("Shape", ["x"], ["s"], name="shape"),
            ],
            "g",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 100])],
            [
                oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 100]),
                oh.make_tensor_value_info("s", TensorProto.INT64, [2]),
            ],
            [w, b],
        ),
        opset_imports=[oh.make_opsetid("", 18)],
        ir_version=10,
    )


def run(model: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime

    sess = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return sess.run(None, feeds)


class TestOnnxHelper(ExtTestCase):
    def test_docstring_examples(self):
        res = doctest.testmod(onnx_helper, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertGreater(res.attempted, 20)
        self.assertEqual(0, res.failed)

    def test_onnx_dtype_name(self):
        self.assertEqual("INT64", onnx_dtype_name(7))
        self.assertEqual("FLOAT", onnx_dtype_name(TensorProto.FLOAT))
        self.assertEqual("FLOAT8E4M3FN", onnx_dtype_name(TensorProto.FLOAT8E4M3FN))
        with self.assertRaisesRegex(ValueError, "itype=1000 is not an ONNX element type"):
            onnx_dtype_name(1000)
        self.assertEqual("UNEXPECTED", onnx_dtype_name(1000, exc=False))
        self.assertEqual("UNDEFINED", onnx_dtype_name(0, exc=False))

    def test_type_info(self):
        self.assertEqual(-(2**63), type_info(TensorProto.INT64, "min"))
        self.assertEqual(255, type_info(TensorProto.UINT8, "max"))
        self.assertEqual(float(np.finfo(np.float32).max), type_info(TensorProto.FLOAT, "max"))
        self.assertEqual(448.0, type_info(TensorProto.FLOAT8E4M3FN, "max"))
        self.assertEqual(4, type_info(TensorProto.INT4, "bits"))
        self.assertEqual(64, type_info(TensorProto.DOUBLE, "bits"))
        with self.assertRaisesRegex(ValueError, "att must be 'min', 'max' or 'bits'"):
            type_info(TensorProto.FLOAT, "eps")

    def test_from_array_extended(self):
        cases = [
            (np.array([1.5, -2], dtype=np.float32), TensorProto.FLOAT),
            (np.array([1.5, -2], dtype=ml_dtypes.bfloat16), TensorProto.BFLOAT16),
            (np.array([1.5, -2], dtype=ml_dtypes.float8_e4m3fn), TensorProto.FLOAT8E4M3FN),
            (torch.tensor([1.5, -2], dtype=torch.bfloat16), TensorProto.BFLOAT16),
            (torch.tensor([1.5, -2], dtype=torch.float16), TensorProto.FLOAT16),
            (torch.tensor([1.5, -2]).to(torch.float8_e5m2), TensorProto.FLOAT8E5M2),
            (torch.tensor([3, 4], dtype=torch.int64), TensorProto.INT64),
        ]
        for value, itype in cases:
            with self.subTest(dtype=str(value.dtype)):
                t = from_array_extended(value, name="t")
                self.assertEqual((itype, "t", [2]), (t.data_type, t.name, list(t.dims)))
                back = onh.to_array(t).astype(np.float32)
                self.assertEqual([1.5, -2] if itype != TensorProto.INT64 else [3, 4],
                                 back.tolist())  # fmt: skip
        self.assertEqual(TensorProto.INT64, from_array_extended(np.int64(3)).data_type)
        with self.assertRaisesRegex(TypeError, "numpy array or a torch tensor, got list"):
            from_array_extended([1, 2])

    def test_get_onnx_signature(self):
        self.assertEqual((("x", TensorProto.FLOAT, ("N", 100)),), get_onnx_signature(small_model()))

    def test_pretty_onnx_hides_big_initializers(self):
        text = pretty_onnx(small_model())
        self.assertIn("# initializer w: float[100, 100]", text)
        self.assertIn("# initializer b: float[100]", text)
        self.assertIn("t = MatMul (x, w)", text)
        self.assertLess(len(text), 1000)
        self.assertIn("y = Relu (u)", pretty_onnx(small_model().graph))
        with self.assertRaisesRegex(TypeError, "cannot print an object of type int"):
            pretty_onnx(3)

    def test_onnx_find(self):
        model = small_model()
        self.assertEqual(["mm", "add"], [n.name for n in onnx_find(model, "t")])
        self.assertEqual(["mm", "shape"], [n.name for n in onnx_find(model, ["x"])])
        self.assertEqual([], onnx_find(model, "nothing"))
        _, out, _ = self.capture(lambda: onnx_find(model, "u", verbose=1))
        self.assertEqual([">> u: Add(t, b) -> u", "<< u: Relu(u) -> y"], out.splitlines())

    def test_onnx_find_in_subgraphs(self):
        then = oh.make_graph(
            [oh.make_node("Neg", ["x"], ["z"], name="inner")], "then", [],
            [oh.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        )  # fmt: skip
        model = oh.make_model(
            oh.make_graph(
                [oh.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)], "g",
                [oh.make_tensor_value_info("c", TensorProto.BOOL, []),
                 oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
            )
        )  # fmt: skip
        self.assertEqual(["Neg", "Neg"], [n.op_type for n in onnx_find(model, "x")])

    def test_lighten_unlighten(self):
        model = small_model()
        before = model.SerializeToString()
        light, stats = onnx_lighten(model)
        self.assertEqual(before, model.SerializeToString())  # not modified
        self.assertEqual(["b"], [i.name for i in light.graph.initializer])
        self.assertEqual(["w"], list(stats))
        self.assertEqual([100, 100], stats["w"]["shape"])
        self.assertEqual(TensorProto.FLOAT, stats["w"]["itype"])
        self.assertAlmostEqual(0.5, stats["w"]["mean"], atol=0.1)
        self.assertAlmostEqual(2.0, stats["w"]["std"], atol=0.1)
        self.assertLess(len(light.SerializeToString()), len(before) / 10)
        self.assertGreater(100 * 100, LIGHTEN_THRESHOLD)
        restored = onnx_unlighten(light, stats)
        w = onh.to_array(next(i for i in restored.graph.initializer if i.name == "w"))
        self.assertEqual((100, 100), w.shape)
        self.assertEqual(np.float32, w.dtype)
        self.assertAlmostEqual(stats["w"]["mean"], float(w.mean()), atol=0.1)
        self.assertAlmostEqual(stats["w"]["std"], float(w.std()), atol=0.1)
        self.assertGreaterEqual(float(w.min()), stats["w"]["min"])
        x = np.ones((3, 100), dtype=np.float32)
        self.assertEqual((3, 100), run(restored, {"x": x})[0].shape)

    def test_unlighten_reads_the_side_file(self):
        light, stats = onnx_lighten(small_model())
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "light.onnx")
            onnx.save(light, name)
            with self.assertRaisesRegex(FileNotFoundError, "light.onnx.stats"):
                onnx_unlighten(name)
            with open(name + ".stats", "w") as f:
                json.dump(stats, f)
            restored = onnx_unlighten(name)
        self.assertEqual(["b", "w"], sorted(i.name for i in restored.graph.initializer))
        with self.assertRaisesRegex(TypeError, "stats must be given"):
            onnx_unlighten(light)

    def test_load_onnx_errors(self):
        with tempfile.TemporaryDirectory() as tmp:
            text = os.path.join(tmp, "a.onnx")
            with open(text, "w") as f:
                f.write("this is a text file, not a model\n" * 10)
            with self.assertRaisesRegex(OnnxLoadError, "is not an ONNX model") as cm:
                load_onnx(text)
            self.assertNotIn("Wire format", str(cm.exception).split("(")[0])
            empty = os.path.join(tmp, "empty.onnx")
            open(empty, "wb").close()
            with self.assertRaisesRegex(OnnxLoadError, "no graph found"):
                load_onnx(empty)
            with self.assertRaisesRegex(OnnxLoadError, "is a folder"):
                load_onnx(tmp)
        with self.assertRaisesRegex(OnnxLoadError, "does not exist"):
            load_onnx("missing.onnx")

    def test_onnx_stats(self):
        st = onnx_stats(small_model())
        self.assertEqual(4, st["n_nodes"])
        self.assertEqual({"MatMul": 1, "Add": 1, "Relu": 1, "Shape": 1}, st["op_types"])
        self.assertEqual(2, st["n_initializers"])
        self.assertEqual((100 * 100 + 100) * 4, st["initializers_size"])
        self.assertEqual(["w", "b"], [r["name"] for r in st["initializers"]])
        self.assertEqual(dict(name="w", dtype="float", shape=[100, 100], bytes=40000),
                         st["initializers"][0])  # fmt: skip
        self.assertEqual(["x: float[N, 100]"], st["inputs"])
        self.assertEqual(["y: float[N, 100]", "s: int64[2]"], st["outputs"])
        self.assertEqual({"ai.onnx": 18}, st["opsets"])

    def test_to_dot(self):
        text = to_dot(small_model())
        self.assertTrue(text.startswith("digraph {"))
        self.assertTrue(text.endswith("}"))
        self.assertIn('"node:0" [label="MatMul\\nmm", shape=box];', text)
        self.assertIn('"init:w" -> "node:0" [label="w"];', text)
        self.assertIn('"node:2" -> "out:y" [label="y"];', text)
        self.assertIn('"out:s" [label="s\\nint64[2]"', text)

    def test_optimize_custom_and_onnxscript(self):
        model = oh.make_model(
            oh.make_graph(
                [oh.make_node("Identity", ["x"], ["i"]), oh.make_node("Neg", ["x"], ["unused"]),
                 oh.make_node("Abs", ["i"], ["y"])], "g",
                [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
            ),
            opset_imports=[oh.make_opsetid("", 23)], ir_version=10,
        )  # fmt: skip
        before = model.SerializeToString()
        for method in ("custom", "onnxscript"):
            with self.subTest(method=method):
                opt, counts = optimize_onnx(model, method=method)
                self.assertEqual(["Abs"], [n.op_type for n in opt.graph.node])
                x = np.array([-1, 2], dtype=np.float32)
                self.assertEqual([1, 2], run(opt, {"x": x})[0].tolist())
                self.assertIsInstance(counts, dict)
        self.assertEqual(before, model.SerializeToString())
        self.assertEqual(dict(nodes_before=3, nodes_after=1), optimize_onnx(model, "onnxscript")[1])
        with self.assertRaisesRegex(ValueError, "method must be 'custom' or 'onnxscript'"):
            optimize_onnx(model, method="fast")

    def test_partition(self):
        model = small_model()
        head, tail = onnx_partition(model, ["u"])
        self.assertEqual(["x"], [i.name for i in head.graph.input])
        self.assertEqual(["u"], [o.name for o in head.graph.output])
        self.assertEqual(["mm", "add"], [n.name for n in head.graph.node])
        self.assertEqual(["u", "x"], [i.name for i in tail.graph.input])
        self.assertEqual(["relu", "shape"], [n.name for n in tail.graph.node])
        self.assertEqual([], [i.name for i in tail.graph.initializer])
        onnx.checker.check_model(head)
        onnx.checker.check_model(tail)
        x = np.random.default_rng(1).normal(size=(3, 100)).astype(np.float32)
        expected = run(model, {"x": x})
        (u,) = run(head, {"x": x})
        got = run(tail, {"u": u, "x": x})
        self.assertEqualArray(expected[0], got[0], atol=1e-5)
        self.assertEqual(expected[1].tolist(), got[1].tolist())
        with self.assertRaisesRegex(ValueError, "'nope' is not a result of the main graph"):
            onnx_partition(model, "nope")
        with self.assertRaisesRegex(ValueError, "at least one result name"):
            onnx_partition(model, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
