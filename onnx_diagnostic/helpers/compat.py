"""
The one place where versions of :epkg:`torch` and :epkg:`transformers` differ.

Everything here is *feature detection* computed once and cached: nothing imports
:epkg:`transformers` at module import time, and a class missing in the installed version
is reported as ``None`` instead of raising.

>>> from onnx_diagnostic.helpers.compat import transformers_version
>>> isinstance(transformers_version(), str)
True
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any


@functools.cache
def _parse(version: str) -> tuple[int, ...]:
    out = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(out)


def version_at_least(installed: str, wanted: str) -> bool:
    """
    Compares two versions numerically (``"4.57.6" >= "4.50"``).

    >>> version_at_least("4.57.6", "4.50")
    True
    >>> version_at_least("2.9.0+cpu", "2.10")
    False
    """
    return _parse(installed) >= _parse(wanted)


@functools.cache
def transformers_version() -> str:
    """Returns the installed :epkg:`transformers` version, ``"0"`` if it is missing."""
    try:
        import transformers
    except ImportError:  # pragma: no cover - transformers is a dependency
        return "0"
    return transformers.__version__


@functools.cache
def torch_version() -> str:
    """Returns the installed :epkg:`torch` version."""
    import torch

    return torch.__version__


def transformers_class(module: str, name: str) -> type | None:
    """
    Returns ``transformers.<module>.<name>`` or None if the installed version does not have it.

    >>> transformers_class("cache_utils", "DoesNotExist") is None
    True
    """
    return _transformers_class(module, name)


@functools.cache
def _transformers_class(module: str, name: str) -> type | None:
    try:
        mod = importlib.import_module(f"transformers.{module}")
    except ImportError:
        return None
    return getattr(mod, name, None)


def cache_class(name: str) -> type | None:
    """
    Returns the class ``transformers.cache_utils.<name>`` or None if it does not exist.

    >>> cache_class("DynamicCache").__name__, cache_class("NoSuchCache")
    ('DynamicCache', None)
    """
    return transformers_class("cache_utils", name)


def loaded_cache_module() -> Any:
    """
    Returns ``transformers.cache_utils`` only if it was already imported, None otherwise.
    Functions inspecting arbitrary objects use it to avoid importing :epkg:`transformers`:
    an object cannot be a cache if that module was never loaded.

    >>> import transformers.cache_utils
    >>> loaded_cache_module() is transformers.cache_utils
    True
    """
    return sys.modules.get("transformers.cache_utils", None)


def is_cache(obj: Any) -> bool:
    """
    Tells if ``obj`` is a :epkg:`transformers` cache, without importing transformers:
    an object cannot be a cache if ``transformers.cache_utils`` was never loaded.
    The cache classes models of transformers 4.x define for their states (``MambaCache``,
    ``HybridMambaAttentionDynamicCache``...) are caches too; the first one seen gets its
    class registered for :mod:`torch.utils._pytree`.

    >>> is_cache(None)
    False
    """
    mod = loaded_cache_module()
    if mod is None:
        return False
    if isinstance(obj, mod.Cache):
        return True
    from ..torch_export_patches import _legacy_caches

    if not _legacy_caches.is_legacy_cache(obj):
        return False
    # a cache class of a model of transformers 4.x (MambaCache...): registered for
    # torch.utils._pytree the first time one is seen, its module is loaded by then
    import torch.utils._pytree as pytree

    if type(obj) not in pytree.SUPPORTED_NODES:
        from ..torch_export_patches.serialization import register_cache_serialization

        register_cache_serialization()
    return True


def is_model_output(obj: Any) -> bool:
    """
    Tells if ``obj`` is a :class:`transformers.utils.ModelOutput`, without importing
    transformers.

    >>> is_model_output({"logits": None})
    False
    """
    cls = loaded_model_output_class()
    return cls is not None and isinstance(obj, cls)


def loaded_model_output_class() -> type | None:
    """
    Returns ``transformers.utils.ModelOutput`` if transformers was imported, None otherwise.

    >>> import transformers.utils
    >>> loaded_model_output_class() is transformers.utils.ModelOutput
    True
    """
    mod = sys.modules.get("transformers.utils.generic", None)
    return None if mod is None else getattr(mod, "ModelOutput", None)


@functools.cache
def has_cache_layers() -> bool:
    """True when caches keep their tensors in ``cache.layers[i].keys/values``."""
    return cache_class("DynamicLayer") is not None


@functools.cache
def lazy_init_takes_values() -> bool:
    """True when ``DynamicLayer.lazy_initialization`` takes ``(key_states, value_states)``."""
    import inspect

    cls = cache_class("DynamicLayer")
    if cls is None:
        return False
    return len(inspect.signature(cls.lazy_initialization).parameters) >= 3


def init_layer(layer: Any, key: Any, value: Any) -> Any:
    """
    Fills a cache layer with ``key`` and ``value`` as they are (no concatenation, no window
    truncation) whatever the version of :epkg:`transformers`, and returns it.
    It creates no tensor, so it is safe while :func:`torch.export.export` traces the model.

    >>> import torch
    >>> kv = torch.ones(1, 2, 3, 4)
    >>> layer = init_layer(cache_class("DynamicLayer")(), kv, kv)
    >>> layer.get_seq_length()
    3
    """
    layer.dtype, layer.device = key.dtype, key.device
    layer.keys = key
    layer.values = value
    layer.is_initialized = True
    if hasattr(layer, "sliding_window"):
        # DynamicSlidingWindowLayer counts the tokens it has seen.
        layer.cumulative_length = key.shape[-2]
        window = getattr(layer, "_sliding_window_tensor", None)
        if window is not None and window.device != key.device:
            # transformers>=5 keeps a 0-d tensor equal to the window; calling .to() when
            # nothing moves would still record an op on a constant while exporting.
            layer._sliding_window_tensor = window.to(key.device)
    return layer


_SLIDING_TEMPLATES: dict[int, Any] = {}


def new_sliding_window_layer(sliding_window: int) -> Any:
    """
    Creates an empty ``DynamicSlidingWindowLayer`` (None if the class does not exist).

    transformers 5 creates ``torch.tensor(sliding_window)`` in the constructor; while
    :func:`torch.export.export` traces, that tensor would become a lifted constant. A layer
    created outside an export is kept as a template, and the next layers are shallow copies of
    it: fresh state, no tensor created, while exporting too.

    >>> layer = new_sliding_window_layer(16)
    >>> layer.sliding_window, layer.is_initialized
    (16, False)
    """
    import copy

    import torch

    cls = cache_class("DynamicSlidingWindowLayer")
    if cls is None:
        return None
    template = _SLIDING_TEMPLATES.get(sliding_window, None)
    if template is not None:
        # A shallow copy of a fresh layer is a fresh layer; the 0-d window tensor is shared,
        # transformers never modifies it in place.
        return copy.copy(template)
    layer = cls(sliding_window=sliding_window)
    if not torch.compiler.is_exporting():
        _SLIDING_TEMPLATES[sliding_window] = cls(sliding_window=sliding_window)
    return layer


def dynamic_rope_wrapper(fct: Any) -> Any:
    """
    Returns the function created by ``transformers.modeling_rope_utils.dynamic_rope_update``
    in the chain of decorators of ``fct`` (``torch.no_grad()`` often wraps it),
    None if there is none.

    >>> from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    >>> dynamic_rope_wrapper(LlamaRotaryEmbedding.forward) is not None
    True
    >>> dynamic_rope_wrapper(len) is None
    True
    """
    seen = 0
    while fct is not None and seen < 8:
        code = getattr(fct, "__code__", None)
        if (
            code is not None
            and hasattr(fct, "__wrapped__")
            and code.co_filename.replace("\\", "/").endswith("transformers/modeling_rope_utils.py")
        ):
            return fct
        fct = getattr(fct, "__wrapped__", None)
        seen += 1
    return None


def rope_init_function(rope_type: str) -> Any:
    """
    Returns the function transformers uses to compute inverse frequencies of ``rope_type``.

    >>> callable(rope_init_function("dynamic"))
    True
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    return ROPE_INIT_FUNCTIONS[rope_type]


