"""
Task ``image-classification``: an image classifier (``ViTForImageClassification``,
``ResNetForImageClassification``).

Inputs: ``pixel_values`` of shape (batch, channels, image_size, image_size), dynamic in
batch only (a ViT needs the image size it was built for).

>>> import transformers
>>> from onnx_diagnostic.tasks.image_classification import random_input_kwargs
>>> config = transformers.ViTConfig(
...     hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...     num_attention_heads=2, image_size=32, patch_size=16)
>>> kwargs, fct = random_input_kwargs(config)
>>> res = fct(None, config, add_second_input=True, **kwargs)
>>> tuple(res["inputs"]["pixel_values"].shape), res["dynamic_shapes"]
((2, 3, 32, 32), {'pixel_values': {0: 'batch'}})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._common import BATCH, TaskInputError, check_int, float_dtype
from ._reduce import as_dict, reduce_decoder_config

__TASK__ = "image-classification"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForImageClassification"
#: Image size of a reduced model (when the configuration has one).
REDUCED_IMAGE_SIZE = 32
#: Image size used when the configuration has none (convolutional networks).
DEFAULT_IMAGE_SIZE = 224


def reduce_model_config(config: Any) -> dict[str, Any]:
    """
    Overrides giving a small model: 2 layers, hidden size 64, images of 32 pixels
    for a transformer; one block per stage and narrow stages for a convolutional network.
    """
    d = as_dict(config)
    over = reduce_decoder_config(d)
    if isinstance(d.get("image_size", None), int) and isinstance(d.get("patch_size", None), int):
        over["image_size"] = max(REDUCED_IMAGE_SIZE, 2 * d["patch_size"])
    if isinstance(d.get("depths", None), list):
        over["depths"] = [1 for _ in d["depths"]]
    if isinstance(d.get("hidden_sizes", None), list):
        over["hidden_sizes"] = [16 * 2**i for i in range(len(d["hidden_sizes"]))]
    if isinstance(d.get("embedding_size", None), int):
        over["embedding_size"] = 16
    return over


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """Returns the default arguments of :func:`get_inputs`, and that function."""
    image_size = getattr(config, "image_size", None) or DEFAULT_IMAGE_SIZE
    if isinstance(image_size, (tuple, list)):
        image_size = image_size[0]
    kwargs = dict(
        batch_size=2,
        image_size=int(image_size),
        num_channels=int(getattr(config, "num_channels", None) or 3),
    )
    return kwargs, get_inputs


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    image_size: int | None = None,
    num_channels: int | None = None,
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Builds random images.

    :param model: the model, gives the dtype if ``dtype`` is None
    :param config: its configuration, gives the image size and the channels
    :param batch_size: batch size
    :param image_size: height and width
    :param num_channels: number of channels
    :param dtype: dtype of the images
    :param add_second_input: also returns ``inputs2`` with one more image
    :return: ``dict(inputs=, dynamic_shapes=)`` and ``inputs2``
    """
    if image_size is None or num_channels is None:
        if config is None:
            raise TaskInputError("image_size and num_channels must be given when config is None")
        defaults, _ = random_input_kwargs(config)
        image_size = image_size or defaults["image_size"]
        num_channels = num_channels or defaults["num_channels"]
    check_int("image_size", image_size)
    check_int("num_channels", num_channels)
    check_int("batch_size", batch_size)
    dtype = float_dtype(model, dtype)

    def _make(batch: int) -> dict[str, torch.Tensor]:
        return dict(
            pixel_values=torch.randn((batch, num_channels, image_size, image_size), dtype=dtype)
        )

    res: dict[str, Any] = dict(
        inputs=_make(batch_size), dynamic_shapes=dict(pixel_values={0: BATCH})
    )
    if add_second_input:
        res["inputs2"] = _make(batch_size + 1)
    return res
