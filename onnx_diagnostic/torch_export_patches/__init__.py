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
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from .. import cache_helpers  # noqa: F401  (registers the caches once, see DESIGN.md)
from ._reusable import reusable_context
from .patch_inputs import convert_legacy_caches, use_dyn_not_str
from .patch_module import torch_export_rewrite
from .patches import AppliedPatch, apply_patch, known_patches, list_patches
from .serialization import register_flattening_functions
from .stop_if_static import DynamicDimensionSpecializedError, stop_if_static_context

__all__ = [
    "DynamicDimensionSpecializedError",
    "active_patches",
    "bypass_export_some_errors",
    "list_patches",
    "register_flattening_functions",
    "torch_export_patches",
    "torch_export_rewrite",
    "use_dyn_not_str",
]


@reusable_context
def torch_export_patches(
    patch_transformers: bool = False,
    patch_torch: bool = True,
    patch: bool = True,
    verbose: int = 0,
    patch_sympy: bool = True,
    patch_diffusers: bool = False,
    catch_constraints: bool = True,
    stop_if_static: int = 0,
    custom_patches: list[type] | None = None,
    rewrite: list[Any] | None = None,
    dump_rewriting: str | None = None,
    patch_details: Any = None,
) -> Iterator[Callable[[Any], Any]]:
    """
    Context manager making transformers models exportable.

    On entry, it registers the pytree flattening of every cache class the installed
    transformers leaves unregistered, then applies the patches of the selected libraries
    (see :func:`list_patches`). On exit, normally or through an exception, it restores every
    patched attribute (the very same objects) and removes exactly the registrations it made.
    Nested contexts are fine: a patch applied by an outer context is left to it.
    The returned object can be kept and entered again (one entry after the other, or nested).

    :param patch_transformers: applies the patches of :epkg:`transformers`
    :param patch_torch: applies the patches of :epkg:`torch` (none is needed with
        torch>=2.9 for the supported models)
    :param patch: False disables everything but the registrations
    :param verbose: prints what is registered and patched
    :param patch_sympy: accepted for onnx-diagnostic's signature (no sympy patch is needed
        by the supported torch versions)
    :param patch_diffusers: accepted, no diffusers patch is declared here
    :param catch_constraints: accepted; :func:`torch.export.export` reports the
        constraints violations itself
    :param stop_if_static: 1 raises :class:`DynamicDimensionSpecializedError
        <onnx_diagnostic.torch_export_patches.stop_if_static.DynamicDimensionSpecializedError>`
        at the line of the model where a dimension declared dynamic becomes a constant,
        2 also where it becomes equal to another dimension, 0 lets torch.export specialize
        it (see :mod:`onnx_diagnostic.torch_export_patches.stop_if_static`)
    :param custom_patches: classes patching other classes as onnx-diagnostic defines
        them: each has the attribute ``_PATCHED_CLASS_`` (the class to patch) and
        ``_PATCHES_`` (the names of its methods replacing those of ``_PATCHED_CLASS_``);
        they are applied after the other patches and restored on exit
    :param rewrite: methods or functions whose Python ``if`` on a tensor becomes
        :func:`torch.cond` while the context is active (``[(Model, "forward")]``,
        ``[Model.forward]``), see :func:`torch_export_rewrite
        <onnx_diagnostic.torch_export_patches.patch_module.torch_export_rewrite>`;
        None or an empty list rewrites nothing
    :param dump_rewriting: prefix of the files receiving the original and rewritten code
    :param patch_details: accepted, unused
    :return: a function ``modificator(inputs)`` returning inputs usable for export
        (legacy tuple caches become DynamicCache), the inputs themselves when nothing
        needs converting

    .. code-block:: python

        with torch_export_patches(patch_transformers=True) as modificator:
            ep = torch.export.export(
                model, (), kwargs=modificator(inputs), dynamic_shapes=ds, strict=False
            )
    """
    if rewrite is not None and not isinstance(rewrite, (list, tuple)):
        raise TypeError(
            f"torch_export_patches: rewrite must be a list or None, not {type(rewrite).__name__}"
        )
    for name, value in (("stop_if_static", stop_if_static), ("verbose", verbose)):
        if not isinstance(value, int):
            raise TypeError(f"torch_export_patches: {name} must be an int, not {value!r}")
    if stop_if_static < 0:
        raise ValueError(f"torch_export_patches: stop_if_static must be >= 0, got {stop_if_static}")
    custom = _check_custom_patches(custom_patches)
    ignored = [
        f"{name}={value!r}"
        for name, value, default in (
            ("patch_diffusers", patch_diffusers, False),
            ("patch_details", patch_details, None),
        )
        if value != default
    ]
    if ignored:
        # accepted for scripts written for onnx-diagnostic, said once rather than ignored
        warnings.warn(
            f"torch_export_patches: {', '.join(ignored)} has no effect in onnx_diagnostic "
            "(see the page 'Coming from onnx-diagnostic')",
            UserWarning,
            stacklevel=3,
        )
    with contextlib.ExitStack() as stack:
        _ACTIVE.append(dict(patch_transformers=patch_transformers, patch_torch=patch_torch))
        stack.callback(_ACTIVE.pop)
        stack.enter_context(register_flattening_functions(verbose=verbose))
        if patch:
            specs = known_patches(patch_transformers=patch_transformers, patch_torch=patch_torch)
            for spec in specs:
                if not spec.applies():
                    if verbose:
                        print(f"[torch_export_patches] skips {spec.name} (not needed here)")
                    continue
                for applied in apply_patch(spec):
                    # The undo is pushed right after the change: an exception restores it.
                    stack.callback(_undo, applied, verbose)
                    if verbose:
                        print(f"[torch_export_patches] patches {applied.target} ({spec.name})")
        for cls in custom:
            target = cls._PATCHED_CLASS_
            for name in cls._PATCHES_:
                had = name in target.__dict__
                previous = target.__dict__.get(name)
                setattr(target, name, cls.__dict__[name])
                stack.callback(_restore_attribute, target, name, had, previous, verbose)
                if verbose:
                    print(
                        f"[torch_export_patches] patches {target.__name__}.{name} ({cls.__name__})"
                    )
        if stop_if_static:
            stack.enter_context(stop_if_static_context(stop_if_static))
        if rewrite:
            stack.enter_context(
                torch_export_rewrite(
                    rewrite=rewrite, dump_rewriting=dump_rewriting, verbose=verbose
                )
            )
        yield convert_legacy_caches


