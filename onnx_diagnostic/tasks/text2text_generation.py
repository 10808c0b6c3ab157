"""
Task ``text2text-generation``: an encoder-decoder called with a cache
(``T5ForConditionalGeneration``, ``BartForConditionalGeneration``).

Inputs: ``input_ids`` and ``attention_mask`` (encoder side, ``encoder_length`` tokens),
``decoder_input_ids`` (``seq_length`` new tokens), the cache (named as the
model's ``forward`` declares it: ``cache`` from transformers 5.24, ``past_key_values``
before, see :func:`onnx_diagnostic.helpers.compat.cache_arg_name`), an
``EncoderDecoderCache`` whose self-attention part holds ``cache_length`` tokens and whose
cross-attention part holds the ``encoder_length`` encoded tokens. Its dynamic shapes
follow the canonical layout: ``[[self key_0, self value_0, ...], [cross key_0, ...]]``.

>>> import transformers
>>> from onnx_diagnostic.tasks.text2text_generation import random_input_kwargs
>>> config = transformers.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
>>> kwargs, fct = random_input_kwargs(config)
>>> res = fct(None, config, **kwargs)
>>> from onnx_diagnostic.helpers.compat import cache_arg_name
>>> sorted(res["inputs"]) == sorted(
...     ['attention_mask', 'decoder_input_ids', 'input_ids', cache_arg_name()])
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..helpers.compat import cache_alias_dict, cache_arg_name
from ._common import (
    BATCH,
    CACHE,
    SEQ,
    TaskInputError,
    cache_shapes,
    cfg_get,
    check_int,
    decoder_geometry,
    float_dtype,
    make_encoder_decoder_cache,
    random_ids,
)
from ._reduce import reduce_decoder_config

__TASK__ = "text2text-generation"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForSeq2SeqLM"
#: Name of the encoder sequence dimension.
ENCODER_SEQ = "encoder_length"


def reduce_model_config(config: Any) -> dict[str, Any]:
    """Overrides giving a small model (2 layers each side, hidden size 64, 4 heads)."""
    return reduce_decoder_config(config)


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """Returns the default arguments of :func:`get_inputs`, and that function."""
    layers, heads, dim = decoder_geometry(config)
    kwargs = dict(
        batch_size=2,
        encoder_length=12,
        sequence_length=3,
        past_length=30,
        dummy_max_token_id=int(cfg_get(config, "vocab_size")) - 1,
        num_decoder_layers=layers,
        num_heads=heads,
        head_dim=dim,
    )
    return kwargs, get_inputs


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    encoder_length: int = 12,
    sequence_length: int = 3,
    past_length: int = 30,
    dummy_max_token_id: int | None = None,
    num_decoder_layers: int | None = None,
    num_heads: int | None = None,
    head_dim: int | None = None,
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Builds random inputs for an encoder-decoder called with a cache.

    :param model: the model, gives the dtype of the cache if ``dtype`` is None
    :param config: its configuration, gives every value left to None
    :param batch_size: batch size
    :param encoder_length: number of tokens given to the encoder
    :param sequence_length: number of new decoder tokens
    :param past_length: number of decoder tokens in the self-attention cache
    :param dummy_max_token_id: largest token id (``vocab_size - 1``)
    :param num_decoder_layers: number of decoder layers (cache layers)
    :param num_heads: number of decoder heads
    :param head_dim: dimension of a head
    :param dtype: dtype of the cache
    :param add_second_input: also returns ``inputs2``, every dynamic dimension one larger
    :return: ``dict(inputs=, dynamic_shapes=)`` and ``inputs2``
    """
    if None in (dummy_max_token_id, num_decoder_layers, num_heads, head_dim):
        if config is None:
            raise TaskInputError(
                "dummy_max_token_id, num_decoder_layers, num_heads, head_dim "
                "must be given when config is None"
            )
        layers, heads, dim = decoder_geometry(config)
        num_decoder_layers = num_decoder_layers or layers
        num_heads = num_heads or heads
        head_dim = head_dim or dim
        if dummy_max_token_id is None:
            dummy_max_token_id = int(cfg_get(config, "vocab_size")) - 1
    check_int("dummy_max_token_id", dummy_max_token_id, minimum=0)
    for name, value in (
        ("num_decoder_layers", num_decoder_layers),
        ("num_heads", num_heads),
        ("head_dim", head_dim),
    ):
        check_int(name, value)
    sizes = dict(
        batch_size=check_int("batch_size", batch_size),
        encoder_length=check_int("encoder_length", encoder_length),
        sequence_length=check_int("sequence_length", sequence_length),
        past_length=check_int("past_length", past_length, minimum=0),
    )
    dtype = float_dtype(model, dtype)
    cache_name = cache_arg_name(model)

    def _make(
        batch_size: int, encoder_length: int, sequence_length: int, past_length: int
    ) -> dict[str, Any]:
        return cache_alias_dict(
            dict(
                input_ids=random_ids((batch_size, encoder_length), dummy_max_token_id),
                attention_mask=torch.ones((batch_size, encoder_length), dtype=torch.int64),
                decoder_input_ids=random_ids((batch_size, sequence_length), dummy_max_token_id),
                **{
                    cache_name: make_encoder_decoder_cache(
                        num_decoder_layers,
                        batch_size,
                        num_heads,
                        past_length,
                        encoder_length,
                        head_dim,
                        dtype,
                    )
                },
            )
        )

    res: dict[str, Any] = dict(
        inputs=_make(**sizes),
        dynamic_shapes=dict(
            input_ids={0: BATCH, 1: ENCODER_SEQ},
            attention_mask={0: BATCH, 1: ENCODER_SEQ},
            decoder_input_ids={0: BATCH, 1: SEQ},
            **{
                cache_name: [
                    cache_shapes(num_decoder_layers, CACHE),
                    cache_shapes(num_decoder_layers, ENCODER_SEQ),
                ]
            },
        ),
    )
    if add_second_input:
        res["inputs2"] = _make(**{k: v + 1 for k, v in sizes.items()})
    return res
