"""
``com.microsoft.GroupQueryAttention`` in a model the custom exporter produced from a
transformers causal LM, as onnxruntime-genai's model builder writes it
(:func:`fuse_group_query_attention`):

* the rotary embedding runs inside the attention node, its cos/sin tables computed once
  from the model's rotary module for every position up to ``max_length``
  (no ``Cos``/``Sin`` per step);
* the attention mask only gives sequence lengths (``seqlens_k``, ``total_sequence_length``,
  computed in the graph from ``attention_mask``): the valid tokens of every row come first
  (right padding), ``position_ids`` and ``cache_position`` are no longer inputs;
* ``present.N.key`` / ``present.N.value`` may be the buffers of ``past_key_values.N.key`` /
  ``.value`` (allocated at the maximum length, written in place, no ``Concat`` copying the
  cache at every step); onnxruntime shares them when both are bound to the same memory.

:func:`onnx_diagnostic.helpers.rt_helper.onnx_generate` recognizes such a model by its
metadata (:data:`SHARED_BUFFER_KEY`) and runs it with shared buffers, left-padded prompts
moved to the right. Fed as a usual model (a cache growing from empty, every token valid),
it gives the outputs of the original one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from ...helpers.rt_helper import _MAX_LENGTH_KEY, _SHARED_BUFFER_KEY
from .folding import _attr
from .fusion_patterns import _remove_dead, _replace_value, merge_metadata
from .traceability import MODULE

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "MAX_LENGTH_KEY",
    "SHARED_BUFFER_KEY",
    "fuse_group_query_attention",
    "pack_group_query_attention_qkv",
]

_MS = "com.microsoft"

#: model metadata: ``"1"`` when present.N.* may share the buffers of past_key_values.N.*
#: (GroupQueryAttention), the mask then gives sequence lengths (right padding)
SHARED_BUFFER_KEY = _SHARED_BUFFER_KEY
#: model metadata: the number of positions of the rotary tables (the longest sequence)
MAX_LENGTH_KEY = _MAX_LENGTH_KEY

#: rotary types whose cos/sin depend on the position only (``dynamic`` and ``longrope``
#: change with the length of the sequence)
_STATIC_ROPE = {"default", "linear", "llama3", "yarn", "proportional"}

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


def _fail(message: str) -> ValueError:
    return ValueError(f"fuse_group_query_attention: {message}")


def _under(node: ir.Node, path: str) -> bool:
    """The node belongs to module ``path`` or one of its submodules: the first module it
    records (a fused node lists the modules of the nodes it replaced after its own)."""
    own = node.metadata_props.get(MODULE, "").split("|")[0]
    return own == path or own.startswith(path + ".")


def _text_config(llm: Any) -> Any:
    config = getattr(llm, "config", None)
    if config is None:
        raise _fail(
            f"llm must be a transformers model with a config, {type(llm).__name__} has none"
        )
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _rope_type(config: Any) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if isinstance(params, dict):
        if "rope_type" in params or "type" in params:
            return str(params.get("rope_type", params.get("type")))
        # one set of parameters per layer kind (gemma3): several rotary tables
        return "per-layer"
    return "default"


def _attention_modules(llm: torch.nn.Module) -> list[tuple[str, Any]]:
    import torch

    found = []
    for name, mod in llm.named_modules():
        if all(
            isinstance(getattr(mod, p, None), torch.nn.Linear)
            for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            found.append((name, mod))
    return found


def _check_module(name: str, mod: Any, config: Any) -> None:
    """Refuses what GroupQueryAttention cannot compute as the module does."""
    for norm in ("q_norm", "k_norm"):
        if getattr(mod, norm, None) is not None:
            raise _fail(
                f"{name}.{norm}: a normalization between the projection and the rotary "
                "embedding is not supported"
            )
    if getattr(mod, "sliding_window", None) or getattr(config, "sliding_window", None):
        if getattr(config, "use_sliding_window", True) is not False:
            raise _fail(f"{name}: sliding-window attention is not supported")
    if getattr(config, "attn_logit_softcapping", None):
        raise _fail(f"{name}: attn_logit_softcapping is not supported")
    if getattr(mod, "is_causal", True) is False:
        raise _fail(f"{name}: the attention is not causal")


def _rotary_tables(llm: Any, config: Any, max_length: int, dtype: Any) -> tuple[Any, Any]:
    """cos and sin of shape (max_length, head_dim / 2) from the model's rotary module."""
    import torch

    rope = _rope_type(config)
    if rope not in _STATIC_ROPE:
        raise _fail(
            f"rope type {rope!r} is not supported: the cos/sin tables must depend on the "
            f"position only ({sorted(_STATIC_ROPE)})"
        )
    rotaries = [
        (n, m) for n, m in llm.named_modules() if type(m).__name__.endswith("RotaryEmbedding")
    ]
    if len(rotaries) != 1:
        raise _fail(
            f"one rotary module expected, found {[n for n, _ in rotaries]}: several tables "
            "(one per layer kind) or none are not supported"
        )
    name, rotary = rotaries[0]
    positions = torch.arange(max_length, dtype=torch.int64)[None]
    with torch.no_grad():
        cos, sin = rotary(torch.zeros(1, dtype=dtype), positions)
    cos, sin = cos[0].to(dtype), sin[0].to(dtype)
    half = cos.shape[-1] // 2
    if cos.shape[-1] % 2 or not (
        torch.equal(cos[:, :half], cos[:, half:]) and torch.equal(sin[:, :half], sin[:, half:])
    ):
        raise _fail(f"{name} does not return the two halves of the rotate-half convention")
    return cos[:, :half].numpy(), sin[:, :half].numpy()


