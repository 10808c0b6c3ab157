"""
Patches of the linear attention cache layers of :epkg:`transformers` (``LinearAttentionLayer``
and the hybrid layers deriving from it, transformers >= 5): mamba, gated delta net and
convolution states of hybrid models (qwen3_next, qwen3_5, lfm2, falcon_h1...).

>>> from onnx_diagnostic.torch_export_patches.patches.patch_transformers_linear import PATCHES
>>> [p.name for p in PATCHES]
['transformers:LinearAttentionLayer.update_states']
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from ...helpers import compat
from .registry import PatchSpec

#: the methods of a layer writing a state in place, and the dictionary of states they write
_LAYER_METHODS = {"update_conv_state": "conv_states", "update_recurrent_state": "recurrent_states"}
#: the methods of a cache giving a state a model may then update in place
#: (causal_conv1d_update of qwen3_next, mamba... when one token comes)
_CACHE_METHODS = {"get_conv_state": "conv_states", "get_recurrent_state": "recurrent_states"}


def _linear_layer_targets() -> list[tuple[Any, str]]:
    layer_cls, cache_cls = compat.cache_class("LinearAttentionLayer"), compat.cache_class("Cache")
    if layer_cls is None or cache_cls is None:
        return []
    targets = [(layer_cls, n) for n in _LAYER_METHODS if callable(vars(layer_cls).get(n, None))]
    targets += [(cache_cls, n) for n in _CACHE_METHODS if callable(vars(cache_cls).get(n, None))]
    return targets


def _own_copy(layer: Any, states_name: str, state_idx: int) -> None:
    """Replaces the stored state by a copy: what is written next goes to the copy."""
    stored = getattr(layer, states_name, None)
    if isinstance(stored, dict) and stored.get(state_idx, None) is not None:
        stored[state_idx] = stored[state_idx].clone()


def _make_update(original: Any) -> Any:
    name = original.__name__
    if name in _CACHE_METHODS:
        states_name = _CACHE_METHODS[name]

        @functools.wraps(original)
        def get_state(self, layer_idx: int, state_idx: int = 0) -> torch.Tensor | None:
            _own_copy(self.layers[layer_idx], states_name, state_idx)
            return original(self, layer_idx, state_idx)

        get_state.__onnx_diagnostic_patch__ = True
        return get_state

    states_name = _LAYER_METHODS[name]

    @functools.wraps(original)
    def update(self, states: torch.Tensor, state_idx: int = 0, **kwargs: Any) -> torch.Tensor:
        # The original copies the new state into the stored tensor (copy_, to keep a static
        # address for cuda graphs). When the cache is an input of the exported model, that
        # stored tensor is a graph input: a copy of it receives the new values instead, the
        # input is left unchanged and the model returns the new state in the cache.
        _own_copy(self, states_name, state_idx)
        return original(self, states, state_idx, **kwargs)

    update.__onnx_diagnostic_patch__ = True
    return update


PATCH_LINEAR_STATES = PatchSpec(
    name="transformers:LinearAttentionLayer.update_states",
    library="transformers",
    reason=(
        "LinearAttentionLayer.update_conv_state / update_recurrent_state write the new state "
        "into the stored one with copy_, and models update the state Cache.get_conv_state "
        "returns in place (causal_conv1d_update when one token comes): with a cache given as "
        "input, torch.export records mutations of user inputs, an exporter either adds outputs "
        "for them or must drop them. The patched methods replace the stored state by a copy "
        "first, the input is left unchanged."
    ),
    fixes=(
        "to_onnx(exporter='custom') of hybrid models (qwen3_next...): the mutated states "
        "become extra outputs placed before the logits ('outputs differ in structure: "
        "expected: 5 tensors vs 7 once flattened')"
    ),
    versions="transformers>=5 (LinearAttentionLayer)",
    targets=_linear_layer_targets,
    make=_make_update,
)

PATCHES: list[PatchSpec] = [PATCH_LINEAR_STATES]
