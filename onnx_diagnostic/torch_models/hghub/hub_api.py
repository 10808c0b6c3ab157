"""
Configurations and tasks of model ids, offline.

The configurations of popular model ids ship with the package
(``configs/<owner>__<name>.json``: the published ``config.json`` and the task).
Nothing here reaches the network unless ``use_hub=True`` is passed *and*
``HF_HUB_OFFLINE`` is not set.

>>> from onnx_diagnostic.torch_models.hghub.hub_api import get_pretrained_config, task_from_id
>>> config = get_pretrained_config("arnir0/Tiny-LLM")
>>> config.hidden_size, task_from_id("arnir0/Tiny-LLM")
(192, 'text-generation')
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "UnknownModelIdError",
    "config_from_dict",
    "get_pretrained_config",
    "load_config_dict",
    "shipped_model_ids",
    "task_from_architecture",
    "task_from_id",
]

_CONFIGS = os.path.join(os.path.dirname(__file__), "configs")

#: Architecture suffixes and the task they do (first match wins).
_ARCH_TASKS = (
    ("ForConditionalGeneration", None),  # depends on the model, see task_from_architecture
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForMaskedLM", "fill-mask"),
    ("ForSequenceClassification", "text-classification"),
    ("ForImageClassification", "image-classification"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ("ForImageTextToText", "image-text-to-text"),
    ("Model", "feature-extraction"),
)
_CONDITIONAL_GENERATION = {
    "whisper": "automatic-speech-recognition",
    "t5": "text2text-generation",
    "bart": "text2text-generation",
    "mbart": "text2text-generation",
    "marian": "text2text-generation",
    "pegasus": "text2text-generation",
}


class UnknownModelIdError(KeyError):
    """Raised when a model id is neither shipped with the package nor a local path."""

    def __str__(self) -> str:
        return str(self.args[0])


def _file_name(model_id: str) -> str:
    return model_id.replace("/", "__") + ".json"


@functools.cache
def _shipped() -> dict[str, str]:
    res = {}
    for name in os.listdir(_CONFIGS):
        if name.endswith(".json"):
            with open(os.path.join(_CONFIGS, name), encoding="utf-8") as f:
                data = json.load(f)
            res[data["model_id"]] = os.path.join(_CONFIGS, name)
    return res


@functools.cache
def _load_shipped(model_id: str) -> dict[str, Any]:
    with open(_shipped()[model_id], encoding="utf-8") as f:
        return json.load(f)


def shipped_model_ids(task: str | None = None) -> list[str]:
    """
    Returns the model ids whose configuration ships with the package, sorted,
    only those doing ``task`` if it is not None.

    >>> "arnir0/Tiny-LLM" in shipped_model_ids("text-generation")
    True
    """
    ids = sorted(_shipped())
    if task is None:
        return ids
    return [i for i in ids if _load_shipped(i)["task"] == task]


def _hub_allowed(use_hub: bool) -> bool:
    if not use_hub:
        return False
    return os.environ.get("HF_HUB_OFFLINE", "0") in ("", "0") and os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) in ("", "0")


def _unknown(model_id: str) -> UnknownModelIdError:
    return UnknownModelIdError(
        f"model_id={model_id!r} is not shipped with onnx_diagnostic and is not a local "
        f"path to a config.json or to a folder holding one. Either pass a configuration: "
        f"get_untrained_model_with_inputs({model_id!r}, config=transformers.AutoConfig."
        f"from_pretrained(...)) or get_untrained_model_with_inputs('/path/to/config.json'), "
        f"or allow the hub with use_hub=True (HF_HUB_OFFLINE must not be set). "
        f"{len(_shipped())} model ids are shipped, see shipped_model_ids()."
    )


def _local_config_file(model_id: str) -> str | None:
    if os.path.isfile(model_id) and model_id.endswith(".json"):
        return model_id
    if os.path.isdir(model_id) and os.path.isfile(os.path.join(model_id, "config.json")):
        return os.path.join(model_id, "config.json")
    return None


def load_config_dict(model_id: str, use_hub: bool = False) -> dict[str, Any]:
    """
    Returns the content of ``config.json`` for ``model_id`` (a copy): the shipped one,
    a local file (``model_id`` may be the path of a ``config.json`` or of a folder
    holding one), or, if ``use_hub`` and the network is allowed, the one on the hub.

    :raises UnknownModelIdError: the configuration cannot be found offline

    >>> load_config_dict("arnir0/Tiny-LLM")["model_type"]
    'llama'
    """
    if not isinstance(model_id, str) or not model_id:
        raise TypeError(f"model_id must be a non empty string, not {model_id!r}")
    if model_id in _shipped():
        return copy.deepcopy(_load_shipped(model_id)["config"])
    local = _local_config_file(model_id)
    if local is not None:
        with open(local, encoding="utf-8") as f:
            data = json.load(f)
        # a shipped-like file stores the configuration under "config"
        return data["config"] if "config" in data and "model_id" in data else data
    if _hub_allowed(use_hub):
        import transformers

        logger.info("downloads the configuration of %r", model_id)
        d, _ = transformers.PretrainedConfig.get_config_dict(model_id)
        return d
    raise _unknown(model_id)


def config_from_dict(config_dict: dict[str, Any]) -> Any:
    """
    Builds the :epkg:`transformers` configuration of class ``CONFIG_MAPPING[model_type]``
    from a dictionary (``config.json``).

    >>> config_from_dict({"model_type": "llama", "hidden_size": 64,
    ...                   "num_attention_heads": 4}).head_dim
    16
    """
    from transformers import CONFIG_MAPPING, __version__

    model_type = config_dict.get("model_type", None)
    if model_type is None:
        raise ValueError(f"config_dict has no 'model_type', keys are {sorted(config_dict)}")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"model_type={model_type!r} is unknown to the installed transformers {__version__}"
        )
    from ...helpers.compat import complete_token_ids

    d = {k: v for k, v in config_dict.items() if k != "model_type"}
    return complete_token_ids(CONFIG_MAPPING[model_type].from_dict(d))


def get_pretrained_config(model_id: str, use_hub: bool = False, **kwargs: Any) -> Any:
    """
    Returns the configuration of ``model_id`` without downloading anything
    (see :func:`load_config_dict` for the places it looks at).

    :param model_id: a shipped model id (:func:`shipped_model_ids`) or a local path
    :param use_hub: asks the hub for an id neither shipped nor local,
        only if ``HF_HUB_OFFLINE`` is not set
    :param kwargs: attributes to change (``num_hidden_layers=1``...)
    :return: a configuration (``transformers.LlamaConfig``...)

    >>> get_pretrained_config("arnir0/Tiny-LLM", num_hidden_layers=2).num_hidden_layers
    2
    """
    d = load_config_dict(model_id, use_hub=use_hub)
    d.update(kwargs)
    return config_from_dict(d)


def task_from_architecture(architecture: str, model_type: str | None = None) -> str:
    """
    Guesses the task of an architecture name (``LlamaForCausalLM`` -> ``text-generation``).

    >>> task_from_architecture("BertForMaskedLM")
    'fill-mask'
    """
    for suffix, task in _ARCH_TASKS:
        if architecture.endswith(suffix):
            if task is not None:
                return task
            if model_type in _CONDITIONAL_GENERATION:
                return _CONDITIONAL_GENERATION[model_type]
            return "image-text-to-text"
    raise ValueError(f"cannot guess the task of architecture {architecture!r}")


def task_from_id(model_id: str, use_hub: bool = False) -> str:
    """
    Returns the task of a model id: the shipped one, or the one guessed from the
    architecture of a local configuration, or the hub's ``pipeline_tag`` if ``use_hub``
    and the network is allowed.

    >>> task_from_id("arnir0/Tiny-LLM")
    'text-generation'
    """
    if isinstance(model_id, str) and model_id in _shipped():
        return _load_shipped(model_id)["task"]
    if isinstance(model_id, str) and _local_config_file(model_id) is None and _hub_allowed(use_hub):
        import huggingface_hub

        tag = huggingface_hub.model_info(model_id).pipeline_tag
        if tag:
            return tag
    d = load_config_dict(model_id, use_hub=use_hub)
    archs = d.get("architectures", None) or []
    if not archs:
        raise ValueError(f"configuration of {model_id!r} has no architectures, task unknown")
    return task_from_architecture(archs[0], d.get("model_type", None))
