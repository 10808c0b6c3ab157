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


def _fill_value(value: Any, dtype: ir.DataType) -> ir.TensorProtocol:
    if dtype == ir.DataType.BFLOAT16:
        return ir.tensor(torch.tensor([value], dtype=torch.bfloat16))
    return ir.tensor(np.array([value], dtype=dtype.numpy()))


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
        if dtype == ir.DataType.BOOL and op_type in _BOOL_BINARY:
            # onnx Mul and Add have no boolean version: torch's bool * bool is a logical and,
            # bool + bool a logical or (jamba's padding mask in transformers 4.x)
            return g.op(_BOOL_BINARY[op_type], ta, tb)
        if alpha != 1:
            tb = g.op("Mul", tb, _tensor(g, alpha, dtype))
        return g.cast(g.op(op_type, ta, tb), _out_dtype(node))

    return fct


_BOOL_BINARY = {"Mul": "And", "Add": "Or"}


register(aten.add, aten.add_)(_binary("Add"))
register(aten.sub, aten.sub_, aten.rsub)(_binary("Sub"))
register(aten.mul, aten.mul_)(_binary("Mul"))
# the aliases torch keeps in some programs (gemma3n: multiply)
register(aten.multiply, aten.multiply_)(_binary("Mul"))


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


# with the aliases torch keeps in some programs (torch.greater in mixtral of transformers 4.x)
register(aten.eq)(_compare("Equal"))
register(aten.ne, aten.not_equal)(_compare("Equal", negate=True))
register(aten.lt, aten.less)(_compare("Less"))
register(aten.le, aten.less_equal)(_compare("LessOrEqual"))
register(aten.gt, aten.greater)(_compare("Greater"))
register(aten.ge, aten.greater_equal)(_compare("GreaterOrEqual"))


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


def _compute_dtype(dtype: ir.DataType) -> ir.DataType:
    """The type torch computes a transcendental function of ``dtype`` in (float for halves)."""
    if dtype in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16):
        return ir.DataType.FLOAT
    return dtype


@register(aten.square, aten.square_)
def _square(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    x = g.cast(x, _out_dtype(node))
    return g.op("Mul", x, x)


@register(aten.log1p, aten.log1p_)
def _log1p(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    dtype = _out_dtype(node)
    cdt = _compute_dtype(dtype)
    x = g.cast(x, cdt)
    # log(1 + x) loses the digits of a small x: log(u) * x / (u - 1) with u = 1 + x
    # restores them (and is x where u rounds to 1)
    one = g.const(1, cdt)
    u = g.op("Add", x, one)
    um1 = g.op("Sub", u, one)
    ratio = g.op("Div", g.op("Mul", g.op("Log", u), x), um1)
    res = g.op("Where", g.op("Equal", u, one), x, ratio)
    # where 1 + x is inf, the ratio is nan: log(inf) is inf
    res = g.op("Where", g.op("IsInf", u), u, res)
    return g.cast(res, dtype)


@register(aten.expm1, aten.expm1_)
def _expm1(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    dtype = _out_dtype(node)
    cdt = _compute_dtype(dtype)
    x = g.cast(x, cdt)
    # exp(x) - 1 loses the digits of a small x: (u - 1) * x / log(u) with u = exp(x)
    one = g.const(1, cdt)
    u = g.op("Exp", x)
    um1 = g.op("Sub", u, one)
    ratio = g.op("Div", g.op("Mul", um1, x), g.op("Log", u))
    res = g.op("Where", g.op("Equal", u, one), x, ratio)
    # u = 0 (x very negative) or inf: u - 1 is exact
    res = g.op(
        "Where", g.op("Or", g.op("Equal", um1, g.const(-1, cdt)), g.op("IsInf", u)), um1, res
    )
    return g.cast(res, dtype)


#: Giles' single precision approximation of erfinv (M. Giles, "Approximating the erfinv
#: function", GPU Computing Gems, 2011): a polynomial in w = -log(1 - x^2), one for w < 5,
#: one in sqrt(w) - 3 beyond, highest degree first
_ERFINV_CENTRAL = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
)
_ERFINV_TAIL = (
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
)


def _horner(g: GraphBuilder, w: ir.Value, coefficients: tuple, dtype: ir.DataType) -> ir.Value:
    p = g.const(coefficients[0], dtype)
    for c in coefficients[1:]:
        p = g.op("Add", g.op("Mul", p, w), g.const(c, dtype))
    return p


@register(aten.erfinv, aten.erfinv_)
def _erfinv(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    # ONNX has no inverse error function: Giles' approximation (relative error about 1e-6
    # in float32 between -1 and 1), +-inf at +-1 and nan outside as torch gives
    dtype = _out_dtype(node)
    cdt = _compute_dtype(dtype)
    x = g.cast(x, cdt)
    one = g.const(1, cdt)
    w = g.op("Neg", g.op("Log", g.op("Mul", g.op("Sub", one, x), g.op("Add", one, x))))
    central = _horner(g, g.op("Sub", w, g.const(2.5, cdt)), _ERFINV_CENTRAL, cdt)
    tail = _horner(g, g.op("Sub", g.op("Sqrt", w), g.const(3, cdt)), _ERFINV_TAIL, cdt)
    p = g.op("Where", g.op("Less", w, g.const(5, cdt)), central, tail)
    res = g.op("Mul", p, x)
    # at +-1, w is inf and the polynomial too: the product is +-inf as torch gives
    edge = g.op("Equal", g.op("Abs", x), one)
    res = g.op("Where", edge, g.op("Mul", x, g.const(float("inf"), cdt)), res)
    return g.cast(res, dtype)


@register(aten.softplus)
def _softplus(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, beta: Any = 1, threshold: Any = 20
) -> ir.Value:
    dtype = _out_dtype(node)
    cdt = _compute_dtype(dtype)
    x = g.cast(x, cdt)
    bx = x if beta == 1 else g.op("Mul", x, _tensor(g, beta, cdt))
    # log(1 + exp(z)) = max(z, 0) + log(1 + exp(-|z|)), no overflow for a large z
    tail = g.op("Log", g.op("Add", g.op("Exp", g.op("Neg", g.op("Abs", bx))), g.const(1, cdt)))
    sp = g.op("Add", g.op("Relu", bx), tail)
    if beta != 1:
        sp = g.op("Div", sp, _tensor(g, beta, cdt))
    # torch returns x itself where beta * x > threshold
    res = g.op("Where", g.op("Greater", bx, _tensor(g, threshold, cdt)), x, sp)
    return g.cast(res, dtype)


@register(aten.log_sigmoid)
def _log_sigmoid(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    dtype = _out_dtype(node)
    cdt = _compute_dtype(dtype)
    x = g.cast(x, cdt)
    # log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|)), no overflow for a large |x|
    tail = g.op("Log", g.op("Add", g.op("Exp", g.op("Neg", g.op("Abs", x))), g.const(1, cdt)))
    return g.cast(g.op("Sub", g.op("Min", x, g.const(0, cdt)), tail), dtype)


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


# symbolic integers (sizes)


@register(aten.sym_size.int)
def _sym_size(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int) -> Any:
    val = _out(node)
    if isinstance(val, int) or (isinstance(val, torch.SymInt) and val.node.expr.is_number):
        return int(val)
    return g.size(x, _norm_axis(dim, _rank(node.args[0])))


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


# the other families register themselves into TRANSLATIONS when imported
from . import aten_index, aten_moe, aten_nn, aten_shapes  # noqa: E402, F401
