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

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from ...helpers.rt_helper import _MAX_LENGTH_KEY, _SHARED_BUFFER_KEY
from ..genai import _PAST
from .folding import _attr
from .fusion_patterns import _rank, _remove_dead, _replace_value, merge_metadata
from .passes import remove_unused
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


def _fail(message: str) -> ValueError:
    return ValueError(f"fuse_group_query_attention: {message}")


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

    return [
        (name, mod)
        for name, mod in llm.named_modules()
        if type(mod).__name__.endswith("Attention") and isinstance(mod, torch.nn.Module)
    ]


def _check_module(name: str, mod: Any, config: Any) -> None:
    """Refuses what GroupQueryAttention cannot compute as the module does."""
    if getattr(mod, "sliding_window", None) or getattr(config, "sliding_window", None):
        if getattr(config, "use_sliding_window", True) is not False:
            raise _fail(f"{name}: sliding-window attention is not supported")
    if getattr(config, "attn_logit_softcapping", None):
        raise _fail(f"{name}: attn_logit_softcapping is not supported")
    if getattr(mod, "is_causal", True) is False:
        raise _fail(f"{name}: the attention is not causal")
    if getattr(mod, "sinks", None) is not None:
        raise _fail(f"{name}: attention sinks are not supported")


def _cache_of(
    att: ir.Node, inputs: dict[str, ir.Value], path: str
) -> tuple[ir.Value, ir.Value, list[ir.Value]]:
    """past key, past value, present key and value of an Attention node which reads
    ``Concat(past_key_values.N.key, new)`` and ``Concat(past_key_values.N.value, new)``,
    both graph outputs (present.N.*)."""
    pasts, presents = [], []
    for index, kind in ((1, "key"), (2, "value")):
        value = att.inputs[index] if len(att.inputs) > index else None
        concat = value.producer() if value is not None else None
        past = concat.inputs[0] if concat is not None and len(concat.inputs) == 2 else None
        match = _PAST.match(past.name or "") if past is not None else None
        if (
            concat is None
            or concat.op_type != "Concat"
            or match is None
            or match.group(2) != kind
            or inputs.get(past.name) is not past  # type: ignore[union-attr,arg-type]
            or not value.is_graph_output()  # type: ignore[union-attr]
        ):
            raise _fail(
                f"{path}: the attention's {kind} is expected to be "
                f"Concat(past_key_values.N.{kind}, new positions), a graph output present.N.*"
            )
        pasts.append(past)
        presents.append(value)
    if _PAST.match(pasts[0].name).group(1) != _PAST.match(pasts[1].name).group(1):  # type: ignore[union-attr,arg-type]
        raise _fail(f"{path}: its key and value come from other layers")
    return pasts[0], pasts[1], presents  # type: ignore[return-value]


def _check_rotary(rot: ir.Node, path: str, head_dim: int, tables: list[ir.Value]) -> None:
    """A rotate-half rotary on every dimension, with the cos/sin of the model's rotary
    module (the same for every layer)."""
    if int(_attr(rot, "interleaved") or 0):  # type: ignore[arg-type]
        raise _fail(f"{path}: interleaved rotary embedding is not supported")
    dim = int(_attr(rot, "rotary_embedding_dim") or 0)  # type: ignore[arg-type]
    if dim not in (0, head_dim):
        raise _fail(f"{path}: partial rotary embedding ({dim} of {head_dim}) is not supported")
    cos_sin = list(rot.inputs[1:3])
    if len(rot.inputs) > 3 and rot.inputs[3] is not None:
        raise _fail(f"{path}: a rotary embedding indexed by position_ids is not supported")
    if not tables:
        tables.extend(cos_sin)  # type: ignore[arg-type]
    elif cos_sin != tables:
        raise _fail(f"{path}: the layers do not share one rotary table")