def _external_outputs(nodes: list[ir.Node], path: str) -> list[ir.Value]:
    """The values produced by ``nodes`` and used by nodes outside them or by the graph."""
    inside = set(map(id, nodes))
    outs = []
    for node in nodes:
        for out in node.outputs:
            if out.is_graph_output() or any(id(u.node) not in inside for u in out.uses()):
                outs.append(out)
    if len(outs) != 1:
        raise _fail(f"{path}: one result expected, found {[o.name for o in outs]}")
    return outs


def _external_input(nodes: list[ir.Node], path: str) -> ir.Value:
    """The only value ``nodes`` read which is neither produced by them nor a constant."""
    inside = {id(o) for n in nodes for o in n.outputs}
    ins = []
    for node in nodes:
        for value in node.inputs:
            if value is None or id(value) in inside or value.const_value is not None:
                continue
            if value.is_initializer() or any(value is v for v in ins):
                continue
            ins.append(value)
    if len(ins) != 1:
        raise _fail(f"{path}: one input expected, found {[v.name for v in ins]}")
    return ins[0]


def _sequence_lengths(graph: ir.Graph, mask: ir.Value) -> tuple[ir.Value, ir.Value]:
    """seqlens_k (int32, batch: valid tokens - 1) and total_sequence_length (int32, 0-d)."""

    def const(name: str, array: np.ndarray) -> ir.Value:
        value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
        graph.register_initializer(value)
        return value

    one = const("gqa_one", np.array(1, dtype=np.int64))
    axis = const("gqa_axis1", np.array([1], dtype=np.int64))
    axis0 = const("gqa_axis0", np.array([0], dtype=np.int64))
    nodes = [
        ir.Node("", "Cast", [mask], attributes=[ir.AttrInt64("to", ir.DataType.INT64)]),
    ]
    nodes.append(
        ir.Node(
            "", "ReduceSum", [nodes[-1].outputs[0], axis], attributes=[ir.AttrInt64("keepdims", 0)]
        )
    )
    nodes.append(ir.Node("", "Sub", [nodes[-1].outputs[0], one]))
    nodes.append(ir.Node("", "Cast", [nodes[-1].outputs[0]], attributes=[ir.AttrInt64("to", 6)]))
    seqlens = nodes[-1].outputs[0]
    seqlens.name = "gqa_seqlens_k"
    shape = ir.Node(
        "", "Shape", [mask], attributes=[ir.AttrInt64("start", 1), ir.AttrInt64("end", 2)]
    )
    squeeze = ir.Node("", "Squeeze", [shape.outputs[0], axis0])
    cast = ir.Node("", "Cast", [squeeze.outputs[0]], attributes=[ir.AttrInt64("to", 6)])
    total = cast.outputs[0]
    total.name = "gqa_total_sequence_length"
    nodes.extend([shape, squeeze, cast])
    first = next(iter(graph))
    graph.insert_before(first, nodes)
    return seqlens, total