def rope_original_max_position(config: Any, layer_type: str | None = None) -> int:
    """
    Returns ``original_max_position_embeddings`` of a rope configuration:
    ``config.rope_parameters[...]`` in transformers>=5, a config attribute before,
    ``max_position_embeddings`` if neither exists.

    >>> from transformers import LlamaConfig
    >>> rope_original_max_position(LlamaConfig(max_position_embeddings=128))
    128
    """
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        sub = params.get(layer_type, params) if layer_type is not None else params
        if isinstance(sub, dict) and sub.get("original_max_position_embeddings"):
            return int(sub["original_max_position_embeddings"])
    value = getattr(config, "original_max_position_embeddings", None)
    return int(value) if value else int(config.max_position_embeddings)


# Names of the cache argument and of the cache output field.
#
# transformers 5.24 renamed the cache argument of every ``forward`` (and the output field of
# every ``ModelOutput``) from ``past_key_values`` to ``cache``. The next rename costs one line:
# put the new name first in CACHE_ARG_NAMES.

#: Names transformers gave to the cache argument of ``forward``, newest first.
CACHE_ARG_NAMES: tuple[str, ...] = ("cache", "past_key_values")

#: Other names of the cache argument: ``cache_params``, the cache of the state-space models
#: (mamba, mamba2, falcon_mamba) before transformers 5.24. A model declaring one of
#: :data:`CACHE_ARG_NAMES` gets that one; these names are never renamed into another.
OTHER_CACHE_ARG_NAMES: tuple[str, ...] = ("cache_params",)

