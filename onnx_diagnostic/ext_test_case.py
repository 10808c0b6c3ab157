"""
Test helpers: :class:`ExtTestCase` (a :class:`unittest.TestCase` with assertions for
tensors and nested structures), version checks and decorators.
Importing it does not import :epkg:`transformers` nor :epkg:`onnxruntime`.

>>> import torch
>>> from onnx_diagnostic.ext_test_case import ExtTestCase, has_torch
>>> has_torch("2.0")
True
>>> ExtTestCase().assertEqualArray(torch.ones(2), torch.ones(2))
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
import unittest
import warnings
from collections.abc import Callable
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

__all__ = [
    "ExtTestCase",
    "has_onnxruntime",
    "has_torch",
    "has_transformers",
    "hide_stdout",
    "ignore_warnings",
    "requires_onnxruntime",
    "requires_torch",
    "requires_transformers",
    "unit_test_going",
]


# ----------------------------------------------------------------------------------------
# versions
# ----------------------------------------------------------------------------------------


def has_transformers(version: str) -> bool:
    """
    Tells if the installed :epkg:`transformers` is at least ``version``.

    >>> has_transformers("4.0")
    True
    """
    installed = compat.transformers_version()
    return installed != "0" and compat.version_at_least(installed, version)


def has_torch(version: str) -> bool:
    """
    Tells if the installed :epkg:`torch` is at least ``version`` (``"2.9"``).

    >>> has_torch("100.0")
    False
    """
    return compat.version_at_least(compat.torch_version(), version)


def has_onnxruntime(version: str) -> bool:
    """
    Tells if :epkg:`onnxruntime` is installed and at least ``version``.

    >>> isinstance(has_onnxruntime("1.0"), bool)
    True
    """
    try:
        import onnxruntime
    except ImportError:
        return False
    return compat.version_at_least(onnxruntime.__version__, version)


def unit_test_going() -> bool:
    """
    Tells if the environment variable ``UNITTEST_GOING`` is set to ``1``:
    examples and scripts then switch to a faster scenario.

    >>> import os
    >>> unit_test_going() == (os.environ.get("UNITTEST_GOING", "0") == "1")
    True
    """
    return os.environ.get("UNITTEST_GOING", "0").strip() == "1"


# ----------------------------------------------------------------------------------------
# decorators
# ----------------------------------------------------------------------------------------


def requires_transformers(version: str, msg: str = "") -> Callable:
    """
    Skips a test (or a test class) if :epkg:`transformers` is older than ``version``.

    .. code-block:: python

        @requires_transformers("4.57", "DynamicSlidingWindowLayer is needed")
        def test_sliding(self): ...
    """
    installed = compat.transformers_version()
    return unittest.skipIf(
        not has_transformers(version),
        f"transformers {installed} < {version}{': ' + msg if msg else ''}",
    )


def requires_torch(version: str, msg: str = "") -> Callable:
    """
    Skips a test if :epkg:`torch` is older than ``version``.

    >>> @requires_torch("99.0", "needs a future version")
    ... def test_future(self): ...
    >>> test_future.__unittest_skip__
    True
    """
    installed = compat.torch_version()
    return unittest.skipIf(
        not has_torch(version), f"torch {installed} < {version}{': ' + msg if msg else ''}"
    )


def requires_onnxruntime(version: str, msg: str = "") -> Callable:
    """
    Skips a test if :epkg:`onnxruntime` is missing or older than ``version``.

    >>> @requires_onnxruntime("1.0")
    ... def test_ort(self): ...
    >>> getattr(test_ort, "__unittest_skip__", False)
    False
    """
    return unittest.skipIf(
        not has_onnxruntime(version),
        f"onnxruntime missing or < {version}{': ' + msg if msg else ''}",
    )


def requires_cache_classes(*names: str) -> Callable:
    """
    Skips a test when the installed :epkg:`transformers` lacks one of the classes
    ``transformers.cache_utils.<name>`` (feature detection rather than a version number:
    ``LinearAttentionLayer`` appeared in 5.23).

    >>> @requires_cache_classes("DynamicCache", "NoSuchLayer")
    ... def test_layer(self): ...
    >>> test_layer.__unittest_skip_why__.endswith("has no NoSuchLayer")
    True
    """
    missing = [n for n in names if compat.cache_class(n) is None]
    return unittest.skipIf(
        bool(missing),
        f"transformers {compat.transformers_version()} has no {', '.join(missing)}",
    )


def ignore_warnings(warns: type[Warning] | list[type[Warning]] | tuple) -> Callable:
    """
    Decorator: the test ignores warnings of the given categories.

    :param warns: a warning class or a list of warning classes

    .. code-block:: python

        @ignore_warnings((UserWarning, FutureWarning))
        def test_something(self): ...
    """
    categories = tuple(warns) if isinstance(warns, (list, tuple)) else (warns,)
    for w in categories:
        if not (isinstance(w, type) and issubclass(w, Warning)):
            raise TypeError(f"ignore_warnings expects Warning classes, got {w!r}")

    def wrapper(fct: Callable) -> Callable:
        @functools.wraps(fct)
        def call(*args, **kwargs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", categories)
                return fct(*args, **kwargs)

        return call

    return wrapper


def _is_test_method(f: Any) -> bool:
    if not callable(f):
        return False
    try:
        params = list(inspect.signature(f).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "self"


def hide_stdout(f: Callable[[str], Any] | None = None) -> Callable:
    """
    Decorator: hides what a test prints. If the test fails, the hidden output is added to
    the error (as a note). ``f``, if given, receives the printed text once the test ends.
    Setting the environment variable ``UNHIDE=1`` shows everything.
    It can be used as ``@hide_stdout()`` or ``@hide_stdout``.

    .. code-block:: python

        @hide_stdout()
        def test_verbose(self):
            steal_forward(model, verbose=1)...
    """
    if _is_test_method(f):
        # used as @hide_stdout without parentheses
        return hide_stdout()(f)

    def wrapper(fct: Callable) -> Callable:
        @functools.wraps(fct)
        def call(*args, **kwargs):
            if os.environ.get("UNHIDE", "0") == "1":
                return fct(*args, **kwargs)
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    res = fct(*args, **kwargs)
            except Exception as e:
                text = out.getvalue()
                if text and hasattr(e, "add_note"):
                    e.add_note(f"-- hidden stdout --\n{text}")
                raise
            if f is not None:
                f(out.getvalue())
            return res

        return call

    return wrapper


# ----------------------------------------------------------------------------------------
# ExtTestCase
# ----------------------------------------------------------------------------------------


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


class ExtTestCase(unittest.TestCase):
    """
    :class:`unittest.TestCase` with assertions for tensors (torch or numpy)
    and nested structures (tuples, lists, dicts, transformers caches, ``ModelOutput``).
    """

    def assertEqualArray(
        self,
        expected: Any,
        value: Any,
        atol: float = 0,
        rtol: float = 0,
        msg: str | None = None,
    ) -> None:
        """
        Checks that two tensors (torch or numpy, they can be mixed) have the same element
        type, the same shape and values within ``|expected - value| <= atol + rtol *
        |expected|``; NaN must be at the same positions.

        >>> import numpy as np, torch
        >>> ExtTestCase().assertEqualArray(torch.tensor([1.0, 2.0]), np.array([1.0, 2.01],
        ...     dtype=np.float32), atol=0.1)
        """
        if not isinstance(expected, _ARRAY_TYPES):
            expected = np.asarray(expected)
        if not isinstance(value, _ARRAY_TYPES):
            value = np.asarray(value)
        err = _array_mismatch(expected, value, atol, rtol)
        if err is not None:
            raise AssertionError(f"{msg}: {err}" if msg else err)

    def assertAlmostEqual(
        self,
        first: Any,
        second: Any,
        places: int | None = None,
        msg: str | None = None,
        delta: float | None = None,
        atol: float | None = None,
        rtol: float = 0,
    ) -> None:
        """
        :meth:`unittest.TestCase.assertAlmostEqual` which also accepts tensors
        and numpy arrays: they are compared with :meth:`assertEqualArray` and
        ``atol`` (default ``delta`` or ``0.5 * 10**-places``, ``places=7``).
        Element types are not compared: ``second`` is cast to the type of ``first``.
        For numbers, ``atol`` and ``rtol`` may replace ``places`` or ``delta``.

        >>> import torch
        >>> ExtTestCase().assertAlmostEqual(torch.tensor([1.0]), [1.00000001])
        """
        if isinstance(first, _ARRAY_TYPES) or isinstance(second, _ARRAY_TYPES):
            if atol is None:
                atol = (
                    delta if delta is not None else 0.5 * 10 ** -(7 if places is None else places)
                )
            e = first if isinstance(first, _ARRAY_TYPES) else np.asarray(first)
            v = second if isinstance(second, _ARRAY_TYPES) else np.asarray(second)
            te, tv = _to_torch(e), _to_torch(v)
            self.assertEqualArray(te, tv.to(te.dtype), atol=atol, rtol=rtol, msg=msg)
            return
        if atol is not None or rtol:
            # tolerance given as atol / rtol: |first - second| <= atol + rtol * |first|
            if places is not None or delta is not None:
                raise TypeError("specify atol/rtol or places or delta, not both")
            delta = (atol or 0) + rtol * abs(first)
        super().assertAlmostEqual(first, second, places=places, msg=msg, delta=delta)

    def assertEqualAny(
        self,
        expected: Any,
        value: Any,
        atol: float = 0,
        rtol: float = 0,
        msg: str | None = None,
    ) -> None:
        """
        Checks that two nested structures (tensors, numpy arrays, numbers, strings, None,
        tuples, lists, dicts, transformers caches, ``ModelOutput``) are equal, the same
        containers and tensors within tolerance (see :meth:`assertEqualArray`).
        The error names the place where they differ,
        e.g. ``expected[1]['past_key_values'].key_0: shape (2, 4, 3, 7) vs (3, 4, 4, 8)``.
        Two DynamicCache must have the same layer types
        (:func:`onnx_diagnostic.cache_helpers.get_cache_layer_types`), the same settings
        (sliding windows, conv kernel sizes, which states are set) and every tensor of their
        canonical flattening equal, named as it names them (``expected.conv_state_0``,
        ``expected.indexer_key_1``...); a layer class it does not know raises its
        ``CacheSerializationError``.

        >>> import torch
        >>> ExtTestCase().assertEqualAny(dict(a=[torch.zeros(2)]), dict(a=[torch.ones(2)]))
        Traceback (most recent call last):
            ...
        AssertionError: expected['a'][0]: 2/2 values differ, max abs diff 1.0 at (0,): ...
        """
        err = _any_mismatch(expected, value, "expected", atol, rtol)
        if err is not None:
            raise AssertionError(f"{msg}: {err}" if msg else err)

    def assertExists(self, path: str | os.PathLike) -> None:
        """
        Checks that a file or a folder exists.

        >>> import os
        >>> ExtTestCase().assertExists(os.getcwd())
        """
        if not os.path.exists(path):
            raise AssertionError(f"{os.fspath(path)!r} does not exist")

    def assertDocstringExamples(self, *modules: Any) -> None:
        """
        Runs the examples written in the docstrings of ``modules`` (modules or their names),
        fails if one of them has no example or if an example fails.

        >>> ExtTestCase().assertDocstringExamples("onnx_diagnostic.doc")
        """
        import doctest
        import importlib

        for module in modules:
            if isinstance(module, str):
                module = importlib.import_module(module)
            res = doctest.testmod(
                module,
                optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                verbose=False,
            )
            if not res.attempted:
                raise AssertionError(f"{module.__name__} has no example in its docstrings")
            if res.failed:
                raise AssertionError(f"{module.__name__}: {res.failed} failed examples")

    def capture(self, fct: Callable[[], Any]) -> tuple[Any, str, str]:
        """
        Runs ``fct()`` and returns ``(result, stdout, stderr)`` with what it printed.

        >>> ExtTestCase().capture(lambda: print("hello") or 3)
        (3, 'hello\\n', '')
        """
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            res = fct()
        return res, out.getvalue(), err.getvalue()


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
