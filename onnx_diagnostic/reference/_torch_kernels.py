"""
Torch kernels of :class:`onnx_diagnostic.reference.TorchOnnxEvaluator` for the standard
operators: element-wise, matrix products, shapes and indices, reductions. Every kernel is a
function ``kernel(node, *inputs)`` registered in :data:`KERNELS` under ``(domain, op_type)``;
``node`` gives the attributes (:class:`KernelNode`), missing optional inputs are None.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import onnx
import torch

#: ONNX element type -> torch dtype
ONNX_TO_TORCH: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT16: torch.uint16,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.BOOL: torch.bool,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.UINT32: torch.uint32,
    onnx.TensorProto.UINT64: torch.uint64,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.FLOAT8E4M3FN: torch.float8_e4m3fn,
    onnx.TensorProto.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz,
    onnx.TensorProto.FLOAT8E5M2: torch.float8_e5m2,
    onnx.TensorProto.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
}


class KernelNode:
    """What a kernel knows about its node: type, domain, name, attributes (python values,
    tensors as torch tensors, graphs as :class:`onnx.GraphProto`), opset, and the evaluator
    running it (``parent``, for subgraphs)."""

    def __init__(self, node: onnx.NodeProto, opset: int, parent: Any = None):
        from .ort_evaluator import to_torch  # noqa: PLC0415

        self.op_type = node.op_type
        self.domain = node.domain
        self.name = node.name
        self.opset = opset
        self.parent = parent
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.attributes: dict[str, Any] = {}
        for att in node.attribute:
            if att.ref_attr_name:
                raise NotImplementedError(
                    f"{self}: attribute {att.name!r} refers to a function attribute"
                )
            value = onnx.helper.get_attribute_value(att)
            if isinstance(value, onnx.TensorProto):
                value = to_torch(onnx.numpy_helper.to_array(value))
            elif isinstance(value, bytes):
                value = value.decode()
            self.attributes[att.name] = value

    def __repr__(self) -> str:
        dom = f"[{self.domain}]" if self.domain else ""
        return f"{self.op_type}{dom} node {self.name!r}"

    def attr(self, name: str, default: Any = None) -> Any:
        """The value of an attribute or ``default``."""
        return self.attributes.get(name, default)

    def fail(self, message: str) -> NotImplementedError:
        """An error naming the node."""
        return NotImplementedError(f"{self}: {message}")


Kernel = Callable[..., Any]
#: ``(domain, op_type) -> kernel``
KERNELS: dict[tuple[str, str], Kernel] = {}


def register(*op_types: str, domain: str = "") -> Callable[[Kernel], Kernel]:
    """Registers a kernel for one or several operators of a domain."""

    def deco(fn: Kernel) -> Kernel:
        for op in op_types:
            KERNELS[domain, op] = fn
        return fn

    return deco


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(i) for i in t.reshape(-1).tolist()]


# ----------------------------------------------------------------------------------------
# element-wise
# ----------------------------------------------------------------------------------------

_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Abs": torch.abs,
    "Ceil": torch.ceil,
    "Cos": torch.cos,
    "Erf": torch.erf,
    "Exp": torch.exp,
    "Floor": torch.floor,
    "Identity": lambda x: x,
    "IsNaN": torch.isnan,
    "Log": torch.log,
    "Neg": torch.neg,
    "Not": torch.logical_not,
    "Reciprocal": torch.reciprocal,
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Softplus": torch.nn.functional.softplus,
    "Sqrt": torch.sqrt,
    "Tanh": torch.tanh,
}

_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add,
    "And": torch.logical_and,
    "BitwiseAnd": torch.bitwise_and,
    "Equal": torch.eq,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Mul": torch.mul,
    "Or": torch.logical_or,
    "Sub": torch.sub,
    "Xor": torch.logical_xor,
}


def _unary(node: KernelNode, x: torch.Tensor) -> torch.Tensor:
    return _UNARY[node.op_type](x)


def _binary(node: KernelNode, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype != b.dtype and node.op_type not in {"And", "Or", "Xor"}:
        raise node.fail(f"inputs of different types {a.dtype} and {b.dtype}")
    return _BINARY[node.op_type](a, b)


register(*_UNARY)(_unary)
register(*_BINARY)(_binary)


@register("Div")
def _div(node: KernelNode, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


@register("Mod")
def _mod(node: KernelNode, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.fmod(a, b) if node.attr("fmod", 0) else torch.remainder(a, b)


@register("Pow")
def _pow(node: KernelNode, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, b).to(a.dtype)


@register("Max", "Min", "Sum", "Mean")
def _variadic(node: KernelNode, *xs: torch.Tensor) -> torch.Tensor:
    res = xs[0]
    for x in xs[1:]:
        if node.op_type == "Max":
            res = torch.maximum(res, x)
        elif node.op_type == "Min":
            res = torch.minimum(res, x)
        else:
            res = res + x
    return res / len(xs) if node.op_type == "Mean" else res


@register("Where")
def _where(node: KernelNode, c: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(c, x, y)


@register("Cast")
def _cast(node: KernelNode, x: torch.Tensor) -> torch.Tensor:
    to = node.attr("to")
    if to not in ONNX_TO_TORCH:
        raise node.fail(f"no torch type for ONNX type {to}")
    return x.to(ONNX_TO_TORCH[to])


@register("CastLike")
def _cast_like(node: KernelNode, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.to(like.dtype)


@register("Softmax", "LogSoftmax")
def _softmax(node: KernelNode, x: torch.Tensor) -> torch.Tensor:
    axis = node.attr("axis", -1 if node.opset >= 13 else 1)  # noqa: PLR2004
    if node.opset < 13 and axis != x.dim() - 1 and axis != -1:  # noqa: PLR2004
        raise node.fail("Softmax before opset 13 is only implemented on the last axis")
    fn = torch.softmax if node.op_type == "Softmax" else torch.log_softmax
    if x.dtype in (torch.float16, torch.bfloat16):
        return fn(x.float(), axis).to(x.dtype)
    return fn(x, axis)


# ----------------------------------------------------------------------------------------
# matrix products
# ----------------------------------------------------------------------------------------


@register("MatMul")
def _matmul(node: KernelNode, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a, b)


@register("Gemm")
def _gemm(
    node: KernelNode, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None
) -> torch.Tensor:
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    res = torch.matmul(a, b) * node.attr("alpha", 1.0)
    if c is not None:
        res = res + c * node.attr("beta", 1.0)
    return res.to(a.dtype)


# ----------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------


@register("Constant")
def _constant(node: KernelNode) -> torch.Tensor:
    for name, dtype in (
        ("value", None),
        ("value_float", torch.float32),
        ("value_floats", torch.float32),
        ("value_int", torch.int64),
        ("value_ints", torch.int64),
    ):
        if name in node.attributes:
            v = node.attributes[name]
            return v if dtype is None else torch.tensor(v, dtype=dtype)
    raise node.fail(f"unsupported attributes {sorted(node.attributes)}")


@register("ConstantOfShape")
def _constant_of_shape(node: KernelNode, shape: torch.Tensor) -> torch.Tensor:
    value = node.attr("value")
    if value is None:
        value = torch.zeros((1,), dtype=torch.float32)
    return torch.full(_ints(shape), value.reshape(-1)[0].item(), dtype=value.dtype)  # type: ignore[arg-type]


@register("Shape")
def _shape(node: KernelNode, x: torch.Tensor) -> torch.Tensor:
    dims = list(x.shape)
    start, end = node.attr("start", 0), node.attr("end", None)
    return torch.tensor(dims[start:end], dtype=torch.int64)


@register("Size")
def _size(node: KernelNode, x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64)


@register("Reshape")
def _reshape(node: KernelNode, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    dims = _ints(shape)
    if not node.attr("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]  # type: ignore[arg-type]
    return x.reshape(dims)


@register("Flatten")
def _flatten(node: KernelNode, x: torch.Tensor) -> torch.Tensor:
    axis = node.attr("axis", 1) % (x.dim() + 1) if x.dim() else 0
    return x.reshape((math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


@register("Transpose")
def _transpose(node: KernelNode, x: torch.Tensor) -> torch.Tensor:
    perm = node.attr("perm") or list(range(x.dim()))[::-1]
    return x.permute(*perm)


@register("Concat")
def _concat(node: KernelNode, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat([x for x in xs if x is not None], dim=node.attr("axis"))


def _axes(node: KernelNode, axes: torch.Tensor | None) -> list[int] | None:
    return _ints(axes) if axes is not None else node.attr("axes")


@register("Unsqueeze")
def _unsqueeze(node: KernelNode, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    ax = _axes(node, axes) or []
    rank = x.dim() + len(ax)
    for a in sorted(a % rank for a in ax):
        x = x.unsqueeze(a)
    return x


@register("Squeeze")
def _squeeze(node: KernelNode, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    ax = _axes(node, axes)
    if ax is None:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in ax), reverse=True):
        if x.shape[a] != 1:
            raise node.fail(f"cannot squeeze axis {a} of shape {tuple(x.shape)}")
        x = x.squeeze(a)
    return x


@register("Expand")
def _expand(node: KernelNode, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))  # type: ignore[arg-type]


@register("Tile")
def _tile(node: KernelNode, x: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    return x.repeat(*_ints(repeats))  # type: ignore[misc]


@register("Range")
def _range(
    node: KernelNode, start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor
) -> torch.Tensor:
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@register("Slice")
def _slice(
    node: KernelNode,
    x: torch.Tensor,
    starts: torch.Tensor | None = None,
    ends: torch.Tensor | None = None,
    axes: torch.Tensor | None = None,
    steps: torch.Tensor | None = None,
) -> torch.Tensor:
    if node.opset < 10:  # noqa: PLR2004
        st, en, ax, sp = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        st, en, ax, sp = _ints(starts), _ints(ends), _ints(axes), _ints(steps)
    ax = ax if ax is not None else list(range(len(st)))
    sp = sp if sp is not None else [1] * len(st)
    for s, e, a, p in zip(st, en, ax, sp):
        a %= x.dim()
        d = x.shape[a]
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if p > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
            x = x.narrow(a, s, max(e - s, 0))[(slice(None),) * a + (slice(None, None, p),)]
        elif p < 0:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            idx = torch.arange(s, e, p, dtype=torch.int64, device=x.device)
            x = x.index_select(a, idx)
        else:
            raise node.fail("a step cannot be 0")
    return x


def _positive(idx: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.where(idx < 0, idx + dim, idx)


@register("Gather")
def _gather(node: KernelNode, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    axis = node.attr("axis", 0) % x.dim()
    flat = _positive(idx.reshape(-1).to(torch.int64), x.shape[axis])
    res = x.index_select(axis, flat)
    return res.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1 :])


@register("GatherElements")
def _gather_elements(node: KernelNode, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    axis = node.attr("axis", 0) % x.dim()
    return torch.gather(x, axis, _positive(idx.to(torch.int64), x.shape[axis]))


@register("GatherND")
def _gather_nd(node: KernelNode, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    if node.attr("batch_dims", 0):
        raise node.fail("batch_dims != 0 is not implemented")
    return x[tuple(idx[..., i] for i in range(idx.shape[-1]))]


@register("ScatterND")
def _scatter_nd(
    node: KernelNode, x: torch.Tensor, idx: torch.Tensor, updates: torch.Tensor
) -> torch.Tensor:
    reduction = node.attr("reduction", "none")
    out = x.clone()
    index = tuple(idx[..., i] for i in range(idx.shape[-1]))
    if reduction == "none":
        out[index] = updates
    elif reduction == "add":
        out.index_put_(index, updates, accumulate=True)
    else:
        raise node.fail(f"reduction={reduction!r} is not implemented")
    return out


@register("ScatterElements")
def _scatter_elements(
    node: KernelNode, x: torch.Tensor, idx: torch.Tensor, updates: torch.Tensor
) -> torch.Tensor:
    axis = node.attr("axis", 0) % x.dim()
    idx = _positive(idx.to(torch.int64), x.shape[axis])
    reduction = node.attr("reduction", "none")
    if reduction == "none":
        return x.scatter(axis, idx, updates)
    names = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}
    if reduction not in names:
        raise node.fail(f"reduction={reduction!r} is not implemented")
    return x.scatter_reduce(axis, idx, updates, names[reduction], include_self=True)


@register("Trilu")
def _trilu(node: KernelNode, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
    kk = 0 if k is None else int(k.item())
    return torch.triu(x, kk) if node.attr("upper", 1) else torch.tril(x, kk)


@register("CumSum")
def _cumsum(node: KernelNode, x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    a = int(axis.item())
    if node.attr("reverse", 0):
        x = x.flip(a)
    res = torch.cumsum(x, a).to(x.dtype)
    if node.attr("exclusive", 0):
        res = res - x
    return res.flip(a) if node.attr("reverse", 0) else res


@register("Split")
def _split(
    node: KernelNode, x: torch.Tensor, split: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    axis = node.attr("axis", 0)
    sizes = _ints(split) if split is not None else node.attr("split")
    if sizes is None:
        n = node.attr("num_outputs", len(node.outputs))
        d = x.shape[axis]
        chunk = -(-d // n)
        sizes = [min(chunk, d - i * chunk) for i in range(n)]
    return tuple(torch.split(x, sizes, dim=axis))


# ----------------------------------------------------------------------------------------
# reductions
# ----------------------------------------------------------------------------------------

_REDUCE: dict[str, Callable[..., torch.Tensor]] = {
    "ReduceMean": torch.mean,
    "ReduceSum": torch.sum,
    "ReduceMax": torch.amax,
    "ReduceMin": torch.amin,
    "ReduceProd": torch.prod,
}


@register(*_REDUCE)
def _reduce(node: KernelNode, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    ax = _axes(node, axes)
    keep = bool(node.attr("keepdims", 1))
    if not ax:
        if node.attr("noop_with_empty_axes", 0):
            return x
        ax = list(range(x.dim()))
    fn = _REDUCE[node.op_type]
    if node.op_type == "ReduceProd":
        for a in sorted((a % x.dim() for a in ax), reverse=True):
            x = torch.prod(x, a, keepdim=keep)
        return x
    if x.numel() == 0 and node.op_type in {"ReduceMax", "ReduceMin"}:
        raise node.fail(f"{node.op_type} of an empty tensor")
    return fn(x, dim=tuple(ax), keepdim=keep)
