"""
Pytree flattening of :epkg:`transformers` caches, the canonical layout of this library.

A ``DynamicCache`` flattens into ``[key_0, value_0, key_1, value_1, ...]``. The context
records the type of every layer so that unflattening rebuilds the same layer classes
(``DynamicSlidingWindowLayer`` included). Keys are named ``key_<i>`` / ``value_<i>`` when all
layers share one type, ``<type>_key_<i>`` (``full_key_0``, ``sliding_key_1``) when they differ.
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
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..helpers import compat

logger = logging.getLogger(__name__)

__all__ = [
    "SerializationEntry",
    "cache_safe_globals",
    "flatten_cache_names",
    "register_cache_serialization",
    "register_flattening_functions",
    "registered_classes",
    "serialization_entries",
    "unregister",
]

_FULL, _SLIDING = "full_attention", "sliding_attention"


def _layer_kind(layer: Any) -> str:
    if getattr(layer, "is_sliding", False):
        window = int(layer.sliding_window)
        if not torch.compiler.is_exporting():
            # Keeps a template so that unflattening while exporting creates no constant.
            compat.new_sliding_window_layer(window)
        return f"{_SLIDING}:{window}"
    return _FULL


def _kind_prefix(kind: str) -> str:
    return "sliding" if kind.startswith(_SLIDING) else "full"


def flatten_cache_names(layer_kinds: tuple[str, ...]) -> list[str]:
    """
    Returns the names of the flattened tensors of a cache whose layers have the given kinds.

    >>> flatten_cache_names(("full_attention", "full_attention"))
    ['key_0', 'value_0', 'key_1', 'value_1']
    >>> flatten_cache_names(("sliding_attention:4", "full_attention"))
    ['sliding_key_0', 'sliding_value_0', 'full_key_1', 'full_value_1']
    """
    mixed = len({_kind_prefix(k) for k in layer_kinds}) > 1
    names = []
    for i, kind in enumerate(layer_kinds):
        prefix = f"{_kind_prefix(kind)}_" if mixed else ""
        names.extend([f"{prefix}key_{i}", f"{prefix}value_{i}"])
    return names


# DynamicCache


def _flatten_dynamic_cache(cache: Any) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    flat, kinds = [], []
    for layer in cache.layers:
        if not getattr(layer, "is_initialized", True) or getattr(layer, "keys", None) is None:
            # A layer never updated holds nothing to export.
            continue
        flat.extend([layer.keys, layer.values])
        kinds.append(_layer_kind(layer))
    return flat, tuple(kinds)


def _flatten_with_keys_dynamic_cache(cache: Any):
    flat, context = _flatten_dynamic_cache(cache)
    names = flatten_cache_names(context)
    return [(pytree.MappingKey(n), t) for n, t in zip(names, flat)], context


def _unflatten_dynamic_cache(values: list, context: tuple[str, ...], cls: type | None = None):
    from ..cache_helpers import build_dynamic_cache

    values = list(values)
    pairs = [(values[2 * i], values[2 * i + 1]) for i in range(len(values) // 2)]
    kinds = [_FULL if k == _FULL else _SLIDING for k in context]
    windows = {int(k.split(":")[1]) for k in context if k != _FULL}
    cache = build_dynamic_cache(pairs, kinds, windows.pop() if windows else None)
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
    dyn = compat.cache_class("DynamicCache")
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
    names = [
        "DynamicCache",
        "StaticCache",
        "EncoderDecoderCache",
        "DynamicLayer",
        "DynamicSlidingWindowLayer",
        "StaticLayer",
    ]
    return [c for c in (compat.cache_class(n) for n in names) if c is not None]


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


def _context_from_json(text: str) -> Any:
    value = json.loads(text)
    return tuple(value) if isinstance(value, list) else value


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


@contextlib.contextmanager
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
