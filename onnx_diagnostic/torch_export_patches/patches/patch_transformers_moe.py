"""
Patches of the mixture-of-experts layers of :epkg:`transformers`, each declared once with the
failure it fixes.

Since transformers 5, the experts of most MoE models (mixtral, qwen2_moe, qwen3_moe, olmoe,
deepseek_v3, gpt_oss...) run ``transformers.integrations.moe._grouped_mm``: rows sorted by
expert, then one matrix multiplication per group of rows. On CPU and with other dtypes than
bfloat16, while exporting it calls ``torch.ops.transformers.grouped_mm_fallback``, a custom
operator (a Python loop over ``offs.tolist()``), which torch.export keeps as an opaque node.

>>> from onnx_diagnostic.torch_export_patches.patches.patch_transformers_moe import PATCHES
>>> [p.name for p in PATCHES]  # doctest: +NORMALIZE_WHITESPACE
['transformers:moe._grouped_mm', 'transformers:longcat_flash.LongcatFlashExperts.forward',
 'transformers:dbrx.DbrxExperts.forward', 'transformers:moe.experts_loop_v4',
 'transformers:aria.sequential_experts_gemm']
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch

from ...helpers.torch_helper import is_tracing
from ._rewrite import Rewrites, loaded_model_modules, transformers_4
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


def _sequential_gemm_targets() -> list[tuple[Any, str]]:
    return [
        (mod, "sequential_experts_gemm")
        for mod in loaded_model_modules(["aria"])
        if callable(getattr(mod, "sequential_experts_gemm", None))
    ]


def _make_sequential_gemm(original: Any) -> Any:
    @functools.wraps(original)
    def sequential_experts_gemm(
        token_states: torch.Tensor, expert_weights: torch.Tensor, tokens_per_expert: torch.Tensor
    ) -> torch.Tensor:
        # rows sorted by expert, tokens_per_expert rows each: the grouped product of offsets
        # cumsum(tokens_per_expert), in the dtype of the tokens as the original returns it
        offs = torch.cumsum(tokens_per_expert, dim=0)
        out = grouped_mm_traceable(token_states, expert_weights, offs)
        return out.to(token_states.dtype)

    sequential_experts_gemm.__onnx_diagnostic_patch__ = True
    return sequential_experts_gemm


PATCH_SEQUENTIAL_GEMM = PatchSpec(
    name="transformers:aria.sequential_experts_gemm",
    library="transformers",
    reason=(
        "aria's experts (transformers 4.x) slice the rows of every expert with bounds read "
        "from a tensor (cumsum of tokens_per_expert): the same grouped product as "
        "grouped_mm_traceable, which gathers the weights of every row's expert instead"
    ),
    fixes=(
        "torch.export of aria_text: GuardOnDataDependentSymNode: Could not extract "
        "specialized integer from data-dependent expression u0"
    ),
    versions="transformers with aria's sequential_experts_gemm (4.x)",
    targets=_sequential_gemm_targets,
    make=_make_sequential_gemm,
)


def _experts_loop_targets(module: str, cls_name: str, *markers: str) -> list[tuple[Any, str]]:
    """``[(cls, "forward")]`` if ``transformers.models.<module>`` defines ``cls_name`` whose
    forward still holds every marker (the loop the patch replaces), ``[]`` otherwise."""
    import importlib
    import inspect

    try:
        mod = importlib.import_module(f"transformers.models.{module}")
    except ImportError:
        return []
    cls = getattr(mod, cls_name, None)
    forward = getattr(cls, "forward", None)
    if forward is None:
        return []
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        return []
    return [(cls, "forward")] if all(m in source for m in markers) else []


def _make_experts_forward(fct: Any) -> Any:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        def forward(
            self: Any,
            hidden_states: torch.Tensor,
            top_k_index: torch.Tensor,
            top_k_weights: torch.Tensor,
        ) -> torch.Tensor:
            return fct(self, hidden_states, top_k_index, top_k_weights)

        forward.__onnx_diagnostic_patch__ = True
        return forward

    return make


def zero_experts_forward(
    experts: Any,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
) -> torch.Tensor:
    """
    The experts of longcat_flash (routed experts followed by "zero-compute" experts which
    return their input) without a loop over the experts hit: every (token, choice) pair
    gathers the weights of its expert, the pairs choosing a zero expert keep the token as it
    is, the weighted results of the choices of a token are summed. Same result as the loop
    of transformers (up to the order of the additions).

    :param experts: the ``LongcatFlashExperts`` module (``gate_up_proj``, ``down_proj``,
        ``num_routed_experts``, ``act_fn``)
    :param hidden_states: ``(T, H)``
    :param top_k_index: ``(T, K)`` experts chosen by every token
    :param top_k_weights: ``(T, K)`` their weights
    :return: ``(T, H)``

    >>> import torch
    >>> from types import SimpleNamespace
    >>> experts = SimpleNamespace(
    ...     num_routed_experts=1, act_fn=torch.nn.Identity(),
    ...     gate_up_proj=torch.ones(2, 2, 1), down_proj=torch.ones(1, 1, 1))
    >>> x = torch.tensor([[2.0], [3.0]])
    >>> # token 0 takes expert 0 (gate * up = 4), token 1 the zero expert (itself)
    >>> zero_experts_forward(experts, x, torch.tensor([[0], [1]]), torch.ones(2, 1)).tolist()
    [[4.0], [3.0]]
    """
    tokens, k = top_k_index.shape
    hidden = hidden_states.shape[-1]
    pairs = hidden_states.unsqueeze(1).expand(tokens, k, hidden).reshape(tokens * k, hidden)
    index = top_k_index.reshape(-1)
    weights = top_k_weights.reshape(-1, 1)
    if experts.gate_up_proj is None or experts.num_routed_experts == 0:
        out = pairs
    else:
        routed = index < experts.num_routed_experts
        safe = index.clamp(max=experts.num_routed_experts - 1)
        gate_up = torch.bmm(pairs.unsqueeze(1), experts.gate_up_proj[safe].transpose(1, 2))
        gate, up = gate_up.squeeze(1).chunk(2, dim=-1)
        current = experts.act_fn(gate) * up
        current = torch.bmm(current.unsqueeze(1), experts.down_proj[safe].transpose(1, 2))
        out = torch.where(routed.unsqueeze(1), current.squeeze(1), pairs)
    out = (out * weights).to(hidden_states.dtype)
    return out.reshape(tokens, k, hidden).sum(dim=1)


PATCH_ZERO_EXPERTS = PatchSpec(
    name="transformers:longcat_flash.LongcatFlashExperts.forward",
    library="transformers",
    reason=(
        "the experts of longcat_flash loop over the experts hit by the routing "
        "(nonzero, then .item() per expert): the number of iterations depends on the data, "
        "torch.export cannot trace it. The replacement gathers the weights of the expert of "
        "every (token, choice) pair and runs one batched matmul, zero-compute experts "
        "returning their input."
    ),
    fixes=(
        "torch.export of longcat_flash: 'GuardOnDataDependentSymNode: Could not guard on "
        "data-dependent expression Eq(u0, 0)' at 'for expert_idx_tensor in expert_hit'"
    ),
    versions="transformers with LongcatFlashExperts looping over expert_hit (5.x)",
    targets=lambda: _experts_loop_targets(
        "longcat_flash.modeling_longcat_flash",
        "LongcatFlashExperts",
        "expert_hit",
        "identity_expert",
    ),
    make=_make_experts_forward(zero_experts_forward),
)


def dbrx_experts_forward(
    experts: Any,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
) -> torch.Tensor:
    """
    The experts of dbrx (a GLU per expert whose weights ``w1``, ``v1``, ``w2`` are stacked
    in matrices of ``num_experts * ffn_hidden_size`` rows) without a loop over the experts
    hit: every (token, choice) pair gathers the weights of its expert, the weighted results
    of the choices of a token are summed. Same result as the loop of transformers (up to the
    order of the additions).

    :param experts: the ``DbrxExperts`` module (``mlp.w1``, ``mlp.v1``, ``mlp.w2``,
        ``mlp.activation_fn``, ``hidden_size``, ``ffn_hidden_size``)
    :param hidden_states: ``(batch, seq, hidden)`` or ``(tokens, hidden)``
    :param top_k_index: ``(tokens, K)`` experts chosen by every token
    :param top_k_weights: ``(tokens, K)`` their weights
    :return: ``(batch, tokens / batch, hidden)``, as transformers returns it

    >>> import torch
    >>> from types import SimpleNamespace
    >>> mlp = SimpleNamespace(
    ...     w1=torch.ones(2, 1), v1=torch.tensor([[1.0], [2.0]]), w2=torch.ones(2, 1),
    ...     activation_fn=torch.nn.Identity())
    >>> experts = SimpleNamespace(mlp=mlp, hidden_size=1, ffn_hidden_size=1)
    >>> # expert 1: (x * 1) * (x * 2) * 1
    >>> dbrx_experts_forward(experts, torch.tensor([[3.0]]), torch.tensor([[1]]),
    ...                      torch.ones(1, 1)).tolist()
    [[[18.0]]]
    """
    batch = hidden_states.shape[0]
    hidden = experts.hidden_size
    x = hidden_states.reshape(-1, hidden)
    tokens, k = top_k_index.shape
    pairs = x.unsqueeze(1).expand(tokens, k, hidden).reshape(tokens * k, 1, hidden)
    index = top_k_index.reshape(-1)
    mlp = experts.mlp
    split = (-1, experts.ffn_hidden_size, hidden)
    w1 = mlp.w1.view(split)[index]
    v1 = mlp.v1.view(split)[index]
    w2 = mlp.w2.view(split)[index]
    gate = mlp.activation_fn(torch.bmm(pairs, w1.transpose(1, 2)))
    up = torch.bmm(pairs, v1.transpose(1, 2))
    down = torch.bmm(gate * up, w2).reshape(tokens * k, hidden)
    out = (down * top_k_weights.reshape(-1, 1)).to(hidden_states.dtype)
    return out.reshape(tokens, k, hidden).sum(dim=1).view(batch, -1, hidden)


PATCH_DBRX_EXPERTS = PatchSpec(
    name="transformers:dbrx.DbrxExperts.forward",
    library="transformers",
    reason=(
        "the experts of dbrx loop over the experts hit by the routing (nonzero): the number "
        "of iterations depends on the data, torch.export cannot trace it. The replacement "
        "gathers the weights of the expert of every (token, choice) pair and runs batched "
        "matmuls."
    ),
    fixes=(
        "torch.export of dbrx: 'GuardOnDataDependentSymNode: Could not guard on "
        "data-dependent expression Eq(u0, 0)' at 'for expert_idx in expert_hit'"
    ),
    versions="transformers with DbrxExperts looping over expert_hit (5.x)",
    targets=lambda: _experts_loop_targets(
        "dbrx.modeling_dbrx", "DbrxExperts", "expert_hit", "split_expert_shape"
    ),
    make=_make_experts_forward(dbrx_experts_forward),
)

# transformers 4.x: the loop over the experts hit by the tokens

_EXPERTS = "__onnx_diagnostic_experts_to_run__"
_NO_ROWS = "__onnx_diagnostic_no_rows__"
_ROWS = "__onnx_diagnostic_expert_rows__"


def experts_to_run(expert_hit: torch.Tensor, num_experts: int) -> Any:
    """
    The experts the loop of a mixture-of-experts block of transformers 4.x runs: the rows of
    ``expert_hit`` (``nonzero()`` of the experts a token chose) in eager mode, every expert
    while torch.export traces (an int each): it cannot loop over a tensor whose length
    depends on the data. An expert no token chose gets no row and adds nothing.

    >>> import torch
    >>> experts_to_run(torch.tensor([[1], [3]]), 4).tolist()
    [[1], [3]]
    """
    if is_tracing(expert_hit):
        return range(num_experts)
    return expert_hit


def expert_rows(expert_hit: torch.Tensor, num_experts: int) -> Any:
    """
    :func:`experts_to_run` for the loops reading ``expert_idx[0]`` (gpt_oss of
    transformers 4.x): the rows of ``expert_hit`` in eager mode, ``[e]`` for every expert
    while torch.export traces.

    >>> import torch
    >>> expert_rows(torch.tensor([[2]]), 3).tolist()
    [[2]]
    """
    if is_tracing(expert_hit):
        return [[e] for e in range(num_experts)]
    return expert_hit[:]


def no_rows(top_x: torch.Tensor) -> bool:
    """
    ``top_x.shape[0] == 0`` (an expert no token chose, skipped) in eager mode, False while
    torch.export traces (the size is data-dependent; running the expert on no row adds
    nothing).

    >>> import torch
    >>> no_rows(torch.zeros(0)), no_rows(torch.zeros(2))
    (True, False)
    """
    if is_tracing(top_x):
        return False
    return top_x.shape[0] == 0


_EXPERTS_LOOP_V4 = Rewrites(
    "experts_loop_v4",
    (
        (
            re.compile(r"for expert_idx in expert_hit:"),
            f"for expert_idx in {_EXPERTS}(expert_hit, len(self.experts)):",
        ),
        # a row of nonzero() is a 1-element tensor, the traced loop gives an int: same rows
        (
            re.compile(r"expert_mask\[expert_idx\]\.squeeze\(0\)"),
            "expert_mask[expert_idx].reshape(expert_mask.shape[1:])",
        ),
        # mixtral-like (top_x), dbrx (token_idx)
        (
            re.compile(r"if (top_x|token_idx)\.shape\[0\] == 0:"),
            rf"if {_NO_ROWS}(\1):",
        ),
        # deepseek_v3, glm4_moe, dots1, longcat_flash: the expert runs when it has rows
        (
            re.compile(r"if token_indices\.numel\(\) > 0:"),
            f"if not {_NO_ROWS}(token_indices):",
        ),
        # gpt_oss (num_experts, a local variable, is the number of experts)
        (
            re.compile(r"for expert_idx in expert_hit\[:\]:"),
            f"for expert_idx in {_ROWS}(expert_hit, num_experts):",
        ),
    ),
    {_EXPERTS: experts_to_run, _NO_ROWS: no_rows, _ROWS: expert_rows},
)


def _experts_loop_v4_targets() -> list[tuple[Any, str]]:
    if not transformers_4():
        return []
    # forward, or the method running the experts (DeepseekV3MoE.moe)
    return _EXPERTS_LOOP_V4.targets(loaded_model_modules())


PATCH_EXPERTS_LOOP_V4 = PatchSpec(
    name="transformers:moe.experts_loop_v4",
    library="transformers",
    reason=(
        "the sparse mixture-of-experts blocks of transformers 4.x (mixtral, qwen2_moe, "
        "qwen3_moe, qwen3_next, jamba, olmoe, phimoe, gpt_oss, minimax, ernie4_5_moe, "
        "hunyuan_v1_moe, dbrx, deepseek_v3, glm4_moe, dots1...) loop over the experts hit "
        "by the tokens (a tensor from nonzero()) or skip an expert without rows "
        "(top_x.shape[0] == 0, token_indices.numel() > 0): the patched "
        "forward, the original recompiled, loops over every expert while exporting; an "
        "expert no token chose adds nothing"
    ),
    fixes=(
        "torch.export: GuardOnDataDependentSymNode: Could not guard on data-dependent "
        "expression Eq(u0, 0) (for expert_idx in expert_hit / if top_x.shape[0] == 0)"
    ),
    versions="transformers<5",
    targets=_experts_loop_v4_targets,
    make=_EXPERTS_LOOP_V4.recompile,
    applies=transformers_4,
)

PATCHES: list[PatchSpec] = [
    PATCH_GROUPED_MM,
    PATCH_ZERO_EXPERTS,
    PATCH_DBRX_EXPERTS,
    PATCH_EXPERTS_LOOP_V4,
    PATCH_SEQUENTIAL_GEMM,
]
