"""
Translations of the ATen operators mixture-of-experts layers route tokens with
(``topk``, ``sort``, ``argsort``, ``histc``, ``one_hot``, ``repeat_interleave``) and of the
grouped matrix multiplication their experts run (``aten._grouped_mm`` and
transformers' custom operator ``transformers::grouped_mm_fallback``), registered in
:data:`onnx_diagnostic.export.custom.aten_ops.TRANSLATIONS`.

>>> import torch
>>> from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS
>>> torch.ops.aten.topk.default in TRANSLATIONS
True
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
import torch

from .aten_ops import (
    _compute_dtype,
    _dims,
    _meta,
    _norm_axis,
    _out_dtype,
    _rank,
    _static_shape,
    aten,
    register,
)
from .builder import GraphBuilder, dim_of, ir_dtype

_I64 = ir.DataType.INT64

#: element types onnxruntime's TopK takes
_TOPK_TYPES = {ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.INT32, ir.DataType.INT64}


def _sortable(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    """x in a type TopK accepts: halves become float, small integers and booleans int64."""
    dtype = ir_dtype(_meta(node.args[0]).dtype)
    if dtype in _TOPK_TYPES:
        return g.cast(x, dtype)
    return g.cast(x, ir.DataType.FLOAT if dtype.is_floating_point() else _I64)


def _topk(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, k: Any, dim: int, largest: bool
) -> tuple[ir.Value, ir.Value]:
    name = str(node.target.overloadpacket).replace("aten.", "")
    rank = _rank(node.args[0])
    if rank == 0:
        raise NotImplementedError(f"{name} of a 0-d tensor")
    dim = _norm_axis(dim, rank)
    # TopK breaks ties with the lower index first: a stable sort in both directions
    values, indices = g.op(
        "TopK", _sortable(g, node, x), g.as_1d(k), axis=dim, largest=int(bool(largest)), outputs=2
    )
    return values, indices


@register(aten.topk.default)
def _topk_op(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    k: Any,
    dim: int = -1,
    largest: bool = True,
    sorted: bool = True,
) -> tuple[ir.Value, ir.Value]:
    # sorted=False lets torch choose the order, the sorted one is one of them
    values, indices = _topk(g, node, x, k, dim, largest)
    return g.cast(values, _out_dtype(node)), indices


def _sort_args(args: tuple, kwargs: dict) -> tuple[int, bool]:
    """(dim, descending) of sort.default(x, dim, descending) and sort.stable(x, *, ...)."""
    dim = args[0] if len(args) > 0 else kwargs.get("dim", -1)
    descending = args[1] if len(args) > 1 else kwargs.get("descending", False)
    return dim, bool(descending)


@register(aten.sort.default, aten.sort.stable)
def _sort(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, *args: Any, **kwargs: Any
) -> tuple[ir.Value, ir.Value]:
    dim, descending = _sort_args(args, kwargs)
    dim = _norm_axis(dim, max(_rank(node.args[0]), 1))
    if _rank(node.args[0]) == 0:
        return x, g.const(0, _I64)
    values, indices = _topk(g, node, x, g.size(x, dim), dim, descending)
    return g.cast(values, _out_dtype(node)), indices


@register(aten.argsort.default, aten.argsort.stable)
def _argsort(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, *args: Any, **kwargs: Any):
    dim, descending = _sort_args(args, kwargs)
    if _rank(node.args[0]) == 0:
        return g.const(0, _I64)
    dim = _norm_axis(dim, _rank(node.args[0]))
    return _topk(g, node, x, g.size(x, dim), dim, descending)[1]


@register(aten.histc.default)
def _histc(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, bins: int = 100, min: Any = 0, max: Any = 0
) -> ir.Value:
    if not isinstance(bins, int) or bins <= 0:
        raise NotImplementedError(f"histc with bins={bins!r} (a positive integer only)")
    if isinstance(min, ir.Value) or isinstance(max, ir.Value):
        raise NotImplementedError("histc with symbolic bounds min or max")
    dtype = _out_dtype(node)
    cdt = _compute_dtype(dtype)
    flat = g.op("Reshape", g.cast(x, cdt), g.ints([-1]))
    if min == max:
        # torch takes the bounds of the data, widened by one if they are equal
        lo = g.op("ReduceMin", flat, keepdims=0)
        hi = g.op("ReduceMax", flat, keepdims=0)
        same = g.op("Equal", lo, hi)
        one = g.const(1, cdt)
        lo = g.op("Where", same, g.op("Sub", lo, one), lo)
        hi = g.op("Where", same, g.op("Add", hi, one), hi)
    else:
        lo, hi = g.const(min, cdt), g.const(max, cdt)
    # bin of x: floor((x - min) * bins / (max - min)), x == max goes into the last bin,
    # values outside [min, max] are ignored
    scaled = g.op(
        "Div", g.op("Mul", g.op("Sub", flat, lo), g.const(bins, cdt)), g.op("Sub", hi, lo)
    )
    pos = g.cast(g.op("Floor", scaled), _I64)
    pos = g.op("Where", g.op("Equal", flat, hi), g.const(bins - 1, _I64), pos)
    inside = g.op("And", g.op("GreaterOrEqual", flat, lo), g.op("LessOrEqual", flat, hi))
    classes = g.ints(list(range(bins)))
    hits = g.op("Equal", g.op("Unsqueeze", pos, g.ints([1])), classes)
    hits = g.op("And", hits, g.op("Unsqueeze", inside, g.ints([1])))
    counts = g.op("ReduceSum", g.cast(hits, cdt), g.ints([0]), keepdims=0)
    return g.cast(counts, dtype)


@register(aten.one_hot.default)
def _one_hot(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, num_classes: Any = -1):
    if isinstance(num_classes, int) and num_classes < 0:
        # torch.export cannot trace it either: the number of classes depends on the data
        raise NotImplementedError("one_hot with num_classes=-1 (max(x) + 1 classes)")
    x = g.cast(x, _I64)
    classes = g.op("Range", g.const(0, _I64), g.scalar(num_classes), g.const(1, _I64))
    hits = g.op("Equal", g.op("Unsqueeze", x, g.ints([-1])), classes)
    return g.cast(hits, _out_dtype(node))


def _repeat_int(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, repeats: Any, dim: int, rank: int
) -> ir.Value:
    """x repeated ``repeats`` times (an int or a 0-d value) along dim, element by element."""
    expand = [1] * (rank + 1)
    expand[dim + 1] = repeats
    rep = g.op("Expand", g.op("Unsqueeze", x, g.ints([dim + 1])), _dims(g, expand))
    static = _static_shape(node)
    if static is not None:
        return g.op("Reshape", rep, g.ints(static))
    # dimensions before dim are copied (0), dim absorbs the repetitions (-1)
    shape = [0] * dim + [-1] + [g.size(x, i) for i in range(dim + 1, rank)]
    return g.op("Reshape", rep, _dims(g, shape))


def _repeat_positions(g: GraphBuilder, repeats: ir.Value) -> ir.Value:
    """repeat_interleave(repeats): i repeated repeats[i] times, for a 1-D tensor repeats."""
    repeats = g.cast(repeats, _I64)
    ends = g.op("CumSum", repeats, g.const(0, _I64))
    total = g.op("ReduceSum", repeats, keepdims=0)
    positions = g.op("Range", g.const(0, _I64), total, g.const(1, _I64))
    # output position j comes from the number of ends <= j
    passed = g.op(
        "LessOrEqual",
        g.op("Unsqueeze", ends, g.ints([0])),
        g.op("Unsqueeze", positions, g.ints([1])),
    )
    return g.op("ReduceSum", g.cast(passed, _I64), g.ints([1]), keepdims=0)


@register(aten.repeat_interleave.self_int, aten.repeat_interleave.self_Tensor)
def _repeat_interleave(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    repeats: Any,
    dim: int | None = None,
    output_size: Any = None,
) -> ir.Value:
    rank = _rank(node.args[0])
    if dim is None or rank == 0:
        # torch flattens the input first
        x = g.op("Reshape", x, g.ints([-1]))
        rank, dim = 1, 0
    dim = _norm_axis(dim, rank)
    rmeta = _meta(node.args[1])
    if not isinstance(rmeta, torch.Tensor):
        return _repeat_int(g, node, x, repeats, dim, rank)
    if rmeta.dim() == 0 or (rmeta.dim() == 1 and dim_of(rmeta.shape[0]) == 1):
        # one repetition count for every element
        count = g.op("Reshape", g.cast(repeats, _I64), g.ints([]))
        return _repeat_int(g, node, x, count, dim, rank)
    return g.op("Gather", x, _repeat_positions(g, repeats), axis=dim)


@register(aten.repeat_interleave.Tensor)
def _repeat_interleave_tensor(
    g: GraphBuilder, node: torch.fx.Node, repeats: ir.Value, output_size: Any = None
) -> ir.Value:
    if _rank(node.args[0]) != 1:
        raise NotImplementedError("repeat_interleave(repeats) of a tensor which is not 1-D")
    return _repeat_positions(g, repeats)


def _grouped_rows(
    g: GraphBuilder, x: ir.Value, w: ir.Value, offs: ir.Value, dtype: ir.DataType
) -> ir.Value:
    """
    Rows ``offs[e - 1]:offs[e]`` of x (S, K) times ``w[e]`` (E, K, N): every row times every
    expert (one MatMul), then the product of its expert is selected. Rows past ``offs[-1]``
    belong to no expert and get zeros (transformers' fallback zeros them, torch's kernel
    leaves them uninitialized).
    """
    n_experts = g.scalar(g.size(w, 0))
    offs = g.cast(offs, _I64)
    rows = g.op("Range", g.const(0, _I64), g.scalar(g.size(x, 0)), g.const(1, _I64))
    ended = g.op(
        "LessOrEqual", g.op("Unsqueeze", offs, g.ints([0])), g.op("Unsqueeze", rows, g.ints([1]))
    )
    expert = g.op("ReduceSum", g.cast(ended, _I64), g.ints([1]), keepdims=0)
    valid = g.op("Unsqueeze", g.op("Less", expert, n_experts), g.ints([1]))
    expert = g.op("Min", expert, g.op("Sub", n_experts, g.const(1, _I64)))
    # halves are multiplied in float (onnxruntime has no bfloat16 MatMul nor Where on CPU)
    cdt = _compute_dtype(dtype)
    every = g.op("MatMul", g.cast(x, cdt), g.cast(w, cdt))  # (E, S, N)
    every = g.op("Transpose", every, perm=[1, 0, 2])  # (S, E, N)
    mine = g.op("GatherND", every, g.op("Unsqueeze", expert, g.ints([1])), batch_dims=1)
    return g.cast(g.op("Where", valid, mine, g.const(0, cdt)), dtype)


def _check_grouped(name: str, node: torch.fx.Node) -> None:
    ranks = (_rank(node.args[0]), _rank(node.args[1]))
    if ranks != (2, 3):
        raise NotImplementedError(
            f"{name} of a {ranks[0]}-d input and a {ranks[1]}-d weight "
            "(only 2-d input, 3-d weight and offsets: the mixture-of-experts case)"
        )


@register(aten._grouped_mm.default)
def _grouped_mm(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    w: ir.Value,
    offs: ir.Value | None = None,
    bias: ir.Value | None = None,
    out_dtype: Any = None,
) -> ir.Value:
    _check_grouped("_grouped_mm", node)
    if offs is None:
        raise NotImplementedError("_grouped_mm of a 2-d input without offs")
    if bias is not None:
        # torch itself does not run it ("Bias not supported yet")
        raise NotImplementedError("_grouped_mm with a bias")
    return _grouped_rows(g, x, w, offs, _out_dtype(node))


def _grouped_mm_fallback(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, w: ir.Value, offs: ir.Value
) -> ir.Value:
    """transformers' ``grouped_mm_fallback(input, weight, offs)``: same as ``_grouped_mm``."""
    _check_grouped("transformers::grouped_mm_fallback", node)
    return _grouped_rows(g, x, w, offs, _out_dtype(node))


# transformers registers its operator when its moe module is imported, maybe after this
# one: the translation is registered under the operator's name
register("transformers.grouped_mm_fallback.default", "transformers.grouped_mm_fallback")(
    _grouped_mm_fallback
)
