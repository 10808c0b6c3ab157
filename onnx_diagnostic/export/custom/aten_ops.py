"""
Translations of ATen operators (and of the Python operators torch.export leaves on
symbolic integers) into ONNX, registered in :data:`TRANSLATIONS`.

Each translation is ``fct(g, node, *args, **kwargs)``: ``g`` is the
:class:`~onnx_diagnostic.export.custom.builder.GraphBuilder`, ``node`` the fx node (its
``meta["val"]`` gives the dtype and shape torch computed), the arguments are those of the
ATen call where every fx node was replaced by its ONNX value (tensors, 0-d int64 values for
symbolic integers) or by a Python value (static integers). It returns an
:class:`onnx_ir.Value`, a tuple of them, a Python value, or None (assertions).

>>> import torch
>>> from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS
>>> torch.ops.aten.linear.default in TRANSLATIONS
True
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from .builder import GraphBuilder, ir_dtype

__all__ = ["TRANSLATIONS", "register", "supported_ops"]

aten = torch.ops.aten

#: target (OpOverload, OpOverloadPacket or Python function) -> translation
TRANSLATIONS: dict[Any, Callable[..., Any]] = {}

_INT64_MAX = 2**63 - 1


def register(*targets: Any) -> Callable:
    """Registers the decorated function as the translation of ``targets``."""

    def deco(fct: Callable) -> Callable:
        for t in targets:
            TRANSLATIONS[t] = fct
        return fct

    return deco


def supported_ops() -> list[str]:
    """
    The sorted names of the supported targets: ATen overloads and their packets
    (``aten.linear.default``, ``aten.linear``), Python functions by name (``floordiv``).

    >>> "aten.scaled_dot_product_attention" in supported_ops()
    True
    """
    names = set()
    for t in TRANSLATIONS:
        if isinstance(t, torch._ops.OpOverload):
            # the overload and its packet: aten.linear.default, aten.linear
            names |= {str(t), str(t.overloadpacket)}
        elif isinstance(t, torch._ops.OpOverloadPacket):
            names.add(str(t))
        else:
            names.add(getattr(t, "__name__", None) or str(t))
    return sorted(names)


# helpers


def _meta(a: Any) -> Any:
    return a.meta.get("val") if isinstance(a, torch.fx.Node) else a


def _out(node: torch.fx.Node) -> Any:
    return node.meta.get("val")


def _out_dtype(node: torch.fx.Node) -> ir.DataType:
    val = _out(node)
    if isinstance(val, (list, tuple)):
        val = val[0]
    if not isinstance(val, torch.Tensor):
        raise TypeError(f"node {node.name!r} has no tensor metadata")
    return ir_dtype(val.dtype)


def _rank(a: Any) -> int:
    val = _meta(a)
    if isinstance(val, torch.Tensor):
        return val.dim()
    return 0


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _meta_arg(node: torch.fx.Node, i: int, name: str | None = None) -> Any:
    if i < len(node.args):
        return _meta(node.args[i])
    if name is not None and name in node.kwargs:
        return _meta(node.kwargs[name])
    return None


def _as_meta_tensor(x: Any) -> Any:
    """A meta tensor with the dtype and rank of x, or a Python scalar of its kind."""
    if isinstance(x, torch.Tensor):
        return torch.empty((1,) * x.dim(), dtype=x.dtype, device="meta")
    if isinstance(x, torch.SymInt):
        return 1
    if isinstance(x, torch.SymFloat):
        return 1.0
    if isinstance(x, torch.SymBool):
        return True
    return x


def _promoted(node: torch.fx.Node, n: int = 2) -> ir.DataType:
    """The dtype torch computes the first ``n`` arguments in."""
    metas = [_as_meta_tensor(_meta_arg(node, i)) for i in range(min(n, len(node.args)))]
    tensors = [m for m in metas if isinstance(m, torch.Tensor)]
    if not tensors:
        return _out_dtype(node)
    res = tensors[0]
    if len(metas) == 1:
        return ir_dtype(res.dtype)
    dtype = torch.result_type(metas[0], metas[1])
    for m in metas[2:]:
        dtype = torch.promote_types(dtype, torch.result_type(m, m))
    return ir_dtype(dtype)


def _tensor(g: GraphBuilder, x: Any, dtype: ir.DataType) -> ir.Value:
    """x as a value of type dtype (a Python scalar becomes a constant)."""
    if isinstance(x, ir.Value):
        return g.cast(x, dtype)
    if isinstance(x, bool) and dtype != ir.DataType.BOOL:
        x = int(x)
    return g.const(x, dtype)


def _dims(g: GraphBuilder, sizes: Sequence[Any]) -> ir.Value:
    return g.shape_tensor([s for s in sizes])


def _static_shape(node: torch.fx.Node) -> list[int] | None:
    val = _out(node)
    if not isinstance(val, torch.Tensor):
        return None
    dims = []
    for d in val.shape:
        if isinstance(d, int):
            dims.append(d)
        elif isinstance(d, torch.SymInt) and d.node.expr.is_number:
            dims.append(int(d.node.expr))
        else:
            return None
    return dims


# assertions and identities


@register(
    aten._assert_tensor_metadata.default,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
    aten.sym_constrain_range.default,
    aten._assert_async.msg,
    aten._assert_async.default,
    aten._check_is_size if hasattr(aten, "_check_is_size") else aten._assert_scalar.default,
    torch._check,
    torch._check_is_size,
)
def _skip(g: GraphBuilder, node: torch.fx.Node, *args: Any, **kwargs: Any) -> None:
    return None


@register(
    aten.clone.default,
    aten.contiguous.default,
    aten.alias.default,
    aten.detach.default,
    aten.detach_.default,
    aten.lift_fresh_copy.default,
    aten.lift_fresh.default,
)
def _identity(g: GraphBuilder, node: torch.fx.Node, x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


@register(aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default)
def _dropout(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, p: float, train: bool) -> Any:
    if train and p > 0:
        raise NotImplementedError("dropout in training mode, call model.eval() before exporting")
    return x


@register(
    aten.to.dtype,
    aten.to.device,
    aten.to.dtype_layout,
    aten.to.other,
    aten._to_copy.default,
    aten.type_as.default,
)
def _to(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, *args: Any, **kwargs: Any) -> Any:
    return g.cast(x, _out_dtype(node))


# elementwise


def _binary(op_type: str) -> Callable:
    def fct(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any, alpha: Any = 1) -> ir.Value:
        dtype = _promoted(node)
        ta, tb = _tensor(g, a, dtype), _tensor(g, b, dtype)
        if alpha != 1:
            tb = g.op("Mul", tb, _tensor(g, alpha, dtype))
        return g.cast(g.op(op_type, ta, tb), _out_dtype(node))

    return fct


register(aten.add, aten.add_)(_binary("Add"))
register(aten.sub, aten.sub_, aten.rsub)(_binary("Sub"))
register(aten.mul, aten.mul_)(_binary("Mul"))


@register(aten.minimum, aten.min.other, aten.maximum, aten.max.other)
def _min_max(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any) -> ir.Value:
    is_max = node.target.overloadpacket in (aten.maximum, aten.max)
    dtype = _promoted(node)
    ta, tb = _tensor(g, a, dtype), _tensor(g, b, dtype)
    if dtype == ir.DataType.BOOL:
        # onnx Max/Min have no boolean version
        return g.op("Or" if is_max else "And", ta, tb)
    return g.cast(g.op("Max" if is_max else "Min", ta, tb), _out_dtype(node))


def _where_op(g: GraphBuilder, cond: ir.Value, a: ir.Value, b: ir.Value, dtype: ir.DataType):
    if dtype == ir.DataType.BOOL:
        # onnxruntime has no boolean Where: through uint8
        a, b = g.cast(a, ir.DataType.UINT8), g.cast(b, ir.DataType.UINT8)
        return g.cast(g.op("Where", cond, a, b), ir.DataType.BOOL)
    return g.op("Where", cond, a, b)


@register(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any, alpha: Any = 1) -> ir.Value:
    dtype = _promoted(node)
    ta, tb = _tensor(g, a, dtype), _tensor(g, b, dtype)
    if alpha != 1:
        ta = g.op("Mul", ta, _tensor(g, alpha, dtype))
    return g.op("Sub", tb, ta)


@register(aten.div, aten.div_)
def _div(
    g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any, rounding_mode: str | None = None
) -> ir.Value:
    out = _out_dtype(node)
    dtype = out if rounding_mode is None else _promoted(node)
    ta, tb = _tensor(g, a, dtype), _tensor(g, b, dtype)
    if rounding_mode is None:
        return g.op("Div", ta, tb)
    if dtype.is_floating_point():
        q = g.op("Div", ta, tb)
        if rounding_mode == "floor":
            return g.op("Floor", q)
        zero = g.const(0, dtype)
        return g.op("Where", g.op("Less", q, zero), g.op("Ceil", q), g.op("Floor", q))
    if rounding_mode == "trunc":
        return g.op("Div", ta, tb)
    # floor division of integers: (a - a mod b) / b, mod with the sign of b
    return g.op("Div", g.op("Sub", ta, g.op("Mod", ta, tb, fmod=0)), tb)


@register(aten.floor_divide)
def _floor_divide(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any) -> ir.Value:
    dtype = _promoted(node)
    ta, tb = _tensor(g, a, dtype), _tensor(g, b, dtype)
    if dtype.is_floating_point():
        return g.op("Floor", g.op("Div", ta, tb))
    return g.op("Div", g.op("Sub", ta, g.op("Mod", ta, tb, fmod=0)), tb)


@register(aten.remainder, aten.fmod)
def _remainder(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any) -> ir.Value:
    dtype = _promoted(node)
    ta, tb = _tensor(g, a, dtype), _tensor(g, b, dtype)
    fmod = int(node.target.overloadpacket is aten.fmod)
    if dtype.is_floating_point():
        if fmod:
            return g.op("Mod", ta, tb, fmod=1)
        return g.op("Sub", ta, g.op("Mul", g.op("Floor", g.op("Div", ta, tb)), tb))
    return g.op("Mod", ta, tb, fmod=fmod)


@register(aten.pow)
def _pow(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any) -> ir.Value:
    dtype = _out_dtype(node)
    return g.op("Pow", _tensor(g, a, dtype), _tensor(g, b, dtype))


def _compare(op_type: str, negate: bool = False) -> Callable:
    def fct(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any) -> ir.Value:
        dtype = _promoted(node)
        res = g.op(op_type, _tensor(g, a, dtype), _tensor(g, b, dtype))
        return g.op("Not", res) if negate else res

    return fct


register(aten.eq)(_compare("Equal"))
register(aten.ne)(_compare("Equal", negate=True))
register(aten.lt)(_compare("Less"))
register(aten.le)(_compare("LessOrEqual"))
register(aten.gt)(_compare("Greater"))
register(aten.ge)(_compare("GreaterOrEqual"))


def _logical(bool_op: str, int_op: str | None) -> Callable:
    def fct(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any) -> ir.Value:
        dtype = _promoted(node)
        if dtype == ir.DataType.BOOL or int_op is None:
            return g.op(bool_op, _tensor(g, a, ir.DataType.BOOL), _tensor(g, b, ir.DataType.BOOL))
        return g.op(int_op, _tensor(g, a, dtype), _tensor(g, b, dtype))

    return fct


register(aten.__and__, aten.bitwise_and, aten.bitwise_and_)(_logical("And", "BitwiseAnd"))
register(aten.__or__, aten.bitwise_or, aten.bitwise_or_)(_logical("Or", "BitwiseOr"))
register(aten.__xor__, aten.bitwise_xor)(_logical("Xor", "BitwiseXor"))
register(aten.logical_and)(_logical("And", None))
register(aten.logical_or)(_logical("Or", None))
register(aten.logical_xor)(_logical("Xor", None))


@register(aten.bitwise_not, aten.logical_not)
def _not(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    if _out_dtype(node) == ir.DataType.BOOL:
        return g.op("Not", g.cast(x, ir.DataType.BOOL))
    return g.op("BitwiseNot", x)


def _unary(op_type: str) -> Callable:
    def fct(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
        return g.op(op_type, g.cast(x, _out_dtype(node)))

    return fct


for _op, _onnx in [
    ("neg", "Neg"),
    ("abs", "Abs"),
    ("cos", "Cos"),
    ("sin", "Sin"),
    ("exp", "Exp"),
    ("log", "Log"),
    ("sqrt", "Sqrt"),
    ("reciprocal", "Reciprocal"),
    ("tanh", "Tanh"),
    ("sigmoid", "Sigmoid"),
    ("relu", "Relu"),
    ("erf", "Erf"),
    ("tan", "Tan"),
    ("atan", "Atan"),
]:
    if hasattr(aten, _op):
        register(getattr(aten, _op))(_unary(_onnx))
    if hasattr(aten, _op + "_"):
        register(getattr(aten, _op + "_"))(_unary(_onnx))


@register(aten.isnan)
def _isnan(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    if torch.is_floating_point(_meta(node.args[0])):
        return g.op("IsNaN", x)
    # integers and booleans are never NaN
    return g.op("ConstantOfShape", g.op("Shape", x), value=_fill_value(False, ir.DataType.BOOL))


@register(aten.floor, aten.floor_, aten.ceil, aten.ceil_)
def _floor_ceil(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    if not torch.is_floating_point(_meta(node.args[0])):
        return x  # torch returns integers unchanged, onnx has no integer Floor/Ceil
    return g.op("Floor" if node.target.overloadpacket in (aten.floor, aten.floor_) else "Ceil", x)


@register(aten.sign, aten.sign_)
def _sign(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    res = g.op("Sign", x)
    if torch.is_floating_point(_meta(node.args[0])):
        # torch.sign(nan) is 0, onnxruntime's Sign returns nan
        res = g.op("Where", g.op("IsNaN", x), g.const(0, _out_dtype(node)), res)
    return res


@register(aten.rsqrt)
def _rsqrt(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    return g.op("Reciprocal", g.op("Sqrt", g.cast(x, _out_dtype(node))))


@register(aten.silu, aten.silu_)
def _silu(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    return g.op("Mul", x, g.op("Sigmoid", x))


@register(aten.gelu, aten.gelu_)
def _gelu(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, approximate: str = "none") -> ir.Value:
    if g.opset >= 20:
        return g.op("Gelu", x, approximate=approximate)
    dtype = _out_dtype(node)
    if approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Add", x, g.op("Mul", x3, g.const(0.044715, dtype)))
        t = g.op("Tanh", g.op("Mul", inner, g.const(math.sqrt(2 / math.pi), dtype)))
        return g.op("Mul", g.op("Mul", x, g.const(0.5, dtype)), g.op("Add", t, g.const(1, dtype)))
    erf = g.op("Erf", g.op("Mul", x, g.const(1 / math.sqrt(2), dtype)))
    return g.op("Mul", g.op("Mul", x, g.const(0.5, dtype)), g.op("Add", erf, g.const(1, dtype)))


@register(aten.clamp, aten.clamp_, aten.clip)
def _clamp(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, min: Any = None, max: Any = None):
    dtype = _out_dtype(node)
    lo = None if min is None else _tensor(g, min, dtype)
    hi = None if max is None else _tensor(g, max, dtype)
    res = g.cast(x, dtype)
    bounds = [_meta_arg(node, 1, "min"), _meta_arg(node, 2, "max")]
    if any(isinstance(b, torch.Tensor) and b.dim() > 0 for b in bounds):
        # Clip only takes scalar bounds, clamp.Tensor broadcasts them
        res = res if lo is None else g.op("Max", res, lo)
        return res if hi is None else g.op("Min", res, hi)
    if hi is None:
        return g.op("Clip", res, lo)
    return g.op("Clip", res, lo, hi)


@register(aten.clamp_min)
def _clamp_min(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, m: Any) -> ir.Value:
    dtype = _out_dtype(node)
    return g.op("Max", g.cast(x, dtype), _tensor(g, m, dtype))


@register(aten.clamp_max)
def _clamp_max(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, m: Any) -> ir.Value:
    dtype = _out_dtype(node)
    return g.op("Min", g.cast(x, dtype), _tensor(g, m, dtype))


@register(aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar)
def _where(g: GraphBuilder, node: torch.fx.Node, cond: ir.Value, a: Any, b: Any) -> ir.Value:
    dtype = _out_dtype(node)
    cond = g.cast(cond, ir.DataType.BOOL)
    return _where_op(g, cond, _tensor(g, a, dtype), _tensor(g, b, dtype), dtype)


@register(aten.masked_fill, aten.masked_fill_)
def _masked_fill(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, mask: ir.Value, value: Any
) -> ir.Value:
    dtype = _out_dtype(node)
    return _where_op(g, g.cast(mask, ir.DataType.BOOL), _tensor(g, value, dtype), x, dtype)


# shapes


@register(aten.view, aten.reshape, aten._unsafe_view)
def _reshape(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, shape: Sequence[Any]) -> ir.Value:
    static = _static_shape(node)
    if static is not None:
        if 0 in static:
            return g.op("Reshape", x, g.ints(static), allowzero=1)
        return g.op("Reshape", x, g.ints(static))
    val = _out(node)
    dims = []
    for i, s in enumerate(shape):
        d = val.shape[i]
        if isinstance(d, int) or (isinstance(d, torch.SymInt) and d.node.expr.is_number):
            dims.append(int(d))
        else:
            dims.append(s)
    return g.op("Reshape", x, _dims(g, dims))


@register(aten.view_as, aten.reshape_as)
def _reshape_as(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, other: ir.Value) -> ir.Value:
    return g.op("Reshape", x, g.op("Shape", other))


@register(aten.transpose.int, aten.swapaxes, aten.swapdims)
def _transpose(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, d0: int, d1: int) -> ir.Value:
    rank = _rank(node.args[0])
    perm = list(range(rank))
    d0, d1 = _norm_axis(d0, rank), _norm_axis(d1, rank)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    if perm == list(range(rank)):
        return x
    return g.op("Transpose", x, perm=perm)


@register(aten.permute)
def _permute(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dims: Sequence[int]) -> ir.Value:
    rank = _rank(node.args[0])
    perm = [_norm_axis(d, rank) for d in dims]
    if perm == list(range(rank)):
        return x
    return g.op("Transpose", x, perm=perm)


@register(aten.t, aten.numpy_T)
def _t(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    rank = _rank(node.args[0])
    if rank < 2:
        return x
    return g.op("Transpose", x, perm=list(reversed(range(rank))))


@register(aten.mT)
def _mt(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    rank = _rank(node.args[0])
    return g.op("Transpose", x, perm=[*range(rank - 2), rank - 1, rank - 2])


@register(aten.unsqueeze, aten.unsqueeze_)
def _unsqueeze(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int) -> ir.Value:
    rank = _rank(node.args[0])
    return g.op("Unsqueeze", x, g.ints([_norm_axis(dim, rank + 1)]))


@register(aten.squeeze)
def _squeeze(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: Any = None) -> ir.Value:
    inp = _meta(node.args[0])
    rank = inp.dim()
    if dim is None:
        dims = list(range(rank))
    elif isinstance(dim, int):
        dims = [dim]
    else:
        dims = list(dim)
    axes = [
        _norm_axis(d, rank)
        for d in dims
        if rank > 0
        and isinstance(inp.shape[_norm_axis(d, rank)], int)
        and inp.shape[_norm_axis(d, rank)] == 1
    ]
    if not axes:
        if _rank(node) != rank:
            raise NotImplementedError("squeeze of a dynamic dimension")
        return x
    return g.op("Squeeze", x, g.ints(axes))


@register(aten.expand)
def _expand(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, sizes: Sequence[Any], implicit: bool = False
) -> ir.Value:
    static = _static_shape(node)
    if static is not None:
        if list(_meta(node.args[0]).shape) == static:
            return x
        return g.op("Expand", x, g.ints(static))
    dims = [1 if (isinstance(s, int) and s == -1) else s for s in sizes]
    return g.op("Expand", x, _dims(g, dims))


@register(aten.expand_as)
def _expand_as(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, other: ir.Value) -> ir.Value:
    return g.op("Expand", x, g.op("Shape", other))


@register(aten.flatten.using_ints)
def _flatten(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, start: int = 0, end: int = -1
) -> ir.Value:
    rank = _rank(node.args[0])
    if rank == 0:
        return g.op("Reshape", x, g.ints([1]))
    start, end = _norm_axis(start, rank), _norm_axis(end, rank)
    dims = [g.size(x, i) for i in range(start)] + [-1]
    dims += [g.size(x, i) for i in range(end + 1, rank)]
    return g.op("Reshape", x, _dims(g, dims))


def _is_full_slice(start: Any, end: Any, step: Any) -> bool:
    return (
        (start is None or (isinstance(start, int) and start == 0))
        and (end is None or (isinstance(end, int) and end >= _INT64_MAX))
        and (step is None or step == 1)
    )


@register(aten.slice.Tensor)
def _slice(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: int = 0,
    start: Any = None,
    end: Any = None,
    step: Any = 1,
) -> ir.Value:
    if _is_full_slice(start, end, step):
        return x
    inp = _meta(node.args[0])
    if (
        isinstance(end, int)
        and (start is None or start == 0)
        and step == 1
        and isinstance(inp.shape[dim], int)
        and end >= inp.shape[dim]
    ):
        return x
    starts = g.as_1d(0 if start is None else start)
    ends = g.as_1d(_INT64_MAX if end is None else end)
    return g.op("Slice", x, starts, ends, g.ints([dim]), g.ints([1 if step is None else step]))


@register(aten.narrow)
def _narrow(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, start: Any, length: Any
) -> ir.Value:
    if isinstance(start, int) and start < 0:
        # a negative start counts from the end: start + length may be 0
        start = g.op(
            "Add", g.scalar(g.size(x, _norm_axis(dim, _rank(node.args[0])))), g.scalar(start)
        )
    if isinstance(start, int) and isinstance(length, int):
        end: Any = start + length
    else:
        end = g.op("Add", g.scalar(start), g.scalar(length))
    return g.op("Slice", x, g.as_1d(start), g.as_1d(end), g.ints([dim]))


@register(aten.select.int)
def _select(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, index: Any) -> ir.Value:
    return g.op("Gather", x, g.scalar(index), axis=dim)


@register(aten.cat)
def _cat(g: GraphBuilder, node: torch.fx.Node, tensors: Sequence[ir.Value], dim: int = 0):
    dtype = _out_dtype(node)
    rank = _rank(node)
    metas = [_meta(t) for t in node.args[0]]
    keep = [
        g.cast(t, dtype)
        for t, m in zip(tensors, metas)
        # torch.cat ignores 1-D empty tensors whatever the rank of the others
        if not (m.dim() == 1 and isinstance(m.shape[0], int) and m.shape[0] == 0 and rank > 1)
    ]
    if len(keep) == 1:
        return keep[0]
    return g.op("Concat", *keep, axis=_norm_axis(dim, rank))


@register(aten.stack)
def _stack(g: GraphBuilder, node: torch.fx.Node, tensors: Sequence[ir.Value], dim: int = 0):
    rank = _rank(node)
    axis = g.ints([_norm_axis(dim, rank)])
    dtype = _out_dtype(node)
    parts = [g.op("Unsqueeze", g.cast(t, dtype), axis) for t in tensors]
    return g.op("Concat", *parts, axis=_norm_axis(dim, rank))


def _split_sizes(node: torch.fx.Node, dim: int) -> list[int]:
    sizes = []
    for v in _out(node):
        d = v.shape[dim]
        if isinstance(d, torch.SymInt) and d.node.expr.is_number:
            d = int(d.node.expr)
        if not isinstance(d, int):
            raise NotImplementedError("split along a dynamic dimension into dynamic pieces")
        sizes.append(d)
    return sizes


@register(aten.split.Tensor, aten.split_with_sizes, aten.chunk, aten.tensor_split.sections)
def _split(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, size: Any, dim: int = 0):
    rank = _rank(node.args[0])
    dim = _norm_axis(dim, rank)
    sizes = _split_sizes(node, dim)
    if len(sizes) == 1:
        return (x,)
    return g.op("Split", x, g.ints(sizes), axis=dim, outputs=len(sizes))


@register(aten.unbind.int)
def _unbind(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int = 0):
    rank = _rank(node.args[0])
    dim = _norm_axis(dim, rank)
    n = len(_out(node))
    axis = g.ints([dim])
    if n == 1:
        return (g.op("Squeeze", x, axis),)
    parts = g.op("Split", x, g.ints([1] * n), axis=dim, outputs=n)
    return tuple(g.op("Squeeze", p, axis) for p in parts)


@register(aten.repeat)
def _repeat(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, repeats: Sequence[Any]):
    rank = _rank(node.args[0])
    if len(repeats) > rank:
        x = g.op("Unsqueeze", x, g.ints(list(range(len(repeats) - rank))))
    return g.op("Tile", x, _dims(g, repeats))


@register(aten.index.Tensor, aten._unsafe_index.Tensor)
def _index(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, indices: Sequence[Any]):
    positions = [i for i, idx in enumerate(indices) if idx is not None]
    metas = [_meta(a) for a in node.args[1]]
    for p in positions:
        if metas[p].dtype == torch.bool:
            raise NotImplementedError("indexing with a boolean mask (data-dependent shape)")
    idx = [g.cast(indices[p], ir.DataType.INT64) for p in positions]
    if len(positions) == 1:
        return g.op("Gather", x, idx[0], axis=positions[0])
    rank = _rank(node.args[0])
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    others = [i for i in range(rank) if i not in positions]
    if positions != list(range(len(positions))):
        x = g.op("Transpose", x, perm=positions + others)
    # broadcast every index to the common shape, stack them on a last axis, GatherND
    total = idx[0]
    for t in idx[1:]:
        total = g.op("Add", total, t)
    shape = g.op("Shape", total)
    last = g.ints([-1])
    stacked = g.op(
        "Concat", *[g.op("Unsqueeze", g.op("Expand", t, shape), last) for t in idx], axis=-1
    )
    res = g.op("GatherND", x, stacked)
    first = positions[0]
    if adjacent and first > 0:
        b = max(metas[p].dim() for p in positions)
        perm = list(range(b, b + first)) + list(range(b)) + list(range(b + first, _rank(node)))
        res = g.op("Transpose", res, perm=perm)
    return res


@register(aten.slice_scatter.default)
def _slice_scatter(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    src: ir.Value,
    dim: int = 0,
    start: Any = None,
    end: Any = None,
    step: Any = 1,
) -> ir.Value:
    if step not in (None, 1):
        raise NotImplementedError("slice_scatter with a step != 1")
    rank = _rank(node.args[0])
    dim = _norm_axis(dim, rank)
    axis = g.ints([dim])
    parts = []
    if start not in (None, 0):
        parts.append(g.op("Slice", x, g.ints([0]), g.as_1d(start), axis))
    parts.append(g.cast(src, _out_dtype(node)))
    if end is not None and not (isinstance(end, int) and end >= _INT64_MAX):
        parts.append(g.op("Slice", x, g.as_1d(end), g.ints([_INT64_MAX]), axis))
    return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=dim)


@register(aten.select_scatter.default)
def _select_scatter(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, src: ir.Value, dim: int, index: Any
) -> ir.Value:
    rank = _rank(node.args[0])
    dim = _norm_axis(dim, rank)
    axis = g.ints([dim])
    if not isinstance(index, int):
        raise NotImplementedError("select_scatter with a dynamic index")
    parts = []
    if index != 0:
        parts.append(g.op("Slice", x, g.ints([0]), g.ints([index]), axis))
    parts.append(g.op("Unsqueeze", g.cast(src, _out_dtype(node)), axis))
    if index != -1:
        parts.append(g.op("Slice", x, g.ints([index + 1]), g.ints([_INT64_MAX]), axis))
    return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=dim)


@register(aten.index_select)
def _index_select(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, index: ir.Value):
    return g.op("Gather", x, index, axis=dim)


@register(aten.gather)
def _gather(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, index: ir.Value, **kw: Any
):
    return g.op("GatherElements", x, index, axis=dim)


@register(aten.embedding)
def _embedding(g: GraphBuilder, node: torch.fx.Node, weight: ir.Value, ids: ir.Value, *a: Any):
    return g.op("Gather", weight, ids, axis=0)


# reductions


def _axes_arg(dims: Any, rank: int) -> list[int]:
    if dims is None:
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return [_norm_axis(d, rank) for d in dims] if len(dims) else list(range(rank))


def _reduce(op_type: str) -> Callable:
    def fct(
        g: GraphBuilder,
        node: torch.fx.Node,
        x: ir.Value,
        dims: Any = None,
        keepdim: bool = False,
        dtype: Any = None,
    ) -> ir.Value:
        rank = _rank(node.args[0])
        x = g.cast(x, _out_dtype(node)) if op_type != "ReduceMax" or dtype else x
        if rank == 0:
            return x
        return g.op(op_type, x, g.ints(_axes_arg(dims, rank)), keepdims=int(bool(keepdim)))

    return fct


register(aten.sum.dim_IntList, aten.sum.default)(_reduce("ReduceSum"))
register(aten.mean.dim, aten.mean.default)(_reduce("ReduceMean"))
register(aten.amax)(_reduce("ReduceMax"))
register(aten.amin)(_reduce("ReduceMin"))
register(aten.prod.dim_int, aten.prod.default)(_reduce("ReduceProd"))


@register(aten.max.default, aten.min.default)
def _max_all(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    op_type = "ReduceMax" if node.target is aten.max.default else "ReduceMin"
    if _rank(node.args[0]) == 0:
        return x
    return g.op(op_type, x, keepdims=0)


@register(aten.max.dim, aten.min.dim)
def _max_dim(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, keepdim: bool = False):
    is_max = node.target is aten.max.dim
    values = g.op("ReduceMax" if is_max else "ReduceMin", x, g.ints([dim]), keepdims=int(keepdim))
    indices = g.op("ArgMax" if is_max else "ArgMin", x, axis=dim, keepdims=int(keepdim))
    return values, indices


@register(aten.argmax, aten.argmin)
def _argmax(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: Any = None, keepdim=False):
    op_type = "ArgMax" if node.target.overloadpacket is aten.argmax else "ArgMin"
    if dim is None:
        flat = g.op("Reshape", x, g.ints([-1]))
        return g.op(op_type, flat, axis=0, keepdims=0)
    return g.op(op_type, x, axis=dim, keepdims=int(keepdim))


@register(aten.any, aten.all)
def _any(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: Any = None, keepdim=False):
    is_any = node.target.overloadpacket is aten.any
    rank = _rank(node.args[0])
    as_int = g.cast(g.cast(x, ir.DataType.BOOL), ir.DataType.INT64)
    if rank == 0:
        return g.cast(as_int, ir.DataType.BOOL)
    red = g.op(
        "ReduceMax" if is_any else "ReduceMin",
        as_int,
        g.ints(_axes_arg(dim, rank)),
        keepdims=int(bool(keepdim)),
    )
    return g.cast(red, ir.DataType.BOOL)


@register(aten._is_all_true)
def _is_all_true(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    as_int = g.cast(x, ir.DataType.INT64)
    if _rank(node.args[0]) == 0:
        return g.cast(as_int, ir.DataType.BOOL)
    return g.cast(g.op("ReduceMin", as_int, keepdims=0), ir.DataType.BOOL)


@register(aten.cumsum)
def _cumsum(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, dtype: Any = None):
    x = g.cast(x, _out_dtype(node))
    if _rank(node.args[0]) == 0:
        return x  # onnx CumSum rejects scalars
    return g.op("CumSum", x, g.const(dim, ir.DataType.INT64))


@register(aten.softmax.int, aten._softmax.default, aten.log_softmax.int, aten._log_softmax)
def _softmax(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, *args: Any, **kw: Any):
    packet = node.target.overloadpacket
    op_type = "LogSoftmax" if packet in (aten.log_softmax, aten._log_softmax) else "Softmax"
    return g.op(op_type, g.cast(x, _out_dtype(node)), axis=dim)


# normalization, linear algebra, convolution


@register(aten.layer_norm.default)
def _layer_norm(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    normalized_shape: Sequence[int],
    weight: ir.Value | None = None,
    bias: ir.Value | None = None,
    eps: float = 1e-5,
    cudnn_enable: bool = True,
) -> ir.Value:
    dtype = _out_dtype(node)
    if weight is None:
        weight = g.const(np.ones(list(normalized_shape)), dtype)
    # no trailing empty input: onnxruntime 1.31 crashes on LayerNormalization(x, w, "")
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return g.op("LayerNormalization", *inputs, axis=-len(normalized_shape), epsilon=float(eps))


@register(aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
def _batch_norm(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, weight, bias, mean, var, *a):
    if node.target is aten.batch_norm.default:
        training, _momentum, eps = a[0], a[1], a[2]
    else:
        training, eps = False, a[1]
    if training:
        raise NotImplementedError("batch_norm in training mode, call model.eval()")
    dtype = _out_dtype(node)
    channels = _meta(node.args[0]).shape[1]
    if weight is None:
        weight = g.const(np.ones((channels,)), dtype)
    if bias is None:
        bias = g.const(np.zeros((channels,)), dtype)
    res = g.op("BatchNormalization", x, weight, bias, mean, var, epsilon=float(eps))
    if node.target is not aten.batch_norm.default:
        return res, None, None
    return res


def _transposed_weight(g: GraphBuilder, w: ir.Value) -> ir.Value:
    """The transposed weight: a new initializer for a constant, a Transpose otherwise."""
    if w.const_value is not None and len(w.shape) == 2:
        cache = g.__dict__.setdefault("_transposed", {})
        if id(w) not in cache:
            t = w.const_value
            arr = t.raw if isinstance(getattr(t, "raw", None), torch.Tensor) else None
            if arr is None:
                arr = torch.from_numpy(np.array(t.numpy()))
            cache[id(w)] = g.add_initializer(f"{w.name}_T", arr.t().contiguous())
        return cache[id(w)]
    return g.op("Transpose", w, perm=[1, 0])


@register(aten.linear.default)
def _linear(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, w: ir.Value, b: ir.Value | None = None
):
    wt = _transposed_weight(g, w) if _rank(node.args[1]) == 2 else w
    y = g.op("MatMul", x, wt)
    return y if b is None else g.op("Add", y, b)


@register(aten.addmm.default)
def _addmm(g: GraphBuilder, node: torch.fx.Node, bias, a, b, beta: Any = 1, alpha: Any = 1):
    return g.op("Gemm", a, b, bias, alpha=float(alpha), beta=float(beta))


@register(aten.mm, aten.bmm, aten.matmul)
def _matmul(g: GraphBuilder, node: torch.fx.Node, a: ir.Value, b: ir.Value) -> ir.Value:
    return g.op("MatMul", a, b)


def _pads(padding: Sequence[int], n: int) -> list[int]:
    padding = list(padding) if len(padding) == n else list(padding) * n
    return padding + padding


@register(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default)
def _conv(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    w: ir.Value,
    b: ir.Value | None = None,
    stride: Sequence[int] = (1,),
    padding: Sequence[int] = (0,),
    dilation: Sequence[int] = (1,),
    groups: int = 1,
) -> ir.Value:
    n = _rank(node.args[1]) - 2
    stride = list(stride) * n if len(stride) == 1 else list(stride)
    dilation = list(dilation) * n if len(dilation) == 1 else list(dilation)
    kernel = [int(d) for d in _meta(node.args[1]).shape[2:]]
    return g.op(
        "Conv",
        x,
        w,
        b,
        strides=stride,
        pads=_pads(padding, n),
        dilations=dilation,
        group=groups,
        kernel_shape=kernel,
    )


@register(aten.conv1d.padding, aten.conv2d.padding)
def _conv_padding(g, node, x, w, b=None, stride=(1,), padding="valid", dilation=(1,), groups=1):
    n = _rank(node.args[1]) - 2
    kernel = [int(d) for d in _meta(node.args[1]).shape[2:]]
    dilation = list(dilation) * n if len(dilation) == 1 else list(dilation)
    if padding == "valid":
        pads = [0] * (2 * n)
    else:
        total = [dl * (k - 1) for dl, k in zip(dilation, kernel)]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    stride = list(stride) * n if len(stride) == 1 else list(stride)
    return g.op(
        "Conv",
        x,
        w,
        b,
        strides=stride,
        pads=pads,
        dilations=dilation,
        group=groups,
        kernel_shape=kernel,
    )


@register(aten.max_pool2d.default)
def _max_pool(g, node, x, kernel, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
    kernel = list(kernel) * 2 if len(kernel) == 1 else list(kernel)
    stride = list(stride or kernel)
    stride = stride * 2 if len(stride) == 1 else stride
    dilation = list(dilation) * 2 if len(dilation) == 1 else list(dilation)
    return g.op(
        "MaxPool",
        x,
        kernel_shape=kernel,
        strides=stride,
        pads=_pads(padding, 2),
        dilations=dilation,
        ceil_mode=int(ceil_mode),
    )


@register(aten.avg_pool2d.default)
def _avg_pool(
    g, node, x, kernel, stride=(), padding=(0,), ceil_mode=False, count_include_pad=True, div=None
):
    if div is not None:
        raise NotImplementedError("avg_pool2d with divisor_override")
    kernel = list(kernel) * 2 if len(kernel) == 1 else list(kernel)
    stride = list(stride or kernel)
    stride = stride * 2 if len(stride) == 1 else stride
    return g.op(
        "AveragePool",
        x,
        kernel_shape=kernel,
        strides=stride,
        pads=_pads(padding, 2),
        ceil_mode=int(ceil_mode),
        count_include_pad=int(count_include_pad),
    )


@register(aten.adaptive_avg_pool2d.default, aten.adaptive_avg_pool1d.default)
def _adaptive_avg_pool(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, size: Sequence[int]):
    if any(s != 1 for s in size):
        raise NotImplementedError(f"adaptive_avg_pool with output size {list(size)} (only 1)")
    return g.op("GlobalAveragePool", x)


# creation


def _fill_value(value: Any, dtype: ir.DataType) -> ir.TensorProtocol:
    if dtype == ir.DataType.BFLOAT16:
        return ir.tensor(torch.tensor([value], dtype=torch.bfloat16))
    return ir.tensor(np.array([value], dtype=dtype.numpy()))


def _constant_of_shape(g: GraphBuilder, node: torch.fx.Node, shape: ir.Value, value: Any):
    dtype = _out_dtype(node)
    if isinstance(value, ir.Value):
        return g.op("Expand", g.cast(value, dtype), shape)
    return g.op("ConstantOfShape", shape, value=_fill_value(value, dtype))


def _shape_arg(g: GraphBuilder, node: torch.fx.Node, size: Sequence[Any]) -> ir.Value:
    static = _static_shape(node)
    return g.ints(static) if static is not None else _dims(g, size)


@register(aten.zeros.default, aten.empty.memory_format)
def _zeros(g: GraphBuilder, node: torch.fx.Node, size: Sequence[Any], **kw: Any) -> ir.Value:
    return _constant_of_shape(g, node, _shape_arg(g, node, size), 0)


@register(aten.ones.default)
def _ones(g: GraphBuilder, node: torch.fx.Node, size: Sequence[Any], **kw: Any) -> ir.Value:
    return _constant_of_shape(g, node, _shape_arg(g, node, size), 1)


@register(aten.full.default)
def _full(g: GraphBuilder, node: torch.fx.Node, size: Sequence[Any], value: Any, **kw: Any):
    return _constant_of_shape(g, node, _shape_arg(g, node, size), value)


@register(aten.new_zeros.default, aten.new_empty.default)
def _new_zeros(g, node, x, size, **kw):
    return _constant_of_shape(g, node, _shape_arg(g, node, size), 0)


@register(aten.new_ones.default)
def _new_ones(g, node, x, size, **kw):
    return _constant_of_shape(g, node, _shape_arg(g, node, size), 1)


@register(aten.new_full.default)
def _new_full(g, node, x, size, value, **kw):
    return _constant_of_shape(g, node, _shape_arg(g, node, size), value)


@register(aten.zeros_like.default, aten.empty_like.default)
def _zeros_like(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, **kw: Any) -> ir.Value:
    return _constant_of_shape(g, node, g.op("Shape", x), 0)


@register(aten.ones_like.default)
def _ones_like(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, **kw: Any) -> ir.Value:
    return _constant_of_shape(g, node, g.op("Shape", x), 1)


@register(aten.full_like.default)
def _full_like(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, value: Any, **kw: Any):
    return _constant_of_shape(g, node, g.op("Shape", x), value)


@register(aten.fill.Scalar, aten.fill_.Scalar, aten.fill.Tensor, aten.fill_.Tensor)
def _fill(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, value: Any) -> ir.Value:
    return _constant_of_shape(g, node, g.op("Shape", x), value)


@register(aten.copy_.default, aten.copy.default)
def _copy(g: GraphBuilder, node: torch.fx.Node, dst: ir.Value, src: ir.Value, *a: Any):
    return g.op("Expand", g.cast(src, _out_dtype(node)), g.op("Shape", dst))


@register(aten.scalar_tensor.default)
def _scalar_tensor(g: GraphBuilder, node: torch.fx.Node, value: Any, **kw: Any) -> ir.Value:
    return _tensor(g, value, _out_dtype(node))


@register(aten.arange.default, aten.arange.start, aten.arange.start_step)
def _arange(g: GraphBuilder, node: torch.fx.Node, *args: Any, **kw: Any) -> ir.Value:
    dtype = _out_dtype(node)
    nums = [a for a in args if not isinstance(a, (torch.dtype, torch.device, torch.layout))]
    if len(nums) == 1:
        start, end, step = 0, nums[0], 1
    elif len(nums) == 2:
        (start, end), step = nums, 1
    else:
        start, end, step = nums[:3]
    if all(isinstance(v, (int, float)) for v in (start, end, step)):
        arr = np.arange(start, end, step).astype(dtype.numpy())
        if arr.size <= 1024 and dtype != ir.DataType.BFLOAT16:
            return g.const(arr, dtype)
    return g.op("Range", _tensor(g, start, dtype), _tensor(g, end, dtype), _tensor(g, step, dtype))


@register(aten.tril, aten.triu, aten.tril_, aten.triu_)
def _trilu(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, diagonal: Any = 0) -> ir.Value:
    upper = int(node.target.overloadpacket in (aten.triu, aten.triu_))
    dtype = _out_dtype(node)
    xx = g.cast(x, ir.DataType.INT64) if dtype == ir.DataType.BOOL else x
    res = g.op("Trilu", xx, g.scalar(diagonal), upper=upper)
    return g.cast(res, ir.DataType.BOOL) if dtype == ir.DataType.BOOL else res


@register(aten.item.default, aten._local_scalar_dense.default)
def _item(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    res = g.op("Reshape", x, g.ints([]))
    val = _out(node)
    if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
        return g.cast(res, ir.DataType.INT64)
    return res


# attention


@register(aten.scaled_dot_product_attention.default)
def _sdpa(
    g: GraphBuilder,
    node: torch.fx.Node,
    q: ir.Value,
    k: ir.Value,
    v: ir.Value,
    attn_mask: ir.Value | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> ir.Value:
    if dropout_p:
        raise NotImplementedError("scaled_dot_product_attention with dropout_p > 0")
    qm, km = _meta(node.args[0]), _meta(node.args[1])
    head = qm.shape[-1]
    if scale is None:
        if not isinstance(head, int):
            raise NotImplementedError("scaled_dot_product_attention with a dynamic head size")
        scale = 1.0 / math.sqrt(head)
    if g.opset >= 23 and qm.dim() == 4:
        return g.op("Attention", q, k, v, attn_mask, scale=float(scale), is_causal=int(is_causal))
    dtype = _out_dtype(node)
    if enable_gqa and qm.shape[-3] != km.shape[-3]:
        # key and value head i // (q heads / kv heads) for query head i (repeat_interleave)
        hq, hkv = qm.shape[-3], km.shape[-3]
        if not isinstance(hq, int) or not isinstance(hkv, int):
            raise NotImplementedError("enable_gqa=True with a dynamic number of heads")
        heads = g.ints([i // (hq // hkv) for i in range(hq)])
        k = g.op("Gather", k, heads, axis=-3)
        v = g.op("Gather", v, heads, axis=-3)
    kt = g.op("Transpose", k, perm=[*range(km.dim() - 2), km.dim() - 1, km.dim() - 2])
    scores = g.op("Mul", g.op("MatMul", q, kt), g.const(scale, dtype))
    if is_causal:
        ones = g.op(
            "ConstantOfShape",
            g.op("Shape", scores, start=-2),
            value=_fill_value(1, ir.DataType.INT64),
        )
        attn_mask = g.cast(g.op("Trilu", ones, upper=0), ir.DataType.BOOL)
    if attn_mask is not None:
        if g.dtype_of(attn_mask) == ir.DataType.BOOL:
            attn_mask = g.op("Where", attn_mask, g.const(0.0, dtype), g.const(-float("inf"), dtype))
        scores = g.op("Add", scores, attn_mask)
    return g.op("MatMul", g.op("Softmax", scores, axis=-1), v)


# symbolic integers (sizes)


@register(aten.sym_size.int)
def _sym_size(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int) -> Any:
    val = _out(node)
    if isinstance(val, int) or (isinstance(val, torch.SymInt) and val.node.expr.is_number):
        return int(val)
    cache = g.__dict__.setdefault("_sizes", {})
    key = (id(x), dim)
    if key not in cache:
        cache[key] = g.size(x, _norm_axis(dim, _rank(node.args[0])))
    return cache[key]


def _sym_binary(py: Callable, op_type: str | None) -> Callable:
    def fct(g: GraphBuilder, node: torch.fx.Node, a: Any, b: Any) -> Any:
        if not isinstance(a, ir.Value) and not isinstance(b, ir.Value):
            return py(a, b)
        val = _out(node)
        if isinstance(val, bool) or isinstance(val, torch.SymBool):
            dtype = ir.DataType.INT64
        elif isinstance(val, (float, torch.SymFloat)):
            dtype = ir.DataType.FLOAT
        else:
            dtype = ir.DataType.INT64
        ta, tb = _tensor(g, a, dtype), _tensor(g, b, dtype)
        if op_type == "FloorDiv":
            return g.op("Div", g.op("Sub", ta, g.op("Mod", ta, tb, fmod=0)), tb)
        if op_type == "NotEqual":
            return g.op("Not", g.op("Equal", ta, tb))
        if op_type == "TrueDiv":
            return g.op("Div", g.cast(ta, ir.DataType.FLOAT), g.cast(tb, ir.DataType.FLOAT))
        return g.op(op_type, ta, tb)

    return fct


for _py, _onnx in [
    (operator.add, "Add"),
    (operator.sub, "Sub"),
    (operator.mul, "Mul"),
    (operator.floordiv, "FloorDiv"),
    (operator.truediv, "TrueDiv"),
    (operator.mod, "Mod"),
    (operator.eq, "Equal"),
    (operator.ne, "NotEqual"),
    (operator.lt, "Less"),
    (operator.le, "LessOrEqual"),
    (operator.gt, "Greater"),
    (operator.ge, "GreaterOrEqual"),
    (torch.sym_max, "Max"),
    (torch.sym_min, "Min"),
]:
    register(_py)(
        _sym_binary(
            _py
            if _py not in (torch.sym_max, torch.sym_min)
            else (max if _py is torch.sym_max else min),
            _onnx,
        )
    )


@register(operator.neg)
def _sym_neg(g: GraphBuilder, node: torch.fx.Node, a: Any) -> Any:
    return g.op("Neg", a) if isinstance(a, ir.Value) else -a


@register(torch.sym_not)
def _sym_not(g: GraphBuilder, node: torch.fx.Node, a: Any) -> Any:
    return g.op("Not", g.cast(a, ir.DataType.BOOL)) if isinstance(a, ir.Value) else not a


@register(torch.sym_ite)
def _sym_ite(g: GraphBuilder, node: torch.fx.Node, cond: Any, a: Any, b: Any) -> Any:
    if not isinstance(cond, ir.Value):
        return a if cond else b
    return g.op(
        "Where",
        g.cast(cond, ir.DataType.BOOL),
        _tensor(g, a, ir.DataType.INT64),
        _tensor(g, b, ir.DataType.INT64),
    )


@register(torch.sym_float)
def _sym_float(g: GraphBuilder, node: torch.fx.Node, a: Any) -> Any:
    return g.cast(a, ir.DataType.FLOAT) if isinstance(a, ir.Value) else float(a)


@register(math.ceil, math.floor)
def _sym_round(g: GraphBuilder, node: torch.fx.Node, a: Any) -> Any:
    if not isinstance(a, ir.Value):
        return node.target(a)
    op_type = "Ceil" if node.target is math.ceil else "Floor"
    return g.cast(g.op(op_type, g.cast(a, ir.DataType.FLOAT)), ir.DataType.INT64)
