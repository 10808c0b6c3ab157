"""
Pytree flattening of the cache classes that models of :epkg:`transformers` 4.x define for
themselves when their layers keep states (mamba, linear attention, short convolutions):
``Qwen3NextDynamicCache``, ``Lfm2HybridConvCache``, ``HybridMambaAttentionDynamicCache``
(jamba, bamba, granitemoehybrid), ``FalconHybridMambaAttentionDynamicCache``,
``ZambaHybridDynamicCache``, ``Zamba2HybridDynamicCache``, ``MambaCache``,
``Mamba2Cache`` and ``FalconMambaCache``. They are not subclasses of ``Cache``, each stores
its tensors in lists (or dictionaries, or one stacked tensor) indexed by the layer.
Transformers 5 replaced them all by a ``DynamicCache`` with typed layers
(:mod:`onnx_diagnostic.torch_export_patches.serialization`).

The tensors are named as the layers of transformers 5 name them: ``key_<i>``,
``value_<i>`` (attention), ``conv_state_<i>``, ``recurrent_state_<i>`` (the ``ssm_states`` or
``recurrent_states`` of the class), ``<i>`` the index of the layer, layer after layer. Only the
tensors a layer uses are flattened. What is not a tensor goes into the context:

* the attributes the model reads (``layers_block_type``, ``has_previous_state``,
  ``transformer_layers``, ``dtype``...), JSON-serializable;
* the placeholders the classes keep for the tensors a layer does not use: ``None``, ``[]``,
  empty tensors of shape ``(batch, 0)`` or ``(0,)`` (rebuilt with the batch and device of the
  other tensors), and the zero convolution states lfm2 allocates for its attention layers
  (rebuilt as zeros).

Unflattening rebuilds the object without calling its ``__init__`` (which needs the
configuration), the stacked states of ``Mamba2Cache`` as a :class:`LayerStates` (one tensor
per layer), and gives it a copy of every state: the models update these states in place
(``copy_``, ``zero_``, ``+=``), on a graph input torch.export would record a mutation of a
user input, on the copy it records a new value, returned in the cache.

>>> sorted(LEGACY_CACHE_CLASSES)[:2]
['FalconHybridMambaAttentionDynamicCache', 'FalconMambaCache']
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch
import torch.utils._pytree as pytree

#: class name -> the model types (``transformers.models.<type>.modeling_<type>``) defining it
LEGACY_CACHE_CLASSES: dict[str, tuple[str, ...]] = {
    "Qwen3NextDynamicCache": ("qwen3_next",),
    "Lfm2HybridConvCache": ("lfm2",),
    "HybridMambaAttentionDynamicCache": ("jamba", "bamba", "granitemoehybrid"),
    "FalconHybridMambaAttentionDynamicCache": ("falcon_h1",),
    "ZambaHybridDynamicCache": ("zamba",),
    "Zamba2HybridDynamicCache": ("zamba2",),
    "MambaCache": ("mamba",),
    "Mamba2Cache": ("mamba2",),
    "FalconMambaCache": ("falcon_mamba",),
}

#: attribute holding one tensor per layer -> the name of its tensors, in the flattening order
_ROLES: dict[str, str] = {
    "key_cache": "key",
    "value_cache": "value",
    "conv_states": "conv_state",
    "conv_cache": "conv_state",
    "ssm_states": "recurrent_state",
    "recurrent_states": "recurrent_state",
}
_ORDER = {"key": 0, "value": 1, "conv_state": 2, "recurrent_state": 3}
#: attributes equal to the batch size: rebuilt from the tensors, the context must not depend
#: on the batch (an exported program checks the context of its inputs)
_BATCH_ATTRS = {"max_batch_size", "batch_size"}

# context of one entry (one layer of one attribute)
_LEAF, _NONE, _LIST, _EMPTY, _ZEROS = "T", "N", "L", "E", "Z"


class LayerStates(list):
    """
    The states of all layers of a ``Mamba2Cache`` once unflattened: a list of one tensor per
    layer standing for the tensor ``(num_layers, batch, ...)`` the class holds (indexed by
    the layer, ``device``, ``dtype``, ``zero_``). Writing a layer of a stacked tensor in place
    made torch.export specialize the batch size; a list of tensors does not.
    """

    @property
    def device(self) -> torch.device:
        return self[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self[0].dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self[0].shape))

    def zero_(self) -> LayerStates:
        for t in self:
            t.zero_()
        return self


class LegacyCacheError(TypeError):
    """Raised when a legacy cache holds something this module cannot flatten."""


def _module_names() -> list[str]:
    return sorted(
        {
            f"transformers.models.{t}.modeling_{t}"
            for ts in LEGACY_CACHE_CLASSES.values()
            for t in ts
        }
    )


def legacy_cache_classes(import_modules: bool = False) -> list[type]:
    """
    Returns the legacy cache classes of the installed :epkg:`transformers`, the ones of the
    modules already imported (importing every model module costs seconds) unless
    ``import_modules`` is True. Classes deriving from ``transformers.cache_utils.Cache``
    (transformers 5) are left out: the canonical flattening handles them.

    >>> isinstance(legacy_cache_classes(), list)
    True
    """
    found = []
    for name in _module_names():
        mod = sys.modules.get(name, None)
        if mod is None and import_modules:
            try:
                mod = importlib.import_module(name)
            except ImportError:
                mod = None
        if mod is None:
            continue
        for cls_name in LEGACY_CACHE_CLASSES:
            cls = vars(mod).get(cls_name, None)
            if isinstance(cls, type) and cls.__module__ == mod.__name__ and _is_legacy_class(cls):
                found.append(cls)
    return found


def _is_legacy_class(cls: type) -> bool:
    """One of :data:`LEGACY_CACHE_CLASSES`, defined by transformers, not a ``Cache``."""
    return (
        cls.__name__ in LEGACY_CACHE_CLASSES
        and cls.__module__.startswith("transformers.models.")
        and not any(b.__name__ == "Cache" for b in cls.__mro__[1:])
    )


def is_legacy_cache(obj: Any) -> bool:
    """
    Tells if ``obj`` is an instance of one of the legacy cache classes
    (see :data:`LEGACY_CACHE_CLASSES`), defined in a model module of transformers.

    >>> is_legacy_cache(None)
    False
    """
    return _is_legacy_class(type(obj))


# non-tensor attributes


def _dtype_name(dtype: torch.dtype) -> str:
    """``float32`` for ``torch.float32``, ``getattr(torch, name)`` gives it back."""
    return str(dtype).replace("torch.", "")


def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("v", value)
    if isinstance(value, torch.dtype):
        return ("dtype", _dtype_name(value))
    if isinstance(value, torch.device):
        return ("device", str(value))
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return (kind, tuple(_encode(v, f"{where}[{i}]") for i, v in enumerate(value)))
    if isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
        return ("dict", tuple((k, _encode(v, f"{where}[{k!r}]")) for k, v in value.items()))
    raise LegacyCacheError(
        f"{where} is a {type(value).__name__}, which a cache context cannot hold "
        "(it must be JSON-serializable)"
    )


def _decode(item: Any) -> Any:
    kind, payload = item
    if kind == "v":
        return payload
    if kind == "dtype":
        return getattr(torch, payload)
    if kind == "device":
        return torch.device(payload)
    if kind == "list":
        return [_decode(v) for v in payload]
    if kind == "tuple":
        return tuple(_decode(v) for v in payload)
    if kind == "dict":
        return {k: _decode(v) for k, v in payload}
    raise LegacyCacheError(f"unexpected context item {item!r}")


# tensors


def _entries(value: Any) -> tuple[str, list[Any], tuple]:
    """The form of a container (``list``, ``dict``, ``stack``), its entries, its dict keys."""
    if isinstance(value, LayerStates):
        return "stack", list(value), ()
    if isinstance(value, list):
        return "list", value, ()
    if isinstance(value, dict):
        return "dict", list(value.values()), tuple(value)
    if isinstance(value, torch.Tensor):
        # Mamba2Cache: one tensor (num_layers, batch, ...); copies, not views of one storage
        # (torch.export would relate the sizes of inputs sharing a storage)
        return "stack", [value[i].clone() for i in range(value.shape[0])], ()
    raise LegacyCacheError(f"unexpected container {type(value).__name__}")


def _unused_zeros(cache: Any, attr: str, index: int) -> bool:
    """lfm2 allocates a convolution state for its attention layers too, never used."""
    if attr != "conv_cache":
        return False
    layer_types = getattr(cache, "layer_types", None)
    return isinstance(layer_types, (list, tuple)) and layer_types[index] != "conv"


def _entry_context(cache: Any, attr: str, index: int, value: Any, where: str) -> Any:
    if value is None:
        return _NONE
    if isinstance(value, list) and not value:
        return _LIST
    if not isinstance(value, torch.Tensor):
        raise LegacyCacheError(f"{where} is a {type(value).__name__}, not a tensor")
    dtype = _dtype_name(value.dtype)
    # only static dimensions are read: the batch and the sequence may be symbolic
    if value.dim() <= 2 and value.shape[-1] == 0:
        return (_EMPTY, dtype, value.dim() == 2)
    if _unused_zeros(cache, attr, index):
        return (_ZEROS, dtype, tuple(int(d) for d in value.shape[1:]))
    return _LEAF


def _flatten(cache: Any) -> tuple[list[torch.Tensor], tuple]:
    cls_name = type(cache).__name__
    scalars, containers, slots = [], [], []
    for attr, value in vars(cache).items():
        where = f"{cls_name}.{attr}"
        if attr in _ROLES:
            form, values, keys = _entries(value)
            contexts = tuple(
                _entry_context(cache, attr, i, v, f"{where}[{i}]") for i, v in enumerate(values)
            )
            containers.append((attr, form, keys, contexts))
            for i, (v, c) in enumerate(zip(values, contexts)):
                if c == _LEAF:
                    slots.append(((i, _ORDER[_ROLES[attr]]), f"{_ROLES[attr]}_{i}", v))
        elif attr in _BATCH_ATTRS and isinstance(value, (int, torch.SymInt)):
            scalars.append((attr, ("batch", None)))
        else:
            scalars.append((attr, _encode(value, where)))
    slots.sort(key=lambda s: s[0])
    context = (cls_name, tuple(scalars), tuple(containers), tuple(s[1] for s in slots))
    return [s[2] for s in slots], context


def _flatten_with_keys(cache: Any):
    leaves, context = _flatten(cache)
    return [(pytree.MappingKey(n), t) for n, t in zip(context[3], leaves)], context


def named_tensors(cache: Any) -> list[tuple[str, torch.Tensor]]:
    """
    The tensors of a legacy cache with their names, in the order of its flattening
    (``conv_state_0``, ``recurrent_state_0``, ``key_1``...): what ``string_type``,
    ``flatten_object`` and the comparisons of tests show.
    """
    leaves, context = _flatten(cache)
    return list(zip(context[3], leaves))


def _rebuild_entry(context: Any, leaf: torch.Tensor | None, like: torch.Tensor | None) -> Any:
    if context == _LEAF:
        return leaf
    if context == _NONE:
        return None
    if context == _LIST:
        return []
    kind, dtype, extra = context
    dtype = getattr(torch, dtype)
    device = like.device if like is not None else None
    if kind == _EMPTY:
        shape = (like.shape[0] if like is not None else 0, 0) if extra else (0,)
        return torch.empty(shape, dtype=dtype, device=device)
    if kind == _ZEROS:
        batch = like.shape[0] if like is not None else 1
        return torch.zeros((batch, *extra), dtype=dtype, device=device)
    raise LegacyCacheError(f"unexpected entry context {context!r}")


def _make_unflatten(cls: type):
    def _unflatten(values: list, context: tuple) -> Any:
        _cls_name, scalars, containers, names = context
        by_name = dict(zip(names, values))
        like = values[0] if values else None
        cache = cls.__new__(cls)
        for attr, item in scalars:
            if item[0] == "batch":
                setattr(cache, attr, like.shape[0] if like is not None else 0)
            else:
                setattr(cache, attr, _decode(item))
        for attr, form, keys, contexts in containers:
            role = _ROLES[attr]
            entries = []
            for i, c in enumerate(contexts):
                leaf = by_name.get(f"{role}_{i}", None)
                if leaf is not None and role in ("conv_state", "recurrent_state"):
                    # the models update their states in place: a copy, not the input
                    leaf = leaf.clone()
                entries.append(_rebuild_entry(c, leaf, like))
            if form == "dict":
                setattr(cache, attr, dict(zip(keys, entries)))
            elif form == "stack":
                setattr(cache, attr, LayerStates(entries))
            else:
                setattr(cache, attr, entries)
        return cache

    return _unflatten


def legacy_entries() -> list[tuple[type, Any, Any, Any]]:
    """``(class, flatten, flatten_with_keys, unflatten)`` for every loaded legacy class."""
    return [
        (cls, _flatten, _flatten_with_keys, _make_unflatten(cls)) for cls in legacy_cache_classes()
    ]


def legacy_layer_types(cache: Any) -> list[str]:
    """
    The type of every layer of a legacy cache, named as transformers 5 names them:
    ``full_attention`` (keys and values), ``linear_attention`` (states only), ``hybrid``
    (both), ``dummy`` (nothing flattened for that layer).
    """
    _, context = _flatten(cache)
    names = set(context[3])
    n = max((len(c[3]) for c in context[2]), default=0)
    kinds = []
    for i in range(n):
        has_kv = f"key_{i}" in names
        has_state = f"conv_state_{i}" in names or f"recurrent_state_{i}" in names
        kinds.append(_LAYER_TYPES[has_kv, has_state])
    return kinds


#: (keys and values, states) -> the layer type of transformers 5
_LAYER_TYPES = {
    (True, True): "hybrid",
    (True, False): "full_attention",
    (False, True): "linear_attention",
    (False, False): "dummy",
}
