"""
Patches of the models of :epkg:`transformers` 4.x keeping states in a cache class of their own
(mamba, mamba2, falcon_mamba, lfm2, bamba, jamba, granitemoehybrid, falcon_h1, zamba,
zamba2, qwen3_next): their mixers choose between the prefill and the recurrent step with
``cache_position[0] > 0``, a test of the value of a tensor that torch.export cannot trace.

The patched methods are the originals, recompiled with that test replaced by
:func:`past_started`: while torch.export traces, it is True, the model is exported for its
recurrent step (one token, the states given as inputs); in eager mode it is the original test.
A zero state is the state before the first token: running the recurrent step on the prompt
one token at a time from zero states gives what the prefill gives, which is how
:func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>` runs these models.

>>> from onnx_diagnostic.torch_export_patches.patches.patch_transformers_states import PATCHES
>>> [p.name for p in PATCHES]
['transformers:legacy_states.past_started']
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ...helpers.torch_helper import is_tracing
from ._rewrite import Rewrites, loaded_model_modules, transformers_4
from .registry import PatchSpec

#: model types of transformers 4.x whose mixers test ``cache_position[0] > 0``
_MODEL_TYPES = (
    "bamba",
    "falcon_h1",
    "falcon_mamba",
    "granitemoehybrid",
    "jamba",
    "lfm2",
    "mamba",
    "mamba2",
    "qwen3_next",
    "zamba",
    "zamba2",
)
_HELPER = "__onnx_diagnostic_past_started__"
_LENGTH = "__onnx_diagnostic_target_length__"
_EMPTY = "__onnx_diagnostic_empty_entry__"
_SLOT = "__onnx_diagnostic_conv_slot__"
#: the expressions replaced, by a call to a function of this module
_REWRITES = (
    (re.compile(r"cache_position\[0\]\s*>\s*0"), f"{_HELPER}(cache_position)"),
    (re.compile(r"cache_position\[-1\]\s*\+\s*1"), f"{_LENGTH}(cache_position, attention_mask)"),
    # FalconHybridMambaAttentionDynamicCache.update: len() of a tensor is its batch size,
    # an int torch.export specializes
    (re.compile(r"len\((self\.key_cache\[layer_idx\])\)\s*==\s*0"), rf"{_EMPTY}(\1)"),
    # MambaCache / FalconMambaCache.update_conv_state: the slot written after the roll
    (
        re.compile(r"cache_position\.clamp\(0,\s*self\.conv_kernel_size\s*-\s*1\)"),
        f"{_SLOT}(cache_position, self.conv_kernel_size)",
    ),
)


def past_started(cache_position: torch.Tensor) -> bool:
    """
    ``cache_position[0] > 0`` in eager mode, True while torch.export (or torch.compile)
    traces: the traced model is the recurrent step.

    >>> import torch
    >>> past_started(torch.tensor([0, 1])), past_started(torch.tensor([3]))
    (False, True)
    """
    if is_tracing(cache_position):
        return True
    return bool(cache_position[0] > 0)


def target_length(cache_position: torch.Tensor, attention_mask: Any) -> Any:
    """
    ``cache_position[-1] + 1``, the length of the causal mask (jamba, zamba, zamba2), is the
    length of the 2D attention mask while torch.export traces (a size, not a value it
    cannot know); ``cache_position[-1] + 1`` otherwise.

    >>> import torch
    >>> int(target_length(torch.tensor([4, 5]), None))
    6
    """
    tracing = is_tracing(cache_position)
    if tracing and isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
        return attention_mask.shape[-1]
    return cache_position[-1] + 1


def empty_entry(entry: Any) -> bool:
    """
    Tells if an entry of the ``key_cache`` list of a cache of transformers 4.x is a
    placeholder: an empty list (a layer skipped) or an empty tensor of shape ``(0,)`` or
    ``(batch, 0)``, read from static dimensions only.

    >>> import torch
    >>> empty_entry([]), empty_entry(torch.zeros(2, 0)), empty_entry(torch.zeros(2, 1, 3, 4))
    (True, True, False)
    """
    if isinstance(entry, torch.Tensor):
        return entry.dim() <= 2 and entry.shape[-1] == 0
    return len(entry) == 0


def conv_slot(cache_position: torch.Tensor, conv_kernel_size: int) -> torch.Tensor:
    """
    The index ``MambaCache.update_conv_state`` (transformers 4.x) writes the new column of a
    convolution state at, after rolling it: ``cache_position.clamp(0, k - 1)``. In
    ``generate``, the positions it receives after the prefill are at least ``k - 1`` (the
    prefill itself gets ``arange(k)``), the column goes last. While torch.export traces the
    recurrent step (one position), it is ``k - 1`` whatever the position: a prompt run one
    token at a time from a zero state then fills the state as the prefill does.

    >>> import torch
    >>> conv_slot(torch.tensor([0, 1, 2, 3, 4]), 4).tolist()
    [0, 1, 2, 3, 3]
    """
    tracing = is_tracing(cache_position)
    if tracing and cache_position.dim() == 1 and cache_position.shape[0] == 1:
        return torch.full_like(cache_position, conv_kernel_size - 1)
    return cache_position.clamp(0, conv_kernel_size - 1)


_STATES = Rewrites(
    "legacy_states",
    _REWRITES,
    {_HELPER: past_started, _LENGTH: target_length, _EMPTY: empty_entry, _SLOT: conv_slot},
)


def _state_targets() -> list[tuple[Any, str]]:
    if not transformers_4():
        return []
    return _STATES.targets(loaded_model_modules(_MODEL_TYPES))


PATCH_PAST_STARTED = PatchSpec(
    name="transformers:legacy_states.past_started",
    library="transformers",
    reason=(
        "the mixers of the state-space and hybrid models of transformers 4.x (mamba, bamba, "
        "lfm2, falcon_h1...) choose the recurrent step with `cache_position[0] > 0`, a test "
        "of a tensor value; the patched methods are the originals where that test is True "
        "while exporting: the exported model is the recurrent step, run from zero states "
        "for the prompt"
    ),
    fixes=(
        "torch.export: GuardOnDataDependentSymNode: Could not guard on data-dependent "
        "expression Eq(u0, 1) (in _update_mamba_mask, slow_forward, torch_forward)"
    ),
    versions="transformers<5",
    targets=_state_targets,
    make=_STATES.recompile,
    applies=transformers_4,
)

PATCHES: list[PatchSpec] = [PATCH_PAST_STARTED]
