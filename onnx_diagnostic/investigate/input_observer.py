"""
Records what a model's ``forward`` really receives (usually through ``generate``) and
infers from it the arguments and the dynamic shapes to export the model, then checks
the exported ONNX model on every recorded call.

It handles the prefill / decode pattern of LLMs: the first call has no cache
(and possibly ``pixel_values``), the next ones have a cache (and no ``pixel_values``).
An argument missing in a call is replaced by the value given in ``value_if_missing``
or, when arguments are inferred, by an empty tensor.

>>> import torch
>>> from onnx_diagnostic.investigate.input_observer import InputObserver
>>> class AddModel(torch.nn.Module):
...     def forward(self, x, y):
...         return x + y
>>> model, observer = AddModel(), InputObserver()
>>> with observer(model):
...     for n in (2, 3, 4):
...         _ = model(torch.randn(n, n + 4), torch.randn(1, n + 4))
>>> observer.num_obs()
3
>>> observer.infer_dynamic_shapes()
({0: DimHint(DYNAMIC), 1: DimHint(DYNAMIC)}, {1: DimHint(DYNAMIC)})
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..export.dynamic_shapes import (
    DynamicShapesError,
    _Collector,
    _DynamicDim,
    _nest_var_keyword,
    _replace,
)
from ..helpers import compat
from ..helpers.helper import max_diff, string_type
from ..helpers.rt_helper import make_session
from ..helpers.torch_helper import is_tracing

logger = logging.getLogger(__name__)

__all__ = ["ArgumentInfo", "InputObserver", "InputObserverInfo"]

_CONSTANTS = (bool, int, float, str)


def _tensors(obj: Any) -> list[torch.Tensor]:
    _ensure_registered(obj)
    return [t for t in pytree.tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def _ensure_registered(obj: Any) -> None:
    from ..helpers import compat

    if compat.loaded_cache_module() is not None:
        # importing it registers the caches with the canonical flattening
        from .. import cache_helpers  # noqa: F401


def _is_present(value: Any) -> bool:
    """An argument counts when it holds at least one tensor
    (None, an empty cache, an empty list count as missing)."""
    if value is None or isinstance(value, _CONSTANTS):
        return False
    if isinstance(value, torch.Tensor):
        return True
    try:
        return bool(_tensors(value))
    except Exception:  # not flattenable, kept as it is, the structure check reports it
        return True


@dataclass
class _Call:
    """One recorded call: tensor arguments by name, constants, output, latency."""

    values: dict[str, Any]
    constants: dict[str, Any]
    positional: bool
    output: Any
    latency: float


def _infer_dynamic_dimensions(
    shape_list: Sequence[tuple[int, ...] | torch.Size], set_batch_dimension: bool = False
) -> list[int]:
    """
    Returns the dimensions which differ in a list of shapes of the same tensor
    (the sizes it took in several calls).

    :param shape_list: the shapes, all of the same rank, at least one
    :param set_batch_dimension: the first dimension is dynamic even if it never changes
    :return: the sorted list of dynamic dimensions

    >>> _infer_dynamic_dimensions([(2, 3, 8), (2, 4, 8)])
    [1]
    >>> _infer_dynamic_dimensions([(2, 3), (2, 3)], set_batch_dimension=True)
    [0]
    """
    shapes = list(shape_list)
    if not shapes:
        raise ValueError("_infer_dynamic_dimensions: shape_list is empty")
    for i, shape in enumerate(shapes):
        if not isinstance(shape, (tuple, list, torch.Size)) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise TypeError(
                f"_infer_dynamic_dimensions: shape_list[{i}]={shape!r} is not a shape "
                "(a tuple of ints)"
            )
    ranks = sorted({len(s) for s in shapes})
    if len(ranks) > 1:
        raise ValueError(
            f"_infer_dynamic_dimensions: shape_list holds shapes of ranks {ranks}, "
            f"they must all have the same rank: {[tuple(s) for s in shapes]}"
        )
    return [
        axis
        for axis in range(ranks[0])
        if len({s[axis] for s in shapes}) > 1 or (axis == 0 and set_batch_dimension)
    ]


@dataclass(frozen=True)
class ArgumentInfo:
    """
    What the recorded calls gave for one argument.

    :param name: argument name (``args[i]`` for an argument caught by ``*args``)
    :param kinds: the type names seen (``Tensor``, ``DynamicCache``...), in order
    :param shapes: one entry per call, the shapes of the flattened tensors,
        None where the call lacks the argument
    :param dtypes: dtypes of the flattened tensors (first call having the argument)
    :param missing_in: indices of the calls which lack the argument
    :param dynamic_dimensions: for every flattened tensor, the dimensions that differ
        between the calls having the argument (see :func:`_infer_dynamic_dimensions`),
        None if the calls do not give the same number of tensors or ranks
    :param value_if_missing: True if the observer was given a value for the calls
        lacking it
    """

    name: str
    kinds: tuple[str, ...]
    shapes: tuple[tuple[tuple[int, ...], ...] | None, ...]
    dtypes: tuple[torch.dtype, ...]
    missing_in: tuple[int, ...]
    dynamic_dimensions: tuple[tuple[int, ...], ...] | None
    value_if_missing: bool = False


@dataclass(frozen=True)
class InputObserverInfo:
    """
    A description of the calls an :class:`InputObserver` recorded
    (what :attr:`InputObserver.info` returns, a snapshot).

    :param signature_names: names of the parameters of the observed method
    :param default_values: default values of the parameters which have a scalar one
    :param missing: the values used for the arguments a call lacks (``value_if_missing``
        resolved to names)
    :param inputs: the recorded tensor arguments of every call, by name
    :param constants: the scalar arguments differing from their default, for every call
    :param outputs: the recorded outputs
    :param latencies: the duration of every call, in seconds
    :param arguments: an :class:`ArgumentInfo` for every tensor argument, signature order

    ``len(info)`` is the number of recorded calls, ``str(info)`` a readable summary.
    """

    signature_names: list[str]
    default_values: dict[str, Any]
    missing: dict[str, Any]
    inputs: list[dict[str, Any]]
    constants: list[dict[str, Any]]
    outputs: list[Any]
    latencies: list[float]
    arguments: dict[str, ArgumentInfo]

    def __len__(self) -> int:
        return len(self.inputs)

    def __str__(self) -> str:
        rows = [f"InputObserverInfo({len(self)} calls, signature {self.signature_names})"]
        for arg in self.arguments.values():
            shapes = [
                "-" if s is None else ",".join("x".join(map(str, t)) for t in s) for s in arg.shapes
            ]
            rows.append(
                f"  {arg.name}: {'|'.join(arg.kinds) or '-'} "
                f"dtypes={[str(d).replace('torch.', '') for d in arg.dtypes]} "
                f"shapes={shapes} dynamic={arg.dynamic_dimensions} "
                f"missing_in={list(arg.missing_in)}"
            )
        for i, c in enumerate(self.constants):
            if c:
                rows.append(f"  calls[{i}] constants: {c}")
        return "\n".join(rows)


def _copy(obj: Any) -> Any:
    from ..helpers.torch_helper import torch_deepcopy

    return torch_deepcopy(obj)


class InputObserver:
    """
    Replaces a method of a model (``forward`` by default) to record the arguments and
    outputs of its first calls.

    :param store_n_calls: number of calls recorded each time the observer is entered
    :param value_if_missing: values of the arguments absent from some calls, by name
        (or by position in the signature), typically an empty tensor with the right
        dtype and rank, ``dict(pixel_values=torch.empty((0, 3, 224, 224)))``

    Usage::

        observer = InputObserver()
        with observer(model):
            model.generate(input_ids, max_new_tokens=5)
        kwargs = observer.infer_arguments()
        ds = observer.infer_dynamic_shapes(set_batch_dimension_for=True)
        ep = torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=ds)

    Arguments holding no tensor (None, an empty cache) count as missing.
    Python scalars are constants: the ones differing from the default value of the
    signature are part of the inferred arguments (their dynamic shape is None),
    except those caught by ``**kwargs`` (``return_dict=True`` sent by ``generate``),
    :func:`torch.export.export` cannot match them with dynamic shapes.
    """

    def __init__(
        self, store_n_calls: int = 3, value_if_missing: dict[str | int, Any] | None = None
    ):
        if not isinstance(store_n_calls, int) or store_n_calls < 1:
            raise ValueError(f"store_n_calls must be a positive int, not {store_n_calls!r}")
        if value_if_missing is not None and not isinstance(value_if_missing, dict):
            raise TypeError(
                f"value_if_missing must be a dict, not {type(value_if_missing).__name__}"
            )
        self.store_n_calls = store_n_calls
        self.value_if_missing: dict[str | int, Any] = dict(value_if_missing or {})
        self._calls: list[_Call] = []
        self._signature: inspect.Signature | None = None
        self._missing: dict[str, Any] = {}

    # recording

    def num_obs(self) -> int:
        """Returns the number of recorded calls."""
        return len(self._calls)

    @property
    def info(self) -> InputObserverInfo | None:
        """
        Describes the recorded calls (an :class:`InputObserverInfo`), None before
        the observer was entered once.

        >>> import torch
        >>> class M(torch.nn.Module):
        ...     def forward(self, x, mask=None):
        ...         return x
        >>> model, obs = M(), InputObserver()
        >>> with obs(model):
        ...     _ = model(torch.ones(2, 3))
        ...     _ = model(torch.ones(2, 4), mask=torch.ones(2, 4))
        >>> info = obs.info
        >>> len(info), info.arguments["x"].dynamic_dimensions, info.arguments["mask"].missing_in
        (2, ((1,),), (0,))
        """
        if self._signature is None:
            return None
        params = self._signature.parameters.values()
        defaults = {
            p.name: p.default
            for p in params
            if p.default is not inspect.Parameter.empty and isinstance(p.default, _CONSTANTS)
        }
        arguments = {}
        names = self._names() if self._calls else list(self._missing)
        for name in names:
            kinds: dict[str, None] = {}
            shapes: list[tuple[tuple[int, ...], ...] | None] = []
            dtypes: tuple[torch.dtype, ...] | None = None
            for call in self._calls:
                if name not in call.values:
                    shapes.append(None)
                    continue
                value = call.values[name]
                kinds[type(value).__name__] = None
                flat = _tensors(value)
                shapes.append(tuple(tuple(t.shape) for t in flat))
                if dtypes is None:
                    dtypes = tuple(t.dtype for t in flat)
            present = [s for s in shapes if s is not None]
            dynamic: tuple[tuple[int, ...], ...] | None = None
            if present and len({len(s) for s in present}) == 1:
                try:
                    dynamic = tuple(
                        tuple(_infer_dynamic_dimensions([s[i] for s in present]))
                        for i in range(len(present[0]))
                    )
                except ValueError:  # ranks differ between calls
                    dynamic = None
            arguments[name] = ArgumentInfo(
                name=name,
                kinds=tuple(kinds),
                shapes=tuple(shapes),
                dtypes=dtypes or (),
                missing_in=tuple(i for i, s in enumerate(shapes) if s is None),
                dynamic_dimensions=dynamic,
                value_if_missing=name in self._missing,
            )
        return InputObserverInfo(
            signature_names=list(self._signature.parameters),
            default_values=defaults,
            missing=dict(self._missing),
            inputs=[c.values for c in self._calls],
            constants=[dict(c.constants) for c in self._calls],
            outputs=[c.output for c in self._calls],
            latencies=[c.latency for c in self._calls],
            arguments=arguments,
        )

    @contextlib.contextmanager
    def __call__(
        self,
        model: torch.nn.Module,
        method_name: str = "forward",
        store_n_calls: int | None = None,
    ) -> Iterator[InputObserver]:
        """
        Records the calls to ``model.<method_name>`` while the context is active,
        at most ``store_n_calls`` (the constructor's value by default) new ones.
        The method is restored on exit, also when an exception escapes.
        """
        if not callable(getattr(model, method_name, None)):
            raise ValueError(f"model of type {type(model).__name__} has no method {method_name!r}")
        original = getattr(model, method_name)
        signature = inspect.signature(original)
        if self._signature is not None and self._signature != signature:
            raise ValueError(
                f"this observer already recorded calls of a method with signature "
                f"{self._signature}, it cannot observe {signature}"
            )
        self._signature = signature
        self._missing = self._check_value_if_missing(signature)
        limit = len(self._calls) + (store_n_calls or self.store_n_calls)

        def observed(*args: Any, **kwargs: Any) -> Any:
            if is_tracing() or len(self._calls) >= limit:
                return original(*args, **kwargs)
            try:
                values, constants, positional = self._bind(args, kwargs)
            except (TypeError, ValueError):
                # a call the signature rejects, the method raises the usual error
                return original(*args, **kwargs)
            begin = time.perf_counter()
            res = original(*args, **kwargs)
            latency = time.perf_counter() - begin
            self._calls.append(_Call(values, constants, positional, _copy(res), latency))
            return res

        # generate inspects the signature of forward to decide which arguments it sends
        observed.__signature__ = signature  # type: ignore[attr-defined]
        had = method_name in vars(model)
        previous = vars(model).get(method_name, None)
        setattr(model, method_name, observed)
        try:
            yield self
        finally:
            if had:
                vars(model)[method_name] = previous
            else:
                vars(model).pop(method_name, None)

    def _check_value_if_missing(self, signature: inspect.Signature) -> dict[str, Any]:
        params = list(signature.parameters.values())
        var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
        names = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        out = {}
        for key, value in self.value_if_missing.items():
            if isinstance(key, int) and not isinstance(key, bool):
                if not 0 <= key < len(names):
                    raise ValueError(
                        f"value_if_missing[{key}]: the signature {signature} has no "
                        f"argument at position {key}"
                    )
                out[names[key]] = value
            elif isinstance(key, str):
                if key not in names and not var_kw:
                    raise ValueError(
                        f"value_if_missing[{key!r}]: {key!r} is not an argument of {signature}"
                    )
                out[key] = value
            else:
                raise TypeError(
                    f"value_if_missing keys must be argument names or positions, not {key!r}"
                )
        return out

    def _bind(self, args: tuple, kwargs: dict) -> tuple[dict[str, Any], dict[str, Any], bool]:
        assert self._signature is not None
        # transformers 5.24 renamed past_key_values to cache: both names are one argument,
        # recorded as forward declares it (the first name met if it declares none).
        name = compat.cache_name_of_inputs(
            self._signature, [*(c.values for c in self._calls), kwargs]
        )
        if name is not None:
            kwargs = compat.rename_cache_argument(kwargs, name, "kwargs")
        bound = self._signature.bind_partial(*args, **kwargs)
        values: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            param = self._signature.parameters[name]
            if param.kind == param.VAR_KEYWORD:
                items = value.items()
            elif param.kind == param.VAR_POSITIONAL:
                items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
            else:
                items = [(name, value)]
            for key, v in items:
                if isinstance(v, _CONSTANTS):
                    default = param.default if key in self._signature.parameters else None
                    if type(v) is not type(default) or v != default:
                        constants[key] = v
                elif _is_present(v):
                    values[key] = _copy(v)
        return values, constants, not kwargs

    def _check_captured(self) -> None:
        if not self._calls:
            raise RuntimeError("no call was recorded, run the model inside 'with observer(model)'")

    # inference

    def _names(self, calls: list[_Call] | None = None) -> list[str]:
        """Names of the tensor arguments, signature order, then the others as they came."""
        assert self._signature is not None
        seen: dict[str, None] = {}
        for call in self._calls if calls is None else calls:
            for name in call.values:
                seen[name] = None
        for name in self._missing:
            seen[name] = None
        order = list(self._signature.parameters)
        known = [n for n in order if n in seen]
        return known + [n for n in seen if n not in known]

    def _value(self, call: _Call, name: str) -> Any:
        if name in call.values:
            return call.values[name]
        return self._missing.get(name, None)

    def _positional_style(self) -> bool:
        """True if every call used only positional arguments and no constant."""
        return all(c.positional and not c.constants for c in self._calls)

    def _as_tuple(self, values: dict[str, Any]) -> tuple:
        """Positional arguments in signature order, None where one was never given."""
        assert self._signature is not None
        order = [
            p.name
            for p in self._signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        order += [n for n in values if n not in order]  # *args
        last = max(i for i, n in enumerate(order) if n in values)
        return tuple(values.get(n, None) for n in order[: last + 1])

    def _as_kwargs(self, values: dict[str, Any]) -> dict[str, Any]:
        var = [n for n in values if "[" in n]
        if var:
            raise DynamicShapesError(
                f"arguments {var} were given through *args in calls also using named "
                "arguments, they cannot be expressed as named arguments"
            )
        return values

    def _batch_for(self, name: str, set_batch_dimension_for: Any) -> bool:
        if set_batch_dimension_for is None or set_batch_dimension_for is False:
            return False
        if set_batch_dimension_for is True:
            return True
        if not isinstance(set_batch_dimension_for, (set, list, tuple, frozenset)):
            raise TypeError(
                "set_batch_dimension_for must be None, a bool or a set of names or "
                f"positions, not {type(set_batch_dimension_for).__name__}"
            )
        assert self._signature is not None
        params = list(self._signature.parameters)
        position = params.index(name) if name in params else -1
        return name in set_batch_dimension_for or position in set_batch_dimension_for

    def _collect(
        self,
        set_batch_dimension_for: Any,
        calls: list[_Call] | None = None,
        labels: list[str] | None = None,
    ) -> tuple[dict[str, Any], list[_DynamicDim]]:
        """Dynamic shapes (with :class:`_DynamicDim` markers) of every argument,
        over the recorded calls or over ``calls`` (``labels`` name them in errors)."""
        self._check_captured()
        calls = self._calls if calls is None else calls
        labels = labels or [f"calls[{i}]" for i in range(len(calls))]
        specs: dict[str, Any] = {}
        dims: list[_DynamicDim] = []
        for name in self._names(calls):
            present = [
                (i, self._value(c, name))
                for i, c in enumerate(calls)
                if self._value(c, name) is not None
            ]
            collector = _Collector(
                len(present),
                labels=[labels[i] for i, _ in present],
                force_first_axis=self._batch_for(name, set_batch_dimension_for),
            )
            specs[name] = collector.walk([v for _, v in present], f"[{name!r}]", name)
            for d in collector.dims:
                d.sizes = _expand_sizes(d.sizes, [i for i, _ in present], len(calls))
            dims.extend(collector.dims)
        return specs, dims

    def infer_dynamic_shapes(
        self, set_batch_dimension_for: set[int | str] | bool | None = None
    ) -> tuple[Any, ...] | dict[str, Any]:
        """
        Infers the dynamic shapes: a dimension is dynamic when its size differs between
        the calls where the argument is present (``value_if_missing`` counts as one).
        Caches follow the canonical flat layout ``[key_0, value_0, key_1, ...]``.

        :param set_batch_dimension_for: the first dimension of these arguments (names or
            positions, True for all) is dynamic even if it never changed
        :return: a tuple if every call was made with positional arguments only,
            a dict by argument name otherwise (constants get None, arguments caught by
            ``**kwargs`` are nested under its name as :func:`torch.export.export` wants)

        >>> import torch
        >>> class M(torch.nn.Module):
        ...     def forward(self, x, mask=None):
        ...         return x if mask is None else x * mask
        >>> model, obs = M(), InputObserver()
        >>> with obs(model):
        ...     _ = model(torch.ones(2, 3))
        ...     _ = model(torch.ones(2, 4), mask=torch.ones(2, 4))
        >>> obs.infer_dynamic_shapes(set_batch_dimension_for={"x"})
        {'x': {0: DimHint(DYNAMIC), 1: DimHint(DYNAMIC)}, 'mask': {}}
        """
        specs, _ = self._collect(set_batch_dimension_for)
        specs = _replace(specs, lambda d: torch.export.Dim.DYNAMIC)
        if self._positional_style():
            return self._as_tuple(specs)
        constants = self._chosen_constants(self._default_index())
        return _nest_var_keyword(
            self._signature, self._as_kwargs({**specs, **dict.fromkeys(constants)})
        )

    def _default_index(self) -> int:
        names = self._names()
        counts = [sum(self._value(c, n) is not None for n in names) for c in self._calls]
        return counts.index(max(counts))

    def _chosen_constants(self, index: int, call: _Call | None = None) -> dict[str, Any]:
        constants = (self._calls[index] if call is None else call).constants
        for i, call in enumerate(self._calls):
            if call.constants != constants:
                logger.warning(
                    "calls[%d] has constants %s but calls[%d] has %s, the inferred "
                    "arguments keep the latter",
                    i,
                    call.constants,
                    index,
                    constants,
                )
        assert self._signature is not None
        dropped = [k for k in constants if k not in self._signature.parameters]
        if dropped:
            # torch.export cannot match a constant caught by **kwargs with a dynamic shape
            logger.info("constants %s given through **kwargs are left out", dropped)
        return {k: v for k, v in constants.items() if k in self._signature.parameters}

    def infer_arguments(
        self,
        index: int | dict[str, Any] | tuple[Any, ...] | None = None,
        for_export: bool = False,
        set_batch_dimension_for: set[int | str] | bool | None = None,
        flat: bool = False,
    ) -> tuple[Any, ...] | dict[str, Any] | list[torch.Tensor]:
        """
        Returns one set of arguments: the first call where every argument is present
        (after ``value_if_missing``), or the call holding the most arguments,
        or call ``index``, or the arguments given in ``index`` completed the same way.
        A missing argument is replaced by an empty tensor shaped like the ones seen in
        other calls, the last dynamic dimension set to 0 (an empty cache).

        :param index: call to use (an int, negative counts from the end), or new arguments
            to complete, a dictionary by name (onnx-diagnostic's ``index_or_args_or_kwargs``)
            or a tuple of positional arguments; their tensors must have the structure of the
            recorded ones, constants differing from their default are kept
        :param for_export: :func:`torch.export.export` specializes dimensions of size 1:
            when True, every dynamic dimension of size 1 becomes 2, along with the
            dimensions taking the same sizes in every call and those equal to its sum
            with another one (an attention mask covering the cache and the new tokens);
            the added values repeat the last ones (dimensions of size 0, which mark absent
            inputs, are left as they are)
        :param set_batch_dimension_for: see :meth:`infer_dynamic_shapes`, it tells
            ``for_export`` which first dimensions are dynamic
        :param flat: returns the flat list of tensors (the order of
            :func:`torch.utils._pytree.tree_flatten`, caches as ``key_0, value_0, ...``)
        :return: a tuple if every call was made with positional arguments only,
            a dictionary otherwise (with the constants differing from their default);
            the tensors are copies, running the model on them (which may update a cache)
            leaves the recorded calls unchanged

        >>> import torch
        >>> class M(torch.nn.Module):
        ...     def forward(self, x, mask=None):
        ...         return x if mask is None else x * mask
        >>> model, obs = M(), InputObserver()
        >>> with obs(model):
        ...     _ = model(x=torch.ones(2, 3), mask=torch.ones(2, 3))
        ...     _ = model(x=torch.ones(2, 4), mask=torch.ones(2, 4))
        >>> kw = obs.infer_arguments({"x": torch.ones(2, 5)})
        >>> {k: tuple(v.shape) for k, v in kw.items()}
        {'x': (2, 5), 'mask': (2, 0)}
        """
        self._check_captured()
        calls, labels = self._calls, None
        if isinstance(index, (dict, tuple)):
            call = self._external_call(index)
            calls = [*self._calls, call]
            labels = [f"calls[{i}]" for i in range(len(self._calls))] + ["index"]
            position = len(self._calls)
        elif index is None:
            position = self._default_index()
        elif (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not -len(self._calls) <= index < len(self._calls)
        ):
            raise IndexError(
                f"infer_arguments: index={index!r} must be a dict of arguments, a tuple or "
                f"an int in [-{len(self._calls)}, {len(self._calls)}), "
                f"{len(self._calls)} calls were recorded"
            )
        else:
            position = index % len(self._calls)
        call = calls[position]
        specs, dims = self._collect(set_batch_dimension_for, calls, labels)
        args: dict[str, Any] = {}
        for name in self._names(calls):
            value = self._value(call, name)
            if value is None:
                value = self._empty_like(name, specs[name])
            args[name] = value
        # a copy: running the model on it must not modify what was recorded (caches)
        args = _copy(args)
        if for_export:
            args = _grow(args, dims, position)
        if flat:
            return _tensors(args if self._positional_style() else self._as_kwargs(args))
        if self._positional_style():
            return self._as_tuple(args)
        return self._as_kwargs({**args, **self._chosen_constants(position, call)})

    def _external_call(self, given: dict[str, Any] | tuple[Any, ...]) -> _Call:
        """Binds arguments given to :meth:`infer_arguments` like a recorded call."""
        try:
            if isinstance(given, dict):
                bad = [k for k in given if not isinstance(k, str)]
                if bad:
                    raise TypeError(f"keys must be argument names, not {bad}")
                values, constants, _ = self._bind((), dict(given))
            else:
                values, constants, _ = self._bind(given, {})
        except TypeError as e:
            raise TypeError(
                f"infer_arguments: index={string_type(given)} does not match the signature "
                f"{self._signature}: {e}"
            ) from e
        known = set(self._names())
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ValueError(
                f"infer_arguments: index gives arguments {unknown} which no recorded call "
                f"had, known ones are {sorted(known)}"
            )
        return _Call(values, constants, isinstance(given, tuple), None, 0.0)

    def _empty_like(self, name: str, spec: Any) -> Any:
        template = next(
            self._value(c, name) for c in reversed(self._calls) if self._value(c, name) is not None
        )
        leaves, treespec = pytree.tree_flatten(template)
        dyn_leaves = iter(_spec_leaves(spec))
        new_leaves = []
        for leaf in leaves:
            if not isinstance(leaf, torch.Tensor):
                new_leaves.append(leaf)
                continue
            axes = sorted(next(dyn_leaves))
            shape = list(leaf.shape)
            if axes:
                shape[axes[-1]] = 0
                new_leaves.append(torch.empty(shape, dtype=leaf.dtype, device=leaf.device))
            else:
                new_leaves.append(torch.zeros(shape, dtype=leaf.dtype, device=leaf.device))
        return pytree.tree_unflatten(new_leaves, treespec)

    # checking

    def check_discrepancies(
        self,
        onnx_model_or_path: Any,
        atol: float = 1e-4,
        rtol: float = 1e-4,
        progress_bar: bool = False,
        providers: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """
        Runs an exported ONNX model with :epkg:`onnxruntime` on every recorded call
        and compares its outputs with the recorded ones.
        The arguments of each call are completed as :meth:`infer_arguments` does,
        flattened in the order :func:`torch.export.export` uses (caches as
        ``key_0, value_0, ...``) and fed in the order of the model inputs.

        :param onnx_model_or_path: ModelProto, file name, ``torch.onnx.ONNXProgram``
            or an ``onnxruntime.InferenceSession``
        :param atol: absolute tolerance
        :param rtol: relative tolerance, a call succeeds when every output satisfies
            ``|expected - got| <= atol + rtol * |expected|``
        :param progress_bar: shows a progress bar (:epkg:`tqdm`)
        :param providers: onnxruntime providers, CPU by default
        :return: one dictionary per call: ``index``, ``SUCCESS``, ``abs``, ``rel``
            (from :func:`max_diff`), ``n_inputs``, ``n_empty`` (empty input tensors),
            ``duration_torch``, ``duration_ort``, ``error`` when something failed
        """
        self._check_captured()
        for name, tol in (("atol", atol), ("rtol", rtol)):
            if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
                raise ValueError(f"check_discrepancies: {name} must be a number >= 0, got {tol!r}")
        sess = make_session(
            onnx_model_or_path,
            providers=providers,
            caller="check_discrepancies",
            argname="onnx_model_or_path",
        )
        input_names = [i.name for i in sess.get_inputs()]
        indices: Any = range(len(self._calls))
        if progress_bar:
            from tqdm import tqdm

            indices = tqdm(indices)
        data = []
        for index in indices:
            call = self._calls[index]
            row: dict[str, Any] = dict(index=index, duration_torch=call.latency)
            args = self.infer_arguments(index)
            flat = _tensors(args)
            row.update(n_inputs=len(flat), n_empty=sum(t.numel() == 0 for t in flat))
            if len(flat) != len(input_names):
                row.update(
                    SUCCESS=False,
                    error=f"the model has {len(input_names)} inputs {input_names} but "
                    f"calls[{index}] gives {len(flat)} tensors: "
                    f"{string_type(args, with_shape=True)}",
                )
                data.append(row)
                continue
            feeds = {n: t.detach().cpu().numpy() for n, t in zip(input_names, flat)}
            begin = time.perf_counter()
            try:
                got = sess.run(None, feeds)
            except Exception as e:
                row.update(SUCCESS=False, error=f"onnxruntime failed: {e}")
                data.append(row)
                continue
            row["duration_ort"] = time.perf_counter() - begin
            expected = _tensors(call.output)
            diff = max_diff(expected, [torch.from_numpy(g) for g in got])
            row.update(abs=diff["abs"], rel=diff["rel"])
            if "error" in diff:
                row.update(SUCCESS=False, error=diff["error"])
            else:
                row["SUCCESS"] = all(
                    torch.isclose(
                        torch.from_numpy(g).to(torch.float64),
                        e.detach().cpu().to(torch.float64),
                        atol=atol,
                        rtol=rtol,
                        equal_nan=True,
                    ).all()
                    for e, g in zip(expected, got)
                )
            data.append(row)
        return data


def _expand_sizes(sizes: tuple[int, ...], indices: list[int], n: int) -> tuple[int | None, ...]:
    """Sizes by call, None for the calls where the argument is missing."""
    full: list[int | None] = [None] * n
    for i, s in zip(indices, sizes):
        full[i] = s
    return tuple(full)


def _spec_leaves(spec: Any) -> list[set[int]]:
    """Dynamic axes of every tensor of a spec, in flattening order."""
    if isinstance(spec, dict) and all(isinstance(k, int) for k in spec):
        return [set(spec)]
    if isinstance(spec, dict):
        return [x for v in spec.values() for x in _spec_leaves(v)]
    if isinstance(spec, (list, tuple)):
        return [x for v in spec for x in _spec_leaves(v)]
    return []


def _is_sum(target: tuple, a: tuple, groups: dict[tuple, Any]) -> bool:
    """Tells if ``target = a + b`` for some group ``b`` in at least two calls
    (an argument missing in a call counts as an empty one, size 0)."""
    for b in groups:
        if b in (target, a):
            continue
        triples = [(x or 0, y or 0, z) for x, y, z in zip(a, b, target) if z is not None]
        if len(triples) >= 2 and all(x + y == z for x, y, z in triples):
            return True
    return False


def _grow(args: dict[str, Any], dims: list[_DynamicDim], index: int) -> dict:
    """Grows dynamic dimensions of size 1 to 2, see :meth:`InputObserver.infer_arguments`."""
    groups: dict[tuple, list[_DynamicDim]] = {}
    for d in dims:
        groups.setdefault(d.sizes, []).append(d)
    deltas: dict[tuple, int] = {}
    for sizes in groups:
        if sizes[index] == 1:
            deltas[sizes] = 1
    # a dimension equal to the sum of two others grows with them (missing counts as 0)
    grown = list(deltas)
    for target in groups:
        if target in deltas:
            continue
        for a in grown:
            if _is_sum(target, a, groups):
                deltas[target] = deltas[a]
                break
    if not deltas:
        return args
    out = {}
    for name, value in args.items():
        targets = {
            (d.tensor_index, d.axis): deltas[d.sizes]
            for d in dims
            if d.arg_name == name and d.sizes in deltas
        }
        if not targets:
            out[name] = value
            continue
        leaves, treespec = pytree.tree_flatten(value)
        tensor_index = 0
        new_leaves = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                for (ti, axis), delta in targets.items():
                    if ti == tensor_index and leaf.shape[axis] > 0:
                        last = leaf.narrow(axis, leaf.shape[axis] - 1, 1)
                        repeat = [1] * leaf.dim()
                        repeat[axis] = delta
                        leaf = torch.cat([leaf, last.repeat(*repeat)], dim=axis)
                tensor_index += 1
            new_leaves.append(leaf)
        out[name] = pytree.tree_unflatten(new_leaves, treespec)
    return out
