"""
Random inputs and dynamic shapes for a model, by task.

One module per task (``text_generation``, ``fill_mask``...). Each one offers
``random_input_kwargs(config) -> (kwargs, get_inputs)``,
``get_inputs(model, config, add_second_input=False, **kwargs) -> dict(inputs=,
dynamic_shapes=, inputs2=)`` and ``reduce_model_config(config) -> overrides``
(to build a small model of the same architecture).

Dimension names are strings (``batch``, ``seq_length``, ``cache_length``, ``cache+seq``),
see :func:`onnx_diagnostic.torch_export_patches.patch_inputs.use_dyn_not_str` to turn
them into :class:`torch.export.Dim`. Caches follow the canonical flat layout
``[key_0, value_0, key_1, value_1, ...]``.

>>> import transformers
>>> from onnx_diagnostic.tasks import random_input_kwargs
>>> config = transformers.LlamaConfig(
...     hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...     num_attention_heads=2, num_key_value_heads=1, vocab_size=100)
>>> kwargs, fct = random_input_kwargs(config, "text-generation")
>>> res = fct(None, config, add_second_input=True, **kwargs)
>>> res["dynamic_shapes"]["input_ids"]
{0: 'batch', 1: 'seq_length'}
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ._common import TaskInputError, check_inputs2

__all__ = [
    "TaskInputError",
    "check_inputs2",
    "get_task_module",
    "random_input_kwargs",
    "reduce_model_config",
    "supported_tasks",
]

_TASKS = {
    "automatic-speech-recognition": "automatic_speech_recognition",
    "feature-extraction": "feature_extraction",
    "fill-mask": "fill_mask",
    "image-classification": "image_classification",
    "image-text-to-text": "image_text_to_text",
    "mask-generation": "mask_generation",
    "object-detection": "object_detection",
    "sentence-similarity": "sentence_similarity",
    "summarization": "summarization",
    "text-classification": "text_classification",
    "text-generation": "text_generation",
    "text2text-generation": "text2text_generation",
    "zero-shot-image-classification": "zero_shot_image_classification",
}


def supported_tasks() -> list[str]:
    """
    Returns the tasks this package builds inputs for.

    >>> "text-generation" in supported_tasks()
    True
    """
    return sorted(_TASKS)


def get_task_module(task: str) -> ModuleType:
    """
    Returns the module implementing ``task``.

    >>> get_task_module("text-generation").__TASK__
    'text-generation'
    """
    if not isinstance(task, str) or task not in _TASKS:
        raise TaskInputError(
            f"task={task!r} is not supported, supported tasks: {supported_tasks()}"
        )
    return importlib.import_module(f"{__name__}.{_TASKS[task]}")


def random_input_kwargs(config: Any, task: str) -> tuple[dict[str, Any], Callable]:
    """
    Returns ``(kwargs, fct)``: ``fct(model, config, add_second_input=False, **kwargs)``
    builds random inputs for a model of configuration ``config`` doing ``task``,
    ``kwargs`` holds the default sizes (batch, sequence, cache) read from ``config``.

    :param config: a :epkg:`transformers` configuration
    :param task: a task in :func:`supported_tasks`
    :return: ``(kwargs, fct)``, ``fct`` returns ``dict(inputs=, dynamic_shapes=)``
        and ``inputs2`` when ``add_second_input=True``
    """
    return get_task_module(task).random_input_kwargs(config)


def reduce_model_config(config: Any, task: str) -> dict[str, Any]:
    """
    Returns the overrides to apply to ``config`` (a dictionary or a configuration)
    to build a small model of the same architecture for ``task``.

    >>> reduce_model_config({"num_hidden_layers": 12, "vocab_size": 100}, "text-generation")
    {'num_hidden_layers': 2}
    """
    return get_task_module(task).reduce_model_config(config)
