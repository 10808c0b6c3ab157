"""
Makes :func:`torch.export.export` and :func:`torch.onnx.export` work on
:epkg:`transformers` models.

:func:`torch_export_patches` registers the flattening of the caches, applies the patches
declared in :mod:`onnx_diagnostic.torch_export_patches.patches` and restores everything on
exit, normally or through an exception.

>>> import torch
>>> from onnx_diagnostic.torch_export_patches import torch_export_patches
>>> with torch_export_patches(patch_transformers=True) as modificator:
...     inputs = modificator({"x": torch.ones(2)})
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from .. import cache_helpers  # noqa: F401  (registers the caches once, see DESIGN.md)
from .patch_inputs import convert_legacy_caches, use_dyn_not_str
from .patches import AppliedPatch, apply_patch, known_patches, list_patches
from .serialization import register_cache_serialization, register_flattening_functions, unregister

__all__ = [
    "bypass_export_some_errors",
    "list_patches",
    "register_flattening_functions",
    "torch_export_patches",
    "use_dyn_not_str",
]

logger = logging.getLogger(__name__)


def _is_patched(obj: Any) -> bool:
    return bool(getattr(obj, "__onnx_diagnostic_patch__", False))


def _apply_specs(specs: list, verbose: int) -> list[AppliedPatch]:
    applied: list[AppliedPatch] = []
    try:
        for spec in specs:
            if not spec.applies():
                if verbose:
                    print(f"[torch_export_patches] skips {spec.name} (not needed here)")
                continue
            # A target already patched by an enclosing context is left to that context.
            fresh = [(o, a) for o, a in spec.targets() if not _is_patched(vars(o).get(a, None))]
            if not fresh:
                continue
            done = apply_patch(_with_targets(spec, fresh))
            applied.extend(done)
            if verbose:
                for p in done:
                    print(f"[torch_export_patches] patches {p.target} ({spec.name})")
    except Exception:
        for p in reversed(applied):
            p.undo()
        raise
    return applied


def _with_targets(spec: Any, targets: list) -> Any:
    import dataclasses

    return dataclasses.replace(spec, targets=lambda: targets)


@contextlib.contextmanager
def torch_export_patches(
    patch_transformers: bool = False,
    patch_torch: bool = True,
    patch: bool = True,
    verbose: int = 0,
) -> Iterator[Callable[[Any], Any]]:
    """
    Context manager making transformers models exportable.

    On entry, it registers the pytree flattening of every cache class the installed
    transformers leaves unregistered, then applies the patches of the selected libraries
    (see :func:`list_patches`). On exit, normally or through an exception, it restores every
    patched attribute (the very same objects) and removes exactly the registrations it made.
    Nested contexts are fine: a patch applied by an outer context is left to it.

    :param patch_transformers: applies the patches of :epkg:`transformers`
    :param patch_torch: applies the patches of :epkg:`torch` (none is needed with
        torch>=2.9 for the supported models)
    :param patch: False disables everything but the registrations
    :param verbose: prints what is registered and patched
    :return: a function ``modificator(inputs)`` returning inputs usable for export
        (legacy tuple caches become DynamicCache), the inputs themselves when nothing
        needs converting

    .. code-block:: python

        with torch_export_patches(patch_transformers=True) as modificator:
            ep = torch.export.export(
                model, (), kwargs=modificator(inputs), dynamic_shapes=ds, strict=False
            )
    """
    with contextlib.ExitStack() as stack:
        registered = register_cache_serialization(verbose=verbose)
        stack.callback(_unregister_all, registered, verbose)
        if patch:
            specs = known_patches(patch_transformers=patch_transformers, patch_torch=patch_torch)
            applied = _apply_specs(specs, verbose)
            stack.callback(_undo_all, applied, verbose)
        yield convert_legacy_caches


def _undo_all(applied: list[AppliedPatch], verbose: int) -> None:
    for p in reversed(applied):
        p.undo()
        if verbose:
            print(f"[torch_export_patches] restores {p.target}")


def _unregister_all(classes: list[type], verbose: int) -> None:
    for cls in reversed(classes):
        unregister(cls)
        if verbose:
            print(f"[torch_export_patches] unregisters {cls.__name__}")


#: Older name of :func:`torch_export_patches`, kept for the scripts that use it.
bypass_export_some_errors = torch_export_patches
