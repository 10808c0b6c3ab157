"""
Pytree flattening of :epkg:`transformers` caches, the canonical layout of this library.

A ``DynamicCache`` flattens into ``[key_0, value_0, key_1, value_1, ...]``. The context
records the type of every layer so that unflattening rebuilds the same layer classes.
Keys are named ``key_<i>`` / ``value_<i>`` when all layers share one attention type,
``<type>_key_<i>`` (``full_key_0``, ``sliding_key_1``, ``indexed_key_2``) when they differ;
``<i>`` is the index of the layer. The layers transformers 5.23+ adds
(``DYNAMIC_LAYER_TYPE_MAPPING`` in ``transformers.cache_utils``) hold more than keys and
values, their tensors follow the keys and values of their layer:

.. list-table:: layers made by ``DynamicCache(config=...)`` in transformers 5.24
    :header-rows: 1

    * - ``config.layer_types``
      - layer class
      - models of transformers 5.24
      - flattened tensors
    * - ``full_attention``
      - ``DynamicLayer``
      - most decoders (llama, qwen2/3, phi3, ...)
      - ``key_<i>``, ``value_<i>``
    * - ``sliding_attention``, ``chunked_attention``
      - ``DynamicSlidingWindowLayer``
      - gemma2/3/3n/4, mistral, gpt_oss, cohere2, olmo3, exaone4, llama4 (chunked)...
      - ``key_<i>``, ``value_<i>``
    * - ``indexed_attention``
      - ``DynamicIndexedLayer``
      - deepseek_v32, glm_moe_dsa, glm5_next, mistral_large4, dots3_note, axk2, hy_v4,
        qwen4_exp (the only one to set ``indexer_position_ids``)
      - + ``indexer_key_<i>`` (absent in layers reusing another layer's indexer),
        ``indexer_position_ids_<i>`` (when set)
    * - ``linear_attention``, ``conv``
      - ``LinearAttentionLayer``
      - qwen3_next, qwen3_5, qwen4_exp, glm5_next, jamba, bamba, granitemoehybrid,
        nemotron_h, kimi_linear, olmo_hybrid, bailing_hybrid, lara_mini, mamba, mamba2,
        falcon_mamba, recurrent_gemma, zamba, zamba2; ``conv``: lfm2, lfm2_moe, lfm3
      - ``conv_state_<i>``, ``recurrent_state_<i>`` (each when initialized; lfm2 has no
        recurrent state)
    * - ``hybrid``
      - ``LinearAttentionAndFullAttentionLayer``
      - falcon_h1, zamba, zamba2, zaya, inkling
      - ``key_<i>``, ``value_<i>``, ``conv_state_<i>``, ``recurrent_state_<i>``
    * - ``hybrid_sliding``
      - ``LinearAttentionAndSlidingWindowAttentionLayer``
      - inkling, inkling2, zaya
      - same, sliding keys
    * - ``dummy`` (layers ``"moe"``/``"mlp"``, or reusing another layer's cache)
      - ``DummyLayer``
      - gemma3n, gemma4, mistral_large4 (``kv_sharing_modes``), nemotron_h
      - none, the layer keeps its place

A layer with several states (``number_of_conv_states``, 4 in inkling) names them
``conv_state_<i>_<s>``. Only those exact classes are flattened. Layers defined by a model
(deepseek_v4's ``DeepseekV4HCACache``/``DeepseekV4CSACache``, minimax_m3_vl's sparse layer,
unlimited_ocr's reference sliding layer), any subclass, and any other class raise
:class:`CacheSerializationError` naming the class and the layer, instead of a flattening
that would silently drop their state. A layer never updated (``is_initialized`` False)
is skipped, so a cache holding nothing (dummy layers included) flattens into nothing.
The context keeps what is not a tensor: a string per layer (``"full_attention"``,
``"sliding_attention:<window>"``, ``"dummy"``) or a tuple
(``("indexed_attention", has_kv, has_indexer_keys, has_positions)``,
``("linear_attention", record_past, states)``, ``("hybrid", has_kv, record_past, states)``,
``("hybrid_sliding", window, has_kv, record_past, states)``, ``states`` giving
``(conv_kernel_size, has_conv, has_recurrent, has_previous_state)`` per state).
A sliding layer is rebuilt as having seen as many tokens as a full layer of the same cache
holds (``cumulative_length``, exact at every length), as many as it keeps itself when the
cache has no full layer (exact until the window is full: an int growing at every step cannot
be in the context).

The cache classes models of transformers 4.x define for their states (``MambaCache``,
``HybridMambaAttentionDynamicCache``, ``Qwen3NextDynamicCache``...) flatten into the same
names, see ``onnx_diagnostic.torch_export_patches._legacy_caches``; they are registered
once their model module is loaded (:func:`register_cache_serialization`, or the first time
:func:`onnx_diagnostic.cache_helpers.is_cache` sees one).

``MtpCache`` (multi-token prediction in ``generate``) flattens like a DynamicCache.
``DFlashCache`` is left unregistered: it keeps the number of tokens accepted at the
previous step, a Python int the masks depend on. So is minimax's ``MiniMaxCache``
(linear states in a list of its own).
An ``EncoderDecoderCache`` flattens into ``[self_attention_cache, cross_attention_cache]``,
a ``StaticCache`` like a DynamicCache with the full ``max_cache_len`` tensors, followed on
transformers>=5 by the filled length of every layer (0-d tensors ``cumulative_length_<i>``,
data rather than structure, so never in the context). Contexts are JSON-serializable, so
:func:`torch.export.save` / :func:`torch.export.load` keep the specification
(see :func:`cache_safe_globals` for loading).

:class:`transformers.utils.ModelOutput` subclasses are registered by transformers itself,
they are left as they are.

>>> import torch
>>> import torch.utils._pytree as pytree
>>> from onnx_diagnostic.cache_helpers import make_dynamic_cache
>>> cache = make_dynamic_cache([(torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
>>> leaves, spec = pytree.tree_flatten(cache)
>>> len(leaves)
2
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..helpers import compat
from . import _legacy_caches
from ._reusable import reusable_context

logger = logging.getLogger(__name__)

__all__ = [
    "CacheSerializationError",
    "SerializationEntry",
    "cache_safe_globals",
    "flatten_cache_names",
    "register_cache_serialization",
    "register_flattening_functions",
    "registered_classes",
    "serialization_entries",
    "supported_layer_classes",
    "unregister",
]

_FULL, _SLIDING = "full_attention", "sliding_attention"
_INDEXED, _LINEAR, _DUMMY = "indexed_attention", "linear_attention", "dummy"
_HYBRID, _HYBRID_SLIDING = "hybrid", "hybrid_sliding"

#: The layer classes of ``transformers.cache_utils`` a DynamicCache may hold that this module
#: flattens, with the layer type (``config.layer_types``) that creates them. Only these exact
#: classes: a subclass (a model's own layer) may hold more state, it is refused.
_LAYER_TYPE_OF_CLASS: dict[str, str] = {
    "DynamicLayer": _FULL,
    "DynamicSlidingWindowLayer": _SLIDING,
    "DynamicIndexedLayer": _INDEXED,
    "LinearAttentionLayer": _LINEAR,
    "LinearAttentionAndFullAttentionLayer": _HYBRID,
    "LinearAttentionAndSlidingWindowAttentionLayer": _HYBRID_SLIDING,
    "DummyLayer": _DUMMY,
}

#: What the context keeps of one layer: a string for the layers holding keys and values only
#: (``"full_attention"``, ``"sliding_attention:<window>"``) and ``"dummy"``, a tuple for the
#: others, see the module docstring.
LayerContext = str | tuple


class CacheSerializationError(TypeError):
    """
    Raised when a cache holds a layer that this library cannot flatten (or rebuild) without
    losing part of its state. ``layer_class`` and ``layer_index`` tell which layer.

    >>> err = CacheSerializationError("message", layer_class=int, layer_index=3)
    >>> err.layer_index, isinstance(err, TypeError)
    (3, True)
    """

    def __init__(
        self, message: str, layer_class: type | None = None, layer_index: int | None = None
    ):
        super().__init__(message)
        self.layer_class = layer_class
        self.layer_index = layer_index


@functools.cache
def _known_layer_classes() -> dict[type, str]:
    known = {}
    for name, layer_type in _LAYER_TYPE_OF_CLASS.items():
        cls = compat.cache_class(name)
        if cls is not None:
            known[cls] = layer_type
    return known


def supported_layer_classes() -> list[type]:
    """
    Returns the layer classes of the installed :epkg:`transformers` that a DynamicCache may
    hold and this module flattens (those exact classes, not their subclasses).

    >>> "DynamicLayer" in [cls.__name__ for cls in supported_layer_classes()]
    True
    """
    return list(_known_layer_classes())


def _layer_class(layer_type: str) -> type:
    for cls, known_type in _known_layer_classes().items():
        if known_type == layer_type:
            return cls
    raise CacheSerializationError(
        f"cannot rebuild a cache layer of type {layer_type!r}: transformers "
        f"{compat.transformers_version()} has no class for it (was the program exported "
        "with another version of transformers?)"
    )


def _unknown_layer_error(cache: Any, index: int, layer: Any) -> CacheSerializationError:
    cls = type(layer)
    known = ", ".join(c.__name__ for c in _known_layer_classes())
    name = type(cache).__name__
    return CacheSerializationError(
        f"{name}.layers[{index}] is a {cls.__module__}.{cls.__qualname__}, a cache layer class "
        f"onnx_diagnostic cannot flatten (it knows {known}, not their subclasses): flattening "
        "its keys and values only would silently drop the rest of its state. Register your own "
        f"flattening of {name} with torch.utils._pytree.register_pytree_node before importing "
        "onnx_diagnostic.cache_helpers (it never replaces a registration; or remove its own "
        "with onnx_diagnostic.torch_export_patches.serialization.unregister), "
        f"or open an issue asking for {cls.__name__}.",
        layer_class=cls,
        layer_index=index,
    )


def _layer_type(kind: LayerContext) -> str:
    return (kind if isinstance(kind, str) else kind[0]).split(":")[0]


def _attention_prefix(kind: LayerContext) -> str | None:
    """Prefix of the keys and values of a layer when layers differ, None if it holds none."""
    layer_type = _layer_type(kind)
    has_kv = {_INDEXED: 1, _HYBRID: 1, _HYBRID_SLIDING: 2}
    if layer_type in has_kv and not kind[has_kv[layer_type]]:
        return None
    if layer_type in (_FULL, _HYBRID):
        return "full"
    if layer_type in (_SLIDING, _HYBRID_SLIDING):
        return "sliding"
    return "indexed" if layer_type == _INDEXED else None


def flatten_cache_names(layer_kinds: tuple[LayerContext, ...]) -> list[str]:
    """
    Returns the names of the flattened tensors of a DynamicCache whose layers have the given
    kinds (the pytree context of the cache, see the module docstring).

    >>> flatten_cache_names(("full_attention", "full_attention"))
    ['key_0', 'value_0', 'key_1', 'value_1']
    >>> flatten_cache_names(("sliding_attention:4", "full_attention"))
    ['sliding_key_0', 'sliding_value_0', 'full_key_1', 'full_value_1']
    >>> flatten_cache_names((("linear_attention", False, ((4, True, True, True),)), "dummy"))
    ['conv_state_0', 'recurrent_state_0']
    """
    prefixes = [_attention_prefix(kind) for kind in layer_kinds]
    mixed = len({p for p in prefixes if p is not None}) > 1
    names = []
    for i, (kind, prefix) in enumerate(zip(layer_kinds, prefixes)):
        if prefix is not None:
            head = f"{prefix}_" if mixed else ""
            names.extend([f"{head}key_{i}", f"{head}value_{i}"])
        layer_type = _layer_type(kind)
        if layer_type == _INDEXED:
            if kind[2]:
                names.append(f"indexer_key_{i}")
            if kind[3]:
                names.append(f"indexer_position_ids_{i}")
        elif layer_type in (_LINEAR, _HYBRID, _HYBRID_SLIDING):
            states = kind[-1]
            for s, (_, has_conv, has_recurrent, _) in enumerate(states):
                suffix = f"_{s}" if len(states) > 1 else ""
                if has_conv:
                    names.append(f"conv_state_{i}{suffix}")
                if has_recurrent:
                    names.append(f"recurrent_state_{i}{suffix}")
    return names


# DynamicCache: flattening of every layer


def _sliding_kind(layer: Any) -> str:
    window = int(layer.sliding_window)
    if not torch.compiler.is_exporting():
        # Keeps a template so that unflattening while exporting creates no constant.
        compat.new_sliding_window_layer(window)
    return f"{_SLIDING}:{window}"


def _kv_initialized(layer: Any) -> bool:
    return bool(getattr(layer, "is_initialized", True)) and getattr(layer, "keys", None) is not None


def _linear_context(layer: Any) -> tuple[bool, tuple]:
    """``record_past`` and, per state, (conv_kernel_size, has conv, has recurrent, has previous)."""
    states = []
    for s in range(layer.number_of_states):
        kernel = layer.conv_kernel_size[s]
        states.append(
            (
                None if kernel is None else int(kernel),
                bool(layer.is_conv_states_initialized[s]),
                bool(layer.is_recurrent_states_initialized[s]),
                bool(layer.has_previous_state[s]),
            )
        )
    return bool(layer.record_past), tuple(states)


def _linear_leaves(layer: Any, states: tuple) -> list[torch.Tensor]:
    leaves = []
    for s, (_, has_conv, has_recurrent, _) in enumerate(states):
        if has_conv:
            leaves.append(layer.conv_states[s])
        if has_recurrent:
            leaves.append(layer.recurrent_states[s])
    return leaves


def _flatten_layer(layer: Any, layer_type: str) -> tuple[LayerContext, list] | None:
    """The context and the tensors of one layer, None if it holds nothing yet (skipped)."""
    if layer_type == _DUMMY:
        return _DUMMY, []
    has_kv = _kv_initialized(layer)
    kv = [layer.keys, layer.values] if has_kv else []
    if layer_type in (_FULL, _SLIDING):
        if not has_kv:
            return None
        return (_FULL if layer_type == _FULL else _sliding_kind(layer)), kv
    if layer_type == _INDEXED:
        has_keys = bool(layer.is_indexer_initialized) and layer.indexer_keys is not None
        positions = layer.indexer_position_ids
        extra = ([layer.indexer_keys] if has_keys else []) + (
            [positions] if positions is not None else []
        )
        if not kv and not extra:
            return None
        return (_INDEXED, has_kv, has_keys, positions is not None), kv + extra
    record_past, states = _linear_context(layer)
    linear = _linear_leaves(layer, states)
    if not kv and not linear:
        return None
    if layer_type == _LINEAR:
        return (_LINEAR, record_past, states), linear
    if layer_type == _HYBRID:
        return (_HYBRID, has_kv, record_past, states), kv + linear
    window = int(layer.sliding_window)
    _hybrid_sliding_template(type(layer), window)
    return (_HYBRID_SLIDING, window, has_kv, record_past, states), kv + linear


def _flatten_dynamic_cache(cache: Any) -> tuple[list[torch.Tensor], tuple[LayerContext, ...]]:
    known = _known_layer_classes()
    flat, kinds = [], []
    for index, layer in enumerate(cache.layers):
        layer_type = known.get(type(layer), None)
        if layer_type is None:
            if getattr(layer, "is_initialized", None) is False:
                # A layer never updated holds nothing to export (an empty cache).
                continue
            raise _unknown_layer_error(cache, index, layer)
        item = _flatten_layer(layer, layer_type)
        if item is not None:
            kinds.append(item[0])
            flat.extend(item[1])
    if not flat:
        # Nothing but dummy layers: an empty cache.
        return [], ()
    return flat, tuple(kinds)


def _flatten_with_keys_dynamic_cache(cache: Any):
    flat, context = _flatten_dynamic_cache(cache)
    names = flatten_cache_names(context)
    return [(pytree.MappingKey(n), t) for n, t in zip(names, flat)], context


# DynamicCache: rebuilding every layer (no tensor created, torch.export may be tracing)

_HYBRID_SLIDING_TEMPLATES: dict[tuple[type, int], Any] = {}


def _hybrid_sliding_template(cls: type, window: int) -> Any | None:
    """
    ``LinearAttentionAndSlidingWindowAttentionLayer.__init__`` creates a tensor (the window),
    a constant if it happens while :func:`torch.export.export` traces. A layer created outside
    an export is kept as a template (the flattening creates it), the rebuilt layers are shallow
    copies of it: no tensor is created.
    """
    template = _HYBRID_SLIDING_TEMPLATES.get((cls, window), None)
    if template is None and not torch.compiler.is_exporting():
        template = _HYBRID_SLIDING_TEMPLATES[cls, window] = cls(sliding_window=window)
    return template


def _hybrid_sliding_layer(cls: type, window: int, number_of_states: int) -> Any:
    template = _hybrid_sliding_template(cls, window)
    if template is None:
        return cls(sliding_window=window, number_of_states=number_of_states)
    layer = copy.copy(template)
    # The copy shares the dictionaries of states of the template: the linear part gets new ones.
    _layer_class(_LINEAR).__init__(layer, number_of_states=number_of_states)
    return layer


def _fill_linear(layer: Any, record_past: bool, states: tuple, leaves: Iterator) -> None:
    for s, (kernel, has_conv, has_recurrent, has_previous) in enumerate(states):
        layer.conv_kernel_size[s] = kernel
        if has_conv:
            conv = next(leaves)
            if layer.device is None:
                # as LinearAttentionLayer.lazy_initialization does
                layer.dtype, layer.device = conv.dtype, conv.device
            layer.conv_states[s] = conv
            layer.is_conv_states_initialized[s] = True
        if has_recurrent:
            layer.recurrent_states[s] = next(leaves)
            layer.is_recurrent_states_initialized[s] = True
        layer.has_previous_state[s] = has_previous
    layer.record_past = record_past


def _build_layer(kind: LayerContext, leaves: Iterator) -> Any:
    layer_type = _layer_type(kind)
    if layer_type == _FULL:
        return compat.init_layer(_layer_class(_FULL)(), next(leaves), next(leaves))
    if layer_type == _SLIDING:
        layer = compat.new_sliding_window_layer(int(kind.split(":")[1]))
        return compat.init_layer(layer, next(leaves), next(leaves))
    cls = _layer_class(layer_type)
    if layer_type == _DUMMY:
        return cls()
    if layer_type == _INDEXED:
        _, has_kv, has_keys, has_positions = kind
        layer = cls()
        if has_kv:
            compat.init_layer(layer, next(leaves), next(leaves))
        if has_keys:
            keys = next(leaves)
            layer.indexer_dtype, layer.indexer_device = keys.dtype, keys.device
            layer.indexer_keys = keys
            layer.is_indexer_initialized = True
        if has_positions:
            layer.indexer_position_ids = next(leaves)
        return layer
    record_past, states = kind[-2:]
    if layer_type == _LINEAR:
        layer = cls(number_of_states=len(states))
        has_kv = False
    elif layer_type == _HYBRID:
        layer = cls(number_of_states=len(states))
        has_kv = kind[1]
    else:
        layer = _hybrid_sliding_layer(cls, kind[1], len(states))
        has_kv = kind[2]
    if has_kv:
        compat.init_layer(layer, next(leaves), next(leaves))
    _fill_linear(layer, record_past, states, leaves)
    return layer


def _unflatten_dynamic_cache(
    values: list, context: tuple[LayerContext, ...], cls: type | None = None
) -> Any:
    from ..cache_helpers import _new_dynamic_cache

    values = list(values)
    expected = len(flatten_cache_names(context))
    if len(values) != expected:
        raise CacheSerializationError(
            f"a DynamicCache with layers {context!r} needs {expected} tensors, got {len(values)}"
        )
    leaves = iter(values)
    cache = _new_dynamic_cache([_build_layer(kind, leaves) for kind in context])
    if cls is not None and type(cache) is not cls:
        cache.__class__ = cls
    return cache


# StaticCache and its subclasses


def _static_lengths(cache: Any) -> list[torch.Tensor] | None:
    """The filled lengths (0-d tensors) of transformers 5 static layers, None before."""
    lengths = [getattr(layer, "cumulative_length", None) for layer in cache.layers]
    if lengths and all(isinstance(x, torch.Tensor) for x in lengths):
        return lengths
    return None


def _flatten_static_cache(cache: Any) -> tuple[list[torch.Tensor], tuple[int, bool]]:
    flat = []
    for layer in cache.layers:
        flat.extend([layer.keys, layer.values])
    lengths = _static_lengths(cache)
    # transformers 5 writes new tokens at cumulative_length, a tensor: it travels as a leaf
    # after the keys and values, never in the context (it is data, not structure).
    if lengths is not None:
        flat.extend(lengths)
    return flat, (len(cache.layers), lengths is not None)


def _flatten_with_keys_static_cache(cache: Any):
    flat, context = _flatten_static_cache(cache)
    n, with_lengths = context
    names = flatten_cache_names(tuple(_FULL for _ in range(n)))
    if with_lengths:
        names.extend(f"cumulative_length_{i}" for i in range(n))
    return [(pytree.MappingKey(n), t) for n, t in zip(names, flat)], context


def _make_unflatten_static(cls: type) -> Callable:
    def _unflatten(values: list, context: tuple[int, bool]) -> Any:
        from ..cache_helpers import _new_static_cache, _static_layer

        values = list(values)
        n, with_lengths = context
        layers = [
            _static_layer(
                values[2 * i], values[2 * i + 1], values[2 * n + i] if with_lengths else None
            )
            for i in range(n)
        ]
        cache = _new_static_cache(layers)
        cache.__class__ = cls
        return cache

    return _unflatten


# EncoderDecoderCache


def _flatten_encoder_decoder_cache(cache: Any) -> tuple[list, None]:
    return [cache.self_attention_cache, cache.cross_attention_cache], None


def _flatten_with_keys_encoder_decoder_cache(cache: Any):
    flat, context = _flatten_encoder_decoder_cache(cache)
    names = ["self_attention_cache", "cross_attention_cache"]
    return [(pytree.MappingKey(n), c) for n, c in zip(names, flat)], context


def _unflatten_encoder_decoder_cache(values: list, context: Any) -> Any:
    from transformers.cache_utils import EncoderDecoderCache

    return EncoderDecoderCache(values[0], values[1])


# Registry


@dataclass(frozen=True)
class SerializationEntry:
    """One class this library knows how to flatten."""

    cls: type
    flatten: Callable
    flatten_with_keys: Callable
    unflatten: Callable

    @property
    def serialized_type_name(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


def _dynamic_unflatten_for(cls: type) -> Callable:
    return lambda values, context: _unflatten_dynamic_cache(values, context, cls)


def serialization_entries() -> list[SerializationEntry]:
    """
    Returns the cache classes of the installed :epkg:`transformers`
    this module can flatten, with their functions.

    >>> sorted(e.cls.__name__ for e in serialization_entries())[:2]
    ['DynamicCache', 'EncoderDecoderCache']
    """
    entries = []
    # MtpCache (multi-token prediction, made by generate's candidate generator) is a DynamicCache
    # with other mask offsets and no other state. DFlashCache is not registered: it keeps the
    # number of tokens accepted at the previous step, a Python int changing at every step that
    # the masks depend on; in the context, an exported program would accept one value only.
    for name in ("DynamicCache", "MtpCache"):
        dyn = compat.cache_class(name)
        if dyn is not None:
            entries.append(
                SerializationEntry(
                    dyn,
                    _flatten_dynamic_cache,
                    _flatten_with_keys_dynamic_cache,
                    _dynamic_unflatten_for(dyn),
                )
            )
    static = compat.cache_class("StaticCache")
    if static is not None:
        # Deprecated aliases of StaticCache (SlidingWindowCache, HybridCache, ...) flatten alike.
        for name in ("StaticCache", "SlidingWindowCache", "HybridCache", "HybridChunkedCache"):
            cls = compat.cache_class(name)
            if cls is not None and issubclass(cls, static):
                entries.append(
                    SerializationEntry(
                        cls,
                        _flatten_static_cache,
                        _flatten_with_keys_static_cache,
                        _make_unflatten_static(cls),
                    )
                )
    edc = compat.cache_class("EncoderDecoderCache")
    if edc is not None:
        entries.append(
            SerializationEntry(
                edc,
                _flatten_encoder_decoder_cache,
                _flatten_with_keys_encoder_decoder_cache,
                _unflatten_encoder_decoder_cache,
            )
        )
    # the cache classes models of transformers 4.x define (MambaCache...), once loaded
    entries.extend(SerializationEntry(*e) for e in _legacy_caches.legacy_entries())
    return entries


def cache_safe_globals() -> list[type]:
    """
    Returns the cache and layer classes :func:`torch.export.load` must be allowed to
    unpickle when a saved program took a cache as example input (torch loads them with
    ``weights_only=True``).

    .. code-block:: python

        with torch.serialization.safe_globals(cache_safe_globals()):
            ep = torch.export.load("model.pt2")
    """
    names = ["DynamicCache", "MtpCache", "StaticCache", "EncoderDecoderCache", "StaticLayer"]
    classes = [c for c in (compat.cache_class(n) for n in names) if c is not None]
    return classes + supported_layer_classes()


def registered_classes() -> set[type]:
    """
    Returns the classes currently registered in :mod:`torch.utils._pytree`.

    >>> from transformers.cache_utils import DynamicCache
    >>> DynamicCache in registered_classes()  # registered by importing cache_helpers
    True
    """
    return set(pytree.SUPPORTED_NODES)


def _context_to_json(context: Any) -> str:
    return json.dumps(list(context) if isinstance(context, tuple) else context)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _context_from_json(text: str) -> Any:
    # json turns every tuple into a list: the nested tuples of the layers are restored too,
    # a loaded specification must be equal to the one of a new cache.
    return _tuples(json.loads(text))


def _register(entry: SerializationEntry) -> None:
    # Contexts are tuples of str/int/bool or None: JSON keeps them once tuples are restored,
    # which torch.export.save / load needs.
    pytree.register_pytree_node(
        entry.cls,
        entry.flatten,
        entry.unflatten,
        serialized_type_name=entry.serialized_type_name,
        flatten_with_keys_fn=entry.flatten_with_keys,
        to_dumpable_context=_context_to_json,
        from_dumpable_context=_context_from_json,
    )


def unregister(cls: type) -> None:
    """
    Removes ``cls`` from the pytree registry (python and, if present, C++ implementation).
    Does nothing if it is not registered.

    >>> class NotRegistered:
    ...     pass
    >>> unregister(NotRegistered)  # no-op
    """
    if cls not in pytree.SUPPORTED_NODES:
        return
    pytree._deregister_pytree_node(cls)
    with contextlib.suppress(Exception):
        import torch.fx._pytree as fx_pytree

        fx_pytree._deregister_pytree_flatten_spec(cls)
    cxx = _cxx_pytree()
    if cxx is not None:
        with contextlib.suppress(Exception):
            cxx._deregister_pytree_node(cls)


def _cxx_pytree() -> Any:
    import sys

    return sys.modules.get("torch.utils._cxx_pytree", None)


def register_cache_serialization(verbose: int = 0) -> list[type]:
    """
    Registers the cache classes the installed transformers leaves unregistered.
    Classes already registered (by transformers, by the user) are left untouched.

    :param verbose: prints the registered classes if > 0
    :return: the classes this call registered (to undo with :func:`unregister`)

    >>> register_cache_serialization()  # importing cache_helpers already registered them
    []
    """
    done = []
    for entry in serialization_entries():
        if entry.cls in pytree.SUPPORTED_NODES:
            continue
        _register(entry)
        done.append(entry.cls)
        if verbose:
            print(f"[register_cache_serialization] registers {entry.cls.__name__}")
        logger.debug("registers %s", entry.cls.__name__)
    return done


@reusable_context
def register_flattening_functions(
    patch_transformers: bool = False, verbose: int = 0
) -> Iterator[list[type]]:
    """
    Context manager registering the flattening functions of every supported cache
    class that is not registered yet. On exit, it removes exactly what it registered,
    also when an exception escapes.

    :param patch_transformers: kept for compatibility with other libraries,
        caches are registered in any case
    :param verbose: verbosity
    :return: the list of classes registered by this context

    >>> import torch
    >>> from onnx_diagnostic.torch_export_patches import register_flattening_functions
    >>> with register_flattening_functions():
    ...     pass
    """
    done: list[type] = []
    try:
        done = register_cache_serialization(verbose=verbose)
        yield done
    finally:
        for cls in reversed(done):
            unregister(cls)
            if verbose:
                print(f"[register_flattening_functions] unregisters {cls.__name__}")
