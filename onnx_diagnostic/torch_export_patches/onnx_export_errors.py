"""
The module path onnx-diagnostic used for its patches
(``onnx_diagnostic.torch_export_patches.onnx_export_errors``), kept so that scripts importing
from it run unchanged: :func:`torch_export_patches`, :func:`bypass_export_some_errors` (the
same function) and :func:`register_additional_serialization_functions`.

>>> from onnx_diagnostic.torch_export_patches.onnx_export_errors import (
...     register_additional_serialization_functions, torch_export_patches)
>>> with register_additional_serialization_functions(patch_transformers=True) as modificator:
...     modificator({"x": 1})
{'x': 1}
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from . import bypass_export_some_errors, torch_export_patches
from .patch_inputs import convert_legacy_caches
from .serialization import register_flattening_functions

__all__ = [
    "bypass_export_some_errors",
    "register_additional_serialization_functions",
    "torch_export_patches",
]


def _identity(inputs: Any) -> Any:
    return inputs


@contextlib.contextmanager
def register_additional_serialization_functions(
    patch_transformers: bool = False,
    patch_diffusers: bool = False,
    verbose: int = 0,
    replace_existing: bool = False,
) -> Iterator[Callable[[Any], Any]]:
    """
    Context manager registering in :mod:`torch.utils._pytree` the flattening of every cache
    class the installed transformers leaves unregistered (with the canonical flattening of
    this library, see :func:`register_flattening_functions`) and removing exactly those
    registrations on exit. Unlike :func:`torch_export_patches`, it patches nothing: it is
    what running an exported program needs.

    :param patch_transformers: the context yields a function converting legacy tuple caches
        in the inputs into DynamicCache (the ``modificator`` of
        :func:`torch_export_patches`), the identity otherwise
    :param patch_diffusers: accepted for compatibility, no diffusers class is registered
        by this library
    :param verbose: prints the registrations
    :param replace_existing: accepted for compatibility, a registration made by someone else
        is never replaced (see DESIGN.md)
    :return: the function to apply to the inputs

    .. code-block:: python

        with register_additional_serialization_functions(patch_transformers=True) as f:
            got = ep.module()(**f(inputs))
    """
    for name, value in [("patch_transformers", patch_transformers), ("verbose", verbose)]:
        if not isinstance(value, (bool, int)):
            raise TypeError(f"{name} must be a bool or an int, not {type(value).__name__}")
    with register_flattening_functions(patch_transformers=patch_transformers, verbose=verbose):
        yield convert_legacy_caches if patch_transformers else _identity
