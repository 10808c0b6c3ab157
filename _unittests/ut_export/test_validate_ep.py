import unittest

import torch

from onnx_diagnostic.cache_helpers import make_dynamic_cache
from onnx_diagnostic.export import CoupleInputsDynamicShapes, compare_modules, validate_ep
from onnx_diagnostic.ext_test_case import ExtTestCase, hide_stdout

DYN = torch.export.Dim.DYNAMIC


class Add(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class SliceStatic(torch.nn.Module):
    """Only correct when x has 4 columns: export specializes it."""

    def forward(self, x):
        return x[:, :4] * 2


class WithCache(torch.nn.Module):
    def forward(self, x, cache):
        return x.sum(dim=1, keepdim=True) + cache.layers[0].keys.sum()


def _export(model, args, ds, kwargs=None):
    export_ds = CoupleInputsDynamicShapes(args, kwargs or {}, ds).replace_string_by()
    return torch.export.export(model, args, kwargs=kwargs, dynamic_shapes=export_ds, strict=False)


class TestCompareModules(ExtTestCase):
    def test_same_module(self):
        x, y = torch.randn(3, 4), torch.randn(1, 4)
        res = compare_modules(Add(), Add(), args=(x, y))
        self.assertEqual(res["diff"]["abs"], 0)
        self.assertEqualArray(res["got"], x + y)
        self.assertEqualArray(res["expected"], x + y)

    def test_without_reference(self):
        res = compare_modules(Add(), args=(torch.ones(1), torch.ones(1)))
        self.assertEqual(sorted(res), ["args", "got", "kwargs"])

    def test_discrepancies(self):
        class Sub(torch.nn.Module):
            def forward(self, x, y):
                return x - y

        x = torch.ones(2)
        self.assertRaise(
            lambda: compare_modules(Sub(), Add(), args=(x, x)), AssertionError, "abs=2.0"
        )
        res = compare_modules(Sub(), Add(), args=(x, x), exc=False)
        self.assertEqual(res["diff"]["abs"], 2.0)

    def test_copy_protects_inputs(self):
        class InPlace(torch.nn.Module):
            def forward(self, x):
                x.add_(1)
                return x

        x = torch.zeros(2)
        compare_modules(InPlace(), InPlace(), args=(x,), copy=True)
        self.assertEqualArray(x, torch.zeros(2))

    @hide_stdout()
    def test_verbose_and_exported_program(self):
        x, y = torch.randn(3, 4), torch.randn(1, 4)
        ep = torch.export.export(Add(), (x, y))
        res, out, _ = self.capture(lambda: compare_modules(ep, Add(), (x, y), verbose=1))
        self.assertIn("[compare_modules] discrepancies abs=0.0", out)

    def test_bad_input(self):
        self.assertRaise(lambda: compare_modules(3), TypeError, "modep")
        self.assertRaise(lambda: compare_modules(Add(), 3), TypeError, "mod must")
        self.assertRaise(lambda: compare_modules(Add(), args=[1]), TypeError, "args must")
        self.assertRaise(lambda: compare_modules(Add(), kwargs=[1]), TypeError, "kwargs must")


class TestValidateEp(ExtTestCase):
    def test_dynamic_model_passes_every_size(self):
        x, y = torch.randn(5, 6), torch.randn(1, 6)
        ds = ({0: "a", 1: "b"}, {1: "b"})
        ep = _export(Add(), (x, y), ds)
        res = validate_ep(
            ep, Add(), args=(x, y), dynamic_shapes=ds, values_to_try={"a": [2, 7], "b": [3, 9]}
        )
        self.assertEqual(len(res), 5)
        shapes = [tuple(r["args"][0].shape) for r in res]
        self.assertEqual(shapes, [(5, 6), (2, 3), (2, 9), (7, 3), (7, 9)])
        self.assertTrue(all(r["diff"]["abs"] < 1e-6 for r in res))

    def test_static_dimension_is_caught(self):
        x = torch.randn(3, 4)
        ds = ({0: "batch", 1: DYN},)
        ep = torch.export.export(SliceStatic(), (x,), dynamic_shapes=({0: DYN},))
        with self.assertRaises((AssertionError, RuntimeError)):
            validate_ep(
                ep, SliceStatic(), args=(x,), dynamic_shapes=ds, values_to_try={"batch": [2]}
            )

    def test_kwargs_and_cache(self):
        cache = make_dynamic_cache([(torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8))])
        kwargs = dict(x=torch.randn(2, 5), cache=cache)
        ds = dict(x={0: "batch", 1: "seq"}, cache=[{0: "batch", 2: "length"}] * 2)
        ep = _export(WithCache(), (), ds, kwargs=kwargs)
        res = validate_ep(
            ep,
            WithCache(),
            kwargs=kwargs,
            copy=True,
            dynamic_shapes=ds,
            values_to_try={"batch": [3], "length": [4, 6]},
        )
        self.assertEqual(len(res), 3)
        self.assertEqual(res[2]["kwargs"]["cache"].layers[0].keys.shape[2], 6)
        self.assertEqual(tuple(res[2]["kwargs"]["x"].shape), (3, 6))

    def test_args_and_kwargs(self):
        x, y = torch.randn(5, 6), torch.randn(1, 6)
        ds = {"x": {0: "a"}, "y": {}}
        ep = torch.export.export(
            Add(), (x,), kwargs={"y": y}, dynamic_shapes={"x": {0: DYN}, "y": {}}
        )
        res = validate_ep(
            ep, Add(), args=(x,), kwargs={"y": y}, dynamic_shapes=ds, values_to_try={"a": [2]}
        )
        self.assertEqual(tuple(res[1]["args"][0].shape), (2, 6))

    def test_no_dynamic_shapes(self):
        x = torch.randn(2)
        self.assertEqual(len(validate_ep(Add(), Add(), args=(x, x))), 1)

    def test_bad_input(self):
        x = torch.randn(2)
        self.assertRaise(
            lambda: validate_ep(Add(), Add(), args=(x, x), dynamic_shapes=({0: "a"}, {0: "a"})),
            ValueError,
            "go together",
        )
        self.assertRaise(
            lambda: validate_ep(
                Add(),
                Add(),
                args=(x, x),
                dynamic_shapes=({0: "a"}, {0: "a"}),
                values_to_try={"a": []},
            ),
            ValueError,
            "values_to_try['a']",
        )

    def test_examples_in_docstrings_run(self):
        self.assertDocstringExamples("onnx_diagnostic.export.validate", "onnx_diagnostic.export")


if __name__ == "__main__":
    unittest.main(verbosity=2)
