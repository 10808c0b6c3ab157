"""
Task ``image-text-to-text``: a vision-language model called with a cache
(``Gemma3ForConditionalGeneration``).

Inputs: ``input_ids`` (``seq_length`` new tokens, the first ones are the
``mm_tokens_per_image`` placeholders of one image per sample), ``attention_mask``
(cache and new tokens), ``position_ids``, ``pixel_values`` (one image per sample, static
size) and the cache (``cache`` from transformers 5.24, ``past_key_values`` before; a
``DynamicCache`` of the language model, sliding layers
included). There is no ``token_type_ids``: transformers 4.57 indexes it with the positions
of the cache (it expects the images in the first call, without cache) and fails, without it
the image placeholders attend to each other causally.

>>> from onnx_diagnostic.tasks.image_text_to_text import reduce_model_config
>>> over = reduce_model_config({"model_type": "gemma3", "mm_tokens_per_image": 256,
...     "text_config": {"num_hidden_layers": 34, "hidden_size": 2560,
...                     "num_attention_heads": 8, "vocab_size": 1000},
...     "vision_config": {"image_size": 896, "patch_size": 14, "hidden_size": 1152,
...                       "num_attention_heads": 16, "num_hidden_layers": 27}})
>>> over["mm_tokens_per_image"], over["vision_config"]["image_size"]
(4, 56)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import text_generation
from ._common import (
    BATCH,
    TaskInputError,
    cfg_get,
    check_int,
    float_dtype,
    text_config,
)
from ._reduce import as_dict, merge_overrides, reduce_sizes, reduce_vocabulary

__TASK__ = "image-text-to-text"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForImageTextToText"
#: Image tokens per image of a reduced model (a square).
REDUCED_IMAGE_TOKENS = 4


def reduce_model_config(config: Any) -> dict[str, Any]:
    """
    Overrides giving a small model: the language model as for ``text-generation``,
    a vision tower of 2 layers, hidden size 64, seeing images of 4x4 patches pooled into
    4 tokens.
    """
    d = as_dict(config)
    over: dict[str, Any] = {}
    if isinstance(d.get("text_config", None), dict):
        over["text_config"] = reduce_sizes(d["text_config"])
    vision = d.get("vision_config", None)
    if isinstance(vision, dict):
        over["vision_config"] = reduce_sizes(vision)
        tokens = d.get("mm_tokens_per_image", None)
        patch = vision.get("patch_size", None)
        if isinstance(tokens, int) and isinstance(patch, int):
            side = int(REDUCED_IMAGE_TOKENS**0.5)
            # 4x4 patches, average-pooled 2x2 into 2x2 tokens
            over["mm_tokens_per_image"] = REDUCED_IMAGE_TOKENS
            over["vision_config"]["image_size"] = patch * side * 2
    over = merge_overrides(over, reduce_vocabulary(d, ("text_config", "vocab_size")))
    return over


def _image_token_id(config: Any) -> int:
    return int(cfg_get(config, "image_token_id", "image_token_index"))


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """Returns the default arguments of :func:`get_inputs`, and that function."""
    kwargs, _ = text_generation.random_input_kwargs(config)
    vision = cfg_get(config, "vision_config")
    tokens = int(cfg_get(config, "mm_tokens_per_image"))
    image_size = cfg_get(vision, "image_size")
    kwargs.update(
        dict(
            sequence_length=tokens + 3,
            image_tokens=tokens,
            image_token_id=_image_token_id(config),
            image_size=int(image_size),
            num_channels=int(getattr(vision, "num_channels", None) or 3),
        )
    )
    kwargs["dummy_max_token_id"] = min(kwargs["dummy_max_token_id"], kwargs["image_token_id"] - 1)
    return kwargs, get_inputs


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    sequence_length: int | None = None,
    past_length: int = 30,
    image_tokens: int | None = None,
    image_token_id: int | None = None,
    image_size: int | None = None,
    num_channels: int | None = None,
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
    **cache_kwargs: Any,
) -> dict[str, Any]:
    """
    Builds random inputs for a vision-language model called with a cache.

    :param model: the model, gives the dtype if ``dtype`` is None
    :param config: its configuration, gives every value left to None
    :param batch_size: batch size (one image per sample)
    :param sequence_length: number of new tokens, at least ``image_tokens + 1``
    :param past_length: number of tokens in the cache
    :param image_tokens: number of placeholders of an image (``mm_tokens_per_image``)
    :param image_token_id: id of the placeholder
    :param image_size: height and width of the images
    :param num_channels: channels of the images
    :param dtype: dtype of the images and the cache
    :param add_second_input: also returns ``inputs2``, every dynamic dimension one larger
    :param cache_kwargs: geometry of the cache (``num_hidden_layers``,
        ``num_key_value_heads``, ``head_dim``, ``layer_types``, ``sliding_window``,
        ``dummy_max_token_id``), see :func:`onnx_diagnostic.tasks.text_generation.get_inputs`
    :return: ``dict(inputs=, dynamic_shapes=)`` and ``inputs2``
    """
    if None in (sequence_length, image_tokens, image_token_id, image_size, num_channels):
        if config is None:
            raise TaskInputError("every size must be given when config is None")
        defaults, _ = random_input_kwargs(config)
        image_tokens = image_tokens or defaults["image_tokens"]
        sequence_length = sequence_length or image_tokens + 3
        image_token_id = (
            image_token_id if image_token_id is not None else defaults["image_token_id"]
        )
        image_size = image_size or defaults["image_size"]
        num_channels = num_channels or defaults["num_channels"]
        if cache_kwargs.get("dummy_max_token_id", None) is None:
            cache_kwargs["dummy_max_token_id"] = defaults["dummy_max_token_id"]
    check_int("image_tokens", image_tokens)
    check_int("image_size", image_size)
    check_int("num_channels", num_channels)
    check_int("image_token_id", image_token_id, minimum=0)
    check_int("sequence_length", sequence_length, minimum=image_tokens + 1)
    max_id = cache_kwargs.get("dummy_max_token_id", None)
    if max_id is not None and max_id >= image_token_id:
        raise TaskInputError(
            f"dummy_max_token_id={max_id} must be smaller than image_token_id={image_token_id}"
        )
    dtype = float_dtype(model, dtype)
    lm_config = None if config is None else text_config(config)
    res = text_generation.get_inputs(
        model,
        lm_config,
        batch_size=batch_size,
        sequence_length=sequence_length,
        past_length=past_length,
        dtype=dtype,
        add_second_input=add_second_input,
        **cache_kwargs,
    )

    def _complete(inputs: dict[str, Any]) -> dict[str, Any]:
        batch = inputs["input_ids"].shape[0]
        inputs["input_ids"][:, :image_tokens] = image_token_id
        inputs["pixel_values"] = torch.randn(
            (batch, num_channels, image_size, image_size), dtype=dtype
        )
        return inputs

    res["inputs"] = _complete(res["inputs"])
    if "inputs2" in res:
        res["inputs2"] = _complete(res["inputs2"])
    res["dynamic_shapes"]["pixel_values"] = {0: BATCH}
    return res
