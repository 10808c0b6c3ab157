"""
Test helpers: :class:`ExtTestCase` (a :class:`unittest.TestCase` with assertions for
tensors and nested structures), version checks, skip decorators and small tools
(:func:`measure_time`, :func:`statistics_on_folder`), with the names and signatures
onnx-diagnostic documents. The version checks and decorators live in two private
modules and are imported from here.
Importing it does not import :epkg:`transformers` nor :epkg:`onnxruntime`.

>>> import torch
>>> from onnx_diagnostic.ext_test_case import ExtTestCase, has_torch
>>> has_torch("2.0")
True
>>> ExtTestCase().assertEqualArray(torch.ones(2), torch.ones(2))
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import shutil
import sys
import unittest
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ._ext_test_requirements import (
    BOOLEAN_VALUES,
    _env_flag,
    has_cuda,
    has_onnx_ir,
    has_onnxruntime,
    has_onnxruntime_genai,
    has_onnxruntime_training,
    has_onnxscript,
    has_sklearn,
    has_torch,
    has_transformers,
    is_apple,
    is_azure,
    is_linux,
    is_windows,
    long_test,
    never_test,
    requires_cache_classes,
    requires_cuda,
    requires_diffusers,
    requires_experimental,
    requires_experimental_experiment,
    requires_numpy,
    requires_onnx,
    requires_onnx_array_api,
    requires_onnx_ir,
    requires_onnxruntime,
    requires_onnxruntime_genai,
    requires_onnxruntime_training,
    requires_onnxscript,
    requires_python,
    requires_sklearn,
    requires_torch,
    requires_transformers,
    requires_zoo,
    skipif_ci_apple,
    skipif_ci_linux,
    skipif_ci_windows,
    unit_test_going,
)
from ._ext_test_tools import (
    get_figure,
    hide_stdout,
    ignore_errors,
    ignore_warnings,
    measure_time,
    statistics_on_file,
    statistics_on_folder,
)
from ._ext_test_onnx import _OnnxAssertions
from ._ext_test_compare import (
    _ARRAY_TYPES,
    _all_mismatches,
    _any_mismatch,
    _array_mismatch,
)
from .helpers.helper import _to_torch, string_type

__all__ = [
    "BOOLEAN_VALUES",
    "ExtTestCase",
    "get_figure",
    "has_cuda",
    "has_onnx_ir",
    "has_onnxruntime",
    "has_onnxruntime_genai",
    "has_onnxruntime_training",
    "has_onnxscript",
    "has_sklearn",
    "has_torch",
    "has_transformers",
    "hide_stdout",
    "ignore_errors",
    "ignore_warnings",
    "is_apple",
    "is_azure",
    "is_linux",
    "is_windows",
    "long_test",
    "measure_time",
    "never_test",
    "requires_cache_classes",
    "requires_cuda",
    "requires_diffusers",
    "requires_experimental",
    "requires_experimental_experiment",
    "requires_numpy",
    "requires_onnx",
    "requires_onnx_array_api",
    "requires_onnx_ir",
    "requires_onnxruntime",
    "requires_onnxruntime_genai",
    "requires_onnxruntime_training",
    "requires_onnxscript",
    "requires_python",
    "requires_sklearn",
    "requires_torch",
    "requires_transformers",
    "requires_zoo",
    "skipif_ci_apple",
    "skipif_ci_linux",
    "skipif_ci_windows",
    "statistics_on_file",
    "statistics_on_folder",
    "unit_test_going",
]


# ----------------------------------------------------------------------------------------
# ExtTestCase
# ----------------------------------------------------------------------------------------


_DUMP_FOLDER = "dump_test"


def _with_msg(text: str, msg: str | None) -> str:
    return f"{msg}: {text}" if msg else text


def _type_names(exc_type: Any) -> str:
    types = exc_type if isinstance(exc_type, tuple) else (exc_type,)
    return " or ".join(t.__name__ for t in types)


def _size(value: Any) -> int:
    """Number of elements of a container, a tensor or an array, 1 for any other object."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, np.ndarray):
        return value.size
    try:
        return len(value)
    except TypeError:
        return 1


def _onnx_text(model: Any) -> str:
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model), load_external_data=False)
    try:
        from .helpers.onnx_helper import pretty_onnx
    except ImportError:
        pretty_onnx = None
    if pretty_onnx is not None:
        return pretty_onnx(model)
    import onnx.printer

    return onnx.printer.to_text(model)


