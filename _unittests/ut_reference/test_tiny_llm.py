"""The three evaluators on Tiny-LLM exported with both exporters, against onnxruntime."""

import collections
import unittest

import numpy as np
import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.reference import (
    ExtendedReferenceEvaluator,
    OnnxruntimeEvaluator,
    TorchOnnxEvaluator,
)

from _reference_tools import ort_run, tiny_llm_feeds


def _export(exporter: str):
    from onnx_diagnostic.export.api import to_onnx
    from onnx_diagnostic.torch_export_patches import torch_export_patches
    from onnx_diagnostic.torch_models.llms import get_tiny_llm

    data = get_tiny_llm()
    with torch_export_patches(patch_transformers=True):
        model = to_onnx(
            data["model"],
            (),
            kwargs=data["inputs"],
            dynamic_shapes=data["dynamic_shapes"],
            exporter=exporter,
        )
    feeds = tiny_llm_feeds(data["inputs"])
    return model, feeds, ort_run(model, feeds)


class TestTinyLlmCustom(ExtTestCase):
    @classmethod
    def setUpClass(cls):
        cls.model, cls.feeds, cls.expected = _export("custom")

    def test_fused_operators_are_there(self):
        ops = collections.Counter((n.domain, n.op_type) for n in self.model.graph.node)
        for op in ("Attention", "RMSNormalization", "RotaryEmbedding"):
            self.assertIn(("", op), ops)

    def test_extended_reference_evaluator(self):
        got = ExtendedReferenceEvaluator(self.model).run(None, self.feeds)
        for e, g in zip(self.expected, got):
            self.assertEqualArray(e, g, atol=1e-4)

    def test_onnxruntime_evaluator_every_node_output(self):
        ev = OnnxruntimeEvaluator(self.model)
        res = ev.run(None, self.feeds, intermediate=True)
        for node in self.model.graph.node:
            for name in node.output:
                if name:
                    self.assertIn(name, res)
        names = [o.name for o in self.model.graph.output]
        for e, name in zip(self.expected, names):
            self.assertEqualArray(e, res[name], atol=1e-5)
        # a torch run reuses the same sessions
        n = len(ev.sessions)
        got = ev.run(None, {k: torch.from_numpy(v) for k, v in self.feeds.items()})
        self.assertEqual(n, len(ev.sessions))
        self.assertEqualArray(self.expected[0], got[0], atol=1e-5)

    def test_torch_evaluator(self):
        feeds = {k: torch.from_numpy(v) for k, v in self.feeds.items()}
        got = TorchOnnxEvaluator(self.model).run(None, feeds)
        for e, g in zip(self.expected, got):
            self.assertIsInstance(g, torch.Tensor)
            self.assertEqualArray(e, g, atol=1e-4)


class TestTinyLlmDynamo(ExtTestCase):
    @classmethod
    def setUpClass(cls):
        cls.model, cls.feeds, cls.expected = _export("onnx-dynamo")

    def test_torch_evaluator(self):
        got = TorchOnnxEvaluator(self.model).run(None, self.feeds)
        self.assertIsInstance(got[0], np.ndarray)
        for e, g in zip(self.expected, got):
            self.assertEqualArray(e, g, atol=1e-4)

    def test_extended_reference_evaluator(self):
        got = ExtendedReferenceEvaluator(self.model).run(None, self.feeds)
        for e, g in zip(self.expected, got):
            self.assertEqualArray(e, g, atol=1e-4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
