"""
Dynamic shapes built from inputs alone, without the model:
:func:`all_dynamic_shapes_from_inputs` (every dimension dynamic) and
:func:`guess_dynamic_shapes_from_inputs` (dimensions changing between input sets).
Both follow the structure :func:`torch.export.export` expects: one ``{axis: dim}``
dictionary per tensor, tuples, lists and dictionaries as in the inputs, and the flat list of
children for classes registered in :mod:`torch.utils._pytree` (a DynamicCache gives
``[key_0, value_0, key_1, value_1, ...]``, the canonical layout of this library).

>>> import torch
>>> from onnx_diagnostic.export.shape_helper import all_dynamic_shapes_from_inputs
>>> all_dynamic_shapes_from_inputs(dict(x=torch.ones(2, 3), y=[torch.ones(4)]))
{'x': {0: 'd_0_0', 1: 'd_0_1'}, 'y': [{0: 'd_1_0'}]}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..helpers import compat

__all__ = [
    "all_dynamic_shape_from_inputs",
    "all_dynamic_shapes_from_inputs",
    "guess_dynamic_shapes_from_inputs",
    "pytree_children",
]

_SCALARS = (int, float, bool, str, bytes, complex, torch.dtype, torch.device)


def pytree_children(obj: Any, path: str = "inputs") -> tuple[list[Any], Any]:
    """
    Returns ``(children, context)`` of an object registered in :mod:`torch.utils._pytree`
    (the transformers caches are registered with the canonical flattening when this
    library loads them), rebuilt by ``pytree.SUPPORTED_NODES[type(obj)].unflatten_fn``.

    :raises TypeError: if the class is not registered, the message names ``path``

    >>> import torch
    >>> from onnx_diagnostic.cache_helpers import make_dynamic_cache
    >>> cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))])
    >>> children, _ = pytree_children(cache)
    >>> len(children)
    2
    """
    if compat.is_cache(obj):
        from .. import cache_helpers  # noqa: F401  (registers the caches, canonical layout)
    entry = pytree.SUPPORTED_NODES.get(type(obj))
    if entry is None:
        raise TypeError(
            f"{path}: type {type(obj).__name__} is not registered in torch.utils._pytree, "
            "its dynamic shapes cannot be built"
        )
    children, context = entry.flatten_fn(obj)
    return list(children), context


def _map_tensors(inputs: Any, fct: Callable[[torch.Tensor], Any], path: str) -> Any:
    """Replaces every tensor by ``fct(tensor)``, keeping the containers."""
    if isinstance(inputs, torch.Tensor):
        return fct(inputs)
    if inputs is None or isinstance(inputs, _SCALARS):
        return None
    if type(inputs) in (tuple, list):
        return type(inputs)(_map_tensors(v, fct, f"{path}[{i}]") for i, v in enumerate(inputs))
    if type(inputs) is dict:
        return {k: _map_tensors(v, fct, f"{path}[{k!r}]") for k, v in inputs.items()}
    children, _ = pytree_children(inputs, path)
    return [_map_tensors(c, fct, f"{path}.<{i}>") for i, c in enumerate(children)]


def all_dynamic_shapes_from_inputs(inputs: Any, dim_prefix: Any = "d") -> Any:
    """
    Returns dynamic shapes making every dimension of every tensor in ``inputs`` dynamic.

    :param inputs: inputs (a tensor, nested tuples, lists, dictionaries, caches...)
    :param dim_prefix: a string: the dimensions are named ``<prefix>_<tensor
        index>_<axis>``; anything else (``torch.export.Dim.DYNAMIC``,
        ``torch.export.Dim.AUTO``) is used as it is for every dimension
    :return: the dynamic shapes, with the structure of ``inputs``, None for non tensors

    >>> import torch
    >>> from onnx_diagnostic.cache_helpers import make_dynamic_cache
    >>> cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))])
    >>> ds = all_dynamic_shapes_from_inputs((torch.ones(5), cache), torch.export.Dim.DYNAMIC)
    >>> len(ds[1]), ds[0]
    (2, {0: DimHint(DYNAMIC)})
    """
    if isinstance(dim_prefix, str):
        if not dim_prefix:
            raise ValueError("dim_prefix must not be an empty string")
        counter = [0]

        def to_shape(t: torch.Tensor) -> dict[int, Any]:
            n = counter[0]
            counter[0] += 1
            return {i: f"{dim_prefix}_{n}_{i}" for i in range(t.dim())}

    else:
        if dim_prefix is None:
            raise TypeError("dim_prefix must be a string or a torch.export.Dim value, not None")

        def to_shape(t: torch.Tensor) -> dict[int, Any]:
            return dict.fromkeys(range(t.dim()), dim_prefix)

    return _map_tensors(inputs, to_shape, "inputs")


#: the name onnx-diagnostic used before 0.8 (singular)
all_dynamic_shape_from_inputs = all_dynamic_shapes_from_inputs


def _name_strings(ds: Any, prefix: str, counter: list[int]) -> Any:
    if isinstance(ds, dict) and all(isinstance(k, int) for k in ds):
        out = {}
        for axis in ds:
            out[axis] = f"{prefix}_{counter[0]}"
            counter[0] += 1
        return out
    if isinstance(ds, dict):
        return {k: _name_strings(v, prefix, counter) for k, v in ds.items()}
    if isinstance(ds, (tuple, list)):
        return type(ds)(_name_strings(v, prefix, counter) for v in ds)
    return ds


def guess_dynamic_shapes_from_inputs(
    inputs: Sequence[Any], auto: bool | str = False
) -> tuple[tuple, dict[str, Any]]:
    """
    Guesses the dynamic shapes from several input sets, without the model:
    a dimension is dynamic when its size changes from one set to another
    (:meth:`onnx_diagnostic.export.ModelInputs.guess_dynamic_shapes` with no model,
    positional arguments are then named ``arg0``, ``arg1``...).

    :param inputs: a list of input sets: tuples (positional arguments), dictionaries
        (named arguments) or pairs ``(args, kwargs)``
    :param auto: False for ``Dim.DYNAMIC``, True for ``Dim.AUTO``, ``"dim"`` for named
        :class:`torch.export.Dim` shared by dimensions taking the same sizes, any other
        string is a prefix: every dynamic dimension gets its own name ``<prefix>_<n>``
    :return: ``(args_dynamic_shapes, kwargs_dynamic_shapes)``

    >>> import torch
    >>> inputs = [dict(x=torch.ones(2, 3)), dict(x=torch.ones(2, 4))]
    >>> guess_dynamic_shapes_from_inputs(inputs, auto="d")
    ((), {'x': {1: 'd_0'}})
    """
    from .dynamic_shapes import ModelInputs

    if isinstance(auto, str) and not auto:
        raise ValueError("auto must be a bool or a non empty string")
    mi = ModelInputs(None, list(inputs) if isinstance(inputs, tuple) else inputs)
    if isinstance(auto, str) and auto != "dim":
        args_ds, kwargs_ds = mi.guess_dynamic_shapes(auto=False)
        counter = [0]
        return _name_strings(args_ds, auto, counter), _name_strings(kwargs_ds, auto, counter)
    return mi.guess_dynamic_shapes(auto=auto)
