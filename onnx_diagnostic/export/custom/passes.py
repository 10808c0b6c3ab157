"""
Graph clean-up passes for the models produced by the custom exporter.

Every pass takes an :class:`onnx_ir.Model`, rewrites its main graph in place and returns the
number of rewrites. Graph inputs and outputs keep their names and their order. Nodes inside
subgraphs (``If``, ``Loop``, ``Scan``) and local functions are left as they are.

>>> import onnx
>>> import onnx_ir as ir
>>> from onnx_diagnostic.export.custom.passes import run_passes
>>> proto = onnx.parser.parse_model('''
...     <ir_version: 10, opset_import: ["" : 23]>
...     g (float[N, 4] x) => (float[N, 4] y) {
...         one = Constant <value_float = 1.0> ()
...         t = Identity (x)
...         y = Mul (t, one)
...     }''')
>>> model = ir.serde.deserialize_model(proto)
>>> counts = run_passes(model)
>>> [n.op_type for n in model.graph]
['Identity']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx_ir as ir

from .folding import (
    _combined_axes,
    _evaluate,
    _expand_is_identity,
    _fold_shape,
    _is_scalar_constant,
    _lossless,
    _normalized,
    _reshape_is_identity,
    _slice_is_identity,
    _TypeInfo,
    _attr,
    _axes,
    _const,
)

__all__ = [
    "deduplicate_constants",
    "eliminate_common_subexpressions",
    "fold_constants",
    "merge_unsqueeze",
    "remove_identities",
    "remove_unused",
    "run_passes",
]

logger = logging.getLogger(__name__)

_NON_DETERMINISTIC = {
    "Bernoulli",
    "Dropout",
    "Multinomial",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    # com.microsoft
    "BiasDropout",
    "BitmaskBiasDropout",
    "BitmaskDropout",
}
# domains whose nodes are known to have no side effect (removable when unused)
_PURE_DOMAINS = {"", "ai.onnx", "com.microsoft", "ai.onnx.ml"}
_SUBGRAPHS = {ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS}


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _check_model(model: Any, fname: str) -> ir.Graph:
    if not isinstance(model, ir.Model):
        raise TypeError(
            f"{fname}: argument 'model' must be an onnx_ir.Model, got {type(model).__name__}"
        )
    return model.graph


def _all_names(graph: ir.Graph) -> set[str]:
    names = {v.name for v in graph.inputs if v.name}
    names |= set(graph.initializers)
    for node in graph.all_nodes():
        names |= {v.name for v in node.outputs if v.name}
    return names


class _Namer:
    """Creates names not already used in a graph."""

    def __init__(self, graph: ir.Graph):
        self.names = _all_names(graph)

    def __call__(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name


def _bypass(graph: ir.Graph, output: ir.Value, source: ir.Value) -> bool:
    """
    Makes every consumer of ``output`` read ``source`` instead. When ``output`` is a graph
    output, ``source`` takes its place and its name, which is only possible when ``source``
    is produced by a node of this graph and is neither a graph input nor a graph output.
    Returns False when nothing could be done.
    """
    if output is source:
        return False
    if output.is_graph_output():
        producer = source.producer()
        if (
            producer is None
            or producer.graph is not graph
            or source.is_graph_output()
            or source.is_graph_input()
            or source.is_initializer()
            or sum(1 for o in graph.outputs if o is output) != 1
        ):
            return False
        name = output.name
        output.replace_all_uses_with(source, replace_graph_outputs=True)
        output.name = None
        source.name = name
        if source.type is None and output.type is not None:
            source.type = output.type
        if source.shape is None and output.shape is not None:
            source.shape = output.shape
        return True
    output.replace_all_uses_with(source)
    return True


def _remove_node(graph: ir.Graph, node: ir.Node) -> None:
    if all(not o.uses() and not o.is_graph_output() for o in node.outputs):
        graph.remove(node, safe=True)


# ----------------------------------------------------------------------------------------
# constant folding
# ----------------------------------------------------------------------------------------


def _replace_by_constant(graph: ir.Graph, node: ir.Node, results: list, namer: _Namer) -> None:
    for out, res in zip(node.outputs, results):
        if not out.uses() and not out.is_graph_output():
            continue
        tensor = ir.Tensor(res if res.flags.c_contiguous else res.copy())
        if out.is_graph_output():
            cst = ir.Node("", "Constant", [], [ir.AttrTensor("value", tensor)])
            cst.metadata_props.update(node.metadata_props)
            graph.insert_before(node, cst)
            new_value = cst.outputs[0]
        else:
            new_value = ir.Value(name=namer(f"{out.name or 'cst'}_folded"), const_value=tensor)
            graph.register_initializer(new_value)
        new_value.type = ir.TensorType(tensor.dtype)
        new_value.shape = ir.Shape(res.shape)
        if out.is_graph_output():
            name = out.name
            out.replace_all_uses_with(new_value, replace_graph_outputs=True)
            out.name = None
            new_value.name = name
        else:
            out.replace_all_uses_with(new_value)
    graph.remove(node, safe=True)


def _duplicates_weights(node: ir.Node, results: list, min_size: int = 1024) -> bool:
    """Tells if replacing ``node`` by ``results`` keeps a big input initializer alive (it has
    other consumers) beside a result as big: the same weights stored twice."""
    size = sum(int(getattr(r, "size", 0)) for r in results)
    if size <= min_size:
        return False
    for v in node.inputs:
        if v is None or not v.is_initializer() or v.const_value is None:
            continue
        others = {id(n) for n, _ in v.uses()} - {id(node)}
        if (others or v.is_graph_output()) and v.const_value.size * 2 >= size:
            return True
    return False


def fold_constants(model: ir.Model, size_limit: int = 1 << 20) -> int:
    """
    Replaces every node computing a constant by an initializer (or a ``Constant`` node when it
    produces a graph output). A node is folded when its op is deterministic, in the default
    domain, and its inputs are initializers or outputs of ``Constant`` nodes, or when it is a
    ``Shape``, ``Size``, ``Gather(Shape(x), indices)`` reading only static dimensions.
    Results over ``size_limit`` elements are not folded. A node is not folded either when
    its result has more than 1024 elements and one of its inputs is an initializer at least
    as big used by another node: the weights would be stored twice (a tied weight and its
    transposed copy). Nodes are visited in topological order so that a chain folds in one
    call.

    >>> import onnx
    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.passes import fold_constants
    >>> proto = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 23]>
    ...     g (float[N, 4] x) => (float[N, 4] y) {
    ...         s = Shape <start = 1> (x)
    ...         one = Constant <value_ints = [1]> ()
    ...         shape = Concat <axis = 0> (one, s)
    ...         c = ConstantOfShape <value = float[1] {2.0}> (shape)
    ...         y = Mul (x, c)
    ...     }''')
    >>> model = ir.serde.deserialize_model(proto)
    >>> fold_constants(model)
    3
    >>> [n.op_type for n in model.graph]
    ['Constant', 'Mul']
    """
    graph = _check_model(model, "fold_constants")
    if not isinstance(size_limit, int) or size_limit < 0:
        raise TypeError(f"fold_constants: size_limit must be a positive int, got {size_limit!r}")
    opset = graph.opset_imports.get("", 23)
    namer = _Namer(graph)
    count = 0
    for node in list(graph):
        if node.domain != "" or node.op_type in _NON_DETERMINISTIC or node.op_type == "Constant":
            continue
        if any(
            a.type in {ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS}
            for a in node.attributes.values()
        ):
            continue
        if all(not o.uses() and not o.is_graph_output() for o in node.outputs):
            continue
        results = _fold_shape(node)
        if results is None:
            inputs = [_const(v) for v in node.inputs]
            if not node.inputs or any(
                c is None and v is not None for c, v in zip(inputs, node.inputs)
            ):
                continue
            results = _evaluate(node, inputs, size_limit, opset)
        if results is None or _duplicates_weights(node, results):
            continue
        _replace_by_constant(graph, node, results, namer)
        count += 1
    logger.debug("[fold_constants] %d nodes folded", count)
    return count


# ----------------------------------------------------------------------------------------
# identities
# ----------------------------------------------------------------------------------------


def _identity_source(node: ir.Node, info: _TypeInfo) -> ir.Value | None:
    """The input a node returns unchanged, None if the node is not an identity."""
    if node.domain != "" or len(node.outputs) != 1 or not node.inputs or node.inputs[0] is None:
        return None
    op, x, out = node.op_type, node.inputs[0], node.outputs[0]
    if op == "Identity":
        return x
    if op == "Cast":
        return x if info.dtype(x) is not None and info.dtype(x) == _attr(node, "to") else None
    if op == "Transpose":
        perm = _attr(node, "perm")
        if perm is None:
            return x if info.rank(x) is not None and info.rank(x) <= 1 else None
        return x if list(perm) == list(range(len(perm))) else None
    if op in {"Reshape", "Expand"} and len(node.inputs) > 1 and node.inputs[1] is not None:
        if op == "Reshape":
            ok = _reshape_is_identity(node.inputs[1], x, _attr(node, "allowzero", 0))
        else:
            ok = _expand_is_identity(node.inputs[1], x)
        return x if ok else None
    if op == "Slice":
        return x if _slice_is_identity(node) else None
    if op in {"Squeeze", "Unsqueeze"} and x.producer() is not None:
        # Squeeze(Unsqueeze(x, a), a) == x, Unsqueeze(Squeeze(x, a), a) == x (the dimensions
        # a of x are 1 or Squeeze fails)
        inner = x.producer()
        expected = "Unsqueeze" if op == "Squeeze" else "Squeeze"
        if inner.op_type != expected or inner.domain != "" or inner.inputs[0] is None:
            return None
        rank = info.rank(x if op == "Squeeze" else inner.inputs[0])
        a1 = _normalized(_axes(inner, [_const(v) for v in inner.inputs], 1), rank)
        a2 = _normalized(_axes(node, [_const(v) for v in node.inputs], 1), rank)
        return inner.inputs[0] if a1 is not None and a1 == a2 else None
    if op in {"Mul", "Add"} and len(node.inputs) == 2:
        neutral = 1 if op == "Mul" else 0
        if _is_scalar_constant(node.inputs[1], neutral, x, info) and (
            out.dtype in (None, info.dtype(x))
        ):
            return x
        y = node.inputs[1]
        if (
            y is not None
            and _is_scalar_constant(x, neutral, y, info)
            and (out.dtype in (None, info.dtype(y)))
        ):
            return y
        return None
    if op in {"Div", "Sub"} and len(node.inputs) == 2:
        neutral = 1 if op == "Div" else 0
        if _is_scalar_constant(node.inputs[1], neutral, x, info) and (
            out.dtype in (None, info.dtype(x))
        ):
            return x
    return None


def _replace_by_identity(graph: ir.Graph, node: ir.Node, out: ir.Value, source: ir.Value) -> None:
    """An Identity inserted before ``node`` produces ``out`` (and takes its name) from
    ``source``."""
    identity = ir.Node("", "Identity", [source])
    identity.metadata_props.update(node.metadata_props)
    graph.insert_before(node, identity)
    new_value = identity.outputs[0]
    new_value.type, new_value.shape = out.type or source.type, out.shape or source.shape
    name = out.name
    out.replace_all_uses_with(new_value, replace_graph_outputs=True)
    out.name = None
    new_value.name = name


def remove_identities(model: ir.Model) -> int:
    """
    Removes the nodes returning one of their inputs unchanged: ``Identity``, ``Cast`` to the
    same type, ``Reshape`` or ``Expand`` to the input's own shape, ``Squeeze(Unsqueeze(x))``
    and ``Unsqueeze(Squeeze(x))`` on the same axes, ``Slice`` over the full range,
    ``Transpose`` with the identity permutation, ``Mul``/``Div`` by a scalar 1 and
    ``Add``/``Sub`` of a scalar 0 (when no broadcast can change the result).
    ``Cast(Cast(x))`` reads ``x`` directly when the first cast is lossless. An Identity
    producing a graph output from a graph input stays.

    >>> import onnx
    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.passes import remove_identities
    >>> proto = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 23]>
    ...     g (float16[N, 4] x) => (float16[N, 4] y) {
    ...         a = Cast <to = 1> (x)
    ...         b = Cast <to = 10> (a)
    ...         y = Transpose <perm = [0, 1]> (b)
    ...     }''')
    >>> model = ir.serde.deserialize_model(proto)
    >>> remove_identities(model)
    3
    >>> [n.op_type for n in model.graph]
    ['Identity']
    """
    graph = _check_model(model, "remove_identities")
    info = _TypeInfo(graph)
    count = 0
    for node in list(graph):
        if node.graph is not graph:
            continue
        if (
            node.op_type == "Cast"
            and node.domain == ""
            and node.inputs[0] is not None
            and (first := node.inputs[0].producer()) is not None
            and first.op_type == "Cast"
            and first.domain == ""
            and first.inputs[0] is not None
            and first.graph is graph
            and _lossless(info.dtype(first.inputs[0]), ir.DataType(_attr(first, "to")))
        ):
            # Cast(Cast(x, lossless), t) == Cast(x, t)
            node.replace_input_with(0, first.inputs[0])
            _remove_node(graph, first)
            count += 1
        source = _identity_source(node, info)
        if source is None:
            continue
        if source.producer() is not None:
            # the same tensor: what is known about the output is true for the source
            source.type = source.type or node.outputs[0].type
            source.shape = source.shape or node.outputs[0].shape
        if _bypass(graph, node.outputs[0], source):
            _remove_node(graph, node)
            count += 1
        elif node.op_type != "Identity":
            # the output name must stay: a cheaper Identity produces it
            _replace_by_identity(graph, node, node.outputs[0], source)
            graph.remove(node, safe=True)
            count += 1
    logger.debug("[remove_identities] %d rewrites", count)
    return count


# ----------------------------------------------------------------------------------------
# merged nodes
# ----------------------------------------------------------------------------------------


def _drop_if_unused(graph: ir.Graph, value: ir.Value | None) -> None:
    """Removes an initializer or a Constant node nothing reads anymore."""
    if value is None or value.uses() or value.is_graph_output() or value.is_graph_input():
        return
    if value.is_initializer() and value.name in graph.initializers:
        del graph.initializers[value.name]
    elif (producer := value.producer()) is not None and producer.graph is graph:
        if producer.op_type == "Constant" and producer.domain == "":
            graph.remove(producer, safe=True)


def merge_unsqueeze(model: ir.Model) -> int:
    """
    Replaces ``Unsqueeze(Unsqueeze(x, a1), a2)`` by one ``Unsqueeze(x, a)``, and
    ``Squeeze(Squeeze(x, a1), a2)`` by one ``Squeeze(x, a)``, when the axes are constant and
    the inner node's output is used only by the outer node and is not a graph output. The axes
    of the second node refer to the rank after the first one; negative axes are merged when
    the rank of ``x`` is known. Nodes are visited in topological order, a chain of any length
    becomes one node in one call. Returns the number of nodes removed.

    >>> import onnx
    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.passes import merge_unsqueeze
    >>> proto = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 23]>
    ...     g (float[N] x) => (float[N, 1, 1, 1] y)
    ...     <int64[1] one = {1}, int64[1] two = {2}, int64[1] three = {3}> {
    ...         a = Unsqueeze (x, one)
    ...         b = Unsqueeze (a, two)
    ...         y = Unsqueeze (b, three)
    ...     }''')
    >>> model = ir.serde.deserialize_model(proto)
    >>> merge_unsqueeze(model)
    2
    >>> node = next(iter(model.graph))
    >>> node.op_type, node.inputs[1].const_value.numpy().tolist()
    ('Unsqueeze', [1, 2, 3])
    """
    graph = _check_model(model, "merge_unsqueeze")
    info, namer, count = None, None, 0
    for node in list(graph):
        if node.op_type not in {"Squeeze", "Unsqueeze"} or node.domain != "":
            continue
        x = node.inputs[0] if node.inputs else None
        inner = None if x is None else x.producer()
        if (
            inner is None
            or inner.op_type != node.op_type
            or inner.domain != ""
            or inner.graph is not graph
            or inner.inputs[0] is None
            or len(x.uses()) != 1
            or x.is_graph_output()
        ):
            continue
        a1 = _axes(inner, [None, *(_const(v) for v in inner.inputs[1:])], 1)
        a2 = _axes(node, [None, *(_const(v) for v in node.inputs[1:])], 1)
        if not a1 or not a2:
            continue
        if info is None:
            info, namer = _TypeInfo(graph), _Namer(graph)
        axes = _combined_axes(node.op_type, a1, a2, info.rank(inner.inputs[0]))
        if axes is None:
            continue
        node.replace_input_with(0, inner.inputs[0])
        if "axes" in node.attributes:  # opset < 13
            node.attributes["axes"] = ir.AttrInt64s("axes", axes)
        else:
            old = node.inputs[1]
            tensor = ir.tensor(np.array(axes, dtype=np.int64))
            value = ir.Value(
                name=namer(f"{node.op_type.lower()}_axes"),
                const_value=tensor,
                type=ir.TensorType(ir.DataType.INT64),
                shape=ir.Shape([len(axes)]),
            )
            graph.register_initializer(value)
            node.replace_input_with(1, value)
            _drop_if_unused(graph, old)
        old_axes = inner.inputs[1] if len(inner.inputs) > 1 else None
        _remove_node(graph, inner)
        _drop_if_unused(graph, old_axes)
        count += 1
    logger.debug("[merge_unsqueeze] %d nodes merged", count)
    return count


def _cse_key(node: ir.Node, max_size: int) -> tuple | None:
    """What makes two nodes compute the same results, None if a node must stay."""
    if node.domain not in _PURE_DOMAINS or node.op_type in _NON_DETERMINISTIC or not node.outputs:
        return None
    attributes = []
    for _, att in sorted(node.attributes.items()):
        if not isinstance(att, ir.Attr) or att.type in _SUBGRAPHS:
            return None
        if att.type == ir.AttributeType.TENSOR and att.value.size > max_size:
            return None
        attributes.append(ir.serde.serialize_attribute(att).SerializeToString(deterministic=True))
    return (
        node.domain,
        node.op_type,
        node.overload,
        tuple(node.inputs),
        tuple(attributes),
        tuple(bool(o.name) or bool(o.uses()) or o.is_graph_output() for o in node.outputs),
    )


def eliminate_common_subexpressions(model: ir.Model, max_size: int = 1 << 16) -> int:
    """
    Removes the nodes computing what a previous node already computes: same op type, domain,
    inputs (the same values in the same order) and attributes. Their outputs are replaced by
    the first node's outputs. A graph output keeps its name: the first node's output takes it,
    or an ``Identity`` produces it when the first node's output is itself a graph output.
    Random ops, nodes with subgraphs, nodes of domains which may have side effects and
    ``Constant`` nodes (or any attribute) holding more than ``max_size`` elements stay.
    Nodes are visited in topological order so that duplicated chains merge in one call.
    Returns the number of nodes removed.

    >>> import onnx
    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.passes import eliminate_common_subexpressions
    >>> proto = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 23]>
    ...     g (float[N] x) => (float[N] y) {
    ...         a1 = Exp (x)
    ...         b1 = Neg (a1)
    ...         a2 = Exp (x)
    ...         b2 = Neg (a2)
    ...         y = Add (b1, b2)
    ...     }''')
    >>> model = ir.serde.deserialize_model(proto)
    >>> eliminate_common_subexpressions(model)
    2
    >>> [n.op_type for n in model.graph]
    ['Exp', 'Neg', 'Add']
    """
    graph = _check_model(model, "eliminate_common_subexpressions")
    if not isinstance(max_size, int) or max_size < 0:
        raise TypeError(
            f"eliminate_common_subexpressions: max_size must be a positive int, got {max_size!r}"
        )
    seen: dict[tuple, ir.Node] = {}
    count = 0
    for node in list(graph):
        key = _cse_key(node, max_size)
        if key is None:
            continue
        first = seen.setdefault(key, node)
        if first is node:
            continue
        for kept, dup in zip(first.outputs, node.outputs):
            kept.type, kept.shape = kept.type or dup.type, kept.shape or dup.shape
            if not _bypass(graph, dup, kept):
                # kept is a graph output as well, an Identity produces the other one
                _replace_by_identity(graph, node, dup, kept)
        graph.remove(node, safe=True)
        count += 1
    logger.debug("[eliminate_common_subexpressions] %d nodes removed", count)
    return count


# ----------------------------------------------------------------------------------------
# unused nodes and duplicated constants
# ----------------------------------------------------------------------------------------


def remove_unused(model: ir.Model) -> int:
    """
    Removes the nodes whose outputs are neither used nor graph outputs, then the initializers
    no longer used (initializers which are graph inputs stay). Only nodes of domains known to
    be free of side effects (``""``, ``com.microsoft``, ``ai.onnx.ml``) and of the model's
    local functions are removed. Returns the number of nodes and initializers removed.

    >>> import onnx
    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.passes import remove_unused
    >>> proto = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 23]>
    ...     g (float[N] x) => (float[N] y) {
    ...         unused = Neg (x)
    ...         y = Abs (x)
    ...     }''')
    >>> model = ir.serde.deserialize_model(proto)
    >>> remove_unused(model)
    1
    """
    graph = _check_model(model, "remove_unused")
    pure = _PURE_DOMAINS | {f.domain for f in model.functions.values()}
    count = 0
    for node in reversed(list(graph)):
        if node.domain not in pure:
            continue
        if all(not o.uses() and not o.is_graph_output() for o in node.outputs):
            graph.remove(node, safe=True)
            count += 1
    inputs = {id(v) for v in graph.inputs}
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output() and id(value) not in inputs:
            del graph.initializers[name]
            count += 1
    logger.debug("[remove_unused] %d nodes or initializers removed", count)
    return count


def deduplicate_constants(model: ir.Model, max_size: int = 1024) -> int:
    """
    Merges the initializers sharing the same type, shape and content when they have less
    than ``max_size`` elements. The first one in the graph stays, the others are removed.
    Initializers which are graph inputs or graph outputs are left as they are.

    >>> import onnx
    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.passes import deduplicate_constants
    >>> proto = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 23]>
    ...     g (float[N] x) => (float[N] y) <float[1] a = {2.0}, float[1] b = {2.0}> {
    ...         t = Mul (x, a)
    ...         y = Mul (t, b)
    ...     }''')
    >>> model = ir.serde.deserialize_model(proto)
    >>> deduplicate_constants(model), list(model.graph.initializers)
    (1, ['a'])
    """
    graph = _check_model(model, "deduplicate_constants")
    inputs = {id(v) for v in graph.inputs}
    seen: dict[tuple, ir.Value] = {}
    count = 0
    for name, value in list(graph.initializers.items()):
        tensor = value.const_value
        if (
            tensor is None
            or tensor.size >= max_size
            or tensor.dtype == ir.DataType.STRING
            or id(value) in inputs
            or value.is_graph_output()
        ):
            continue
        key = (tensor.dtype, tuple(tensor.shape.numpy()), tensor.tobytes())
        if key not in seen:
            seen[key] = value
            continue
        value.replace_all_uses_with(seen[key])
        del graph.initializers[name]
        count += 1
    logger.debug("[deduplicate_constants] %d initializers merged", count)
    return count


# ----------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------


def _pass_name(fct: Callable) -> str:
    name = getattr(fct, "__name__", None)
    if name is None and hasattr(fct, "func"):  # functools.partial
        name = getattr(fct.func, "__name__", None)
    return name or type(fct).__name__


def run_passes(
    model: ir.Model,
    passes: Iterable[Callable[[ir.Model], int]] | None = None,
    verbose: int = 0,
    max_rounds: int = 5,
) -> dict[str, int]:
    """
    Runs a list of passes until none of them changes the model, at most ``max_rounds``
    rounds. The default list is :func:`fold_constants`, :func:`remove_identities`,
    :func:`merge_unsqueeze`, :func:`eliminate_common_subexpressions`,
    :func:`deduplicate_constants`, :func:`remove_unused`. Any callable ``(model) -> int``
    is accepted. Returns the number of rewrites per pass name.

    >>> import onnx
    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.custom.passes import run_passes, remove_unused
    >>> proto = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 23]>
    ...     g (float[N] x) => (float[N] y) {
    ...         unused = Neg (x)
    ...         y = Abs (x)
    ...     }''')
    >>> model = ir.serde.deserialize_model(proto)
    >>> run_passes(model, [remove_unused])
    {'remove_unused': 1}
    """
    _check_model(model, "run_passes")
    if passes is None:
        passes = [
            fold_constants,
            remove_identities,
            merge_unsqueeze,
            eliminate_common_subexpressions,
            deduplicate_constants,
            remove_unused,
        ]
    passes = list(passes)
    for i, p in enumerate(passes):
        if not callable(p):
            raise TypeError(f"run_passes: passes[{i}] must be callable, got {type(p).__name__}")
    counts = {_pass_name(p): 0 for p in passes}
    for r in range(max_rounds):
        changed = 0
        for i, p in enumerate(passes):
            n = p(model)
            if not isinstance(n, int):
                raise TypeError(
                    f"run_passes: passes[{i}] ({_pass_name(p)}) must return an int, "
                    f"got {type(n).__name__}"
                )
            counts[_pass_name(p)] += n
            changed += n
            if verbose:
                print(
                    f"[run_passes] round {r} {_pass_name(p)}: {n} rewrites, "
                    f"{len(model.graph)} nodes"
                )
        if not changed:
            break
    return counts