#: Prefix of the cache inputs of an exported ONNX model (``past_key_values.0.key``...),
#: the convention onnxruntime-genai and optimum read; it never follows transformers' renames.
ONNX_CACHE_INPUT = "past_key_values"

#: Prefix of the cache outputs of an exported ONNX model (``present.0.key``...).
ONNX_CACHE_OUTPUT = "present"


def forward_parameters(model: Any) -> dict[str, Any] | None:
    """
    Returns the parameters of ``model.forward`` (a model, a function or an
    :class:`inspect.Signature`) by name, None when there is no signature to read.

    >>> list(forward_parameters(lambda input_ids, cache=None: None))
    ['input_ids', 'cache']
    >>> forward_parameters(3) is None
    True
    """
    import inspect

    if isinstance(model, inspect.Signature):
        return dict(model.parameters)
    fct = getattr(model, "forward", model)
    if not callable(fct):
        return None
    try:
        return dict(inspect.signature(fct).parameters)
    except (TypeError, ValueError):
        return None


def _first_cache_name(names: Any) -> str | None:
    """The first name of :data:`CACHE_ARG_NAMES` (newest first) found in ``names``."""
    if not names:
        return None
    return next((name for name in CACHE_ARG_NAMES if name in names), None)


def _declared_cache_name(names: Any) -> str | None:
    """:func:`_first_cache_name`, or the first of :data:`OTHER_CACHE_ARG_NAMES`."""
    name = _first_cache_name(names)
    if name is None and names:
        name = next((n for n in OTHER_CACHE_ARG_NAMES if n in names), None)
    return name


