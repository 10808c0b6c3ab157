import contextlib
import io
import os
import tempfile
import unittest

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.torch_export_patches import torch_export_patches, torch_export_rewrite
from onnx_diagnostic.torch_export_patches.patch_module import RewriteError, transform_method

DYN = torch.export.Dim.DYNAMIC


class ReturnModel(torch.nn.Module):
    def forward(self, x, y):
        if x.sum() > 0:
            return x + y
        else:
            return torch.abs(x) + y + 1


class AssignModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(5, 5)

    def forward(self, x, y):
        z = x * 2
        if (z * y).sum() > 0:
            z = self.linear(z)
            w = z + y
        else:
            z = z - 1
            z += y
            w = z * 0.5
        return z + w


class NoElseModel(torch.nn.Module):
    def forward(self, x):
        y = x + 1
        if x.max() > 0.5:
            y = y * 2
        return y


class ElifModel(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 1:
            return x * 2
        elif x.sum() < -1:
            return x * 3
        else:
            return x - 1


class PythonConditionModel(torch.nn.Module):
    def forward(self, x, scale=None):
        if scale is None:
            y = x
        else:
            y = x * scale
        return y


class Child(ReturnModel):
    pass


def outside(x, y):
    if x.sum() > 0:
        return x + y
    else:
        return x - y


class OutsideModel(torch.nn.Module):
    def forward(self, x, y):
        return outside(x, y)


class NestedModel(torch.nn.Module):
    def forward(self, x, y):
        z = x
        w = y * 0
        if x.sum() > 0:
            z = x + 1
            if y.sum() > 0:
                z = z * 2
                w = y  # an alias of an input: cloned in the branch
            else:
                w = -y
            z = z + w
        else:
            z = x - 1
        return z + w


class LoopModel(torch.nn.Module):
    def forward(self, x):
        for _ in range(2):
            if x.sum() > 0:
                x = x - 1
            else:
                x = x + 2
        return x


def _xy():
    torch.manual_seed(0)
    return torch.rand(4, 5), torch.rand(4, 5)


class TestTorchExportRewrite(ExtTestCase):
    """torch_export_rewrite: Python if on tensors becomes torch.cond while the context lives."""

    def _check_both_branches(self, model, ep, inputs_list):
        for inputs in inputs_list:
            self.assertEqualArray(model(*inputs), ep.module()(*inputs), atol=1e-6)

    def test_fails_without_rewrite_and_exports_with_it(self):
        model = ReturnModel()
        x, y = _xy()
        ds = ({0: DYN, 1: DYN}, {0: DYN, 1: DYN})
        with self.assertRaises(Exception) as cm:
            torch.export.export(model, (x, y), dynamic_shapes=ds)
        self.assertIn("data-dependent", str(cm.exception).lower())
        original = ReturnModel.__dict__["forward"]
        with torch_export_rewrite(rewrite=[(ReturnModel, "forward")]):
            self.assertIsNot(ReturnModel.__dict__["forward"], original)
            ep = torch.export.export(model, (x, y), dynamic_shapes=ds)
        self.assertIs(ReturnModel.__dict__["forward"], original)
        self.assertIn("torch.ops.higher_order.cond", str(ep.graph))
        self._check_both_branches(
            model, ep, [(x, y), (-x, y), (-torch.rand(6, 3), torch.rand(6, 3))]
        )

    def test_assign_pattern_with_submodule_and_augassign(self):
        model = AssignModel()
        x, y = _xy()
        ds = ({0: DYN}, {0: DYN})
        with torch_export_rewrite(rewrite=[AssignModel.forward]):
            ep = torch.export.export(model, (x, y), dynamic_shapes=ds)
        self.assertIn("torch.ops.higher_order.cond", str(ep.graph))
        self._check_both_branches(
            model, ep, [(x, y), (-x, y), (torch.rand(7, 5), -torch.rand(7, 5))]
        )

    def test_if_without_else_keeps_the_value(self):
        model = NoElseModel()
        x = torch.rand(3, 4)
        with torch_export_rewrite(rewrite=[(NoElseModel, "forward")]):
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: DYN},))
        self._check_both_branches(model, ep, [(x + 1,), (x - 2,)])

    def test_elif(self):
        model = ElifModel()
        x = torch.rand(3, 4)
        with torch_export_rewrite(rewrite=[(ElifModel, "forward")]):
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: DYN},))
        self._check_both_branches(model, ep, [(x,), (-x,), (x * 0,)])

    def test_python_condition_keeps_python_semantics(self):
        model = PythonConditionModel()
        x = torch.rand(3, 4)
        with torch_export_rewrite(rewrite=[(PythonConditionModel, "forward")]):
            self.assertEqualArray(model(x), x)
            self.assertEqualArray(model(x, scale=2.0), x * 2)
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: DYN},))
        self.assertNotIn("cond", str(ep.graph))
        self.assertEqualArray(ep.module()(x), x)

    def test_nested_if_in_a_branch(self):
        model = NestedModel()
        x, y = torch.rand(3, 4), torch.rand(3, 4)
        with torch_export_rewrite(rewrite=[NestedModel.forward]):
            ep = torch.export.export(model, (x, y), dynamic_shapes=({0: DYN}, {0: DYN}))
        # one cond at the top, the nested one inside its true branch
        self.assertEqual(str(ep.graph).count("torch.ops.higher_order.cond"), 1)
        nested = [str(m.graph).count("higher_order.cond") for m in ep.graph_module.children()]
        self.assertIn(1, nested)
        # the four combinations of the two conditions
        self._check_both_branches(model, ep, [(x, y), (x, -y), (-x, y), (-x, -y)])

    def test_if_in_a_loop(self):
        model = LoopModel()
        x = torch.rand(3, 4)
        with torch_export_rewrite(rewrite=[LoopModel.forward]):
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: DYN},))
        self.assertEqual(str(ep.graph).count("torch.ops.higher_order.cond"), 2)
        self._check_both_branches(model, ep, [(x,), (-x,), (x * 0.001,), (x + 1.5,)])

    def test_nested_if_python_condition(self):
        # a Python condition in the nested if: the rewritten code keeps Python semantics
        def f(x, flag):
            y = x
            if x.sum() > 0:
                y = x + 1
                if flag:
                    y = y * 3
            return y

        g = transform_method(f).func
        x = torch.rand(4)
        for flag in (True, False):
            self.assertEqualArray(g(x, flag), f(x, flag))
            self.assertEqualArray(g(-x, flag), f(-x, flag))

    def test_module_level_function(self):
        model = OutsideModel()
        x, y = _xy()
        original = outside
        with torch_export_rewrite(rewrite=[outside]):
            self.assertIsNot(globals()["outside"], original)
            ep = torch.export.export(model, (x, y), dynamic_shapes=({0: DYN}, {0: DYN}))
        self.assertIs(globals()["outside"], original)
        self._check_both_branches(model, ep, [(x, y), (-x, y)])

    def test_restores_after_exception(self):
        original = ReturnModel.__dict__["forward"]
        with self.assertRaises(ZeroDivisionError):
            with torch_export_rewrite(rewrite=[(ReturnModel, "forward")]):
                self.assertIsNot(ReturnModel.__dict__["forward"], original)
                raise ZeroDivisionError("inside")
        self.assertIs(ReturnModel.__dict__["forward"], original)

    def test_inherited_method_is_removed_again(self):
        self.assertNotIn("forward", Child.__dict__)
        with torch_export_rewrite(rewrite=[(Child, "forward")]):
            self.assertIn("forward", Child.__dict__)
            x, y = _xy()
            self.assertEqualArray(Child()(-x, y), torch.abs(x) + y + 1)
        self.assertNotIn("forward", Child.__dict__)
        self.assertIs(Child.forward, ReturnModel.__dict__["forward"])

    def test_nothing_installed_when_one_method_fails(self):
        class Bad(torch.nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    self.last = x
                return x

        original = ReturnModel.__dict__["forward"]
        with self.assertRaises(RewriteError):
            with torch_export_rewrite(rewrite=[(ReturnModel, "forward"), (Bad, "forward")]):
                pass
        self.assertIs(ReturnModel.__dict__["forward"], original)

    def test_dump_and_verbose(self):
        with tempfile.TemporaryDirectory() as tmp:
            prefix = os.path.join(tmp, "dump")

            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                with torch_export_rewrite(
                    rewrite=[(ReturnModel, "forward")], dump_rewriting=prefix, verbose=1
                ):
                    pass
            text = out.getvalue()
            self.assertIn("rewrites ReturnModel.forward", text)
            self.assertIn("restores ReturnModel.forward", text)
            with open(f"{prefix}.ReturnModel.forward.rewritten.py") as f:
                self.assertIn("cond(", f.read())
            with open(f"{prefix}.ReturnModel.forward.original.py") as f:
                self.assertIn("if x.sum() > 0:", f.read())


class TestTransformMethodErrors(ExtTestCase):
    """What cannot be rewritten is refused with the method and the line."""

    def _line_of(self, cls, text):
        import inspect

        lines, first = inspect.getsourcelines(cls.forward)
        return first + next(i for i, line in enumerate(lines) if text in line)

    def test_attribute_assignment(self):
        class M(torch.nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    self.last = x
                return x

        line = self._line_of(M, "self.last = x")
        with self.assertRaisesRegex(RewriteError, rf"M\.forward, line {line}: .*'self.last'"):
            transform_method(M.forward)

    def test_return_in_one_branch(self):
        class M(torch.nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    return x
                y = x + 1
                return y

        line = self._line_of(M, "if x.sum() > 0")
        with self.assertRaisesRegex(RewriteError, rf"forward, line {line}: one branch returns"):
            transform_method(M.forward)

    def test_loop_in_branch(self):
        class M(torch.nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    for _ in range(2):
                        x = x + 1
                else:
                    x = x - 1
                return x

        line = self._line_of(M, "for _ in range(2)")
        with self.assertRaisesRegex(RewriteError, rf"line {line}: For in a branch"):
            transform_method(M.forward)

    def test_no_if(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return x

        with self.assertRaisesRegex(RewriteError, "there is no 'if'"):
            transform_method(M.forward)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(TypeError, "rewrite must be a non empty list"):
            with torch_export_rewrite(rewrite=None):
                pass
        with self.assertRaisesRegex(TypeError, r"rewrite\[0\] must be \(class, method name\)"):
            with torch_export_rewrite(rewrite=[(ReturnModel, "forward", 1)]):
                pass
        with self.assertRaisesRegex(AttributeError, r"rewrite\[0\]: class ReturnModel has no"):
            with torch_export_rewrite(rewrite=[(ReturnModel, "nothing")]):
                pass
        with self.assertRaisesRegex(
            ValueError, r"rewrite\[1\]: ReturnModel.forward is given twice"
        ):
            with torch_export_rewrite(rewrite=[(ReturnModel, "forward"), ReturnModel.forward]):
                pass
        with self.assertRaisesRegex(TypeError, r"rewrite\[0\] must be .* not int"):
            with torch_export_rewrite(rewrite=[3]):
                pass
        with self.assertRaisesRegex(TypeError, "not a Python function"):
            transform_method(len)

    def test_local_function_needs_a_class(self):
        class M(torch.nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    return x
                else:
                    return -x

        with self.assertRaisesRegex(ValueError, r"rewrite\[0\].*pass \(class, method name\)"):
            with torch_export_rewrite(rewrite=[M.forward]):
                pass
        with torch_export_rewrite(rewrite=[(M, "forward")]):
            self.assertEqualArray(M()(-torch.ones(2)), torch.ones(2))


class TestTorchExportPatchesRewrite(ExtTestCase):
    """torch_export_patches(rewrite=[...]) uses torch_export_rewrite."""

    def test_rewrite_argument(self):
        model = ReturnModel()
        x, y = _xy()
        original = ReturnModel.__dict__["forward"]
        with torch_export_patches(rewrite=[(ReturnModel, "forward")]):
            ep = torch.export.export(model, (x, y), dynamic_shapes=({0: DYN}, {0: DYN}))
        self.assertIs(ReturnModel.__dict__["forward"], original)
        for inputs in [(x, y), (-x, y)]:
            self.assertEqualArray(model(*inputs), ep.module()(*inputs), atol=1e-6)

    def test_rewrite_restored_after_exception(self):
        original = ReturnModel.__dict__["forward"]
        with self.assertRaises(RuntimeError):
            with torch_export_patches(patch_transformers=True, rewrite=[(ReturnModel, "forward")]):
                self.assertIsNot(ReturnModel.__dict__["forward"], original)
                raise RuntimeError("inside")
        self.assertIs(ReturnModel.__dict__["forward"], original)

    def test_rewrite_bad_type(self):
        with self.assertRaisesRegex(TypeError, "rewrite must be a list or None"):
            with torch_export_patches(rewrite="forward"):
                pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
