"""
Translations of the ATen operators changing shapes, indexing and reducing
(``view``, ``transpose``, ``slice``, ``index``, ``cat``, ``split``, ``sum``, ``softmax``...),
registered in :data:`onnx_diagnostic.export.custom.aten_ops.TRANSLATIONS`.

>>> import torch
>>> from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS
>>> torch.ops.aten.index.Tensor in TRANSLATIONS
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import onnx_ir as ir
import torch

from .aten_ops import (
    _INT64_MAX,
    _compute_dtype,
    _dims,
    _meta,
    _norm_axis,
    _out,
    _out_dtype,
    _rank,
    _static_shape,
    aten,
    register,
)
from .builder import GraphBuilder, dim_of


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


@register(aten.outer, aten.ger)
def _outer(g: GraphBuilder, node: torch.fx.Node, a: ir.Value, b: ir.Value) -> ir.Value:
    # a[:, None] * b[None, :] (phimoe's rotary embedding in transformers 4.x)
    dtype = _out_dtype(node)
    col = g.op("Unsqueeze", g.cast(a, dtype), g.ints([1]))
    row = g.op("Unsqueeze", g.cast(b, dtype), g.ints([0]))
    return g.op("Mul", col, row)


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


@register(aten.cat, aten.concat, aten.concatenate)
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
    if node.target.overloadpacket is aten.split_with_sizes and any(
        isinstance(s, ir.Value) for s in size
    ):
        # sizes known at run time only (the tokens each expert gets in a mixture of
        # experts): onnx Split takes them as a tensor
        if len(size) == 1:
            return (x,)
        return g.op("Split", x, _dims(g, size), axis=dim, outputs=len(size))
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


def _int_indices(
    g: GraphBuilder, node_indices: Sequence[Any], indices: Sequence[Any]
) -> list[tuple[ir.Value | None, int]]:
    """
    The indices of ``x[indices]`` or ``x[indices] = v`` as int64 values with their rank,
    None where a dimension is not indexed. A boolean index of rank k (a mask) stands for
    the k integer indices of its true elements, as torch does (``mask.nonzero().unbind(1)``).
    """
    res: list[tuple[ir.Value | None, int]] = []
    for a, idx in zip(node_indices, indices):
        meta = _meta(a)
        if idx is None:
            res.append((None, 0))
            continue
        if meta.dtype not in (torch.bool, torch.uint8):
            res.append((g.cast(idx, ir.DataType.INT64), meta.dim()))
            continue
        k = meta.dim()
        if k == 0:
            raise NotImplementedError("indexing with a 0-d boolean mask")
        nz = g.op("NonZero", g.cast(idx, ir.DataType.BOOL))  # (k, number of true elements)
        first = g.ints([0])
        if k == 1:
            res.append((g.op("Squeeze", nz, first), 1))
            continue
        rows = g.op("Split", nz, g.ints([1] * k), axis=0, outputs=k)
        res.extend((g.op("Squeeze", r, first), 1) for r in rows)
    return res


def _stack_indices(g: GraphBuilder, idx: Sequence[ir.Value]) -> tuple[ir.Value, ir.Value]:
    """Broadcasts the indices to their common shape and stacks them on a last axis."""
    total = idx[0]
    for t in idx[1:]:
        total = g.op("Add", total, t)
    shape = g.op("Shape", total)
    last = g.ints([-1])
    stacked = g.op(
        "Concat", *[g.op("Unsqueeze", g.op("Expand", t, shape), last) for t in idx], axis=-1
    )
    return stacked, shape


@register(aten.index.Tensor, aten._unsafe_index.Tensor)
def _index(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, indices: Sequence[Any]):
    expanded = _int_indices(g, node.args[1], indices)
    positions = [i for i, (idx, _) in enumerate(expanded) if idx is not None]
    idx = [expanded[p][0] for p in positions]
    if len(positions) == 1:
        return g.op("Gather", x, idx[0], axis=positions[0])
    rank = _rank(node.args[0])
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    others = [i for i in range(rank) if i not in positions]
    if positions != list(range(len(positions))):
        x = g.op("Transpose", x, perm=positions + others)
    # broadcast every index to the common shape, stack them on a last axis, GatherND
    stacked, _ = _stack_indices(g, idx)
    res = g.op("GatherND", x, stacked)
    first = positions[0]
    if adjacent and first > 0:
        b = max(expanded[p][1] for p in positions)
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
    rank = _rank(node.args[0])
    dim = _norm_axis(dim, rank)
    if step not in (None, 1):
        return _slice_scatter_step(g, node, x, src, dim, start, step)
    axis = g.ints([dim])
    parts = []
    if start not in (None, 0):
        parts.append(g.op("Slice", x, g.ints([0]), g.as_1d(start), axis))
    parts.append(g.cast(src, _out_dtype(node)))
    if end is not None and not (isinstance(end, int) and end >= _INT64_MAX):
        parts.append(g.op("Slice", x, g.as_1d(end), g.ints([_INT64_MAX]), axis))
    return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=dim)


def _slice_scatter_step(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    src: ir.Value,
    dim: int,
    start: Any,
    step: Any,
) -> ir.Value:
    """slice_scatter with a step: ``src[..., j, ...]`` goes to ``x[..., start + j * step, ...]``."""
    if not isinstance(step, int) or step <= 0:
        raise NotImplementedError(f"slice_scatter with step={step!r} (a positive integer only)")
    i64 = ir.DataType.INT64
    size = g.size(x, dim)
    start = 0 if start is None else start
    if isinstance(start, int) and isinstance(size, int):
        begin = g.const(min(max(start + size if start < 0 else start, 0), size), i64)
    else:
        # a negative start counts from the end, torch clamps it to [0, size]
        s0, n = g.scalar(start), g.scalar(size)
        zero = g.const(0, i64)
        begin = g.op("Where", g.op("Less", s0, zero), g.op("Add", s0, n), s0)
        begin = g.op("Min", g.op("Max", begin, zero), n)
    count = g.scalar(g.size(src, dim))
    offsets = g.op("Range", g.const(0, i64), count, g.const(1, i64))
    positions = g.op("Add", g.op("Mul", offsets, g.const(step, i64)), begin)
    shape = [1] * _rank(node.args[0])
    shape[dim] = -1
    index = g.op("Expand", g.op("Reshape", positions, g.ints(shape)), g.op("Shape", src))
    return g.op("ScatterElements", x, index, g.cast(src, _out_dtype(node)), axis=dim)


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


@register(aten.masked_scatter.default, aten.masked_scatter_.default)
def _masked_scatter(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, mask: ir.Value, source: ir.Value
) -> ir.Value:
    # the positions where the mask (broadcast to x) is true, in row-major order, receive
    # the first elements of source in the same order
    full_mask = g.op("Expand", g.cast(mask, ir.DataType.BOOL), g.op("Shape", x))
    indices = g.op("Transpose", g.op("NonZero", full_mask), perm=[1, 0])
    n = g.op("Shape", indices, start=0, end=1)
    flat = g.op("Reshape", g.cast(source, _out_dtype(node)), g.ints([-1]))
    updates = g.op("Slice", flat, g.ints([0]), n, g.ints([0]))
    return g.op("ScatterND", x, indices, updates)


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


@register(aten.linalg_vector_norm)
def _vector_norm(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    ord: Any = 2,
    dim: Any = None,
    keepdim: bool = False,
    dtype: Any = None,
) -> ir.Value:
    rank = _rank(node.args[0])
    out = _out_dtype(node)
    x = g.cast(x, out)
    if rank == 0:
        return (
            g.op("Abs", x)
            if ord != 0
            else g.cast(g.op("Not", g.op("Equal", x, g.const(0, out))), out)
        )
    axes = g.ints(_axes_arg(dim, rank))
    keep = int(bool(keepdim))
    if ord == 2:
        return g.op("ReduceL2", x, axes, keepdims=keep)
    if ord == 1:
        return g.op("ReduceL1", x, axes, keepdims=keep)
    if ord == float("inf"):
        return g.op("ReduceMax", g.op("Abs", x), axes, keepdims=keep)
    if ord == float("-inf"):
        return g.op("ReduceMin", g.op("Abs", x), axes, keepdims=keep)
    if ord == 0:
        nonzero = g.cast(g.op("Not", g.op("Equal", x, g.const(0, out))), out)
        return g.op("ReduceSum", nonzero, axes, keepdims=keep)
    p = g.const(float(ord), out)
    total = g.op("ReduceSum", g.op("Pow", g.op("Abs", x), p), axes, keepdims=keep)
    return g.op("Pow", total, g.op("Reciprocal", p))


@register(aten.unfold)
def _unfold(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, size: int, step: int
) -> ir.Value:
    # windows of `size` elements every `step` along dim: the dimension becomes the number
    # of windows, a last dimension holds each window (torch's Tensor.unfold)
    rank = _rank(node.args[0])
    if rank == 0:
        return g.op("Unsqueeze", x, g.ints([0]))
    dim = _norm_axis(dim, rank)
    i64 = ir.DataType.INT64
    length = g.scalar(g.size(x, dim))
    one, zero = g.const(1, i64), g.const(0, i64)
    stop = g.op("Add", g.op("Sub", length, g.const(size, i64)), one)
    starts = g.op("Range", zero, stop, g.const(step, i64))
    offsets = g.op("Range", zero, g.const(size, i64), one)
    idx = g.op(
        "Add", g.op("Unsqueeze", starts, g.ints([1])), g.op("Unsqueeze", offsets, g.ints([0]))
    )
    windows = g.op("Gather", x, idx, axis=dim)  # x[:dim] + (n, size) + x[dim + 1:]
    perm = [*range(dim + 1), *range(dim + 2, rank + 1), dim + 1]
    return windows if perm == list(range(rank + 1)) else g.op("Transpose", windows, perm=perm)


@register(aten.flip)
def _flip(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dims: Sequence[int]) -> ir.Value:
    rank = _rank(node.args[0])
    axes = sorted({_norm_axis(d, rank) for d in dims}) if rank else []
    if not axes:
        return g.op("Identity", x)
    n = len(axes)
    # a slice from the last element backwards, to before the first one
    lowest = -(2**63)
    return g.op("Slice", x, g.ints([-1] * n), g.ints([lowest] * n), g.ints(axes), g.ints([-1] * n))


@register(aten.einsum)
def _einsum(
    g: GraphBuilder, node: torch.fx.Node, equation: str, operands: Any, path: Any = None
) -> ir.Value:
    # ONNX Einsum takes the same equation (no ellipsis restriction at opset >= 12)
    dtype = _out_dtype(node)
    return g.op("Einsum", *[g.cast(o, dtype) for o in operands], equation=equation.replace(" ", ""))


def _var_std(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dims: Any, correction: Any, keepdim: bool
) -> ir.Value:
    """Variance (or standard deviation for aten.std) over ``dims`` with ``correction``."""
    rank = _rank(node.args[0])
    dtype = _out_dtype(node)
    cdt = _compute_dtype(dtype)
    x = g.cast(x, cdt)
    axes = g.ints(_axes_arg(dims, rank))
    deviation = g.op("Sub", x, g.op("ReduceMean", x, axes, keepdims=1))
    var = g.op("ReduceMean", g.op("Mul", deviation, deviation), axes, keepdims=int(bool(keepdim)))
    if correction:
        # mean of the squares * n / (n - correction), n the number of reduced elements
        sizes = g.op("Gather", g.op("Shape", x), axes, axis=0)
        n = g.cast(g.op("ReduceProd", sizes, keepdims=0), cdt)
        var = g.op("Mul", var, g.op("Div", n, g.op("Sub", n, g.const(float(correction), cdt))))
    if node.target in (aten.std.dim, aten.std.correction):
        var = g.op("Sqrt", var)
    return g.cast(var, dtype)


@register(aten.std.dim, aten.var.dim)
def _var_std_dim(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: Any = None,
    unbiased: bool = True,
    keepdim: bool = False,
) -> ir.Value:
    return _var_std(g, node, x, dim, 1 if unbiased else 0, keepdim)


@register(aten.std.correction, aten.var.correction)
def _var_std_correction(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: Any = None,
    correction: Any = None,
    keepdim: bool = False,
) -> ir.Value:
    return _var_std(g, node, x, dim, 1 if correction is None else correction, keepdim)


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


@register(aten.logsumexp)
def _logsumexp(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dims: Any = None, keepdim: bool = False
) -> ir.Value:
    dtype = _out_dtype(node)
    x = g.cast(x, dtype)
    rank = _rank(node.args[0])
    if rank == 0:
        return x
    axes = g.ints(_axes_arg(dims, rank))
    # log(sum(exp(x - m))) + m with m the maximum (0 where it is infinite: all -inf...)
    m = g.op("ReduceMax", x, axes, keepdims=1)
    m = g.op("Where", g.op("IsInf", m), g.const(0, dtype), m)
    s = g.op("ReduceSum", g.op("Exp", g.op("Sub", x, m)), axes, keepdims=int(bool(keepdim)))
    if not keepdim:
        m = g.op("Squeeze", m, axes)
    return g.op("Add", g.op("Log", s), m)


#: torch padding modes -> onnx Pad modes
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@register(aten.pad.default, aten.constant_pad_nd.default)
def _pad(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    pad: Sequence[Any],
    mode: Any = "constant",
    value: Any = None,
) -> ir.Value:
    if node.target is aten.constant_pad_nd.default:
        # constant_pad_nd(input, pad, value=0)
        mode, value = "constant", (0 if mode == "constant" else mode)
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"pad with mode={mode!r} (supported: {sorted(_PAD_MODES)})")
    if len(pad) % 2:
        raise NotImplementedError(f"pad with an odd number of values {len(pad)}")
    if mode == "circular" and g.opset < 19:
        raise NotImplementedError(f"pad with mode='circular' needs opset >= 19, not {g.opset}")
    rank = _rank(node.args[0])
    n = len(pad) // 2
    # torch lists (begin, end) pairs from the last dimension, onnx begins then ends
    axes = [rank - 1 - i for i in range(n)]
    begins = [pad[2 * i] for i in range(n)]
    ends = [pad[2 * i + 1] for i in range(n)]
    pads = _dims(g, begins + ends)
    dtype = _out_dtype(node)
    if mode != "constant":
        return g.op("Pad", x, pads, None, g.ints(axes), mode=_PAD_MODES[mode])
    if isinstance(value, ir.Value):
        const = g.cast(value, dtype)
    else:
        const = g.const(0 if value is None else value, dtype)
    return g.op("Pad", x, pads, const, g.ints(axes), mode="constant")


@register(aten.broadcast_tensors.default)
def _broadcast_tensors(g: GraphBuilder, node: torch.fx.Node, tensors: Sequence[ir.Value]):
    metas = [_meta(t) for t in node.args[0]]
    outs = _out(node)
    target = [dim_of(d) for d in outs[0].shape]
    res = []
    shape = None
    for t, m in zip(tensors, metas):
        if [dim_of(d) for d in m.shape] == target:
            res.append(t)
            continue
        if shape is None:
            if all(isinstance(d, int) for d in target):
                shape = g.ints(target)
            else:
                # the common shape: a scalar expanded (bidirectional broadcast) to every shape
                dummy = g.const(0, ir.DataType.UINT8)
                for other in tensors:
                    dummy = g.op("Expand", dummy, g.op("Shape", other))
                shape = g.op("Shape", dummy)
        res.append(g.op("Expand", t, shape))
    return tuple(res)


@register(aten.roll.default)
def _roll(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    shifts: Sequence[Any],
    dims: Sequence[int] = (),
) -> ir.Value:
    # every shift is a Concat of the last elements and the first ones along its dimension
    shifts = [shifts] if not isinstance(shifts, (list, tuple)) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    rank = _rank(node.args[0])
    if not dims:
        # no dimension: the flattened tensor is rolled, then reshaped back
        shape = g.op("Shape", x)
        flat = g.op("Reshape", x, g.ints([-1]))
        return g.op("Reshape", _roll_axis(g, flat, shifts[0], 0), shape)
    if len(shifts) != len(dims):
        raise NotImplementedError(f"roll with {len(shifts)} shifts and {len(dims)} dims")
    for shift, dim in zip(shifts, dims):
        x = _roll_axis(g, x, shift, _norm_axis(dim, rank))
    return x


def _roll_axis(g: GraphBuilder, x: ir.Value, shift: Any, axis: int) -> ir.Value:
    size = g.size(x, axis)
    if isinstance(size, int) and not isinstance(shift, ir.Value):
        if size == 0 or shift % size == 0:
            return x
        split: Any = g.ints([size - shift % size])
    else:
        # Mod follows the sign of the divisor (fmod=0): a negative shift rolls backwards
        mod = g.op("Mod", g.scalar(shift), g.scalar(size), fmod=0)
        split = g.as_1d(g.op("Sub", g.scalar(size), mod))
    axes = g.ints([axis])
    tail = g.op("Slice", x, split, g.ints([2**63 - 1]), axes)
    head = g.op("Slice", x, g.ints([0]), split, axes)
    return g.op("Concat", tail, head, axis=axis)
