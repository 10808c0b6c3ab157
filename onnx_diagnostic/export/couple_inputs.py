"""
:class:`CoupleInputsDynamicShapes`: inputs and their dynamic shapes walked together, to check
them (:meth:`~CoupleInputsDynamicShapes.invalid_dimensions_for_export`), to replace strings
or :class:`torch.export.Dim` in the dynamic shapes, or to build new inputs with other sizes
for the dynamic dimensions (:meth:`~CoupleInputsDynamicShapes.change_dynamic_dimensions`).

>>> import torch
>>> from onnx_diagnostic.export import CoupleInputsDynamicShapes
>>> kwargs = {"x": torch.ones(3, 1)}
>>> cpl = CoupleInputsDynamicShapes((), kwargs, {"x": {0: "batch", 1: "seq"}})
>>> cpl.invalid_dimensions_for_export()
{'x': {1: 'd=[1]'}}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..helpers.helper import string_type
from .shape_helper import _SCALARS, pytree_children

__all__ = ["CoupleInputsDynamicShapes"]

_Dim = torch.export.Dim


def _is_hint(v: Any) -> bool:
    return v is _Dim.DYNAMIC or v is _Dim.AUTO or type(v) is type(_Dim.DYNAMIC)


def _dim_name(v: Any) -> str | None:
    """The name of a dynamic dimension: a string, a Dim, a derived Dim (its root)."""
    if isinstance(v, str):
        return v
    root = getattr(v, "root", None)
    if root is not None and hasattr(root, "__name__"):
        return root.__name__
    if not _is_hint(v) and hasattr(v, "__name__"):
        return v.__name__
    return None


def _is_dynamic(v: Any) -> bool:
    return v is not None and not isinstance(v, int)


def _tensor_spec(ds: Any, tensor: torch.Tensor, path: str) -> dict[int, Any]:
    """The dynamic shape of one tensor as a dictionary ``{axis: dim}``."""
    if ds is None:
        return {}
    if isinstance(ds, (tuple, list)):
        if len(ds) != tensor.dim():
            raise ValueError(
                f"dynamic_shapes{path}: {len(ds)} dimensions given for a tensor of rank "
                f"{tensor.dim()}"
            )
        return {i: v for i, v in enumerate(ds) if v is not None}
    if not isinstance(ds, dict) or not all(isinstance(k, int) for k in ds):
        raise TypeError(
            f"dynamic_shapes{path}: a tensor needs a dictionary {{axis: dim}}, not {ds!r}"
        )
    bad = [k for k in ds if not -tensor.dim() <= k < tensor.dim()]
    if bad:
        raise ValueError(
            f"dynamic_shapes{path}: axes {bad} do not exist in a tensor of shape "
            f"{tuple(tensor.shape)}"
        )
    return {k % tensor.dim(): v for k, v in ds.items()}


def _node_ds(ds: Any, n_children: int, path: str) -> list[Any]:
    """The dynamic shapes of the children of a pytree node (a cache...)."""
    if ds is None:
        return [None] * n_children
    if not isinstance(ds, (tuple, list)):
        raise TypeError(f"dynamic_shapes{path}: a list is expected for a {path!r}, not {ds!r}")
    if (
        len(ds) == 2
        and n_children != 2
        and all(isinstance(d, (list, tuple)) for d in ds)
        and len(ds[0]) == len(ds[1])
        and 2 * len(ds[0]) == n_children
    ):
        # onnx-diagnostic's older layout [[key_0, key_1...], [value_0, value_1...]]
        return [d for pair in zip(ds[0], ds[1]) for d in pair]
    if len(ds) != n_children:
        raise ValueError(
            f"dynamic_shapes{path}: {len(ds)} elements for an object flattened into "
            f"{n_children} children"
        )
    return list(ds)


class CoupleInputsDynamicShapes:
    """
    Inputs and their dynamic shapes, walked together.

    :param args: positional arguments
    :param kwargs: named arguments
    :param dynamic_shapes: the dynamic shapes: a tuple for ``args``, a dictionary for
        ``kwargs``, a dictionary naming both when both are given (``args_names`` then tells
        the names of the positional arguments), or the pair ``(args_ds, kwargs_ds)``
        :meth:`onnx_diagnostic.export.ModelInputs.guess_dynamic_shapes` returns.
        A tensor takes a dictionary ``{axis: dim}`` (or a list, one element per axis),
        a cache the flat list of its children (``[key_0, value_0, ...]``; the older
        ``[[key_0, ...], [value_0, ...]]`` is accepted too), a dimension is a string,
        a :class:`torch.export.Dim`, ``Dim.DYNAMIC`` or ``Dim.AUTO``.
    :param args_names: the names of the positional arguments, or the module whose
        ``forward`` gives them
    """

    def __init__(
        self,
        args: tuple | None,
        kwargs: dict[str, Any] | None,
        dynamic_shapes: Any,
        args_names: list[str] | torch.nn.Module | None = None,
    ):
        args = () if args is None else args
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(args, tuple):
            raise TypeError(f"args must be a tuple, not {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        if isinstance(args_names, torch.nn.Module):
            args_names = list(inspect.signature(args_names.forward).parameters)
        self.args = args
        self.kwargs = kwargs
        self.args_names = args_names
        self.dynamic_shapes = dynamic_shapes
        self._args_ds, self._kwargs_ds = self._split(dynamic_shapes)

    def __str__(self) -> str:
        return (
            f"{self.__class__.__name__}(args={string_type(self.args, with_shape=True)}, "
            f"kwargs={string_type(self.kwargs, with_shape=True)}, "
            f"dynamic_shapes={self.dynamic_shapes})"
        )

    def _split(self, ds: Any) -> tuple[tuple, dict]:
        """Dynamic shapes of args (a tuple) and of kwargs (a dict)."""
        args, kwargs = self.args, self.kwargs
        if ds is None:
            return (None,) * len(args), dict.fromkeys(kwargs)
        if (
            isinstance(ds, tuple)
            and len(ds) == 2
            and isinstance(ds[0], tuple)
            and isinstance(ds[1], dict)
            and (kwargs or len(args) != 2)
        ):
            args_ds, kwargs_ds = ds
        elif isinstance(ds, (tuple, list)):
            if kwargs:
                raise TypeError(
                    "dynamic_shapes must be a dictionary when kwargs is not empty, "
                    f"not a {type(ds).__name__}"
                )
            args_ds, kwargs_ds = tuple(ds), {}
        elif isinstance(ds, dict):
            if not args:
                args_ds, kwargs_ds = (), ds
            elif not kwargs and not (set(ds) & set(self.args_names or [])):
                if len(ds) != len(args):
                    raise ValueError(
                        f"dynamic_shapes has {len(ds)} entries for {len(args)} positional "
                        "arguments and no args_names to match them"
                    )
                args_ds, kwargs_ds = tuple(ds.values()), {}
            else:
                names = list(self.args_names or [])
                if len(names) < len(args):
                    raise ValueError(
                        f"args_names must name the {len(args)} positional arguments to match "
                        f"dynamic_shapes {sorted(ds)}, args_names={names}"
                    )
                args_ds = tuple(ds.get(n) for n in names[: len(args)])
                kwargs_ds = {k: v for k, v in ds.items() if k not in names[: len(args)]}
        else:
            raise TypeError(
                f"dynamic_shapes must be a tuple, a list or a dict, not {type(ds).__name__}"
            )
        if len(args_ds) != len(args):
            raise ValueError(
                f"dynamic_shapes has {len(args_ds)} elements for {len(args)} positional arguments"
            )
        unknown = sorted(set(kwargs_ds) - set(kwargs))
        if unknown:
            raise ValueError(
                f"dynamic_shapes names {unknown} which are not in kwargs {sorted(kwargs)}"
            )
        return tuple(args_ds), {k: kwargs_ds.get(k) for k in kwargs}

    # -- generic walk ---------------------------------------------------------------------

    def _walk(self, processor: Callable[[torch.Tensor, dict, str], Any]) -> tuple[tuple, dict]:
        """Applies ``processor(tensor, spec, path)`` to every tensor, returns the results
        with the structure of the inputs (caches rebuilt as their class)."""
        args = tuple(
            _walk(a, d, f"[{i}]", processor)
            for i, (a, d) in enumerate(zip(self.args, self._args_ds))
        )
        kwargs = {
            k: _walk(v, self._kwargs_ds[k], f"[{k!r}]", processor) for k, v in self.kwargs.items()
        }
        return args, kwargs

    def _result(self, args: tuple, kwargs: dict, both: bool = False) -> Any:
        if both or (args and kwargs):
            return args, kwargs
        return kwargs if not args else args

    # -- public methods -------------------------------------------------------------------

    def invalid_dimensions_for_export(self) -> Any:
        """
        Checks the sizes of the inputs against the dynamic shapes: torch.export specializes
        a dynamic dimension of size 0 or 1 (the exported model would be static there), and
        a :class:`torch.export.Dim` has bounds. Returns None if everything is fine,
        otherwise the problems with the structure of the dynamic shapes:
        ``{axis: "d=[1]"}`` for each wrong dimension, None elsewhere.

        >>> import torch
        >>> ds = {"x": {0: "batch"}, "y": ({0: "batch", 1: "seq"},)}
        >>> kwargs = {"x": torch.ones(3, 4), "y": (torch.ones(3, 2),)}
        >>> CoupleInputsDynamicShapes((), kwargs, ds).invalid_dimensions_for_export() is None
        True
        """

        def check(t: torch.Tensor, spec: dict, path: str) -> dict[int, str] | None:
            issues = {}
            for axis, dim in spec.items():
                if not _is_dynamic(dim):
                    continue
                size = int(t.shape[axis])
                low = getattr(dim, "min", None)
                high = getattr(dim, "max", None)
                if size in (0, 1):
                    issues[axis] = f"d=[{size}]"
                elif isinstance(low, int) and size < low or isinstance(high, int) and size > high:
                    issues[axis] = f"d=[{size}] not in [{low}, {high}]"
            return issues or None

        args, kwargs = self._walk(check)
        args_issues = tuple(_prune(a) for a in args)
        kwargs_issues = {k: p for k, v in kwargs.items() if (p := _prune(v)) is not None}
        if all(a is None for a in args_issues) and not kwargs_issues:
            return None
        if not args:
            return kwargs_issues
        if not kwargs:
            return args_issues
        return args_issues, kwargs_issues

    def replace_string_by(self, value: Any = None) -> Any:
        """
        Returns the dynamic shapes where every string is replaced by ``value``
        (``torch.export.Dim.DYNAMIC`` if None), with the structure of the dynamic shapes
        given to the constructor.

        >>> import torch
        >>> ds = {"x": {0: "batch"}, "y": [{0: "batch", 1: 4}]}
        >>> CoupleInputsDynamicShapes((), {"x": torch.ones(2), "y": [torch.ones(2, 4)]},
        ...                           ds).replace_string_by()
        {'x': {0: DimHint(DYNAMIC)}, 'y': [{0: DimHint(DYNAMIC), 1: 4}]}
        """
        new = _Dim.DYNAMIC if value is None else value
        self._walk(lambda t, s, p: None)  # checks the structure
        return _map_dims(self.dynamic_shapes, lambda d: new if isinstance(d, str) else d)

    def replace_by_string(self) -> Any:
        """
        Returns the dynamic shapes where every :class:`torch.export.Dim` is replaced by its
        name, ``Dim.DYNAMIC`` and ``Dim.AUTO`` by a new name ``Dim0``, ``Dim1``... and a
        derived dimension by its expression (``"seq + 1"``).

        >>> import torch
        >>> ds = ({0: torch.export.Dim("batch"), 1: torch.export.Dim.DYNAMIC},)
        >>> CoupleInputsDynamicShapes((torch.ones(2, 3),), {}, ds).replace_by_string()
        ({0: 'batch', 1: 'Dim0'},)
        """
        self._walk(lambda t, s, p: None)  # checks the structure
        used: set[str] = set()
        counter = [0]

        def to_string(d: Any) -> Any:
            if d is None or isinstance(d, (int, str)):
                return d
            if _is_hint(d):
                name = f"Dim{counter[0]}"
                while name in used:
                    counter[0] += 1
                    name = f"Dim{counter[0]}"
                counter[0] += 1
                used.add(name)
                return name
            name = str(d.__name__)
            used.add(name)
            return name

        return _map_dims(self.dynamic_shapes, to_string)

    def change_dynamic_dimensions(
        self,
        desired_values: dict[str, int] | None = None,
        args_kwargs: bool = False,
        only_desired: bool = False,
    ) -> Any:
        """
        Builds new inputs where every dynamic dimension takes another size, to check an
        exported model is really dynamic there: a named dimension takes
        ``desired_values[name]`` or its current size + 1 (the same new size wherever the
        name appears, a derived dimension ``fn(root)`` takes ``fn(new root)``), an unnamed
        one (``Dim.DYNAMIC``) the current size + 1, the same for all the unnamed dimensions
        of the same size. New values repeat the existing ones along
        the changed axes. Caches are rebuilt as their class.

        :param desired_values: sizes to give to named dimensions
        :param args_kwargs: returns ``(args, kwargs)`` even if one of them is empty
        :param only_desired: changes only the dimensions in ``desired_values``
        :return: the new kwargs, the new args, or ``(args, kwargs)``

        >>> import torch
        >>> from onnx_diagnostic.helpers import string_type
        >>> kwargs = {"A": torch.ones(3, 4), "B": (torch.ones(3, 15),)}
        >>> ds = {"A": {0: "batch"}, "B": ({0: "batch", 1: "seq"},)}
        >>> new = CoupleInputsDynamicShapes((), kwargs, ds).change_dynamic_dimensions(
        ...     {"seq": 20})
        >>> string_type(new, with_shape=True)
        'dict(A:T1s4x4,B:(T1s4x20,))'
        """
        desired = dict(desired_values or {})
        for k, v in desired.items():
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"desired_values[{k!r}] must be a positive integer, not {v!r}")
        mapping: dict[Any, int] = dict(desired)

        def new_size(dim: Any, size: int) -> int:
            root, fn = getattr(dim, "root", None), getattr(dim, "fn", None)
            if root is not None and callable(fn):
                # derived dimension fn(root): follows the new size of its root
                rname = root.__name__
                if rname not in mapping:
                    old_root = next((r for r in range(size + 1) if fn(r) == size), None)
                    if old_root is None or only_desired:
                        return size
                    mapping[rname] = old_root + 1
                return int(fn(mapping[rname]))
            name = _dim_name(dim)
            key = name if name is not None else ("size", size)
            if key not in mapping:
                if only_desired:
                    return size
                mapping[key] = size + 1
            return mapping[key]

        def change(t: torch.Tensor, spec: dict, path: str) -> torch.Tensor:
            new_shape = list(t.shape)
            for axis, dim in spec.items():
                if _is_dynamic(dim):
                    new_shape[axis] = new_size(dim, int(t.shape[axis]))
            return _resize(t, new_shape, path)

        args, kwargs = self._walk(change)
        return self._result(args, kwargs, both=args_kwargs)


def _walk(inputs: Any, ds: Any, path: str, processor: Callable) -> Any:
    if isinstance(inputs, torch.Tensor):
        return processor(inputs, _tensor_spec(ds, inputs, path), path)
    if inputs is None or isinstance(inputs, _SCALARS):
        return inputs
    if type(inputs) in (tuple, list):
        if ds is None:
            ds = [None] * len(inputs)
        if not isinstance(ds, (tuple, list)) or len(ds) != len(inputs):
            raise ValueError(
                f"dynamic_shapes{path}: {string_type(ds)} does not match "
                f"{string_type(inputs, with_shape=True)} ({len(inputs)} elements)"
            )
        return type(inputs)(
            _walk(v, d, f"{path}[{i}]", processor) for i, (v, d) in enumerate(zip(inputs, ds))
        )
    if type(inputs) is dict:
        ds = {} if ds is None else ds
        if not isinstance(ds, dict):
            raise TypeError(f"dynamic_shapes{path}: a dict is expected, not {ds!r}")
        unknown = sorted(map(str, set(ds) - set(inputs)))
        if unknown:
            raise ValueError(f"dynamic_shapes{path}: keys {unknown} are not in the inputs")
        return {k: _walk(v, ds.get(k), f"{path}[{k!r}]", processor) for k, v in inputs.items()}
    children, context = pytree_children(inputs, f"inputs{path}")
    child_ds = _node_ds(ds, len(children), path)
    new_children = [
        _walk(c, d, f"{path}.<{i}>", processor) for i, (c, d) in enumerate(zip(children, child_ds))
    ]
    if all(type(n) is type(o) for n, o in zip(new_children, children)):
        # new tensors (change_dynamic_dimensions): the object is rebuilt as its class
        return pytree.SUPPORTED_NODES[type(inputs)].unflatten_fn(new_children, context)
    return new_children


def _prune(result: Any) -> Any:
    """Removes the Nones of a structure of results, None if nothing remains."""
    if isinstance(result, torch.Tensor) or result is None:
        return None
    if isinstance(result, dict):
        if all(isinstance(k, int) for k in result) and all(
            isinstance(v, str) for v in result.values()
        ):
            return result or None
        pruned = {k: p for k, v in result.items() if (p := _prune(v)) is not None}
        return pruned or None
    if isinstance(result, (tuple, list)):
        pruned = [_prune(v) for v in result]
        return type(result)(pruned) if any(p is not None for p in pruned) else None
    return None


def _map_dims(ds: Any, fct: Callable[[Any], Any]) -> Any:
    if isinstance(ds, dict) and ds and all(isinstance(k, int) for k in ds):
        return {k: fct(v) for k, v in ds.items()}
    if isinstance(ds, dict):
        return {k: _map_dims(v, fct) for k, v in ds.items()}
    if isinstance(ds, (tuple, list)):
        return type(ds)(_map_dims(v, fct) for v in ds)
    return ds


def _resize(t: torch.Tensor, shape: list[int], path: str) -> torch.Tensor:
    """A tensor of the new shape repeating the values of ``t`` along the changed axes."""
    out = t
    for axis, size in enumerate(shape):
        old = out.shape[axis]
        if old == size:
            continue
        if old == 0:
            new_shape = list(out.shape)
            new_shape[axis] = size
            out = torch.zeros(new_shape, dtype=t.dtype, device=t.device)
            continue
        index = torch.arange(size, device=t.device) % old
        out = out.index_select(axis, index)
    return out
