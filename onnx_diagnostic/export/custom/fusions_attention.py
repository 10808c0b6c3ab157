"""
Fusion passes for attention (part of :mod:`onnx_diagnostic.export.custom.fusions`, which
re-exports them and lists them in ``FUSIONS``): :func:`fuse_attention` turns a decomposed
scaled dot-product attention into one opset-23 ``Attention``, :func:`remove_repeat_kv`
feeds the key/value heads of a grouped-query attention to ``Attention`` without repeating
them first.

>>> from onnx_diagnostic.export.custom.fusions import FUSIONS
>>> [f.__name__ for f in FUSIONS][-2:]
['fuse_attention', 'remove_repeat_kv']
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from .fusion_patterns import (
    _is_last_axis,
    _const,
    _ints,
    _new_node,
    _opset,
    _producer,
    _rank,
    _remove_dead,
    _replace_value,
    _scalar,
    _single_consumer,
    _only_used_by,
    _static_dim,
    _dtype,
    _same_dim,
    _first_shape,
    _dim,
    _axes,
)
from .folding import _attr
from .passes import _check_model

__all__ = ["fuse_attention", "remove_repeat_kv"]

logger = logging.getLogger(__name__)

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
        _remove_dead(graph, [node], into=fused)
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
        _remove_dead(graph, [n for n in old if n is not None], into=node)
        count += 1
    logger.debug("remove_repeat_kv: %d attention nodes rewritten", count)
    return count
