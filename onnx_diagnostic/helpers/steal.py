"""
Spies on the ``forward`` method of modules to see what they really receive,
and optionally keeps a copy of every input and output in an ONNX file.

An LLM's ``forward`` is called by ``generate`` with arguments the user never writes,
:func:`steal_forward` shows them::

    +model -- stolen forward for class LLM -- iteration 0
      <- args=(T7s2x30,) --- kwargs={}
      -> T1s2x30x16
    -model.

>>> import torch
>>> from onnx_diagnostic.helpers.steal import steal_forward
>>> model = torch.nn.Linear(4, 2)
>>> with steal_forward(model):
...     _ = model(torch.ones(3, 4))
+ -- stolen forward for class Linear -- iteration 0
  <- args=(T1s3x4,) --- kwargs={}
  -> T1s3x2
-.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .helper import check_output_file, flatten_object, string_type

logger = logging.getLogger(__name__)

__all__ = ["steal_forward"]


def _nbytes(obj: Any) -> int:
    try:
        tensors = flatten_object(obj)
    except Exception:  # an object flatten_object does not know holds no tensor we count
        return 0
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _cpu_copy(obj: Any) -> Any:
    from .torch_helper import to_any, torch_deepcopy

    return to_any(torch_deepcopy(obj), "cpu")


_NOT_COPIED = "cannot be copied: "


def _cpu_copy_partial(obj: Any, where: str, active: frozenset[int] = frozenset()) -> Any:
    """A CPU copy of ``obj``; what cannot be copied (a generator...) becomes an
    :class:`Unstored <onnx_diagnostic.helpers.mini_onnx_builder.Unstored>` and is printed,
    the rest of the structure is copied: the model's call never fails because of the copy."""
    from .mini_onnx_builder import Unstored

    if type(obj) in (list, tuple, dict) and id(obj) in active:
        reason = (
            f"{_NOT_COPIED}the structure contains itself "
            f"(this {type(obj).__name__} is one of its ancestors)"
        )
        print(f"-- not stored: {where}: {reason}")
        return Unstored(type(obj).__name__, reason)
    try:
        return _cpu_copy(obj)
    except Exception as e:
        error = e
    if type(obj) in (list, tuple, dict):
        inner = active | {id(obj)}
        if type(obj) is dict:
            return {k: _cpu_copy_partial(v, f"{where}[{k!r}]", inner) for k, v in obj.items()}
        return type(obj)(_cpu_copy_partial(v, f"{where}[{i}]", inner) for i, v in enumerate(obj))
    reason = f"{_NOT_COPIED}{type(error).__name__}: {error}"
    print(f"-- not stored: {where}: {reason}")
    return Unstored(type(obj).__name__, reason)


@dataclass
class _Storage:
    """Copies of the inputs and outputs, up to ``limit`` bytes."""

    limit: int
    verbose: int
    fprint: Callable[[Any], str]
    objects: dict[tuple[str, int, str], Any] = field(default_factory=dict)
    size: int = 0
    stopped: bool = False

    def store(self, key: tuple[str, int, str], obj: Any) -> int | None:
        """Stores a CPU copy of ``obj``, returns its size or None if nothing was stored."""
        if self.stopped:
            return None
        size = _nbytes(obj)
        if self.size + size > self.limit:
            self.stopped = True
            # printed once, not logged as well: a logger without handler prints warnings too
            print(
                f"-- stops storing, storage_limit={self.limit} bytes reached "
                f"({len(self.objects)} objects stored, {self.size} bytes, "
                f"{key} would need {size} more)"
            )
            logger.debug("storage limit %d reached at key %s", self.limit, key)
            return None
        self.objects[key] = _cpu_copy_partial(obj, f"obj[{key!r}]")
        self.size += size
        return size


def _check_models(model_or_list: Any) -> list[tuple[str, torch.nn.Module]]:
    if isinstance(model_or_list, torch.nn.Module):
        return [("", model_or_list)]
    if not isinstance(model_or_list, (list, tuple)):
        raise TypeError(
            "model_or_list must be a torch.nn.Module or a list of (name, module), "
            f"not {type(model_or_list).__name__}"
        )
    pairs = []
    for i, item in enumerate(model_or_list):
        if (
            not isinstance(item, (tuple, list))
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], torch.nn.Module)
        ):
            raise TypeError(
                f"model_or_list[{i}] must be a pair (name, torch.nn.Module), "
                f"not {string_type(item)}"
            )
        pairs.append((item[0], item[1]))
    return pairs


