"""Tests of :mod:`onnx_diagnostic.investigate.compare` (aligned intermediate results)."""

import os
import tempfile
import unittest
from unittest import mock

import onnx
import onnx.helper as oh
import pandas as pd
import torch

from onnx_diagnostic.export.api import to_onnx
from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS
from onnx_diagnostic.export.custom.traceability import module_of, node_origin
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.torch_helper import to_any, torch_deepcopy
from onnx_diagnostic.investigate.compare import IntermediateComparison, compare_intermediates
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.llms import get_tiny_llm

aten = torch.ops.aten


def _two_layers():
    return get_tiny_llm(num_hidden_layers=2)


def _export(data, exporter, **kw):
    with torch_export_patches(patch_transformers=True):
        return to_onnx(
            data.model,
            kwargs=torch_deepcopy(data.inputs),
            dynamic_shapes=data.dynamic_shapes,
            exporter=exporter,
            **kw,
        )


def _compare(data, onx, **kw):
    with torch_export_patches(patch_transformers=True):
        return compare_intermediates(
            data.model,
            onx,
            kwargs=torch_deepcopy(data.inputs),
            dynamic_shapes=data.dynamic_shapes,
            **kw,
        )


def _flipped_linear(original):
    """The translation of aten.linear with its sign flipped in layer 1's down_proj only."""

    def translate(g, node, *args, **kwargs):
        res = original(g, node, *args, **kwargs)
        if module_of(node)[0] == "model.layers.1.mlp.down_proj":
            return g.op("Neg", res)
        return res

    return translate


