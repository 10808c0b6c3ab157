"""
Task ``automatic-speech-recognition``: a speech encoder-decoder called with a cache
(``WhisperForConditionalGeneration``).

Inputs: ``input_features`` (batch, mel bins, ``2 * max_source_positions`` frames: Whisper
requires that exact length), ``decoder_input_ids`` (``seq_length`` new tokens),
the cache (``cache`` from transformers 5.24, ``past_key_values`` before), an
``EncoderDecoderCache``: ``cache_length`` tokens in the
self-attention part, ``max_source_positions`` encoded frames (static) in the cross-attention
part.

>>> import transformers
>>> from onnx_diagnostic.tasks.automatic_speech_recognition import random_input_kwargs
>>> config = transformers.WhisperConfig(
...     d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
...     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
...     max_source_positions=16, num_mel_bins=8, vocab_size=100)
>>> kwargs, fct = random_input_kwargs(config)
>>> res = fct(None, config, **kwargs)
>>> tuple(res["inputs"]["input_features"].shape)
(2, 8, 32)
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
from ._reduce import as_dict, reduce_decoder_config

__TASK__ = "automatic-speech-recognition"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForSpeechSeq2Seq"
#: Encoded frames of a reduced model.
REDUCED_SOURCE_POSITIONS = 32


def reduce_model_config(config: Any) -> dict[str, Any]:
    """
    Overrides giving a small model (2 layers each side, hidden size 64, 4 heads,
    32 encoded frames).
    """
    d = as_dict(config)
    over = reduce_decoder_config(d)
    if isinstance(d.get("max_source_positions", None), int):
        over["max_source_positions"] = min(d["max_source_positions"], REDUCED_SOURCE_POSITIONS)
    return over


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """Returns the default arguments of :func:`get_inputs`, and that function."""
    layers, heads, dim = decoder_geometry(config)
    kwargs = dict(
        batch_size=2,
        sequence_length=3,
        past_length=30,
        dummy_max_token_id=int(cfg_get(config, "vocab_size")) - 1,
        num_decoder_layers=layers,
        num_heads=heads,
        head_dim=dim,
        num_mel_bins=int(cfg_get(config, "num_mel_bins")),
        encoder_length=int(cfg_get(config, "max_source_positions")),
    )
    return kwargs, get_inputs


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    sequence_length: int = 3,
    past_length: int = 30,
    dummy_max_token_id: int | None = None,
    num_decoder_layers: int | None = None,
    num_heads: int | None = None,
    head_dim: int | None = None,
    num_mel_bins: int | None = None,
    encoder_length: int | None = None,
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Builds random inputs for a Whisper-like model called with a cache.

    :param model: the model, gives the dtype if ``dtype`` is None
    :param config: its configuration, gives every value left to None
    :param batch_size: batch size
    :param sequence_length: number of new decoder tokens
    :param past_length: number of decoder tokens in the self-attention cache
    :param dummy_max_token_id: largest token id (``vocab_size - 1``)
    :param num_decoder_layers: number of decoder layers (cache layers)
    :param num_heads: number of decoder heads
    :param head_dim: dimension of a head
    :param num_mel_bins: number of mel bins of ``input_features``
    :param encoder_length: number of encoded frames (``max_source_positions``),
        ``input_features`` has twice as many frames
    :param dtype: dtype of the features and of the cache
    :param add_second_input: also returns ``inputs2``, every dynamic dimension one larger
    :return: ``dict(inputs=, dynamic_shapes=)`` and ``inputs2``
    """
    needed = (dummy_max_token_id, num_decoder_layers, num_heads, head_dim)
    if None in needed or num_mel_bins is None or encoder_length is None:
        if config is None:
            raise TaskInputError("every size must be given when config is None")
        defaults, _ = random_input_kwargs(config)
        dummy_max_token_id = dummy_max_token_id or defaults["dummy_max_token_id"]
        num_decoder_layers = num_decoder_layers or defaults["num_decoder_layers"]
        num_heads = num_heads or defaults["num_heads"]
        head_dim = head_dim or defaults["head_dim"]
        num_mel_bins = num_mel_bins or defaults["num_mel_bins"]
        encoder_length = encoder_length or defaults["encoder_length"]
    for name, value in (
        ("dummy_max_token_id", dummy_max_token_id),
        ("num_decoder_layers", num_decoder_layers),
        ("num_heads", num_heads),
        ("head_dim", head_dim),
        ("num_mel_bins", num_mel_bins),
        ("encoder_length", encoder_length),
    ):
        check_int(name, value)
    sizes = dict(
        batch_size=check_int("batch_size", batch_size),
        sequence_length=check_int("sequence_length", sequence_length),
        past_length=check_int("past_length", past_length, minimum=0),
    )
    dtype = float_dtype(model, dtype)
    cache_name = cache_arg_name(model)

    def _make(batch_size: int, sequence_length: int, past_length: int) -> dict[str, Any]:
        return cache_alias_dict(
            dict(
                input_features=torch.randn(
                    (batch_size, num_mel_bins, 2 * encoder_length), dtype=dtype
                ),
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
            input_features={0: BATCH},
            decoder_input_ids={0: BATCH, 1: SEQ},
            **{
                cache_name: [
                    cache_shapes(num_decoder_layers, CACHE),
                    cache_shapes(num_decoder_layers, None),
                ]
            },
        ),
    )
    if add_second_input:
        res["inputs2"] = _make(**{k: v + 1 for k, v in sizes.items()})
    return res
