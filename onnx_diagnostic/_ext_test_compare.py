"""
Comparison of tensors and nested structures behind the assertions of
:class:`onnx_diagnostic.ext_test_case.ExtTestCase`: every function returns None when both
sides are equal, otherwise a message naming the place where they differ
(``expected[1]['past_key_values'].key_0: shape (2, 4, 3, 7) vs (3, 4, 4, 8)``).

>>> import torch
>>> from onnx_diagnostic._ext_test_compare import _any_mismatch
>>> _any_mismatch([torch.zeros(2)], [torch.zeros(3)], "expected", 0, 0)
'expected[0]: shape (2,) vs (3,)'
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .helpers import compat
from .helpers.helper import (
    _is_dynamic_cache,
    _is_encoder_decoder_cache,
    _numpy_elem_type,
    _to_torch,
    _torch_elem_type,
    string_type,
)


def _elem_type(x: Any) -> int | str:
    if isinstance(x, torch.Tensor):
        return _torch_elem_type(x.dtype)
    return _numpy_elem_type(np.asarray(x).dtype)


def _dtype_name(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return str(x.dtype).replace("torch.", "")
    return np.asarray(x).dtype.name


def _array_mismatch(expected: Any, value: Any, atol: float, rtol: float) -> str | None:
    """Returns None if both arrays are equal within tolerance, a message otherwise."""
    if _elem_type(expected) != _elem_type(value):
        return f"dtype {_dtype_name(expected)} vs {_dtype_name(value)}"
    te, tv = _to_torch(expected), _to_torch(value)
    if tuple(te.shape) != tuple(tv.shape):
        return f"shape {tuple(te.shape)} vs {tuple(tv.shape)}"
    if te.numel() == 0:
        return None
    dtype = torch.complex128 if te.is_complex() else torch.float64
    e, v = te.to(dtype), tv.to(dtype)
    en, vn = torch.isnan(e), torch.isnan(v)
    if not torch.equal(en, vn):
        return f"NaN at different positions ({int((en ^ vn).sum())} positions)"
    diff = (e - v).abs()
    allowed = atol + rtol * e.abs() if rtol else atol
    # infinite values must be equal whatever the tolerance (rtol * inf would accept anything)
    bad = ((diff > allowed) | torch.isinf(e) | torch.isinf(v)) & (e != v) & ~en
    nbad = int(bad.sum())
    if nbad == 0:
        return None
    diff = torch.where(bad, diff, torch.zeros((), dtype=diff.dtype))
    index = int(diff.reshape(-1).argmax())
    pos = tuple(int(i) for i in np.unravel_index(index, tuple(e.shape)))
    return (
        f"{nbad}/{e.numel()} values differ, max abs diff {float(diff.reshape(-1)[index])} "
        f"at {pos}: expected {e.reshape(-1)[index].item()}, got {v.reshape(-1)[index].item()} "
        f"(atol={atol}, rtol={rtol})"
    )


_ARRAY_TYPES = (torch.Tensor, np.ndarray)


def _all_mismatches(expected: Any, value: Any, path: str, atol: float, rtol: float) -> list[str]:
    """Every discrepancy between the elements of two lists, tuples or dictionaries."""
    if (
        isinstance(expected, (list, tuple))
        and type(expected) is type(value)
        and len(expected) == len(value)
    ):
        return [
            err
            for i, (e, v) in enumerate(zip(expected, value))
            for err in _all_mismatches(e, v, f"{path}[{i}]", atol, rtol)
        ]
    if (
        isinstance(expected, dict)
        and not compat.is_model_output(expected)
        and isinstance(value, dict)
        and not compat.is_model_output(value)
        and set(expected) == set(value)
    ):
        return [
            err
            for k in expected
            for err in _all_mismatches(expected[k], value[k], f"{path}[{k!r}]", atol, rtol)
        ]
    err = _any_mismatch(expected, value, path, atol, rtol)
    return [] if err is None else [err]


def _type_mismatch(expected: Any, value: Any, path: str) -> str:
    return (
        f"{path}: type {type(expected).__name__} vs {type(value).__name__} "
        f"({string_type(expected, with_shape=True)} vs {string_type(value, with_shape=True)})"
    )


def _any_mismatch(expected: Any, value: Any, path: str, atol: float, rtol: float) -> str | None:
    """Returns None if both objects are equal, otherwise a message naming the place."""
    if isinstance(expected, _ARRAY_TYPES):
        if not isinstance(value, _ARRAY_TYPES):
            return _type_mismatch(expected, value, path)
        err = _array_mismatch(expected, value, atol, rtol)
        return None if err is None else f"{path}: {err}"
    if expected is None or isinstance(expected, (str, bool)):
        if type(expected) is not type(value) or expected != value:
            return f"{path}: {expected!r} vs {value!r}"
        return None
    if isinstance(expected, (int, float)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return _type_mismatch(expected, value, path)
        same = expected == value or (
            isinstance(expected, float) and expected != expected and value != value
        )
        if not same and abs(expected - value) > atol + rtol * abs(expected):
            return f"{path}: {expected!r} vs {value!r} (atol={atol}, rtol={rtol})"
        return None
    if compat.is_model_output(expected):
        if type(expected) is not type(value):
            return _type_mismatch(expected, value, path)
        if list(expected.keys()) != list(value.keys()):
            return f"{path}: fields {list(expected.keys())} vs {list(value.keys())}"
        for k in expected:
            err = _any_mismatch(expected[k], value[k], f"{path}.{k}", atol, rtol)
            if err:
                return err
        return None
    if isinstance(expected, (list, tuple)):
        if type(expected) is not type(value):
            return _type_mismatch(expected, value, path)
        if len(expected) != len(value):
            return f"{path}: length {len(expected)} vs {len(value)}"
        for i, (e, v) in enumerate(zip(expected, value)):
            err = _any_mismatch(e, v, f"{path}[{i}]", atol, rtol)
            if err:
                return err
        return None
    if isinstance(expected, dict):
        if not isinstance(value, dict) or compat.is_model_output(value):
            return _type_mismatch(expected, value, path)
        if set(expected) != set(value):
            return f"{path}: keys {sorted(map(str, expected))} vs {sorted(map(str, value))}"
        for k in expected:
            err = _any_mismatch(expected[k], value[k], f"{path}[{k!r}]", atol, rtol)
            if err:
                return err
        return None
    if compat.is_cache(expected):
        return _cache_mismatch(expected, value, path, atol, rtol)
    if isinstance(expected, torch.export.Dim):
        # a Dim is a class created on every call, two equal dimensions are not ==
        if not isinstance(value, torch.export.Dim) or _dim_key(expected) != _dim_key(value):
            return f"{path}: {expected!r} vs {value!r}"
        return None
    try:
        same = type(expected) is type(value) and bool(expected == value)
    except Exception:
        same = False
    return None if same else f"{path}: {expected!r} vs {value!r}"


def _cache_mismatch(expected: Any, value: Any, path: str, atol: float, rtol: float) -> str | None:
    from .cache_helpers import (
        _canonical_flattening,
        _error_at,
        get_cache_kv,
        get_cache_layer_types,
    )
    from .torch_export_patches.serialization import CacheSerializationError

    if type(expected) is not type(value):
        return _type_mismatch(expected, value, path)
    from .torch_export_patches import _legacy_caches

    if _legacy_caches.is_legacy_cache(expected):
        # a cache class of a transformers 4.x model (MambaCache...): its flattening
        (le, ce), (lv, cv) = _legacy_caches._flatten(expected), _legacy_caches._flatten(value)
        if ce != cv:
            return f"{path}: flattened as {ce} vs {cv}"
        for name, a, b in zip(ce[3], le, lv):
            err = _any_mismatch(a, b, f"{path}.{name}", atol, rtol)
            if err:
                return err
        return None
    if _is_encoder_decoder_cache(expected):
        for name in ("self_attention_cache", "cross_attention_cache"):
            err = _any_mismatch(
                getattr(expected, name), getattr(value, name), f"{path}.{name}", atol, rtol
            )
            if err:
                return err
        return None
    if _is_dynamic_cache(expected):
        # every layer, every tensor: the canonical flattening (conv and recurrent states,
        # indexer keys...), a layer class it does not know raises CacheSerializationError
        try:
            te, tv = get_cache_layer_types(expected), get_cache_layer_types(value)
        except CacheSerializationError as e:
            raise _error_at(e, path) from e
        if len(te) != len(tv):
            return f"{path}: {len(te)} layers vs {len(tv)}"
        if te != tv:
            return f"{path}: layer types {te} vs {tv}"
        (ne, ce), (nv, cv) = _canonical_flattening(expected), _canonical_flattening(value)
        if ce != cv:
            # same types, other settings: sliding window, conv kernel size, a state set or not
            return f"{path}: flattened layers {ce} vs {cv}"
        for (name, a), (_, b) in zip(ne, nv):
            err = _any_mismatch(a, b, f"{path}.{name}", atol, rtol)
            if err:
                return err
        return None
    ke, ve = get_cache_kv(expected)
    kv, vv = get_cache_kv(value)
    if len(ke) != len(kv):
        return f"{path}: {len(ke)} layers vs {len(kv)}"
    te, tv = get_cache_layer_types(expected), get_cache_layer_types(value)
    if te != tv:
        return f"{path}: layer types {te} vs {tv}"
    for i in range(len(ke)):
        for name, a, b in (("key", ke[i], kv[i]), ("value", ve[i], vv[i])):
            err = _any_mismatch(a, b, f"{path}.{name}_{i}", atol, rtol)
            if err:
                return err
    return None


def _dim_key(dim: Any) -> tuple[str, ...]:
    """What makes two :class:`torch.export.Dim` equal: type, name (the expression of a
    derived one) and bounds."""
    return tuple(
        str(x)
        for x in (
            type(dim).__name__,
            dim.__name__,
            getattr(dim, "min", None),
            getattr(dim, "max", None),
        )
    )
