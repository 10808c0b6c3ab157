"""
Task ``zero-shot-image-classification``: a model embedding texts and images in the same
space and scoring every image against every text (``CLIPModel``, ``SiglipModel``,
``ChineseCLIPModel``, ``AltCLIPModel``, ``BlipModel``).

Inputs: ``input_ids`` and ``attention_mask`` (``batch`` texts of ``seq_length`` tokens),
``pixel_values`` (``image_batch`` images of the size the vision tower was built for, a static
size since the position embeddings are not interpolated). The number of texts, their
length and the number of images are dynamic and independent. SigLIP 2 is not supported:
it takes images already cut into patches with their layout (``spatial_shapes``).

>>> import transformers
>>> from onnx_diagnostic.tasks.zero_shot_image_classification import random_input_kwargs
>>> config = transformers.CLIPConfig(
...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...                      num_attention_heads=2, vocab_size=100),
...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...                        num_attention_heads=2, image_size=32, patch_size=16))
>>> kwargs, fct = random_input_kwargs(config)
>>> res = fct(None, config, add_second_input=True, **kwargs)
>>> res["dynamic_shapes"]["pixel_values"], res["dynamic_shapes"]["input_ids"]
({0: 'image_batch'}, {0: 'batch', 1: 'seq_length'})
>>> tuple(res["inputs2"]["pixel_values"].shape)
(4, 3, 32, 32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._common import BATCH, SEQ, TaskInputError, cfg_get, check_int, float_dtype, random_ids
from ._reduce import as_dict, merge_overrides, reduce_sizes, reduce_vocabulary
from ._vision import forward_parameters, image_hw, vision_config

__TASK__ = "zero-shot-image-classification"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForZeroShotImageClassification"
#: transformers' mapping from ``model_type`` to the class doing the task.
MAPPING = "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES"
#: Name of the dimension counting the images (independent from the number of texts).
IMAGE_BATCH = "image_batch"
#: Image size, in patches, of a reduced vision tower.
REDUCED_PATCHES = 2
#: Size of the shared embedding space of a reduced model.
REDUCED_PROJECTION = 32


def reduce_model_config(config: Any) -> dict[str, Any]:
    """
    Overrides giving a small model: text and vision towers of 2 layers, hidden size 64,
    images of 2x2 patches, vocabulary reduced as for a language model.

    >>> over = reduce_model_config({"projection_dim": 512,
    ...     "text_config": {"num_hidden_layers": 12, "hidden_size": 512,
    ...                     "num_attention_heads": 8, "vocab_size": 49408},
    ...     "vision_config": {"num_hidden_layers": 12, "hidden_size": 768,
    ...                       "num_attention_heads": 12, "image_size": 224, "patch_size": 32}})
    >>> over["projection_dim"], over["vision_config"]["image_size"]
    (32, 64)
    """
    d = as_dict(config)
    over: dict[str, Any] = {}
    for key in ("text_config", "vision_config"):
        if isinstance(d.get(key, None), dict):
            over[key] = reduce_sizes(d[key])
            for sub in ("projection_dim", "project_dim"):
                if isinstance(d[key].get(sub, None), int):
                    over[key][sub] = REDUCED_PROJECTION
    vision = d.get("vision_config", None)
    if isinstance(vision, dict) and isinstance(vision.get("patch_size", None), int):
        if vision.get("image_size", None) is not None:
            over["vision_config"]["image_size"] = REDUCED_PATCHES * vision["patch_size"]
    text = d.get("text_config", None)
    if isinstance(text, dict) and isinstance(text.get("projection_size", None), int):
        # SigLIP: the text head projects onto the hidden size of the vision tower
        hidden = over.get("vision_config", {}).get("hidden_size", None)
        over["text_config"]["projection_size"] = hidden or over["text_config"]["hidden_size"]
    for key in ("projection_dim", "image_text_hidden_size"):
        if isinstance(d.get(key, None), int):
            over[key] = REDUCED_PROJECTION
    return merge_overrides(over, reduce_vocabulary(d, ("text_config", "vocab_size")))


def _check_supported(model: Any, config: Any) -> None:
    params = forward_parameters(model, config, MAPPING)
    if params is not None and "spatial_shapes" in params:
        raise TaskInputError(
            "a model whose forward takes spatial_shapes (SigLIP 2) expects images cut into "
            "patches (pixel_values, pixel_attention_mask, spatial_shapes), not supported"
        )


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """Returns the default arguments of :func:`get_inputs`, and that function."""
    _check_supported(None, config)
    vision = vision_config(config)
    text = cfg_get(config, "text_config")
    height, width = image_hw(cfg_get(vision, "image_size"), "vision_config.image_size")
    kwargs = dict(
        batch_size=2,
        sequence_length=12,
        image_batch_size=3,
        dummy_max_token_id=int(cfg_get(text, "vocab_size")) - 1,
        height=height,
        width=width,
        num_channels=int(getattr(vision, "num_channels", None) or 3),
    )
    return kwargs, get_inputs


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    sequence_length: int = 12,
    image_batch_size: int = 3,
    dummy_max_token_id: int | None = None,
    height: int | None = None,
    width: int | None = None,
    num_channels: int | None = None,
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Builds random texts and images.

    :param model: the model, gives the dtype of the images if ``dtype`` is None
    :param config: its configuration, gives every value left to None
    :param batch_size: number of texts
    :param sequence_length: number of tokens of a text
    :param image_batch_size: number of images
    :param dummy_max_token_id: largest token id (``text_config.vocab_size - 1``)
    :param height: image height (``vision_config.image_size``)
    :param width: image width
    :param num_channels: number of channels
    :param dtype: dtype of the images
    :param add_second_input: also returns ``inputs2``, every dynamic dimension one larger
    :return: ``dict(inputs=, dynamic_shapes=)`` and ``inputs2``

    >>> res = get_inputs(None, None, dummy_max_token_id=9, height=8, width=8, num_channels=1)
    >>> tuple(res["inputs"]["input_ids"].shape), tuple(res["inputs"]["pixel_values"].shape)
    ((2, 12), (3, 1, 8, 8))
    """
    _check_supported(model, config)
    if None in (dummy_max_token_id, height, width, num_channels):
        if config is None:
            raise TaskInputError(
                "dummy_max_token_id, height, width, num_channels must be given when config is None"
            )
        defaults, _ = random_input_kwargs(config)
        height = defaults["height"] if height is None else height
        width = defaults["width"] if width is None else width
        num_channels = defaults["num_channels"] if num_channels is None else num_channels
        if dummy_max_token_id is None:
            dummy_max_token_id = defaults["dummy_max_token_id"]
    check_int("dummy_max_token_id", dummy_max_token_id, minimum=0)
    check_int("height", height)
    check_int("width", width)
    check_int("num_channels", num_channels)
    sizes = dict(
        batch_size=check_int("batch_size", batch_size),
        sequence_length=check_int("sequence_length", sequence_length),
        image_batch_size=check_int("image_batch_size", image_batch_size),
    )
    dtype = float_dtype(model, dtype)

    def _make(batch_size: int, sequence_length: int, image_batch_size: int) -> dict[str, Any]:
        return dict(
            input_ids=random_ids((batch_size, sequence_length), dummy_max_token_id),
            attention_mask=torch.ones((batch_size, sequence_length), dtype=torch.int64),
            pixel_values=torch.randn((image_batch_size, num_channels, height, width), dtype=dtype),
        )

    res: dict[str, Any] = dict(
        inputs=_make(**sizes),
        dynamic_shapes=dict(
            input_ids={0: BATCH, 1: SEQ},
            attention_mask={0: BATCH, 1: SEQ},
            pixel_values={0: IMAGE_BATCH},
        ),
    )
    if add_second_input:
        res["inputs2"] = _make(**{k: v + 1 for k, v in sizes.items()})
    return res
