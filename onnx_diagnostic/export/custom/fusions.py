"""
Fusion passes for the models produced by the ``custom`` exporter.

Each pass rewrites an :class:`onnx_ir.Model` in place and returns the number of
fusions it made. They only use :mod:`onnx_ir` (no pattern rewriter of another
project): a pattern is matched by walking producers and consumers from an anchor
node, every intermediate result of the pattern must have exactly one consumer
(the next node of the pattern) and must not be a graph output, otherwise the pass
leaves the pattern alone. Inputs and outputs of the graph keep their names and
their order; the fused node's output takes the name of the value it replaces.
The nodes a fusion makes useless are **removed by the pass itself** (walking back
from the replaced nodes, a node goes when none of its outputs is used any more),
so no later ``remove_unused`` pass is needed for them. Only the main graph is
rewritten, not the subgraphs of control flow nodes.

:data:`FUSIONS` lists the passes in the order they should run.

>>> import onnx_ir as ir
>>> from onnx_diagnostic.export.custom.fusions import FUSIONS
>>> model = ir.Model(ir.Graph([], [], nodes=[], opset_imports={"": 23}), ir_version=10)
>>> [fct(model) for fct in FUSIONS]
[0, 0, 0, 0]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .folding import _attr
from .passes import _check_model

__all__ = [
    "FUSIONS",
    "fuse_attention",
    "fuse_rms_normalization",
    "fuse_rotary_embedding",
    "remove_repeat_kv",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------
# small pattern helpers
# ----------------------------------------------------------------------------------------


def _opset(model: ir.Model) -> int:
    opsets = model.graph.opset_imports
    return int(opsets.get("", opsets.get("ai.onnx", 0)))


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    """The node producing ``value`` if it is ``op_type`` (main domain)."""
    if value is None:
        return None
    node = value.producer()
    if node is None or node.op_type != op_type or node.domain != "":
        return None
    return node


def _single_consumer(value: ir.Value, op_type: str) -> ir.Node | None:
    """The only consumer of ``value`` if it is ``op_type`` and uses it once."""
    if value.is_graph_output():
        return None
    uses = value.uses()
    if len(uses) != 1:
        return None
    node = next(iter(uses)).node
    if node.op_type != op_type or node.domain != "":
        return None
    return node


def _only_used_by(value: ir.Value, nodes: Sequence[ir.Node]) -> bool:
    if value.is_graph_output():
        return False
    allowed = set(map(id, nodes))
    return all(id(use.node) in allowed for use in value.uses())


def _const(value: ir.Value | None) -> np.ndarray | None:
    """The constant held by ``value`` (initializer or Constant node) or None."""
    if value is None:
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:
        return None
    return None if tensor is None else tensor.numpy()


def _scalar(value: ir.Value | None) -> float | None:
    arr = _const(value)
    if arr is None or arr.size != 1 or arr.dtype.kind not in "fiu":
        return None
    return float(arr.reshape(()))


def _ints(value: ir.Value | None) -> list[int] | None:
    arr = _const(value)
    if arr is None or arr.dtype.kind not in "iu" or arr.ndim > 1:
        return None
    return [int(i) for i in arr.reshape((-1,))]


def _axes(node: ir.Node) -> list[int] | None:
    """Axes of Unsqueeze or ReduceMean, given as an input or as an attribute."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        return _ints(node.inputs[1])
    axes = _attr(node, "axes")
    return None if axes is None else [int(a) for a in axes]  # type: ignore[union-attr]


def _other(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The other operand of a binary node, None if ``value`` is not an operand."""
    a, b = node.inputs[0], node.inputs[1]
    if a is value:
        return b
    if b is value:
        return a
    return None


def _shape(value: ir.Value | None) -> ir.Shape | None:
    """Shape of a value, taken from its constant when the value has none."""
    if value is None:
        return None
    if value.shape is None and value.const_value is not None:
        return value.const_value.shape
    return value.shape


def _dtype(value: ir.Value | None) -> ir.DataType | None:
    """Element type of a value, taken from its constant when the value has none."""
    if value is None:
        return None
    if value.dtype is None and value.const_value is not None:
        return value.const_value.dtype
    return value.dtype


def _rank(value: ir.Value | None) -> int | None:
    shape = _shape(value)
    return None if shape is None else shape.rank()


def _dim(value: ir.Value, axis: int) -> int | ir.SymbolicDim | None:
    shape = _shape(value)
    return None if shape is None else shape[axis]


def _static_dim(value: ir.Value, axis: int) -> int | None:
    d = _dim(value, axis)
    return d if isinstance(d, int) else None


def _same_dim(a: object, b: object) -> bool:
    """Two dimensions known to be equal (anonymous symbolic dimensions never are)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, ir.SymbolicDim) and isinstance(b, ir.SymbolicDim):
        return a.value is not None and a.value == b.value
    return False


