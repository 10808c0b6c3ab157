import unittest

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx import helper as oh
from onnx import numpy_helper as onh

from onnx_diagnostic.export.custom.fusions_genai import (
    apply_genai_fusions,
    fuse_shared_input_matmuls,
    fuse_skip_simplified_layer_norm,
)
from onnx_diagnostic.export.custom.traceability import FX_NODES, MODULE
from onnx_diagnostic.ext_test_case import ExtTestCase


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    from onnx_diagnostic.helpers.rt_helper import make_session

    sess = make_session(model)
    return sess.run(None, feeds)


def _matmuls(rows=(4, 4, 4), cols=(2, 3, 5), weight_as_input=False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits, inputs, nodes, outputs = [], [oh.make_tensor_value_info("x", 1, [2, 3, 4])], [], []
    for i, (r, c) in enumerate(zip(rows, cols)):
        w = rng.standard_normal((r, c)).astype(np.float32)
        if weight_as_input and i == 0:
            inputs.append(oh.make_tensor_value_info(f"w{i}", 1, [r, c]))
        else:
            inits.append(onh.from_array(w, f"w{i}"))
        src = "x" if r == 4 else "x5"
        nodes.append(oh.make_node("MatMul", [src, f"w{i}"], [f"y{i}"], name=f"mm{i}"))
        node = nodes[-1]
        node.metadata_props.add(key=FX_NODES, value=f"linear_{i}")
        node.metadata_props.add(key=MODULE, value=f"layers.0.proj{i}")
        outputs.append(oh.make_tensor_value_info(f"y{i}", 1, None))
    if any(r != 4 for r in rows):
        inputs.append(oh.make_tensor_value_info("x5", 1, [2, 3, 5]))
    graph = oh.make_graph(nodes, "g", inputs, outputs, inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=10)


def _skip_norm(axis=-1, skip_const=False, residual_used=True, rank=3) -> onnx.ModelProto:
    shape = [2, 3, 4][-rank:]
    nodes = [
        oh.make_node("Add", ["x", "skip"], ["s"], name="add"),
        oh.make_node("RMSNormalization", ["s", "g"], ["n"], epsilon=1e-3, axis=axis, name="rms"),
    ]
    for node in nodes:
        node.metadata_props.add(key=FX_NODES, value=node.name)
    outputs = [oh.make_tensor_value_info("n", 1, None)]
    if residual_used:
        nodes.append(oh.make_node("Mul", ["s", "s"], ["sq"]))
        outputs.append(oh.make_tensor_value_info("sq", 1, None))
    inputs = [oh.make_tensor_value_info("x", 1, shape)]
    inits = [onh.from_array(np.linspace(0.5, 2, 4).astype(np.float32), "g")]
    if skip_const:
        inits.append(onh.from_array(np.ones(shape, dtype=np.float32), "skip"))
    else:
        inputs.append(oh.make_tensor_value_info("skip", 1, shape))
    graph = oh.make_graph(nodes, "g", inputs, outputs, inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 23)], ir_version=10)


