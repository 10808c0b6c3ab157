"""
Builds :epkg:`transformers` caches from plain tensors and reads them back,
the same way on transformers 4.57 and 5.x.

Importing this module also makes the caches exportable: it registers, with
:mod:`torch.utils._pytree`, the cache classes that the installed transformers leaves
unregistered (see
:func:`onnx_diagnostic.torch_export_patches.serialization.register_cache_serialization`),
with the canonical flattening ``[key_0, value_0, key_1, value_1, ...]``.
It never replaces a registration made by someone else. It also gives caches read-only
``key_cache`` / ``value_cache`` properties where transformers removed them (4.56+), so that
scripts written for older versions keep running.

>>> import torch
>>> from onnx_diagnostic.cache_helpers import make_dynamic_cache, get_cache_kv
>>> cache = make_dynamic_cache([(torch.zeros(2, 4, 3, 8), torch.ones(2, 4, 3, 8))])
>>> keys, values = get_cache_kv(cache)
>>> len(keys), tuple(values[0].shape)
(1, (2, 4, 3, 8))
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import transformers.cache_utils as _cu

from .helpers import compat
from .helpers.compat import is_cache
from .helpers.helper import _is_dynamic_cache  # DynamicCache and its subclasses (MtpCache...)

__all__ = [
    "CacheInputError",
    "CacheKeyValue",
    "flatten_unflatten_for_dynamic_shapes",
    "flatten_dynamic_cache",
    "get_cache_kv",
    "get_cache_layer_types",
    "is_cache",
    "make_dynamic_cache",
    "make_encoder_decoder_cache",
    "make_sliding_window_cache",
    "make_static_cache",
]

#: Layer type names, as transformers writes them in ``config.layer_types``.
FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


class CacheInputError(ValueError):
    """Raised when the tensors given to build a cache are not consistent."""


def _pairs_of_flat_list(key_value_pairs: Any, argname: str) -> Any:
    """``[k0, v0, k1, v1, ...]`` (onnx-diagnostic accepts it) as ``[(k0, v0), (k1, v1)]``."""
    if (
        isinstance(key_value_pairs, (list, tuple))
        and key_value_pairs
        and all(isinstance(t, torch.Tensor) for t in key_value_pairs)
    ):
        if len(key_value_pairs) % 2:
            raise CacheInputError(
                f"{argname}: a flat list of tensors [key_0, value_0, key_1, ...] must have an "
                f"even length, got {len(key_value_pairs)} tensors"
            )
        return list(zip(key_value_pairs[::2], key_value_pairs[1::2]))
    return key_value_pairs


def _check_pairs(
    key_value_pairs: Any, argname: str = "key_value_pairs", min_rank: int = 4
) -> list[tuple]:
    if isinstance(key_value_pairs, (torch.Tensor, dict)) or not isinstance(
        key_value_pairs, Sequence
    ):
        raise CacheInputError(
            f"{argname} must be a list of (key, value) tensor pairs, "
            f"not {type(key_value_pairs).__name__}"
        )
    key_value_pairs = _pairs_of_flat_list(key_value_pairs, argname)
    pairs = []
    ref = None
    for i, pair in enumerate(key_value_pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            n = len(pair) if isinstance(pair, (tuple, list)) else type(pair).__name__
            raise CacheInputError(
                f"{argname}[{i}] must be a pair (key, value), got "
                f"{n if isinstance(n, str) else f'a sequence of {n} elements'}"
            )
        key, value = pair
        for name, t in (("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor):
                raise CacheInputError(
                    f"{argname}[{i}] {name} must be a torch.Tensor, not {type(t).__name__}"
                )
            if min_rank == 4 and t.dim() != 4:
                raise CacheInputError(
                    f"{argname}[{i}] {name} must have 4 dimensions "
                    f"(batch, heads, sequence, head_dim), got shape {tuple(t.shape)}"
                )
            if t.dim() < min_rank:
                raise CacheInputError(
                    f"{argname}[{i}] {name} must have at least {min_rank} dimensions "
                    f"(batch, ..., sequence, head_dim), got shape {tuple(t.shape)}"
                )
        if key.dim() != value.dim() or key.shape[:-1] != value.shape[:-1]:
            raise CacheInputError(
                f"{argname}[{i}]: key and value disagree on (batch, heads, sequence): "
                f"{tuple(key.shape)} vs {tuple(value.shape)}"
            )
        if key.dtype != value.dtype:
            raise CacheInputError(
                f"{argname}[{i}]: key and value have different dtypes: {key.dtype} vs {value.dtype}"
            )
        if ref is None:
            ref = (i, key)
        elif key.dim() != ref[1].dim():
            raise CacheInputError(
                f"{argname}[{i}].key has {key.dim()} dimensions but {argname}[{ref[0]}].key "
                f"has {ref[1].dim()} dimensions: every layer must have the same rank, "
                f"shape {tuple(key.shape)} vs {tuple(ref[1].shape)}"
            )
        elif key.shape[0] != ref[1].shape[0]:
            raise CacheInputError(
                f"{argname}[{i}].key has batch size {key.shape[0]} but "
                f"{argname}[{ref[0]}].key has {ref[1].shape[0]}: "
                f"shape {tuple(key.shape)} vs {tuple(ref[1].shape)}"
            )
        pairs.append((key, value))
    return pairs


def _check_positive_int(value: Any, argname: str) -> int:
    """``value`` as a positive int: numpy integers accepted, bool and float refused."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (float, np.floating)):
        raise CacheInputError(f"{argname} must be a positive int, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise CacheInputError(
            f"{argname} must be a positive int, got {value!r} ({type(value).__name__})"
        ) from None
    if number <= 0:
        raise CacheInputError(f"{argname} must be a positive int, got {value!r}")
    return number


