"""
Builds an untrained model of a model id, with inputs and dynamic shapes, offline.

>>> from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs
>>> data = get_untrained_model_with_inputs("arnir0/Tiny-LLM")
>>> data["task"], list(data["inputs"])[:3]
('text-generation', ['input_ids', 'attention_mask', 'position_ids'])

The cache is the fourth input, named as the model's ``forward`` declares it (``cache`` from
transformers 5.24, ``past_key_values`` before); the input dictionary also answers to the
other name (:class:`onnx_diagnostic.helpers.compat.CacheAliasDict`):

>>> data["inputs"]["past_key_values"] is data["inputs"]["cache"]
True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ...tasks import get_task_module
from ...tasks._reduce import as_dict, complete_layer_overrides, merge_overrides
from ..model_data import ModelData, weights_size
from .hub_api import (
    _shipped,
    _load_shipped,
    config_from_dict,
    load_config_dict,
    task_from_architecture,
)

logger = logging.getLogger(__name__)

__all__ = ["get_untrained_model_with_inputs"]


def _model_factory(config_dict: dict[str, Any], task: str) -> Callable[[Any], Any]:
    """Returns the class of the first architecture or ``AutoModel...from_config``."""
    import transformers

    archs = config_dict.get("architectures", None) or []
    for arch in archs:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    auto = get_task_module(task).AUTO_CLASS
    model_type = config_dict.get("model_type", None)
    if archs:
        logger.info(
            "transformers %s has no class %s, falls back on %s",
            transformers.__version__,
            archs,
            auto,
        )
    if auto is None:
        raise ValueError(
            f"transformers {transformers.__version__} has none of the classes {archs} "
            f"(model_type={model_type!r}) and task {task!r} has no default class"
        )
    return getattr(transformers, auto).from_config


def get_untrained_model_with_inputs(
    model_id: str,
    add_second_input: bool = False,
    same_as_trained: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    verbose: int = 0,
    config: Any = None,
    task: str | None = None,
    inputs_kwargs: dict[str, Any] | None = None,
    use_hub: bool = False,
    subfolder: str | None = None,
) -> ModelData:
    """
    Builds an untrained model with the architecture of ``model_id``, random inputs for its
    task and their dynamic shapes, without downloading anything.

    :param model_id: a shipped model id
        (:func:`onnx_diagnostic.torch_models.hghub.hub_api.shipped_model_ids`),
        or a local path to a ``config.json`` (or to a folder holding one)
    :param add_second_input: also returns ``inputs2``, a second set of inputs which
        differs from ``inputs`` in every dynamic dimension
    :param same_as_trained: keeps the sizes of the trained model (layers, hidden size,
        vocabulary...), by default the model is reduced to a few layers and small sizes
        (see :func:`onnx_diagnostic.tasks.reduce_model_config`)
    :param model_kwargs: attributes of the configuration to change, applied last
        (``{"num_hidden_layers": 1}``, ``{"text_config": {"num_hidden_layers": 1}}``)
    :param verbose: prints what it does if > 0
    :param config: the configuration to use instead of the shipped one
        (a :epkg:`transformers` configuration or a dictionary)
    :param task: the task, by default the one of ``model_id`` or guessed from the
        architecture
    :param inputs_kwargs: arguments of the function building the inputs
        (``{"batch_size": 1, "past_length": 8}``...)
    :param use_hub: asks the hub for the configuration of an id neither shipped nor
        local, only if ``HF_HUB_OFFLINE`` is not set
    :param subfolder: the configuration is in this subfolder of the local folder
        ``model_id`` (``<model_id>/<subfolder>/config.json``, the text encoder of a
        diffusion pipeline...); the shipped configurations have no subfolder, giving one
        with a shipped id (or with ``config``) raises ``ValueError``
    :return: a :class:`onnx_diagnostic.torch_models.model_data.ModelData` (it supports
        ``data["model"]``): model, inputs, dynamic_shapes, configuration, task, size
        (bytes), n_weights, inputs2, ``inputs_batch1`` (the inputs with a batch size of 1)
        and, for text-generation, ``inputs_empty_cache`` (the inputs with an empty cache,
        the first call of a generation)

    >>> data = get_untrained_model_with_inputs("google/gemma-3-1b-it", add_second_input=True)
    >>> data.configuration.num_hidden_layers, data.configuration.layer_types
    (2, ['sliding_attention', 'full_attention'])
    """
    for argname, value in (("model_kwargs", model_kwargs), ("inputs_kwargs", inputs_kwargs)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(
                f"get_untrained_model_with_inputs: {argname} must be a dict or None, "
                f"not {type(value).__name__}"
            )
        if value and not all(isinstance(k, str) for k in value):
            raise TypeError(
                f"get_untrained_model_with_inputs: the keys of {argname} must be strings, "
                f"got {sorted(map(repr, value))}"
            )
    config_id = _with_subfolder(model_id, subfolder, config)
    if config is not None:
        config_dict = dict(as_dict(config))
    else:
        config_dict = load_config_dict(config_id, use_hub=use_hub)
    if task is None:
        if config is None and subfolder is None and model_id in _shipped():
            task = _load_shipped(model_id)["task"]
        else:
            archs = config_dict.get("architectures", None) or []
            if not archs:
                raise ValueError(
                    f"the configuration of {model_id!r} has no 'architectures', "
                    f"the task cannot be guessed, pass task=..."
                )
            task = task_from_architecture(archs[0], config_dict.get("model_type", None))
    module = get_task_module(task)
    if verbose:
        print(f"[get_untrained_model_with_inputs] model_id={model_id!r}, task={task!r}")
    if not same_as_trained:
        overrides = module.reduce_model_config(config_dict)
        if verbose:
            print(f"[get_untrained_model_with_inputs] reduces the model with {overrides}")
        config_dict = merge_overrides(config_dict, overrides)
    if model_kwargs:
        config_dict = merge_overrides(
            config_dict, complete_layer_overrides(config_dict, model_kwargs)
        )
    configuration = config_from_dict(config_dict)
    factory = _model_factory(config_dict, task)
    model = factory(configuration)
    if verbose:
        print(f"[get_untrained_model_with_inputs] creates {type(model).__name__}")
    model.eval()
    kwargs, fct = module.random_input_kwargs(configuration)
    if inputs_kwargs:
        unknown = set(inputs_kwargs) - set(kwargs)
        if unknown:
            raise TypeError(
                f"inputs_kwargs has unexpected keys {sorted(unknown)} for task {task!r}, "
                f"expected some of {sorted(kwargs)}"
            )
        kwargs.update(inputs_kwargs)
    res = fct(model, configuration, add_second_input=add_second_input, **kwargs)
    inputs_batch1 = None
    if "batch_size" in kwargs:
        inputs_batch1 = fct(model, configuration, **{**kwargs, "batch_size": 1})["inputs"]
    inputs_empty_cache = None
    if task == "text-generation" and "past_length" in kwargs:
        inputs_empty_cache = fct(model, configuration, **{**kwargs, "past_length": 0})["inputs"]
    size, n_weights = weights_size(model)
    if verbose:
        print(
            f"[get_untrained_model_with_inputs] done, {n_weights} weights, "
            f"{size / 2**20:.1f} Mb, inputs {sorted(res['inputs'])}"
        )
    return ModelData(
        model=model,
        inputs=res["inputs"],
        dynamic_shapes=res["dynamic_shapes"],
        configuration=configuration,
        task=task,
        model_id=model_id,
        size=size,
        n_weights=n_weights,
        inputs2=res.get("inputs2", None),
        inputs_batch1=inputs_batch1,
        inputs_empty_cache=inputs_empty_cache,
    )


def _with_subfolder(model_id: str, subfolder: str | None, config: Any) -> str:
    """Returns where to read the configuration of ``model_id`` in ``subfolder``."""
    if subfolder is None:
        return model_id
    if not isinstance(subfolder, str) or not subfolder or os.path.isabs(subfolder):
        raise ValueError(
            f"get_untrained_model_with_inputs: subfolder must be a non empty relative "
            f"path, not {subfolder!r}"
        )
    if config is not None:
        raise ValueError(
            f"get_untrained_model_with_inputs: subfolder={subfolder!r} cannot be used with "
            "config, the configuration is already given"
        )
    if model_id in _shipped():
        raise ValueError(
            f"get_untrained_model_with_inputs: subfolder={subfolder!r} but {model_id!r} is a "
            "shipped model id, shipped configurations have no subfolder; give the local "
            "folder holding <subfolder>/config.json as model_id"
        )
    if not isinstance(model_id, str) or not os.path.isdir(model_id):
        raise ValueError(
            f"get_untrained_model_with_inputs: subfolder={subfolder!r} needs model_id to be "
            f"a local folder, {model_id!r} is not one"
        )
    path = os.path.join(model_id, subfolder)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"get_untrained_model_with_inputs: no config.json in subfolder={subfolder!r} "
            f"of {model_id!r} (looked for {os.path.join(path, 'config.json')!r})"
        )
    return path
