"""The custom exporter's translations of aten.erfinv, aten.std, aten.var (gemma3n)."""

import unittest

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime
import torch

from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS
from onnx_diagnostic.export.custom.translator import translate_program
from onnx_diagnostic.ext_test_case import ExtTestCase


class Erfinv(torch.nn.Module):
    def forward(self, x):
        return torch.erfinv(x), torch.erfinv(x.to(torch.float16))


def _run(x: torch.Tensor) -> list[np.ndarray]:
    dim = torch.export.Dim.DYNAMIC
    ep = torch.export.export(Erfinv(), (x,), dynamic_shapes=({0: dim},))
    program = translate_program(ep)
    program.optimize()
    proto = ir.serde.serialize_model(program.model)
    onnx.checker.check_model(proto)
    sess = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return sess.run(None, {proto.graph.input[0].name: x.numpy()})


class TestErfinv(ExtTestCase):
    def test_registered(self):
        self.assertIn(torch.ops.aten.erfinv, TRANSLATIONS)

    def test_matches_torch_on_the_whole_interval(self):
        torch.manual_seed(0)
        x = torch.cat([torch.rand(500) * 2 - 1, torch.tensor([0.0, 0.5, -0.999, 0.99999])])
        got, got16 = _run(x)
        expected = torch.erfinv(x).numpy()
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
        self.assertEqual(got16.dtype, np.float16)
        np.testing.assert_allclose(
            got16.astype(np.float32),
            torch.erfinv(x.to(torch.float16)).float().numpy(),
            rtol=2e-3,
            atol=2e-3,
        )

    def test_edges_as_torch(self):
        x = torch.tensor([1.0, -1.0, 1.5, -2.0, 0.0])
        got, _ = _run(x)
        expected = torch.erfinv(x).numpy()
        self.assertEqual(got[0], np.inf)
        self.assertEqual(got[1], -np.inf)
        self.assertTrue(np.isnan(got[2]) and np.isnan(expected[2]))
        self.assertTrue(np.isnan(got[3]) and np.isnan(expected[3]))
        self.assertEqual(got[4], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)


class VarStd(torch.nn.Module):
    def forward(self, x):
        return (
            torch.std(x, dim=-1, keepdim=True),
            torch.var(x, dim=(0, 2)),
            torch.std(x, dim=1, unbiased=False),
            torch.var(x, dim=-1, correction=0, keepdim=True),
            torch.std(x, dim=None, correction=2),
        )


class TestVarStd(ExtTestCase):
    def test_matches_torch_with_dynamic_shapes(self):
        dim = torch.export.Dim.DYNAMIC
        x = torch.randn(3, 4, 5)
        ep = torch.export.export(VarStd(), (x,), dynamic_shapes=({0: dim, 2: dim},))
        names = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
        self.assertTrue(any(n.startswith("aten.std") for n in names), msg=str(names))
        program = translate_program(ep)
        program.optimize()
        proto = ir.serde.serialize_model(program.model)
        sess = onnxruntime.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        for inputs in (x, torch.randn(6, 4, 7)):
            got = sess.run(None, {proto.graph.input[0].name: inputs.numpy()})
            for e, g in zip(VarStd()(inputs), got):
                np.testing.assert_allclose(g, e.numpy(), rtol=1e-5, atol=1e-6)


class TestAliases(ExtTestCase):
    def test_multiply(self):
        class Multiply(torch.nn.Module):
            def forward(self, x, y):
                return torch.ops.aten.multiply.Tensor(x, y), torch.ops.aten.multiply.Scalar(x, 3)

        x, y = torch.randn(2, 3), torch.randn(2, 3)
        ep = torch.export.export(Multiply(), (x, y))
        proto = ir.serde.serialize_model(translate_program(ep).model)
        sess = onnxruntime.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        feeds = {i.name: t.numpy() for i, t in zip(proto.graph.input, (x, y))}
        got = sess.run(None, feeds)
        np.testing.assert_allclose(got[0], (x * y).numpy(), rtol=1e-6)
        np.testing.assert_allclose(got[1], (x * 3).numpy(), rtol=1e-6)
