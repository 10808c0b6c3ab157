"""
:class:`ModelData`, what the functions building test models return.

It is a dataclass, and it also behaves like the dictionary older scripts expect
(``data["model"]``, ``"inputs2" in data``, ``dict(data)``).

>>> from onnx_diagnostic.torch_models.model_data import ModelData
>>> data = ModelData(model=None, inputs={"x": 1}, dynamic_shapes={"x": {0: "batch"}})
>>> data["inputs"], "inputs2" in data
({'x': 1}, False)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any


@dataclasses.dataclass
class ModelData:
    """
    A model with inputs to run it and the dynamic shapes to export it.

    :param model: the model (a :class:`torch.nn.Module`)
    :param inputs: keyword arguments for ``model(**inputs)``
    :param dynamic_shapes: dynamic shapes of ``inputs``, dimension names are strings
        (see :func:`onnx_diagnostic.torch_export_patches.patch_inputs.use_dyn_not_str`),
        caches follow the canonical flat layout ``[key_0, value_0, key_1, ...]``
    :param configuration: the :epkg:`transformers` configuration of the model
    :param task: the task the inputs were made for (``"text-generation"``...)
    :param model_id: the model id the configuration comes from, if any
    :param size: size of the weights in bytes
    :param n_weights: number of weights (scalars)
    :param inputs2: a second set of inputs differing from ``inputs`` in every dynamic
        dimension, None unless asked for
    :param inputs_batch1: the same inputs with a batch size of 1 (the batch dimension is
        the one :func:`torch.export.export` specializes first), None if not built
    :param inputs_empty_cache: the same inputs with an empty cache (0 past tokens, the
        first call of a generation), for the tasks using a cache, None otherwise

    A key is *present* (``key in data``, ``data.keys()``) when its value is not None.
    """

    model: Any
    inputs: dict[str, Any]
    dynamic_shapes: dict[str, Any]
    configuration: Any = None
    task: str | None = None
    model_id: str | None = None
    size: int | None = None
    n_weights: int | None = None
    inputs2: dict[str, Any] | None = None
    inputs_batch1: dict[str, Any] | None = None
    inputs_empty_cache: dict[str, Any] | None = None

    def _names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, name: str) -> Any:
        if not isinstance(name, str) or name not in self._names():
            raise KeyError(f"ModelData has no field {name!r}, available: {self._names()}")
        value = getattr(self, name)
        if value is None:
            raise KeyError(f"ModelData field {name!r} is None (not computed)")
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or name not in self._names():
            raise KeyError(f"ModelData has no field {name!r}, available: {self._names()}")
        setattr(self, name, value)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._names() and getattr(self, name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """Returns the names of the fields which are not None."""
        return [n for n in self._names() if getattr(self, n) is not None]

    def items(self) -> list[tuple[str, Any]]:
        """Returns ``(name, value)`` for every field which is not None."""
        return [(n, getattr(self, n)) for n in self.keys()]

    def get(self, name: str, default: Any = None) -> Any:
        """Returns the field ``name`` or ``default`` if it is missing or None."""
        return getattr(self, name) if name in self else default


def weights_size(model: Any) -> tuple[int, int]:
    """
    Returns ``(size in bytes, number of scalars)`` of the parameters and buffers
    of a :class:`torch.nn.Module` (tied weights counted once).

    >>> import torch
    >>> weights_size(torch.nn.Linear(3, 2))
    (32, 8)
    """
    seen: set[int] = set()
    size, n = 0, 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in seen:
            continue
        seen.add(id(t))
        size += t.numel() * t.element_size()
        n += t.numel()
    return size, n