def fuse_group_query_attention(
    model: ir.Model, llm: torch.nn.Module, max_length: int | None = None
) -> int:
    """
    Replaces the attention of every layer of a causal LM exported by the custom exporter
    (projections to q, k, v, rotary embedding, concatenation with the cache, attention, up
    to the input of ``o_proj``) by one ``com.microsoft.GroupQueryAttention`` with the rotary
    embedding inside (see the module docstring). The graph nodes of each attention module
    are found by the module path the custom exporter stores on them. ``position_ids`` and
    ``cache_position`` are removed from the inputs when nothing else uses them; the model
    gets the metadata :data:`SHARED_BUFFER_KEY` and :data:`MAX_LENGTH_KEY`.

    :param model: the model, modified in place
    :param llm: the transformers model which was exported (its configuration, its modules
        and its rotary module give the number of heads, the scale and the cos/sin tables)
    :param max_length: the number of positions of the rotary tables, the longest sequence
        the model can then process (prompt and generated tokens);
        ``config.max_position_embeddings`` if None
    :return: the number of fused attention layers
    :raises ValueError: when the model or one of its layers has what GroupQueryAttention
        does not compute (a normalization of q or k, sliding windows, a softcap, a rotary
        which depends on the length, several rotary tables), or when the graph does not
        have the expected nodes (no ``attention_mask`` input, no traceability metadata,
        a layer whose cache is not ``Concat(past_key_values.N.key, ...)``); the error
        names the module

    >>> import onnx_ir as ir
    >>> from onnx_diagnostic.export.api import to_onnx
    >>> from onnx_diagnostic.torch_export_patches import torch_export_patches
    >>> from onnx_diagnostic.torch_models.llms import get_tiny_llm
    >>> data = get_tiny_llm()
    >>> with torch_export_patches(patch_transformers=True):
    ...     onx = to_onnx(data.model, kwargs=data.inputs, dynamic_shapes=data.dynamic_shapes,
    ...                   exporter="custom")
    >>> model = ir.from_proto(onx)
    >>> fuse_group_query_attention(model, data.model, max_length=64)
    1
    >>> [i.name for i in model.graph.inputs]
    ['input_ids', 'attention_mask', 'past_key_values.0.key', 'past_key_values.0.value']
    """
    config = _text_config(llm)
    graph = model.graph
    inputs = {v.name: v for v in graph.inputs}
    if "attention_mask" not in inputs:
        raise _fail(
            f"the model has no input 'attention_mask' (inputs {list(inputs)}), "
            "GroupQueryAttention reads the sequence lengths from it"
        )
    if max_length is None:
        max_length = getattr(config, "max_position_embeddings", None)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0:
        raise _fail(f"max_length must be an int > 0, got {max_length!r}")
    modules = _attention_modules(llm)
    if not modules:
        raise _fail(
            f"{type(llm).__name__} has no attention module with q_proj, k_proj, v_proj and o_proj"
        )
    nodes = list(graph)
    if not any(MODULE in n.metadata_props for n in nodes):
        raise _fail(
            "the nodes have no module path (pkg.onnx_diagnostic.module), "
            "the model must come from to_onnx(..., exporter='custom')"
        )
    num_heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or num_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // num_heads)
    for name, mod in modules:
        _check_module(name, mod, config)
    dtype = next(llm.parameters()).dtype
    cos, sin = _rotary_tables(llm, config, max_length, dtype)
    if cos.shape[-1] * 2 != head_dim:
        raise _fail(
            f"partial rotary embedding ({cos.shape[-1] * 2} of {head_dim} dimensions) "
            "is not supported"
        )

    seqlens, total = _sequence_lengths(graph, inputs["attention_mask"])
    tables = []
    for tname, array in (("gqa_cos_cache", cos), ("gqa_sin_cache", sin)):
        value = ir.Value(name=tname, const_value=ir.tensor(np.ascontiguousarray(array), name=tname))
        graph.register_initializer(value)
        tables.append(value)

    fused = 0
    for path, mod in modules:
        members = [n for n in graph if _under(n, path)]
        if not members:
            continue
        layer = getattr(mod, "layer_idx", None)
        past_k = inputs.get(f"past_key_values.{layer}.key")
        past_v = inputs.get(f"past_key_values.{layer}.value")
        if past_k is None or past_v is None:
            raise _fail(
                f"{path}: no input past_key_values.{layer}.key / .value for its layer "
                f"{layer} (inputs {list(inputs)})"
            )
        presents = []
        for past in (past_k, past_v):
            concats = [
                u.node
                for u in past.uses()
                if u.node.op_type == "Concat" and u.node.domain == "" and _under(u.node, path)
            ]
            if len(concats) != 1 or not concats[0].outputs[0].is_graph_output():
                raise _fail(
                    f"{path}: {past.name} is expected to be concatenated once with the new "
                    "positions into a graph output present.N.*"
                )
            presents.append(concats[0].outputs[0])
        rotaries = [n for n in members if n.op_type == "RotaryEmbedding"]
        if len(rotaries) != 2 or any(int(_attr(n, "interleaved") or 0) for n in rotaries):
            raise _fail(
                f"{path}: two non-interleaved RotaryEmbedding nodes expected (q and k), "
                f"found {len(rotaries)}"
            )
        q, k, v = (
            _external_outputs([n for n in graph if _under(n, f"{path}.{p}")], f"{path}.{p}")[0]
            for p in ("q_proj", "k_proj", "v_proj")
        )
        o_nodes = [n for n in graph if _under(n, f"{path}.o_proj")]
        attn_in = _external_input(o_nodes, f"{path}.o_proj")
        scale = float(getattr(mod, "scaling", head_dim**-0.5))
        gqa = ir.Node(
            _MS,
            "GroupQueryAttention",
            [q, k, v, past_k, past_v, seqlens, total, tables[0], tables[1]],
            attributes=[
                ir.AttrInt64("num_heads", num_heads),
                ir.AttrInt64("kv_num_heads", kv_heads),
                ir.AttrFloat32("scale", scale),
                ir.AttrInt64("do_rotary", 1),
                ir.AttrInt64("rotary_interleaved", 0),
            ],
            num_outputs=3,
            name=f"{path}.GroupQueryAttention",
        )
        graph.insert_before(o_nodes[0], [gqa])
        removed = [n for n in members if not any(_under(n, f"{path}.{p}") for p in _PROJ)]
        merge_metadata(gqa, removed)
        gqa.metadata_props[MODULE] = path
        _replace_value(attn_in, gqa.outputs[0])
        for old, new in zip(presents, gqa.outputs[1:]):
            _replace_value(old, new)
            new.shape = (past_k if old is presents[0] else past_v).shape
        _remove_dead(graph, removed)
        fused += 1
    if fused == 0:
        raise _fail(
            f"no node of the attention modules {[p for p, _ in modules][:3]}... was found "
            "in the graph"
        )
    # what only the attention used: the rotary module, the mask, the positions
    for node in reversed(list(graph)):
        if all(not o.uses() and not o.is_graph_output() for o in node.outputs):
            graph.remove(node, safe=True)
    for name in ("position_ids", "cache_position"):
        value = inputs.get(name)
        if value is not None and not value.uses():
            graph.inputs.remove(value)
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            del graph.initializers[name]
    if _MS not in model.opset_imports:
        model.opset_imports[_MS] = 1
    model.metadata_props[SHARED_BUFFER_KEY] = "1"
    model.metadata_props[MAX_LENGTH_KEY] = str(max_length)
    return fused