def _is_last_axis(axis: int, rank: int | None) -> bool:
    return axis == -1 or (rank is not None and axis == rank - 1)


def _first_shape(*values: ir.Value | None) -> ir.Shape | None:
    """The first known shape among values known to have the same shape (the translator
    leaves some intermediate results without one)."""
    for value in values:
        shape = _shape(value)
        if shape is not None:
            return shape
    return None


def _replace_value(
    old: ir.Value,
    new: ir.Value,
    dtype: ir.DataType | None = None,
    shape: ir.Shape | None = None,
) -> None:
    """Makes every user of ``old`` (graph outputs included) use ``new``, which takes
    the name, the type and the shape of ``old`` (``dtype``, ``shape`` if it has none)."""
    if old.type is not None:
        new.type = old.type
    elif dtype is not None:
        new.dtype = dtype
    new.shape = old.shape if old.shape is not None else shape
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if name is not None:
        old.name = f"{name}__unfused"
        new.name = name


def _remove_dead(graph: ir.Graph, nodes: Sequence[ir.Node]) -> int:
    """Removes ``nodes`` and then their producers as long as their outputs are unused."""
    stack = list(nodes)
    removed = 0
    while stack:
        node = stack.pop()
        if node.graph is not graph:
            continue
        if any(out.is_graph_output() or out.uses() for out in node.outputs):
            continue
        producers = [i.producer() for i in node.inputs if i is not None]
        graph.remove(node, safe=True)
        removed += 1
        stack.extend(p for p in producers if p is not None)
    return removed


def _new_node(op_type: str, inputs: Sequence[ir.Value | None], **attributes: object) -> ir.Node:
    attrs = [ir.convenience.convert_attribute(k, v) for k, v in attributes.items()]
    return ir.Node("", op_type, inputs, attributes=attrs)


# ----------------------------------------------------------------------------------------
# RMS normalization
# ----------------------------------------------------------------------------------------


@dataclass
class _RmsMatch:
    x: ir.Value
    scale: ir.Value
    epsilon: float
    y: ir.Value
    last: ir.Node
    shape: ir.Shape


def _weight_size(value: ir.Value) -> int | None:
    """Size of a 1-D constant weight, seen through one Cast (Gemma casts it)."""
    cast = _producer(value, "Cast")
    arr = _const(cast.inputs[0] if cast is not None else value)
    if arr is None or arr.ndim != 1:
        return None
    return int(arr.shape[0])


def _match_rms(pow_node: ir.Node) -> _RmsMatch | None:
    if _scalar(pow_node.inputs[1]) != 2.0:
        return None
    xf = pow_node.inputs[0]
    xf_shape = _first_shape(xf, pow_node.outputs[0])
    rank = None if xf_shape is None else xf_shape.rank()
    reduce = _single_consumer(pow_node.outputs[0], "ReduceMean")
    if xf is None or reduce is None or _attr(reduce, "keepdims", 1) != 1:
        return None
    axes = _axes(reduce)
    if axes is None or len(axes) != 1 or not _is_last_axis(axes[0], rank):
        return None
    add = _single_consumer(reduce.outputs[0], "Add")
    epsilon = None if add is None else _scalar(_other(add, reduce.outputs[0]))
    if add is None or epsilon is None:
        return None
    sqrt = _single_consumer(add.outputs[0], "Sqrt")
    recip = None if sqrt is None else _single_consumer(sqrt.outputs[0], "Reciprocal")
    mul_n = None if recip is None else _single_consumer(recip.outputs[0], "Mul")
    if mul_n is None or _other(mul_n, recip.outputs[0]) is not xf:  # type: ignore[union-attr]
        return None
    n = mul_n.outputs[0]
    # x.float() in HF: xf = Cast(X, to=FLOAT), X is used when the result is cast back
    cast_in = _producer(xf, "Cast")
    x_orig = cast_in.inputs[0] if cast_in is not None else None
    cast_back = _single_consumer(n, "Cast")
    if cast_back is not None:
        if x_orig is None or _dtype(x_orig) is None or _attr(cast_back, "to") != _dtype(x_orig):
            return None
        x, normed = x_orig, cast_back.outputs[0]
    else:
        x, normed = xf, n
    mul_w = _single_consumer(normed, "Mul")
    if mul_w is None:
        return None
    scale = _other(mul_w, normed)
    x_shape = _first_shape(x, xf, pow_node.outputs[0], n, normed)
    hidden = None if x_shape is None or x_shape.rank() == 0 else x_shape[-1]
    if not isinstance(hidden, int):
        return None
    if scale is None or _weight_size(scale) != hidden:
        return None
    # Pow keeps the type of xf: it tells the type of an untyped xf
    x_dtype = _dtype(x) or (_dtype(pow_node.outputs[0]) if x is xf else None)
    if x_dtype is None or _dtype(scale) != x_dtype:
        return None
    return _RmsMatch(x, scale, epsilon, mul_w.outputs[0], mul_w, x_shape)


