"""
What the passes of the custom exporter know about a value without running the model: the
content of constants, numpy kernels evaluating one node on constant inputs (used by
:func:`fold_constants <onnx_diagnostic.export.custom.passes.fold_constants>`), static
dimensions, element types and ranks of untyped intermediate results, the nodes returning
one of their inputs, the axes of two composed ``Unsqueeze``/``Squeeze``. Nothing here modifies a
graph; the passes are in :mod:`onnx_diagnostic.export.custom.passes`. An integer ``Div``
truncates toward zero as onnxruntime does:

>>> import numpy as np
>>> import onnx_ir as ir
>>> from onnx_diagnostic.export.custom.folding import _evaluate
>>> node = ir.node("Div", [ir.Value(name="a"), ir.Value(name="b")])
>>> _evaluate(node, [np.array([7, -7]), np.array([2, 2])], size_limit=10, opset=23)
[array([ 3, -3])]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# constants
# ----------------------------------------------------------------------------------------


def _attr(node: ir.Node, name: str, default: Any = None) -> Any:
    att = node.attributes.get(name)
    return default if att is None else att.value


def _constant_node_array(node: ir.Node) -> np.ndarray | None:
    """The value of a ``Constant`` node as an array, None for strings or sparse values."""
    if len(node.attributes) != 1:
        return None
    name, att = next(iter(node.attributes.items()))
    if name == "value":
        return None if att.value.dtype == ir.DataType.STRING else att.value.numpy()
    conversions = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    if name not in conversions:
        return None
    return np.asarray(att.value, dtype=conversions[name])


def _const(value: ir.Value | None) -> np.ndarray | None:
    """The constant array held by ``value``, None if it is not a constant."""
    if value is None or value.is_graph_input():
        return None
    producer = value.producer()
    if producer is None:
        if value.is_initializer() and value.const_value is not None:
            if value.const_value.dtype == ir.DataType.STRING:
                return None
            return value.const_value.numpy()
        return None
    if producer.op_type == "Constant" and producer.domain == "":
        return _constant_node_array(producer)
    return None


def _static_dims(value: ir.Value | None) -> list[int | None] | None:
    """Dimensions of ``value`` (None for a dynamic one), None when the rank is unknown."""
    if value is None or value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape.dims]


def _axes(node: ir.Node, inputs: Sequence[np.ndarray | None], index: int) -> list[int] | None:
    axes = _attr(node, "axes")
    if axes is None and len(inputs) > index and inputs[index] is not None:
        axes = inputs[index].tolist()
    return None if axes is None else [int(a) for a in np.atleast_1d(axes)]


# ----------------------------------------------------------------------------------------
# numpy kernels
# ----------------------------------------------------------------------------------------


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.any(b == 0):
        raise ZeroDivisionError("integer division by zero is not folded")
    q = np.floor_divide(a, b)
    adjust = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return (q + adjust.astype(q.dtype)).astype(a.dtype)


def _div(node: ir.Node, x: list) -> list:
    a, b = x
    if np.issubdtype(a.dtype, np.integer):
        return [_int_div(a, b)]
    return [(a / b).astype(a.dtype)]


def _reshape(node: ir.Node, x: list) -> list:
    data, shape = x
    shape = [int(s) for s in shape]
    if not _attr(node, "allowzero", 0):
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [data.reshape(shape)]


def _slice(node: ir.Node, x: list) -> list:
    data = x[0]
    starts, ends = x[1].tolist(), x[2].tolist()
    axes = x[3].tolist() if len(x) > 3 and x[3] is not None else list(range(len(starts)))
    steps = x[4].tolist() if len(x) > 4 and x[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = data.shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return [data[tuple(index)].copy()]


def _reduce(fct: Callable) -> Callable:
    def kernel(node: ir.Node, x: list) -> list:
        axes = _axes(node, x, 1)
        keepdims = bool(_attr(node, "keepdims", 1))
        if not axes:
            if _attr(node, "noop_with_empty_axes", 0):
                return [x[0].copy()]
            axes = list(range(x[0].ndim))
        res = fct(x[0], axis=tuple(axes), keepdims=keepdims)
        return [np.asarray(res, dtype=x[0].dtype)]

    return kernel


def _cumsum(node: ir.Node, x: list) -> list:
    data, axis = x[0], int(np.asarray(x[1]).reshape(-1)[0])
    if _attr(node, "reverse", 0):
        data = np.flip(data, axis)
    res = np.cumsum(data, axis=axis, dtype=data.dtype)
    if _attr(node, "exclusive", 0):
        res = res - data
    if _attr(node, "reverse", 0):
        res = np.flip(res, axis)
    return [res.copy()]


def _cast(node: ir.Node, x: list) -> list:
    to = ir.DataType(_attr(node, "to"))
    if to == ir.DataType.STRING or to.bitwidth < 8 or (to.is_floating_point() and to.bitwidth == 8):
        raise NotImplementedError(f"Cast to {to} is not folded")
    return [x[0].astype(to.numpy())]


def _elementwise(fct: Callable, same_type: bool = True) -> Callable:
    def kernel(node: ir.Node, x: list) -> list:
        res = np.asarray(fct(*x))
        return [res.astype(x[0].dtype) if same_type else res]

    return kernel


def _variadic(fct: Callable) -> Callable:
    def kernel(node: ir.Node, x: list) -> list:
        res = x[0]
        for other in x[1:]:
            res = fct(res, other)
        return [np.asarray(res, dtype=x[0].dtype)]

    return kernel


def _pow(node: ir.Node, x: list) -> list:
    base, exponent = x
    if np.issubdtype(base.dtype, np.integer):
        if np.any(exponent < 0):
            raise ValueError("negative integer power is not folded")
        return [np.power(base, exponent.astype(base.dtype)).astype(base.dtype)]
    return [np.power(base, exponent.astype(base.dtype)).astype(base.dtype)]


def _constant_of_shape(node: ir.Node, x: list) -> list:
    value = _attr(node, "value")
    fill = np.zeros((1,), dtype=np.float32) if value is None else value.numpy().reshape(-1)
    return [np.full([int(s) for s in x[0]], fill[0], dtype=fill.dtype)]


def _trilu(node: ir.Node, x: list) -> list:
    k = int(x[1]) if len(x) > 1 and x[1] is not None else 0
    return [np.triu(x[0], k) if _attr(node, "upper", 1) else np.tril(x[0], k)]


_KERNELS: dict[str, Callable[[ir.Node, list], list]] = {
    "Identity": lambda n, x: [x[0].copy()],
    "Size": lambda n, x: [np.array(x[0].size, dtype=np.int64)],
    "Gather": lambda n, x: [np.take(x[0], x[1], axis=_attr(n, "axis", 0))],
    "GatherElements": lambda n, x: [np.take_along_axis(x[0], x[1], axis=_attr(n, "axis", 0))],
    "Concat": lambda n, x: [np.concatenate(x, axis=_attr(n, "axis"))],
    "Unsqueeze": lambda n, x: [np.expand_dims(x[0], tuple(_axes(n, x, 1)))],
    "Squeeze": lambda n, x: [
        np.squeeze(x[0], axis=None if (a := _axes(n, x, 1)) is None else tuple(a))
    ],
    "Reshape": _reshape,
    "Flatten": lambda n, x: [x[0].reshape((math.prod(x[0].shape[: _attr(n, "axis", 1)]), -1))],
    "Cast": _cast,
    "CastLike": lambda n, x: [x[0].astype(x[1].dtype)],
    "Add": _elementwise(np.add),
    "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply),
    "Div": _div,
    "Neg": _elementwise(np.negative),
    "Abs": _elementwise(np.abs),
    "Sign": _elementwise(np.sign),
    "Floor": _elementwise(np.floor),
    "Ceil": _elementwise(np.ceil),
    "Sqrt": _elementwise(np.sqrt),
    "Exp": _elementwise(np.exp),
    "Log": _elementwise(np.log),
    "Reciprocal": _elementwise(np.reciprocal),
    "Pow": _pow,
    "Equal": _elementwise(np.equal, False),
    "Less": _elementwise(np.less, False),
    "LessOrEqual": _elementwise(np.less_equal, False),
    "Greater": _elementwise(np.greater, False),
    "GreaterOrEqual": _elementwise(np.greater_equal, False),
    "Not": _elementwise(np.logical_not, False),
    "And": _elementwise(np.logical_and, False),
    "Or": _elementwise(np.logical_or, False),
    "Xor": _elementwise(np.logical_xor, False),
    "Where": lambda n, x: [np.where(x[0], x[1], x[2]).astype(x[1].dtype)],
    "Min": _variadic(np.minimum),
    "Max": _variadic(np.maximum),
    "Sum": _variadic(np.add),
    "Range": lambda n, x: [np.arange(x[0], x[1], x[2], dtype=x[0].dtype)],
    "Slice": _slice,
    "Expand": lambda n, x: [
        np.broadcast_to(x[0], np.broadcast_shapes(x[0].shape, tuple(x[1].tolist()))).copy()
    ],
    "Tile": lambda n, x: [np.tile(x[0], x[1].tolist())],
    "ConstantOfShape": _constant_of_shape,
    "Transpose": lambda n, x: [np.transpose(x[0], _attr(n, "perm")).copy()],
    "ReduceProd": _reduce(np.prod),
    "ReduceSum": _reduce(np.sum),
    "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min),
    "Trilu": _trilu,
    "CumSum": _cumsum,
}


def _output_size(op_type: str, x: list) -> int | None:
    """Number of elements an op creates, computed before running it (None if not known)."""
    if op_type == "ConstantOfShape":
        return math.prod(int(s) for s in x[0])
    if op_type == "Expand":
        return math.prod(np.broadcast_shapes(x[0].shape, tuple(int(s) for s in x[1])))
    if op_type == "Range":
        start, limit, delta = (np.asarray(v).item() for v in x)
        return max(int(math.ceil((limit - start) / delta)), 0) if delta else None
    if op_type == "Tile":
        return x[0].size * math.prod(int(s) for s in x[1])
    return None


def _run_reference(node: ir.Node, x: list, opset: int) -> list:
    """Runs one node with :class:`onnx.reference.ReferenceEvaluator`."""
    import onnx
    import onnx.helper as oh
    from onnx.reference import ReferenceEvaluator

    names = [f"i{i}" if v is not None else "" for i, v in enumerate(x)]
    outs = [f"o{i}" for i in range(len(node.outputs))]
    proto_node = ir.serde.serialize_node(node)
    del proto_node.input[:]
    proto_node.input.extend(names)
    del proto_node.output[:]
    proto_node.output.extend(outs)
    graph = oh.make_graph(
        [proto_node],
        "one",
        [
            oh.make_tensor_value_info(n, ir.DataType.from_numpy(v.dtype).value, v.shape)
            for n, v in zip(names, x)
            if v is not None
        ],
        [oh.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs],
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    feeds = {n: v for n, v in zip(names, x) if v is not None}
    return [np.asarray(r) for r in ReferenceEvaluator(proto).run(None, feeds)]


def _evaluate(node: ir.Node, x: list, size_limit: int, opset: int) -> list | None:
    """Evaluates a node on constant inputs, None when it cannot or should not be folded."""
    op_type = node.op_type
    try:
        size = _output_size(op_type, x)
        if size is not None and size > size_limit:
            return None
        if op_type in _KERNELS:
            results = _KERNELS[op_type](node, x)
        elif sum(v.size for v in x if v is not None) <= min(size_limit, 1 << 16):
            results = _run_reference(node, x, opset)
        else:
            return None
    except Exception as e:  # a node that cannot be evaluated stays as it is
        logger.debug("[fold_constants] %s %r not folded: %s", op_type, node.name, e)
        return None
    results = [np.asarray(r) for r in results]
    if len(results) != len(node.outputs) or any(r.size > size_limit for r in results):
        return None
    for res, out in zip(results, node.outputs):
        if out.dtype is not None and ir.DataType.from_numpy(res.dtype) != out.dtype:
            return None
        dims = _static_dims(out)
        if dims is not None and (
            len(dims) != res.ndim or any(d is not None and d != s for d, s in zip(dims, res.shape))
        ):
            return None
    return results


# ----------------------------------------------------------------------------------------
# static shapes
# ----------------------------------------------------------------------------------------


def _shape_slice(node: ir.Node, rank: int) -> tuple[int, int]:
    start, end = _attr(node, "start", 0), _attr(node, "end", rank)
    start, end = start + rank if start < 0 else start, end + rank if end < 0 else end
    return min(max(start, 0), rank), min(max(end, 0), rank)


def _fold_shape(node: ir.Node) -> list | None:
    """``Shape``, ``Size`` or ``Gather(Shape(x), cst)`` when the dimensions are static."""
    if node.op_type in {"Shape", "Size"}:
        dims = _static_dims(node.inputs[0])
        if dims is None:
            return None
        if node.op_type == "Size":
            return None if None in dims else [np.array(math.prod(dims), dtype=np.int64)]
        start, end = _shape_slice(node, len(dims))
        dims = dims[start:end]
        return None if None in dims else [np.array(dims, dtype=np.int64)]
    if node.op_type != "Gather" or _attr(node, "axis", 0) != 0:
        return None
    shape_node, indices = node.inputs[0].producer(), _const(node.inputs[1])
    if (
        shape_node is None
        or shape_node.op_type != "Shape"
        or shape_node.domain != ""
        or indices is None
    ):
        return None
    dims = _static_dims(shape_node.inputs[0])
    if dims is None:
        return None
    start, end = _shape_slice(shape_node, len(dims))
    dims = dims[start:end]
    flat = [int(i) for i in indices.reshape(-1)]
    if any(not -len(dims) <= i < len(dims) or dims[i] is None for i in flat):
        return None
    return [np.array([dims[i] for i in flat], dtype=np.int64).reshape(indices.shape)]


# ----------------------------------------------------------------------------------------
# element types and ranks
# ----------------------------------------------------------------------------------------


_BOOL_OPS = set("And Equal Greater GreaterOrEqual IsInf IsNaN Less LessOrEqual Not Or Xor".split())
_SAME_RANK_OPS = set(
    "Abs Cast CastLike Ceil Cos CumSum Erf Exp Floor Identity IsInf IsNaN Log Neg Not Reciprocal "
    "Relu Sigmoid Sign Sin Softmax Sqrt Tanh Transpose Trilu".split()
)
_BROADCAST_OPS = set(
    "Add And Div Equal Greater GreaterOrEqual Less LessOrEqual Max Min Mod Mul Or Pow Sub Sum "
    "Where Xor".split()
)
_SAME_TYPE_OPS = _SAME_RANK_OPS - _BOOL_OPS - {"Cast", "CastLike"} | set(
    "Add Concat Div Expand Flatten Gather GatherElements GatherND MatMul Max Min Mod Mul Pow "
    "Range ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Reshape Slice Squeeze Sub Sum Tile "
    "Unsqueeze".split()
)


class _TypeInfo:
    """
    Element types and ranks of the values of a graph: what the values carry, or else what
    the simple operators of the default domain tell (``Mul`` keeps the type of its inputs,
    ``Unsqueeze`` adds dimensions...). Nothing is written on the values.
    """

    def __init__(self, graph: ir.Graph):
        self.dtypes: dict[ir.Value, ir.DataType] = {}
        self.ranks: dict[ir.Value, int] = {}
        for node in graph:
            if node.domain == "" and len(node.outputs) == 1:
                self._infer(node, node.outputs[0])

    def _infer(self, node: ir.Node, out: ir.Value) -> None:
        op, ins = node.op_type, node.inputs
        dtype: ir.DataType | None = None
        if op == "Cast":
            dtype = ir.DataType(_attr(node, "to"))
        elif op == "CastLike":
            dtype = self.dtype(ins[1])
        elif op in _BOOL_OPS:
            dtype = ir.DataType.BOOL
        elif op in {"Shape", "Size"}:
            dtype = ir.DataType.INT64
        elif op == "Where":
            dtype = self.dtype(ins[1]) or self.dtype(ins[2])
        elif op in _SAME_TYPE_OPS:
            candidates = ins if op in _BROADCAST_OPS - {"Pow"} or op == "Concat" else ins[:1]
            dtype = next((t for t in map(self.dtype, candidates) if t is not None), None)
        if dtype is not None:
            self.dtypes[out] = dtype
        ranks = [self.rank(v) for v in ins]
        rank: int | None = None
        if op in _SAME_RANK_OPS and ins:
            rank = ranks[0]
        elif op in _BROADCAST_OPS and ranks and None not in ranks:
            rank = max(ranks)
        elif op in {"Unsqueeze", "Squeeze"} and ranks and ranks[0] is not None:
            axes = _axes(node, [_const(v) for v in ins], 1)
            if axes is not None:
                rank = ranks[0] + (len(axes) if op == "Unsqueeze" else -len(axes))
        elif op in {"Shape", "Size"}:
            rank = 1 if op == "Shape" else 0
        if rank is not None:
            self.ranks[out] = rank

    def dtype(self, value: ir.Value | None) -> ir.DataType | None:
        if value is None:
            return None
        if value.dtype is not None:
            return value.dtype
        cst = _const(value)
        return ir.DataType.from_numpy(cst.dtype) if cst is not None else self.dtypes.get(value)

    def rank(self, value: ir.Value | None) -> int | None:
        if value is None:
            return None
        if value.shape is not None:
            return value.shape.rank()
        cst = _const(value)
        return cst.ndim if cst is not None else self.ranks.get(value)


_LOSSLESS = {
    "BOOL": "INT8 UINT8 INT16 UINT16 INT32 UINT32 INT64 UINT64 FLOAT16 BFLOAT16 FLOAT DOUBLE",
    "INT8": "INT16 INT32 INT64 FLOAT16 BFLOAT16 FLOAT DOUBLE",
    "UINT8": "UINT16 UINT32 UINT64 INT16 INT32 INT64 FLOAT16 BFLOAT16 FLOAT DOUBLE",
    "INT16": "INT32 INT64 FLOAT DOUBLE",
    "UINT16": "UINT32 UINT64 INT32 INT64 FLOAT DOUBLE",
    "INT32": "INT64 DOUBLE",
    "UINT32": "UINT64 INT64 DOUBLE",
    "FLOAT16": "FLOAT DOUBLE",
    "BFLOAT16": "FLOAT DOUBLE",
    "FLOAT": "DOUBLE",
}


def _lossless(src: ir.DataType | None, dst: ir.DataType) -> bool:
    """Tells if every value of type ``src`` is exactly represented in type ``dst``."""
    return src is not None and (src == dst or dst.name in _LOSSLESS.get(src.name, "").split())


# ----------------------------------------------------------------------------------------
# nodes returning their input, composed axes
# ----------------------------------------------------------------------------------------


def _is_scalar_constant(
    value: ir.Value | None, expected: float, x: ir.Value, info: _TypeInfo
) -> bool:
    """Tells if ``value`` is a constant equal to ``expected`` which cannot broadcast ``x``."""
    cst = _const(value)
    if cst is None or cst.size != 1 or cst.ndim > 1 or cst.reshape(-1)[0] != expected:
        return False
    if info.dtype(x) is None or ir.DataType.from_numpy(cst.dtype) != info.dtype(x):
        return False
    return cst.ndim == 0 or (info.rank(x) or 0) >= 1


def _is_shape_of(shape_value: ir.Value, x: ir.Value) -> bool:
    """Tells if ``shape_value`` is computed by ``Shape(x)``."""
    producer = shape_value.producer()
    return (
        producer is not None
        and producer.op_type == "Shape"
        and producer.domain == ""
        and producer.inputs[0] is x
        and _attr(producer, "start", 0) == 0
        and _attr(producer, "end", None) is None
    )


def _reshape_is_identity(shape_value: ir.Value, x: ir.Value, allowzero: int) -> bool:
    """Tells if the shape given to Reshape is the shape of ``x``."""
    if _is_shape_of(shape_value, x):
        return True
    shape, dims = _const(shape_value), _static_dims(x)
    if shape is None or dims is None or shape.ndim != 1 or len(shape) != len(dims):
        return False
    unknown = 0
    for s, d in zip(shape.tolist(), dims):
        if s == -1:
            unknown += 1
        elif not ((s == 0 and not allowzero) or s == d):
            return False
    # every dimension but one is kept, the last one is inferred from the total size
    return unknown <= 1


def _expand_is_identity(shape_value: ir.Value, x: ir.Value) -> bool:
    if _is_shape_of(shape_value, x):
        return True
    shape, dims = _const(shape_value), _static_dims(x)
    if shape is None or dims is None or shape.ndim != 1 or len(shape) > len(dims):
        return False
    return all(s == 1 or s == d for s, d in zip(shape.tolist()[::-1], dims[::-1]))


def _normalized(axes: list[int] | None, rank: int | None) -> set[int] | None:
    if axes is None or (rank is None and any(a < 0 for a in axes)):
        return None
    return {a + rank if a < 0 else a for a in axes}


def _slice_is_identity(node: ir.Node) -> bool:
    x = node.inputs[0]
    csts = [_const(v) for v in node.inputs[1:]]
    if any(c is None and v is not None for c, v in zip(csts, node.inputs[1:])) or len(csts) < 2:
        return False
    dims = _static_dims(x)
    starts, ends = csts[0].tolist(), csts[1].tolist()
    axes = csts[2].tolist() if len(csts) > 2 and csts[2] is not None else range(len(starts))
    steps = csts[3].tolist() if len(csts) > 3 and csts[3] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if axis < 0:
            if dims is None:
                return False
            axis += len(dims)
        dim = dims[axis] if dims is not None and axis < len(dims) else None
        if step != 1 or start != 0:
            return False
        if not (end >= 2**62 or (dim is not None and end >= dim)):
            return False
    return True


def _combined_axes(op: str, a1: list[int], a2: list[int], rank: int | None) -> list[int] | None:
    """
    The axes of ``op(op(x, a1), a2)`` done by one ``op`` (``Squeeze`` or ``Unsqueeze``),
    ``rank`` is the rank of ``x``, None if unknown (then only non-negative axes are merged).
    """
    if op == "Unsqueeze":
        # a1 refers to the rank after the first node, a2 to the final rank
        r1 = None if rank is None else rank + len(a1)
        s1, s2 = _normalized(a1, r1), _normalized(a2, None if r1 is None else r1 + len(a2))
        outer, inner = s2, s1  # positions of the final tensor not in s2 are those of op(x, a1)
    else:
        # a1 refers to the rank of x, a2 to the rank after the first node
        r1 = None if rank is None else rank - len(a1)
        s1, s2 = _normalized(a1, rank), _normalized(a2, r1)
        outer, inner = s1, s2  # positions of x not in s1 are those of op(x, a1)
    if s1 is None or s2 is None or len(s1) != len(a1) or len(s2) != len(a2):
        return None
    if min(s1 | s2, default=0) < 0:
        return None
    kept, p = [], 0
    while len(kept) <= max(inner, default=-1):
        if p not in outer:
            kept.append(p)
        p += 1
    combined = sorted(outer | {kept[i] for i in inner})
    final_rank = None if rank is None else rank + (1 if op == "Unsqueeze" else -1) * len(combined)
    if final_rank is not None and (
        final_rank < 0 or combined[-1] >= (final_rank if op == "Unsqueeze" else rank)
    ):
        return None
    return combined