_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")


def pack_group_query_attention_qkv(model: ir.Model) -> int:
    """
    Gives ``GroupQueryAttention`` the packed result of the fused q/k/v projection
    (:func:`onnx_diagnostic.export.custom.fusions_genai.fuse_shared_input_matmuls`): when
    its query, key and value are the three outputs of one ``Split`` on the last axis used
    nowhere else, the attention takes the input of the Split as its query and no key nor
    value (onnxruntime splits the packed tensor itself).

    :param model: the model, modified in place
    :return: the number of attention nodes changed

    >>> import onnx_ir as ir
    >>> x = ir.Value(name="x")
    >>> split = ir.node("Split", [x], attributes={"axis": -1}, num_outputs=3)
    >>> gqa = ir.node("GroupQueryAttention", list(split.outputs), domain="com.microsoft")
    >>> model = ir.Model(ir.Graph([x], gqa.outputs, nodes=[split, gqa]), ir_version=10)
    >>> pack_group_query_attention_qkv(model)
    1
    >>> [n.op_type for n in model.graph], gqa.inputs[0] is x, gqa.inputs[1]
    (['GroupQueryAttention'], True, None)
    """
    graph = model.graph
    count = 0
    for node in list(graph):
        if node.op_type != "GroupQueryAttention" or node.domain != _MS or len(node.inputs) < 3:
            continue
        q, k, v = node.inputs[:3]
        split = q.producer() if q is not None else None
        if (
            split is None
            or split.op_type != "Split"
            or split.domain != ""
            or len(split.outputs) != 3
            or list(split.outputs) != [q, k, v]
            or int(_attr(split, "axis") or 0) not in (-1, 2)
            or any(len(o.uses()) != 1 or o.is_graph_output() for o in split.outputs)
        ):
            continue
        node.replace_input_with(0, split.inputs[0])
        node.replace_input_with(1, None)
        node.replace_input_with(2, None)
        merge_metadata(node, [split])
        sizes = split.inputs[1] if len(split.inputs) > 1 else None
        graph.remove(split, safe=True)
        if sizes is not None and sizes.is_initializer() and not sizes.uses():
            graph.initializers.pop(sizes.name)  # type: ignore[arg-type]
        count += 1
    return count