def fuse_rms_normalization(model: ir.Model) -> int:
    """
    Fuses the RMS normalization written by :epkg:`transformers` (``LlamaRMSNorm``
    and its copies: Mistral, Qwen2/3, Phi3, SmolLM3, Gemma once ``1 + w`` is folded)::

        Xf = Cast(X, to=FLOAT)               # absent if X is float32
        N = Mul(Xf, Reciprocal(Sqrt(Add(ReduceMean(Pow(Xf, 2), axes=[-1]), eps))))
        Y = Mul(W, Cast(N, to=X.dtype))      # or Mul(N, W) or Mul(Cast(W), N)

    into ``RMSNormalization(X, W, axis=-1, epsilon=eps, stash_type=1)`` when the
    model's opset is at least 23, ``SimplifiedLayerNormalization`` (the contrib
    operator of :epkg:`onnxruntime` registered in the main domain) otherwise.
    The standard operator is preferred when the opset allows it: any runtime knows
    it, and on onnxruntime 1.31 CPU both run at the same speed (0.62 ms vs 0.59 ms
    on a (4, 512, 1024) float32 input). The fused node reads X when the pattern
    casts back to X's type before the weight (Llama), and Xf otherwise (Gemma
    multiplies in float32 and casts at the end; that final Cast stays), so the
    output type is always the type of Y and no Cast has to be inserted.

    The pattern is left alone when an intermediate result has another consumer
    (``Xf`` excepted: its Cast stays if something else reads it), when the
    reduction is not on the last axis, when W is not a 1-D constant (possibly
    cast) of size the last dimension of X, when that dimension is not static.

    >>> import numpy as np, onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.fusions import fuse_rms_normalization
    >>> F = ir.DataType.FLOAT
    >>> x = ir.Value(name="X", type=ir.TensorType(F), shape=ir.Shape(["b", 8]))
    >>> def cst(name, arr):
    ...     return ir.Value(name=name, const_value=ir.tensor(np.array(arr), name=name))
    >>> two, axes, eps = cst("two", np.float32(2)), cst("axes", [-1]), cst("eps", np.float32(1e-6))
    >>> w = cst("W", np.ones(8, dtype=np.float32))
    >>> p = ir.Node("", "Pow", [x, two]); m = ir.Node("", "ReduceMean", [p.outputs[0], axes])
    >>> a = ir.Node("", "Add", [m.outputs[0], eps]); s = ir.Node("", "Sqrt", [a.outputs[0]])
    >>> r = ir.Node("", "Reciprocal", [s.outputs[0]]); n = ir.Node("", "Mul", [x, r.outputs[0]])
    >>> y = ir.Node("", "Mul", [w, n.outputs[0]])
    >>> for v in y.outputs + n.outputs:
    ...     v.dtype = F
    >>> g = ir.Graph([x], y.outputs, nodes=[p, m, a, s, r, n, y],
    ...              initializers=[two, axes, eps, w], opset_imports={"": 23})
    >>> model = ir.Model(g, ir_version=10)
    >>> fuse_rms_normalization(model)
    1
    >>> [node.op_type for node in model.graph]
    ['RMSNormalization']
    """
    graph = _check_model(model, "fuse_rms_normalization")
    op_type = "RMSNormalization" if _opset(model) >= 23 else "SimplifiedLayerNormalization"
    count = 0
    for node in list(graph):
        if node.graph is not graph or node.op_type != "Pow" or node.domain != "":
            continue
        match = _match_rms(node)
        if match is None:
            continue
        fused = _new_node(
            op_type,
            [match.x, match.scale],
            axis=-1,
            epsilon=match.epsilon,
            stash_type=1,
        )
        graph.insert_before(match.last, fused)
        _replace_value(match.y, fused.outputs[0], _dtype(match.scale), match.shape)
        _remove_dead(graph, [match.last])
        count += 1
    logger.debug("fuse_rms_normalization: %d fusions into %s", count, op_type)
    return count