def _set_tokens_seen(layers: list) -> None:
    """
    A sliding layer keeps at most ``sliding_window - 1`` positions, a full layer all of them:
    when a cache has both, the number of tokens seen by the sliding layers
    (``cumulative_length``, what their masks and positions are computed from) is the length
    of a full layer, not their own. While exporting, that length is symbolic, and the
    exported model stays right once the text is longer than the window.
    """
    full_cls = compat.cache_class("DynamicLayer")
    sliding_cls = compat.cache_class("DynamicSlidingWindowLayer")
    if full_cls is None or sliding_cls is None:
        return
    full = [la for la in layers if type(la) is full_cls and la.keys is not None]
    sliding = [la for la in layers if type(la) is sliding_cls]
    if not full or not sliding:
        return
    seen = full[0].keys.shape[-2]
    for la in sliding:
        la.cumulative_length = seen


def _new_dynamic_cache(layers: list) -> Any:
    _set_tokens_seen(layers)
    cache = _cu.DynamicCache()
    if layers:
        cache.layers = layers
        if hasattr(cache, "layer_class_to_replicate"):
            # The cache keeps growing if a model has more layers than given.
            cache.layer_class_to_replicate = _cu.DynamicLayer
    return cache


def _layer_types_of_classes(
    cls_layers: Any, cls_kwargs: Any, pairs: list[tuple], sliding_window: int | None
) -> tuple[list[str], int | None]:
    """onnx-diagnostic's ``cls_layers`` / ``cls_kwargs`` as ``layer_types``, ``sliding_window``."""
    kinds = {"DynamicLayer": FULL_ATTENTION, "DynamicSlidingWindowLayer": SLIDING_ATTENTION}
    if isinstance(cls_layers, (str, type)):
        cls_layers = [cls_layers] * len(pairs)
    if not isinstance(cls_layers, (list, tuple)) or len(cls_layers) != len(pairs):
        raise CacheInputError(
            f"cls_layers must be a class, a class name or a list of one per layer "
            f"({len(pairs)}), got {cls_layers!r}"
        )
    if cls_kwargs is None:
        cls_kwargs = [{}] * len(pairs)
    elif isinstance(cls_kwargs, dict):
        cls_kwargs = [cls_kwargs] * len(pairs)
    if not isinstance(cls_kwargs, (list, tuple)) or len(cls_kwargs) != len(pairs):
        raise CacheInputError(
            f"cls_kwargs must be a dict or a list of one dict per layer, got {cls_kwargs!r}"
        )
    layer_types = []
    windows = set()
    for i, (cls, kws) in enumerate(zip(cls_layers, cls_kwargs)):
        name = cls if isinstance(cls, str) else getattr(cls, "__name__", repr(cls))
        if name not in kinds or (not isinstance(cls, str) and cls is not compat.cache_class(name)):
            raise CacheInputError(
                f"cls_layers[{i}]={name!r} is not supported, expected one of {sorted(kinds)}"
            )
        layer_types.append(kinds[name])
        if kinds[name] == SLIDING_ATTENTION:
            bad = set(kws) - {"sliding_window"}
            if bad:
                raise CacheInputError(f"cls_kwargs[{i}] has unsupported keys {sorted(bad)}")
            # onnx-diagnostic: the window defaults to the sequence length of the keys
            windows.add(kws.get("sliding_window", sliding_window or pairs[i][0].shape[-2]))
    if len(windows) > 1:
        raise CacheInputError(f"every sliding layer must have the same window, got {windows}")
    return layer_types, (windows.pop() if windows else sliding_window)


