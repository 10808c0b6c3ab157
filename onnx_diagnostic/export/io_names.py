"""
The names of the inputs and outputs of an exported model, whatever the exporter: every tensor
of the model's arguments gets a name telling where it comes from (``input_ids``,
``past_key_values.N.key``...), the outputs ``logits``, ``present.N.key``..., the dynamic axes
the names given in ``dynamic_shapes``; :func:`onnx_feeds` turns the model's arguments into
the feeds of onnxruntime with the same rules. Used by :func:`onnx_diagnostic.export.api.to_onnx`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.utils._pytree as pytree

from ..cache_helpers import is_cache
from ..helpers import compat

if TYPE_CHECKING:  # pragma: no cover
    import onnx_ir

logger = logging.getLogger(__name__)

__all__ = ["align_cache_argument"]

#: the canonical flattening of a DynamicCache (``key_0``, ``sliding_value_1``,
#: ``conv_state_2``, ``recurrent_state_2``, ``conv_state_3_1`` for the second state of a layer
#: holding several, ``indexer_key_4``...), see torch_export_patches.serialization
_CACHE_LEAF = re.compile(
    r"^(?:(?:full|sliding|indexed)_)?"
    r"(key|value|conv_state|recurrent_state|indexer_key|indexer_position_ids)_(\d+)(?:_(\d+))?$"
)
_CACHE_LENGTH = re.compile(r"^cumulative_length_(\d+)$")


def _to_export_dims(dynamic_shapes: Any) -> Any:
    """Replaces string dimension names, not accepted by torch.export, by Dim.DYNAMIC."""
    if dynamic_shapes is None:
        return None
    from ..torch_export_patches.patch_inputs import use_dyn_not_str

    return use_dyn_not_str(dynamic_shapes)


def _is_axes(obj: Any) -> bool:
    """Tells if ``obj`` describes the axes of one tensor ({0: 'batch'}, (None, 'seq'), None)."""
    if obj is None:
        return True
    if isinstance(obj, dict):
        return all(isinstance(k, int) for k in obj)
    if isinstance(obj, (list, tuple)):
        return all(not isinstance(v, (dict, list, tuple)) for v in obj)
    return False


def _flatten_axes(spec: Any) -> list[Any]:
    """Flattens the dynamic shapes of one argument into one axes spec per tensor."""
    if _is_axes(spec):
        return [spec]
    if isinstance(spec, dict):
        return [a for v in spec.values() for a in _flatten_axes(v)]
    if isinstance(spec, (list, tuple)):
        return [a for v in spec for a in _flatten_axes(v)]
    return [None]


def _axis_name(axis: Any) -> str | None:
    """Returns the user name of a dynamic axis or None (int, None, Dim.DYNAMIC...)."""
    if isinstance(axis, str):
        return axis
    hint = getattr(torch.export.dynamic_shapes, "_DimHint", None)
    if hint is not None and isinstance(axis, hint):
        return None
    # torch.export.Dim("batch") is named "batch" (an instance or a class depending on torch)
    name = getattr(axis, "__name__", None)
    return name if isinstance(name, str) else None


def _path_name(path: Sequence[Any]) -> str:
    parts = []
    for k in path:
        if isinstance(k, pytree.MappingKey):
            parts.append(str(k.key))
        elif isinstance(k, pytree.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, pytree.GetAttrKey):
            parts.append(k.name)
        else:  # pragma: no cover - custom key types
            parts.append(str(k))
    return ".".join(parts)


def _cache_leaf_names(cache: Any, prefix: str) -> list[str]:
    """Names ``prefix.N.key`` / ``prefix.N.value`` (``prefix.N.decoder.key`` for the
    self-attention part of an encoder-decoder cache, ``.encoder.`` for the cross-attention,
    ``prefix.N.cumulative_length`` for the filled length of a layer of a StaticCache),
    ``prefix.N.conv_state`` / ``prefix.N.recurrent_state`` for the states of a linear
    attention, mamba or convolution layer (``prefix.N.conv_state.S`` when a layer holds
    several), ``prefix.N.indexer_key`` / ``prefix.N.indexer_position_ids`` for an indexed
    layer. N is always the index of the layer in the model."""
    names = []
    flat, _ = pytree.tree_flatten_with_path(cache)
    for j, (path, _leaf) in enumerate(flat):
        keys = [_path_name([k]) for k in path]
        m = _CACHE_LEAF.match(keys[-1]) if keys else None
        length = _CACHE_LENGTH.match(keys[-1]) if keys else None
        if length is not None:
            # the filled length of a layer of a StaticCache (transformers >= 5)
            names.append(f"{prefix}.{length.group(1)}.cumulative_length")
            continue
        if m is None:
            names.append(f"{prefix}.{j}")
            continue
        part = ""
        if "self_attention_cache" in keys:
            part = ".decoder"
        elif "cross_attention_cache" in keys:
            part = ".encoder"
        state = f".{m.group(3)}" if m.group(3) is not None else ""
        names.append(f"{prefix}.{m.group(2)}{part}.{m.group(1)}{state}")
    return names


def _leaf_names(obj: Any, prefix: str, cache_prefix: str | None) -> list[tuple[str, Any]]:
    """
    Names every leaf of ``obj`` (pytree order). Caches are named
    ``cache_prefix.N.key`` or, if cache_prefix is None, ``<path>.N.key``.
    """
    if compat.is_model_output(obj):
        # transformers < 5 registers ModelOutput without flatten_with_keys_fn,
        # its flattening is the sequence of the fields which are not None.
        out = []
        for key, value in obj.items():
            name = ".".join(s for s in (prefix, str(key)) if s)
            out.extend(_leaf_names(value, name, cache_prefix))
        return out
    flat, _ = pytree.tree_flatten_with_path(
        obj, is_leaf=lambda x: is_cache(x) or compat.is_model_output(x)
    )
    out = []
    for path, leaf in flat:
        name = ".".join(s for s in (prefix, _path_name(path)) if s)
        if is_cache(leaf):
            cache_names = _cache_leaf_names(leaf, cache_prefix or name)
            out.extend(zip(cache_names, pytree.tree_leaves(leaf)))
        elif compat.is_model_output(leaf):
            out.extend(_leaf_names(leaf, name, cache_prefix))
        else:
            out.append((name, leaf))
    return out


def _input_leaf_names(value: Any, name: str) -> list[tuple[str, Any]]:
    """
    Names the leaves of the input ``name``. The cache argument, whatever transformers calls
    it (``cache`` from 5.24, ``past_key_values`` before, ``cache_params`` for mamba models
    before 5.24), gives ``past_key_values.N.key``: ONNX names do not follow transformers'
    renames.
    """
    cache_arg = compat.is_cache_arg_name(name) or is_cache(value)
    prefix = compat.ONNX_CACHE_INPUT if cache_arg else None
    return _leaf_names(value, name, prefix)


def align_cache_argument(
    model: Any, kwargs: dict[str, Any], dynamic_shapes: Any = None
) -> tuple[dict[str, Any], Any]:
    """
    Renames the cache argument in ``kwargs`` and in ``dynamic_shapes`` (when it is a dict)
    to the name ``model.forward`` declares: a user who gives ``past_key_values`` to a model of
    transformers 5.24 (whose ``forward`` takes ``cache``), or ``cache`` to an older one, gets
    it mapped, so that :func:`torch.export.export` never sees the cache in ``**kwargs``.
    Nothing changes if the forward declares none of
    :data:`onnx_diagnostic.helpers.compat.CACHE_ARG_NAMES`. The inputs are not modified.

    :param model: the model (or its forward)
    :param kwargs: keyword arguments
    :param dynamic_shapes: dynamic shapes, renamed only if it is a dict
    :return: new ``(kwargs, dynamic_shapes)``

    >>> import torch
    >>> class M(torch.nn.Module):
    ...     def forward(self, input_ids, cache=None):
    ...         return input_ids
    >>> kw, ds = align_cache_argument(M(), {"past_key_values": 1}, {"past_key_values": 2})
    >>> kw, ds
    ({'cache': 1}, {'cache': 2})
    """
    name = compat.declared_cache_arg_name(model)
    if name is None:
        return kwargs, dynamic_shapes
    kwargs = compat.rename_cache_argument(kwargs, name, "kwargs")
    dynamic_shapes = compat.rename_cache_argument(dynamic_shapes, name, "dynamic_shapes")
    return kwargs, dynamic_shapes


def _dedup(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        seen.setdefault(n, 0)
        out.append(n)
    return out


def _default_input_names(
    ep: torch.export.ExportedProgram, arg_names: list[str], args: tuple, kwargs: dict
) -> dict[str, str]:
    """Maps the placeholder names of the exported program to the conventional names."""
    named: list[tuple[str, Any]] = []
    for name, value in zip(arg_names, args):
        named.extend(_input_leaf_names(value, name))
    for name, value in kwargs.items():
        named.extend(_input_leaf_names(value, name))
    from torch.export.graph_signature import InputKind

    user_inputs = [s for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    if len(user_inputs) != len(named):
        logger.warning(
            "to_onnx: %d user inputs in the exported program but %d leaves in the inputs, "
            "inputs keep the names given by torch",
            len(user_inputs),
            len(named),
        )
        return {}
    new_names = _dedup([n for n, _ in named])
    return {
        spec.arg.name: new
        for spec, new in zip(user_inputs, new_names)
        if hasattr(spec.arg, "name") and not hasattr(spec.arg, "value")
    }


def _default_output_names(ep: torch.export.ExportedProgram) -> list[str] | None:
    """Names the outputs from the output structure of the exported program."""
    spec = ep.call_spec.out_spec
    if spec is None:
        return None
    n = spec.num_leaves
    # Placeholder tensors rebuild the output structure (caches need 4 dimensions).
    sentinels = [torch.empty((0, 0, 0, 0)) for _ in range(n)]
    try:
        out = pytree.tree_unflatten(sentinels, spec)
    except Exception as e:
        logger.warning("to_onnx: cannot rebuild the output structure (%s)", e)
        return None
    if isinstance(out, torch.Tensor):
        return ["output_0"]
    if isinstance(out, (tuple, list)) and not hasattr(out, "_fields"):
        named = []
        for i, o in enumerate(out):
            named.extend(_leaf_names(o, f"output_{i}", "present"))
    else:
        named = _leaf_names(out, "", "present")
    if len(named) != n:
        return None
    return _dedup([name or f"output_{i}" for i, (name, _) in enumerate(named)])


def _all_value_names(model: onnx_ir.Model) -> dict[str, Any]:
    import onnx_ir as ir

    values: dict[str, Any] = {}
    for v in model.graph.inputs:
        values[v.name] = v
    for name, v in model.graph.initializers.items():
        values[name] = v
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for v in node.outputs:
            if v.name:
                values[v.name] = v
    return values


def _rename_values(model: onnx_ir.Model, mapping: list[tuple[Any, str]]) -> None:
    """Renames the given values, moving away any other value already using a new name."""
    existing = _all_value_names(model)
    targets = {id(v) for v, _ in mapping}
    for value, new_name in mapping:
        if value.name == new_name:
            continue
        other = existing.get(new_name)
        if other is not None and id(other) not in targets:
            i = 1
            while f"{new_name}__{i}" in existing:
                i += 1
            other.name = f"{new_name}__{i}"
            existing[other.name] = other
        existing.pop(value.name, None)
        value.name = new_name
        existing[new_name] = value


def _separate_outputs(model: onnx_ir.Model) -> None:
    """
    An output which is also an input, an initializer or another output cannot be
    renamed alone: an Identity node gives it its own value.
    """
    import onnx_ir as ir

    graph = model.graph
    inputs = {id(v) for v in graph.inputs}
    inits = {id(v) for v in graph.initializers.values()}
    seen: set[int] = set()
    for i, out in enumerate(list(graph.outputs)):
        if id(out) in inputs or id(out) in inits or id(out) in seen:
            node = ir.node("Identity", [out], name=f"output_identity_{i}")
            node.outputs[0].shape = out.shape
            node.outputs[0].type = out.type
            node.outputs[0].name = f"{out.name}_output_{i}"
            graph.append(node)
            graph.outputs[i] = node.outputs[0]
            out = node.outputs[0]
        seen.add(id(out))


def _rename_io(
    model: onnx_ir.Model,
    input_map: dict[str, str],
    output_names: list[str] | None,
    user_input_names: Sequence[str] | None,
    user_output_names: Sequence[str] | None,
) -> None:
    graph = model.graph
    _separate_outputs(model)
    if user_input_names is not None:
        if len(user_input_names) != len(graph.inputs):
            raise ValueError(
                f"to_onnx: input_names has {len(user_input_names)} names but the model has "
                f"{len(graph.inputs)} inputs: "
                f"{[input_map.get(v.name, v.name) for v in graph.inputs]}"
            )
        new_inputs = list(user_input_names)
    else:
        new_inputs = [input_map.get(v.name, v.name) for v in graph.inputs]
    if user_output_names is not None:
        if len(user_output_names) != len(graph.outputs):
            raise ValueError(
                f"to_onnx: output_names has {len(user_output_names)} names but the model has "
                f"{len(graph.outputs)} outputs: {output_names or [v.name for v in graph.outputs]}"
            )
        new_outputs = list(user_output_names)
    elif output_names is not None and len(output_names) == len(graph.outputs):
        new_outputs = output_names
    else:
        if output_names is not None:
            logger.warning(
                "to_onnx: %d outputs expected, the model has %d, outputs keep their names",
                len(output_names),
                len(graph.outputs),
            )
        new_outputs = [v.name for v in graph.outputs]
    _rename_values(
        model,
        [*zip(graph.inputs, new_inputs), *zip(graph.outputs, new_outputs)],
    )


def _axes_mapping(
    model: onnx_ir.Model,
    dynamic_shapes: Any,
    arg_names: list[str],
    args: tuple,
    kwargs: dict,
) -> dict[str, str]:
    """Maps the symbolic dimensions torch chose to the names given in dynamic_shapes."""
    import onnx_ir as ir

    if dynamic_shapes is None:
        return {}
    by_input = {v.name: v for v in model.graph.inputs}
    values = [*args, *kwargs.values()]
    names = [*arg_names, *kwargs]
    mapping: dict[str, str] = {}
    for pos, (name, value) in enumerate(zip(names, values)):
        if isinstance(dynamic_shapes, dict):
            spec = dynamic_shapes.get(name, None)
        elif isinstance(dynamic_shapes, (tuple, list)) and pos < len(dynamic_shapes):
            spec = dynamic_shapes[pos]
        else:
            spec = None
        if spec is None:
            continue
        tensors = [(n, t) for n, t in _input_leaf_names(value, name) if isinstance(t, torch.Tensor)]
        axes = _flatten_axes(spec)
        if len(axes) != len(tensors):
            logger.warning(
                "to_onnx: dynamic_shapes[%r] describes %d tensors, the input holds %d, "
                "its dimensions keep the names given by torch",
                name,
                len(axes),
                len(tensors),
            )
            continue
        for (tname, _), ax in zip(tensors, axes):
            onnx_input = by_input.get(tname)
            if onnx_input is None or onnx_input.shape is None or ax is None:
                continue
            items = ax.items() if isinstance(ax, dict) else enumerate(ax)
            for dim, axis in items:
                user = _axis_name(axis)
                if user is None or dim >= len(onnx_input.shape):
                    continue
                sym = onnx_input.shape[dim]
                if not isinstance(sym, ir.SymbolicDim) or sym.value is None:
                    continue
                if sym.value in mapping and mapping[sym.value] != user:
                    logger.info(
                        "to_onnx: dimension %r named %r and %r, keeps %r",
                        sym.value,
                        mapping[sym.value],
                        user,
                        mapping[sym.value],
                    )
                    continue
                mapping[sym.value] = user
    return mapping


_PRESENT = re.compile(r"^present\.(\d+)\.(key|value)$")


def _relax_capped_cache_outputs(model: onnx_ir.Model) -> list[str]:
    """
    A sliding layer keeps at most ``window - 1`` positions: torch, reasoning on the
    example inputs (a cache already full), declares ``present.N.key`` with that static
    length although it is ``min(past + seq, window - 1)``, shorter during the first steps of
    a generation, and onnxruntime warns at every such step. The length of such an output
    (static while the matching ``past_key_values.N.key`` is dynamic) is renamed
    ``min(<past>+<seq>,<static>)``. Returns the outputs changed.
    """
    import onnx_ir as ir

    inputs = {v.name: v for v in model.graph.inputs}
    ids = inputs.get("input_ids")
    seq = None
    if ids is not None and ids.shape is not None and len(ids.shape) == 2:
        seq = None if isinstance(ids.shape[1], int) else str(ids.shape[1])
    changed = []
    for out in model.graph.outputs:
        m = _PRESENT.match(out.name or "")
        if m is None or out.shape is None or len(out.shape) != 4 or seq is None:
            continue
        past = inputs.get(f"{compat.ONNX_CACHE_INPUT}.{m.group(1)}.{m.group(2)}")
        if past is None or past.shape is None or len(past.shape) != 4:
            continue
        length, past_length = out.shape[2], past.shape[2]
        if isinstance(length, int) and not isinstance(past_length, int):
            dims = list(out.shape.dims)
            dims[2] = f"min({past_length}+{seq},{length})"
            out.shape = ir.Shape(dims)
            changed.append(out.name)
    return changed
