"""
The registry of patches, one file per patched library.

>>> from onnx_diagnostic.torch_export_patches.patches import list_patches
>>> any(row["library"] == "transformers" for row in list_patches())
True
"""

from __future__ import annotations

from typing import Any

from .registry import AppliedPatch, PatchSpec, apply_patch, describe

__all__ = ["AppliedPatch", "PatchSpec", "apply_patch", "known_patches", "list_patches"]


def known_patches(patch_transformers: bool = True, patch_torch: bool = True) -> list[PatchSpec]:
    """
    Returns the declared patches of the selected libraries, whether or not they apply to the
    installed versions. :epkg:`torch` needs no patch for the supported models with
    torch>=2.9, the list of torch patches is empty.

    >>> sorted({p.library for p in known_patches()})
    ['transformers']
    >>> known_patches(patch_transformers=False)
    []
    """
    specs: list[PatchSpec] = []
    if patch_transformers:
        from .patch_transformers import PATCH_DYNAMIC_ROPE, PATCHES
        from .patch_transformers_complex import PATCHES as COMPLEX_PATCHES
        from .patch_transformers_linear import PATCHES as LINEAR_PATCHES
        from .patch_transformers_moe import PATCHES as MOE_PATCHES
        from .patch_transformers_states import PATCHES as STATES_PATCHES

        # The complex rotary embeddings (deepseek_v2, llama4) have a forward decorated with
        # dynamic_rope_update: their patches come before PATCH_DYNAMIC_ROPE, which then
        # leaves these forward to them (a target already patched is skipped).
        at = PATCHES.index(PATCH_DYNAMIC_ROPE)
        specs.extend(PATCHES[:at])
        specs.extend(COMPLEX_PATCHES)
        specs.extend(PATCHES[at:])
        specs.extend(MOE_PATCHES)
        specs.extend(LINEAR_PATCHES)
        specs.extend(STATES_PATCHES)
    return specs


def list_patches(patch_transformers: bool = True, patch_torch: bool = True) -> list[dict[str, Any]]:
    """
    Describes every known patch for the installed versions: name, library, whether it
    applies, the versions, the reason, the error it fixes and the resolved targets.

    >>> rows = list_patches()
    >>> rows[0]["name"]
    'transformers:DynamicLayer.lazy_initialization'
    """
    return [describe(s) for s in known_patches(patch_transformers, patch_torch)]
