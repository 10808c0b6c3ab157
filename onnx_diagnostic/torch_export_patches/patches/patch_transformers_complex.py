"""
Patches of the rotary embeddings of :epkg:`transformers` computed with complex numbers.

deepseek_v2 and llama4 (text model) build their rotary embedding as a complex tensor:
``freqs_cis = torch.polar(ones, position * inv_freq) * attention_scaling``, and their
``apply_rotary_emb`` multiplies the query and the key, viewed as complex numbers
(``torch.view_as_complex`` of consecutive pairs), by it. ONNX has no complex type the
exporters can use: the custom exporter has no translation for ``aten.polar``, onnx-dynamo
fails on the complex tensors.

Each patch replaces both functions of one model together: the rotary embedding returns a real
tensor ``(..., dim / 2, 2)`` holding ``cos * scaling`` and ``sin * scaling`` (what
``torch.view_as_real(freqs_cis)`` gives), the patched ``apply_rotary_emb`` rotates the
interleaved pairs of the query and the key with it.

>>> from onnx_diagnostic.torch_export_patches.patches.patch_transformers_complex import PATCHES
>>> [p.name for p in PATCHES]
['transformers:deepseek_v2.complex_rotary', 'transformers:llama4.complex_rotary']
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import torch

from ...helpers import compat
from .registry import PatchSpec


def real_rotary_frequencies(
    inv_freq: torch.Tensor, position_ids: torch.Tensor, scaling: float = 1.0
) -> torch.Tensor:
    """
    The rotary embedding ``torch.polar(1, position * inv_freq) * scaling`` as a real tensor:
    ``[..., 0]`` is the real part (cosine), ``[..., 1]`` the imaginary part (sine), in float32.

    :param inv_freq: ``(dim / 2,)``, inverse frequencies
    :param position_ids: ``(batch, seq)``
    :param scaling: the ``attention_scaling`` of the rotary embedding
    :return: ``(batch, seq, dim / 2, 2)``

    >>> import torch
    >>> f = real_rotary_frequencies(torch.tensor([1.0, 0.5]), torch.tensor([[0, 2]]))
    >>> f.shape
    torch.Size([1, 2, 2, 2])
    >>> bool(torch.allclose(torch.view_as_complex(f[0, 1]), torch.polar(
    ...     torch.ones(2), torch.tensor([2.0, 1.0]))))
    True
    """
    freqs = position_ids[..., None].float() * inv_freq.to(
        device=position_ids.device, dtype=torch.float32
    )
    return torch.stack([torch.cos(freqs), torch.sin(freqs)], dim=-1) * scaling


def rotate_pairs(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """
    Multiplies the consecutive pairs ``(x[..., 2i], x[..., 2i + 1])``, read as complex numbers,
    by the complex numbers ``freqs`` holds as real pairs (``(c, s)`` in its last dimension),
    as ``torch.view_as_real(torch.view_as_complex(x) * freqs_cis)`` does, in float32.

    :param x: ``(..., dim)``, ``dim`` even
    :param freqs: broadcastable to ``(..., dim / 2, 2)``
    :return: ``(..., dim)`` in the dtype of ``x``

    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0, 0.0, 2.0]])  # the complex numbers 1 and 2i
    >>> i = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # multiplied by i
    >>> rotate_pairs(x, i).tolist()
    [[0.0, 1.0, -2.0, 0.0]]
    """
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = freqs[..., 0], freqs[..., 1]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2).type_as(x)


#: per model: its module, the rotary embedding class, the axis of the heads inserted in the
#: rotary embedding by ``apply_rotary_emb`` (deepseek_v2 gets query and key as
#: ``(batch, heads, seq, dim)``, llama4 as ``(batch, seq, heads, dim)``)
_MODELS = {
    "deepseek_v2": ("modeling_deepseek_v2", "DeepseekV2RotaryEmbedding", 1),
    "llama4": ("modeling_llama4", "Llama4TextRotaryEmbedding", 2),
}


def _is_patched(obj: Any) -> bool:
    return bool(getattr(obj, "__onnx_diagnostic_patch__", False))


def _uses(fct: Any, name: str) -> bool:
    """Tells if the code of ``fct`` (decorators removed) reads the attribute ``name``."""
    seen = 0
    while fct is not None and seen < 8:
        code = getattr(fct, "__code__", None)
        if code is not None and name in code.co_names:
            return True
        fct = getattr(fct, "__wrapped__", None)
        seen += 1
    return False


def _complex_rotary_targets(model: str) -> list[tuple[Any, str]]:
    """
    The rotary embedding's forward and the module's ``apply_rotary_emb``, both or none:
    only when the installed code is the complex one (``torch.polar``, ``view_as_complex``).
    A target patched by an enclosing context is still a target.
    """
    module_name, cls_name, _ = _MODELS[model]
    try:
        mod = importlib.import_module(f"transformers.models.{model}.{module_name}")
    except Exception:  # the model does not exist in this version, or cannot be imported
        return []
    cls = getattr(mod, cls_name, None)
    apply = vars(mod).get("apply_rotary_emb", None)
    forward = None if not isinstance(cls, type) else vars(cls).get("forward", None)
    if forward is None or not callable(apply):
        return []
    forward_ok = _is_patched(forward) or _uses(forward, "polar")
    apply_ok = _is_patched(apply) or _uses(apply, "view_as_complex")
    if not (forward_ok and apply_ok):
        return []
    return [(cls, "forward"), (mod, "apply_rotary_emb")]


def _make_rotary_forward(original: Any) -> Any:
    # The dynamic rope types (dynamic, longrope) use the frequencies computed for the
    # positions as the patch of dynamic_rope_update does: the forward this patch replaces
    # is also one of that patch's targets, which leaves it to this one.
    from .patch_transformers import traceable_inv_freq

    wrapper = compat.dynamic_rope_wrapper(original)
    undecorated = original if wrapper is None else wrapper.__wrapped__

    @functools.wraps(undecorated)
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        inv_freq = None
        if wrapper is not None:
            inv_freq = traceable_inv_freq(self, position_ids, x.device)
        if inv_freq is None:
            inv_freq = self.inv_freq
        # The original returns torch.polar(1, freqs) * attention_scaling (complex64),
        # this one the same numbers as real pairs: torch.view_as_real of it.
        return real_rotary_frequencies(
            inv_freq.to(x.device), position_ids.to(x.device), self.attention_scaling
        )

    if wrapper is not None and original is not wrapper:
        # transformers<5.24 decorates these forward with torch.no_grad() too
        forward = functools.wraps(undecorated)(torch.no_grad()(forward))
    forward.__onnx_diagnostic_patch__ = True
    return forward


def _make_apply(original: Any, heads_axis: int) -> Any:
    @functools.wraps(original)
    def apply_rotary_emb(
        xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if freqs_cis.is_complex():
            # not computed by the patched rotary embedding (a caller of its own)
            return original(xq, xk, freqs_cis)
        freqs = freqs_cis.to(xq.device).unsqueeze(heads_axis)
        return rotate_pairs(xq, freqs), rotate_pairs(xk, freqs)

    apply_rotary_emb.__onnx_diagnostic_patch__ = True
    return apply_rotary_emb


def _make_complex_rotary(model: str) -> Any:
    heads_axis = _MODELS[model][2]

    def make(original: Any) -> Any:
        if getattr(original, "__name__", None) == "apply_rotary_emb":
            return _make_apply(original, heads_axis)
        return _make_rotary_forward(original)

    return make


_REASON = (
    "{cls}.forward returns torch.polar(ones, freqs) * attention_scaling, a complex tensor, "
    "and apply_rotary_emb multiplies torch.view_as_complex(query / key) by it: ONNX has no "
    "complex type. Both are replaced together: the rotary embedding returns the real pairs "
    "(cos, sin) * attention_scaling as one float32 tensor (..., dim / 2, 2), apply_rotary_emb "
    "rotates the interleaved pairs of the query and the key with real operators."
)
_FIXES = (
    "to_onnx(exporter='custom') of {model}: 'UnsupportedATenOpError: the custom exporter has "
    "no translation for aten.polar.default'; to_onnx(exporter='onnx-dynamo') fails on the "
    "complex tensors"
)

PATCH_DEEPSEEK_V2_COMPLEX_ROTARY = PatchSpec(
    name="transformers:deepseek_v2.complex_rotary",
    library="transformers",
    reason=_REASON.format(cls="DeepseekV2RotaryEmbedding"),
    fixes=_FIXES.format(model="deepseek_v2 (DeepseekV2ForCausalLM)"),
    versions=(
        "transformers whose DeepseekV2RotaryEmbedding.forward calls torch.polar and "
        "apply_rotary_emb torch.view_as_complex (checked: 4.57.6, 5.23, 5.24)"
    ),
    targets=lambda: _complex_rotary_targets("deepseek_v2"),
    make=_make_complex_rotary("deepseek_v2"),
)

PATCH_LLAMA4_COMPLEX_ROTARY = PatchSpec(
    name="transformers:llama4.complex_rotary",
    library="transformers",
    reason=_REASON.format(cls="Llama4TextRotaryEmbedding"),
    fixes=_FIXES.format(model="llama4_text (Llama4ForCausalLM)"),
    versions=(
        "transformers whose Llama4TextRotaryEmbedding.forward calls torch.polar and "
        "apply_rotary_emb torch.view_as_complex (checked: 4.57.6, 5.23, 5.24); the vision "
        "model's rotary embedding is not patched"
    ),
    targets=lambda: _complex_rotary_targets("llama4"),
    make=_make_complex_rotary("llama4"),
)

PATCHES: list[PatchSpec] = [PATCH_DEEPSEEK_V2_COMPLEX_ROTARY, PATCH_LLAMA4_COMPLEX_ROTARY]
