"""
What a decoder expects, read from the model rather than from a table of families: the
arguments its ``forward`` declares (:func:`forward_arguments`) and the cache it creates
(:func:`probe_cache`: the model runs on a short prompt and returns the cache it makes,
whatever its layers hold: keys and values of other sizes than the configuration says
(multi-head latent attention keeps a compressed vector), convolution and recurrent states
(mamba, linear attention), indexer keys...). :func:`probe_dynamic_shapes` compares two such
caches to tell which dimensions are dynamic.

>>> import torch, transformers
>>> from onnx_diagnostic.tasks._cache_probe import forward_arguments
>>> "position_ids" in forward_arguments(None, transformers.BloomConfig())
False
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ._common import BATCH, CACHE, SLIDING_CACHE, TaskInputError

logger = logging.getLogger(__name__)


def causal_lm_class(config: Any) -> type | None:
    """
    Returns the class :epkg:`transformers` builds for ``config`` as a causal language model:
    the first of ``config.architectures`` which exists, otherwise the one
    ``AutoModelForCausalLM`` maps ``config.model_type`` to, None if there is none.

    >>> import transformers
    >>> causal_lm_class(transformers.LlamaConfig()).__name__
    'LlamaForCausalLM'
    >>> causal_lm_class(None) is None
    True
    """
    if config is None:
        return None
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None) if isinstance(name, str) else None
        if isinstance(cls, type):
            return cls
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover
        return None
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(getattr(config, "model_type", None), None)
    if not isinstance(name, str):
        return None
    try:
        cls = getattr(transformers, name, None)
    except (ImportError, RuntimeError):
        return None
    return cls if isinstance(cls, type) else None


def forward_arguments(model: Any, config: Any = None) -> set[str] | None:
    """
    Returns the names of the arguments of ``model.forward``, or, if ``model`` is None, of
    the forward of the class :func:`causal_lm_class` finds for ``config``; None when
    neither tells (a model taking ``**kwargs`` only, an unknown architecture).

    >>> sorted(forward_arguments(lambda input_ids, attention_mask=None, **kwargs: None))
    ['attention_mask', 'input_ids']
    """
    from ..helpers.compat import forward_parameters

    target = model if model is not None else causal_lm_class(config)
    if target is None:
        return None
    params = forward_parameters(target)
    if not params:
        return None
    names = {
        name
        for name, p in params.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name != "self"
    }
    return names or None


def _output_cache(outputs: Any) -> Any:
    for name in ("cache", "past_key_values", "cache_params"):
        value = getattr(outputs, name, None)
        if value is None and isinstance(outputs, dict):
            value = outputs.get(name, None)
        if value is not None:
            return value
    return None


def probe_cache(
    model: torch.nn.Module, batch_size: int, past_length: int, max_token_id: int
) -> Any:
    """
    Runs ``model`` (without gradients) on random tokens of shape
    ``(batch_size, past_length)`` with ``use_cache=True`` and returns the cache it
    creates, None if it returns none. The global random state is left unchanged.

    :raises TaskInputError: when the model fails, with its error

    >>> import transformers
    >>> config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, vocab_size=99)
    >>> cache = probe_cache(transformers.LlamaForCausalLM(config), 2, 5, 98)
    >>> cache.layers[0].keys.shape
    torch.Size([2, 1, 5, 16])
    """
    if not isinstance(model, torch.nn.Module):
        raise TaskInputError(f"probe_cache: model must be a torch.nn.Module, not {type(model)}")
    # a generator of its own: probing leaves the random state of the caller as it was
    generator = torch.Generator().manual_seed(past_length)
    ids = torch.randint(
        0, max_token_id + 1, (batch_size, past_length), dtype=torch.int64, generator=generator
    )
    device = next((p.device for p in model.parameters()), None)
    if device is not None:
        ids = ids.to(device)
    try:
        with torch.no_grad():
            outputs = model(input_ids=ids, use_cache=True)
            cache = _output_cache(outputs)
            if cache is None:
                cache = _generation_cache(model, ids)
    except Exception as e:
        raise TaskInputError(
            f"probe_cache: {type(model).__name__} fails on input_ids of shape "
            f"{tuple(ids.shape)} with use_cache=True: {type(e).__name__}: {e}"
        ) from e
    return cache


def _generation_cache(model: torch.nn.Module, ids: torch.Tensor) -> Any:
    """
    The cache ``generate`` gives a model returning none when it is given none (jamba,
    bamba, falcon_h1... before transformers 5 return a cache only if one was created
    beforehand, by ``prepare_inputs_for_generation``), after the model ran on ``ids``;
    None if ``prepare_inputs_for_generation`` makes no cache.
    """
    from ..helpers.compat import is_cache

    prepare = getattr(model, "prepare_inputs_for_generation", None)
    if not callable(prepare):
        return None
    try:
        prepared = prepare(
            ids,
            attention_mask=torch.ones_like(ids),
            use_cache=True,
            cache_position=torch.arange(ids.shape[1], device=ids.device),
        )
    except (TypeError, ValueError, AttributeError) as e:
        logger.info("probe_cache: prepare_inputs_for_generation fails: %s", e)
        return None
    if not isinstance(prepared, dict) or not any(is_cache(v) for v in prepared.values()):
        return None
    return _output_cache(model(**prepared))


def cache_leaves(cache: Any, where: str) -> list[torch.Tensor]:
    """
    The tensors of a cache in the canonical flattening
    (:mod:`onnx_diagnostic.torch_export_patches.serialization`).

    :raises TaskInputError: naming the class of the cache and of the layer this library cannot
        flatten (a cache class of one model, a layer class it does not know)
    """
    import torch.utils._pytree as pytree

    from ..cache_helpers import is_cache  # importing it registers the cache classes

    is_cache(cache)
    if type(cache) not in pytree.SUPPORTED_NODES:
        raise TaskInputError(
            f"{where}: the model creates a {type(cache).__module__}.{type(cache).__qualname__}, "
            "a cache class this library cannot flatten for torch.export"
        )
    try:
        leaves, _ = pytree.tree_flatten(cache)
    except TypeError as e:  # CacheSerializationError names the layer
        raise TaskInputError(f"{where}: {e}") from e
    if not all(isinstance(t, torch.Tensor) for t in leaves):
        raise TaskInputError(f"{where}: the cache holds values which are not tensors")
    return leaves


def has_recurrent_states(cache: Any) -> bool:
    """
    Tells if a cache has a layer keeping convolution or recurrent states (mamba, linear
    attention, ``LinearAttentionLayer`` and the hybrid layers of transformers >= 5):
    their models process one new token at a time once the prompt is processed.

    >>> import torch
    >>> from onnx_diagnostic.cache_helpers import make_dynamic_cache
    >>> has_recurrent_states(make_dynamic_cache([(torch.zeros(1, 1, 2, 4),) * 2]))
    False
    """
    from ..torch_export_patches._legacy_caches import is_legacy_cache

    if is_legacy_cache(cache):
        # the cache classes of transformers 4.x models: all of them hold states
        return True
    return any(
        hasattr(layer, "recurrent_states") or hasattr(layer, "conv_states")
        for layer in getattr(cache, "layers", None) or []
    )


def same_tensors_shapes(cache1: Any, cache2: Any) -> bool:
    """Tells if two caches have the same class and flatten into tensors of the same shapes."""
    if type(cache1) is not type(cache2):
        return False
    t1, t2 = cache_leaves(cache1, "cache1"), cache_leaves(cache2, "cache2")
    return len(t1) == len(t2) and all(a.shape == b.shape for a, b in zip(t1, t2))


def probe_dynamic_shapes(
    cache1: Any, cache2: Any, sizes1: tuple[int, int], sizes2: tuple[int, int]
) -> list[dict[int, str]]:
    """
    Dynamic shapes of a cache in the canonical flat layout, from two caches the model made
    for ``(batch, past_length)`` = ``sizes1`` and ``sizes2`` (every size differs): a
    dimension whose size differs is dynamic, named ``batch`` (first dimension),
    ``cache_length`` (the past length) or ``sliding_cache_length`` (any other length:
    a layer keeping part of the past).

    :raises TaskInputError: if both caches do not flatten into the same number of tensors of
        the same ranks

    >>> import torch
    >>> from onnx_diagnostic.cache_helpers import make_dynamic_cache
    >>> c1 = make_dynamic_cache([(torch.zeros(2, 1, 5, 4), torch.zeros(2, 1, 5, 4))])
    >>> c2 = make_dynamic_cache([(torch.zeros(3, 1, 6, 4), torch.zeros(3, 1, 6, 4))])
    >>> probe_dynamic_shapes(c1, c2, (2, 5), (3, 6))
    [{0: 'batch', 2: 'cache_length'}, {0: 'batch', 2: 'cache_length'}]
    """
    t1, t2 = cache_leaves(cache1, "cache"), cache_leaves(cache2, "cache (second set)")
    if len(t1) != len(t2):
        raise TaskInputError(
            f"the model makes caches of {len(t1)} and {len(t2)} tensors for "
            f"(batch, past_length)={sizes1} and {sizes2}"
        )
    shapes = []
    for i, (a, b) in enumerate(zip(t1, t2)):
        if a.dim() != b.dim():
            raise TaskInputError(f"cache tensor {i}: rank {a.dim()} vs {b.dim()}")
        ds: dict[int, str] = {}
        for d, (s1, s2) in enumerate(zip(a.shape, b.shape)):
            if s1 == s2:
                continue
            if d == 0 and (s1, s2) == (sizes1[0], sizes2[0]):
                ds[d] = BATCH
            elif (s1, s2) == (sizes1[1], sizes2[1]):
                ds[d] = CACHE
            else:
                ds[d] = SLIDING_CACHE
        shapes.append(ds)
    return shapes