def _check_custom_patches(custom_patches: Any) -> list[type]:
    """The classes of ``custom_patches``, checked before anything is patched."""
    if custom_patches is None:
        return []
    if not isinstance(custom_patches, (list, tuple)):
        raise TypeError(
            f"custom_patches must be a list of classes, not {type(custom_patches).__name__}"
        )
    for i, cls in enumerate(custom_patches):
        where = f"custom_patches[{i}]"
        if not isinstance(cls, type):
            raise TypeError(f"{where} must be a class, not {type(cls).__name__}")
        target = getattr(cls, "_PATCHED_CLASS_", None)
        names = getattr(cls, "_PATCHES_", None)
        if not isinstance(target, type):
            raise TypeError(f"{where} ({cls.__name__}) must define _PATCHED_CLASS_ (a class)")
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"{where} ({cls.__name__}) must define _PATCHES_ (method names)")
        missing = [n for n in names if n not in cls.__dict__]
        if missing:
            raise AttributeError(f"{where} ({cls.__name__}) does not define {missing}")
    return list(custom_patches)


def _restore_attribute(target: type, name: str, had: bool, previous: Any, verbose: int) -> None:
    if had:
        setattr(target, name, previous)
    else:
        delattr(target, name)
    if verbose:
        print(f"[torch_export_patches] restores {target.__name__}.{name}")


#: One entry per active :func:`torch_export_patches` context, innermost last.
_ACTIVE: list[dict[str, bool]] = []


def active_patches() -> dict[str, bool] | None:
    """
    Tells whether the code runs inside :func:`torch_export_patches`: None outside, the
    options of the innermost context inside (error messages use it to avoid telling a user
    to enter a context they are in).

    >>> active_patches() is None
    True
    >>> with torch_export_patches(patch_transformers=True):
    ...     active_patches()
    {'patch_transformers': True, 'patch_torch': True}
    """
    return dict(_ACTIVE[-1]) if _ACTIVE else None


def _undo(applied: AppliedPatch, verbose: int) -> None:
    applied.undo()
    if verbose:
        print(f"[torch_export_patches] restores {applied.target}")


#: Older name of :func:`torch_export_patches`, kept for the scripts that use it.
bypass_export_some_errors = torch_export_patches


# the name onnx-diagnostic also exports from this package (defined with the old module path)
from .onnx_export_errors import (  # noqa: E402
    register_additional_serialization_functions as register_additional_serialization_functions,
)

__all__.append("register_additional_serialization_functions")
