"""
Translations of the ATen operators writing at indices (``scatter``, ``scatter_add``,
``scatter_reduce``, ``index_put``, ``index_add``) and of those returning indices
(``nonzero``, ``where(condition)``), registered in
:data:`onnx_diagnostic.export.custom.aten_ops.TRANSLATIONS`.

>>> import torch
>>> from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS
>>> torch.ops.aten.index_put in TRANSLATIONS
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx_ir as ir
import torch

from .aten_ops import _meta, _norm_axis, _out_dtype, _rank, _tensor, aten, register
from .aten_shapes import _int_indices, _stack_indices
from .builder import GraphBuilder, dim_of

_I64 = ir.DataType.INT64

#: torch reductions (scatter_reduce, scatter's reduce=) -> onnx ScatterElements reductions
_REDUCTIONS = {
    "sum": "add",
    "add": "add",
    "prod": "mul",
    "multiply": "mul",
    "amax": "max",
    "amin": "min",
}


def _same_shape(a: Any, b: Any) -> bool:
    ma, mb = _meta(a), _meta(b)
    return [dim_of(d) for d in ma.shape] == [dim_of(d) for d in mb.shape]


def _updates(
    g: GraphBuilder, node: torch.fx.Node, index: ir.Value, src: Any, dtype: ir.DataType
) -> ir.Value:
    """
    The values ScatterElements writes: onnx wants the shape of ``index``, torch reads the
    first elements of a larger ``src`` or broadcasts a scalar value.
    """
    if not isinstance(src, ir.Value) or _rank(node.args[3]) == 0:
        return g.op("Expand", _tensor(g, src, dtype), g.op("Shape", index))
    src = g.cast(src, dtype)
    if _same_shape(node.args[2], node.args[3]):
        return src
    rank = _rank(node.args[2])
    return g.op("Slice", src, g.ints([0] * rank), g.op("Shape", index), g.ints(list(range(rank))))


def _scatter_elements(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: int,
    index: ir.Value,
    src: Any,
    reduce: str | None,
    include_self: bool = True,
) -> ir.Value:
    name = str(node.target.overloadpacket).replace("aten.", "")
    rank = _rank(node.args[0])
    if rank == 0:
        raise NotImplementedError(f"{name} into a 0-d tensor")
    if reduce is not None and reduce not in _REDUCTIONS and reduce != "mean":
        raise NotImplementedError(f"{name} with reduce={reduce!r}")
    dim = _norm_axis(dim, rank)
    dtype = _out_dtype(node)
    x = g.cast(x, dtype)
    index = g.cast(index, _I64)
    updates = _updates(g, node, index, src, dtype)
    if reduce is None:
        return g.op("ScatterElements", x, index, updates, axis=dim)
    if reduce == "mean":
        return _scatter_mean(g, x, dim, index, updates, dtype, include_self)
    reduction = _REDUCTIONS[reduce]
    if not include_self:
        # the elements receiving a value forget theirs: they first take the neutral
        # element of the reduction (or one of the values written for max and min)
        if reduction in ("add", "mul"):
            neutral = g.op("Expand", g.const(int(reduction == "mul"), dtype), g.op("Shape", index))
            x = g.op("ScatterElements", x, index, neutral, axis=dim)
        else:
            x = g.op("ScatterElements", x, index, updates, axis=dim)
    if dtype == ir.DataType.BOOL:
        # onnxruntime has no boolean reduction: through uint8, a sum of booleans is an or,
        # a product an and
        res = g.op(
            "ScatterElements",
            g.cast(x, ir.DataType.UINT8),
            index,
            g.cast(updates, ir.DataType.UINT8),
            axis=dim,
            reduction={"add": "max", "mul": "min"}.get(reduction, reduction),
        )
        return g.cast(res, dtype)
    return g.op("ScatterElements", x, index, updates, axis=dim, reduction=reduction)


def _scatter_mean(
    g: GraphBuilder,
    x: ir.Value,
    dim: int,
    index: ir.Value,
    updates: ir.Value,
    dtype: ir.DataType,
    include_self: bool,
) -> ir.Value:
    """scatter_reduce(..., reduce="mean"): sum and count of the values each element gets."""
    shape_x = g.op("Shape", x)
    count = g.op("ConstantOfShape", shape_x, value=ir.tensor([int(include_self)], dtype=_I64))
    ones = g.op("Expand", g.const(1, _I64), g.op("Shape", index))
    count = g.op("ScatterElements", count, index, ones, axis=dim, reduction="add")
    base = x
    if not include_self:
        zeros = g.op("Expand", g.const(0, dtype), g.op("Shape", index))
        base = g.op("ScatterElements", x, index, zeros, axis=dim)
    total = g.op("ScatterElements", base, index, updates, axis=dim, reduction="add")
    safe = g.op("Max", count, g.const(1, _I64))
    if dtype.is_floating_point():
        mean = g.op("Div", total, g.cast(safe, dtype))
    else:
        # torch divides integers with rounding toward -inf
        div = g.cast(safe, dtype)
        mean = g.op("Div", g.op("Sub", total, g.op("Mod", total, div, fmod=0)), div)
    return g.op("Where", g.op("Greater", count, g.const(0, _I64)), mean, x)


@register(aten.scatter, aten.scatter_)
def _scatter(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: int,
    index: ir.Value,
    src: Any,
    reduce: str | None = None,
) -> ir.Value:
    return _scatter_elements(g, node, x, dim, index, src, reduce)


@register(aten.scatter_add, aten.scatter_add_)
def _scatter_add(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, dim: int, index: ir.Value, src: ir.Value
) -> ir.Value:
    return _scatter_elements(g, node, x, dim, index, src, "sum")


@register(aten.scatter_reduce.two, aten.scatter_reduce_.two)
def _scatter_reduce(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: int,
    index: ir.Value,
    src: ir.Value,
    reduce: str,
    include_self: bool = True,
) -> ir.Value:
    return _scatter_elements(g, node, x, dim, index, src, reduce, include_self=include_self)


def _along(
    node: torch.fx.Node, dim: int, name: str, source: bool = False
) -> tuple[int, int, ir.DataType]:
    """Rank of the input, ``dim`` made positive, output type of an index_* op along
    ``dim`` (the input, and ``source`` if True, must not be 0-d)."""
    rank = _rank(node.args[0])
    if rank == 0 or (source and _rank(node.args[3]) == 0):
        raise NotImplementedError(f"{name} on a 0-d tensor")
    return rank, _norm_axis(dim, rank), _out_dtype(node)


@register(aten.index_add, aten.index_add_)
def _index_add(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: int,
    index: ir.Value,
    source: ir.Value,
    alpha: Any = 1,
) -> ir.Value:
    rank, dim, dtype = _along(node, dim, "index_add", source=True)
    source = g.cast(source, dtype)
    if alpha != 1:
        source = g.op("Mul", source, _tensor(g, alpha, dtype))
    # index[j] is the position along dim of source[..., j, ...]
    shape = [1] * rank
    shape[dim] = -1
    idx = g.op("Reshape", g.cast(index, _I64), g.ints(shape))
    idx = g.op("Expand", idx, g.op("Shape", source))
    if dtype == ir.DataType.BOOL:
        res = g.op(
            "ScatterElements",
            g.cast(x, ir.DataType.UINT8),
            idx,
            g.cast(source, ir.DataType.UINT8),
            axis=dim,
            reduction="max",
        )
        return g.cast(res, dtype)
    return g.op("ScatterElements", g.cast(x, dtype), idx, source, axis=dim, reduction="add")


@register(aten.index_copy, aten.index_copy_)
def _index_copy(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: int,
    index: ir.Value,
    source: ir.Value,
) -> ir.Value:
    # x[..., index[j], ...] = source[..., j, ...] along dim: how a StaticCache writes the
    # new keys and values at cache_position
    rank, dim, dtype = _along(node, dim, "index_copy")
    source = g.cast(source, dtype)
    if _rank(node.args[3]) != rank:  # a 0-d index: source lacks the dimension
        source = g.op("Unsqueeze", source, g.ints([dim]))
    shape = [1] * rank
    shape[dim] = -1
    idx = g.op("Reshape", g.cast(index, _I64), g.ints(shape))
    idx = g.op("Expand", idx, g.op("Shape", source))
    return g.op("ScatterElements", g.cast(x, dtype), idx, source, axis=dim)


_INDEX_FILL = [
    getattr(getattr(aten, name), overload)
    for name in ("index_fill", "index_fill_")
    for overload in ("int_Scalar", "int_Tensor")
    if hasattr(aten, name) and hasattr(getattr(aten, name), overload)
]


@register(*_INDEX_FILL)
def _index_fill(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    dim: int,
    index: ir.Value,
    value: Any,
) -> ir.Value:
    # torch>=2.15 decomposes x[:, idx] = scalar into index_fill
    rank, dim, dtype = _along(node, dim, "index_fill")
    # mask[p] = p is one of the indices, for every position p along dim (negative ones too)
    size = g.scalar(g.size(x, dim))
    positions = g.op("Range", g.const(0, _I64), size, g.const(1, _I64))
    idx = g.op("Reshape", g.cast(index, _I64), g.ints([1, -1]))
    idx = g.op("Add", idx, g.op("Mul", size, g.cast(g.op("Less", idx, g.const(0, _I64)), _I64)))
    hits = g.op("Equal", g.op("Unsqueeze", positions, g.ints([1])), idx)
    mask = g.op("ReduceMax", g.cast(hits, ir.DataType.INT32), g.ints([1]), keepdims=0)
    shape = [1] * rank
    shape[dim] = -1
    mask = g.cast(g.op("Reshape", mask, g.ints(shape)), ir.DataType.BOOL)
    fill = g.cast(value, dtype) if isinstance(value, ir.Value) else _tensor(g, value, dtype)
    return g.op("Where", mask, fill, g.cast(x, dtype))


_INDEX_PUT = [aten.index_put, aten.index_put_, aten._index_put_impl_]
if hasattr(aten, "_unsafe_index_put"):
    _INDEX_PUT.append(aten._unsafe_index_put)


@register(*_INDEX_PUT)
def _index_put(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    indices: Sequence[Any],
    values: ir.Value,
    accumulate: bool = False,
    unsafe: bool = False,
) -> ir.Value:
    """
    ``x[indices] = values`` (``+=`` with ``accumulate``): the indexed dimensions move
    first, every index is broadcast and stacked, ScatterND writes ``values`` broadcast
    to the shape of ``x[indices]``.
    """
    rank = _rank(node.args[0])
    dtype = _out_dtype(node)
    expanded = _int_indices(g, node.args[1], indices)
    if len(expanded) > rank:
        raise NotImplementedError(f"index_put with {len(expanded)} indices on a {rank}-d tensor")
    positions = [i for i, (idx, _) in enumerate(expanded) if idx is not None]
    if not positions:
        raise NotImplementedError("index_put without any index tensor")
    idx = []
    for p in positions:
        t = expanded[p][0]
        # a negative index counts from the end
        size = g.scalar(g.size(x, p))
        idx.append(g.op("Where", g.op("Less", t, g.const(0, _I64)), g.op("Add", t, size), t))
    others = [i for i in range(rank) if i not in positions]
    perm = positions + others
    moved = perm != list(range(rank))
    xt = g.op("Transpose", g.cast(x, dtype), perm=perm) if moved else g.cast(x, dtype)
    stacked, bshape = _stack_indices(g, idx)
    # values are broadcast to x[indices]: the broadcast index shape in place of the indexed
    # dimensions when they are adjacent, first otherwise
    b = max(expanded[p][1] for p in positions)
    r_out = b + len(others)
    vals = g.cast(values, dtype)
    vrank = _rank(node.args[2])
    if vrank > r_out:
        # torch accepts leading dimensions of size 1
        extra = [dim_of(d) for d in _meta(node.args[2]).shape[: vrank - r_out]]
        if any(d != 1 for d in extra):
            raise NotImplementedError(
                f"index_put of values of shape {list(_meta(node.args[2]).shape)} "
                f"into a {r_out}-d selection"
            )
        vals = g.op("Squeeze", vals, g.ints(list(range(vrank - r_out))))
        vrank = r_out
    if vrank < r_out:
        vals = g.op("Unsqueeze", vals, g.ints(list(range(r_out - vrank))))
    first = positions[0]
    adjacent = positions == list(range(first, positions[-1] + 1))
    if adjacent and first > 0:
        vperm = list(range(first, first + b)) + list(range(first)) + list(range(first + b, r_out))
        vals = g.op("Transpose", vals, perm=vperm)
    rest = g.op("Shape", xt, start=len(positions)) if others else None
    target = bshape if rest is None else g.op("Concat", bshape, rest, axis=0)
    vals = g.op("Expand", vals, target)
    if accumulate and dtype == ir.DataType.BOOL:
        res = g.op(
            "ScatterND",
            g.cast(xt, ir.DataType.UINT8),
            stacked,
            g.cast(vals, ir.DataType.UINT8),
            reduction="max",
        )
        res = g.cast(res, dtype)
    else:
        res = g.op("ScatterND", xt, stacked, vals, reduction="add" if accumulate else None)
    if moved:
        inverse = [perm.index(i) for i in range(rank)]
        res = g.op("Transpose", res, perm=inverse)
    return res


@register(aten.nonzero.default)
def _nonzero(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    if _rank(node.args[0]) == 0:
        raise NotImplementedError("nonzero of a 0-d tensor")
    return g.op("Transpose", g.op("NonZero", g.cast(x, ir.DataType.BOOL)), perm=[1, 0])


@register(aten.where.default)
def _where_indices(g: GraphBuilder, node: torch.fx.Node, cond: ir.Value) -> tuple[ir.Value, ...]:
    """``torch.where(condition)``: the indices of the true elements, one tensor per dimension."""
    rank = _rank(node.args[0])
    if rank == 0:
        raise NotImplementedError("where(condition) of a 0-d condition")
    nz = g.op("NonZero", g.cast(cond, ir.DataType.BOOL))
    first = g.ints([0])
    if rank == 1:
        return (g.op("Squeeze", nz, first),)
    rows = g.op("Split", nz, g.ints([1] * rank), axis=0, outputs=rank)
    return tuple(g.op("Squeeze", r, first) for r in rows)