def _make_wrapper(
    name: str,
    module: torch.nn.Module,
    original: Callable,
    counters: dict[str, int],
    show: Callable[[Any], str],
    storage: _Storage | None,
    verbose: int,
    dump_drop: frozenset[str] = frozenset(),
) -> Callable:
    cls_name = type(module).__name__

    # imported here: torch_helper imports this module at its end
    from .torch_helper import is_tracing

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if is_tracing():
            return original(*args, **kwargs)
        iteration = counters.get(name, 0)
        counters[name] = iteration + 1
        print(f"+{name} -- stolen forward for class {cls_name} -- iteration {iteration}")
        print(f"  <- args={show(args)} --- kwargs={show(kwargs)}")
        if storage is not None:
            dropped = dump_drop & set(kwargs)
            if dropped and verbose:
                print(f"-- not stored: {sorted(dropped)} (dump_drop)")
            kept = {k: v for k, v in kwargs.items() if k not in dropped}
            storage.store((name, iteration, "I"), (args, kept))
        res = original(*args, **kwargs)
        print(f"  -> {show(res)}")
        print(f"-{name}.")
        if storage is not None:
            size = storage.store((name, iteration, "O"), res)
            if verbose and size is not None:
                print(f"-- stores key={(name, iteration)}, size {size // 2**10}Kb -- {show(res)}")
        return res

    # generate inspects the signature of forward to decide which arguments it sends
    wrapper.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def steal_forward(
    model_or_list: torch.nn.Module | list[tuple[str, torch.nn.Module]],
    fprint: Callable[..., str] = string_type,
    dump_file: str | None = None,
    verbose: int = 0,
    storage_limit: int = 2**27,
    with_min_max: bool = False,
    dump_drop: set[str] | list[str] | tuple[str, ...] | None = None,
    submodules: bool = False,
    **kwargs: Any,
) -> Iterator[dict[tuple[str, int, str], Any]]:
    """
    Replaces the ``forward`` method of one module or several named modules to print
    what each call receives and returns. Nothing is printed while the model is being
    exported or compiled. The original methods are restored on exit, also when an
    exception escapes.

    :param model_or_list: a module, or a list of ``(name, module)``
    :param fprint: function describing an object, called with ``with_shape=True``,
        ``with_min_max`` and ``kwargs`` when it is :func:`string_type`,
        with ``kwargs`` only otherwise
    :param dump_file: if given, a copy (moved to CPU) of every input and output is kept,
        keyed ``(name, iteration, "I")`` for ``(args, kwargs)`` and ``(name, iteration,
        "O")`` for the output, and saved in that ONNX file on exit
        (read it with :func:`create_input_tensors_from_onnx_model
        <onnx_diagnostic.helpers.mini_onnx_builder.create_input_tensors_from_onnx_model>`);
        its folder must exist (checked before anything runs); a value that cannot be stored
        (a ``set``...) is replaced in the file by an :class:`Unstored
        <onnx_diagnostic.helpers.mini_onnx_builder.Unstored>` naming its type, the rest is
        kept, and its path is printed; nothing is written when nothing was stored
    :param verbose: prints what is stored and dumped if > 0
    :param storage_limit: the copies stop (with a message, never an error) when they would
        take more than this number of bytes; 0 with a ``dump_file`` is refused (nothing could
        be stored)
    :param with_min_max: prints min, max and mean of every tensor
    :param dump_drop: names of keyword arguments which are not stored (too big, or
        not storable): printed, never kept nor dumped; ignored without ``dump_file``
    :param submodules: if True, ``model_or_list`` must be a module and every one of its
        submodules (itself included) is spied on too, named ``<path>-<class>``
        (``-LLM`` for the module itself, ``decoder.attention-MultiAttentionBlock``...);
        onnx-diagnostic also added the line of the ``forward`` and an indentation
    :param kwargs: sent to ``fprint``
    :return: the dictionary of the stored copies (empty without ``dump_file``)

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU())
    >>> with steal_forward([("first", model[0])], with_min_max=True):
    ...     _ = model(torch.zeros(1, 4))  # doctest: +ELLIPSIS
    +first -- stolen forward for class Linear -- iteration 0
      <- args=(T1s1x4[0.0,0.0:A0.0],) --- kwargs={}
      -> T1s1x2[...]
    -first.
    """
    if not isinstance(submodules, bool):
        raise TypeError(f"submodules must be a bool, not {submodules!r}")
    if submodules:
        if not isinstance(model_or_list, torch.nn.Module):
            raise TypeError(
                "submodules=True needs a torch.nn.Module for model_or_list, "
                f"not {type(model_or_list).__name__}"
            )
        model_or_list = [
            (f"{path}-{type(m).__name__}", m) for path, m in model_or_list.named_modules()
        ]
    models = _check_models(model_or_list)
    if dump_drop is None:
        drop: frozenset[str] = frozenset()
    elif isinstance(dump_drop, (set, frozenset, list, tuple)) and all(
        isinstance(k, str) for k in dump_drop
    ):
        drop = frozenset(dump_drop)
    else:
        raise TypeError(f"dump_drop must be None or a set of argument names, not {dump_drop!r}")
    if not isinstance(storage_limit, int) or isinstance(storage_limit, bool) or storage_limit < 0:
        raise ValueError(f"storage_limit must be a non-negative int, not {storage_limit!r}")
    if dump_file is not None:
        _check_dump_file(dump_file, storage_limit)
    if fprint is string_type:
        options = dict(with_shape=True, with_min_max=with_min_max, **kwargs)
    else:
        options = dict(kwargs)

    def show(obj: Any) -> str:
        return fprint(obj, **options)

    storage = _Storage(storage_limit, verbose, show) if dump_file else None
    counters: dict[str, int] = {}
    saved: list[tuple[torch.nn.Module, bool, Any]] = []
    failing = False
    try:
        for name, module in models:
            had = "forward" in module.__dict__
            previous = module.__dict__.get("forward", None)
            saved.append((module, had, previous))
            module.forward = _make_wrapper(
                name, module, module.forward, counters, show, storage, verbose, drop
            )
        yield storage.objects if storage is not None else {}
    except BaseException:
        failing = True
        raise
    finally:
        for module, had, previous in reversed(saved):
            if had:
                module.__dict__["forward"] = previous
            else:
                module.__dict__.pop("forward", None)
        if storage is not None:
            _dump(storage, dump_file, verbose, failing=failing)