# ----------------------------------------------------------------------------------------
# rotary embedding
# ----------------------------------------------------------------------------------------


@dataclass
class _Meta:
    dtype: ir.DataType | None
    shape: ir.Shape


@dataclass
class _RotaryMatch:
    q: ir.Value
    cos: tuple[ir.Value, _Meta]
    sin: tuple[ir.Value, _Meta]
    add: ir.Node


def _slice_params(node: ir.Node) -> tuple[int, int, int] | None:
    """(start, end, axis) of a one-axis Slice with step 1 and constant parameters."""
    if len(node.inputs) < 4:
        return None
    starts, ends, axes = (_ints(node.inputs[i]) for i in (1, 2, 3))
    steps = _ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else [1]
    if not starts or not ends or not axes or steps != [1]:
        return None
    if len(starts) != 1 or len(ends) != 1 or len(axes) != 1:
        return None
    return starts[0], ends[0], axes[0]


def _match_rotate_half(value: ir.Value) -> ir.Value | None:
    """Q if ``value = Concat(Neg(Q[..., D/2:]), Q[..., :D/2], axis=-1)``."""
    concat = _producer(value, "Concat")
    if concat is None or len(concat.inputs) != 2:
        return None
    neg = _producer(concat.inputs[0], "Neg")
    second = _producer(concat.inputs[1], "Slice")
    first = None if neg is None else _producer(neg.inputs[0], "Slice")
    if first is None or second is None or first.inputs[0] is not second.inputs[0]:
        return None
    q = first.inputs[0]
    rank, depth = _rank(q), (None if q is None else _static_dim(q, -1))
    if q is None or rank != 4 or depth is None or depth % 2 != 0:
        return None
    if not _is_last_axis(int(_attr(concat, "axis", 0)), rank):  # type: ignore[arg-type]
        return None
    half = depth // 2
    p1, p2 = _slice_params(first), _slice_params(second)
    if p1 is None or p2 is None:
        return None
    if p1[0] != half or p1[1] < depth or not _is_last_axis(p1[2], rank):
        return None
    if p2[0] != 0 or p2[1] != half or not _is_last_axis(p2[2], rank):
        return None
    for inter, nxt in ((first, neg), (neg, concat), (second, concat)):
        if _single_consumer(inter.outputs[0], nxt.op_type) is not nxt:  # type: ignore[union-attr]
            return None
    return q


def _trig_chain(value: ir.Value, trig: str) -> tuple[ir.Value, list[ir.Node]] | None:
    """Follows ``value = Cast(Mul(Trig(E), scalar))`` (Cast and Mul optional, in any
    order) back to ``E = Concat(F, F, axis=-1)``; returns F and the nodes from Trig
    to ``value``."""
    chain: list[ir.Node] = []
    current = value
    while True:
        node = current.producer()
        if node is None or node.domain != "":
            return None
        if node.op_type == "Cast":
            chain.append(node)
            current = node.inputs[0]  # type: ignore[assignment]
            continue
        if node.op_type == "Mul":
            a, b = node.inputs[0], node.inputs[1]
            if _scalar(b) is not None:
                chain.append(node)
                current = a  # type: ignore[assignment]
                continue
            if _scalar(a) is not None:
                chain.append(node)
                current = b  # type: ignore[assignment]
                continue
            return None
        if node.op_type != trig:
            return None
        chain.append(node)
        break
    concat = _producer(chain[-1].inputs[0], "Concat")
    if concat is None or len(concat.inputs) != 2 or concat.inputs[0] is not concat.inputs[1]:
        return None
    rank = _rank(concat.outputs[0])
    if not _is_last_axis(int(_attr(concat, "axis", 0)), rank):  # type: ignore[arg-type]
        return None
    return concat.inputs[0], chain[::-1]  # type: ignore[return-value]