class ExtTestCase(_OnnxAssertions, unittest.TestCase):
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
        onnx-diagnostic's positional order ``(expected, value, atol, rtol)`` is accepted:
        a float third argument is ``atol``, a number in fourth position is ``rtol``.

        >>> import torch
        >>> ExtTestCase().assertAlmostEqual(torch.tensor([1.0]), [1.00000001])
        >>> ExtTestCase().assertAlmostEqual(torch.tensor([1.0]), [1.01], 0.1)
        """
        if isinstance(places, float) and atol is None:
            places, atol = None, places
            if isinstance(msg, (int, float)) and not isinstance(msg, bool):
                msg, rtol = None, msg
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

    # -- output and errors ----------------------------------------------------------------

    def capture(self, fct: Callable[[], Any]) -> tuple[Any, str, str]:
        """
        Runs ``fct()`` and returns ``(result, stdout, stderr)`` with what it printed.
        If ``fct`` raises, the exception goes through with what was printed added as a note.

        >>> ExtTestCase().capture(lambda: print("hello") or 3)
        (3, 'hello\\n', '')
        """
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                res = fct()
        except BaseException as e:
            if out.getvalue() or err.getvalue():
                e.add_note(f"-- stdout --\n{out.getvalue()}\n-- stderr --\n{err.getvalue()}")
            raise
        return res, out.getvalue(), err.getvalue()

    def tryCall(
        self, fct: Callable[[], Any], msg: str | None = None, none_if: str | None = None
    ) -> Any:
        """
        Calls ``fct()``. If it raises, returns None when ``none_if`` is in the message,
        raises ``AssertionError(msg)`` when ``msg`` is given, lets the error go otherwise.

        >>> ExtTestCase().tryCall(lambda: 1 / 0, none_if="division") is None
        True
        """
        try:
            return fct()
        except Exception as e:
            if none_if is not None and none_if in str(e):
                return None
            if msg is None:
                raise
            raise AssertionError(msg) from e

    def assertRaise(
        self,
        fct: Callable[[], Any],
        exc_type: type[BaseException] | tuple[type[BaseException], ...],
        msg: str | None = None,
        look_for: str | None = None,
    ) -> BaseException:
        """
        Checks that ``fct()`` raises an exception of type ``exc_type`` whose message contains
        ``msg`` (or ``look_for``, the name later versions of onnx-diagnostic use) if given,
        and returns the exception.

        >>> e = ExtTestCase().assertRaise(lambda: int("x"), ValueError, "invalid literal")
        >>> type(e).__name__
        'ValueError'
        """
        expected_text = look_for if look_for is not None else msg
        try:
            fct()
        except exc_type as e:
            if expected_text is not None and expected_text not in str(e):
                raise AssertionError(
                    f"{type(e).__name__} raised but {expected_text!r} is not in its message "
                    f"{str(e)!r}"
                ) from e
            return e
        except BaseException as e:
            raise AssertionError(
                f"expected {_type_names(exc_type)}, got {type(e).__name__}: {e}"
            ) from e
        raise AssertionError(f"no exception raised, expected {_type_names(exc_type)}")

    # -- simple assertions ----------------------------------------------------------------

    def assertEmpty(self, value: Any, msg: str | None = None) -> None:
        """
        Checks that ``value`` is None or empty (a container, a string, a tensor or an array
        without element).

        >>> ExtTestCase().assertEmpty([])
        """
        if value is not None and _size(value) != 0:
            raise AssertionError(_with_msg(f"value is not empty: {value!r}", msg))

    def assertNotEmpty(self, value: Any, msg: str | None = None) -> None:
        """
        Checks that ``value`` is not None and not empty (a container, a string, a tensor or
        an array with elements; any other object is not empty).

        >>> ExtTestCase().assertNotEmpty({"a": 1})
        """
        if value is None or _size(value) == 0:
            raise AssertionError(_with_msg(f"value is empty: {value!r}", msg))

    def assertEqualTrue(self, value: Any, msg: str | None = None) -> None:
        """
        Checks that ``value is True`` (not only truthy).

        >>> ExtTestCase().assertEqualTrue(1)
        Traceback (most recent call last):
            ...
        AssertionError: value is not True: 1
        """
        if value is not True:
            raise AssertionError(_with_msg(f"value is not True: {value!r}", msg))

    def assertGreaterOrEqual(self, a: Any, b: Any, msg: str | None = None) -> None:
        """
        Checks that ``a >= b``.

        >>> ExtTestCase().assertGreaterOrEqual(2, 2)
        """
        if not a >= b:
            raise AssertionError(_with_msg(f"{a!r} < {b!r}", msg))

    def assertLessOrEqual(self, a: Any, b: Any, msg: str | None = None) -> None:
        """
        Checks that ``a <= b``.

        >>> ExtTestCase().assertLessOrEqual(1, 2)
        """
        if not a <= b:
            raise AssertionError(_with_msg(f"{a!r} > {b!r}", msg))

    def assertInOr(self, tofind: Sequence[str], text: str, msg: str | None = None) -> None:
        """
        Checks that at least one of the strings ``tofind`` is in ``text``.

        >>> ExtTestCase().assertInOr(("cpu", "cuda"), "runs on cuda:0")
        """
        if isinstance(tofind, str):
            raise TypeError("assertInOr: tofind must be a sequence of strings, not a string")
        if not any(t in text for t in tofind):
            raise AssertionError(_with_msg(f"none of {tuple(tofind)!r} is in {text!r}", msg))

    def assertSetContained(self, set1: Any, set2: Any, msg: str | None = None) -> None:
        """
        Checks that every element of ``set1`` is in ``set2``.

        >>> ExtTestCase().assertSetContained({1}, [1, 2])
        """
        missing = set(set1) - set(set2)
        if missing:
            raise AssertionError(
                _with_msg(f"{sorted(missing, key=repr)!r} of set1 not in set2 {set(set2)!r}", msg)
            )

    def assertStartsWith(self, prefix: str, full: str, msg: str | None = None) -> None:
        """
        Checks that ``full`` starts with ``prefix`` (prefix first, as onnx-diagnostic does).

        >>> ExtTestCase().assertStartsWith("past", "past_key_values")
        """
        if not full.startswith(prefix):
            raise AssertionError(_with_msg(f"{full!r} does not start with {prefix!r}", msg))

    def assertEndsWith(self, suffix: str, full: str, msg: str | None = None) -> None:
        """
        Checks that ``full`` ends with ``suffix``.

        >>> ExtTestCase().assertEndsWith(".onnx", "model.onnx")
        """
        if not full.endswith(suffix):
            raise AssertionError(_with_msg(f"{full!r} does not end with {suffix!r}", msg))

    def assertHasAttr(self, obj: Any, name: str, msg: str | None = None) -> None:
        """
        Checks that ``obj`` has an attribute ``name``.

        >>> ExtTestCase().assertHasAttr([], "append")
        """
        if not hasattr(obj, name):
            raise AssertionError(
                _with_msg(f"{type(obj).__name__} object has no attribute {name!r}", msg)
            )

    # -- arrays and structures ------------------------------------------------------------

    def assertEqualArrays(
        self,
        expected: Sequence[Any],
        value: Sequence[Any],
        atol: float = 0,
        rtol: float = 0,
        msg: str | None = None,
    ) -> None:
        """
        Checks two sequences of tensors have the same length and the same tensors
        (see :meth:`assertEqualArray`), the error names the position.

        >>> import torch
        >>> ExtTestCase().assertEqualArrays([torch.ones(2)], [torch.ones(2)])
        """
        if len(expected) != len(value):
            raise AssertionError(_with_msg(f"length {len(expected)} vs {len(value)}", msg))
        for i, (e, v) in enumerate(zip(expected, value)):
            self.assertEqualArray(e, v, atol=atol, rtol=rtol, msg=_with_msg(f"[{i}]", msg))

    def assertEqualArrayAny(
        self, expected: Any, value: Any, atol: float = 0, rtol: float = 0, msg: str | None = None
    ) -> None:
        """
        Same as :meth:`assertEqualAny` but reports every discrepancy between the elements of
        lists, tuples and dictionaries, not only the first one.

        >>> import torch
        >>> ExtTestCase().assertEqualArrayAny([torch.zeros(1), 1], [torch.ones(1), 2])
        Traceback (most recent call last):
            ...
        AssertionError: Found 2 discrepancies
        expected[0]: 1/1 values differ, max abs diff 1.0 at (0,): expected 0.0, got 1.0 ...
        expected[1]: 1 vs 2 (atol=0, rtol=0)
        """
        errors = _all_mismatches(expected, value, "expected", atol, rtol)
        if errors:
            text = f"Found {len(errors)} discrepanc{'y' if len(errors) == 1 else 'ies'}"
            raise AssertionError(_with_msg("\n".join([text, *errors]), msg))

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """
        Converts a tensor into a numpy array, ``bfloat16`` and ``float8`` tensors become
        arrays of the ``ml_dtypes`` types; a numpy array is returned as it is.

        >>> import torch
        >>> ExtTestCase().to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype.name
        'bfloat16'
        """
        if isinstance(tensor, np.ndarray):
            return tensor
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"to_numpy: tensor must be a torch.Tensor, not {type(tensor)}")
        from .helpers.ort_session import torch_to_numpy

        return torch_to_numpy(tensor)

    def assertEqualDataFrame(self, d1: Any, d2: Any, msg: str | None = None, **kwargs) -> None:
        """
        Checks that two :class:`pandas.DataFrame` are equal
        (:func:`pandas.testing.assert_frame_equal`, ``kwargs`` are passed to it).

        >>> import pandas
        >>> ExtTestCase().assertEqualDataFrame(pandas.DataFrame({"a": [1]}),
        ...                                    pandas.DataFrame({"a": [1]}))
        """
        from pandas.testing import assert_frame_equal

        try:
            assert_frame_equal(d1, d2, **kwargs)
        except AssertionError as e:
            raise AssertionError(_with_msg(str(e), msg)) from e

    # -- files ----------------------------------------------------------------------------

    def get_dump_file(self, name: str, folder: str | None = None) -> str:
        """
        Returns the path of a file ``name`` in ``folder`` (``dump_test`` by default, created
        if needed; ``""`` means the current folder), where tests dump what they produce.

        >>> ExtTestCase().get_dump_file("model.onnx", folder="")
        'model.onnx'
        """
        if not name:
            raise ValueError("get_dump_file: name must not be empty")
        folder = _DUMP_FOLDER if folder is None else folder
        if folder:
            os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, name)

    def get_dump_folder(self, folder: str) -> str:
        """
        Returns ``dump_test/<folder>``, created if needed.

        .. code-block:: python

            path = self.get_dump_folder("test_export")   # dump_test/test_export
        """
        if not folder:
            raise ValueError("get_dump_folder: folder must not be empty")
        path = os.path.join(_DUMP_FOLDER, folder)
        os.makedirs(path, exist_ok=True)
        return path

    def clean_dump(self, folder: str = _DUMP_FOLDER) -> None:
        """
        Removes everything inside ``folder`` (``dump_test`` by default) and keeps the folder;
        a missing folder is left missing.

        .. code-block:: python

            self.clean_dump()   # empties dump_test
        """
        if not os.path.isdir(folder):
            return
        for item in os.listdir(folder):
            path = os.path.join(folder, item)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def dump_onnx(self, name: str, proto: Any, folder: str | None = None) -> str:
        """
        Saves an ONNX model (anything with ``SerializeToString``) into
        :meth:`get_dump_file` and returns the path.

        .. code-block:: python

            path = self.dump_onnx("test_model.onnx", onx)
        """
        if not hasattr(proto, "SerializeToString"):
            raise TypeError(f"dump_onnx: proto must be a protobuf message, not {type(proto)}")
        path = self.get_dump_file(name, folder=folder)
        with open(path, "wb") as f:
            f.write(proto.SerializeToString())
        return path

    def dump_text(self, name: str, text: str, folder: str | None = None) -> str:
        """
        Writes ``text`` into :meth:`get_dump_file` and returns the path.

        .. code-block:: python

            path = self.dump_text("graph.txt", str(ep.graph))
        """
        path = self.get_dump_file(name, folder=folder)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def print_model(self, model: Any) -> None:
        """
        Prints an ONNX model (a ``ModelProto`` or a file name) in a readable text form.

        .. code-block:: python

            self.print_model(onx)
        """
        print(_onnx_text(model))

    print_onnx = print_model

    # -- onnxruntime ----------------------------------------------------------------------

    def make_inference_session(self, onx: Any, cpu: bool = True) -> Any:
        """
        Returns an :class:`onnxruntime.InferenceSession` for a ``ModelProto``, bytes or a file
        name, on CPU, or with CUDA first if ``cpu`` is False and onnxruntime has it.

        .. code-block:: python

            sess = self.make_inference_session(onx)
        """
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if not cpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        if hasattr(onx, "SerializeToString"):
            onx = onx.SerializeToString()
        elif isinstance(onx, os.PathLike):
            onx = os.fspath(onx)
        return onnxruntime.InferenceSession(onx, providers=providers)

    def check_ort(self, onx: Any) -> Any:
        """
        Checks onnxruntime can load the model on CPU and returns the session
        (see :meth:`make_inference_session`).

        .. code-block:: python

            sess = self.check_ort(onx)
        """
        return self.make_inference_session(onx, cpu=True)

    # -- misc -----------------------------------------------------------------------------

    @classmethod
    def todo(cls, f: Callable, msg: str) -> None:
        """
        Records a note printed on stderr once every test of the class has run.

        .. code-block:: python

            def test_something(self):
                self.todo(self.test_something, "also test bfloat16")
        """
        if "_todos" not in cls.__dict__:
            cls._todos = []
        cls._todos.append((f, msg))

    @classmethod
    def tearDownClass(cls) -> None:
        """Prints the notes recorded by :meth:`todo`."""
        for f, msg in cls.__dict__.get("_todos", []):
            sys.stderr.write(f"TODO {cls.__name__}::{getattr(f, '__name__', f)}: {msg}\n")
        super().tearDownClass()

    def _debug(self) -> bool:
        """Tells if the environment variable ``DEBUG`` is set to ``1``."""
        return _env_flag("DEBUG")

    @property
    def verbose(self) -> int:
        """
        The value of the environment variable ``VERBOSE`` (0 if not set).

        >>> isinstance(ExtTestCase().verbose, int)
        True
        """
        value = os.environ.get("VERBOSE", "0") or "0"
        try:
            return int(value)
        except ValueError as e:
            raise ValueError(f"environment variable VERBOSE={value!r} is no integer") from e

    def unit_test_going(self) -> bool:
        """Same as the function :func:`unit_test_going`."""
        return unit_test_going()

    def string_type(self, *args, **kwargs) -> str:
        """
        Calls :func:`onnx_diagnostic.helpers.string_type`.

        >>> import torch
        >>> ExtTestCase().string_type(torch.ones(2), with_shape=True)
        'T1s2'
        """
        return string_type(*args, **kwargs)

    def max_diff(self, *args, **kwargs) -> dict[str, Any]:
        """
        Calls :func:`onnx_diagnostic.helpers.max_diff`.

        >>> import torch
        >>> ExtTestCase().max_diff(torch.ones(2), torch.ones(2))["abs"]
        0.0
        """
        from .helpers.helper import max_diff

        return max_diff(*args, **kwargs)

    def subloop(self, *args: Any, verbose: int = 0) -> Iterator[Any]:
        """
        Iterates over ``args[0]`` (one argument) or over the cartesian product of the
        arguments, each iteration inside :meth:`unittest.TestCase.subTest`.

        .. code-block:: python

            for dtype, device in self.subloop([torch.float16, torch.float32], ["cpu"]):
                ...
        """
        if not args:
            raise TypeError("subloop expects at least one iterable")
        items = args[0] if len(args) == 1 else itertools.product(*args)
        for it in items:
            with self.subTest(case=it):
                if verbose:
                    print(f"[subloop] it={it!r}")
                yield it

    @contextlib.contextmanager
    def set_env(self, varname: str, value: str) -> Iterator[None]:
        """
        Sets the environment variable ``varname`` to ``value`` inside the context and
        restores it (or removes it) on exit.

        >>> import os
        >>> with ExtTestCase().set_env("ONNX_DIAGNOSTIC_X", "1"):
        ...     os.environ["ONNX_DIAGNOSTIC_X"]
        '1'
        >>> "ONNX_DIAGNOSTIC_X" in os.environ
        False
        """
        if not isinstance(value, str):
            raise TypeError(f"set_env: value must be a string, not {type(value)}")
        old = os.environ.get(varname)
        os.environ[varname] = value
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(varname, None)
            else:
                os.environ[varname] = old
