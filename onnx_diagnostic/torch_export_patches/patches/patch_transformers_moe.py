"""
Patches of the mixture-of-experts layers of :epkg:`transformers`, each declared once with the
failure it fixes.

Since transformers 5, the experts of most MoE models (mixtral, qwen2_moe, qwen3_moe, olmoe,
deepseek_v3, gpt_oss...) run ``transformers.integrations.moe._grouped_mm``: rows sorted by
expert, then one matrix multiplication per group of rows. On CPU and with other dtypes than
bfloat16, while exporting it calls ``torch.ops.transformers.grouped_mm_fallback``, a custom
operator (a Python loop over ``offs.tolist()``), which torch.export keeps as an opaque node.

>>> from onnx_diagnostic.torch_export_patches.patches.patch_transformers_moe import PATCHES
>>> [p.name for p in PATCHES]
['transformers:moe._grouped_mm']
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from .registry import PatchSpec


def grouped_mm_traceable(
    input: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor
) -> torch.Tensor:
    """
    The grouped matrix multiplication of transformers' experts written with operators every
    exporter knows: row ``r`` belongs to the expert ``e`` such that
    ``offs[e - 1] <= r < offs[e]`` (``offs`` are cumulative counts), it is multiplied by
    ``weight[e]``; rows past ``offs[-1]`` belong to no expert and get zeros, as transformers'
    fallback gives. The weights are gathered per row, so it computes no more products than
    the grouped kernel.

    :param input: ``(S, K)``, rows sorted by expert
    :param weight: ``(E, K, N)``
    :param offs: ``(E,)``, cumulative number of rows of every expert
    :return: ``(S, N)`` in the dtype of ``weight``

    >>> import torch
    >>> x, w = torch.ones(3, 2), torch.stack([torch.eye(2), 2 * torch.eye(2)])
    >>> grouped_mm_traceable(x, w, torch.tensor([1, 2])).tolist()
    [[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]
    """
    if input.dim() != 2 or weight.dim() != 3 or offs.dim() != 1:
        raise ValueError(
            f"grouped_mm_traceable: expects input (S, K), weight (E, K, N), offs (E,), got "
            f"shapes {tuple(input.shape)}, {tuple(weight.shape)}, {tuple(offs.shape)}"
        )
    rows = torch.arange(input.shape[0], device=input.device)
    # the number of experts whose rows end at or before row r is the expert of row r
    expert = (offs.to(torch.int64).unsqueeze(0) <= rows.unsqueeze(1)).sum(dim=1)
    n_experts = weight.shape[0]
    valid = expert < n_experts
    expert = expert.clamp(max=n_experts - 1)
    out = torch.bmm(input.to(weight.dtype).unsqueeze(1), weight[expert]).squeeze(1)
    return torch.where(valid.unsqueeze(1), out, torch.zeros((), dtype=out.dtype))


def _grouped_mm_targets() -> list[tuple[Any, str]]:
    try:
        import transformers.integrations.moe as moe
    except ImportError:
        return []
    return [(moe, "_grouped_mm")] if callable(getattr(moe, "_grouped_mm", None)) else []


def _make_grouped_mm(original: Any) -> Any:
    @functools.wraps(original)
    def _grouped_mm(input: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        return grouped_mm_traceable(input, weight, offs)

    _grouped_mm.__onnx_diagnostic_patch__ = True
    return _grouped_mm


PATCH_GROUPED_MM = PatchSpec(
    name="transformers:moe._grouped_mm",
    library="transformers",
    reason=(
        "transformers' experts call torch.ops.transformers.grouped_mm_fallback while exporting "
        "(CPU, other dtypes than bfloat16): a custom operator looping over offs.tolist(), "
        "kept by torch.export as an opaque node no ONNX exporter knows. The replacement "
        "gathers the weights of every row's expert and runs one batched matmul."
    ),
    fixes=(
        "to_onnx(exporter='onnx-dynamo') of MoE models (mixtral, qwen2_moe, qwen3_moe, olmoe, "
        "deepseek_v3, gpt_oss...): 'DispatchError: No ONNX function found for "
        "<OpOverload(op='transformers.grouped_mm_fallback', overload='default')>'"
    ),
    versions="transformers>=5 (transformers.integrations.moe._grouped_mm)",
    targets=_grouped_mm_targets,
    make=_make_grouped_mm,
)

PATCHES: list[PatchSpec] = [PATCH_GROUPED_MM]