def _check_dump_file(dump_file: Any, storage_limit: int) -> None:
    """Refuses a dump the context could not write, before the model runs."""
    if not isinstance(dump_file, (str, os.PathLike)):
        raise TypeError(f"dump_file must be a file name, not {type(dump_file).__name__}")
    if storage_limit == 0:
        raise ValueError(
            f"storage_limit=0 stores nothing, dump_file={str(dump_file)!r} would be empty; "
            "give a positive limit in bytes or dump_file=None"
        )
    check_output_file(dump_file, "dump_file", nothing="nothing ran")


def _dump(storage: _Storage, dump_file: str, verbose: int, failing: bool) -> None:
    from .mini_onnx_builder import (
        create_onnx_model_from_input_tensors,
        save_onnx_dump,
        unstored_values,
    )

    if not storage.objects:
        print(f"-- nothing was stored, {dump_file!r} is not written")
        return
    if verbose:
        print(f"-- gather stored {len(storage.objects)} objects, size={storage.size // 2**20} Mb")
    try:
        # errors="mark": a value the dump cannot hold is named and replaced, the rest is kept
        proto = create_onnx_model_from_input_tensors(storage.objects, errors="mark")
        for where, reason in unstored_values(proto):
            if not reason.startswith(_NOT_COPIED):  # those were printed when the copy failed
                print(f"-- not stored: {where}: {reason}")
        if verbose:
            print("-- dumps stored objects")
        save_onnx_dump(proto, dump_file)
    except Exception as e:
        message = (
            f"unable to dump the {len(storage.objects)} stored objects into {dump_file!r}: {e}; "
            "they are still in the dictionary the with statement returned"
        )
        if not failing:
            raise RuntimeError(message) from e
        # the exception raised inside the context matters more
        logger.error("%s", message)
        print(f"-- {message}")
        return
    if verbose:
        print("-- done dump stored objects")