def _unsqueezed(value: ir.Value | None) -> tuple[ir.Value, _Meta] | None:
    """X, its type and its shape if ``value = Unsqueeze(X, axes=[1])`` with X of rank 3
    (type and shape are taken from the Unsqueeze when X has none)."""
    node = _producer(value, "Unsqueeze")
    if node is None or node.inputs[0] is None or _axes(node) != [1]:
        return None
    x, out = node.inputs[0], node.outputs[0]
    shape = _shape(x)
    if shape is None and _rank(out) == 4:
        shape = ir.Shape([out.shape[0], *out.shape[2:]])  # type: ignore[index]
    if shape is None or shape.rank() != 3:
        return None
    return x, _Meta(_dtype(x) or _dtype(out), shape)


def _match_rotary(add: ir.Node) -> _RotaryMatch | None:
    for i in (0, 1):
        mul_rot, mul_q = _producer(add.inputs[i], "Mul"), _producer(add.inputs[1 - i], "Mul")
        if mul_rot is None or mul_q is None or mul_rot is mul_q:
            continue
        for j in (0, 1):
            q = _match_rotate_half(mul_rot.inputs[j])  # type: ignore[arg-type]
            if q is None:
                continue
            sin = _unsqueezed(mul_rot.inputs[1 - j])
            cos = _unsqueezed(_other(mul_q, q))
            if sin is None or cos is None:
                continue
            dtype = _dtype(q)
            if dtype is None or cos[1].dtype != dtype or sin[1].dtype != dtype:
                continue
            if not (
                _single_consumer(mul_rot.outputs[0], "Add") is add
                and _single_consumer(mul_q.outputs[0], "Add") is add
                and _single_consumer(mul_rot.inputs[j], "Mul") is mul_rot  # type: ignore[arg-type]
            ):
                continue
            return _RotaryMatch(q, cos, sin, add)
    return None