class TestCompareIntermediates(ExtTestCase):
    def test_no_divergence_both_exporters(self):
        data = _two_layers()
        for exporter in ["custom", "onnx-dynamo"]:
            with self.subTest(exporter=exporter):
                res = _compare(data, _export(data, exporter))
                self.assertIsInstance(res, IntermediateComparison)
                self.assertIsNone(res.first_divergence, msg=res.report())
                self.assertGreater(len(res.table), 40)
                self.assertEqual(set(res.table["status"]), {"ok"})
                self.assertLess(res.table["max_abs"].max(), 1e-4)
                # every layer of the model shows up, in execution order
                modules = res.summary_by_module(depth=3).index.tolist()
                self.assertLess(modules.index("model.layers.0"), modules.index("model.layers.1"))
                self.assertEqual(res.table["step"].tolist(), sorted(res.table["step"]))
                self.assertIn("no divergence", res.report())

    def test_injected_defect_custom(self):
        data = _two_layers()
        key = aten.linear.default
        with mock.patch.dict(TRANSLATIONS, {key: _flipped_linear(TRANSLATIONS[key])}):
            onx = _export(data, "custom")
        res = _compare(data, onx)
        first = res.first_divergence
        self.assertIsNotNone(first)
        self.assertEqual(first["module"], "model.layers.1.mlp.down_proj")
        self.assertTrue(first["module"].startswith("model.layers.1.mlp"))
        self.assertEqual(first["target"], "aten.linear.default")
        self.assertIn("modeling_llama.py", first["source"])
        self.assertIn("down_proj", first["source"])
        # nothing before it diverges, layer 0 is clean
        before = res.table[res.table["step"] < first["step"]]
        self.assertEqual(set(before["status"]), {"ok"})
        summary = res.summary_by_module()
        self.assertEqual(summary.loc["model.layers.0.mlp.down_proj", "diverged"], 0)
        self.assertIn("model.layers.1.mlp.down_proj", res.report())
        # the translation is back
        self.assertNotIn("Neg", [n.op_type for n in _export(data, "custom").graph.node])

    def test_injected_defect_onnx_dynamo(self):
        data = _two_layers()
        onx = _export(data, "onnx-dynamo")
        # flips the sign of the output of layer 1's down_proj in the ONNX graph
        target = None
        for node in onx.graph.node:
            origin = node_origin(node)
            if origin.module == "model.layers.1.mlp.down_proj" and origin.targets == [
                "aten.linear.default"
            ]:
                target = node
        self.assertIsNotNone(target)
        name = target.output[0]
        target.output[0] = f"{name}_before_neg"
        index = list(onx.graph.node).index(target)
        neg = oh.make_node("Neg", [f"{name}_before_neg"], [name])
        onx.graph.node.insert(index + 1, neg)
        res = _compare(data, onx)
        first = res.first_divergence
        self.assertIsNotNone(first, msg=res.report())
        self.assertEqual(first["module"], "model.layers.1.mlp.down_proj")
        self.assertEqual(first["torch_node"], name)
        self.assertIn("modeling_llama.py", first["source"])

    def test_float16_loses_more_than_float32(self):
        data32 = get_tiny_llm()
        data16 = get_tiny_llm()
        data16.model.to(torch.float16)
        data16.inputs = to_any(data16.inputs, torch.float16)
        res32 = _compare(data32, _export(data32, "custom"))
        res16 = _compare(data16, _export(data16, "custom"))
        self.assertIsNone(res32.first_divergence, msg=res32.report())
        self.assertIsNotNone(res16.first_divergence, msg=res16.report())
        self.assertGreater(res16.table["max_abs"].max(), res32.table["max_abs"].max())
        worst16 = res16.worst_modules(3)
        self.assertEqual(len(worst16), 3)

    def test_small_model_outputs_and_csv(self):
        class M(torch.nn.Module):
            def forward(self, x, y):
                s = (x * y).sum()
                return s, (x + y).argmax(dim=-1), x > 0.5

        model, x, y = M(), torch.rand(3, 4), torch.rand(3, 4)
        onx = to_onnx(model, (x, y), exporter="custom")
        res = compare_intermediates(model, onx, (x, y))
        self.assertIsNone(res.first_divergence)
        row = res.table.set_index("torch_node").loc["sum_1"]
        self.assertEqual(row["shape"], ())  # 0-d
        self.assertIn("int64", set(res.table["dtype"]))
        self.assertIn("bool", set(res.table["dtype"]))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "t.csv")
            res.to_csv(path)
            back = pd.read_csv(path)
            self.assertEqual(list(back.columns), list(res.table.columns))
            # the file path works as well as the proto
            onnx.save(onx, os.path.join(tmp, "m.onnx"))
            res2 = compare_intermediates(
                torch.export.export(model, (x, y)), os.path.join(tmp, "m.onnx"), (x, y)
            )
            self.assertEqual(len(res2.table), len(res.table))

    def test_exact_comparison_of_integers(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return (x * 10).to(torch.int64) + 1

        model, x = M(), torch.rand(5)
        onx = to_onnx(model, (x,), exporter="custom")
        for node in onx.graph.node:
            if node.op_type == "Add":
                node.op_type = "Sub"  # + 1 becomes - 1: off by 2 on integers
        res = compare_intermediates(model, onx, (x,), atol=10, rtol=10)
        self.assertIsNotNone(res.first_divergence)
        self.assertEqual(res.first_divergence["status"], "diverged")
        self.assertEqual(res.first_divergence["max_abs"], 2)

    def test_nodes_method(self):
        data = get_tiny_llm()
        onx = _export(data, "custom")
        once = _compare(data, onx)
        by_node = _compare(data, onx, method="nodes")
        self.assertEqual(by_node.method, "nodes")
        self.assertIsNone(by_node.first_divergence, msg=by_node.report())
        self.assertEqual(once.table["torch_node"].tolist(), by_node.table["torch_node"].tolist())

    def test_empty_graph(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return x

        x = torch.rand(2)
        res = compare_intermediates(M(), to_onnx(M(), (x,), exporter="custom"), (x,))
        self.assertEqual(len(res.table), 0)
        self.assertIsNone(res.first_divergence)
        self.assertEqual(len(res.summary_by_module()), 0)
        self.assertIn("no divergence", res.report())

    def test_bad_inputs(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return x.abs()

        x = torch.rand(2)
        onx = to_onnx(M(), (x,), exporter="custom")
        with self.assertRaisesRegex(ValueError, "atol must be a number"):
            compare_intermediates(M(), onx, (x,), atol=-1)
        with self.assertRaisesRegex(ValueError, "rtol must be a number"):
            compare_intermediates(M(), onx, (x,), rtol="a")
        with self.assertRaisesRegex(ValueError, "method must be"):
            compare_intermediates(M(), onx, (x,), method="fast")
        with self.assertRaisesRegex(ValueError, "exporter must be"):
            compare_intermediates(M(), onx, (x,), exporter="tf")
        with self.assertRaisesRegex(TypeError, "model_or_exported_program must be"):
            compare_intermediates("model", onx, (x,))
        with self.assertRaisesRegex(TypeError, "onnx_model must be"):
            compare_intermediates(M(), 3, (x,))
        with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
            compare_intermediates(M(), "/nonexistent/m.onnx", (x,))
        with self.assertRaisesRegex(TypeError, "args must be a tuple"):
            compare_intermediates(M(), onx, x)
        with self.assertRaisesRegex(TypeError, "kwargs must be a dict"):
            compare_intermediates(M(), onx, (), kwargs=[x])
        ep = torch.export.export(M(), (x,))
        with self.assertRaisesRegex(ValueError, "args/kwargs do not match"):
            compare_intermediates(ep, onx, (x, x))
        res = compare_intermediates(M(), onx, (x,))
        with self.assertRaisesRegex(ValueError, "depth must be"):
            res.summary_by_module(depth=0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
