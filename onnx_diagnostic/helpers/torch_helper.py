"""
Helpers for :epkg:`torch` objects: conversion of nested structures (:func:`to_any`),
copies (:func:`torch_deepcopy`), the dominant type of a model's weights
(:func:`get_weight_type`) and a tiny LLM to experiment with (:func:`dummy_llm`).
Transformers caches and ``ModelOutput`` are handled without importing :epkg:`transformers`
at module level.

>>> import torch
>>> from onnx_diagnostic.helpers import string_type
>>> from onnx_diagnostic.helpers.torch_helper import to_any
>>> string_type(to_any(dict(x=torch.ones(2), i=torch.ones(2, dtype=torch.int64)), torch.float16))
'dict(x:T10r1,i:T7r1)'
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import compat
from .helper import _is_dynamic_cache, _is_encoder_decoder_cache

__all__ = [
    "dummy_llm",
    "get_weight_type",
    "is_torchdynamo_exporting",
    "steal_forward",
    "to_any",
    "to_numpy",
    "torch_deepcopy",
]


def _keep(obj: Any) -> Any:
    return obj


def _map_dynamic_layers(cache: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> list:
    """
    New layers of a DynamicCache, each one rebuilt by the canonical flattening
    (:mod:`onnx_diagnostic.torch_export_patches.serialization`) from ``fn`` applied to its
    tensors: same classes, same states (conv and recurrent states, indexer keys...).
    Layers are taken one by one because the flattening leaves out the layers never updated
    (a cache made with ``DynamicCache(config=...)`` before the first forward): a copy keeps
    them in place, as deep copies, they hold no tensor of state.
    """
    from ..cache_helpers import _new_dynamic_cache
    from ..torch_export_patches import serialization as ser

    layers = []
    for index, layer in enumerate(cache.layers):
        try:
            flat, context = ser._flatten_dynamic_cache(_new_dynamic_cache([layer]))
        except ser.CacheSerializationError:
            # the same error, naming the layer in the cache it belongs to
            raise ser._unknown_layer_error(cache, index, layer) from None
        if not context:
            # never updated, or a DummyLayer: nothing to map
            layers.append(copy.deepcopy(layer))
            continue
        rebuilt = ser._unflatten_dynamic_cache([fn(t) for t in flat], context)
        layers.append(rebuilt.layers[0])
    return layers


def _map_cache(cache: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """
    Builds a new cache of the same class whose tensors are ``fn(tensor)``.
    A DynamicCache (or a subclass) keeps its layer classes and every state they hold,
    see :func:`_map_dynamic_layers`; a layer class the canonical flattening does not know
    raises its :class:`CacheSerializationError`. The other attributes of the cache
    (those of a subclass included) are carried over, their tensors mapped.
    """
    from .. import cache_helpers

    if _is_encoder_decoder_cache(cache):
        return cache_helpers.make_encoder_decoder_cache(
            _map_cache(cache.self_attention_cache, fn), _map_cache(cache.cross_attention_cache, fn)
        )
    from ..torch_export_patches._legacy_caches import is_legacy_cache

    if is_legacy_cache(cache):
        # a cache class of a transformers 4.x model (MambaCache...): lists, dictionaries or
        # tensors of tensors, every other attribute kept
        new_cache = copy.copy(cache)
        for name, value in vars(cache).items():
            setattr(new_cache, name, _map_tensors(value, fn, _keep))
        return new_cache
    if _is_dynamic_cache(cache):
        layers = _map_dynamic_layers(cache, fn)
        new_cache = copy.copy(cache)
        for name, value in vars(cache).items():
            if name != "layers":
                setattr(new_cache, name, _map_tensors(value, fn, _keep))
        new_cache.layers = layers
        return new_cache
    if not hasattr(cache, "layers"):
        raise TypeError(f"cannot rebuild a cache of type {type(cache).__name__}, it has no layers")
    # StaticCache and others: a shallow copy with copied layers holding new tensors.
    new_cache = copy.copy(cache)
    new_cache.layers = []
    for layer in cache.layers:
        new_layer = copy.copy(layer)
        for name, value in vars(layer).items():
            if isinstance(value, torch.Tensor):
                setattr(new_layer, name, fn(value))
        keys = getattr(new_layer, "keys", None)
        if isinstance(keys, torch.Tensor):
            if hasattr(new_layer, "dtype"):
                new_layer.dtype = keys.dtype
            if hasattr(new_layer, "device"):
                new_layer.device = keys.device
        new_cache.layers.append(new_layer)
    return new_cache


def _map_tensors(
    obj: Any,
    fn: Callable[[torch.Tensor], torch.Tensor],
    other: Callable,
    path: str = "obj",
    active: frozenset[int] = frozenset(),
) -> Any:
    """
    Rebuilds a nested structure, tensors are replaced by ``fn(tensor)``,
    any other leaf by ``other(leaf)``. A structure containing itself, or a leaf ``other``
    cannot handle, raises an error naming its path (``obj[1]['x']``).
    """
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if obj is None or isinstance(obj, (bool, int, float, complex, str)):
        return obj
    if isinstance(obj, (tuple, list, dict, set, frozenset)):
        if id(obj) in active:
            raise ValueError(
                f"{path}: the structure contains itself (this {type(obj).__name__} is one of "
                "its own ancestors)"
            )
        active = active | {id(obj)}

    def rec(v: Any, suffix: str) -> Any:
        return _map_tensors(v, fn, other, f"{path}{suffix}", active)

    if compat.is_model_output(obj):
        return type(obj)(**{k: rec(v, f".{k}") for k, v in obj.items()})
    if isinstance(obj, tuple):
        items = [rec(v, f"[{i}]") for i, v in enumerate(obj)]
        if hasattr(obj, "_fields"):  # namedtuple
            return type(obj)(*items)
        return tuple(items) if type(obj) is tuple else type(obj)(items)
    if isinstance(obj, list):
        items = [rec(v, f"[{i}]") for i, v in enumerate(obj)]
        return items if type(obj) is list else type(obj)(items)
    if isinstance(obj, dict):
        items = {k: rec(v, f"[{k!r}]") for k, v in obj.items()}
        return items if type(obj) is dict else type(obj)(items)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(rec(v, "{...}") for v in obj)
    if compat.is_cache(obj):
        return _map_cache(obj, fn)
    try:
        return other(obj)
    except Exception as e:
        raise TypeError(
            f"{path}: cannot process an object of type {type(obj).__name__} "
            f"({type(e).__name__}: {e})"
        ) from e


def _parse_dtype_or_device(dtype_or_device: Any) -> torch.dtype | torch.device:
    if isinstance(dtype_or_device, (torch.dtype, torch.device)):
        return dtype_or_device
    if isinstance(dtype_or_device, str):
        name = dtype_or_device.replace("torch.", "")
        if isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        try:
            return torch.device(dtype_or_device)
        except RuntimeError as e:
            raise ValueError(
                f"dtype_or_device={dtype_or_device!r} is neither a dtype nor a device, "
                "expected a dtype name (float32, float16, bfloat16, float64, int64...) or a "
                "device (cpu, cuda, cuda:1...)"
            ) from e
    raise TypeError(
        f"dtype_or_device must be a torch.dtype, a torch.device or a string, "
        f"not {type(dtype_or_device).__name__}"
    )


def to_any(obj: Any, dtype_or_device: torch.dtype | torch.device | str) -> Any:
    """
    Converts every tensor of a nested structure (tuples, lists, dicts, transformers caches,
    ``ModelOutput``) to a dtype or a device. Only floating tensors are cast when a dtype
    is given (token ids and masks keep their type). The containers and caches are new
    objects, the given structure is left unchanged; a ``torch.nn.Module`` is moved with
    its method ``to`` (in place, as torch does); other objects are returned as they are.
    Caches are rebuilt as :func:`torch_deepcopy` rebuilds them, every state converted.

    :param obj: nested structure
    :param dtype_or_device: ``torch.float16``, ``"float16"``, ``"cpu"``, ``torch.device("cuda")``...
    :return: the new structure

    >>> import torch
    >>> from onnx_diagnostic.cache_helpers import make_dynamic_cache
    >>> from onnx_diagnostic.helpers import string_type
    >>> cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
    >>> string_type(to_any(cache, torch.bfloat16), with_shape=True)
    'DynamicCache(key_cache=#1[T16s1x2x3x4], value_cache=#1[T16s1x2x3x4])'
    """
    target = _parse_dtype_or_device(dtype_or_device)
    if isinstance(target, torch.dtype):

        def fn(t: torch.Tensor) -> torch.Tensor:
            return t.to(target) if t.is_floating_point() else t

    else:

        def fn(t: torch.Tensor) -> torch.Tensor:
            return t.to(target)

    def other(o: Any) -> Any:
        if isinstance(o, torch.nn.Module):
            return o.to(target)
        return o

    return _map_tensors(obj, fn, other)


def _clone(t: torch.Tensor) -> torch.Tensor:
    c = t.detach().clone()
    if t.requires_grad:
        c.requires_grad_(True)
    return c


def _deepcopy_other(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.copy()
    return copy.deepcopy(o)


def torch_deepcopy(obj: Any) -> Any:
    """
    Deep copy of a nested structure which also works for transformers caches (on every
    supported version), ``ModelOutput`` and tensors which are not leaves of the autograd
    graph: tensors are cloned (detached, ``requires_grad`` kept), numpy arrays copied,
    other objects go through :func:`copy.deepcopy`. A DynamicCache keeps the class of
    every layer and every state they hold (conv and recurrent states of linear attention
    layers, indexer keys, dummy layers and layers never updated in place): each layer goes
    through the canonical flattening of
    :mod:`onnx_diagnostic.torch_export_patches.serialization`, a layer class it does not
    know raises its ``CacheSerializationError``.

    :param obj: nested structure
    :return: the copy

    >>> import torch
    >>> from onnx_diagnostic.cache_helpers import make_dynamic_cache
    >>> cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
    >>> copied = torch_deepcopy(dict(past_key_values=cache))
    >>> copied["past_key_values"].layers[0].keys is cache.layers[0].keys
    False
    """
    return _map_tensors(obj, _clone, _deepcopy_other)


def get_weight_type(model: torch.nn.Module) -> torch.dtype:
    """
    Returns the dominant floating dtype of a model's parameters, the one holding the
    largest number of elements (its floating buffers if it has no floating parameter).

    :param model: a :class:`torch.nn.Module`
    :return: a dtype
    :raises ValueError: if the model has no floating parameter nor buffer

    >>> import torch
    >>> get_weight_type(torch.nn.Linear(4, 4).to(torch.float16))
    torch.float16
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    for tensors in (model.parameters(), model.buffers()):
        counts: dict[torch.dtype, int] = {}
        for p in tensors:
            if p.is_floating_point():
                counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
        if counts:
            return max(counts.items(), key=lambda kv: kv[1])[0]
    raise ValueError(
        f"model of type {type(model).__name__} has no floating point parameter nor buffer"
    )


