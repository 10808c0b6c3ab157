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

import onnx_ir as ir

from .folding import (
    _TypeInfo,
    _attr,
    _axes,
    _const,
    _evaluate,
    _fold_shape,
    _static_dims,
)

__all__ = [
    "deduplicate_constants",
    "fold_constants",
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
}
# domains whose nodes are known to have no side effect (removable when unused)
_PURE_DOMAINS = {"", "ai.onnx", "com.microsoft", "ai.onnx.ml"}


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
# numpy kernels for constant folding
# ----------------------------------------------------------------------------------------


def _replace_by_constant(graph: ir.Graph, node: ir.Node, results: list, namer: _Namer) -> None:
    for out, res in zip(node.outputs, results):
        if not out.uses() and not out.is_graph_output():
            continue
        tensor = ir.Tensor(res if res.flags.c_contiguous else res.copy())
        if out.is_graph_output():
            cst = ir.Node("", "Constant", [], [ir.AttrTensor("value", tensor)])
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


def fold_constants(model: ir.Model, size_limit: int = 1 << 20) -> int:
    """
    Replaces every node computing a constant by an initializer (or a ``Constant`` node when it
    produces a graph output). A node is folded when its op is deterministic, in the default
    domain, and its inputs are initializers or outputs of ``Constant`` nodes, or when it is a
    ``Shape``, ``Size``, ``Gather(Shape(x), indices)`` reading only static dimensions.
    Results over ``size_limit`` elements are not folded. Nodes are visited in topological
    order so that a chain folds in one call.

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
        if results is None:
            continue
        _replace_by_constant(graph, node, results, namer)
        count += 1
    logger.info("[fold_constants] %d nodes folded", count)
    return count


# ----------------------------------------------------------------------------------------
# identities
# ----------------------------------------------------------------------------------------

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
    if op == "Squeeze" and x.producer() is not None:
        unsq = x.producer()
        if unsq.op_type != "Unsqueeze" or unsq.domain != "" or unsq.inputs[0] is None:
            return None
        rank = info.rank(x)
        a1 = _normalized(_axes(unsq, [_const(v) for v in unsq.inputs], 1), rank)
        a2 = _normalized(_axes(node, [_const(v) for v in node.inputs], 1), rank)
        return unsq.inputs[0] if a1 is not None and a1 == a2 else None
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


def _replace_by_identity(graph: ir.Graph, node: ir.Node, source: ir.Value) -> None:
    out = node.outputs[0]
    identity = ir.Node("", "Identity", [source])
    graph.insert_before(node, identity)
    new_value = identity.outputs[0]
    new_value.type, new_value.shape = out.type or source.type, out.shape or source.shape
    name = out.name
    out.replace_all_uses_with(new_value, replace_graph_outputs=True)
    out.name = None
    new_value.name = name
    graph.remove(node, safe=True)


def remove_identities(model: ir.Model) -> int:
    """
    Removes the nodes returning one of their inputs unchanged: ``Identity``, ``Cast`` to the
    same type, ``Reshape`` or ``Expand`` to the input's own shape, ``Squeeze(Unsqueeze(x))``
    on the same axes, ``Slice`` over the full range, ``Transpose`` with the identity
    permutation, ``Mul``/``Div`` by a scalar 1 and ``Add``/``Sub`` of a scalar 0 (when no
    broadcast can change the result). ``Cast(Cast(x))`` reads ``x`` directly when the first
    cast is lossless. An Identity producing a graph output from a graph input stays.

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
        if _bypass(graph, node.outputs[0], source):
            _remove_node(graph, node)
            count += 1
        elif node.op_type != "Identity":
            # the output name must stay: a cheaper Identity produces it
            _replace_by_identity(graph, node, source)
            count += 1
    logger.info("[remove_identities] %d rewrites", count)
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
    logger.info("[remove_unused] %d nodes or initializers removed", count)
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
    logger.info("[deduplicate_constants] %d initializers merged", count)
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
        passes = [fold_constants, remove_identities, deduplicate_constants, remove_unused]
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