def make_dynamic_cache(
    key_value_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]] | Sequence[torch.Tensor],
    layer_types: Sequence[str] | None = None,
    sliding_window: int | None = None,
    cls_layers: str | type | Sequence[str | type] | None = None,
    cls_kwargs: dict[str, int] | Sequence[dict[str, int]] | None = None,
) -> Any:
    """
    Creates a :class:`transformers.cache_utils.DynamicCache` holding exactly the given tensors.

    :param key_value_pairs: one ``(key, value)`` pair per layer, each of shape
        ``(batch, heads, sequence, head_dim)``, or the flat list
        ``[key_0, value_0, key_1, value_1, ...]``; an empty list gives an empty cache;
        full attention layers also accept tensors of rank 3 or more than 4
        (``(batch, ..., sequence, head_dim)``), as ``DynamicLayer`` does, sliding layers
        need 4 dimensions
    :param layer_types: optional, one of ``"full_attention"`` or ``"sliding_attention"``
        per layer (as in ``config.layer_types``), sliding layers need ``sliding_window``
    :param sliding_window: window size of the sliding layers
    :param cls_layers: onnx-diagnostic's way to give the layer types: a layer class of
        ``transformers.cache_utils`` or its name (``"DynamicLayer"``,
        ``"DynamicSlidingWindowLayer"``) for every layer, or a list of one per layer;
        not with ``layer_types``
    :param cls_kwargs: with ``cls_layers``, ``dict(sliding_window=...)`` (or one dict per
        layer); the window defaults to ``sliding_window``, then to the sequence length
        of the keys, as onnx-diagnostic does
    :return: a DynamicCache

    >>> import torch
    >>> from onnx_diagnostic.helpers import string_type
    >>> cache = make_dynamic_cache([(torch.rand(2, 4, 3, 7), torch.rand(2, 4, 3, 7))])
    >>> string_type(cache, with_shape=True)
    'DynamicCache(key_cache=#1[T1s2x4x3x7], value_cache=#1[T1s2x4x3x7])'
    """
    pairs = _check_pairs(key_value_pairs, min_rank=3)
    if cls_layers is not None:
        if layer_types is not None:
            raise CacheInputError("give layer_types or cls_layers, not both")
        if pairs:
            layer_types, sliding_window = _layer_types_of_classes(
                cls_layers, cls_kwargs, pairs, sliding_window
            )
    elif cls_kwargs is not None:
        raise CacheInputError("cls_kwargs needs cls_layers")
    if isinstance(layer_types, str):
        raise CacheInputError(
            f"layer_types must be a list with one kind per layer, not the string "
            f"{layer_types!r}; for {len(pairs)} layer(s) of that kind: "
            f"[{layer_types!r}] * {len(pairs)}"
        )
    if layer_types is None:
        layer_types = [FULL_ATTENTION] * len(pairs)
    elif len(layer_types) != len(pairs):
        raise CacheInputError(
            f"layer_types has {len(layer_types)} elements but key_value_pairs has {len(pairs)}"
        )
    for i, kind in enumerate(layer_types):
        if kind in (SLIDING_ATTENTION, "chunked_attention"):
            if pairs[i][0].dim() != 4:
                raise CacheInputError(
                    f"key_value_pairs[{i}]: a sliding layer needs 4 dimensions "
                    f"(batch, heads, sequence, head_dim), got shape {tuple(pairs[i][0].shape)}"
                )
            sliding_window = _check_positive_int(
                sliding_window, f"sliding_window (needed by layer_types[{i}]={kind!r})"
            )
            if compat.cache_class("DynamicSlidingWindowLayer") is None:
                raise CacheInputError(
                    f"layer_types[{i}]={kind!r}: transformers {compat.transformers_version()} "
                    "has no DynamicSlidingWindowLayer"
                )
        elif kind != FULL_ATTENTION:
            raise CacheInputError(
                f"layer_types[{i}]={kind!r} is not supported, expected "
                f"{FULL_ATTENTION!r} or {SLIDING_ATTENTION!r}"
            )
    return build_dynamic_cache(pairs, layer_types, sliding_window)


