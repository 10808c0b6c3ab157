"""
Small helpers on :epkg:`transformers` configurations: :func:`update_config` (nested updates,
the way ``--mop`` options and ``model_options`` change a configuration),
:func:`config_class_from_architecture`, :func:`check_hasattr`, :func:`pick`.

>>> import transformers
>>> from onnx_diagnostic.helpers.config_helper import update_config
>>> config = transformers.LlamaConfig(num_hidden_layers=4)
>>> update_config(config, {"num_hidden_layers": 1})
>>> config.num_hidden_layers
1
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

import transformers

__all__ = ["check_hasattr", "config_class_from_architecture", "pick", "update_config"]


def _is_config(obj: Any) -> bool:
    return isinstance(obj, transformers.PretrainedConfig)


def update_config(config: Any, mkwargs: Mapping[str, Any], _path: str = "config") -> None:
    """
    Updates a configuration (a :class:`transformers.PretrainedConfig` or a dictionary) in
    place with the values of ``mkwargs``. A dictionary value updates a nested configuration
    or a nested dictionary key by key (``{"text_config": {"num_hidden_layers": 1}}``), or
    becomes the attribute if there is none (or it is None). ``attn_implementation`` sets
    ``config._attn_implementation``. ``mkwargs`` is not modified; a nested dictionary of the
    configuration is replaced by an updated copy, not modified.

    :param config: the configuration to update
    :param mkwargs: the new values, possibly nested
    :raises TypeError: if a dictionary is given for an attribute which is neither a
        configuration nor a dictionary (the message names it, ``config.rope_theta``)

    >>> import transformers
    >>> config = transformers.LlamaConfig(num_hidden_layers=4)
    >>> update_config(config, {"attn_implementation": "eager", "vocab_size": 128})
    >>> config._attn_implementation, config.vocab_size
    ('eager', 128)
    """
    if config is None or not (_is_config(config) or isinstance(config, dict)):
        raise TypeError(
            f"update_config: {_path} must be a transformers configuration or a dict, "
            f"not {type(config).__name__}"
        )
    if not isinstance(mkwargs, Mapping):
        raise TypeError(f"update_config: mkwargs must be a dict, not {type(mkwargs).__name__}")
    is_dict = isinstance(config, dict)
    for key, value in mkwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"update_config: mkwargs has a key {key!r} which is no string")
        if key == "attn_implementation" and not is_dict:
            config._attn_implementation = value
            if getattr(config, "_attn_implementation_autoset", False):
                config._attn_implementation_autoset = False
            continue
        existing = config.get(key) if is_dict else getattr(config, key, None)
        path = f"{_path}[{key!r}]" if is_dict else f"{_path}.{key}"
        if isinstance(value, Mapping) and existing is not None:
            if _is_config(existing):
                update_config(existing, value, _path=path)
                continue
            if not isinstance(existing, dict):
                raise TypeError(
                    f"update_config: {path} is a {type(existing).__name__}, "
                    f"it cannot be updated with a dict {dict(value)!r}"
                )
            value = {**existing, **value}
        elif isinstance(value, Mapping):
            value = dict(value)
        if is_dict:
            config[key] = value
        else:
            setattr(config, key, value)


@functools.cache
def config_class_from_architecture(arch: str, exc: bool = False) -> type | None:
    """
    Returns the configuration class of a :epkg:`transformers` architecture
    (``"LlamaForCausalLM"`` -> ``LlamaConfig``), read from the class attribute
    ``config_class`` or from the annotation of the parameter ``config`` of its constructor.

    :param arch: the class name, as listed in ``config.architectures``
    :param exc: raises ``ValueError`` if the class or its configuration class cannot be
        found, returns None otherwise

    >>> config_class_from_architecture("LlamaForCausalLM").__name__
    'LlamaConfig'
    >>> config_class_from_architecture("NoSuchModel") is None
    True
    """
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"config_class_from_architecture: arch must be a class name, not {arch!r}")
    try:
        cls = getattr(transformers, arch)
    except (AttributeError, ImportError, RuntimeError) as e:
        if exc:
            raise ValueError(f"arch={arch!r} is no class of transformers") from e
        return None
    config_cls = getattr(cls, "config_class", None)
    if _is_config_class(config_cls):
        return config_cls
    config_cls = _annotated_config(cls)
    if config_cls is None and exc:
        raise ValueError(f"arch={arch!r}: no configuration class found for {cls}")
    return config_cls


def _annotated_config(cls: type) -> type | None:
    try:
        param = inspect.signature(cls.__init__).parameters.get("config")
    except (TypeError, ValueError):
        return None
    if param is None or param.annotation is inspect.Parameter.empty:
        return None
    annotation = param.annotation
    if isinstance(annotation, str):
        annotation = getattr(transformers, annotation.strip("'\""), None)
    return annotation if _is_config_class(annotation) else None


def _is_config_class(cls: Any) -> bool:
    """A configuration class of one model, not the base class."""
    base = transformers.PretrainedConfig
    return isinstance(cls, type) and issubclass(cls, base) and cls is not base


def check_hasattr(config: Any, *args: str | tuple) -> None:
    """
    Checks that ``config`` (a configuration or a dictionary) has every attribute in
    ``args``; a tuple means one of its elements is enough, an element of the tuple being
    a name or a tuple of names all needed.

    >>> import transformers
    >>> check_hasattr(transformers.LlamaConfig(), "hidden_size", ("head_dim", "num_heads"))
    >>> check_hasattr({"a": 1}, "b")
    Traceback (most recent call last):
        ...
    AttributeError: config has no attribute 'b'
    """

    def has(name: str) -> bool:
        return name in config if isinstance(config, dict) else hasattr(config, name)

    for a in args:
        if isinstance(a, str):
            if not has(a):
                raise AttributeError(f"config has no attribute {a!r}")
        elif isinstance(a, tuple):
            if not any(has(n) if isinstance(n, str) else all(has(x) for x in n) for n in a):
                raise AttributeError(f"config has none of the attributes {a!r}")
        else:
            raise TypeError(f"check_hasattr: expects names or tuples of names, not {a!r}")


def pick(config: Any, name: str, default_value: Any) -> Any:
    """
    Returns ``config.name`` (or ``config[name]`` for a dictionary), ``default_value`` if it
    is missing or if ``config`` is None or empty.

    >>> pick({"a": 1}, "a", 0), pick(None, "a", 0)
    (1, 0)
    """
    if not config:
        return default_value
    if isinstance(config, dict):
        return config.get(name, default_value)
    return getattr(config, name, default_value)
