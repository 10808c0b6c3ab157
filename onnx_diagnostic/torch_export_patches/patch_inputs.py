"""
Conversions of dynamic shapes and inputs before an export.

>>> import torch
>>> from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str
>>> use_dyn_not_str({"x": {0: "batch"}})["x"][0] is torch.export.Dim.DYNAMIC
True
"""

from __future__ import annotations

from typing import Any

import torch

from ..helpers.compat import CACHE_ARG_NAMES

__all__ = ["convert_legacy_caches", "use_dyn_not_str"]


def use_dyn_not_str(dynamic_shapes: Any, default_value: Any = None) -> Any:
    """
    Replaces every string naming a dimension (``{0: "batch"}``) with
    ``torch.export.Dim.DYNAMIC``, through nested tuples, lists and dicts. Other values
    (``torch.export.Dim``, ints, None) are kept. The structure is copied, not modified.

    :param dynamic_shapes: dynamic shapes as tasks and :func:`get_tiny_llm` return them
    :param default_value: replacement of the strings, ``torch.export.Dim.DYNAMIC`` if None
    :return: the same structure with the strings replaced

    >>> use_dyn_not_str([{0: "batch", 2: "cache_length"}, None])
    [{0: DimHint(DYNAMIC), 2: DimHint(DYNAMIC)}, None]
    """
    value = torch.export.Dim.DYNAMIC if default_value is None else default_value
    return _replace_str(dynamic_shapes, value, "dynamic_shapes")


def _replace_str(ds: Any, value: Any, path: str) -> Any:
    if isinstance(ds, str):
        return value
    if isinstance(ds, dict):
        return {k: _replace_str(v, value, f"{path}[{k!r}]") for k, v in ds.items()}
    if isinstance(ds, tuple):
        return tuple(_replace_str(v, value, f"{path}[{i}]") for i, v in enumerate(ds))
    if isinstance(ds, list):
        return [_replace_str(v, value, f"{path}[{i}]") for i, v in enumerate(ds)]
    if ds is None or isinstance(ds, (int, torch.export.Dim)) or _is_dim_hint(ds):
        return ds
    raise TypeError(
        f"{path}: unexpected {type(ds).__name__} in dynamic shapes, expected a dict, a "
        "tuple, a list, a str, an int, None or a torch.export.Dim"
    )


def _is_dim_hint(obj: Any) -> bool:
    return type(obj).__name__ in {"_DimHint", "DimHint", "_Dim", "_DerivedDim", "Dim"}


def convert_legacy_caches(inputs: Any) -> Any:
    """
    Returns ``inputs`` where a cache (``past_key_values``, or ``cache`` as transformers 5.24
    names it) given in the legacy format (a tuple of ``(key, value)`` pairs, which
    transformers>=4.56 no longer accepts) becomes a DynamicCache. The argument keeps the
    name the user gave it (:func:`onnx_diagnostic.export.api.to_onnx` maps it to the name
    the model declares). Returns ``inputs`` itself (same object) when there is nothing to
    convert.

    >>> x = {"input_ids": None}
    >>> convert_legacy_caches(x) is x
    True
    """
    if isinstance(inputs, dict):
        new = None
        for name in CACHE_ARG_NAMES:
            pkv = inputs.get(name, None)
            if not _is_legacy_cache(pkv):
                continue
            from ..cache_helpers import CacheInputError, make_dynamic_cache

            new = dict(inputs) if new is None else new
            try:
                new[name] = make_dynamic_cache([tuple(p) for p in pkv])
            except CacheInputError as e:
                # Names the user's argument, not the internal one.
                raise CacheInputError(str(e).replace("key_value_pairs", name)) from e
        return inputs if new is None else new
    if isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], dict):
        converted = convert_legacy_caches(inputs[1])
        return inputs if converted is inputs[1] else (inputs[0], converted)
    return inputs


def _is_legacy_cache(obj: Any) -> bool:
    return (
        isinstance(obj, (tuple, list))
        and len(obj) > 0
        and all(
            isinstance(p, (tuple, list))
            and len(p) == 2
            and all(isinstance(t, torch.Tensor) for t in p)
            for p in obj
        )
    )