@functools.cache
def default_cache_arg_name() -> str:
    """
    Returns the name the installed :epkg:`transformers` gives to the cache argument of a
    model's ``forward`` (``"cache"`` from 5.24, ``"past_key_values"`` before), read from
    the signature of ``LlamaModel.forward``.

    >>> default_cache_arg_name() in CACHE_ARG_NAMES
    True
    """
    cls = transformers_class("models.llama.modeling_llama", "LlamaModel")
    name = declared_cache_arg_name(cls) if cls is not None else None
    # No transformers (or no llama): the oldest name, the one most code was written for.
    return name or CACHE_ARG_NAMES[-1]


def cache_arg_name(model: Any = None) -> str:
    """
    Returns the name of the cache argument of ``model.forward`` (or of a function):
    the one of :data:`CACHE_ARG_NAMES` its signature declares. A model or function declaring
    none of them (a custom module taking ``**kwargs``), or None, gets the name the installed
    :epkg:`transformers` uses (:func:`default_cache_arg_name`).

    >>> def forward(input_ids, past_key_values=None):
    ...     pass
    >>> cache_arg_name(forward)
    'past_key_values'
    >>> cache_arg_name(None) == default_cache_arg_name()
    True
    """
    name = declared_cache_arg_name(model) if model is not None else None
    return name or default_cache_arg_name()


def declared_cache_arg_name(model: Any) -> str | None:
    """
    Returns the name of :data:`CACHE_ARG_NAMES` that ``model.forward`` (a model, a function
    or an :class:`inspect.Signature`) declares, otherwise the one of
    :data:`OTHER_CACHE_ARG_NAMES` (``cache_params`` of mamba models before transformers 5.24),
    None if it declares none.

    >>> declared_cache_arg_name(lambda input_ids, cache=None: None)
    'cache'
    >>> declared_cache_arg_name(lambda input_ids, cache_params=None: None)
    'cache_params'
    >>> declared_cache_arg_name(lambda x: x) is None
    True
    """
    return _declared_cache_name(forward_parameters(model))


def cache_name_of_inputs(model: Any, mappings: Any) -> str | None:
    """
    Returns the name under which inputs hold the cache argument when calls or input sets
    may mix its names: the one ``model`` declares (a model, a function or an
    :class:`inspect.Signature`), otherwise the first name met in ``mappings`` (dictionaries
    of named arguments, in order), None if there is none.

    >>> cache_name_of_inputs(lambda x, **kw: x, [{"x": 1}, {"past_key_values": 2}])
    'past_key_values'
    >>> cache_name_of_inputs(lambda x, cache=None: x, [{"past_key_values": 2}])
    'cache'
    """
    declared = declared_cache_arg_name(model)
    if declared is not None:
        return declared
    return next((k for kw in mappings for k in kw if is_cache_arg_name(k)), None)


def is_cache_arg_name(name: Any) -> bool:
    """
    Tells if ``name`` is one of the names transformers gave to the cache argument.

    >>> is_cache_arg_name("past_key_values"), is_cache_arg_name("cache"), is_cache_arg_name(0)
    (True, True, False)
    """
    return isinstance(name, str) and name in CACHE_ARG_NAMES


def rename_cache_argument(mapping: Any, name: str, where: str = "kwargs") -> Any:
    """
    Returns a copy of the dictionary ``mapping`` where any name of :data:`CACHE_ARG_NAMES`
    is replaced by ``name``, in place (the order of the keys is kept). Anything that is not
    a dict is returned as it is; a dict without a cache name is returned unchanged (not
    copied).

    :param mapping: keyword arguments, dynamic shapes...
    :param name: the name to use (:func:`cache_arg_name` of the model)
    :param where: what ``mapping`` is, for the error message
    :raises ValueError: if ``mapping`` holds two different names of the cache

    >>> rename_cache_argument({"input_ids": 1, "past_key_values": 2}, "cache")
    {'input_ids': 1, 'cache': 2}
    """
    if not isinstance(mapping, dict):
        return mapping
    found = [k for k in mapping if is_cache_arg_name(k)]
    if not found or found == [name]:
        return mapping
    if len(found) > 1:
        raise ValueError(
            f"{where} gives the cache twice, as {found[0]!r} and {found[1]!r}: these names are "
            f"the same argument (the installed transformers calls it {name!r}), keep one"
        )
    return {(name if k == found[0] else k): v for k, v in mapping.items()}