def _heads_input(
    value: ir.Value, shape: ir.Value, path: str, what: str, created: list[ir.Node]
) -> ir.Value:
    """The (batch, sequence, heads * head_dim) value which was transposed into ``value``
    (batch, heads, sequence, head_dim): the input of the Reshape splitting the heads when
    it is 3D, else a new Reshape."""
    node = value.producer()
    if (
        node is None
        or node.op_type != "Transpose"
        or list(_attr(node, "perm") or []) != [0, 2, 1, 3]
    ):  # type: ignore[arg-type]
        raise _fail(
            f"{path}: the {what} of the attention is neither the result of a RotaryEmbedding "
            "node nor transposed from (batch, sequence, heads, head_dim): a rotary embedding "
            "the custom exporter did not recognize (interleaved, partial)?"
        )
    split = node.inputs[0]
    producer = split.producer() if split is not None else None
    if producer is not None and producer.op_type == "Reshape" and _rank(producer.inputs[0]) == 3:
        return producer.inputs[0]  # type: ignore[return-value]
    reshape = ir.Node("", "Reshape", [split, shape], name=f"{path}.{what}.merge_heads")
    created.append(reshape)
    return reshape.outputs[0]


def _attention_result(att: ir.Node, path: str) -> ir.Value:
    """The (batch, sequence, heads * head_dim) value the attention's result becomes through
    Transpose and Reshape nodes."""
    value = att.outputs[0]
    while not value.is_graph_output() and len(value.uses()) == 1:
        node = next(iter(value.uses())).node
        if node.op_type not in ("Transpose", "Reshape") or node.domain != "":
            break
        value = node.outputs[0]
    if value is att.outputs[0] or _rank(value) != 3:
        raise _fail(
            f"{path}: the attention's result is not reshaped into "
            "(batch, sequence, heads * head_dim)"
        )
    return value


def _scale(att: ir.Node, head_dim: int) -> float:
    scale = _attr(att, "scale")
    return head_dim**-0.5 if scale is None else float(scale)  # type: ignore[arg-type]


def _register_tables(
    graph: ir.Graph, llm: Any, config: Any, max_length: int, dtype: Any, head_dim: int
) -> list[ir.Value]:
    """The cos and sin tables as initializers."""
    cos, sin = _rotary_tables(llm, config, max_length, dtype)
    if cos.shape[-1] * 2 != head_dim:
        raise _fail(
            f"partial rotary embedding ({cos.shape[-1] * 2} of {head_dim} dimensions) "
            "is not supported"
        )
    tables = []
    for name, array in (("gqa_cos_cache", cos), ("gqa_sin_cache", sin)):
        value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array), name=name))
        graph.register_initializer(value)
        tables.append(value)
    return tables


