"""
Guesses the dynamic shapes of a model from several sets of valid inputs.

A dimension whose size differs between two input sets is dynamic, every other one is
static. The dynamic shapes follow the structure of the inputs the way
:func:`torch.export.export` expects them: a dictionary ``{dim: Dim}`` per tensor, tuples,
lists and dictionaries as in the inputs, and a flat list of the children for classes
registered in :mod:`torch.utils._pytree` (a DynamicCache gives
``[key_0, value_0, key_1, value_1, ...]``, the canonical layout of this library,
a ModelOutput its non-None fields).

>>> import torch
>>> from onnx_diagnostic.export.dynamic_shapes import ModelInputs
>>> class Model(torch.nn.Module):
...     def forward(self, x, y):
...         return x + y
>>> inputs = [(torch.randn(5, 6), torch.randn(1, 6)), (torch.randn(7, 8), torch.randn(1, 8))]
>>> args_ds, kwargs_ds = ModelInputs(Model(), inputs).guess_dynamic_shapes(auto="dim")
>>> args_ds, kwargs_ds
(({0: Dim('batch', min=0), 1: Dim('x_1', min=0)}, {1: Dim('x_1', min=0)}), {})
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..helpers import compat
from ..helpers.helper import string_type

logger = logging.getLogger(__name__)

__all__ = ["DynamicShapesError", "ModelInputs"]

_SCALARS = (int, float, bool, str, bytes, torch.dtype, torch.device)


class DynamicShapesError(ValueError):
    """Raised when input sets cannot be compared (different structures, ranks...)."""


@dataclass
class _DynamicDim:
    """One dynamic dimension: where it is and the sizes it takes in every input set."""

    path: str
    arg_name: str
    axis: int
    sizes: tuple[int, ...]
    tensor_index: int = 0


@dataclass
class _Collector:
    """
    Walks the input sets in parallel and records every dynamic dimension.
    ``labels[i]`` names the input set ``i`` in error messages (``inputs[i]`` by default).
    With ``force_first_axis``, the first dimension of every tensor of rank >= 1 is
    dynamic even if it never changes. ``n_tensors`` counts the tensors met so far
    (``_DynamicDim.tensor_index`` is their order in :func:`torch.utils._pytree.tree_flatten`).
    """

    n_sets: int
    labels: list[str] | None = None
    force_first_axis: bool = False
    dims: list[_DynamicDim] = field(default_factory=list)
    n_tensors: int = 0

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels else f"inputs[{i}]"

    def walk(self, values: list[Any], path: str, arg_name: str) -> Any:
        first = values[0]
        self._check_same_kind(values, path)
        if isinstance(first, torch.Tensor):
            return self._tensor(values, path, arg_name)
        if first is None or isinstance(first, _SCALARS):
            return None
        if type(first) in (tuple, list):
            specs = [
                self.walk([v[i] for v in values], f"{path}[{i}]", arg_name)
                for i in range(len(first))
            ]
            return type(first)(specs)
        if type(first) is dict:
            return {k: self.walk([v[k] for v in values], f"{path}[{k!r}]", arg_name) for k in first}
        children = [_node_children(v, f"{self.label(i)}{path}") for i, v in enumerate(values)]
        names = [n for n, _ in children[0]]
        return [
            self.walk([c[i][1] for c in children], f"{path}{names[i]}", arg_name)
            for i in range(len(names))
        ]

    def _check_same_kind(self, values: list[Any], path: str) -> None:
        first = values[0]
        for i, v in enumerate(values[1:], start=1):
            # "<what this set has> vs <what the first one has>", as the values printed after
            problem = _kind_difference(v, first, f"{self.label(i)}{path}", f"{self.label(0)}{path}")
            if problem:
                raise DynamicShapesError(
                    f"{self.label(i)}{path}: {problem}: {string_type(v, with_shape=True)} vs "
                    f"{string_type(first, with_shape=True)} in {self.label(0)}"
                )

    def _tensor(self, values: list[torch.Tensor], path: str, arg_name: str) -> dict:
        spec = {}
        index = self.n_tensors
        self.n_tensors += 1
        for axis in range(values[0].dim()):
            sizes = tuple(int(v.shape[axis]) for v in values)
            if len(set(sizes)) > 1 or (axis == 0 and self.force_first_axis):
                dim = _DynamicDim(path, arg_name, axis, sizes, index)
                self.dims.append(dim)
                spec[axis] = dim
        return spec


def _kind_difference(a: Any, b: Any, path_a: str, path_b: str) -> str | None:
    """Tells why ``a`` (at ``path_a``) and ``b`` (at ``path_b``)
    cannot be compared, None if they can."""
    scalar = (type(None), *_SCALARS)
    if isinstance(a, scalar) and isinstance(b, scalar):
        if (a is None) != (b is None):
            return "None in one input set, not in another"
        return None
    if type(a) is not type(b):
        return f"type {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        if a.dim() != b.dim():
            return f"rank {a.dim()} vs {b.dim()}"
        if a.dtype != b.dtype:
            # one exported graph has one element type per input
            da, db = (str(t.dtype).replace("torch.", "") for t in (a, b))
            return f"dtype {da} vs {db}"
        return None
    if type(a) in (tuple, list):
        if len(a) != len(b):
            return f"{len(a)} vs {len(b)} elements"
        return None
    if type(a) is dict:
        if set(a) != set(b):
            return f"keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        return None
    # b first: the caller gives the first input set as b, an unregistered type is named there
    nb = [n for n, _ in _node_children(b, path_b)]
    na = [n for n, _ in _node_children(a, path_a)]
    if na != nb:
        return f"children {na} vs {nb}"
    return None


def _ensure_registered(obj: Any) -> None:
    if compat.is_cache(obj):
        # importing it registers the caches with the canonical flattening
        from .. import cache_helpers  # noqa: F401


def _node_children(obj: Any, path: str) -> list[tuple[str, Any]]:
    """Children of an object registered in :mod:`torch.utils._pytree`, with their names."""
    _ensure_registered(obj)
    entry = pytree.SUPPORTED_NODES.get(type(obj), None)
    if entry is None:
        raise DynamicShapesError(
            f"{path or 'input'}: type {type(obj).__name__} is not registered in "
            "torch.utils._pytree, dynamic shapes cannot be guessed for it"
        )
    if entry.flatten_with_keys_fn is not None:
        items, _ = entry.flatten_with_keys_fn(obj)
        return [(_key_name(k, i), v) for i, (k, v) in enumerate(items)]
    children, _ = entry.flatten_fn(obj)
    return [(f"[{i}]", v) for i, v in enumerate(children)]


def _key_name(key: Any, index: int) -> str:
    if isinstance(key, pytree.MappingKey):
        return f".{key.key}" if isinstance(key.key, str) else f"[{key.key!r}]"
    if isinstance(key, pytree.GetAttrKey):
        return f".{key.name}"
    if isinstance(key, pytree.SequenceKey):
        return f"[{key.idx}]"
    return f"[{index}]"


def _identifier(text: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in text).strip("_")
    if not out or out[0].isdigit():
        out = f"d_{out}"
    return out


def _replace(spec: Any, mapping: Callable[[_DynamicDim], Any]) -> Any:
    if isinstance(spec, _DynamicDim):
        return mapping(spec)
    if isinstance(spec, dict):
        return {k: _replace(v, mapping) for k, v in spec.items()}
    if isinstance(spec, (tuple, list)):
        return type(spec)(_replace(v, mapping) for v in spec)
    return spec


def _name_dims(dims: list[_DynamicDim]) -> dict[int, Any]:
    """
    Gives one :class:`torch.export.Dim` to every group of dimensions taking the same
    sizes in every input set. A group containing a first dimension is a batch dimension.
    A group equal to another one plus a constant in every set is a derived dimension
    (``cache_length + 1`` for an attention mask when one token is added). A group equal
    to the sum of two others (the attention mask covers the cache and the new tokens)
    is a separate dimension named after both, torch.export cannot derive a dimension
    from two others.
    """
    groups: dict[tuple[int, ...], list[_DynamicDim]] = {}
    for d in dims:
        groups.setdefault(d.sizes, []).append(d)
    used: set[str] = set()

    def _unique(name: str) -> str:
        candidate, i = name, 1
        while candidate in used:
            candidate = f"{name}_{i}"
            i += 1
        used.add(candidate)
        return candidate

    batch = [sizes for sizes, members in groups.items() if any(m.axis == 0 for m in members)]
    others = [k for k in groups if k not in batch]
    roots: list[tuple[int, ...]] = []
    derived: dict[tuple[int, ...], tuple[tuple[int, ...], int]] = {}
    for sizes in sorted(others, key=min):
        root = next((r for r in roots if len({s - x for s, x in zip(sizes, r)}) == 1), None)
        if root is None:
            roots.append(sizes)
        else:
            derived[sizes] = (root, sizes[0] - root[0])
    names = {sizes: _unique("batch") for sizes in batch}
    for sizes in groups:
        if sizes in roots:
            first = groups[sizes][0]
            names[sizes] = _unique(_identifier(f"{first.arg_name}_{first.axis}"))
    sums: set[str] = set()
    for target in roots:
        pair = next(
            (
                (a, b)
                for i, a in enumerate(roots)
                for b in roots[i:]
                if target not in (a, b) and all(x + y == t for x, y, t in zip(a, b, target))
            ),
            None,
        )
        if pair is not None:
            used.discard(names[target])
            names[target] = _unique(f"{names[pair[0]]}_plus_{names[pair[1]]}")
            sums.add(names[target])
    # torch.export specializes sizes 0 and 1, both terms of a sum are at least 2
    objects: dict[tuple[int, ...], Any] = {
        sizes: torch.export.Dim(name, min=4) if name in sums else torch.export.Dim(name)
        for sizes, name in names.items()
    }
    for sizes, (root, offset) in derived.items():
        objects[sizes] = objects[root] + offset
    return {id(d): objects[d.sizes] for d in dims}


def _nest_var_keyword(signature: inspect.Signature | None, kwargs: dict[str, Any]) -> dict:
    """
    :func:`torch.export.export` wants the dynamic shapes of the arguments caught by
    ``**kwargs`` nested under its name: ``{"kwargs": {"extra": {0: Dim.DYNAMIC}}}``.
    """
    if signature is None:
        return kwargs
    params = signature.parameters
    var_kw = [p.name for p in params.values() if p.kind == p.VAR_KEYWORD]
    extra = {k: v for k, v in kwargs.items() if k not in params}
    if not extra or not var_kw:
        return kwargs
    if var_kw[0] in kwargs:
        raise DynamicShapesError(
            f"an argument is named {var_kw[0]!r} like the **{var_kw[0]} of {signature}"
        )
    return {**{k: v for k, v in kwargs.items() if k in params}, var_kw[0]: extra}


class ModelInputs:
    """
    Holds several sets of valid inputs of a model and guesses its dynamic shapes from them.

    :param model: the model (its ``forward`` signature names the positional arguments)
        or any callable
    :param inputs: a list of input sets, each of them a tuple of positional arguments,
        a dictionary of named arguments, or a pair ``(args, kwargs)``
        (a tuple of two elements, a tuple then a dictionary)
    :param level: depth of the module in the model (kept as ``.level``, onnx-diagnostic
        used it to indent what it printed)
    :param method_name: the method whose signature names the arguments (``forward``
        by default, ``generate``...)
    :param name: a name for the module (kept as ``.name``)

    ``.inputs`` holds them normalized as ``(args, kwargs)`` pairs.

    >>> import torch
    >>> class Model(torch.nn.Module):
    ...     def forward(self, x, y):
    ...         return x + y
    >>> inputs = [dict(x=torch.randn(5, 6), y=torch.randn(1, 6)),
    ...           dict(x=torch.randn(7, 8), y=torch.randn(1, 8))]
    >>> mi = ModelInputs(Model(), inputs)
    >>> mi.guess_dynamic_shapes()
    ((), {'x': {0: DimHint(DYNAMIC), 1: DimHint(DYNAMIC)}, 'y': {1: DimHint(DYNAMIC)}})
    """

    def __init__(
        self,
        model: torch.nn.Module | Callable | None,
        inputs: Sequence[Any],
        level: int = 0,
        method_name: str = "forward",
        name: str = "main",
    ):
        if not isinstance(inputs, (list, tuple)) or isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a list of input sets, not {type(inputs).__name__}")
        if not inputs:
            raise ValueError("inputs must contain at least one input set")
        if not isinstance(level, int) or isinstance(level, bool) or level < 0:
            raise TypeError(f"level must be a non-negative int, not {level!r}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, not {name!r}")
        if not isinstance(method_name, str) or not method_name:
            raise TypeError(f"method_name must be a non-empty string, not {method_name!r}")
        self.model = model
        self.level = level
        self.name = name
        self.method_name = method_name
        if isinstance(model, torch.nn.Module) or (
            model is not None and method_name != "forward" and not inspect.isroutine(model)
        ):
            if not callable(getattr(model, method_name, None)):
                raise AttributeError(
                    f"method_name={method_name!r}: {type(model).__name__} has no such method"
                )
            self.forward = getattr(model, method_name)
        else:
            self.forward = model
        try:
            self.signature: inspect.Signature | None = inspect.signature(self.forward)
        except (TypeError, ValueError):
            self.signature = None
        normalized = [self._normalize(inp, i) for i, inp in enumerate(inputs)]
        # The cache argument has two names (transformers 5.24 renamed past_key_values to
        # cache): input sets mixing them hold the same argument, named as forward declares it
        # (the first name met if forward declares none).
        self.cache_name = compat.cache_name_of_inputs(self.signature, [kw for _, kw in normalized])
        self.inputs: list[tuple[tuple, dict]] = [
            (a, compat.rename_cache_argument(kw, self.cache_name, f"inputs[{i}]"))
            for i, (a, kw) in enumerate(normalized)
        ]
        self._check_signature()

    def _check_signature(self) -> None:
        """Every input set must be a valid call of forward: the problem is said here,
        not by torch.export later."""
        if self.signature is None:
            return
        name = getattr(self.forward, "__qualname__", getattr(self.forward, "__name__", "forward"))
        for i, (args, kwargs) in enumerate(self.inputs):
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as e:
                raise DynamicShapesError(
                    f"inputs[{i}]: {e} ({len(args)} positional, named {sorted(kwargs)}), "
                    f"{name} is {name.rsplit('.', 1)[-1]}{self.signature}"
                ) from e

    @staticmethod
    def _normalize(inp: Any, index: int) -> tuple[tuple, dict]:
        if isinstance(inp, dict):
            return (), dict(inp)
        if (
            isinstance(inp, tuple)
            and len(inp) == 2
            and isinstance(inp[0], tuple)
            and isinstance(inp[1], dict)
        ):
            return tuple(inp[0]), dict(inp[1])
        if isinstance(inp, tuple):
            return inp, {}
        if isinstance(inp, list):
            return tuple(inp), {}
        if isinstance(inp, torch.Tensor):
            return (inp,), {}
        raise TypeError(
            f"inputs[{index}] must be a tuple (positional arguments), a dict (named "
            f"arguments) or a pair (args, kwargs), not {type(inp).__name__}"
        )

    def _positional_names(self, n: int) -> list[str]:
        names: list[str] = []
        if self.signature is not None:
            for p in self.signature.parameters.values():
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                    names.append(p.name)
                elif p.kind == p.VAR_POSITIONAL:
                    names.extend(f"{p.name}_{i}" for i in range(n))
                    break
        return [names[i] if i < len(names) else f"arg{i}" for i in range(n)]

    def guess_dynamic_shapes(self, auto: bool | str = False) -> tuple[tuple, dict]:
        """
        Guesses the dynamic shapes: a dimension is dynamic when its size differs between
        two input sets.

        :param auto: False to use ``Dim.DYNAMIC``, True for ``Dim.AUTO``, another string
            than ``"dim"`` is a prefix: every dynamic dimension is named by the string
            ``<prefix>_<n>`` (n counting the dynamic dimensions in order), ``"dim"`` for
            named :class:`torch.export.Dim`, one shared by all dimensions taking the same
            sizes in every input set (``batch`` for the first dimensions, ``<arg>_<axis>``
            for the others), a derived dimension ``<dim> + k`` for one always equal to
            another plus a constant, ``<a>_plus_<b>`` for one equal to the sum of two
            others (an attention mask covering the cache and the new tokens,
            torch.export cannot derive a dimension from two others)
        :return: ``(args_dynamic_shapes, kwargs_dynamic_shapes)``, the named arguments
            caught by ``**kwargs`` are nested under its name as :func:`torch.export.export`
            expects (it cannot match a Python constant there, leave them out)

        With only one input set, every dimension is static (and a warning says so).
        Input sets of different structures raise a :class:`DynamicShapesError` naming
        the place where they differ.
        """
        if not isinstance(auto, (bool, str)) or auto == "":
            raise ValueError(f"auto must be a bool or a non-empty string, not {auto!r}")
        if len(self.inputs) == 1:
            msg = (
                "ModelInputs received only one input set, every dimension is static; "
                "give at least two sets differing in every dynamic dimension"
            )
            warnings.warn(msg, UserWarning, stacklevel=2)
            logger.warning(msg)
        n_args = {len(a) for a, _ in self.inputs}
        if len(n_args) > 1:
            counts = [len(a) for a, _ in self.inputs]
            raise DynamicShapesError(
                f"inputs: the input sets do not have the same number of positional "
                f"arguments: {counts}"
            )
        for i, (_, kwargs) in enumerate(self.inputs[1:], start=1):
            if set(kwargs) != set(self.inputs[0][1]):
                raise DynamicShapesError(
                    f"inputs[{i}]: named arguments {sorted(kwargs)} vs "
                    f"{sorted(self.inputs[0][1])} in inputs[0]"
                )
        collector = _Collector(len(self.inputs))
        names = self._positional_names(n_args.pop())
        args_ds = tuple(
            collector.walk([a[i] for a, _ in self.inputs], f"[{i}]", names[i])
            for i in range(len(names))
        )
        kwargs_ds = {
            k: collector.walk([kw[k] for _, kw in self.inputs], f"[{k!r}]", k)
            for k in self.inputs[0][1]
        }
        if auto == "dim":
            named = _name_dims(collector.dims)
            mapping: Callable[[_DynamicDim], Any] = lambda d: named[id(d)]
        elif isinstance(auto, str):
            counter = iter(range(len(collector.dims) + 1))
            prefix = auto
            mapping = lambda d: f"{prefix}_{next(counter)}"
        else:
            value = torch.export.Dim.AUTO if auto else torch.export.Dim.DYNAMIC
            mapping = lambda d: value
        return (
            _replace(args_ds, mapping),
            _nest_var_keyword(self.signature, _replace(kwargs_ds, mapping)),
        )

    def move_to_kwargs(
        self, args: tuple, kwargs: dict[str, Any], dynamic_shapes: tuple[tuple, dict]
    ) -> tuple[tuple, dict[str, Any], tuple[tuple, dict]]:
        """
        Moves positional arguments and their dynamic shapes to named arguments,
        using the names of the ``forward`` signature (:func:`torch.export.export` does not
        accept dynamic shapes for a mix of positional and named arguments).

        :param args: positional arguments
        :param kwargs: named arguments
        :param dynamic_shapes: ``(args_dynamic_shapes, kwargs_dynamic_shapes)``
            as :meth:`guess_dynamic_shapes` returns them
        :return: ``((), new_kwargs, ((), new_kwargs_dynamic_shapes))``

        >>> import torch
        >>> class Model(torch.nn.Module):
        ...     def forward(self, x, y):
        ...         return x + y
        >>> x, y = torch.randn(5, 6), torch.randn(1, 6)
        >>> mi = ModelInputs(Model(), [((x,), dict(y=y))])
        >>> args, kwargs, ds = mi.move_to_kwargs((x,), dict(y=y), (({0: "b"},), {"y": {}}))
        >>> args, list(kwargs), ds
        ((), ['x', 'y'], ((), {'x': {0: 'b'}, 'y': {}}))
        """
        if (
            not isinstance(dynamic_shapes, tuple)
            or len(dynamic_shapes) != 2
            or not isinstance(dynamic_shapes[1], dict)
        ):
            raise TypeError(
                "dynamic_shapes must be a pair (args_dynamic_shapes, kwargs_dynamic_shapes), "
                f"not {string_type(dynamic_shapes)}"
            )
        args_ds, kwargs_ds = dynamic_shapes
        if len(args_ds) != len(args):
            raise ValueError(
                f"dynamic_shapes[0] has {len(args_ds)} elements for {len(args)} positional "
                "arguments"
            )
        if self.signature is None:
            raise ValueError("the model has no signature, positional names are unknown")
        params = list(self.signature.parameters.values())
        names = []
        for i in range(len(args)):
            if i >= len(params) or params[i].kind not in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            ):
                kind = "missing" if i >= len(params) else params[i].kind.description
                raise ValueError(
                    f"args[{i}] cannot be moved to a named argument, the signature "
                    f"{self.signature} has no named parameter at that position ({kind})"
                )
            names.append(params[i].name)
        if self.cache_name is not None:
            kwargs = compat.rename_cache_argument(kwargs, self.cache_name, "kwargs")
            kwargs_ds = compat.rename_cache_argument(kwargs_ds, self.cache_name, "dynamic_shapes")
        for name in names:
            if name in kwargs:
                raise ValueError(f"args and kwargs both define {name!r}")
        new_kwargs = {**dict(zip(names, args)), **kwargs}
        new_ds = {**dict(zip(names, args_ds)), **kwargs_ds}
        return (), new_kwargs, ((), new_ds)
