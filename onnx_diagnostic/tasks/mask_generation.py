"""
Task ``mask-generation``: a promptable segmentation model (``SamModel``, ``SamHQModel``,
``Sam2Model``) returning masks for points or boxes given on an image.

Inputs: ``pixel_values`` (batch, channels, image_size, image_size) at the size of the
model (static, SAM refuses any other size), and the prompts: ``input_points``
(batch, point_batch, points, 2) with ``input_labels`` (batch, point_batch, points), or
``input_boxes`` (batch, boxes, 4). The batch, the number of prompts per image
(``point_batch``) and the number of points per prompt (``num_points``) are dynamic.

>>> import transformers
>>> from onnx_diagnostic.tasks.mask_generation import get_inputs
>>> res = get_inputs(None, None, image_size=32, num_channels=3)
>>> {k: tuple(v.shape) for k, v in res["inputs"].items()}
{'pixel_values': (2, 3, 32, 32), 'input_points': (2, 2, 3, 2), 'input_labels': (2, 2, 3)}
>>> res["dynamic_shapes"]["input_points"]
{0: 'batch', 1: 'point_batch', 2: 'num_points'}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._common import BATCH, TaskInputError, cfg_get, check_int, float_dtype
from ._reduce import as_dict, reduce_sizes
from ._vision import image_hw, vision_config

__TASK__ = "mask-generation"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForMaskGeneration"
#: Names of the dimensions of the prompts.
POINT_BATCH = "point_batch"
NUM_POINTS = "num_points"
#: The kinds of prompts :func:`get_inputs` builds.
PROMPTS = ("points", "boxes")
#: Image size of a reduced model.
REDUCED_IMAGE_SIZE = 64
#: Hidden size of the prompt encoder and the mask decoder of a reduced model.
REDUCED_PROMPT_HIDDEN = 32


def _reduce_hiera(backbone: dict[str, Any]) -> dict[str, Any]:
    """
    Overrides shrinking the Hiera backbone of SAM 2: one block per stage, two for the one
    before last, whose second block does global attention (the first block of a stage
    pools the queries and must attend within windows).
    """
    stages = len(backbone.get("blocks_per_stage", None) or [1, 2, 7, 2])
    blocks = [1] * stages
    blocks[max(stages - 2, 0)] = 2
    return dict(
        hidden_size=16,
        num_attention_heads=1,
        image_size=[REDUCED_IMAGE_SIZE, REDUCED_IMAGE_SIZE],
        blocks_per_stage=blocks,
        embed_dim_per_stage=[16 * 2**i for i in range(stages)],
        num_attention_heads_per_stage=[1] * stages,
        window_size_per_stage=[2] * stages,
        window_positional_embedding_background_size=[2, 2],
        global_attention_blocks=[sum(blocks[: max(stages - 1, 1)]) - 1],
    )


def reduce_model_config(config: Any) -> dict[str, Any]:
    """
    Overrides giving a small model: images of 64 pixels, a vision encoder of 2 layers
    (SAM) or 4 stages of one or two blocks (SAM 2), prompt encoder and mask decoder of
    hidden size 32.

    >>> over = reduce_model_config({"model_type": "sam",
    ...     "vision_config": {"hidden_size": 768, "num_hidden_layers": 12,
    ...         "num_attention_heads": 12, "image_size": 1024, "patch_size": 16,
    ...         "output_channels": 256, "global_attn_indexes": [2, 5, 8, 11]},
    ...     "prompt_encoder_config": {"hidden_size": 256, "image_size": 1024,
    ...         "patch_size": 16, "image_embedding_size": 64},
    ...     "mask_decoder_config": {"hidden_size": 256}})
    >>> over["vision_config"]["image_size"], over["prompt_encoder_config"]
    (64, {'hidden_size': 32, 'image_size': 64, 'image_embedding_size': 4})
    """
    d = as_dict(config)
    over: dict[str, Any] = {}
    vision = d.get("vision_config", None)
    if not isinstance(vision, dict):
        return over
    patch = 16
    if isinstance(vision.get("backbone_config", None), dict):
        # SAM 2: Hiera backbone then a feature pyramid, the image shrinks 4x, then 2x per stage
        backbone = vision["backbone_config"]
        hiera = _reduce_hiera(backbone)
        stages = len(hiera["blocks_per_stage"])
        stride = (backbone.get("patch_stride", None) or [4, 4])[0]
        sizes = [REDUCED_IMAGE_SIZE // stride // 2**i for i in range(stages)]
        levels = int(vision.get("num_feature_levels", None) or 3)
        over["vision_config"] = dict(
            backbone_config=hiera,
            backbone_channel_list=list(reversed(hiera["embed_dim_per_stage"])),
            backbone_feature_sizes=[[s, s] for s in sizes[:levels]],
            fpn_hidden_size=REDUCED_PROMPT_HIDDEN,
        )
        patch = REDUCED_IMAGE_SIZE // sizes[levels - 1]
    else:
        over["vision_config"] = reduce_sizes(vision)
        over["vision_config"]["image_size"] = REDUCED_IMAGE_SIZE
        patch = int(vision.get("patch_size", None) or patch)
        for key, value in (
            ("output_channels", REDUCED_PROMPT_HIDDEN),
            ("mlp_dim", 128),
            ("window_size", 2),
            ("global_attn_indexes", [1]),
            ("num_pos_feats", REDUCED_PROMPT_HIDDEN // 2),
        ):
            if key in vision:
                over["vision_config"][key] = value
    prompt = d.get("prompt_encoder_config", None)
    if isinstance(prompt, dict):
        over["prompt_encoder_config"] = dict(
            hidden_size=REDUCED_PROMPT_HIDDEN, image_size=REDUCED_IMAGE_SIZE
        )
        if "image_embedding_size" in prompt:
            over["prompt_encoder_config"]["image_embedding_size"] = REDUCED_IMAGE_SIZE // patch
    decoder = d.get("mask_decoder_config", None)
    if isinstance(decoder, dict):
        over["mask_decoder_config"] = dict(hidden_size=REDUCED_PROMPT_HIDDEN)
        for key, value in (
            ("mlp_dim", 2 * REDUCED_PROMPT_HIDDEN),
            ("iou_head_hidden_dim", REDUCED_PROMPT_HIDDEN),
            ("vit_dim", over["vision_config"].get("hidden_size", None)),
        ):
            if key in decoder and value is not None:
                over["mask_decoder_config"][key] = value
    return over


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """Returns the default arguments of :func:`get_inputs`, and that function."""
    vision = vision_config(config)
    size = getattr(vision, "image_size", None)
    if size is None and getattr(vision, "backbone_config", None) is not None:
        size = getattr(vision.backbone_config, "image_size", None)
    if size is None:
        size = cfg_get(cfg_get(config, "prompt_encoder_config"), "image_size")
    height, width = image_hw(size, "vision_config.image_size")
    if height != width:
        raise TaskInputError(f"vision_config.image_size={size!r} must be a square")
    kwargs = dict(
        batch_size=2,
        point_batch_size=2,
        num_points=3,
        image_size=height,
        num_channels=int(getattr(vision, "num_channels", None) or 3),
        prompt="points",
    )
    return kwargs, get_inputs


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    point_batch_size: int = 2,
    num_points: int = 3,
    image_size: int | None = None,
    num_channels: int | None = None,
    prompt: str = "points",
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Builds a random image and random prompts.

    :param model: the model, gives the dtype if ``dtype`` is None
    :param config: its configuration, gives the image size and the channels
    :param batch_size: number of images
    :param point_batch_size: number of prompts (masks to predict) per image
    :param num_points: points per prompt (``prompt="points"``)
    :param image_size: height and width of the images, the model's size
    :param num_channels: channels of the images
    :param prompt: ``"points"`` (``input_points`` and ``input_labels``) or ``"boxes"``
        (``input_boxes``, ``point_batch_size`` boxes per image)
    :param dtype: dtype of the images and the coordinates
    :param add_second_input: also returns ``inputs2``, every dynamic dimension one larger
    :return: ``dict(inputs=, dynamic_shapes=)`` and ``inputs2``

    >>> res = get_inputs(None, None, image_size=32, num_channels=3, prompt="boxes")
    >>> tuple(res["inputs"]["input_boxes"].shape), res["dynamic_shapes"]["input_boxes"]
    ((2, 2, 4), {0: 'batch', 1: 'point_batch'})
    """
    if prompt not in PROMPTS:
        raise TaskInputError(f"prompt={prompt!r} must be one of {PROMPTS}")
    if image_size is None or num_channels is None:
        if config is None:
            raise TaskInputError("image_size and num_channels must be given when config is None")
        defaults, _ = random_input_kwargs(config)
        image_size = defaults["image_size"] if image_size is None else image_size
        num_channels = defaults["num_channels"] if num_channels is None else num_channels
    check_int("image_size", image_size)
    check_int("num_channels", num_channels)
    sizes = dict(
        batch=check_int("batch_size", batch_size),
        point_batch=check_int("point_batch_size", point_batch_size),
        points=check_int("num_points", num_points),
    )
    dtype = float_dtype(model, dtype)

    def _make(batch: int, point_batch: int, points: int) -> dict[str, torch.Tensor]:
        inputs = dict(
            pixel_values=torch.randn((batch, num_channels, image_size, image_size), dtype=dtype)
        )
        if prompt == "points":
            inputs["input_points"] = torch.rand((batch, point_batch, points, 2), dtype=dtype)
            inputs["input_points"] *= image_size
            inputs["input_labels"] = torch.randint(0, 2, (batch, point_batch, points))
        else:
            corner = torch.rand((batch, point_batch, 2), dtype=dtype) * (image_size / 2)
            inputs["input_boxes"] = torch.cat([corner, corner + image_size / 2], dim=-1)
        return inputs

    ds: dict[str, Any] = dict(pixel_values={0: BATCH})
    if prompt == "points":
        ds["input_points"] = {0: BATCH, 1: POINT_BATCH, 2: NUM_POINTS}
        ds["input_labels"] = {0: BATCH, 1: POINT_BATCH, 2: NUM_POINTS}
    else:
        ds["input_boxes"] = {0: BATCH, 1: POINT_BATCH}
    res: dict[str, Any] = dict(inputs=_make(**sizes), dynamic_shapes=ds)
    if add_second_input:
        res["inputs2"] = _make(**{k: v + 1 for k, v in sizes.items()})
    return res
