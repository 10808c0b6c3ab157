"""
Decorators and small tools of :mod:`onnx_diagnostic.ext_test_case` (import them from
there): :func:`ignore_warnings`, :func:`ignore_errors`, :func:`hide_stdout`,
:func:`measure_time`, :func:`statistics_on_folder`, :func:`get_figure`.

>>> from onnx_diagnostic.ext_test_case import measure_time
>>> measure_time("x + 1", context={"x": 1}, repeat=2, number=3)["number"]
3
"""

from __future__ import annotations

import contextlib
import functools
import glob
import inspect
import io
import os
import re
import sys
import timeit
import unittest
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _warning_class(w: Any) -> type[Warning]:
    if w == "TracerWarning":
        return torch.jit.TracerWarning
    if not (isinstance(w, type) and issubclass(w, Warning)):
        raise TypeError(f"ignore_warnings expects Warning classes, got {w!r}")
    return w


def ignore_warnings(warns: type[Warning] | str | list | tuple) -> Callable:
    """
    Decorator: the test ignores warnings of the given categories.

    :param warns: a warning class or a list of warning classes, the string
        ``"TracerWarning"`` stands for :class:`torch.jit.TracerWarning`

    .. code-block:: python

        @ignore_warnings((UserWarning, FutureWarning))
        def test_something(self): ...
    """
    items = warns if isinstance(warns, (list, tuple)) else (warns,)
    categories = tuple(_warning_class(w) for w in items)

    def wrapper(fct: Callable) -> Callable:
        @functools.wraps(fct)
        def call(*args, **kwargs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", categories)
                return fct(*args, **kwargs)

        return call

    return wrapper


def ignore_errors(errors: type[BaseException] | tuple[type[BaseException], ...]) -> Callable:
    """
    Decorator: the test is skipped (not failed) if it raises one of ``errors``,
    for errors expected sometimes (no network...).

    :param errors: an exception class or a tuple of exception classes

    >>> import unittest
    >>> class T(unittest.TestCase):
    ...     @ignore_errors(OSError)
    ...     def test_network(self):
    ...         raise OSError("no connection")
    >>> r = unittest.TestResult()
    >>> _ = T("test_network").run(r)
    >>> r.skipped[0][1]
    'expected error OSError: no connection'
    """
    items = errors if isinstance(errors, tuple) else (errors,)
    for e in items:
        if not (isinstance(e, type) and issubclass(e, BaseException)):
            raise TypeError(f"ignore_errors expects exception classes, got {e!r}")

    def wrapper(fct: Callable) -> Callable:
        @functools.wraps(fct)
        def call(*args, **kwargs):
            try:
                return fct(*args, **kwargs)
            except items as e:
                raise unittest.SkipTest(f"expected error {type(e).__name__}: {e}") from e

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
# tools
# ----------------------------------------------------------------------------------------


def measure_time(
    stmt: str | Callable[[], Any],
    context: dict[str, Any] | None = None,
    repeat: int = 10,
    number: int = 50,
    warmup: int = 1,
    div_by_number: bool = True,
    max_time: float | None = None,
) -> dict[str, Any]:
    """
    Measures the time a statement takes with :mod:`timeit`.

    :param stmt: a string (evaluated with ``context`` as globals) or a callable
    :param context: variables the statement uses
    :param repeat: number of measures
    :param number: executions in one measure
    :param warmup: executions before measuring
    :param div_by_number: times are divided by ``number`` (time of one execution)
    :param max_time: if given, the statement runs in growing batches until the total time
        reaches ``max_time`` seconds, ``repeat`` is then ignored and ``div_by_number`` must
        be True
    :return: dictionary with keys ``average``, ``deviation``, ``min_exec``, ``max_exec``,
        ``repeat``, ``number``, ``ttime`` (total time), ``warmup_time``, and ``size``
        (length of ``context["values"]``) or ``context_size``

    >>> from math import cos
    >>> res = measure_time(lambda: cos(0.5), repeat=3, number=5)
    >>> sorted(res)[:4], res["repeat"], res["number"]
    (['average', 'context_size', 'deviation', 'max_exec'], 3, 5)
    """
    if not callable(stmt) and not isinstance(stmt, str):
        raise TypeError(f"measure_time: stmt must be a string or a callable, not {type(stmt)}")
    if repeat < 1 or number < 1:
        raise ValueError(f"measure_time: repeat={repeat} and number={number} must be >= 1")
    if max_time is not None and not div_by_number:
        raise ValueError("measure_time: div_by_number must be True when max_time is given")
    context = context or {}
    timer = timeit.Timer(stmt, globals=context) if isinstance(stmt, str) else timeit.Timer(stmt)
    warmup_time = timer.timeit(warmup) if warmup > 0 else 0.0
    if max_time is None:
        times = np.array(timer.repeat(repeat=repeat, number=number), dtype=np.float64)
        if div_by_number:
            times /= number
        mes: dict[str, Any] = dict(
            average=float(times.mean()),
            deviation=float(times.std()),
            min_exec=float(times.min()),
            max_exec=float(times.max()),
            repeat=repeat,
            number=number,
            ttime=float(times.sum()),
        )
    else:
        # batches of growing size until the total time reaches max_time
        counts, durations, batch = [], [], 1
        while sum(durations) < max_time:
            counts.append(batch)
            durations.append(timer.timeit(batch))
            batch *= 2
        n, d = np.array(counts, dtype=np.float64), np.array(durations)
        per_call = d / n
        mean = d.sum() / n.sum()
        mes = dict(
            average=float(mean),
            deviation=float((((per_call - mean) ** 2 * n).sum() / n.sum()) ** 0.5),
            min_exec=float(per_call.min()),
            max_exec=float(per_call.max()),
            repeat=1,
            number=int(n.sum()),
            ttime=float(d.sum()),
        )
    if "values" in context:
        values = context["values"]
        mes["size"] = values.shape[0] if hasattr(values, "shape") else len(values)
    else:
        mes["context_size"] = sys.getsizeof(context)
    mes["warmup_time"] = warmup_time
    return mes


_TEXT_EXTENSIONS = {".py", ".rst", ".md", ".txt"}


def statistics_on_file(filename: str | os.PathLike) -> dict[str, Any]:
    """
    Counts the lines holding at least one letter or digit and the non blank characters
    of a text file (``.py``, ``.rst``, ``.md``, ``.txt``); returns only its size otherwise.

    >>> import onnx_diagnostic.ext_test_case as m
    >>> stat = statistics_on_file(m.__file__)
    >>> stat["ext"], stat["lines"] > 100
    ('.py', True)
    """
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"statistics_on_file: filename={os.fspath(filename)!r} is no file")
    ext = os.path.splitext(filename)[-1]
    if ext not in _TEXT_EXTENSIONS:
        return {"size": os.stat(filename).st_size}
    lines = chars = 0
    with open(filename, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            chars += len(text.replace(" ", ""))
            if any(c.isalnum() for c in text):
                lines += 1
    return dict(lines=lines, chars=chars, ext=ext)


def statistics_on_folder(
    folder: str | os.PathLike | list[str],
    pattern: str = ".*[.]((py|rst))$",
    aggregation: int = 0,
) -> list[dict[str, Any]]:
    """
    Calls :func:`statistics_on_file` on every file of ``folder`` (recursively) whose relative
    path matches ``pattern``.

    :param folder: a folder or a list of folders
    :param pattern: regular expression the relative file names must match
    :param aggregation: if > 0, adds ``dir``, the first ``aggregation`` subfolders of every
        file, to group the results
    :return: one dictionary per file, with its ``name``

    >>> import os, onnx_diagnostic.ext_test_case as m
    >>> rows = statistics_on_folder(os.path.dirname(m.__file__), aggregation=1)
    >>> any(r["name"] == "ext_test_case.py" and r["dir"] == "" for r in rows)
    True
    """
    if isinstance(folder, list):
        rows = []
        for sub in folder:
            last = os.path.basename(os.path.normpath(sub))
            part = statistics_on_folder(sub, pattern=pattern, aggregation=max(aggregation - 1, 0))
            if aggregation > 0:
                for row in part:
                    row["dir"] = os.path.join(last, row.get("dir", ""))
            rows.extend(part)
        return rows
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"statistics_on_folder: folder={os.fspath(folder)!r} is no folder")
    reg = re.compile(pattern)
    rows = []
    for name in sorted(glob.glob("**/*", root_dir=folder, recursive=True)):
        full = os.path.join(folder, name)
        if not reg.match(name) or os.path.isdir(full):
            continue
        stat = statistics_on_file(full)
        stat["name"] = name
        if aggregation > 0:
            parts = os.path.dirname(name).replace("\\", "/").split("/")
            stat["dir"] = "/".join(parts[:aggregation])
        rows.append(stat)
    return rows


def get_figure(ax: Any) -> Any:
    """
    Returns the matplotlib figure of an axis or of an array of axes
    (what :func:`matplotlib.pyplot.subplots` returns).

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, axs = plt.subplots(2, 2)
    >>> get_figure(axs) is fig
    True
    >>> plt.close(fig)
    """
    if hasattr(ax, "get_figure"):
        return ax.get_figure()
    arr = np.asarray(ax, dtype=object)
    if arr.size == 0:
        raise ValueError("get_figure: ax is an empty array of axes")
    return arr.reshape(-1)[0].get_figure()
