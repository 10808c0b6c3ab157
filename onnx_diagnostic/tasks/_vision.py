"""
Pieces shared by the vision tasks (``object-detection``, ``zero-shot-image-classification``,
``mask-generation``): the image geometry of a configuration, the arguments the model's
``forward`` takes, shrinking a convolutional backbone.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ._common import TaskInputError, cfg_get


def image_hw(value: Any, name: str = "image_size") -> tuple[int, int]:
    """
    Returns ``(height, width)`` from an int or a pair (``image_size`` of a configuration).

    >>> image_hw(224), image_hw([512, 864])
    ((224, 224), (512, 864))
    """
    if isinstance(value, bool):
        raise TaskInputError(f"{name} must be an int or a pair of ints, not {value!r}")
    if isinstance(value, int):
        return value, value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise TaskInputError(f"{name} must be an int or a pair of ints, not {value!r}")


def model_class(config: Any, mapping_name: str) -> type | None:
    """
    Returns the class transformers' auto mapping ``mapping_name``
    (``MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES``...) associates to ``config.model_type``,
    None if the installed transformers does not know it.

    >>> import transformers
    >>> model_class(transformers.YolosConfig(), "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES")
    <class 'transformers.models.yolos.modeling_yolos.YolosForObjectDetection'>
    """
    import transformers
    from transformers.models.auto import modeling_auto

    names = getattr(modeling_auto, mapping_name, None) or {}
    model_type = (
        config.get("model_type", None)
        if isinstance(config, dict)
        else getattr(config, "model_type", None)
    )
    name = names.get(model_type, None)
    return None if name is None else getattr(transformers, name, None)


def forward_parameters(model: Any, config: Any, mapping_name: str) -> set[str] | None:
    """
    Returns the names of the arguments of the model's ``forward`` (of ``model`` if it is
    a module, of the class :func:`model_class` finds otherwise), None if unknown.

    >>> import transformers
    >>> "pixel_mask" in forward_parameters(
    ...     None, transformers.YolosConfig(), "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES")
    False
    """
    if isinstance(model, torch.nn.Module):
        fct = model.forward
    else:
        cls = None if config is None else model_class(config, mapping_name)
        if cls is None:
            return None
        fct = cls.forward
    return set(inspect.signature(fct).parameters)


def vision_config(config: Any) -> Any:
    """Returns ``config.vision_config`` (CLIP, SAM...), the error names the attribute."""
    if config is None:
        raise TaskInputError("config must be a transformers configuration, not None")
    return cfg_get(config, "vision_config")


def reduce_backbone(backbone: dict[str, Any]) -> dict[str, Any]:
    """
    Overrides shrinking a convolutional backbone configuration (ResNet like): one block
    per stage, narrow stages.

    >>> reduce_backbone({"depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048],
    ...                  "embedding_size": 64})
    {'depths': [1, 1, 1, 1], 'hidden_sizes': [16, 32, 64, 128], 'embedding_size': 16}
    """
    over: dict[str, Any] = {}
    if isinstance(backbone.get("depths", None), (list, tuple)):
        over["depths"] = [1 for _ in backbone["depths"]]
    if isinstance(backbone.get("hidden_sizes", None), (list, tuple)):
        over["hidden_sizes"] = [16 * 2**i for i in range(len(backbone["hidden_sizes"]))]
    if isinstance(backbone.get("embedding_size", None), int):
        over["embedding_size"] = 16
    return over
