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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .folding import _attr
from .fusion_patterns import (
    _axes,
    _const,
    _dtype,
    _first_shape,
    _ints,
    _is_last_axis,
    _new_node,
    _opset,
    _other,
    _producer,
    _rank,
    _remove_dead,
    _replace_value,
    _scalar,
    _shape,
    _single_consumer,
    _static_dim,
)
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
        _remove_dead(graph, [match.last], into=fused)
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
        new.metadata_props.update(node.metadata_props)
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


def _same_dim(a: object, b: object) -> bool:
    """True if two dimensions are provably equal (the same int or the same symbol)."""
    if a is None or b is None:
        return False
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    va, vb = getattr(a, "value", a), getattr(b, "value", b)
    return va is not None and va == vb


def _expand_batch(graph: ir.Graph, half: ir.Value, q: ir.Value, before: ir.Node) -> ir.Value:
    """``Expand(half, [B, 1, 1])`` with B the batch of Q: RotaryEmbedding wants caches of
    the batch of Q where torch broadcast them (positions computed from ``cache_position``,
    shared by the batch)."""
    ones = ir.Value(
        name=f"{half.name}_ones", const_value=ir.tensor(np.array([1, 1], dtype=np.int64))
    )
    graph.register_initializer(ones)
    batch = _new_node("Shape", [q], start=0, end=1)
    shape = _new_node("Concat", [batch.outputs[0], ones], axis=0)
    expand = _new_node("Expand", [half, shape.outputs[0]])
    q_shape = _shape(q)
    half_shape = _shape(half)
    if q_shape is not None and half_shape is not None:
        expand.outputs[0].shape = ir.Shape([q_shape.dims[0], *half_shape.dims[1:]])
    expand.outputs[0].dtype = _dtype(half)
    for node in (batch, shape, expand):
        node.metadata_props.update(before.metadata_props)
    graph.insert_before(before, [batch, shape, expand])
    return expand.outputs[0]


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
    The operands of Add and Mul may come in any order. COS and SIN broadcast on the batch
    by torch (a batch of 1, positions computed inside the model) are expanded to the batch
    of Q (``Expand``, once per cache), which RotaryEmbedding requires. Nothing happens when
    the model's opset is below 23, when an intermediate of the pattern has another
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
    expanded: dict[tuple[int, str], ir.Value] = {}
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
        q_shape = _shape(match.q)
        q_batch = q_shape.dims[0] if q_shape is not None else None
        for k, (cache, trig) in enumerate(((match.cos, "Cos"), (match.sin, "Sin"))):
            if not _same_dim(cache[1].shape.dims[0], q_batch):
                key = (id(cache[0]), f"{trig}:batch")
                if key not in expanded:
                    expanded[key] = _expand_batch(graph, caches[k], match.q, node)
                caches[k] = expanded[key]
        fused = _new_node("RotaryEmbedding", [match.q, *caches], interleaved=0)
        graph.insert_before(node, fused)
        _replace_value(node.outputs[0], fused.outputs[0], _dtype(match.q), _shape(match.q))
        _remove_dead(graph, [node], into=fused)
        count += 1
    # a half chain stays unused when the other one could not be built
    _remove_dead(graph, [v.producer() for v in halves.values() if v is not None])  # type: ignore[misc]
    if count:
        # the half chains were inserted before the first Add using them, which may
        # come after another Add using them
        graph.sort()
    logger.debug("fuse_rotary_embedding: %d fusions", count)
    return count


# the attention fusions live in their own module
from .fusions_attention import fuse_attention, remove_repeat_kv  # noqa: E402

FUSIONS: list[Callable[[ir.Model], int]] = [
    fuse_rms_normalization,
    fuse_rotary_embedding,
    fuse_attention,
    remove_repeat_kv,
]
"""The fusion passes in the order they should run (attention before repeat_kv)."""