def _half_cache(
    graph: ir.Graph, cache: tuple[ir.Value, _Meta], trig: str, before: ir.Node
) -> ir.Value | None:
    """Builds the first half of COS (or SIN) by applying its chain to F instead of
    ``Concat(F, F)``: ``Cos(F) * scale`` is the first half of ``Cos(E) * scale``."""
    value, meta = cache
    found = _trig_chain(value, trig)
    if found is None:
        return None
    current, chain = found
    last = meta.shape[-1]
    shape = ir.Shape([*meta.shape.dims[:-1], last // 2 if isinstance(last, int) else None])
    dtype = _dtype(current)
    if dtype is None and all(n.op_type != "Cast" for n in chain):
        dtype = meta.dtype
    new_nodes = []
    for node in chain:
        if node.op_type == "Mul":
            k = 0 if _scalar(node.inputs[1]) is not None else 1
            inputs = [current, node.inputs[1]] if k == 0 else [node.inputs[0], current]
        else:
            inputs = [current]
        attrs = [ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()]
        new = ir.Node("", node.op_type, inputs, attributes=attrs)
        # Cos, Sin, Mul keep the type, Cast changes it
        dtype = _attr(node, "to") if node.op_type == "Cast" else dtype  # type: ignore[assignment]
        dtype = _dtype(node.outputs[0]) or dtype
        if dtype is not None:
            new.outputs[0].dtype = dtype
        new.outputs[0].shape = shape
        new_nodes.append(new)
        current = new.outputs[0]
    graph.insert_before(before, new_nodes)
    return current


def fuse_rotary_embedding(model: ir.Model) -> int:
    """
    Fuses the rotary embedding written by :epkg:`transformers` (``rotate_half``)::

        E = Concat(F, F, axis=-1)
        COS = Cast(Mul(Cos(E), scaling))       # Mul and Cast optional, same for SIN
        Y = Add(Mul(Q, Unsqueeze(COS, [1])),
                Mul(Concat(Neg(Q[..., D/2:]), Q[..., :D/2], axis=-1), Unsqueeze(SIN, [1])))

    into ``RotaryEmbedding(Q, COS_half, SIN_half, interleaved=0)`` (opset 23) for
    Q of shape (B, H, S, D), D static. ``COS_half`` is ``Cast(Mul(Cos(F), scaling))``,
    a new chain built on F, equal to the first half of COS because E repeats F
    (the pass checks that: without ``Concat(F, F)`` the fusion would be wrong).
    The chain is built once for all the rotaries sharing COS (queries and keys of
    all layers). With partial rotary (Phi), Q is a slice of the query and only
    that part is fused, the Concat with the pass-through part stays.
    The operands of Add and Mul may come in any order. Nothing happens when the
    model's opset is below 23, when an intermediate of the pattern has another
    consumer, when Q and COS/SIN types differ.

    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.fusions import fuse_rotary_embedding
    >>> model = ir.Model(ir.Graph([], [], nodes=[], opset_imports={"": 18}), ir_version=10)
    >>> fuse_rotary_embedding(model)
    0
    """
    graph = _check_model(model, "fuse_rotary_embedding")
    if _opset(model) < 23:
        return 0
    count = 0
    # first half of COS (SIN), keyed by COS (SIN), shared by all the rotaries using it
    halves: dict[tuple[int, str], ir.Value | None] = {}
    for node in list(graph):
        if node.graph is not graph or node.op_type != "Add" or node.domain != "":
            continue
        match = _match_rotary(node)
        if match is None:
            continue
        caches = []
        for cache, trig in ((match.cos, "Cos"), (match.sin, "Sin")):
            key = (id(cache[0]), trig)
            if key not in halves:
                halves[key] = _half_cache(graph, cache, trig, node)
            caches.append(halves[key])
        if caches[0] is None or caches[1] is None:
            continue
        fused = _new_node("RotaryEmbedding", [match.q, *caches], interleaved=0)
        graph.insert_before(node, fused)
        _replace_value(node.outputs[0], fused.outputs[0], _dtype(match.q), _shape(match.q))
        _remove_dead(graph, [node])
        count += 1
    # a half chain stays unused when the other one could not be built
    _remove_dead(graph, [v.producer() for v in halves.values() if v is not None])  # type: ignore[misc]
    if count:
        # the half chains were inserted before the first Add using them, which may
        # come after another Add using them
        graph.sort()
    logger.debug("fuse_rotary_embedding: %d fusions", count)
    return count


# ----------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------


def _scaled(value: ir.Value | None) -> tuple[ir.Value | None, float, ir.Node | None]:
    """``(X, s, node)`` if ``value = Mul(X, s)`` with s a constant scalar, else
    ``(value, 1.0, None)``."""
    node = _producer(value, "Mul")
    if node is not None:
        for i in (0, 1):
            s = _scalar(node.inputs[1 - i])
            if s is not None:
                return node.inputs[i], s, node
    return value, 1.0, None


def _match_scores(value: ir.Value) -> tuple[ir.Value, ir.Value, float, list[ir.Node]] | None:
    """Matches ``Mul(MatMul(Mul(Q, s1), Mul(Transpose(K, [0, 1, 3, 2]), s2)), s)``,
    every Mul optional, s2 may also be applied to K before the Transpose."""
    nodes: list[ir.Node] = []
    scores, scale, mul = _scaled(value)
    if mul is not None:
        nodes.append(mul)
    matmul = _producer(scores, "MatMul")
    if matmul is None:
        return None
    nodes.append(matmul)
    q, s1, mul_q = _scaled(matmul.inputs[0])
    kt, s2, mul_k = _scaled(matmul.inputs[1])
    transpose = _producer(kt, "Transpose")
    if transpose is None or list(_attr(transpose, "perm", ())) != [0, 1, 3, 2]:  # type: ignore[call-overload]
        return None
    k, s3, mul_k2 = _scaled(transpose.inputs[0])
    for node in (mul_q, mul_k, transpose, mul_k2):
        if node is not None:
            nodes.append(node)
    if q is None or k is None:
        return None
    return q, k, scale * s1 * s2 * s3, nodes


def _match_attention(
    matmul: ir.Node,
) -> tuple[list[ir.Value | None], float, list[ir.Node]] | None:
    softmax = _producer(matmul.inputs[0], "Softmax")
    v = matmul.inputs[1]
    if softmax is None or v is None:
        return None
    x = softmax.inputs[0]
    if x is None or not _is_last_axis(int(_attr(softmax, "axis", -1)), _rank(x)):  # type: ignore[arg-type]
        return None
    add = _producer(x, "Add")
    candidates: list[tuple[ir.Value, ir.Value | None, list[ir.Node]]] = [(x, None, [])]
    if add is not None:
        candidates = [
            (add.inputs[i], add.inputs[1 - i], [add])  # type: ignore[misc]
            for i in (0, 1)
        ] + candidates
    for scores, mask, extra in candidates:
        found = _match_scores(scores)
        if found is None:
            continue
        q, k, scale, nodes = found
        nodes = [matmul, softmax, *extra, *nodes]
        if not all(_rank(t) == 4 for t in (q, k, v)):
            continue
        if not all(_same_dim(_dim(t, 0), _dim(q, 0)) for t in (k, v)):
            continue
        hq, hk, hv = _dim(q, 1), _dim(k, 1), _dim(v, 1)
        if not (_same_dim(hk, hv) and (_same_dim(hq, hk) or hk == 1)):
            continue
        if mask is not None and (_rank(mask) not in (2, 3, 4) or _dtype(mask) != _dtype(q)):
            continue
        # every intermediate is consumed once, by the next node of the pattern
        inner = [n for n in nodes if n is not matmul]
        if not all(
            _only_used_by(n.outputs[0], nodes) and len(n.outputs[0].uses()) == 1 for n in inner
        ):
            continue
        return [q, k, v, mask] if mask is not None else [q, k, v], scale, nodes
    return None


def fuse_attention(model: ir.Model) -> int:
    """
    Fuses a decomposed attention into ``Attention`` (opset 23)::

        P = Softmax(Add(Mul(MatMul(Q, Transpose(K, perm=[0, 1, 3, 2])), scale), mask), -1)
        Y = MatMul(P, V)

    What is matched: Q, K, V of rank 4 sharing their batch dimension, K and V with
    the same number of heads, equal to the heads of Q or 1 (broadcast); ``mask``
    optional (no Add), of rank 2 to 4 and Q's type (additive float mask), in either
    operand order; ``scale`` a constant scalar given either after the first MatMul,
    or split as ``Mul(Q, s1)`` and ``Mul(Transpose(K), s2)`` (or ``Transpose(Mul(K,
    s2))``) as the math decomposition of ``scaled_dot_product_attention`` does, any
    of them optional: the fused node gets ``scale = s * s1 * s2`` (1.0 when there is
    none, since Attention's default is ``1/sqrt(D)``). Not matched: a Softmax
    computed in another type (Cast around it), a Div instead of a Mul, dropout.
    Nothing happens when the opset is below 23 or when an intermediate result has
    another consumer.

    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.fusions import fuse_attention
    >>> model = ir.Model(ir.Graph([], [], nodes=[], opset_imports={"": 23}), ir_version=10)
    >>> fuse_attention(model)
    0
    """
    graph = _check_model(model, "fuse_attention")
    if _opset(model) < 23:
        return 0
    count = 0
    for node in list(graph):
        if node.graph is not graph or node.op_type != "MatMul" or node.domain != "":
            continue
        found = _match_attention(node)
        if found is None:
            continue
        inputs, scale, _nodes = found
        fused = _new_node("Attention", inputs, scale=float(scale))
        graph.insert_before(node, fused)
        _replace_value(node.outputs[0], fused.outputs[0], _dtype(inputs[0]))
        _remove_dead(graph, [node])
        count += 1
    logger.debug("fuse_attention: %d fusions", count)
    return count


# ----------------------------------------------------------------------------------------
# repeat_kv
# ----------------------------------------------------------------------------------------


def _length(value: ir.Value) -> int | None:
    """Static length of a 1-D value."""
    arr = _const(value)
    if arr is not None:
        return int(arr.size) if arr.ndim <= 1 else None
    if _rank(value) == 1:
        return _static_dim(value, 0)
    return None


def _static_item(value: ir.Value | None, index: int) -> int | None:
    """Element ``index`` of a 1-D int64 value when it is known: a constant or a
    Concat (axis 0) whose piece holding that element is a constant."""
    if value is None:
        return None
    items = _ints(value)
    if items is not None:
        return items[index] if 0 <= index < len(items) else None
    concat = _producer(value, "Concat")
    if concat is None or int(_attr(concat, "axis", 0)) != 0:  # type: ignore[arg-type]
        return None
    offset = 0
    for piece in concat.inputs:
        n = None if piece is None else _length(piece)
        if n is None:
            return None
        if offset <= index < offset + n:
            return _static_item(piece, index - offset)
        offset += n
    return None


def _match_repeat(value: ir.Value | None) -> tuple[ir.Value, int, int] | None:
    """``(X, heads, n_rep)`` if ``value = Reshape(Expand(Unsqueeze(X, [2]),
    [B, H, n_rep, T, D]), [B, H * n_rep, T, D])`` (HF ``repeat_kv``)."""
    reshape = _producer(value, "Reshape")
    expand = None if reshape is None else _producer(reshape.inputs[0], "Expand")
    unsqueeze = None if expand is None else _producer(expand.inputs[0], "Unsqueeze")
    if unsqueeze is None or _axes(unsqueeze) != [2]:
        return None
    x = unsqueeze.inputs[0]
    if x is None or _rank(x) != 4 or _rank(value) != 4:
        return None
    heads, depth = _static_dim(x, 1), _static_dim(x, 3)
    n_rep = _static_item(expand.inputs[1], 2)  # type: ignore[union-attr]
    if heads is None or depth is None or n_rep is None or n_rep < 1:
        return None
    if _static_item(expand.inputs[1], 1) != heads:  # type: ignore[union-attr]
        return None
    if _static_item(expand.inputs[1], 4) not in (depth, 1, -1):  # type: ignore[union-attr]
        return None
    if _static_item(reshape.inputs[1], 1) != heads * n_rep:  # type: ignore[union-attr]
        return None
    if _static_item(reshape.inputs[1], 3) not in (depth, -1):  # type: ignore[union-attr]
        return None
    for axis in (0, 2):
        if not _same_dim(_dim(value, axis), _dim(x, axis)):  # type: ignore[arg-type]
            return None
    if _static_dim(value, 1) not in (None, heads * n_rep):  # type: ignore[arg-type]
        return None
    for inter, nxt in ((unsqueeze, expand), (expand, reshape)):
        if _single_consumer(inter.outputs[0], nxt.op_type) is not nxt:  # type: ignore[union-attr]
            return None
    return x, heads, n_rep


def remove_repeat_kv(model: ir.Model) -> int:
    """
    Removes the repetition of the key/value heads that :epkg:`transformers` does
    before an attention (``repeat_kv``, grouped query attention)::

        Kr = Reshape(Expand(Unsqueeze(K, axes=[2]), [B, Hkv, n_rep, T, D]),
                     [B, Hkv * n_rep, T, D])
        Y = Attention(Q, Kr, Vr, mask)   ->   Y = Attention(Q, K, V, mask)

    ``Attention`` (opset 23) repeats the heads itself when K/V have fewer heads than
    Q (head ``h`` of Q reads head ``h // n_rep`` of K/V, as ``repeat_kv`` does).
    The shape operands may be constants or Concat of pieces as long as ``Hkv``,
    ``n_rep`` and ``Hkv * n_rep`` are static; dims B and T of Kr must be the same
    (symbolic) dims as those of K. Key and value are rewritten together or not at
    all (same number of heads), only when ``Reshape`` and ``Expand`` have no other
    consumer, the heads of Q are ``Hkv * n_rep``, and the Attention node receives
    no past key/value and its present outputs are unused. Returns the number of
    Attention nodes rewritten.

    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.fusions import remove_repeat_kv
    >>> model = ir.Model(ir.Graph([], [], nodes=[], opset_imports={"": 23}), ir_version=10)
    >>> remove_repeat_kv(model)
    0
    """
    graph = _check_model(model, "remove_repeat_kv")
    if _opset(model) < 23:
        return 0
    count = 0
    for node in list(graph):
        if node.graph is not graph or node.op_type != "Attention" or node.domain != "":
            continue
        if any(i is not None for i in node.inputs[4:]):
            continue
        if any(o.uses() or o.is_graph_output() for o in node.outputs[1:3]):
            continue
        q, kr, vr = node.inputs[0], node.inputs[1], node.inputs[2]
        if q is None or kr is None or vr is None:
            continue
        if len(kr.uses()) != 1 or len(vr.uses()) != 1 or kr is vr:
            continue
        mk, mv = _match_repeat(kr), _match_repeat(vr)
        if mk is None or mv is None or mk[1:] != mv[1:]:
            continue
        # heads of Q, from Q or from the output (B, heads, S, Dv)
        out_shape = _first_shape(q, node.outputs[0])
        if out_shape is None or out_shape.rank() != 4 or out_shape[1] != mk[1] * mk[2]:
            continue
        old = [kr.producer(), vr.producer()]
        node.replace_input_with(1, mk[0])
        node.replace_input_with(2, mv[0])
        _remove_dead(graph, [n for n in old if n is not None])
        count += 1
    logger.debug("remove_repeat_kv: %d attention nodes rewritten", count)
    return count


FUSIONS: list[Callable[[ir.Model], int]] = [
    fuse_rms_normalization,
    fuse_rotary_embedding,
    fuse_attention,
    remove_repeat_kv,
]
"""The fusion passes in the order they should run (attention before repeat_kv)."""
