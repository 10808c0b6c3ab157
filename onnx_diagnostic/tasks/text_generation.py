"""
Task ``text-generation``: a decoder-only language model called with a cache
(``LlamaForCausalLM``, ``Phi3ForCausalLM``, ``GPT2LMHeadModel``...).

Inputs: ``input_ids``, ``attention_mask`` (covering the cache and the new tokens),
``position_ids`` and the cache, a ``DynamicCache`` with sliding layers where
``config.layer_types`` says so (named as the
model's ``forward`` declares it: ``cache`` from transformers 5.24, ``past_key_values``
before, see :func:`onnx_diagnostic.helpers.compat.cache_arg_name`).

>>> import transformers
>>> from onnx_diagnostic.tasks.text_generation import random_input_kwargs
>>> config = transformers.LlamaConfig(
...     hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...     num_attention_heads=2, num_key_value_heads=1, vocab_size=100)
>>> kwargs, fct = random_input_kwargs(config)
>>> res = fct(None, config, **kwargs)
>>> from onnx_diagnostic.helpers.compat import cache_arg_name
>>> sorted(res["inputs"]) == sorted(
...     ['attention_mask', 'input_ids', 'position_ids', cache_arg_name()])
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import _common
from ..helpers.compat import cache_alias_dict, cache_arg_name
from ._common import (
    BATCH,
    CACHE,
    CACHE_SEQ,
    SEQ,
    TaskInputError,
    cache_shapes,
    cfg_get,
    check_int,
    float_dtype,
    random_ids,
    random_kv_pairs,
    text_config,
)
from ._reduce import reduce_decoder_config

__TASK__ = "text-generation"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForCausalLM"


def reduce_model_config(config: Any) -> dict[str, Any]:
    """
    Returns the attributes to change in ``config`` to get a small model of the same
    architecture (2 layers, hidden size 64, 4 heads...), see
    :func:`onnx_diagnostic.tasks._reduce.reduce_decoder_config`.
    """
    return reduce_decoder_config(config)


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """
    Returns the default arguments of :func:`get_inputs` for this configuration
    and :func:`get_inputs` itself.
    """
    cfg = text_config(config)
    num_layers = int(cfg_get(cfg, "num_hidden_layers"))
    kwargs = dict(
        batch_size=2,
        sequence_length=3,
        past_length=30,
        dummy_max_token_id=int(cfg_get(cfg, "vocab_size")) - 1,
        num_hidden_layers=num_layers,
        num_key_value_heads=_common.num_key_value_heads(cfg),
        head_dim=_common.head_dim(cfg),
        layer_types=_common.layer_types(cfg, num_layers),
        sliding_window=getattr(cfg, "sliding_window", None),
    )
    return kwargs, get_inputs


def _sliding_layers(layer_types: Sequence[str] | None) -> list[bool]:
    """Which layers are sliding (or chunked) attention layers."""
    return [t != "full_attention" for t in (layer_types or [])]


def _make_inputs(
    batch_size: int,
    sequence_length: int,
    past_length: int,
    dummy_max_token_id: int,
    num_hidden_layers: int,
    num_key_value_heads: int,
    head_dim: int,
    layer_types: Sequence[str] | None,
    sliding_window: int | None,
    dtype: torch.dtype,
    cache_name: str,
) -> dict[str, Any]:
    from ..cache_helpers import make_dynamic_cache

    total = past_length + sequence_length
    position_ids = torch.arange(past_length, total, dtype=torch.int64)
    pairs = random_kv_pairs(
        num_hidden_layers, batch_size, num_key_value_heads, past_length, head_dim, dtype
    )
    sliding = _sliding_layers(layer_types)
    if any(sliding) and not all(sliding):
        # A sliding layer holds at most sliding_window - 1 positions, a full one all of them:
        # the inputs are a state generate reaches, the two lengths get two dimensions
        held = max(min(past_length, int(sliding_window or 1) - 1), 0)
        pairs = [
            (k[:, :, past_length - held :], v[:, :, past_length - held :]) if s else (k, v)
            for (k, v), s in zip(pairs, sliding)
        ]
    return cache_alias_dict(
        dict(
            input_ids=random_ids((batch_size, sequence_length), dummy_max_token_id),
            attention_mask=torch.ones((batch_size, total), dtype=torch.int64),
            position_ids=position_ids.unsqueeze(0).expand((batch_size, -1)).contiguous(),
            **{
                cache_name: make_dynamic_cache(
                    pairs, layer_types=layer_types, sliding_window=sliding_window
                )
            },
        )
    )


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    sequence_length: int = 3,
    past_length: int = 30,
    dummy_max_token_id: int | None = None,
    num_hidden_layers: int | None = None,
    num_key_value_heads: int | None = None,
    head_dim: int | None = None,
    layer_types: Sequence[str] | None = None,
    sliding_window: int | None = None,
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Builds random inputs for a decoder-only model called with a cache.

    :param model: the model, only used to pick the dtype of the cache if ``dtype``
        is None (may be None: float32)
    :param config: its configuration, gives every value left to None
    :param batch_size: batch size
    :param sequence_length: number of new tokens
    :param past_length: number of tokens already in the cache (0 for an empty cache)
    :param dummy_max_token_id: largest token id to draw (``vocab_size - 1``)
    :param num_hidden_layers: number of layers of the cache
    :param num_key_value_heads: number of heads of the cache
    :param head_dim: last dimension of the cache
    :param layer_types: ``full_attention`` or ``sliding_attention`` for every layer,
        None for all full attention layers
    :param sliding_window: window of the sliding layers
    :param dtype: dtype of the cache
    :param add_second_input: also returns ``inputs2``, a second set of inputs with
        every dynamic dimension one larger (batch included)
    :return: ``dict(inputs=..., dynamic_shapes=...)`` (and ``inputs2``)

    >>> import transformers
    >>> from onnx_diagnostic.helpers import string_type
    >>> config = transformers.LlamaConfig(
    ...     hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...     num_attention_heads=2, num_key_value_heads=1, vocab_size=100)
    >>> res = get_inputs(None, config, past_length=5)
    >>> string_type(res["inputs"], with_shape=True)  # doctest: +ELLIPSIS
    'dict(input_ids:T7s2x3,attention_mask:T7s2x8,position_ids:T7s2x3,...:DynamicCache(...'
    """
    cfg = None if config is None else text_config(config)

    def _from_config(value: Any, name: str, fct: Callable) -> Any:
        if value is not None:
            return value
        if cfg is None:
            raise TaskInputError(f"{name} must be given when config is None")
        return fct(cfg)

    dummy_max_token_id = _from_config(
        dummy_max_token_id, "dummy_max_token_id", lambda c: int(cfg_get(c, "vocab_size")) - 1
    )
    num_hidden_layers = _from_config(
        num_hidden_layers, "num_hidden_layers", lambda c: int(cfg_get(c, "num_hidden_layers"))
    )
    num_key_value_heads = _from_config(
        num_key_value_heads, "num_key_value_heads", _common.num_key_value_heads
    )
    head_dim = _from_config(head_dim, "head_dim", _common.head_dim)
    if layer_types is None and cfg is not None:
        layer_types = _common.layer_types(cfg, num_hidden_layers)
    if sliding_window is None and cfg is not None and layer_types is not None:
        sliding_window = getattr(cfg, "sliding_window", None)
    sizes = dict(
        batch_size=check_int("batch_size", batch_size),
        sequence_length=check_int("sequence_length", sequence_length),
        past_length=check_int("past_length", past_length, minimum=0),
    )
    check_int("dummy_max_token_id", dummy_max_token_id, minimum=0)
    check_int("num_hidden_layers", num_hidden_layers)
    check_int("num_key_value_heads", num_key_value_heads)
    check_int("head_dim", head_dim)
    if layer_types is not None and len(layer_types) != num_hidden_layers:
        raise TaskInputError(
            f"layer_types has {len(layer_types)} elements but num_hidden_layers={num_hidden_layers}"
        )
    sliding = _sliding_layers(layer_types)
    if all(sliding) and sliding:
        # a cache made of sliding layers only tells how many positions it holds, not how many
        # tokens were seen: the inputs must not be past the window
        longest = past_length + (1 if add_second_input else 0)
        if not isinstance(sliding_window, int) or sliding_window <= longest:
            raise TaskInputError(
                f"past_length={past_length} (+1 for inputs2) must be smaller than "
                f"sliding_window={sliding_window!r}: a sliding layer keeps fewer tokens"
            )
    common = dict(
        dummy_max_token_id=dummy_max_token_id,
        num_hidden_layers=num_hidden_layers,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        layer_types=layer_types,
        sliding_window=sliding_window,
        dtype=float_dtype(model, dtype),
        cache_name=cache_arg_name(model),
    )
    res = dict(
        inputs=_make_inputs(**sizes, **common),
        dynamic_shapes=dict(
            input_ids={0: BATCH, 1: SEQ},
            attention_mask={0: BATCH, 1: CACHE_SEQ},
            position_ids={0: BATCH, 1: SEQ},
            **{
                common["cache_name"]: cache_shapes(
                    num_hidden_layers, CACHE, sliding if any(sliding) and not all(sliding) else None
                )
            },
        ),
    )
    if add_second_input:
        res["inputs2"] = _make_inputs(**{k: v + 1 for k, v in sizes.items()}, **common)
    return res
