"""
Context managers that can be entered again: :func:`contextlib.contextmanager` makes
objects that work once (``with cm: ...`` a second time raises ``AttributeError: args`` from
deep inside contextlib). The contexts of this package are often kept in a variable and
entered around every export, or nested, so each entry starts a fresh context.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ReusableContext(contextlib.ContextDecorator, Generic[T]):
    """
    A context manager built from a generator function (as :func:`contextlib.contextmanager`
    does) which can be entered any number of times, one after the other or nested: every
    ``__enter__`` starts a new context with the same arguments, ``__exit__`` closes the
    innermost one. It also works as a decorator.

    >>> from onnx_diagnostic.torch_export_patches._reusable import reusable_context
    >>> @reusable_context
    ... def tag(name):
    ...     print("enter", name)
    ...     yield name
    ...     print("exit", name)
    >>> cm = tag("a")
    >>> with cm as v1:
    ...     with cm as v2:
    ...         pass
    enter a
    enter a
    exit a
    exit a
    """

    def __init__(self, func: Callable[..., Iterator[T]], args: tuple, kwargs: dict) -> None:
        self._factory = contextlib.contextmanager(func)
        self._args = args
        self._kwargs = kwargs
        self._active: list[contextlib.AbstractContextManager[T]] = []
        self.__wrapped__ = func

    def _recreate_cm(self) -> ReusableContext[T]:
        # ContextDecorator: a decorated function gets a fresh context at every call
        return ReusableContext(self.__wrapped__, self._args, self._kwargs)

    def __enter__(self) -> T:
        cm = self._factory(*self._args, **self._kwargs)
        value = cm.__enter__()
        self._active.append(cm)
        return value

    def __exit__(self, *exc: Any) -> bool | None:
        if not self._active:
            raise RuntimeError(f"{self.__wrapped__.__name__}: __exit__ without __enter__")
        return self._active.pop().__exit__(*exc)


def reusable_context(func: Callable[..., Iterator[T]]) -> Callable[..., ReusableContext[T]]:
    """Decorator: like :func:`contextlib.contextmanager`, the result can be entered again
    (see :class:`ReusableContext`)."""

    @functools.wraps(func)
    def make(*args: Any, **kwargs: Any) -> ReusableContext[T]:
        return ReusableContext(func, args, kwargs)

    return make
