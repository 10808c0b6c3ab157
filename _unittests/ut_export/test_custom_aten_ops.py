"""Tests of onnx_diagnostic/export/custom/aten_ops.py: every translation is exercised by a
tiny module exported with dynamic shapes, translated with and without the optimization
passes, run with onnxruntime on a second input whose dynamic dimensions differ from the
export input and compared with torch."""

from __future__ import annotations

import copy
import inspect
import math
import unittest
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime
import torch
from torch.export.graph_signature import OutputKind

from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS, supported_ops
from onnx_diagnostic.export.custom.translator import (
    TranslationError,
    UnsupportedATenOpError,
    translate_program,
)
from onnx_diagnostic.ext_test_case import ExtTestCase

DYN = torch.export.Dim.DYNAMIC
aten = torch.ops.aten

_SESSION_OPTIONS = onnxruntime.SessionOptions()
_SESSION_OPTIONS.intra_op_num_threads = 1
_SESSION_OPTIONS.inter_op_num_threads = 1


class Fn(torch.nn.Module):
    """Wraps a function as a module (the function is its forward)."""

    def __init__(self, fn: Callable, *modules: torch.nn.Module):
        super().__init__()
        self.fn = fn
        self.sub = torch.nn.ModuleList(modules)

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


def _aten_names(ep: torch.export.ExportedProgram) -> set[str]:
    names = set()
    for gm in ep.graph_module.modules():
        if isinstance(gm, torch.fx.GraphModule):
            for n in gm.graph.nodes:
                if n.op == "call_function":
                    names.add(str(n.target))
                    packet = getattr(n.target, "overloadpacket", None)
                    if packet is not None:
                        names.add(str(packet))
    return names


def _session(proto: onnx.ModelProto) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(
        proto.SerializeToString(), _SESSION_OPTIONS, providers=["CPUExecutionProvider"]
    )


def _tolerance(t: torch.Tensor, atol: float | None) -> float:
    if atol is not None:
        return atol
    if t.dtype == torch.float16:
        return 1e-3
    return 1e-5 if t.is_floating_point() else 0.0


class _AtenTestCase(ExtTestCase):
    def check(
        self,
        fn: Callable | torch.nn.Module,
        args: tuple,
        args2: tuple | None = None,
        dynamic_shapes: Any = None,
        aten_ops: tuple[str, ...] = (),
        opset: int | None = None,
        atol: float | None = None,
    ) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """
        Exports ``fn`` on ``args``, checks the exported program calls ``aten_ops``,
        translates it, runs the model before and after ``optimize()`` with onnxruntime on
        ``args`` and ``args2`` and compares with torch. Returns both models.
        """
        model = fn if isinstance(fn, torch.nn.Module) else Fn(fn)
        model.eval()
        ds = dynamic_shapes
        if isinstance(model, Fn) and ds is not None:
            ds = (tuple(ds),)  # forward(self, *args)
        ep = torch.export.export(model, copy.deepcopy(args), dynamic_shapes=ds)
        names = _aten_names(ep)
        for op in aten_ops:
            self.assertIn(op, names, msg=f"{op} not in the exported program")
        program = translate_program(ep, target_opset=opset)
        raw = ir.serde.serialize_model(program.model)
        onnx.checker.check_model(raw)
        program.optimize()
        opt = ir.serde.serialize_model(program.model)
        onnx.checker.check_model(opt)
        kinds = [s.kind for s in ep.graph_signature.output_specs]
        sessions = [("raw", _session(raw)), ("optimized", _session(opt))]
        for inputs in [args] if args2 is None else [args, args2]:
            expected, _ = torch.utils._pytree.tree_flatten(model(*copy.deepcopy(inputs)))
            flat, _ = torch.utils._pytree.tree_flatten(inputs)
            tensors = [t for t in flat if isinstance(t, torch.Tensor)]
            names_in = [i.name for i in raw.graph.input]
            self.assertEqual(len(names_in), len(tensors))
            feeds = {n: t.numpy() for n, t in zip(names_in, tensors)}
            for label, sess in sessions:
                got = sess.run(None, feeds)
                if len(got) == len(kinds) and len(got) != len(expected):
                    got = [g for g, k in zip(got, kinds) if k == OutputKind.USER_OUTPUT]
                self.assertEqual(len(expected), len(got), msg=label)
                for i, (e, g) in enumerate(zip(expected, got)):
                    tol = _tolerance(e, atol)
                    # torch.from_numpy keeps 0-d arrays 0-d
                    self.assertEqualArray(
                        e,
                        torch.from_numpy(np.array(g)),
                        atol=tol,
                        rtol=tol,
                        msg=f"{label}, output {i}, shape {tuple(e.shape)}",
                    )
        return raw, opt

    def check_cases(self, cases: list[tuple], **kwargs: Any) -> None:
        """Runs :meth:`check` on ``(name, fn, args, args2, dynamic_shapes, aten_ops)``."""
        for name, fn, args, args2, ds, ops in cases:
            with self.subTest(case=name):
                self.check(fn, args, args2, ds, ops, **kwargs)


