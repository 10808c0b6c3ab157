"""Tests of ``torch_export_patches(stop_if_static=...)``
(:mod:`onnx_diagnostic.torch_export_patches.stop_if_static`)."""

import unittest

import torch
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.torch_export_patches import (
    DynamicDimensionSpecializedError,
    torch_export_patches,
)
from onnx_diagnostic.torch_export_patches.stop_if_static import stop_if_static_context

DYN = torch.export.Dim.DYNAMIC


class Branch(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        if y.shape[0] == 8:  # specializes the batch dimension
            return y + 1
        return y - 1


class Add(torch.nn.Module):
    def forward(self, x, y):
        return x + y  # dimensions declared independent become equal


class Fine(torch.nn.Module):
    def forward(self, x):
        return x.sum(dim=0, keepdim=True) * x


def _export(model, inputs, ds):
    return torch.export.export(model, inputs, dynamic_shapes=ds, strict=False)


class TestStopIfStatic(ExtTestCase):
    def test_specialization_names_the_dimension_and_the_line(self):
        original = ShapeEnv.__dict__["_set_replacement"]
        with self.assertRaises(DynamicDimensionSpecializedError) as cm:
            with torch_export_patches(stop_if_static=1):
                _export(Branch(), (torch.rand(8, 3),), ({0: DYN},))
        e = cm.exception
        self.assertEqual(e.value, "8")
        self.assertEqual(e.sources, ["L['x'].size()[0]"])
        self.assertIn("test_stop_if_static.py", e.line)
        self.assertIn("if y.shape[0] == 8", e.line)
        self.assertIn("L['x'].size()[0]", str(e))
        # restored by identity, also after the exception
        self.assertIs(ShapeEnv.__dict__["_set_replacement"], original)

    def test_without_the_option(self):
        # Dim.DYNAMIC: torch complains at the end, without the line
        with self.assertRaises(Exception) as cm:
            _export(Branch(), (torch.rand(8, 3),), ({0: DYN},))
        self.assertNotIn("y.shape[0] == 8", str(cm.exception))
        # Dim.AUTO: torch specializes silently, the option stops there too
        ep = _export(Branch(), (torch.rand(8, 3),), ({0: torch.export.Dim.AUTO},))
        x = next(n for n in ep.graph.nodes if n.op == "placeholder")
        self.assertEqual(x.meta["val"].shape[0], 8)
        with self.assertRaises(DynamicDimensionSpecializedError):
            with torch_export_patches(stop_if_static=1):
                _export(Branch(), (torch.rand(8, 3),), ({0: torch.export.Dim.AUTO},))

    def test_level_2_equal_dimensions(self):
        inputs = (torch.rand(4, 3), torch.rand(4, 3))
        ds = ({0: DYN, 1: DYN}, {0: DYN, 1: DYN})
        with stop_if_static_context(1):
            _export(Add(), inputs, ds)  # two equal dimensions are not constants
        with self.assertRaises(DynamicDimensionSpecializedError) as cm:
            with stop_if_static_context(2):
                _export(Add(), inputs, ds)
        self.assertIn("return x + y", cm.exception.line)
        self.assertTrue(cm.exception.value.startswith("s"))

    def test_dynamic_model_passes(self):
        original = ShapeEnv.__dict__["_set_replacement"]
        with torch_export_patches(stop_if_static=2):
            self.assertIsNot(ShapeEnv.__dict__["_set_replacement"], original)
            ep = _export(Fine(), (torch.rand(5, 3),), ({0: DYN, 1: DYN},))
        self.assertIs(ShapeEnv.__dict__["_set_replacement"], original)
        x = next(n for n in ep.graph.nodes if n.op == "placeholder")
        self.assertNotIsInstance(x.meta["val"].shape[0], int)

    def test_level_0_and_bad_values(self):
        original = ShapeEnv.__dict__["_set_replacement"]
        with stop_if_static_context(0):
            self.assertIs(ShapeEnv.__dict__["_set_replacement"], original)
        for bad in [-1, True, 1.5]:
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError):
                    with stop_if_static_context(bad):
                        pass
        with self.assertRaisesRegex(ValueError, "stop_if_static must be >= 0"):
            with torch_export_patches(stop_if_static=-1):
                pass
        self.assertIs(ShapeEnv.__dict__["_set_replacement"], original)


if __name__ == "__main__":
    unittest.main(verbosity=2)
