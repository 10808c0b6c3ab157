"""
Patches of :epkg:`transformers`, each declared once with the failure it fixes.

Every replacement behaves like the original in eager mode (the tests compare both);
it only removes what :func:`torch.export.export` cannot trace: constant tensors created
while tracing, data-dependent Python branches, and module attributes mutated by a forward.

>>> from onnx_diagnostic.torch_export_patches.patches.patch_transformers import PATCHES
>>> [p.name for p in PATCHES]  # doctest: +NORMALIZE_WHITESPACE
['transformers:DynamicLayer.lazy_initialization', 'transformers:RotaryEmbedding.forward',
 'transformers:DynamicSlidingWindowLayer.get_mask_sizes']
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch

from ...helpers import compat
from .registry import PatchSpec

# DynamicLayer.lazy_initialization


def _dynamic_layer_targets() -> list[tuple[Any, str]]:
    cls = compat.cache_class("DynamicLayer")
    return [] if cls is None else [(cls, "lazy_initialization")]


def _make_lazy_initialization(original: Any) -> Any:
    @functools.wraps(original)
    def lazy_initialization(self, key_states: torch.Tensor, value_states: Any = None) -> None:
        # The original stores torch.tensor([]): a constant created while tracing, lifted
        # by torch.export, which torch.onnx's decomposition step then rejects. An empty
        # slice of the input has the same effect and stays in the graph.
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states[..., :0, :]
        ref = value_states if value_states is not None else key_states
        # Without value_states (transformers<5), the value head dimension is unknown:
        # a 1-D empty tensor concatenates with anything, as the original does.
        self.values = ref[..., :0, :] if value_states is not None else ref.new_empty((0,))
        self.is_initialized = True

    lazy_initialization.__onnx_diagnostic_patch__ = True
    return lazy_initialization


PATCH_LAZY_INITIALIZATION = PatchSpec(
    name="transformers:DynamicLayer.lazy_initialization",
    library="transformers",
    reason=(
        "DynamicLayer.lazy_initialization stores torch.tensor([]), a constant created during "
        "tracing; torch.export lifts it as a top-level constant when the cache is built "
        "outside a submodule (a pytree unflatten that calls cache.update, a cache created in "
        "forward)."
    ),
    fixes=(
        "torch.onnx.export(..., dynamo=True): 'Failed to decompose the FX graph for ONNX "
        "compatibility' / 'SpecViolationError: Constant tensor lifted_tensor_N is not in the "
        "constants dictionary'"
    ),
    versions="transformers>=4.54 (caches made of layers)",
    targets=_dynamic_layer_targets,
    make=_make_lazy_initialization,
    applies=compat.has_cache_layers,
)

# Rotary embeddings decorated with dynamic_rope_update


def _rope_forward_targets() -> list[tuple[Any, str]]:
    """Every loaded rotary embedding class whose forward is wrapped by dynamic_rope_update."""
    found = []
    for name, mod in list(sys.modules.items()):
        if mod is None or not name.startswith("transformers.models.") or ".modeling_" not in name:
            continue
        for attr, cls in list(vars(mod).items()):
            if not isinstance(cls, type) or "RotaryEmbedding" not in attr:
                continue
            if cls.__module__ != name:
                continue  # imported from another module, patched there
            fwd = cls.__dict__.get("forward", None)
            if fwd is None:
                continue
            # A forward already patched (by an enclosing context) is still a target.
            if getattr(fwd, "__onnx_diagnostic_patch__", False) or (
                compat.dynamic_rope_wrapper(fwd) is not None
            ):
                found.append((cls, "forward"))
    return found


def _inv_freq_name(layer_type: str | None) -> str:
    return "inv_freq" if layer_type is None else f"{layer_type}_inv_freq"


def _original_inv_freq(module: Any, layer_type: str | None) -> torch.Tensor:
    name = "original_inv_freq" if layer_type is None else f"{layer_type}_original_inv_freq"
    return getattr(module, name)


def traceable_inv_freq(
    module: Any, position_ids: torch.Tensor, device: Any, layer_type: str | None = None
) -> torch.Tensor | None:
    """
    Computes the inverse frequencies a dynamic (``dynamic``, ``longrope``) rotary embedding
    uses for ``position_ids``, without Python branches on tensor values and without
    modifying ``module``. Returns None for a rope type that needs no update.
    It matches what transformers computes when positions grow, as in generation.

    >>> import torch
    >>> from transformers import LlamaConfig
    >>> from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    >>> cfg = LlamaConfig(hidden_size=32, num_attention_heads=2, max_position_embeddings=16,
    ...                   rope_scaling=dict(rope_type="dynamic", factor=2.0))
    >>> rope = LlamaRotaryEmbedding(cfg)
    >>> short = traceable_inv_freq(rope, torch.arange(8)[None], "cpu")
    >>> long = traceable_inv_freq(rope, torch.arange(64)[None], "cpu")
    >>> bool(torch.equal(short, rope.original_inv_freq)), bool((long <= short).all())
    (True, True)
    """
    rope_type = module.rope_type if layer_type is None else module.rope_type[layer_type]
    if "dynamic" not in rope_type and rope_type != "longrope":
        return None
    init_fn = compat.rope_init_function(rope_type)
    kwargs = {} if layer_type is None else {"layer_type": layer_type}
    seq_len = torch.max(position_ids) + 1
    if "dynamic" in rope_type:
        # transformers' NTK function takes a tensor seq_len and clamps it with torch.maximum.
        inv_freq, _ = init_fn(module.config, device, seq_len=seq_len, **kwargs)
        return inv_freq
    original_max = compat.rope_original_max_position(module.config, layer_type)
    long_inv_freq, _ = init_fn(module.config, device, seq_len=original_max + 1, **kwargs)
    short_inv_freq = _original_inv_freq(module, layer_type).to(device)
    return torch.where(seq_len > original_max, long_inv_freq.to(device), short_inv_freq)


def _make_rope_forward(original: Any) -> Any:
    undecorated = compat.dynamic_rope_wrapper(original).__wrapped__

    @functools.wraps(undecorated)
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: Any = None):
        kwargs = {} if layer_type is None else {"layer_type": layer_type}
        inv_freq = traceable_inv_freq(self, position_ids, x.device, layer_type)
        if inv_freq is None:
            return undecorated(self, x, position_ids, **kwargs)
        # The buffer is swapped for the call only: the module is left as it was, where the
        # original would register a new buffer or keep a (fake, while exporting) tensor.
        name = _inv_freq_name(layer_type)
        saved = self._buffers[name]
        self._buffers[name] = inv_freq
        try:
            return undecorated(self, x, position_ids, **kwargs)
        finally:
            self._buffers[name] = saved

    if original is not compat.dynamic_rope_wrapper(original):
        # transformers decorates these forward with torch.no_grad() around dynamic_rope_update.
        forward = functools.wraps(undecorated)(torch.no_grad()(forward))
    forward.__onnx_diagnostic_patch__ = True
    return forward


PATCH_DYNAMIC_ROPE = PatchSpec(
    name="transformers:RotaryEmbedding.forward",
    library="transformers",
    reason=(
        "dynamic_rope_update (rope types 'dynamic' and 'longrope': Phi-3.5, Phi-4-mini, ...) "
        "compares max(position_ids) with a threshold in Python and registers buffers or sets "
        "attributes inside forward."
    ),
    fixes=(
        "torch.export: 'GuardOnDataDependentSymNode: Could not guard on data-dependent "
        "expression'; with transformers 5.x longrope, export succeeds but leaves a FakeTensor "
        "in module.long_inv_freq, and the eager model then returns wrong values"
    ),
    versions="transformers>=4.48 (dynamic_rope_update); classes loaded when patches apply",
    targets=_rope_forward_targets,
    make=_make_rope_forward,
    applies=lambda: (
        compat.transformers_class("modeling_rope_utils", "dynamic_rope_update") is not None
    ),
)

# DynamicSlidingWindowLayer.get_mask_sizes


def _sliding_layer_targets() -> list[tuple[Any, str]]:
    cls = compat.cache_class("DynamicSlidingWindowLayer")
    return [] if cls is None else [(cls, "get_mask_sizes")]


def _make_sliding_mask_sizes(original: Any) -> Any:
    @functools.wraps(original)
    def get_mask_sizes(self, query: Any) -> tuple[Any, Any]:
        # transformers<5 gives cache_position, transformers>=5 the query length
        if getattr(self, "record_past", False):
            return original(self, query)  # a mode where the layer keeps more than its window
        q = query.shape[0] if isinstance(query, torch.Tensor) else query
        keys = getattr(self, "keys", None)
        initialized = getattr(self, "is_initialized", keys is not None)
        # the positions the layer holds now (at most sliding_window - 1), before the update
        past = keys.shape[-2] if initialized and keys is not None and keys.dim() >= 2 else 0
        # The original compares cumulative_length with the window in Python: torch.export
        # keeps the branch of its example inputs (usually 'not full yet'), and the exported
        # model computes wrong mask sizes once the text is longer than the window. The
        # attended positions are always the held ones plus the new ones, the first of them
        # at cumulative_length - past: the same values in every state, without a branch.
        return past + q, self.cumulative_length - past

    get_mask_sizes.__onnx_diagnostic_patch__ = True
    return get_mask_sizes


PATCH_SLIDING_MASK_SIZES = PatchSpec(
    name="transformers:DynamicSlidingWindowLayer.get_mask_sizes",
    library="transformers",
    reason=(
        "DynamicSlidingWindowLayer.get_mask_sizes chooses between 'the window is full' and "
        "'not full yet' with a Python comparison of cumulative_length and sliding_window: "
        "torch.export keeps the branch of the example inputs only."
    ),
    fixes=(
        "models with sliding layers (gemma2, gemma3, cohere2, gpt-oss...) exported, then run "
        "past the window: onnxruntime 'Shape mismatch attempting to re-use buffer' (Expand), "
        "'GatherND invalid index found', or masks covering the wrong positions"
    ),
    versions="transformers>=4.56 (DynamicSlidingWindowLayer)",
    targets=_sliding_layer_targets,
    make=_make_sliding_mask_sizes,
    applies=lambda: compat.cache_class("DynamicSlidingWindowLayer") is not None,
)

PATCHES: list[PatchSpec] = [
    PATCH_LAZY_INITIALIZATION,
    PATCH_DYNAMIC_ROPE,
    PATCH_SLIDING_MASK_SIZES,
]