@functools.cache
def output_cache_field() -> str:
    """
    Returns the name of the cache field of the model outputs of the installed
    :epkg:`transformers` (``CausalLMOutputWithPast.cache`` from 5.24, ``.past_key_values``
    before).

    >>> output_cache_field() in CACHE_ARG_NAMES
    True
    """
    import dataclasses

    cls = transformers_class("modeling_outputs", "CausalLMOutputWithPast")
    if cls is not None and dataclasses.is_dataclass(cls):
        name = _first_cache_name({f.name for f in dataclasses.fields(cls)})
        if name is not None:
            return name
    return CACHE_ARG_NAMES[-1]


def complete_token_ids(config: Any) -> Any:
    """
    Sets ``pad_token_id``, ``bos_token_id`` and ``eos_token_id`` to None where the
    configuration has no such attribute, and returns it: transformers 5.0.0 removed
    ``pad_token_id`` from some configuration classes (``PhiConfig``) whose models still read
    it in their constructor (``AttributeError: 'PhiConfig' object has no attribute
    'pad_token_id'``). Attributes that exist are left as they are.

    >>> from transformers import LlamaConfig
    >>> complete_token_ids(LlamaConfig(pad_token_id=3)).pad_token_id
    3
    """
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        try:
            getattr(config, name)
        except AttributeError:
            setattr(config, name, None)
    return config


class CacheAliasDict(dict):
    """
    The inputs of a model, a :class:`dict` whose cache argument also answers to the other
    names of :data:`CACHE_ARG_NAMES`: on transformers 5.24, ``inputs["past_key_values"]``
    reads and writes ``inputs["cache"]``. Only the stored name is a key (iteration,
    ``model(**inputs)``, :func:`string_type <onnx_diagnostic.helpers.string_type>` show
    the name the model declares), so scripts written before the rename keep working.
    The library returns its input dictionaries in this class
    (:func:`onnx_diagnostic.torch_models.llms.get_tiny_llm`, the tasks...); it flattens
    like a dict for :mod:`torch.utils._pytree`.

    >>> inputs = CacheAliasDict(input_ids=1, cache=2)
    >>> inputs["past_key_values"], "past_key_values" in inputs, list(inputs)
    (2, True, ['input_ids', 'cache'])
    >>> inputs["past_key_values"] = 3
    >>> dict(inputs)
    {'input_ids': 1, 'cache': 3}
    """

    def _key(self, key: Any) -> Any:
        if is_cache_arg_name(key) and not dict.__contains__(self, key):
            for name in CACHE_ARG_NAMES:
                if dict.__contains__(self, name):
                    return name
        return key

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, self._key(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, self._key(key), value)

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, self._key(key))

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, self._key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self, self._key(key), default)

    def pop(self, key: Any, *default: Any) -> Any:
        return dict.pop(self, self._key(key), *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return dict.setdefault(self, self._key(key), default)

    def copy(self) -> CacheAliasDict:
        return CacheAliasDict(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


def cache_alias_dict(inputs: dict[str, Any]) -> CacheAliasDict:
    """
    Returns ``inputs`` as a :class:`CacheAliasDict` (a shallow copy, the values are the
    same objects) and registers that class with :mod:`torch.utils._pytree` the first time
    (flattened like a dict, unflattened into the same class).

    >>> import torch.utils._pytree as pytree
    >>> inputs = cache_alias_dict({"x": 1, "past_key_values": 2})
    >>> pytree.tree_leaves(inputs), inputs["cache"]
    ([1, 2], 2)
    """
    import torch.utils._pytree as pytree

    if CacheAliasDict not in pytree.SUPPORTED_NODES:
        pytree.register_pytree_node(
            CacheAliasDict,
            lambda d: (list(d.values()), list(d.keys())),
            lambda values, keys: CacheAliasDict(zip(keys, values)),
            serialized_type_name=f"{__name__}.CacheAliasDict",
            flatten_with_keys_fn=lambda d: (
                [(pytree.MappingKey(k), v) for k, v in d.items()],
                list(d.keys()),
            ),
        )
    return CacheAliasDict(inputs)


# ---------------------------------------------------------------------------------------------
# Tested versions: the single source of truth read by ``python -m onnx_diagnostic versions``
# and ``_bench/version_matrix.py`` (default first transformers), shown on _doc/versions.rst.
# ---------------------------------------------------------------------------------------------

#: Oldest and newest release of each package the test suite runs on. A bound is compared on
#: as many components as it gives: ``"5.24"`` covers every 5.24.x. ``.ci/run`` tests
#: transformers 4.57.6, 5.23.0 and the latest with torch 2.13; ``_bench/version_matrix.py`` tests
#: every transformers minor release in between. Update these bounds with the matrix.
TESTED_VERSIONS: dict[str, tuple[str, str]] = {
    "python": ("3.11", "3.11"),
    "torch": ("2.13", "2.15"),
    "transformers": ("4.57", "5.24"),
    "onnx": ("1.23", "1.23"),
    "onnxruntime": ("1.32", "1.32"),
    "onnxscript": ("0.7", "0.7"),
    # the optional extra genai: its test runs in CI on the latest transformers
    "onnxruntime-genai": ("0.18", "0.18"),
}

# Package shown by version_report -> distributions providing it (first installed wins),
# and whether the row is shown when the package is missing.
_REPORTED_PACKAGES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("python", (), True),
    ("torch", ("torch",), True),
    ("transformers", ("transformers",), True),
    ("onnx", ("onnx",), True),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), True),
    ("onnxscript", ("onnxscript",), True),
    ("onnxruntime-genai", ("onnxruntime-genai", "onnxruntime-genai-cuda"), False),
)


