"""
Patches are data: one :class:`PatchSpec` per patch, declared in the module of the library it
patches (``patch_transformers.py``, ``patch_torch.py``). A spec names what it replaces, why,
the error it fixes and the versions it applies to. Its targets are looked up when the patches
are applied: a target missing in the installed version is skipped and reported, never an
``AttributeError`` at import time.

>>> from onnx_diagnostic.torch_export_patches.patches import list_patches
>>> rows = list_patches()
>>> sorted(rows[0])
['applies', 'fixes', 'library', 'name', 'reason', 'targets', 'versions']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True)
class PatchSpec:
    """
    Declaration of one patch.

    :param name: unique name, ``library:what``
    :param library: ``"transformers"`` or ``"torch"``
    :param reason: why the original cannot be exported
    :param fixes: the error (or silent wrong result) users see without it
    :param versions: versions it applies to, for the reader; :attr:`applies` decides
    :param targets: returns the ``(owner, attribute)`` pairs to replace in the
        installed versions (owner is a class or a module)
    :param make: builds the replacement from the original attribute
    :param applies: tells if the patch is needed with the installed versions
    """

    name: str
    library: str
    reason: str
    fixes: str
    versions: str
    targets: Callable[[], list[tuple[Any, str]]]
    make: Callable[[Any], Any]
    applies: Callable[[], bool] = field(default=lambda: True)


@dataclass
class AppliedPatch:
    """One attribute replaced by :func:`apply_patch`; :meth:`undo` puts the original back."""

    spec: PatchSpec
    owner: Any
    attribute: str
    original: Any
    replacement: Any

    def undo(self) -> None:
        """Restores the original object (or removes the attribute if it did not exist)."""
        if self.original is _MISSING:
            if self.attribute in vars(self.owner):
                delattr(self.owner, self.attribute)
        else:
            setattr(self.owner, self.attribute, self.original)

    @property
    def target(self) -> str:
        return _target_name(self.owner, self.attribute)


def _target_name(owner: Any, attribute: str) -> str:
    name = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", "?")
    module = getattr(owner, "__module__", None)
    if module and not isinstance(owner, type(logging)):
        name = f"{module}.{name}"
    return f"{name}.{attribute}"


def apply_patch(spec: PatchSpec) -> list[AppliedPatch]:
    """
    Applies one patch to every target found; returns what was replaced, to undo in reverse
    order. If a target fails, the targets already replaced are restored before raising.
    A target already replaced by a patch (an enclosing context) is left as it is.

    >>> import types
    >>> mod = types.SimpleNamespace(f=lambda: 1)
    >>> original = mod.f
    >>> spec = PatchSpec("demo:f", "demo", "why", "what", "any",
    ...                  targets=lambda: [(mod, "f")], make=lambda f: (lambda: 2))
    >>> done = apply_patch(spec)
    >>> mod.f()
    2
    >>> for p in reversed(done):
    ...     p.undo()
    >>> mod.f is original
    True
    """
    done: list[AppliedPatch] = []
    try:
        for owner, attribute in spec.targets():
            # vars() keeps descriptors (staticmethod...) as they are, getattr would unwrap them.
            original = vars(owner).get(attribute, _MISSING)
            if getattr(original, "__onnx_diagnostic_patch__", False):
                # Patched by an enclosing context, which restores it.
                continue
            current = getattr(owner, attribute)
            replacement = spec.make(current)
            setattr(owner, attribute, replacement)
            done.append(AppliedPatch(spec, owner, attribute, original, replacement))
            logger.debug("patched %s", done[-1].target)
    except Exception:
        for p in reversed(done):
            p.undo()
        raise
    return done


def describe(spec: PatchSpec) -> dict[str, Any]:
    """
    Returns a row describing a patch (targets resolved in the installed versions).

    >>> from onnx_diagnostic.torch_export_patches.patches import known_patches
    >>> describe(known_patches()[0])["targets"]
    ['transformers.cache_utils.DynamicLayer.lazy_initialization']
    """
    try:
        targets = [_target_name(o, a) for o, a in spec.targets()]
    except Exception as e:  # a broken lookup is reported, not raised
        targets = [f"<lookup failed: {e}>"]
    return dict(
        name=spec.name,
        library=spec.library,
        applies=bool(spec.applies()),
        versions=spec.versions,
        reason=spec.reason,
        fixes=spec.fixes,
        targets=targets,
    )
