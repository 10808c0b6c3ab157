"""Tests of :mod:`onnx_diagnostic.investigate.compare_onnx` (two ONNX models side by side)."""

import unittest

import numpy as np
import onnx
import onnx.helper as oh
import torch

from onnx_diagnostic.export.api import onnx_feeds, to_onnx
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.torch_helper import torch_deepcopy
from onnx_diagnostic.investigate.compare_onnx import compare_onnx_models, random_feeds
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.llms import get_tiny_llm


def _export(data, exporter):
    with torch_export_patches(patch_transformers=True):
        return to_onnx(
            data.model,
            kwargs=torch_deepcopy(data.inputs),
            dynamic_shapes=data.dynamic_shapes,
            exporter=exporter,
        )


class TestCompareOnnxModels(ExtTestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = get_tiny_llm(num_hidden_layers=2)
        cls.custom = _export(cls.data, "custom")
        cls.dynamo = _export(cls.data, "onnx-dynamo")
        cls.feeds = onnx_feeds(cls.data.model, kwargs=torch_deepcopy(cls.data.inputs))

    def test_two_exporters_agree(self):
        res = compare_onnx_models(self.custom, self.dynamo, self.feeds)
        self.assertIsNone(res.first_divergence, msg=res.report())
        self.assertGreater(len(res.table), 30)
        self.assertIn("name", set(res.table["aligned_by"]))
        self.assertIn("results of model1", res.report())
        self.assertEqual(res.table["step"].tolist(), sorted(res.table["step"]))
        # modules come from the custom exporter's metadata
        self.assertIn("model.layers.1.mlp.down_proj", set(res.table["module"]))

    def test_injected_defect(self):
        broken = onnx.ModelProto()
        broken.CopyFrom(self.dynamo)
        index = next(
            i
            for i, n in enumerate(broken.graph.node)
            if n.op_type == "MatMul" and "layers.1.mlp.down_proj" in str(n.metadata_props)
        )
        node = broken.graph.node[index]
        name = node.output[0]
        node.output[0] = f"{name}_pre"
        broken.graph.node.insert(index + 1, oh.make_node("Neg", [f"{name}_pre"], [name]))
        res = compare_onnx_models(self.dynamo, broken, self.feeds)
        first = res.first_divergence
        self.assertIsNotNone(first)
        self.assertEqual(first["value1"], name)
        self.assertEqual(first["module"], "model.layers.1.mlp.down_proj")
        self.assertEqual(first["op2"], "Neg")
        before = res.table[res.table["step"] < first["step"]]
        self.assertEqual(set(before["status"]), {"ok"})

    def test_same_model_node_by_node(self):
        res = compare_onnx_models(self.custom, self.custom, self.feeds, method="nodes")
        self.assertIsNone(res.first_divergence)
        self.assertEqual(res.method, "nodes")
        self.assertEqual(set(res.table["max_abs"]), {0.0})

    def test_sequence_alignment_and_float16(self):
        # same graph, values renamed: paired by operator, shape and type in order
        def model(dtype, prefix):
            return oh.make_model(
                oh.make_graph(
                    [
                        oh.make_node("Cast", ["X"], [f"{prefix}c"], to=dtype),
                        oh.make_node("Exp", [f"{prefix}c"], [f"{prefix}e"]),
                        oh.make_node("Sin", [f"{prefix}e"], [f"{prefix}s"]),
                        oh.make_node("Cast", [f"{prefix}s"], ["Y"], to=onnx.TensorProto.FLOAT),
                    ],
                    "g",
                    [oh.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["n"])],
                    [oh.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, ["n"])],
                ),
                opset_imports=[oh.make_opsetid("", 18)],
            )

        f32 = model(onnx.TensorProto.FLOAT, "a")
        renamed = model(onnx.TensorProto.FLOAT, "b")
        x = {"X": np.linspace(0, 3, 50).astype(np.float32)}
        res = compare_onnx_models(f32, renamed, x)
        self.assertIsNone(res.first_divergence)
        self.assertEqual(res.table.set_index("value1").loc["ae", "aligned_by"], "sequence")
        self.assertEqual(res.table.set_index("value1").loc["ae", "value2"], "be")
        # float16: values named alike, the error shows from the cast into float16
        f16 = model(onnx.TensorProto.FLOAT16, "a")
        res = compare_onnx_models(f32, f16, x)
        first = res.first_divergence
        self.assertIsNotNone(first)
        self.assertEqual(first["value1"], "ac")
        self.assertEqual(first["dtype2"], "float16")

    def test_random_feeds(self):
        feeds = random_feeds(self.custom, {"batch": 1, "seq_length": 4, "past_length": 5})
        self.assertEqual(tuple(feeds["input_ids"].shape), (1, 4))
        self.assertEqual(feeds["input_ids"].dtype, torch.int64)
        self.assertEqual(random_feeds(self.custom)["input_ids"].shape[0], 2)
        self.assertEqual(
            random_feeds(self.custom, seed=3)["past_key_values.0.key"].tolist(),
            random_feeds(self.custom, seed=3)["past_key_values.0.key"].tolist(),
        )
        with self.assertRaisesRegex(ValueError, "dims\\['batch'\\] must be an int"):
            random_feeds(self.custom, {"batch": -1})

    def test_bad_inputs(self):
        with self.assertRaisesRegex(ValueError, "model1 expects inputs .* feeds has no"):
            compare_onnx_models(self.custom, self.dynamo, {"input_ids": self.feeds["input_ids"]})
        with self.assertRaisesRegex(TypeError, "feeds must be a dict"):
            compare_onnx_models(self.custom, self.dynamo, [1])
        with self.assertRaisesRegex(ValueError, "method must be"):
            compare_onnx_models(self.custom, self.dynamo, self.feeds, method="auto")
        with self.assertRaisesRegex(ValueError, "atol must be"):
            compare_onnx_models(self.custom, self.dynamo, self.feeds, atol=-1)
        with self.assertRaisesRegex(TypeError, "onnx_model must be"):
            compare_onnx_models(3, self.dynamo, self.feeds)


if __name__ == "__main__":
    unittest.main(verbosity=2)