def in_tested_range(package: str, version: str) -> bool | None:
    """
    Tells if ``version`` of ``package`` lies in :data:`TESTED_VERSIONS`,
    None if the package has no tested range.

    >>> in_tested_range("transformers", "4.57.6"), in_tested_range("transformers", "4.56.2")
    (True, False)
    >>> in_tested_range("torch", "2.13.0+cpu"), in_tested_range("unknown", "1.0") is None
    (True, True)
    """
    bounds = TESTED_VERSIONS.get(package, None)
    if bounds is None:
        return None
    low, high = _parse(bounds[0]), _parse(bounds[1])
    parsed = _parse(version)
    return parsed[: len(low)] >= low and parsed[: len(high)] <= high


def version_report() -> list[dict[str, Any]]:
    """
    Returns one row per package (python, torch, transformers, onnx, onnxruntime, onnxscript,
    onnxruntime-genai when installed): ``package``, installed ``version`` (None if missing),
    ``tested`` range (``(oldest, newest)`` of :data:`TESTED_VERSIONS`, None if untested) and
    ``in_range`` (None when missing or untested). Versions are read from the installed
    distributions, nothing is imported.

    >>> rows = {row["package"]: row for row in version_report()}
    >>> rows["transformers"]["tested"] == TESTED_VERSIONS["transformers"]
    True
    >>> sorted(rows["torch"])
    ['in_range', 'package', 'tested', 'version']
    """
    import importlib.metadata
    import platform

    rows = []
    for package, distributions, always in _REPORTED_PACKAGES:
        version = platform.python_version() if package == "python" else None
        for dist in distributions:
            try:
                version = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        if version is None and not always:
            continue
        tested = TESTED_VERSIONS.get(package, None)
        rows.append(
            dict(
                package=package,
                version=version,
                tested=tested,
                in_range=None if version is None else in_tested_range(package, version),
            )
        )
    return rows