class TestFusionsGenai(ExtTestCase):
    def test_docstring_examples(self):
        import doctest

        from onnx_diagnostic.export.custom import fusions_genai

        res = doctest.testmod(fusions_genai, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertGreater(res.attempted, 10)
        self.assertEqual(0, res.failed)

    def test_shared_input_matmuls_same_results_and_metadata(self):
        model = _matmuls()
        feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)}
        expected = _run(model, feeds)
        fused, counts = apply_genai_fusions(model)
        self.assertEqual(1, counts["fuse_shared_input_matmuls"])
        self.assertEqual(["MatMul", "Split"], [n.op_type for n in fused.graph.node])
        self.assertEqual(["y0", "y1", "y2"], [o.name for o in fused.graph.output])
        for e, g in zip(expected, _run(fused, feeds)):
            self.assertEqualArray(e, g, atol=1e-5)
        meta = {p.key: p.value for p in fused.graph.node[0].metadata_props}
        self.assertEqual("linear_0,linear_1,linear_2", meta[FX_NODES])
        self.assertEqual("layers.0.proj0|layers.0.proj1|layers.0.proj2", meta[MODULE])
        # the three weights are replaced by the concatenated one and the split sizes
        self.assertEqual(2, len(fused.graph.initializer))
        # the model given is not modified
        self.assertEqual(3, len(model.graph.node))

    def test_matmuls_not_fused(self):
        # different numbers of rows: different activations, nothing shared
        self.assertEqual(0, fuse_shared_input_matmuls(ir.from_proto(_matmuls(rows=(4, 5)))))
        # a weight which is not a constant
        model = ir.from_proto(_matmuls(rows=(4, 4), cols=(2, 3), weight_as_input=True))
        self.assertEqual(0, fuse_shared_input_matmuls(model))
        # one MatMul alone
        self.assertEqual(0, fuse_shared_input_matmuls(ir.from_proto(_matmuls((4,), (2,)))))
        # two of three share the activation
        model = ir.from_proto(_matmuls(rows=(4, 5, 4), cols=(2, 3, 5)))
        self.assertEqual(1, fuse_shared_input_matmuls(model))
        self.assertEqual(["MatMul", "Split", "MatMul"], [n.op_type for n in model.graph])

    def test_skip_simplified_layer_norm(self):
        rng = np.random.default_rng(2)
        feeds = {k: rng.standard_normal((2, 3, 4)).astype(np.float32) for k in ("x", "skip")}
        for residual_used in (True, False):
            with self.subTest(residual_used=residual_used):
                model = _skip_norm(residual_used=residual_used)
                expected = _run(model, feeds)
                fused, counts = apply_genai_fusions(model)
                self.assertEqual(1, counts["fuse_skip_simplified_layer_norm"])
                node = fused.graph.node[0]
                self.assertEqual(
                    ("com.microsoft", "SkipSimplifiedLayerNormalization"),
                    (node.domain, node.op_type),
                )
                # mean and inverse standard deviation not computed, the sum when used
                self.assertEqual(["n", "", "", "s"] if residual_used else ["n"], node.output)
                self.assertAlmostEqual(1e-3, node.attribute[0].f)
                self.assertEqual("add,rms", {p.key: p.value for p in node.metadata_props}[FX_NODES])
                self.assertIn("com.microsoft", {o.domain for o in fused.opset_import})
                for e, g in zip(expected, _run(fused, feeds)):
                    self.assertEqualArray(e, g, atol=1e-5)

    def test_skip_norm_not_fused(self):
        self.assertEqual(0, fuse_skip_simplified_layer_norm(ir.from_proto(_skip_norm(axis=1))))
        model = ir.from_proto(_skip_norm(skip_const=True))
        self.assertEqual(0, fuse_skip_simplified_layer_norm(model))
        # rank 1: not a shape the contrib operator takes
        self.assertEqual(0, fuse_skip_simplified_layer_norm(ir.from_proto(_skip_norm(rank=1))))
        model, counts = apply_genai_fusions(_skip_norm(axis=1))
        self.assertEqual(
            {"fuse_shared_input_matmuls": 0, "fuse_skip_simplified_layer_norm": 0}, counts
        )
        self.assertNotIn("com.microsoft", {o.domain for o in model.opset_import})

    def test_bad_input(self):
        with self.assertRaisesRegex(TypeError, "model must be an onnx.ModelProto, not str"):
            apply_genai_fusions("model.onnx")

    def test_tiny_llm_equal_to_eager(self):
        from onnx_diagnostic.export.api import onnx_feeds, to_onnx
        from onnx_diagnostic.helpers.rt_helper import onnx_generate
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        data = get_tiny_llm()
        model = data.model
        with torch_export_patches(patch_transformers=True):
            onx = to_onnx(
                model, kwargs=data.inputs, dynamic_shapes=data.dynamic_shapes, exporter="custom"
            )
            feeds = onnx_feeds(model, kwargs=data.inputs)
            with torch.no_grad():
                expected = model(**data.inputs)
        fused, counts = apply_genai_fusions(onx)
        self.assertEqual(
            {"fuse_shared_input_matmuls": 2, "fuse_skip_simplified_layer_norm": 2}, counts
        )
        got = _run(fused, {k: v.numpy() for k, v in feeds.items()})
        self.assertEqualArray(expected.logits, torch.from_numpy(got[0]), atol=1e-4)
        cache = getattr(expected, "past_key_values", None) or expected.cache
        self.assertEqualArray(cache.layers[0].keys, torch.from_numpy(got[1]), atol=1e-4)
        # generation: the tokens of the unfused model
        prompt = torch.tensor([[5, 6, 7, 8]])
        self.assertEqualArray(
            onnx_generate(onx, prompt, max_new_tokens=8),
            onnx_generate(fused, prompt, max_new_tokens=8),
        )


if __name__ == "__main__":
    unittest.main(verbosity=2)