def build_dynamic_cache(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    layer_types: Sequence[str],
    sliding_window: int | None,
) -> Any:
    """
    Builds a DynamicCache without checking its inputs and without creating any tensor
    or guard, so that a model building a cache can be traced by :func:`torch.export.export`
    (the pytree unflatten function rebuilds the layers the same way, one by one, in
    :mod:`onnx_diagnostic.torch_export_patches.serialization`).
    Use :func:`make_dynamic_cache` otherwise.
    """
    layers = []
    for (key, value), kind in zip(pairs, layer_types):
        if kind == FULL_ATTENTION:
            layer = _cu.DynamicLayer()
        else:
            layer = compat.new_sliding_window_layer(sliding_window)
        layers.append(compat.init_layer(layer, key, value))
    return _new_dynamic_cache(layers)


def make_sliding_window_cache(
    key_value_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]] | Sequence[torch.Tensor],
    sliding_window: int | None = None,
) -> Any:
    """
    Creates a DynamicCache whose layers are all ``DynamicSlidingWindowLayer``
    (transformers 5 removed ``SlidingWindowCache``, onnx-diagnostic built one).

    :param key_value_pairs: one ``(key, value)`` pair per layer (4 dimensions), or the
        flat list ``[key_0, value_0, ...]``
    :param sliding_window: the window; None takes the sequence length of the first key,
        as onnx-diagnostic did
    :return: a DynamicCache

    >>> import torch
    >>> c = make_sliding_window_cache([(torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4))], 8)
    >>> get_cache_layer_types(c)
    ['sliding_attention']
    """
    pairs = _check_pairs(key_value_pairs)
    if sliding_window is None:
        if not pairs:
            return make_dynamic_cache([])
        sliding_window = pairs[0][0].shape[-2]
    sliding_window = _check_positive_int(sliding_window, "sliding_window")
    return make_dynamic_cache(
        pairs, layer_types=[SLIDING_ATTENTION] * len(pairs), sliding_window=sliding_window
    )


def make_encoder_decoder_cache(self_attention_cache: Any, cross_attention_cache: Any) -> Any:
    """
    Creates an :class:`transformers.cache_utils.EncoderDecoderCache`.

    >>> import torch
    >>> sa = make_dynamic_cache([(torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4))])
    >>> ca = make_dynamic_cache([(torch.rand(1, 2, 5, 4), torch.rand(1, 2, 5, 4))])
    >>> type(make_encoder_decoder_cache(sa, ca)).__name__
    'EncoderDecoderCache'
    """
    for name, c in (
        ("self_attention_cache", self_attention_cache),
        ("cross_attention_cache", cross_attention_cache),
    ):
        if not isinstance(c, _cu.Cache):
            raise CacheInputError(
                f"{name} must be a transformers Cache (see make_dynamic_cache), "
                f"not {type(c).__name__}"
            )
    _check_same_layers_and_batch(self_attention_cache, cross_attention_cache)
    return _cu.EncoderDecoderCache(self_attention_cache, cross_attention_cache)


def _check_same_layers_and_batch(self_cache: Any, cross_cache: Any) -> None:
    """The decoder layers of an encoder-decoder model each hold one self and one cross
    attention cache of the same batch; an empty cache (before the first step) is allowed."""
    try:
        keys = [get_cache_kv(c)[0] for c in (self_cache, cross_cache)]
    except Exception:  # layers without keys (linear attention...): nothing to compare
        return
    if not keys[0] or not keys[1]:
        return
    if len(keys[0]) != len(keys[1]):
        raise CacheInputError(
            f"self_attention_cache has {len(keys[0])} layers but cross_attention_cache has "
            f"{len(keys[1])}: each decoder layer holds one of each"
        )
    for i, (ks, kc) in enumerate(zip(*keys)):
        if ks.shape[0] != kc.shape[0]:
            raise CacheInputError(
                f"self_attention_cache.key_{i} has batch size {ks.shape[0]} but "
                f"cross_attention_cache.key_{i} has {kc.shape[0]}: shape {tuple(ks.shape)} "
                f"vs {tuple(kc.shape)}"
            )