#: the pieces of :func:`dummy_llm` one can ask for with ``cls_name``
DUMMY_LLM_CLASSES = (
    "LLM",
    "Embedding",
    "DecoderLayer",
    "MultiAttentionBlock",
    "AttentionBlock",
    "FeedForward",
)


def dummy_llm(
    cls_name: str | None = None,
    dynamic_shapes: bool = False,
) -> tuple[torch.nn.Module, tuple[torch.Tensor]] | tuple[torch.nn.Module, tuple, dict]:
    """
    Creates a tiny untrained LLM (vocabulary 1024, hidden size 16, one decoder layer
    with two attention heads, causal attention) and its inputs: a batch of
    2 sequences of 30 token ids. The model returns the hidden states of the last layer,
    of shape ``(batch, length, 16)``. It exports with
    ``torch.onnx.export(model, inputs, dynamic_shapes=ds, dynamo=True)``.

    :param cls_name: None or ``"LLM"`` for the whole model, or the name of one of its
        pieces (:data:`DUMMY_LLM_CLASSES`): ``"Embedding"`` (takes token ids),
        ``"DecoderLayer"``, ``"MultiAttentionBlock"``, ``"AttentionBlock"``,
        ``"FeedForward"`` (take hidden states of shape ``(2, 30, 16)``)
    :param dynamic_shapes: also returns the dynamic shapes
        ``dict(input_ids={0: Dim("batch"), 1: Dim("length")})`` (the argument is named
        ``x`` instead of ``input_ids`` for the pieces)
    :return: ``(model, inputs)`` or ``(model, inputs, dynamic_shapes)``
    :raises ValueError: for an unknown ``cls_name``

    >>> from onnx_diagnostic.helpers import string_type
    >>> model, inputs, ds = dummy_llm(dynamic_shapes=True)
    >>> string_type(inputs, with_shape=True), string_type(ds)
    ('(T7s2x30,)', 'dict(input_ids:{0:Dim(batch),1:Dim(length)})')
    >>> string_type(model(*inputs), with_shape=True)
    'T1s2x30x16'
    >>> model, inputs = dummy_llm("AttentionBlock")
    >>> type(model).__name__, string_type(inputs, with_shape=True)
    ('AttentionBlock', '(T1s2x30x16,)')
    """
    if isinstance(cls_name, bool):
        raise TypeError(
            f"dummy_llm: cls_name must be a class name or None, got {cls_name!r}; "
            "write dummy_llm(dynamic_shapes=True) for the dynamic shapes"
        )
    if cls_name is not None and cls_name not in DUMMY_LLM_CLASSES:
        raise ValueError(
            f"dummy_llm: unknown cls_name={cls_name!r}, expected None or one of {DUMMY_LLM_CLASSES}"
        )

    class Embedding(torch.nn.Module):
        def __init__(self, vocab_size: int = 1024, embedding_dim: int = 16, context: int = 256):
            super().__init__()
            self.embedding = torch.nn.Embedding(vocab_size, embedding_dim)
            self.pe = torch.nn.Embedding(context, embedding_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(x.shape[1], dtype=torch.int64, device=x.device)
            return self.embedding(x) + self.pe(positions).unsqueeze(0)

    class AttentionBlock(torch.nn.Module):
        def __init__(self, embedding_dim: int = 16):
            super().__init__()
            self.query = torch.nn.Linear(embedding_dim, embedding_dim, bias=False)
            self.key = torch.nn.Linear(embedding_dim, embedding_dim, bias=False)
            self.value = torch.nn.Linear(embedding_dim, embedding_dim, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.query(x), self.key(x), self.value(x)
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            length = x.shape[1]
            causal = torch.ones((length, length), dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            return torch.softmax(scores, dim=-1) @ v

    class MultiAttentionBlock(torch.nn.Module):
        def __init__(self, embedding_dim: int = 16, num_heads: int = 2):
            super().__init__()
            self.attention = torch.nn.ModuleList(
                [AttentionBlock(embedding_dim) for _ in range(num_heads)]
            )
            self.linear = torch.nn.Linear(embedding_dim * num_heads, embedding_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(torch.cat([head(x) for head in self.attention], dim=-1))

    class FeedForward(torch.nn.Module):
        def __init__(self, embedding_dim: int = 16, ff_dim: int = 64):
            super().__init__()
            self.linear_1 = torch.nn.Linear(embedding_dim, ff_dim)
            self.relu = torch.nn.ReLU()
            self.linear_2 = torch.nn.Linear(ff_dim, embedding_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear_2(self.relu(self.linear_1(x)))

    class DecoderLayer(torch.nn.Module):
        def __init__(self, embedding_dim: int = 16, num_heads: int = 2):
            super().__init__()
            self.attention = MultiAttentionBlock(embedding_dim, num_heads)
            self.feed_forward = FeedForward(embedding_dim)
            self.norm_1 = torch.nn.LayerNorm(embedding_dim)
            self.norm_2 = torch.nn.LayerNorm(embedding_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attention(self.norm_1(x))
            return x + self.feed_forward(self.norm_2(x))

    class LLM(torch.nn.Module):
        def __init__(self, vocab_size: int = 1024, embedding_dim: int = 16, num_heads: int = 2):
            super().__init__()
            self.embedding = Embedding(vocab_size, embedding_dim)
            self.decoder = DecoderLayer(embedding_dim, num_heads)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.embedding(input_ids))

    classes: dict[str, type[torch.nn.Module]] = dict(
        LLM=LLM,
        Embedding=Embedding,
        DecoderLayer=DecoderLayer,
        MultiAttentionBlock=MultiAttentionBlock,
        AttentionBlock=AttentionBlock,
        FeedForward=FeedForward,
    )
    name = cls_name or "LLM"
    model = classes[name]()
    model.eval()
    input_name = "input_ids" if name == "LLM" else "x"
    if name in ("LLM", "Embedding"):
        inputs = (torch.randint(0, 1024, (2, 30), dtype=torch.int64),)
    else:
        inputs = (torch.rand((2, 30, 16), dtype=torch.float32),)
    if not dynamic_shapes:
        return model, inputs
    ds = {input_name: {0: torch.export.Dim("batch"), 1: torch.export.Dim("length")}}
    return model, inputs, ds


def to_numpy(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    """
    Converts a torch tensor into a numpy array (detached, copied to CPU if needed);
    ``bfloat16`` and ``float8`` tensors become arrays of the matching ``ml_dtypes`` type
    holding the same bits (no rounding). A numpy array is returned as it is.

    :param tensor: a torch tensor (or a numpy array)
    :return: a numpy array
    :raises TypeError: for anything else

    >>> import torch
    >>> to_numpy(torch.tensor([1.5, 2.0], dtype=torch.bfloat16))
    array([1.5, 2], dtype=bfloat16)
    """
    if isinstance(tensor, np.ndarray):
        return tensor
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"to_numpy: tensor must be a torch.Tensor, not {type(tensor).__name__}")
    from .ort_session import torch_to_numpy

    return torch_to_numpy(tensor)


def is_torchdynamo_exporting() -> bool:
    """
    Tells if :func:`torch.export.export` (or dynamo) is tracing the code calling this
    function: a model may skip checks or prints which cannot be exported.

    :return: ``torch.compiler.is_exporting()``, False if this torch cannot tell

    >>> is_torchdynamo_exporting()
    False
    """
    comp = torch.compiler
    if not hasattr(comp, "is_exporting"):
        return False
    try:
        return bool(comp.is_exporting())
    except Exception:  # an older torch failing outside dynamo
        return False


def is_tracing(tensor: Any = None) -> bool:
    """
    Tells if :func:`torch.export.export` or :func:`torch.compile` is tracing the code calling
    this function: ``torch.compiler.is_exporting()`` or ``is_compiling()``, or ``tensor``
    (optional) is a fake tensor (the non-strict export traces on fake tensors).

    :param tensor: a value the caller is about to read, None to check the tracer only
    :return: a boolean

    >>> import torch
    >>> is_tracing(), is_tracing(torch.zeros(1))
    (False, False)
    """
    comp = torch.compiler
    if (hasattr(comp, "is_exporting") and comp.is_exporting()) or (
        hasattr(comp, "is_compiling") and comp.is_compiling()
    ):
        return True
    if not isinstance(tensor, torch.Tensor):
        return False
    from torch._guards import detect_fake_mode

    return detect_fake_mode(tensor) is not None


from .steal import steal_forward  # noqa: E402, F401
