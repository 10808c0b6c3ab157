"""
Inputs shared by the tasks running a text encoder once, without cache
(``feature-extraction``, ``fill-mask``, ``text-classification``, ``sentence-similarity``):
``input_ids``, ``attention_mask`` and ``token_type_ids`` when the model takes them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ._common import BATCH, SEQ, TaskInputError, cfg_get, check_int, random_ids, text_config


def takes_token_type_ids(model: Any, config: Any) -> bool:
    """Tells if the model (or a model of this configuration) takes ``token_type_ids``."""
    if isinstance(model, torch.nn.Module):
        return "token_type_ids" in inspect.signature(model.forward).parameters
    return getattr(config, "type_vocab_size", None) is not None


def encoder_input_kwargs(config: Any) -> dict[str, Any]:
    """Default arguments of :func:`get_encoder_inputs` for ``config``."""
    cfg = text_config(config)
    return dict(
        batch_size=2,
        sequence_length=8,
        dummy_max_token_id=int(cfg_get(cfg, "vocab_size")) - 1,
    )


def get_encoder_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    sequence_length: int = 8,
    dummy_max_token_id: int | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Random ``input_ids``, ``attention_mask`` (and ``token_type_ids``) of shape
    ``(batch_size, sequence_length)``, dynamic in both dimensions.
    ``inputs2`` (if ``add_second_input``) has both dimensions one larger.
    """
    if dummy_max_token_id is None:
        if config is None:
            raise TaskInputError("dummy_max_token_id must be given when config is None")
        dummy_max_token_id = int(cfg_get(text_config(config), "vocab_size")) - 1
    check_int("dummy_max_token_id", dummy_max_token_id, minimum=0)
    sizes = dict(
        batch_size=check_int("batch_size", batch_size),
        sequence_length=check_int("sequence_length", sequence_length),
    )
    with_types = takes_token_type_ids(model, config)

    def _make(batch_size: int, sequence_length: int) -> dict[str, torch.Tensor]:
        shape = (batch_size, sequence_length)
        inputs = dict(
            input_ids=random_ids(shape, dummy_max_token_id),
            attention_mask=torch.ones(shape, dtype=torch.int64),
        )
        if with_types:
            inputs["token_type_ids"] = torch.zeros(shape, dtype=torch.int64)
        return inputs

    res: dict[str, Any] = dict(
        inputs=_make(**sizes),
        dynamic_shapes={k: {0: BATCH, 1: SEQ} for k in _make(1, 1)},
    )
    if add_second_input:
        res["inputs2"] = _make(**{k: v + 1 for k, v in sizes.items()})
    return res


def reduce_encoder_config(config: Any) -> dict[str, Any]:
    """Overrides giving a small encoder (2 layers, hidden size 64, 4 heads)."""
    from ._reduce import reduce_decoder_config

    return reduce_decoder_config(config)


def random_encoder_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """Returns the default arguments of :func:`get_encoder_inputs`, and that function."""
    return encoder_input_kwargs(config), get_encoder_inputs