def make_static_cache(
    key_value_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], max_cache_len: int
) -> Any:
    """
    Creates a :class:`transformers.cache_utils.StaticCache` of ``max_cache_len`` positions,
    the first ``sequence`` positions of each layer filled with the given tensors, zeros after.

    >>> import torch
    >>> c = make_static_cache([(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))], 6)
    >>> tuple(get_cache_kv(c)[0][0].shape)
    (1, 2, 6, 4)
    """
    pairs = _check_pairs(key_value_pairs)
    max_cache_len = _check_positive_int(max_cache_len, "max_cache_len")
    layers = []
    for i, (key, value) in enumerate(pairs):
        if key.shape[2] > max_cache_len:
            raise CacheInputError(
                f"key_value_pairs[{i}] holds {key.shape[2]} positions, "
                f"more than max_cache_len={max_cache_len}"
            )
        full_k = key.new_zeros((*key.shape[:2], max_cache_len, key.shape[3]))
        full_v = value.new_zeros((*value.shape[:2], max_cache_len, value.shape[3]))
        full_k[:, :, : key.shape[2]] = key
        full_v[:, :, : value.shape[2]] = value
        layers.append(_static_layer(full_k, full_v, key.shape[2]))
    return _new_static_cache(layers)


def _static_layer(keys: torch.Tensor, values: torch.Tensor, seq_length: Any = None) -> Any:
    """
    A StaticLayer holding ``keys`` and ``values`` (already of size max_cache_len).
    ``seq_length`` is the number of filled positions (an int or a 0-d tensor); transformers 5
    keeps it in a tensor ``cumulative_length``, transformers 4.57 reads ``cache_position``.
    """
    layer = _cu.StaticLayer(max_cache_len=keys.shape[2])
    layer.dtype, layer.device = keys.dtype, keys.device
    layer.batch_size, layer.num_heads = keys.shape[:2]
    layer.k_head_dim, layer.v_head_dim = keys.shape[-1], values.shape[-1]
    layer.keys, layer.values = keys, values
    tensor_length = isinstance(getattr(layer, "cumulative_length", None), torch.Tensor)
    if tensor_length and seq_length is not None:
        if not isinstance(seq_length, torch.Tensor):
            seq_length = torch.tensor(seq_length, dtype=torch.int64, device=keys.device)
        layer.cumulative_length = seq_length
    layer.is_initialized = True
    return layer


def _new_static_cache(layers: list) -> Any:
    cache = _cu.StaticCache.__new__(_cu.StaticCache)
    _cu.Cache.__init__(cache, layers=layers)
    return cache


def _serialization() -> Any:
    # imported here: serialization imports this module back
    from .torch_export_patches import serialization

    return serialization


#: Group of every tensor of the canonical flattening, found from its name without the
#: layer index and without the prefix telling the attention type (``sliding_key_3`` -> key).
_TENSOR_GROUPS = {
    "key": "key_cache",
    "value": "value_cache",
    "indexer_key": "indexer_keys",
    "indexer_position_ids": "indexer_position_ids",
    "conv_state": "conv_states",
    "recurrent_state": "recurrent_states",
}
_SUFFIX = re.compile(r"(_\d+)+$")
_ATTENTION_PREFIX = re.compile(r"^(full|sliding|indexed)_(?=key$|value$)")


def _tensor_group(name: str) -> str:
    """``key_cache`` for ``key_0`` or ``sliding_key_2``, ``conv_states`` for ``conv_state_1_0``."""
    return _TENSOR_GROUPS[_ATTENTION_PREFIX.sub("", _SUFFIX.sub("", name))]


def flatten_dynamic_cache(cache: Any) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """
    Returns every tensor of a DynamicCache (or of a subclass such as ``MtpCache``) with its
    name, as the canonical flattening of
    :mod:`onnx_diagnostic.torch_export_patches.serialization` orders and names them
    (``key_0``, ``value_0``, ``conv_state_1``, ``recurrent_state_1``, ``indexer_key_2``...),
    and the type of every layer it keeps. Layers never updated are left out
    (a dummy layer keeps its place but holds no tensor).

    :param cache: a DynamicCache
    :return: ``([(name, tensor), ...], [layer type, ...])``
    :raises CacheSerializationError: for a layer class the canonical flattening
        does not know, naming the layer

    >>> import torch
    >>> kv = (torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    >>> cache = make_dynamic_cache(
    ...     [kv, kv], layer_types=["sliding_attention", "full_attention"], sliding_window=8
    ... )
    >>> named, layer_types = flatten_dynamic_cache(cache)
    >>> [name for name, _ in named]
    ['sliding_key_0', 'sliding_value_0', 'full_key_1', 'full_value_1']
    >>> layer_types
    ['sliding_attention', 'full_attention']
    """
    if not _is_dynamic_cache(cache):
        raise TypeError(f"cache must be a DynamicCache, not {type(cache).__name__}")
    named, context = _canonical_flattening(cache)
    return named, [_serialization()._layer_type(kind) for kind in context]


