"""
Fusions of the kind onnxruntime-genai's model builder writes, applied to a model the
custom exporter produced (:func:`apply_genai_fusions`), for onnxruntime's CPU and CUDA
kernels of the ``com.microsoft`` domain:

* :func:`fuse_shared_input_matmuls`: MatMuls reading the same activation with constant
  weights of the same number of rows (``q_proj``, ``k_proj``, ``v_proj``; ``gate_proj``,
  ``up_proj``) become one MatMul on the concatenated weights followed by a Split;
* :func:`fuse_skip_simplified_layer_norm`: ``RMSNormalization(Add(x, skip))`` becomes
  ``com.microsoft.SkipSimplifiedLayerNormalization``, which also returns the sum for the
  residual connection.

``GroupQueryAttention`` with the rotary embedding inside, a past/present buffer shared at
the maximum length and the mask reduced to sequence lengths is in
:mod:`onnx_diagnostic.export.custom.fusions_gqa` (it needs the transformers model), applied
by :func:`apply_genai_fusions` when given the model.

Every fused node receives the traceability metadata of the nodes it replaces
(:func:`onnx_diagnostic.export.custom.fusion_patterns.merge_metadata`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from .folding import _attr
from .fusion_patterns import _const, _rank, _replace_value, merge_metadata

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

__all__ = [
    "apply_genai_fusions",
    "fuse_shared_input_matmuls",
    "fuse_skip_simplified_layer_norm",
]

_MS = "com.microsoft"


def _main(node: ir.Node, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in ("", "ai.onnx")


def _weight(node: ir.Node) -> np.ndarray | None:
    """The 2D constant right operand of a MatMul, None otherwise."""
    if len(node.inputs) != 2 or node.inputs[1] is None:
        return None
    arr = _const(node.inputs[1])
    if arr is None or arr.ndim != 2 or arr.dtype.kind != "f":
        return None
    return arr


def fuse_shared_input_matmuls(model: ir.Model) -> int:
    """
    Replaces MatMuls which read the same activation and multiply it by constant 2D
    weights of the same type and number of rows by one MatMul on the weights
    concatenated along the columns, followed by a Split giving back every result.

    :param model: the model, modified in place
    :return: the number of fused groups

    >>> import numpy as np
    >>> import onnx_ir as ir
    >>> from onnx import TensorProto, helper as oh, numpy_helper as onh
    >>> w = [onh.from_array(np.ones((4, n), dtype=np.float32), f"w{n}") for n in (2, 3)]
    >>> nodes = [oh.make_node("MatMul", ["x", f"w{n}"], [o]) for n, o in ((2, "a"), (3, "b"))]
    >>> graph = oh.make_graph(
    ...     nodes,
    ...     "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
    ...     [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "ab"], w,
    ... )
    >>> model = ir.from_proto(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]))
    >>> fuse_shared_input_matmuls(model)
    1
    >>> [n.op_type for n in model.graph]
    ['MatMul', 'Split']
    """
    graph = model.graph
    groups: dict[int, list[ir.Node]] = {}
    inputs: dict[int, ir.Value] = {}
    for node in graph:
        if not _main(node, "MatMul") or node.inputs[0] is None or _weight(node) is None:
            continue
        groups.setdefault(id(node.inputs[0]), []).append(node)
        inputs[id(node.inputs[0])] = node.inputs[0]
    fused = 0
    for key, nodes in groups.items():
        weights = [_weight(n) for n in nodes]
        # one group per (rows, dtype): the same activation may feed other matrices
        by_kind: dict[tuple[int, str], list[int]] = {}
        for i, w in enumerate(weights):
            by_kind.setdefault((w.shape[0], str(w.dtype)), []).append(i)  # type: ignore[union-attr]
        for indices in by_kind.values():
            if len(indices) < 2:
                continue
            group = [nodes[i] for i in indices]
            arrays = [weights[i] for i in indices]
            _fuse_group(graph, inputs[key], group, arrays)  # type: ignore[arg-type]
            fused += 1
    return fused


def _fuse_group(
    graph: ir.Graph, x: ir.Value, group: list[ir.Node], arrays: list[np.ndarray]
) -> None:
    first = group[0]
    base = first.inputs[1].name or "weight"  # type: ignore[union-attr]
    name = f"{base}__fused{len(group)}"
    while name in graph.initializers:
        name += "_"
    concat = ir.Value(name=name, const_value=ir.tensor(np.concatenate(arrays, axis=1), name=name))
    graph.register_initializer(concat)
    split_name = f"{name}__split"
    sizes = ir.Value(
        name=split_name,
        const_value=ir.tensor(
            np.array([a.shape[1] for a in arrays], dtype=np.int64), name=split_name
        ),
    )
    graph.register_initializer(sizes)
    matmul = ir.Node("", "MatMul", [x, concat], num_outputs=1, name=f"{first.name}__fused")
    split = ir.Node(
        "",
        "Split",
        [matmul.outputs[0], sizes],
        attributes=[ir.AttrInt64("axis", -1)],
        num_outputs=len(group),
        name=f"{first.name}__split",
    )
    graph.insert_before(first, [matmul, split])
    merge_metadata(matmul, group)
    merge_metadata(split, group)
    old_weights = [n.inputs[1] for n in group]
    for node, out in zip(group, split.outputs):
        _replace_value(node.outputs[0], out)
    for node in group:
        graph.remove(node, safe=True)
    for w in old_weights:
        if w is not None and w.is_initializer() and not w.uses() and not w.is_graph_output():
            graph.initializers.pop(w.name)  # type: ignore[arg-type]


def fuse_skip_simplified_layer_norm(model: ir.Model) -> int:
    """
    Replaces ``RMSNormalization(Add(x, skip), gamma)`` (normalization over the last axis,
    ``x`` and ``skip`` of the same rank, 2 or 3) by
    ``com.microsoft.SkipSimplifiedLayerNormalization(x, skip, gamma)``, whose fourth output
    is the sum when other nodes use it.

    :param model: the model, modified in place
    :return: the number of fused nodes

    >>> import numpy as np
    >>> import onnx_ir as ir
    >>> from onnx import TensorProto, helper as oh, numpy_helper as onh
    >>> graph = oh.make_graph(
    ...     [oh.make_node("Add", ["x", "y"], ["s"]),
    ...      oh.make_node("RMSNormalization", ["s", "g"], ["n"], epsilon=1e-6)],
    ...     "g", [oh.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 4]) for n in "xy"],
    ...     [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "ns"],
    ...     [onh.from_array(np.ones((4,), dtype=np.float32), "g")],
    ... )
    >>> model = ir.from_proto(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 23)]))
    >>> fuse_skip_simplified_layer_norm(model)
    1
    >>> [n.op_type for n in model.graph]
    ['SkipSimplifiedLayerNormalization']
    """
    graph = model.graph
    fused = 0
    for norm in list(graph):
        if not _main(norm, "RMSNormalization") or len(norm.inputs) < 2:
            continue
        add = norm.inputs[0].producer() if norm.inputs[0] is not None else None
        if add is None or not _main(add, "Add"):
            continue
        x, skip = add.inputs[0], add.inputs[1]
        gamma = norm.inputs[1]
        if x is None or skip is None or gamma is None:
            continue
        if _const(x) is not None or _const(skip) is not None:
            continue
        rank = _rank(x)
        if rank not in (2, 3) or _rank(skip) != rank or _rank(gamma) != 1:
            continue
        axis = _attr(norm, "axis")
        axis = -1 if axis is None else int(axis)  # type: ignore[arg-type]
        stash = _attr(norm, "stash_type")
        if axis not in (-1, rank - 1) or (stash is not None and int(stash) != 1):  # type: ignore[arg-type]
            continue
        eps = _attr(norm, "epsilon")
        eps = 1e-5 if eps is None else float(eps)  # type: ignore[arg-type]
        node = ir.Node(
            _MS,
            "SkipSimplifiedLayerNormalization",
            [x, skip, gamma],
            attributes=[ir.AttrFloat32("epsilon", eps)],
            num_outputs=4,
            name=f"{norm.name}__skip",
        )
        # the mean and the inverse standard deviation are not needed
        node.outputs[1].name = ""
        node.outputs[2].name = ""
        graph.insert_before(add, [node])
        merge_metadata(node, [add, norm])
        _replace_value(norm.outputs[0], node.outputs[0])
        summed = add.outputs[0]
        if summed.is_graph_output() or any(u.node is not norm for u in summed.uses()):
            _replace_value(summed, node.outputs[3])
        else:
            node.outputs[3].name = ""
        graph.remove(norm, safe=True)
        graph.remove(add, safe=True)
        fused += 1
    if fused and _MS not in model.opset_imports:
        model.opset_imports[_MS] = 1
    return fused


def apply_genai_fusions(
    model: onnx.ModelProto, llm: torch.nn.Module | None = None, max_length: int | None = None
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """
    Applies :func:`fuse_shared_input_matmuls` and :func:`fuse_skip_simplified_layer_norm`
    to a model (the custom exporter's, any model with those patterns) and returns a new
    model and the number of fusions of each kind. The model given is not modified.
    With ``llm``, the transformers model which was exported with the custom exporter,
    the attention of every layer first becomes a ``GroupQueryAttention`` with the rotary
    inside and buffers of the cache shared by past and present
    (:func:`onnx_diagnostic.export.custom.fusions_gqa.fuse_group_query_attention`), which
    then reads the packed result of the fused q/k/v projection
    (:func:`onnx_diagnostic.export.custom.fusions_gqa.pack_group_query_attention_qkv`):
    the graph onnxruntime-genai's builder writes.

    :param model: an :class:`onnx.ModelProto` (weights included, not external data)
    :param llm: the exported transformers model, None to leave the attention as it is
    :param max_length: the longest sequence of the model with ``GroupQueryAttention``
        (the length of its rotary tables), ``config.max_position_embeddings`` if None
    :return: ``(fused model, {fusion name: count})``
    :raises TypeError: when ``model`` is not an :class:`onnx.ModelProto`
    :raises ValueError: when ``llm`` is given and an attention cannot be fused (the
        reason and the module are named)

    >>> import torch
    >>> from onnx_diagnostic.export.api import to_onnx
    >>> from onnx_diagnostic.torch_export_patches import torch_export_patches
    >>> from onnx_diagnostic.torch_models.llms import get_tiny_llm
    >>> data = get_tiny_llm()
    >>> with torch_export_patches(patch_transformers=True):
    ...     onx = to_onnx(data.model, kwargs=data.inputs, dynamic_shapes=data.dynamic_shapes,
    ...                   exporter="custom")
    >>> fused, counts = apply_genai_fusions(onx)
    >>> counts
    {'fuse_shared_input_matmuls': 2, 'fuse_skip_simplified_layer_norm': 2}
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise TypeError(
            f"apply_genai_fusions: model must be an onnx.ModelProto, not {type(model).__name__}"
        )
    irm = ir.from_proto(model)
    counts = _genai_fusions(irm, llm, max_length)
    return ir.to_proto(irm), counts


def _genai_fusions(
    irm: ir.Model, llm: torch.nn.Module | None = None, max_length: int | None = None
) -> dict[str, int]:
    """:func:`apply_genai_fusions` on an :class:`onnx_ir.Model`, modified in place."""
    counts: dict[str, int] = {}
    if llm is not None:
        from .fusions_gqa import fuse_group_query_attention, pack_group_query_attention_qkv

        counts["fuse_group_query_attention"] = fuse_group_query_attention(irm, llm, max_length)
    for fct in (fuse_shared_input_matmuls, fuse_skip_simplified_layer_norm):
        counts[fct.__name__] = fct(irm)
    if llm is not None:
        counts["pack_group_query_attention_qkv"] = pack_group_query_attention_qkv(irm)
    return counts