def _f(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def _i(*shape: int, low: int = -5, high: int = 6) -> torch.Tensor:
    return torch.randint(low, high, shape, dtype=torch.int64)


def _b(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) > 0.5


def _nz(*shape: int) -> torch.Tensor:
    """Integers without zero (divisors)."""
    t = _i(*shape)
    return torch.where(t == 0, torch.ones_like(t) * 3, t)


D0 = ({0: DYN},)
D00 = ({0: DYN}, {0: DYN})


class TestElementwise(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(0)

    def test_binary_type_promotion(self):
        h = torch.float16
        self.check_cases(
            [
                ("int+float", lambda x: x + 1.5, (_i(3, 4),), (_i(5, 4),), D0, ("aten.add",)),
                (
                    "int+int",
                    lambda x, y: x + y,
                    (_i(3, 4), _i(3, 4)),
                    (_i(5, 4), _i(5, 4)),
                    D00,
                    (),
                ),
                (
                    "f16+f32",
                    lambda x, y: x + y,
                    (_f(3, 4).to(h), _f(3, 4)),
                    (_f(5, 4).to(h), _f(5, 4)),
                    D00,
                    ("aten.add",),
                ),
                (
                    "f16*f32 scalar 0-d",
                    lambda x, y: x * y,
                    (_f(3, 4).to(h), torch.tensor(2.5)),
                    (_f(5, 4).to(h), torch.tensor(-1.5)),
                    (({0: DYN}, None)),
                    ("aten.mul",),
                ),
                ("int*float", lambda x: x * 0.5, (_i(3, 4),), (_i(5, 4),), D0, ("aten.mul",)),
                (
                    "sub alpha",
                    lambda x, y: torch.sub(x, y, alpha=2),
                    (_f(3, 4), _f(3, 4)),
                    (_f(5, 4), _f(5, 4)),
                    D00,
                    ("aten.sub",),
                ),
                (
                    "add alpha int",
                    lambda x, y: torch.add(x, y, alpha=3),
                    (_i(3, 4), _i(4)),
                    (_i(5, 4), _i(4)),
                    ({0: DYN}, None),
                    (),
                ),
                ("rsub scalar", lambda x: 1 - x, (_i(3, 4),), (_i(5, 4),), D0, ("aten.rsub",)),
                (
                    "rsub alpha",
                    lambda x, y: torch.rsub(x, y, alpha=2),
                    (_f(3, 4), _f(3, 4)),
                    (_f(5, 4), _f(5, 4)),
                    D00,
                    ("aten.rsub",),
                ),
                (
                    "minimum maximum",
                    lambda x, y: (torch.minimum(x, y), torch.maximum(x, y), torch.max(x, y)),
                    (_f(3, 4), _i(3, 4)),
                    (_f(5, 4), _i(5, 4)),
                    D00,
                    ("aten.minimum", "aten.maximum"),
                ),
                (
                    "0-d with 0-d",
                    lambda x, y: (x + y, x * 2, x - y),
                    (torch.tensor(2.0), torch.tensor(3)),
                    (torch.tensor(-1.0), torch.tensor(-7)),
                    None,
                    (),
                ),
            ]
        )

    def test_division_and_remainder(self):
        self.check_cases(
            [
                (
                    "true div int",
                    lambda x, y: (x / y, x / 2),
                    (_i(3, 4), _nz(3, 4)),
                    (_i(5, 4), _nz(5, 4)),
                    D00,
                    ("aten.div",),
                ),
                (
                    "div modes int",
                    lambda x, y: (
                        torch.div(x, y, rounding_mode="floor"),
                        torch.div(x, y, rounding_mode="trunc"),
                        torch.div(x, 3, rounding_mode="floor"),
                    ),
                    (_i(3, 4), _nz(3, 4)),
                    (_i(5, 4), _nz(5, 4)),
                    D00,
                    ("aten.div",),
                ),
                (
                    "div modes float",
                    lambda x, y: (
                        torch.div(x, y, rounding_mode="floor"),
                        torch.div(x, y, rounding_mode="trunc"),
                    ),
                    (_f(3, 4), _f(3, 4)),
                    (_f(5, 4), _f(5, 4)),
                    D00,
                    ("aten.div",),
                ),
                (
                    "floor_divide",
                    lambda x, y, z: (x // y, z // 0.7),
                    (_i(3, 4), _nz(3, 4), _f(3, 4)),
                    (_i(5, 4), _nz(5, 4), _f(5, 4)),
                    ({0: DYN}, {0: DYN}, {0: DYN}),
                    ("aten.floor_divide",),
                ),
                (
                    "remainder fmod",
                    lambda x, y, z: (x % y, torch.fmod(x, y), z % 0.7, torch.fmod(z, -0.7)),
                    (_i(3, 4), _nz(3, 4), _f(3, 4)),
                    (_i(5, 4), _nz(5, 4), _f(5, 4)),
                    ({0: DYN}, {0: DYN}, {0: DYN}),
                    ("aten.remainder", "aten.fmod"),
                ),
                (
                    "pow",
                    lambda x, y, z: (x**2, z**2, 2**z, z.abs() ** y, x**0.5),
                    (_i(3, 4, low=0), _f(3, 4), _f(3, 4)),
                    (_i(5, 4, low=0), _f(5, 4), _f(5, 4)),
                    ({0: DYN}, {0: DYN}, {0: DYN}),
                    ("aten.pow",),
                ),
            ]
        )

    def test_comparisons_between_int_and_float(self):
        def fn(x, y):
            return (x < y, x <= y, x > 0.5, x >= y, x == 2.0, x != y, y == 2, y.eq(x))

        self.check(
            fn,
            (_i(3, 4), _f(3, 4) * 3),
            (_i(5, 4), _f(5, 4) * 3),
            D00,
            ("aten.lt", "aten.le", "aten.gt", "aten.ge", "aten.eq", "aten.ne"),
        )

    def test_logical_and_bitwise(self):
        def fn(a, b, x, y):
            return (
                a & b,
                a | b,
                a ^ b,
                ~a,
                x & y,
                x | y,
                x ^ y,
                ~x,
                torch.logical_and(x, y),
                torch.logical_or(a, y),
                torch.logical_xor(x, b),
                torch.logical_not(x.float()),
                torch.bitwise_and(x, 6),
                torch.bitwise_or(a, b),
                torch.bitwise_xor(x, y),
            )

        self.check(
            fn,
            (_b(3, 4), _b(3, 4), _i(3, 4), _i(3, 4)),
            (_b(5, 4), _b(5, 4), _i(5, 4), _i(5, 4)),
            ({0: DYN}, {0: DYN}, {0: DYN}, {0: DYN}),
            ("aten.__and__", "aten.__or__", "aten.__xor__", "aten.bitwise_not", "aten.logical_and"),
        )

    def test_unary_float(self):
        names = [
            "neg",
            "abs",
            "cos",
            "sin",
            "exp",
            "tanh",
            "sigmoid",
            "relu",
            "erf",
            "floor",
            "ceil",
            "sign",
            "tan",
            "atan",
            "rsqrt",
            "reciprocal",
        ]

        def fn(x):
            res = [getattr(torch, n)(x) for n in names]
            res += [torch.sqrt(x.abs()), torch.log(x.abs() + 0.1), torch.isnan(x.log())]
            res += [torch.nn.functional.silu(x), torch.nn.functional.gelu(x)]
            res += [torch.nn.functional.gelu(x, approximate="tanh")]
            return tuple(res)

        x, x2 = _f(3, 4), _f(5, 4)
        x2[0, 0] = float("nan")
        ops = tuple(f"aten.{n}" for n in names) + ("aten.isnan", "aten.silu", "aten.gelu")
        for opset in (18, 23):
            with self.subTest(opset=opset):
                self.check(fn, (x,), (x2,), D0, ops, opset=opset)

    def test_unary_int(self):
        def fn(x):
            return (
                x.neg(),
                x.abs(),
                x.sign(),
                x.sqrt(),
                x.exp(),
                x.sigmoid(),
                torch.floor(x),
                torch.ceil(x),
                torch.isnan(x),
            )

        self.check(fn, (_i(3, 4),), (_i(5, 4),), D0, ("aten.sqrt", "aten.isnan"))

    def test_clamp(self):
        self.check_cases(
            [
                (
                    "clamp float",
                    lambda x: (
                        x.clamp(-0.5, 0.5),
                        x.clamp(min=0.1),
                        x.clamp(max=0.1),
                        torch.clip(x, -1, 1),
                        torch.clamp_min(x, 0.2),
                        torch.clamp_max(x, 0.2),
                    ),
                    (_f(3, 4),),
                    (_f(5, 4),),
                    D0,
                    ("aten.clamp",),
                ),
                (
                    "clamp int with float",
                    lambda x: (x.clamp(-1.5, 2.5), x.clamp(-2, 2)),
                    (_i(3, 4),),
                    (_i(5, 4),),
                    D0,
                    ("aten.clamp",),
                ),
                (
                    "clamp tensor bounds",
                    lambda x, lo, hi: torch.clamp(x, lo, hi),
                    (_f(3, 4), -_f(4).abs(), _f(4).abs()),
                    (_f(5, 4), -_f(4).abs(), _f(4).abs()),
                    ({0: DYN}, None, None),
                    ("aten.clamp",),
                ),
            ]
        )

    def test_where_and_masked_fill(self):
        def fn(c, x, y, xi):
            return (
                torch.where(c, x, y),
                torch.where(c, x, 0.0),
                torch.where(c, 1.0, y),
                torch.where(c, 1.5, 0),
                torch.where(c, xi, 2.5),
                x.masked_fill(c, -1.0),
                xi.masked_fill(c[:1], 7),
                x.masked_fill(c, torch.tensor(3.0)),
            )

        self.check(
            fn,
            (_b(3, 4), _f(3, 4), _f(3, 4), _i(3, 4)),
            (_b(5, 4), _f(5, 4), _f(5, 4), _i(5, 4)),
            ({0: DYN}, {0: DYN}, {0: DYN}, {0: DYN}),
            ("aten.where", "aten.masked_fill"),
        )

    def test_booleans_in_min_max_where_masked_fill(self):
        def fn(c, a, b):
            return (
                torch.maximum(a, b),
                torch.minimum(a, b),
                torch.max(a, b),
                torch.where(c, a, b),
                torch.where(c, a, True),
                a.masked_fill(c, False),
            )

        self.check(
            fn,
            (_b(3, 4), _b(3, 4), _b(3, 4)),
            (_b(5, 4), _b(5, 4), _b(5, 4)),
            ({0: DYN}, {0: DYN}, {0: DYN}),
            ("aten.maximum", "aten.minimum", "aten.where", "aten.masked_fill"),
        )

    def test_outer_and_comparison_aliases(self):
        # phimoe's rotary (outer), mixtral's router (torch.greater) in transformers 4.x
        def fn(x, y):
            n = torch.arange(x.shape[0], dtype=torch.float32)
            return (
                torch.outer(n, y[0]),
                torch.ger(x[:, 0], y[0]),
                torch.greater(x, 0.5),
                torch.less_equal(x, y[:1]),
                torch.not_equal(x, 0),
            )

        self.check(
            fn,
            (_f(3, 4), _f(2, 4)),
            (_f(5, 4), _f(2, 4)),
            ({0: DYN}, {}),
            ("aten.outer", "aten.greater", "aten.less_equal", "aten.not_equal"),
        )

    def test_booleans_in_mul_add(self):
        # jamba's padding mask in transformers 4.x: mask.eq(0.0) * attention_mask.eq(0.0)
        def fn(a, b, x):
            return a * b, a + b, (x > 0) * (x < 1), a * x

        self.check(
            fn,
            (_b(3, 4), _b(3, 4), _f(3, 4)),
            (_b(5, 4), _b(5, 4), _f(5, 4)),
            ({0: DYN}, {0: DYN}, {0: DYN}),
            ("aten.mul", "aten.add"),
        )

    def test_bfloat16_types_in_translated_graph(self):
        # onnxruntime has no CPU kernel for most bfloat16 operators: the types only
        def fn(x, y):
            return (x + y).relu() * 2, (x < y), x.sum(-1), x.to(torch.float32)

        bf = torch.bfloat16
        ep = torch.export.export(
            Fn(fn), (_f(3, 4).to(bf), _f(3, 4).to(bf)), dynamic_shapes=(({0: DYN}, {0: DYN}),)
        )
        program = translate_program(ep)
        onnx.checker.check_model(ir.serde.serialize_model(program.model))
        self.assertEqual(
            [o.dtype for o in program.model.graph.outputs],
            [ir.DataType.BFLOAT16, ir.DataType.BOOL, ir.DataType.BFLOAT16, ir.DataType.FLOAT],
        )
        self.assertEqual(len(program.model.graph.outputs[0].shape), 2)


class TestInPlace(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(1)

    def test_in_place_operators(self):
        def fn(x, y):
            z = x.clone()
            z.add_(1)
            z.mul_(y)
            z.sub_(0.5)
            z.div_(2)
            z.clamp_(-1, 1)
            z.masked_fill_(y > 0, 0.25)
            z.relu_()
            z.exp_()
            return z, z.sum()

        self.check(
            fn,
            (_f(3, 4), _f(3, 4)),
            (_f(5, 4), _f(5, 4)),
            D00,
            ("aten.add_", "aten.mul_", "aten.masked_fill_", "aten.relu_"),
        )

    def test_in_place_on_an_input(self):
        def fn(x):
            x.add_(1)
            return x * 2

        self.check(fn, (_f(3, 4),), (_f(5, 4),), D0)

    def test_write_into_slices_is_functionalized(self):
        def fn(x, y):
            z = x.clone()
            z[:, 1:] = y
            z[:, 0] = -1.0
            z[-1] = 3.0
            return z

        self.check(
            fn,
            (_f(3, 4), _f(3, 3)),
            (_f(5, 4), _f(5, 3)),
            D00,
            ("aten.copy_",),
        )

    def test_scatter_functions(self):
        def fn(x, y, z):
            return (
                torch.slice_scatter(x, y, dim=1, start=1),
                torch.slice_scatter(x, y[:, :2], dim=-1, start=1, end=3),
                torch.slice_scatter(x, y[:, :2], dim=1, start=-2),
                torch.slice_scatter(x, x[:1], dim=0, end=1),
                torch.select_scatter(x, z, 1, 0),
                torch.select_scatter(x, z, -1, -1),
                torch.select_scatter(x, z, 1, -2),
                torch.select_scatter(x, x[0], 0, 1),
            )

        self.check(
            fn,
            (_f(3, 4), _f(3, 3), _f(3)),
            (_f(5, 4), _f(5, 3), _f(5)),
            ({0: torch.export.Dim("b")}, {0: torch.export.Dim("b")}, {0: torch.export.Dim("b")}),
            ("aten.slice_scatter", "aten.select_scatter"),
        )

    def test_in_place_unary_without_views(self):
        names = ["neg_", "abs_", "sin_", "cos_", "tan_", "tanh_", "sigmoid_", "atan_", "erf_"]
        names += ["floor_", "ceil_", "sign_", "reciprocal_", "sqrt_", "log_", "silu_", "gelu_"]

        def fn(x, m, k):
            res = []
            for n in names:
                z = x.clone()
                if n in ("sqrt_", "log_"):
                    z.abs_()
                getattr(aten, n)(z)
                res.append(z)
            z = x.clone()
            z.unsqueeze_(0)
            z.tril_()
            t = x.clone()
            t.triu_(1)
            f = x.clone()
            f.fill_(1.5)
            f2 = x.clone()
            f2.fill_(x[0, 0])
            c = x.clone()
            c.copy_(x * 2)
            a = m.clone()
            a.bitwise_and_(k)
            o = m.clone()
            o.bitwise_or_(k)
            return (*res, z, t, f, f2, c, a, o)

        self.check(
            fn,
            (_f(3, 4), _i(3, 4), _i(4)),
            (_f(5, 4), _i(5, 4), _i(4)),
            ({0: DYN}, {0: DYN}, None),
            tuple(f"aten.{n}" for n in names)
            + ("aten.unsqueeze_", "aten.tril_", "aten.triu_", "aten.fill_", "aten.copy_"),
        )

    def test_fill_copy_and_tril_in_place(self):
        def fn(x, y):
            z = x.clone()
            z[:, :2].fill_(2.0)
            w = torch.empty_like(x)
            w.copy_(y)
            t = x.clone()
            t.tril_()
            return z, w, t

        self.check(fn, (_f(3, 4), _f(3, 4)), (_f(5, 4), _f(5, 4)), D00, ("aten.copy_",))


class TestShapes(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(2)

    def test_reshape_family(self):
        self.check_cases(
            [
                (
                    "view symbolic",
                    lambda x: (x.view(-1, 2), x.reshape(x.shape[0] * 2, 6), x.view(x.shape[0], -1)),
                    (_f(3, 3, 4),),
                    (_f(5, 3, 4),),
                    D0,
                    ("aten.view",),
                ),
                (
                    "view_as reshape_as",
                    lambda x, y: (x.view_as(y), x.reshape_as(y)),
                    (_f(3, 4), _f(3, 2, 2)),
                    (_f(5, 4), _f(5, 2, 2)),
                    ({0: torch.export.Dim("b")}, {0: torch.export.Dim("b")}),
                    (),
                ),
                (
                    "transpose permute t",
                    lambda x, y: (
                        x.transpose(-1, 0),
                        x.permute(2, -3, 1),
                        torch.swapaxes(x, 1, 2),
                        y.t(),
                        x.transpose(1, 1),
                        x.mT,
                    ),
                    (_f(3, 2, 4), _f(3, 4)),
                    (_f(5, 2, 4), _f(5, 4)),
                    D00,
                    ("aten.transpose", "aten.permute", "aten.t"),
                ),
                (
                    "unsqueeze squeeze",
                    lambda x: (
                        x.unsqueeze(-1),
                        x.unsqueeze(0),
                        x.unsqueeze(1).squeeze(1),
                        x[:, :1].squeeze(-2),
                        x[:, :1, :1].squeeze(),
                        x[:, :1, :1].squeeze((1, 2)),
                    ),
                    (_f(3, 2, 4),),
                    (_f(5, 2, 4),),
                    D0,
                    ("aten.unsqueeze", "aten.squeeze"),
                ),
                (
                    "flatten",
                    lambda x, s: (x.flatten(), x.flatten(1), x.flatten(0, 1), s.flatten()),
                    (_f(3, 2, 4), torch.tensor(3.0)),
                    (_f(5, 2, 4), torch.tensor(4.0)),
                    ({0: DYN}, None),
                    ("aten.flatten",),
                ),
                (
                    "expand",
                    lambda x, y: (
                        x.expand(-1, 3, 4),
                        x.expand(2, -1, 3, 4),
                        y.expand(-1, 2, x.shape[0]),
                        y.expand_as(x),
                    ),
                    (_f(3, 1, 4), _f(3, 1, 1)),
                    (_f(5, 1, 4), _f(5, 1, 1)),
                    ({0: torch.export.Dim("b")}, {0: torch.export.Dim("b")}),
                    ("aten.expand",),
                ),
                (
                    "repeat",
                    lambda x: (x.repeat(2, 1), x.repeat(2, 1, 3)),
                    (_f(3, 4),),
                    (_f(5, 4),),
                    D0,
                    ("aten.repeat",),
                ),
                (
                    "empty dimension",
                    lambda x: (x.reshape(-1), x.sum(1), x.transpose(0, 1) + 1),
                    (_f(3, 0),),
                    (_f(5, 0),),
                    D0,
                    (),
                ),
            ]
        )

    def test_slicing(self):
        self.check_cases(
            [
                (
                    "static bounds",
                    lambda x: (x[:, 1:], x[:, -2:], x[1:-1], x[::2], x[:, 1:100], x[:, :-1:2]),
                    (_f(5, 4),),
                    (_f(7, 4),),
                    D0,
                    ("aten.slice",),
                ),
                (
                    "symbolic bounds",
                    lambda x, y: (x[: y.shape[0]], x[y.shape[0] :], x[:, : x.shape[0] // 2 + 1]),
                    (_f(6, 8), _f(2)),
                    (_f(8, 8), _f(3)),
                    ({0: DYN}, {0: DYN}),
                    ("aten.slice",),
                ),
                (
                    "narrow select",
                    lambda x: (
                        x.narrow(1, 1, 2),
                        x.narrow(-1, 0, 1),
                        x.narrow(1, -2, 2),
                        x[:, -1],
                        x[1],
                        x.select(-1, 2),
                    ),
                    (_f(3, 4),),
                    (_f(5, 4),),
                    D0,
                    ("aten.narrow", "aten.select"),
                ),
                (
                    "narrow symbolic",
                    lambda x: x.narrow(0, 1, x.shape[0] - 1),
                    (_f(3, 4),),
                    (_f(5, 4),),
                    D0,
                    ("aten.narrow",),
                ),
            ]
        )

    def test_cat_stack(self):
        self.check_cases(
            [
                (
                    "cat",
                    lambda x, y: (
                        torch.cat([x, y], dim=-1),
                        torch.cat([x, x], 0),
                        torch.cat([x, torch.zeros(0)], 1),
                        torch.cat([x, y.long()], 1),
                    ),
                    (_f(3, 4), _f(3, 2)),
                    (_f(5, 4), _f(5, 2)),
                    ({0: torch.export.Dim("b")}, {0: torch.export.Dim("b")}),
                    ("aten.cat",),
                ),
                (
                    "stack",
                    lambda x, y: (torch.stack([x, y]), torch.stack([x, y], -1)),
                    (_f(3, 4), _i(3, 4)),
                    (_f(5, 4), _i(5, 4)),
                    ({0: torch.export.Dim("b")}, {0: torch.export.Dim("b")}),
                    ("aten.stack",),
                ),
            ]
        )

    def test_split_chunk_unbind(self):
        def fn(x):
            return (
                *x.split(2, dim=-1),
                *x.split([1, 3, 1], dim=1),
                *x.chunk(2, dim=1),
                *x.unbind(-1),
                *x[:, :1].unbind(1),
                *torch.tensor_split(x, 3, dim=1),
                *x.split(5, dim=1),
            )

        self.check(
            fn,
            (_f(3, 5),),
            (_f(6, 5),),
            D0,
            ("aten.split", "aten.split_with_sizes", "aten.unbind"),
        )


class TestIndexing(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(3)

    def test_masked_scatter(self):
        # what multimodal models do to place image features in the text embeddings
        def fct(x, ids, feats):
            mask = (ids == 7).unsqueeze(-1)
            return x.masked_scatter(mask, feats)

        x, x2 = _f(2, 5, 3), _f(3, 4, 3)
        ids = torch.tensor([[7, 1, 7, 2, 3], [4, 7, 5, 6, 1]])
        ids2 = torch.tensor([[7, 7, 7, 2], [4, 1, 5, 6], [7, 1, 1, 1]])
        self.check(
            fct,
            (x, ids, _f(3, 3)),
            (x2, ids2, _f(4, 3)),
            ({0: DYN, 1: DYN}, {0: DYN, 1: DYN}, {0: DYN}),
            ("aten.masked_scatter",),
        )

    def test_advanced_indexing(self):
        x3, x5 = _f(3, 4, 5), _f(6, 4, 5)
        emb = torch.nn.Embedding(5, 3)
        b = torch.export.Dim("b")
        self.check_cases(
            [
                (
                    "x[idx]",
                    lambda x, i: x[i],
                    (x3, torch.tensor([0, -1, 1])),
                    (x5, torch.tensor([5, 0, -2, 1])),
                    ({0: DYN}, {0: DYN}),
                    ("aten.index",),
                ),
                (
                    "x[:, idx]",
                    lambda x, i: x[:, i],
                    (x3, torch.tensor([[0, 3], [-1, 2]])),
                    (x5, torch.tensor([[1, 3], [-2, 2], [0, 0]])),
                    ({0: DYN}, {0: DYN}),
                    ("aten.index",),
                ),
                (
                    "x[i0, i1] broadcast",
                    lambda x, i0, i1: x[i0, i1],
                    (x3, torch.tensor([[0], [2]]), torch.tensor([1, -1, 3])),
                    (x5, torch.tensor([[0], [5], [-1]]), torch.tensor([1, -1, 3, 0])),
                    ({0: DYN}, {0: DYN}, {0: DYN}),
                    ("aten.index",),
                ),
                (
                    "x[:, i0, i1]",
                    lambda x, i0, i1: x[:, i0, i1],
                    (x3, torch.tensor([0, 3]), torch.tensor([4, -1])),
                    (x5, torch.tensor([1, 2, 3]), torch.tensor([0, 1, -2])),
                    ({0: DYN}, {0: b}, {0: b}),
                    ("aten.index",),
                ),
                (
                    "x[i0, :, i1]",
                    lambda x, i0, i1: x[i0, :, i1],
                    (x3, torch.tensor([0, 2]), torch.tensor([4, -1])),
                    (x5, torch.tensor([1, 2, 5]), torch.tensor([0, 1, -2])),
                    ({0: DYN}, {0: b}, {0: b}),
                    ("aten.index",),
                ),
                (
                    "index_select gather embedding",
                    Fn(
                        lambda x, i: (
                            x.index_select(-1, i),
                            torch.gather(x, 2, i.reshape(1, 1, -1).expand(x.shape[0], 4, -1)),
                            emb(i),
                        ),
                        emb,
                    ),
                    (x3, torch.tensor([0, 4, 1])),
                    (x5, torch.tensor([2, 2, 3, 0])),
                    ({0: DYN}, {0: DYN}),
                    ("aten.index_select", "aten.gather", "aten.embedding"),
                ),
            ]
        )

    def test_embedding_module(self):
        emb = torch.nn.Embedding(10, 4, padding_idx=0)
        self.check(
            Fn(lambda ids: emb(ids), emb),
            (torch.tensor([[1, 0, 3], [4, 4, 0]]),),
            (torch.tensor([[9, 0], [2, 5]]),),
            ({0: DYN, 1: DYN},),
            ("aten.embedding",),
        )

    def test_scatter_into_slices_with_negative_and_symbolic_bounds(self):
        def fn(x, y):
            z = x.clone()
            z[..., -1] = 0.0
            z[-2] = 1.0
            z[:, 1 : x.shape[1] - 1] = y[:, :2]
            return z

        self.check(fn, (_f(3, 4), _f(3, 3)), (_f(5, 4), _f(5, 3)), D00)


class TestReductions(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(4)

    def test_reductions_keepdim(self):
        def fn(x, b):
            return (
                x.sum(),
                x.sum(-1),
                x.sum((0, 2), keepdim=True),
                x.mean(1, keepdim=True),
                x.mean(),
                x.amax(-1),
                x.amin((0, 1), keepdim=True),
                x.prod(1),
                x.prod(),
                b.sum(-1),
                x.sum(1, dtype=torch.float64),
                x.max(),
                x.min(),
            )

        self.check(
            fn,
            (_f(3, 4, 2), _b(3, 4)),
            (_f(5, 4, 2), _b(5, 4)),
            D00,
            ("aten.sum", "aten.mean", "aten.amax", "aten.amin", "aten.prod", "aten.max"),
        )

    def test_reductions_of_0d_tensors(self):
        self.check(
            lambda x: (x.sum(), x.mean(), x.amax(), x.argmax(), x.any(), x.cumsum(0)),
            (torch.tensor(2.5),),
            (torch.tensor(-1.0),),
        )

    def test_max_min_argmax(self):
        def fn(x):
            v, i = x.max(-1)
            v2, i2 = x.min(1, keepdim=True)
            return (
                v,
                i,
                v2,
                i2,
                x.argmax(),
                x.argmax(-1),
                x.argmin(1, keepdim=True),
                x.int().argmax(0),
            )

        self.check(fn, (_f(3, 4),), (_f(5, 4),), D0, ("aten.max", "aten.argmax", "aten.argmin"))

    def test_any_all(self):
        def fn(x, b):
            return (b.any(), b.all(-1), b.any(0, keepdim=True), (x > 0).all(), x.any(1))

        self.check(fn, (_f(3, 4), _b(3, 4)), (_f(5, 4), _b(5, 4)), D00, ("aten.any", "aten.all"))

    def test_cumsum(self):
        def fn(x, b, i):
            return (x.cumsum(-1), x.cumsum(0), b.cumsum(1), i.cumsum(0, dtype=torch.float32))

        self.check(
            fn,
            (_f(3, 4), _b(3, 4), _i(3, 4)),
            (_f(5, 4), _b(5, 4), _i(5, 4)),
            ({0: DYN}, {0: DYN}, {0: DYN}),
            ("aten.cumsum",),
        )

    def test_softmax_dtype(self):
        def fn(x):
            return (
                x.softmax(-1),
                torch.softmax(x, 0, dtype=torch.float32),
                torch.log_softmax(x, 1),
                torch.log_softmax(x.float(), -1, dtype=torch.float64),
            )

        self.check(
            fn,
            (_f(3, 4).to(torch.float16),),
            (_f(5, 4).to(torch.float16),),
            D0,
            ("aten.softmax", "aten.log_softmax"),
            atol=2e-3,
        )


class TestNN(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(5)

    def test_layer_norm_batch_norm(self):
        ln = torch.nn.LayerNorm(4)
        bn = torch.nn.BatchNorm2d(3)
        bn.running_mean.uniform_()
        bn.running_var.uniform_(0.5, 1.5)
        bn_nw = torch.nn.BatchNorm2d(3, affine=False)

        def fn(x, y):
            return (
                torch.nn.functional.layer_norm(x, (4,)),
                torch.nn.functional.layer_norm(x, (3, 4), eps=1e-3),
                ln(x),
                bn(y),
                bn_nw(y),
            )

        self.check(
            Fn(fn, ln, bn, bn_nw),
            (_f(2, 3, 4), _f(2, 3, 4, 4)),
            (_f(5, 3, 4), _f(5, 3, 4, 4)),
            D00,
            ("aten.layer_norm",),
        )

    def test_linear_matmul(self):
        lin = torch.nn.Linear(4, 3)
        lin_nb = torch.nn.Linear(4, 3, bias=False)

        def fn(x, y, b):
            return (
                lin(x),
                lin_nb(x),
                torch.addmm(b, x, y),
                torch.addmm(b, x, y, beta=0.5, alpha=2),
                x @ y,
                torch.mm(x, y),
                torch.bmm(x.unsqueeze(0), y.unsqueeze(0)),
                torch.matmul(x.unsqueeze(1), y),
            )

        self.check(
            Fn(fn, lin, lin_nb),
            (_f(3, 4), _f(4, 5), _f(5)),
            (_f(6, 4), _f(4, 5), _f(5)),
            ({0: DYN}, None, None),
            ("aten.linear", "aten.addmm", "aten.mm", "aten.bmm"),
        )

    def test_convolutions_and_pools(self):
        c1 = torch.nn.Conv1d(2, 4, 3, stride=2, padding=1)
        c2 = torch.nn.Conv2d(2, 4, (3, 2), padding=(1, 0), dilation=(1, 2), groups=2)
        c3 = torch.nn.Conv3d(2, 2, 2, bias=False)
        same = torch.nn.Conv2d(2, 2, 4, padding="same")
        valid = torch.nn.Conv1d(2, 2, 3, padding="valid")

        def fn(x1, x2, x3):
            return (
                c1(x1),
                valid(x1),
                c2(x2),
                same(x2),
                c3(x3),
                torch.nn.functional.max_pool2d(x2, 2),
                torch.nn.functional.max_pool2d(x2, 3, stride=2, padding=1, ceil_mode=True),
                torch.nn.functional.max_pool2d(x2, 2, dilation=2),
                torch.nn.functional.avg_pool2d(x2, 2),
                torch.nn.functional.avg_pool2d(x2, 3, 2, padding=1, count_include_pad=False),
                torch.nn.functional.adaptive_avg_pool2d(x2, 1),
                torch.nn.functional.adaptive_avg_pool1d(x1, 1),
            )

        self.check(
            Fn(fn, c1, c2, c3, same, valid),
            (_f(2, 2, 9), _f(2, 2, 7, 8), _f(2, 2, 3, 3, 3)),
            (_f(3, 2, 9), _f(3, 2, 7, 8), _f(1, 2, 3, 3, 3)),
            ({0: DYN}, {0: DYN}, {0: DYN}),
            ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.max_pool2d", "aten.avg_pool2d"),
        )

    def test_dropout_in_eval_mode_is_identity(self):
        drop = torch.nn.Dropout(0.5)
        raw, _ = self.check(Fn(lambda x: drop(x) + 1, drop), (_f(3, 4),), (_f(5, 4),), D0)
        self.assertEqual([n.op_type for n in raw.graph.node], ["Add"])


class TestAttention(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(6)

    def _qkv(self, batch: int, seq: int, heads: int = 2, kv_heads: int = 2):
        return (_f(batch, heads, seq, 8), _f(batch, kv_heads, seq, 8), _f(batch, kv_heads, seq, 8))

    def test_sdpa_variants(self):
        sdpa = torch.nn.functional.scaled_dot_product_attention
        ds3 = ({0: DYN, 2: DYN}, {0: DYN, 2: DYN}, {0: DYN, 2: DYN})
        s = torch.export.Dim("s")
        dsm = ({2: s}, {2: s}, {2: s}, {2: s, 3: s})
        q, k, v = self._qkv(2, 3)
        q2, k2, v2 = self._qkv(3, 5)
        bmask = torch.ones(3, 3, dtype=torch.bool).tril()[None, None].expand(2, 1, 3, 3).clone()
        bmask2 = torch.rand(2, 1, 5, 5) > 0.3
        bmask2[..., 0] = True
        fmask, fmask2 = _f(2, 1, 3, 3), _f(2, 1, 5, 5)
        qg, kg, vg = self._qkv(2, 3, 4, 2)
        qg2, kg2, vg2 = self._qkv(3, 5, 4, 2)
        cases = [
            ("plain", lambda q, k, v: sdpa(q, k, v), (q, k, v), (q2, k2, v2), ds3),
            ("causal", lambda q, k, v: sdpa(q, k, v, is_causal=True), (q, k, v), (q2, k2, v2), ds3),
            ("scale", lambda q, k, v: sdpa(q, k, v, scale=0.3), (q, k, v), (q2, k2, v2), ds3),
            (
                "bool mask",
                lambda q, k, v, m: sdpa(q, k, v, attn_mask=m),
                (q, k, v, bmask),
                (q2[:2], k2[:2], v2[:2], bmask2),
                dsm,
            ),
            (
                "float mask",
                lambda q, k, v, m: sdpa(q, k, v, attn_mask=m),
                (q, k, v, fmask),
                (q2[:2], k2[:2], v2[:2], fmask2),
                dsm,
            ),
            (
                "gqa",
                lambda q, k, v: sdpa(q, k, v, enable_gqa=True),
                (qg, kg, vg),
                (qg2, kg2, vg2),
                ds3,
            ),
            (
                "gqa causal",
                lambda q, k, v: sdpa(q, k, v, enable_gqa=True, is_causal=True),
                (qg, kg, vg),
                (qg2, kg2, vg2),
                ds3,
            ),
            (
                "3-D",
                lambda q, k, v: sdpa(q, k, v, is_causal=True),
                (q[0], k[0], v[0]),
                (q2[0], k2[0], v2[0]),
                ({1: DYN}, {1: DYN}, {1: DYN}),
            ),
        ]
        for opset in (18, 23):
            for name, fn, args, args2, ds in cases:
                with self.subTest(case=name, opset=opset):
                    raw, _ = self.check(
                        fn, args, args2, ds, ("aten.scaled_dot_product_attention",), opset=opset
                    )
                    ops = {n.op_type for n in raw.graph.node}
                    if opset == 23 and name != "3-D":
                        self.assertIn("Attention", ops)
                    else:
                        self.assertNotIn("Attention", ops)


class TestCreation(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(7)

    def test_creation_with_symbolic_sizes(self):
        def fn(x):
            n = x.shape[0]
            return (
                torch.zeros(n, 3),
                torch.ones((n, 2), dtype=torch.int64),
                torch.full((2, n), 1.5),
                torch.full((n,), 7, dtype=torch.int32),
                x.new_ones((n, 2)),
                x.new_zeros(n),
                x.new_full((3, n), -2.0),
                torch.zeros_like(x),
                torch.ones_like(x, dtype=torch.bool),
                torch.full_like(x, 4),
                torch.empty(n, 3).shape[0] + x,
                torch.scalar_tensor(3.5),
                torch.zeros(2, 3, dtype=torch.bfloat16).float(),
            )

        self.check(
            fn,
            (_f(3, 4),),
            (_f(5, 4),),
            D0,
            ("aten.zeros", "aten.full", "aten.new_ones", "aten.new_full", "aten.zeros_like"),
        )

    def test_zero_in_place(self):
        # MambaCache.update_ssm_state of transformers 4.x: state.zero_(); state += new
        def fn(x, y):
            z = x.clone()
            z.zero_()
            z += y
            return z, x.clone().zero_() - 1

        self.check(fn, (_f(3, 4), _f(3, 4)), (_f(5, 4), _f(5, 4)), D00, ("aten.zero_",))

    def test_arange(self):
        def fn(x):
            n = x.shape[0]
            return (
                torch.arange(n),
                torch.arange(n, dtype=torch.float32),
                torch.arange(1, n + 2, 2),
                torch.arange(0.5, n, 0.5),
                torch.arange(5) + x[:1, :1],
                torch.arange(2, 10, 3, dtype=torch.float32),
            )

        self.check(fn, (_f(3, 4),), (_f(6, 4),), D0, ("aten.arange",))

    def test_tril_triu(self):
        def fn(x, b):
            return (x.tril(), x.triu(1), x.tril(-1), b.tril(), b.triu(-1))

        self.check(fn, (_f(3, 4), _b(3, 3)), (_f(5, 4), _b(6, 6)), ({0: DYN}, {0: DYN, 1: DYN}))

    def test_conversions(self):
        def fn(x, y):
            return (
                x.to(torch.int64),
                x.float(),
                x.half().float(),
                x.type_as(y),
                y.to(x),
                x.to(torch.bool),
                x.detach(),
                x.contiguous(),
            )

        self.check(fn, (_f(3, 4) * 3, _i(3, 4)), (_f(5, 4) * 3, _i(5, 4)), D00, ("aten.to",))


class TestDirectATenCalls(_AtenTestCase):
    """ATen operators the Python API rarely leaves in an exported program."""

    def test_private_and_alias_operators(self):
        bn_w, bn_b = torch.rand(4), torch.rand(4)
        mean, var = torch.rand(4), torch.rand(4) + 0.5

        def fn(x, y, i, b):
            n = x.shape[0]
            return (
                aten._softmax(x, -1, False),
                aten._log_softmax(x, 1, False),
                aten._to_copy(x, dtype=torch.int64),
                aten._unsafe_view(x, [n * 4]),
                aten._unsafe_index(x, [i]),
                aten._native_batch_norm_legit_no_training(y, bn_w, bn_b, mean, var, 0.1, 1e-5)[0],
                aten.alias(x),
                aten.lift_fresh(x),
                aten.contiguous(x),
                aten.to.other(i, x),
                aten.to.dtype_layout(i, dtype=torch.float16),
                aten.new_empty(x, [n, 2]).shape[0] + x,
                aten.arange.start(2, n + 2),
                aten.numpy_T(x),
                aten.swapdims(y, 0, -1),
                aten.min.other(x, -x),
                aten.alpha_dropout(x, 0.5, False),
                aten.feature_dropout(x, 0.5, False),
                aten._is_all_true(b),
                aten.where.ScalarSelf(b, 2.0, x),
                aten.where.Scalar(b, 2.0, -3.0),
            )

        self.check(
            fn,
            (_f(3, 4), _f(3, 4, 2), torch.tensor([0, 2, -1]), _b(3, 4)),
            (_f(5, 4), _f(5, 4, 2), torch.tensor([4, 1]), _b(5, 4)),
            (
                {0: torch.export.Dim("b")},
                {0: torch.export.Dim("b")},
                {0: DYN},
                {0: torch.export.Dim("b")},
            ),
            ("aten._softmax", "aten._unsafe_index", "aten._native_batch_norm_legit_no_training"),
        )

    def test_concat_aliases_of_cat(self):
        # phimoe's router leaves aten.concat in the exported program
        self.check(
            lambda x, y: (aten.concat([x, y], -1), aten.concatenate([y, x], 1)),
            (_f(3, 1), _f(3, 2)),
            (_f(5, 1), _f(5, 2)),
            D00,
            ("aten.concat", "aten.concatenate"),
        )

    def test_assertions_are_skipped(self):
        def fn(x, i):
            k = i.item()
            aten.sym_constrain_range.default(k, min=0, max=10)
            aten.sym_constrain_range_for_size.default(k, min=0, max=10)
            aten._assert_async.msg(torch.tensor(True), "message")
            aten._assert_async.default(torch.tensor(True))
            return x * k

        self.check(fn, (_f(3, 4), torch.tensor(2)), (_f(5, 4), torch.tensor(7)), ({0: DYN}, None))


class TestSymbolicIntegers(_AtenTestCase):
    def test_symbolic_comparisons_and_rounding(self):
        def fn(x, y):
            n, m = x.shape[0], y.shape[0]
            return (
                torch.ones(math.ceil(n / 3)),
                torch.ones(math.floor(n / 3) + 1),
                torch.ones(-(-n // 2)),
                torch.ones(torch.sym_ite(n > m, n, m)),
                torch.full((2,), torch.sym_float(n) / 2),
                torch.full((1,), torch.sym_not(n == m)),
                torch.full((1,), n < m),
                torch.full((1,), n != m),
            )

        self.check(fn, (_f(4, 4), _f(3)), (_f(7, 4), _f(9)), D00)

    def test_symbolic_arithmetic(self):
        def fn(x, y):
            n, m = x.shape[0], y.shape[0]
            return (
                torch.zeros(n // 2 + 1),
                torch.ones(torch.sym_max(n, m)),
                torch.ones(torch.sym_min(n, m) * 2),
                torch.full((n % 3 + 1,), 1.0),
                x[: n - 1] * (m - 1),
                x.reshape(-1)[: n * 4 - m],
                torch.full((1,), n / m),
            )

        self.check(fn, (_f(4, 4), _f(3)), (_f(7, 4), _f(2)), D00)

    def test_item_of_a_tensor(self):
        def fn(x, i):
            k = i.item()
            torch._check(k >= 0)
            torch._check(k <= x.shape[0])
            return x[:k] + 1

        self.check(fn, (_f(5, 4), torch.tensor(2)), (_f(7, 4), torch.tensor(6)), ({0: DYN}, None))


class TestMoreElementwise(_AtenTestCase):
    """square, softplus, log1p, expm1 (issue 19)."""

    def setUp(self):
        torch.manual_seed(11)

    def test_square_softplus_log1p_expm1(self):
        F = torch.nn.functional

        def fn(x, i):
            tiny = x * 1e-7
            return (
                torch.square(x),
                torch.square(i),
                F.softplus(x * 30),
                F.softplus(x, beta=2.0, threshold=1.0),
                torch.log1p(x.abs()),
                torch.log1p(tiny),
                torch.expm1(x),
                torch.expm1(tiny),
                torch.expm1(x * 200),
            )

        self.check(
            fn,
            (_f(3, 4), _i(3, 4)),
            (_f(5, 4), _i(5, 4)),
            D00,
            ("aten.square", "aten.softplus", "aten.log1p", "aten.expm1"),
            atol=1e-5,
        )
        # the small values keep their digits: log1p(1e-10) is 1e-10, not 0
        raw, _ = self.check(lambda x: (torch.log1p(x), torch.expm1(x)), (_f(3) * 1e-10,))
        got = _session(raw).run(None, {raw.graph.input[0].name: np.full((3,), 1e-10, np.float32)})
        np.testing.assert_allclose(got[0], np.full((3,), 1e-10), rtol=1e-6)
        np.testing.assert_allclose(got[1], np.full((3,), 1e-10), rtol=1e-6)

    def test_float16_transcendental_functions(self):
        F = torch.nn.functional
        h = torch.float16
        self.check(
            lambda x: (torch.square(x), F.softplus(x), torch.log1p(x.abs()), torch.expm1(x)),
            (_f(3, 4).to(h),),
            (_f(5, 4).to(h),),
            D0,
            ("aten.softplus",),
            atol=2e-3,
        )


class TestMoreReductions(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(12)

    def test_logsumexp(self):
        def fn(x, i):
            y = x.clone()
            y[0] = -float("inf")
            return (
                torch.logsumexp(x, -1),
                torch.logsumexp(x * 50, (0, 2), keepdim=True),
                torch.logsumexp(y, 1),
                torch.logsumexp(i, 0),
            )

        self.check(
            fn,
            (_f(3, 4, 2), _i(3, 4)),
            (_f(5, 4, 2), _i(5, 4)),
            D00,
            ("aten.logsumexp",),
            atol=1e-4,
        )


class TestMoreNN(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(13)

    def test_rms_norm(self):
        norm = torch.nn.RMSNorm(4, eps=1e-5)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
        norm_nw = torch.nn.RMSNorm([3, 4], elementwise_affine=False)

        def fn(x):
            return norm(x), norm_nw(x), torch.rms_norm(x, [4])

        for opset in (18, None):
            with self.subTest(opset=opset):
                _, opt = self.check(
                    Fn(fn, norm, norm_nw),
                    (_f(2, 3, 4),),
                    (_f(5, 3, 4),),
                    D0,
                    ("aten.rms_norm",),
                    opset=opset,
                )
                ops = {n.op_type for n in opt.graph.node}
                self.assertEqual("RMSNormalization" in ops, opset is None, msg=str(ops))
        h = torch.float16
        self.check(
            lambda x, w: torch.rms_norm(x, [4], w),
            (_f(3, 4).to(h), _f(4).to(h)),
            (_f(5, 4).to(h), _f(4).to(h)),
            ({0: DYN}, None),
            ("aten.rms_norm",),
            atol=2e-3,
        )

    def test_baddbmm(self):
        def fn(x, a, b):
            return (
                torch.baddbmm(x, a, b),
                torch.baddbmm(x, a, b, beta=0.5, alpha=2.0),
                torch.baddbmm(x[:1], a, b, beta=2),
                # beta=0 ignores the input, its nan too
                torch.baddbmm(torch.full_like(x, float("nan")), a, b, beta=0),
            )

        self.check(
            fn,
            (_f(2, 3, 5), _f(2, 3, 4), _f(2, 4, 5)),
            (_f(4, 3, 5), _f(4, 3, 4), _f(4, 4, 5)),
            ({0: torch.export.Dim("b")},) * 3,
            ("aten.baddbmm",),
        )


class TestMoreShapes(_AtenTestCase):
    def setUp(self):
        torch.manual_seed(14)

    def test_pad_modes(self):
        F = torch.nn.functional

        def fn(x):
            return (
                F.pad(x, (1, 2)),
                F.pad(x, (1, 0, 0, 2), value=-1.5),
                F.pad(x, (-1, 1)),
                F.pad(x, (2, 1, 1, 1), mode="reflect"),
                F.pad(x, (2, 1), mode="replicate"),
                F.pad(x, (1, 2, 1, 0), mode="circular"),
            )

        self.check(fn, (_f(2, 3, 4),), (_f(5, 4, 6),), ({0: DYN, 1: DYN, 2: DYN},), ("aten.pad",))

    def test_pad_ints_and_constant_pad_nd(self):
        self.check(
            lambda i, x: (
                torch.nn.functional.pad(i, (0, 1, 2, 0), value=7),
                aten.constant_pad_nd(x, [1, 1], 0.25),
                aten.constant_pad_nd(x, [0, 2, 1, 0]),
            ),
            (_i(3, 4), _f(3, 4)),
            (_i(5, 2), _f(5, 4)),
            ({0: DYN, 1: DYN}, {0: DYN}),
            ("aten.constant_pad_nd",),
        )

    def test_broadcast_tensors(self):
        def fn(x, y, z):
            a, b, c = torch.broadcast_tensors(x, y, z)
            return a + 0, b * 1, c - 0

        self.check(
            fn,
            (_f(3, 1), _f(1, 4), _f(4)),
            (_f(5, 1), _f(1, 6), _f(6)),
            ({0: DYN}, {1: torch.export.Dim("n")}, {0: torch.export.Dim("n")}),
            ("aten.broadcast_tensors",),
        )
        self.check(
            lambda x, y: torch.broadcast_tensors(x, y),
            (_f(3, 1), _i(1, 4)),
            aten_ops=("aten.broadcast_tensors",),
        )

    def test_slice_scatter_with_a_step(self):
        def fn(x, y, z):
            return (
                torch.slice_scatter(x, y, dim=1, start=0, step=2),
                torch.slice_scatter(x, y[:, :1], dim=-1, start=1, step=3),
                torch.slice_scatter(x, z, dim=0, start=-3, step=2),
            )

        self.check(
            fn,
            (_f(3, 4), _f(3, 2), _f(2, 4)),
            (_f(3, 4), _f(3, 2), _f(2, 4)),
            None,
            ("aten.slice_scatter",),
        )

        def fn_dyn(x, y):
            # x[:, ::2] += y with a dynamic number of columns
            z = x.clone()
            z[:, ::2] = y
            return z

        self.check(
            fn_dyn,
            (_f(3, 6), _f(3, 3)),
            (_f(4, 10), _f(4, 5)),
            (
                {0: torch.export.Dim("b"), 1: 2 * torch.export.Dim("h")},
                {0: torch.export.Dim("b"), 1: torch.export.Dim("h")},
            ),
        )


class TestWritesAtIndices(_AtenTestCase):
    """scatter, scatter_add, scatter_reduce, index_add, index_put (issue 19)."""

    def setUp(self):
        torch.manual_seed(15)

    def test_scatter_src_value_reduce(self):
        perm = torch.tensor([[2, 0, 1, 3], [1, 3, 0, 2]])
        perm2 = torch.tensor([[3, 1, 0, 2], [0, 2, 3, 1], [1, 0, 2, 3]])
        dup = torch.tensor([[0, 0, 1], [2, 2, 2]])
        dup2 = torch.tensor([[1, 1, 1], [0, 3, 0], [2, 2, 3]])

        def fn(x, p, d, src):
            return (
                torch.scatter(x, 1, p, src[:, :4]),
                # a larger src: torch reads its first elements
                torch.scatter(x, -1, p[:, :3], src),
                torch.scatter(x, 1, p, 2.5),
                torch.scatter(x, 1, d, src, reduce="add"),
                torch.scatter(x, 1, d, src, reduce="multiply"),
                torch.scatter_add(x, 1, d, src),
                x.clone().scatter_(1, p, -1.0),
                x.clone().scatter_add_(1, d, src),
            )

        self.check(
            fn,
            (_f(2, 4), perm, dup, _f(2, 5)),
            (_f(3, 4), perm2, dup2, _f(3, 5)),
            ({0: torch.export.Dim("b")},) * 4,
            ("aten.scatter", "aten.scatter_add", "aten.scatter_", "aten.scatter_add_"),
        )

    def test_scatter_reduce_every_reduction(self):
        index = torch.tensor([[0, 0, 2], [1, 3, 1]])
        index2 = torch.tensor([[3, 3, 3], [0, 1, 0], [2, 2, 1]])

        def fn(x, i, src, xi, ii, srci):
            res = []
            for reduce in ("sum", "prod", "mean", "amax", "amin"):
                for include_self in (True, False):
                    res.append(x.scatter_reduce(0, i, src, reduce, include_self=include_self))
            for reduce in ("sum", "mean", "amax"):
                res.append(xi.scatter_reduce(1, ii, srci, reduce, include_self=False))
            # integers: the mean rounds toward -inf
            res.append(xi.scatter_reduce(1, ii, srci, "mean"))
            return tuple(res)

        i20 = dict(low=-20, high=20)
        self.check(
            fn,
            (_f(4, 3), index.T.contiguous(), _f(3, 2), _i(2, 4), index, _i(2, 3, **i20)),
            (_f(4, 3), index.T.contiguous(), _f(3, 2), _i(2, 4), index, _i(2, 3, **i20)),
            None,
            ("aten.scatter_reduce",),
        )
        b = torch.export.Dim("b")
        self.check(
            lambda x, i, s: (x.scatter_reduce(1, i, s, "amax"), x.scatter_reduce(1, i, s, "sum")),
            (_f(2, 4), index, _f(2, 3)),
            (_f(3, 4), index2, _f(3, 3)),
            ({0: b}, {0: b}, {0: b}),
            ("aten.scatter_reduce",),
        )

    def test_index_add(self):
        def fn(x, i, src, b, bs):
            return (
                x.index_add(0, i, src),
                x.index_add(-1, i[:2], src[:2].T.contiguous()[: x.shape[0]], alpha=2.0),
                x.clone().index_add_(0, i, src, alpha=-1),
                b.index_add(1, i[:2], bs),
            )

        idx = torch.tensor([0, 2, 0, 1])  # duplicates accumulate
        self.check(
            fn,
            (_f(3, 5), idx, _f(4, 5), _b(3, 5), _b(3, 2)),
            (_f(3, 5), torch.tensor([2, 2, 1, 0]), _f(4, 5), _b(3, 5), _b(3, 2)),
            None,
            ("aten.index_add", "aten.index_add_"),
        )
        self.check(
            lambda x, i, src: x.index_add(1, i, src),
            (_f(3, 5), idx, _f(3, 4)),
            (_f(6, 5), torch.tensor([4, 4, 4, 0, 1, 2]), _f(6, 6)),
            (
                {0: torch.export.Dim("b")},
                {0: torch.export.Dim("n")},
                {0: torch.export.Dim("b"), 1: torch.export.Dim("n")},
            ),
            ("aten.index_add",),
        )

    def test_index_fill(self):
        # torch>=2.15 decomposes x[:, j] = scalar into index_fill
        def fn(x, j, v):
            return (
                torch.index_fill(x, 1, j, 7.0),
                torch.index_fill(x, 0, j[:1], v),
                torch.index_fill(x.to(torch.int64), -1, j, 2),
            )

        self.check(
            fn,
            (_f(4, 5), torch.tensor([1, 3, -2]), torch.tensor(-1.5)),
            (_f(6, 5), torch.tensor([0, 4, 1]), torch.tensor(2.5)),
            ({0: DYN}, None, None),
            ("aten.index_fill",),
        )

    def test_index_put(self):
        def fn(x, i, j, v, m):
            a = x.clone()
            a[i] = v[0]  # a row of values broadcast on the selected rows
            b = x.clone()
            b[:, j] = 7.0
            c = x.clone()
            c[i[:2], j[:2]] = v[0, :2]
            d = x.clone()
            d[m] = -1.0  # boolean mask
            e = x.clone()
            e.index_put_((i,), v[:1], accumulate=True)  # duplicates accumulate
            g = x.clone()
            g[:, m[0]] = 3.0  # a mask on the second dimension
            h = x.clone()
            h[i[:1], j[:1]] = v[:1, :1, None].squeeze(-1)  # values with a leading 1
            return a, b, c, d, e, g, h

        self.check(
            fn,
            (_f(4, 5), torch.tensor([0, -1, 0]), torch.tensor([1, 3, -2]), _f(2, 5), _b(4, 5)),
            (_f(6, 5), torch.tensor([5, 2, 2]), torch.tensor([0, 4, 1]), _f(2, 5), _b(6, 5)),
            ({0: DYN}, None, None, None, {0: DYN}),
            ("aten.index_put_",),
        )

        def fn3(x, i, j, v):
            a = x.clone()
            a[i, :, j] = v  # indexed dimensions not adjacent: they go first
            b = x.clone()
            b[:, i] = v[:, :1]
            c = x.clone()
            c[:, i, j] = v[:1, :2]  # adjacent after a slice: they stay in place
            return a, b, c

        self.check(
            fn3,
            (_f(3, 4, 5), torch.tensor([0, 2]), torch.tensor([1, -1]), _f(2, 4)),
            (_f(6, 4, 5), torch.tensor([3, 1]), torch.tensor([0, 4]), _f(2, 4)),
            ({0: DYN}, None, None, None),
            ("aten.index_put_",),
        )

    def test_inverse_permutation_of_moe_routing(self):
        # transformers' grouped experts: inv_perm[perm] = arange(len(perm))
        def fn(ids):
            _, perm = torch.sort(ids)
            inv = torch.empty_like(perm)
            inv[perm] = torch.arange(perm.size(0))
            return perm, inv

        ids = torch.tensor([3, 1, 2, 0, 1, 3])
        self.check(
            fn,
            (ids,),
            (torch.tensor([2, 2, 0, 1, 3, 0, 1, 1]),),
            ({0: DYN},),
            ("aten.sort", "aten.index_put_"),
        )


class TestDataDependentIndices(_AtenTestCase):
    """Boolean masks, nonzero and where(condition): shapes known at run time only."""

    def setUp(self):
        torch.manual_seed(16)

    def test_boolean_mask_indexing(self):
        def fn(x, m, r):
            return x[m], x[:, r], x[m[:, 0]]

        m = torch.tensor([[True, False, True, False], [False, False, True, True], [True] * 4])
        m2 = torch.tensor([[False] * 4, [True, True, False, True]])
        self.check(
            fn,
            (_f(3, 4, 2), m, torch.tensor([True, False, False, True])),
            (_f(2, 4, 2), m2, torch.tensor([False, True, True, True])),
            ({0: DYN}, {0: DYN}, None),
            ("aten.index",),
        )

    def test_nonzero_and_where_condition(self):
        def fn(x):
            rows, cols = torch.where(x > 0)
            return torch.nonzero(x > 0.5), rows, cols, torch.nonzero(x[0])

        self.check(fn, (_f(3, 4),), (_f(5, 4),), D0, ("aten.nonzero",))

    def test_split_with_sizes_known_at_run_time(self):
        # transformers 4.57's granitemoe: the tokens of each expert, counted at run time
        def fn(x, counts):
            sizes = counts.tolist()
            for s in sizes:
                torch._check(s >= 0)
            torch._check(sum(sizes) == x.shape[0])
            parts = x.split(sizes, dim=0)
            return tuple(p.sum(0) for p in parts)

        self.check(
            fn,
            (_f(6, 3), torch.tensor([2, 0, 4])),
            (_f(6, 3), torch.tensor([1, 5, 0])),
            None,
            ("aten.split_with_sizes",),
        )


class TestErrors(ExtTestCase):
    def test_unsupported_op_names_op_source_and_shapes(self):
        class Model(torch.nn.Module):
            def forward(self, x):
                return torch.count_nonzero(x > 0, dim=1)

        self.assertNotIn(aten.count_nonzero.default, TRANSLATIONS)
        self.assertNotIn(aten.count_nonzero, TRANSLATIONS)
        ep = torch.export.export(Model(), (_f(3, 4),), dynamic_shapes=D0)
        with self.assertRaises(UnsupportedATenOpError) as cm:
            translate_program(ep)
        msg = str(cm.exception)
        line = inspect.getsourcelines(Model.forward)[1] + 1
        self.assertIn("aten.count_nonzero.default", msg)
        self.assertIn(f"{__file__}:{line} in forward", msg)
        self.assertIn("bool[", msg)  # the argument of nonzero: x > 0, dynamic batch
        self.assertIn("x4]", msg)
        self.assertEqual(cm.exception.target, "aten.count_nonzero.default")
        self.assertIsInstance(cm.exception, NotImplementedError)

    def test_dropout_in_training_mode_raises(self):
        class Model(torch.nn.Module):
            def forward(self, x):
                return torch.nn.functional.dropout(x, 0.5, training=True)

        ep = torch.export.export(Model(), (_f(3, 4),))
        with self.assertRaises(TranslationError) as cm:
            translate_program(ep)
        self.assertIn("aten.dropout", str(cm.exception))
        self.assertIn("training", str(cm.exception))
        self.assertNotIsInstance(cm.exception, UnsupportedATenOpError)

    def test_supported_ops_lists_the_table(self):
        ops = supported_ops()
        self.assertEqual(ops, sorted(ops))
        for name in ["aten.add", "aten.linear.default", "aten.linear", "floordiv", "sym_max"]:
            self.assertIn(name, ops)
        self.assertIn("aten.scaled_dot_product_attention", ops)
        self.assertNotIn("linear.default", ops)
        self.assertNotIn("aten.count_nonzero", ops)
        for name in ["aten.topk.default", "aten.repeat_interleave.self_int", "aten.index_put_"]:
            self.assertIn(name, ops)
        self.assertIn("transformers.grouped_mm_fallback.default", ops)


if __name__ == "__main__":
    unittest.main(verbosity=2)