def _canonical_flattening(cache: Any) -> tuple[list[tuple[str, torch.Tensor]], tuple]:
    """Named tensors and context (one entry per layer kept) of a DynamicCache."""
    ser = _serialization()
    flat, context = ser._flatten_dynamic_cache(cache)
    return list(zip(ser.flatten_cache_names(context), flat)), context


def _error_at(err: Any, path: str) -> Any:
    """The same CacheSerializationError, its message starting with ``path``."""
    return type(err)(f"{path}: {err}", layer_class=err.layer_class, layer_index=err.layer_index)


def _dynamic_cache_groups(cache: Any) -> tuple[dict[str, list[torch.Tensor]], list[str]]:
    """The tensors of the canonical flattening by group (``key_cache``...), the layer types."""
    named, layer_types = flatten_dynamic_cache(cache)
    groups: dict[str, list[torch.Tensor]] = {g: [] for g in _TENSOR_GROUPS.values()}
    for name, t in named:
        groups[_tensor_group(name)].append(t)
    return groups, layer_types


def get_cache_layer_types(cache: Any) -> list[str]:
    """
    Returns the type of every layer of a cache, as transformers names them in
    ``config.layer_types`` (``transformers.cache_utils.DYNAMIC_LAYER_TYPE_MAPPING``),
    one per element of ``cache.layers``, never updated layers included.

    For a DynamicCache, the type follows the class of the layer:

    * ``"full_attention"``: ``DynamicLayer``
    * ``"sliding_attention"``: ``DynamicSlidingWindowLayer`` (``chunked_attention`` layers too)
    * ``"indexed_attention"``: ``DynamicIndexedLayer`` (attention keys and values, indexer keys)
    * ``"linear_attention"``: ``LinearAttentionLayer`` (conv and recurrent states only;
      the ``"conv"`` layers of lfm2 are the same class, they are reported as
      ``"linear_attention"``)
    * ``"hybrid"``: ``LinearAttentionAndFullAttentionLayer``
    * ``"hybrid_sliding"``: ``LinearAttentionAndSlidingWindowAttentionLayer``
    * ``"dummy"``: ``DummyLayer`` (a layer without cache: ``"moe"``, ``"mlp"``, or a layer
      reusing the cache of another one)

    Any other layer class (a model's own layer, a subclass) raises the
    :class:`~onnx_diagnostic.torch_export_patches.serialization.CacheSerializationError`
    the canonical flattening raises. For a StaticCache, a layer is ``"sliding_attention"``
    if it is a sliding window layer, ``"full_attention"`` otherwise.
    An ``EncoderDecoderCache`` has no layers of its own, the result is empty.
    The cache classes of transformers 4.x models keeping states (``MambaCache``,
    ``HybridMambaAttentionDynamicCache``...) give, for each layer, ``"full_attention"``
    (keys and values), ``"linear_attention"`` (states), ``"hybrid"`` (both) or ``"dummy"``
    (nothing), from the tensors each layer holds.

    >>> import torch
    >>> kv = (torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4))
    >>> cache = make_dynamic_cache(
    ...     [kv, kv], layer_types=["sliding_attention", "full_attention"], sliding_window=8
    ... )
    >>> get_cache_layer_types(cache)
    ['sliding_attention', 'full_attention']
    """
    from .torch_export_patches._legacy_caches import is_legacy_cache, legacy_layer_types

    if is_legacy_cache(cache):
        return legacy_layer_types(cache)
    layers = getattr(cache, "layers", [])
    if not _is_dynamic_cache(cache):
        return [
            SLIDING_ATTENTION if getattr(layer, "is_sliding", False) else FULL_ATTENTION
            for layer in layers
        ]
    ser = _serialization()
    known = ser._known_layer_classes()
    out = []
    for index, layer in enumerate(layers):
        layer_type = known.get(type(layer), None)
        if layer_type is None:
            raise ser._unknown_layer_error(cache, index, layer)
        out.append(layer_type)
    return out