def _check_attention(att: ir.Node, path: str) -> None:
    """What GroupQueryAttention does not compute as onnx Attention does: a softcap, no
    mask with is_causal=0 (the attention is bidirectional), a result of other heads."""
    softcap = _attr(att, "softcap")
    if softcap:
        raise _fail(f"{path}: the attention has a softcap ({softcap})")
    if not int(_attr(att, "is_causal") or 0) and (len(att.inputs) < 4 or att.inputs[3] is None):  # type: ignore[arg-type]
        raise _fail(f"{path}: the attention has no mask and is not causal")
    if len(att.outputs) > 1 and any(o.uses() or o.is_graph_output() for o in att.outputs[1:]):
        raise _fail(f"{path}: the attention's intermediate results are used")


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
        does not compute (sliding windows, a softcap, sinks, a rotary which depends on the
        length or is partial or interleaved, several rotary tables, a head dimension which
        is not a multiple of 16, another type than float32 or float16), or when the graph
        does not have the expected nodes (no ``attention_mask`` input, no traceability
        metadata, a layer whose cache is not ``Concat(past_key_values.N.key, ...)``); the
        error names the module. The model may then be partly rewritten
        (:func:`apply_genai_fusions
        <onnx_diagnostic.export.custom.fusions_genai.apply_genai_fusions>` works on a copy).

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
    import torch

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
        raise _fail(f"{type(llm).__name__} has no module whose class name ends with 'Attention'")
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
    if head_dim % 16:
        raise _fail(
            f"head_dim={head_dim}: onnxruntime's GroupQueryAttention needs a head dimension "
            "which is a multiple of 16"
        )
    dtype = next(llm.parameters()).dtype
    if dtype not in (torch.float32, torch.float16):
        raise _fail(
            f"the model's weights are {dtype}: onnxruntime's GroupQueryAttention runs "
            "float32 and float16 models"
        )

    seqlens, total = _sequence_lengths(graph, inputs["attention_mask"])
    tables: list[ir.Value] = []

    fused = 0
    reshape_shape = ir.Value(
        name="gqa_bsh", const_value=ir.tensor(np.array([0, 0, -1], dtype=np.int64), name="gqa_bsh")
    )
    graph.register_initializer(reshape_shape)
    table_inputs: list[ir.Value] = []
    for att in [n for n in graph if n.op_type == "Attention" and n.domain == ""]:
        path = att.metadata_props.get(MODULE, "").split("|")[0] or att.name or "?"
        past_k, past_v, presents = _cache_of(att, inputs, path)
        q4, k4, v4 = (
            att.inputs[0],
            presents[0].producer().inputs[1],
            presents[1].producer().inputs[1],
        )  # type: ignore[union-attr]
        rotaries = [x.producer() for x in (q4, k4)]
        rotated = [r is not None and r.op_type == "RotaryEmbedding" for r in rotaries]
        if any(rotated) and not all(rotated):
            raise _fail(f"{path}: the rotary embedding is applied to the query or the key only")
        if all(rotated):
            for rot in rotaries:
                _check_rotary(rot, path, head_dim, table_inputs)  # type: ignore[arg-type]
            q4, k4 = rotaries[0].inputs[0], rotaries[1].inputs[0]  # type: ignore[union-attr]
            if not tables:
                tables = _register_tables(graph, llm, config, max_length, dtype, head_dim)
        _check_attention(att, path)
        created: list[ir.Node] = []
        q, k, v = (
            _heads_input(x, reshape_shape, path, what, created)
            for x, what in ((q4, "query"), (k4, "key"), (v4, "value"))
        )
        attn_out = _attention_result(att, path)
        inputs_gqa = [q, k, v, past_k, past_v, seqlens, total]
        if all(rotated):
            inputs_gqa.extend(tables)
        gqa = ir.Node(
            _MS,
            "GroupQueryAttention",
            inputs_gqa,
            attributes=[
                ir.AttrInt64("num_heads", num_heads),
                ir.AttrInt64("kv_num_heads", kv_heads),
                ir.AttrFloat32("scale", _scale(att, head_dim)),
                ir.AttrInt64("do_rotary", 1 if all(rotated) else 0),
                ir.AttrInt64("rotary_interleaved", 0),
            ],
            num_outputs=3,
            name=f"{path}.GroupQueryAttention",
        )
        graph.insert_after(att, [*created, gqa])
        replaced = [att, *(p.producer() for p in presents), *(r for r in rotaries if r)]
        merge_metadata(gqa, replaced)  # type: ignore[arg-type]
        gqa.metadata_props[MODULE] = path
        _replace_value(attn_out, gqa.outputs[0])
        for old, new, past in zip(presents, gqa.outputs[1:], (past_k, past_v)):
            _replace_value(old, new)
            new.shape = past.shape
        _remove_dead(graph, replaced + [attn_out.producer()])  # type: ignore[list-item]
        fused += 1
    if fused == 0:
        raise _fail(
            "no Attention node (scaled_dot_product_attention as the custom exporter "
            "translates it) was found in the graph"
        )
    # what only the attention used: the rotary module, the mask, the positions
    remove_unused(model)
    for name in ("position_ids", "cache_position"):
        value = inputs.get(name)
        if value is not None and not value.uses():
            graph.inputs.remove(value)
    if _MS not in model.opset_imports:
        model.opset_imports[_MS] = 1
    model.metadata_props[SHARED_BUFFER_KEY] = "1"
    model.metadata_props[MAX_LENGTH_KEY] = str(max_length)
    return fused


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
