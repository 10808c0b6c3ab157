"""
Small helpers the fusion passes (:mod:`.fusions`, :mod:`.fusions_attention`) use to match
patterns in an :class:`onnx_ir.Graph`: producers and consumers of a value, constants,
shapes known or inferred from the neighbours, replacement of a value, removal of dead nodes.

>>> import onnx_ir as ir
>>> from onnx_diagnostic.export.custom.fusion_patterns import _rank
>>> _rank(ir.Value(name="x", shape=ir.Shape([2, "n"])))
2
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from .folding import _attr
from .traceability import merge_metadata

__all__ = ["merge_metadata"]

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


def _remove_dead(graph: ir.Graph, nodes: Sequence[ir.Node], into: ir.Node | None = None) -> int:
    """Removes ``nodes`` and then their producers as long as their outputs are unused.
    ``into`` (the node of a fusion) receives the traceability metadata of the removed
    nodes (:func:`.traceability.merge_metadata`)."""
    stack = list(nodes)
    removed = 0
    while stack:
        node = stack.pop()
        if node.graph is not graph:
            continue
        if any(out.is_graph_output() or out.uses() for out in node.outputs):
            continue
        producers = [i.producer() for i in node.inputs if i is not None]
        if into is not None:
            merge_metadata(into, [node])
        graph.remove(node, safe=True)
        removed += 1
        stack.extend(p for p in producers if p is not None)
    return removed


def _new_node(op_type: str, inputs: Sequence[ir.Value | None], **attributes: object) -> ir.Node:
    attrs = [ir.convenience.convert_attribute(k, v) for k, v in attributes.items()]
    return ir.Node("", op_type, inputs, attributes=attrs)