def get_cache_kv(cache: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """
    Returns the lists of the attention keys and values of any cache, on every supported
    version. For an :class:`EncoderDecoderCache`, it returns those of the self-attention cache
    followed by those of the cross-attention cache.

    Only attention keys and values are returned, one pair per layer holding some
    (full, sliding, indexed and hybrid layers): layers never updated, linear attention layers
    (conv and recurrent states), dummy layers are skipped, and so are the conv and recurrent
    states of hybrid layers and the indexer keys of indexed layers. ``keys[j]`` is then the
    j-th layer holding keys, not always ``cache.layers[j]``
    (see :func:`get_cache_layer_types`). Every tensor of a DynamicCache, with its name,
    comes from :func:`flatten_dynamic_cache` (or :func:`torch.utils._pytree.tree_flatten`).
    A DynamicCache holding a layer class the canonical flattening does not know raises
    :class:`~onnx_diagnostic.torch_export_patches.serialization.CacheSerializationError`.

    >>> import torch
    >>> keys, values = get_cache_kv(make_dynamic_cache([]))
    >>> keys, values
    ([], [])
    """
    if isinstance(cache, _cu.EncoderDecoderCache):
        k1, v1 = get_cache_kv(cache.self_attention_cache)
        k2, v2 = get_cache_kv(cache.cross_attention_cache)
        return k1 + k2, v1 + v2
    if not isinstance(cache, _cu.Cache):
        raise TypeError(f"cache must be a transformers Cache, not {type(cache).__name__}")
    if _is_dynamic_cache(cache):
        groups, _ = _dynamic_cache_groups(cache)
        return groups["key_cache"], groups["value_cache"]
    keys, values = [], []
    for layer in cache.layers:
        if getattr(layer, "is_initialized", True) and getattr(layer, "keys", None) is not None:
            keys.append(layer.keys)
            values.append(layer.values)
    return keys, values


class CacheKeyValue:
    """
    The keys and values of a cache as two lists, whatever the version of transformers
    (4.56 removed ``cache.key_cache`` / ``cache.value_cache``), as onnx-diagnostic's
    class of the same name.

    :param cache: a transformers cache (read through :func:`get_cache_kv`: layers never
        updated, linear attention and dummy layers are skipped), the flat list
        ``[key_0, value_0, key_1, value_1, ...]``, or None (both lists are then None)
    :param cls_layers: the layer classes :meth:`make_dynamic_cache` uses (see the argument
        of :func:`make_dynamic_cache`); taken from the cache when it has layers, so it
        cannot be given with a cache

    >>> import torch
    >>> kv = (torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    >>> ckv = CacheKeyValue(make_dynamic_cache([kv, kv]))
    >>> ckv.n_layers, len(ckv), type(ckv.make_dynamic_cache()).__name__
    (2, 4, 'DynamicCache')
    """

    def __init__(self, cache: Any = None, cls_layers: Any = None):
        self.key_cache: list[torch.Tensor] | None
        self.value_cache: list[torch.Tensor] | None
        if cache is None:
            self.key_cache = self.value_cache = None
            self.cls_layers = cls_layers
        elif isinstance(cache, _cu.Cache):
            if cls_layers is not None:
                raise CacheInputError(
                    f"CacheKeyValue: cls_layers cannot be given with a cache "
                    f"({type(cache).__name__} has its own layers)"
                )
            self.key_cache, self.value_cache = get_cache_kv(cache)
            layers = [
                la for la in getattr(cache, "layers", []) if getattr(la, "keys", None) is not None
            ]
            self.cls_layers = [type(la) for la in layers] or None
            self._layers = layers
        elif isinstance(cache, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in cache):
            pairs = _pairs_of_flat_list(list(cache), "cache")
            self.key_cache = [k for k, _ in pairs]
            self.value_cache = [v for _, v in pairs]
            self.cls_layers = cls_layers
        else:
            raise TypeError(
                "CacheKeyValue: cache must be a transformers Cache, a flat list of tensors "
                f"or None, not {type(cache).__name__}"
            )

    @property
    def n_layers(self) -> int:
        """Number of layers holding keys and values."""
        return len(self.key_cache) if self.key_cache else 0

    def __len__(self) -> int:
        """Number of tensors (keys and values)."""
        return len(self.key_cache or []) + len(self.value_cache or [])

    def aslist(self) -> list[torch.Tensor]:
        """The tensors in the canonical order ``[key_0, value_0, key_1, value_1, ...]``."""
        if self.key_cache is None or self.value_cache is None:
            return []
        return [t for kv in zip(self.key_cache, self.value_cache) for t in kv]

    def make_dynamic_cache(self) -> Any:
        """Builds a DynamicCache back from the lists (and ``cls_layers``)."""
        if self.key_cache is None or self.value_cache is None:
            raise CacheInputError("CacheKeyValue: no keys and values to build a cache from")
        pairs = list(zip(self.key_cache, self.value_cache))
        if self._layers is None:
            return make_dynamic_cache(pairs, cls_layers=self.cls_layers)
        # read from a cache: sliding layers stay sliding (same window), the others
        # (static, hybrid...) become full attention layers
        windows = [la.sliding_window for la in self._layers if getattr(la, "is_sliding", False)]
        kinds = [
            SLIDING_ATTENTION if getattr(la, "is_sliding", False) else FULL_ATTENTION
            for la in self._layers
        ]
        if len(kinds) != len(pairs):
            kinds = [FULL_ATTENTION] * len(pairs)
        return make_dynamic_cache(
            pairs, layer_types=kinds, sliding_window=windows[0] if windows else None
        )

    #: the layers read from the cache (None if built from a list)
    _layers: list | None = None


def flatten_unflatten_for_dynamic_shapes(
    obj: Any,
    use_dict: bool = False,
    change_function: Any = None,
) -> Any:
    """
    Returns a nested structure of the same shape as the dynamic shapes of ``obj``
    (what :func:`torch.export.export` expects for it): every node registered in
    :mod:`torch.utils._pytree` (caches, ModelOutput...) becomes the list of its children,
    so a DynamicCache becomes the canonical flat list ``[key_0, value_0, ...]``.

    :param obj: any structure of tensors
    :param use_dict: keeps dictionaries (and tuples) as they are instead of turning them
        into lists of their values
    :param change_function: applied to every tensor (to replace it by its dynamic shape,
        its shape...)
    :return: the structure

    >>> import torch
    >>> kv = (torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    >>> inputs = dict(input_ids=torch.zeros(1, 3), cache=make_dynamic_cache([kv]))
    >>> flatten_unflatten_for_dynamic_shapes(
    ...     inputs, use_dict=True, change_function=lambda t: tuple(t.shape))
    {'input_ids': (1, 3), 'cache': [(1, 2, 3, 4), (1, 2, 3, 4)]}
    """
    if change_function is not None and not callable(change_function):
        raise TypeError(f"change_function must be callable or None, got {change_function!r}")
    if isinstance(obj, torch.Tensor):
        return change_function(obj) if change_function else obj
    flat, spec = torch.utils._pytree.tree_flatten(obj)
    return _rebuild_for_dynamic_shapes(flat, spec, use_dict, change_function, [0])


def _rebuild_for_dynamic_shapes(
    flat: list, spec: Any, use_dict: bool, change_function: Any, pos: list[int]
) -> Any:
    if spec.is_leaf():
        value = flat[pos[0]]
        pos[0] += 1
        if isinstance(value, torch.Tensor) and change_function is not None:
            return change_function(value)
        return value
    children = [
        _rebuild_for_dynamic_shapes(flat, child, use_dict, change_function, pos)
        for child in spec.children()
    ]
    if use_dict:
        if spec.type is dict:
            return dict(zip(spec.context, children))
        if spec.type is tuple:
            return tuple(children)
    return children


def _install_legacy_properties() -> None:
    """
    transformers 4.56 removed ``cache.key_cache`` and ``cache.value_cache``; scripts written
    for older versions (and the gallery) still read them. They are added back, read-only,
    on :class:`transformers.cache_utils.Cache` only when the class has no such attribute.
    """
    for name, index in (("key_cache", 0), ("value_cache", 1)):
        if hasattr(_cu.Cache, name):
            continue

        def _getter(self, _index=index):
            return get_cache_kv(self)[_index]

        _getter.__doc__ = f"Read-only list of the {name.split('_')[0]}s, added by onnx_diagnostic."
        setattr(_cu.Cache, name, property(_getter))


_install_legacy_properties()


def _register_once() -> None:
    from .torch_export_patches.serialization import register_cache_serialization

    register_cache_serialization()


_register_once()
