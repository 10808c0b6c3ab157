"""
Task ``object-detection``: a detector returning boxes and classes
(``DetrForObjectDetection``, ``ConditionalDetrForObjectDetection``,
``DeformableDetrForObjectDetection``, ``TableTransformerForObjectDetection``,
``RTDetrForObjectDetection``, ``YolosForObjectDetection``).

Inputs: ``pixel_values`` of shape (batch, channels, height, width) and, when the model's
``forward`` takes it (every detector above but YOLOS), ``pixel_mask`` of shape
(batch, height, width), all ones. The batch is dynamic, height and width too for the
architectures built on a convolutional backbone (DETR, Conditional DETR, Table Transformer,
RT-DETR), their positional encodings being computed from the feature map. They stay static
for YOLOS (its position embeddings are interpolated to the size of the image it was
exported with), for Deformable DETR (torch.export bounds the height by the example's) and
for an RT-DETR whose anchors were precomputed for ``anchor_image_size``.
The eager RT-DETR runs on both sets of inputs but torch.export (transformers 4.57 and
5.24) specializes its batch dimension: the code of the model, not the inputs, prevents a
dynamic batch there.

>>> import transformers
>>> from onnx_diagnostic.tasks.object_detection import random_input_kwargs
>>> config = transformers.YolosConfig(
...     hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
...     image_size=[32, 48], patch_size=16, num_detection_tokens=5)
>>> kwargs, fct = random_input_kwargs(config)
>>> res = fct(None, config, add_second_input=True, **kwargs)
>>> tuple(res["inputs"]["pixel_values"].shape), res["dynamic_shapes"]
((2, 3, 32, 48), {'pixel_values': {0: 'batch'}})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._common import BATCH, TaskInputError, check_int, float_dtype
from ._reduce import HIDDEN, Replace, as_dict, reduce_sizes
from ._vision import forward_parameters, image_hw, reduce_backbone

__TASK__ = "object-detection"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForObjectDetection"
#: transformers' mapping from ``model_type`` to the class doing the task.
MAPPING = "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES"
#: Names of the image dimensions.
HEIGHT = "height"
WIDTH = "width"
#: Image size of a model with a convolutional backbone (the configuration has none).
DEFAULT_IMAGE_SIZE = 224
#: Image size, in patches, of a reduced YOLOS.
REDUCED_PATCHES = (2, 3)
#: Queries (detected objects) of a reduced model.
REDUCED_QUERIES = 10
#: Architectures whose image size is fixed by their configuration.
#: (``deformable_detr``: torch.export adds a guard bounding the height by the one of the
#: example, the exported program fails on taller images).
_STATIC_IMAGE = ("yolos", "deformable_detr")


def _model_type(config: Any) -> str | None:
    if isinstance(config, dict):
        return config.get("model_type", None)
    return getattr(config, "model_type", None)


def _small_resnet(num_feature_levels: int) -> Replace:
    """A small ResNet backbone giving the last ``num_feature_levels`` stages (3 at most)."""
    n = max(1, min(num_feature_levels, 3))
    return Replace(
        model_type="resnet",
        depths=[1, 1, 1, 1],
        hidden_sizes=[16, 32, 64, 128],
        embedding_size=16,
        out_features=[f"stage{i}" for i in range(5 - n, 5)],
    )


def reduce_model_config(config: Any) -> dict[str, Any]:
    """
    Overrides giving a small model: 2 layers on each side, hidden size 64, 10 queries,
    a ResNet backbone of one block per stage (it replaces a timm backbone, timm may not be
    installed and the backbone would not be small), a YOLOS seeing images of 2x3 patches.

    >>> over = reduce_model_config({"model_type": "detr", "d_model": 256,
    ...     "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
    ...     "num_queries": 100, "use_timm_backbone": True, "backbone": "resnet50"})
    >>> over["num_queries"], over["use_timm_backbone"], over["backbone_config"]["model_type"]
    (10, False, 'resnet')
    """
    d = as_dict(config)
    over = reduce_sizes(d)
    for key in ("num_queries", "num_detection_tokens"):
        if isinstance(d.get(key, None), int) and d[key] > REDUCED_QUERIES:
            over[key] = REDUCED_QUERIES
    if d.get("image_size", None) is not None and isinstance(d.get("patch_size", None), int):
        over["image_size"] = [n * d["patch_size"] for n in REDUCED_PATCHES]
    backbone = d.get("backbone_config", None)
    timm = d.get("use_timm_backbone", False) or (
        isinstance(backbone, dict) and backbone.get("model_type", None) == "timm_backbone"
    )
    if timm or (backbone is None and "backbone" in d):
        levels = d.get("num_feature_levels", None) or 1
        over["backbone_config"] = _small_resnet(levels)
        for key, value in (
            ("use_timm_backbone", False),
            ("use_pretrained_backbone", False),
            ("backbone", None),
            ("backbone_kwargs", None),
        ):
            if key in d:
                over[key] = value
    elif isinstance(backbone, dict) and "stage_out_channels" not in backbone:
        # a ResNet like backbone (RT-DETR), not an HGNet one (D-FINE) left as it is
        over["backbone_config"] = reduce_backbone(backbone)
        hidden = over["backbone_config"].get("hidden_sizes", None)
        indices = backbone.get("out_indices", None)
        if hidden and indices and isinstance(d.get("encoder_in_channels", None), list):
            # the channels of the stages the encoder reads (stage 0 is the stem)
            over["encoder_in_channels"] = [hidden[i - 1] for i in indices]
    if isinstance(d.get("encoder_hidden_dim", None), int):
        over["encoder_hidden_dim"] = HIDDEN
    if isinstance(d.get("decoder_in_channels", None), list):
        over["decoder_in_channels"] = [HIDDEN for _ in d["decoder_in_channels"]]
    return over


def dynamic_image(config: Any) -> bool:
    """
    Tells if height and width can be dynamic: not for YOLOS (see the module docstring)
    nor for a model with precomputed anchors (``anchor_image_size``).

    >>> import transformers
    >>> dynamic_image(transformers.YolosConfig()), dynamic_image({"model_type": "detr"})
    (False, True)
    """
    if _model_type(config) in _STATIC_IMAGE:
        return False
    anchors = (
        config.get("anchor_image_size", None)
        if isinstance(config, dict)
        else getattr(config, "anchor_image_size", None)
    )
    return anchors is None


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """Returns the default arguments of :func:`get_inputs`, and that function."""
    if config is None:
        raise TaskInputError("config must be a transformers configuration, not None")
    size = getattr(config, "image_size", None) or getattr(config, "anchor_image_size", None)
    height, width = image_hw(size or DEFAULT_IMAGE_SIZE)
    kwargs = dict(
        batch_size=2,
        height=height,
        width=width,
        num_channels=int(getattr(config, "num_channels", None) or 3),
        dynamic_image=dynamic_image(config),
    )
    return kwargs, get_inputs


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    height: int | None = None,
    width: int | None = None,
    num_channels: int | None = None,
    dynamic_image: bool | None = None,
    with_pixel_mask: bool | None = None,
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Builds random images for a detector.

    :param model: the model, gives the dtype if ``dtype`` is None and tells if its
        ``forward`` takes ``pixel_mask``
    :param config: its configuration, gives every value left to None
    :param batch_size: batch size
    :param height: image height
    :param width: image width
    :param num_channels: number of channels
    :param dynamic_image: height and width are dynamic (:func:`dynamic_image`)
    :param with_pixel_mask: adds ``pixel_mask``, by default when the model's ``forward``
        takes it
    :param dtype: dtype of the images
    :param add_second_input: also returns ``inputs2``, one more image, 32 more pixels in
        height and width when they are dynamic
    :return: ``dict(inputs=, dynamic_shapes=)`` and ``inputs2``

    >>> import transformers
    >>> res = get_inputs(None, transformers.DetrConfig(use_timm_backbone=False),
    ...                  height=64, width=96)
    >>> res["dynamic_shapes"]["pixel_mask"]
    {0: 'batch', 1: 'height', 2: 'width'}
    """
    if None in (height, width, num_channels, dynamic_image):
        if config is None:
            raise TaskInputError(
                "height, width, num_channels and dynamic_image must be given when config is None"
            )
        defaults, _ = random_input_kwargs(config)
        height = defaults["height"] if height is None else height
        width = defaults["width"] if width is None else width
        num_channels = defaults["num_channels"] if num_channels is None else num_channels
        if dynamic_image is None:
            dynamic_image = defaults["dynamic_image"]
    if with_pixel_mask is None:
        params = forward_parameters(model, config, MAPPING)
        with_pixel_mask = params is None or "pixel_mask" in params
    sizes = dict(
        batch=check_int("batch_size", batch_size),
        height=check_int("height", height),
        width=check_int("width", width),
    )
    check_int("num_channels", num_channels)
    dtype = float_dtype(model, dtype)

    def _make(batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
        inputs = dict(pixel_values=torch.randn((batch, num_channels, height, width), dtype=dtype))
        if with_pixel_mask:
            inputs["pixel_mask"] = torch.ones((batch, height, width), dtype=torch.int64)
        return inputs

    image_ds = {0: BATCH, 2: HEIGHT, 3: WIDTH} if dynamic_image else {0: BATCH}
    ds: dict[str, Any] = dict(pixel_values=image_ds)
    if with_pixel_mask:
        ds["pixel_mask"] = {0: BATCH, 1: HEIGHT, 2: WIDTH} if dynamic_image else {0: BATCH}
    res: dict[str, Any] = dict(inputs=_make(**sizes), dynamic_shapes=ds)
    if add_second_input:
        step = 32 if dynamic_image else 0
        res["inputs2"] = _make(sizes["batch"] + 1, sizes["height"] + step, sizes["width"] + step)
    return res
