"""
Torch kernels of :class:`onnx_diagnostic.reference.TorchOnnxEvaluator` for the fused
operators the exporters produce: normalizations, rotary embedding, attention (opset 23 and
the ``com.microsoft`` versions), registered in :data:`._torch_kernels.KERNELS`.
"""

from __future__ import annotations

import math

import torch

from ._torch_kernels import KernelNode, register

MS = "com.microsoft"


def _compute(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _rms(
    x: torch.Tensor, scale: torch.Tensor, axis: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    xf = _compute(x)
    dims = tuple(range(axis % x.dim(), x.dim()))
    inv = torch.rsqrt(xf.pow(2).mean(dim=dims, keepdim=True) + eps)
    return xf * inv * _compute(scale), inv


@register("RMSNormalization")
def _rms_normalization(node: KernelNode, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    y, _ = _rms(x, scale, node.attr("axis", -1), node.attr("epsilon", 1e-5))
    return y.to(x.dtype)


@register("SimplifiedLayerNormalization")
def _simplified_ln(
    node: KernelNode, x: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    y, inv = _rms(x, scale, node.attr("axis", -1), node.attr("epsilon", 1e-5))
    return y.to(scale.dtype), inv


@register("SkipSimplifiedLayerNormalization", domain=MS)
def _skip_simplified_ln(
    node: KernelNode,
    x: torch.Tensor,
    skip: torch.Tensor,
    gamma: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    s = x + skip if bias is None else x + skip + bias
    y, inv = _rms(s, gamma, -1, node.attr("epsilon", 1e-5))
    return y.to(x.dtype), torch.zeros_like(inv), inv, s


@register("LayerNormalization")
def _layer_norm(
    node: KernelNode, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    axis = node.attr("axis", -1) % x.dim()
    xf = _compute(x)
    dims = tuple(range(axis, x.dim()))
    mean = xf.mean(dim=dims, keepdim=True)
    inv = torch.rsqrt(((xf - mean) ** 2).mean(dim=dims, keepdim=True) + node.attr("epsilon", 1e-5))
    y = (xf - mean) * inv * _compute(scale)
    if bias is not None:
        y = y + _compute(bias)
    return y.to(x.dtype), mean, inv


# ----------------------------------------------------------------------------------------
# rotary
# ----------------------------------------------------------------------------------------


def _bnsh(node: KernelNode, x: torch.Tensor, heads: int) -> torch.Tensor:
    if x.dim() == 4:  # noqa: PLR2004
        return x
    b, s, d = x.shape
    if heads <= 0 or d % heads:
        raise node.fail(f"hidden size {d} is not a multiple of num_heads={heads}")
    return x.reshape(b, s, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, n, s, h = x.shape
    return x.transpose(1, 2).reshape(b, s, n * h)


def _cache(
    node: KernelNode, cache: torch.Tensor, pos: torch.Tensor | None, b: int, s: int
) -> torch.Tensor:
    if pos is None:
        if cache.dim() != 3:  # noqa: PLR2004
            raise node.fail(f"without position_ids, the cache must be 3-D, not {cache.shape}")
        return cache
    pos = pos.to(torch.int64)
    if pos.numel() == 1 and (b, s) != (1, 1):
        pos = (pos.reshape(1, 1) + torch.arange(s).reshape(1, s)).expand(b, s)
    return cache[pos]


def _rotate(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, dim: int
) -> torch.Tensor:
    half = cos.shape[-1]
    rd = dim or 2 * half
    xf = _compute(x)
    c, s = _compute(cos)[:, None], _compute(sin)[:, None]
    rot, rest = xf[..., :rd], xf[..., rd:]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).flatten(-2)
    else:
        x1, x2 = rot[..., :half], rot[..., half:]
        out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    return torch.cat([out, rest], dim=-1).to(x.dtype)


def _rotary(
    node: KernelNode,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor | None,
) -> torch.Tensor:
    heads = node.attr("num_heads", 0)
    if x.dim() == 3 and not heads:  # noqa: PLR2004
        heads = x.shape[-1] // (2 * cos.shape[-1])
    x4 = _bnsh(node, x, heads)
    c = _cache(node, cos, pos, x4.shape[0], x4.shape[2])
    s = _cache(node, sin, pos, x4.shape[0], x4.shape[2])
    y = _rotate(x4, c, s, bool(node.attr("interleaved", 0)), node.attr("rotary_embedding_dim", 0))
    return _merge(y) if x.dim() == 3 else y  # noqa: PLR2004


@register("RotaryEmbedding")
def _rotary_embedding(
    node: KernelNode,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor | None = None,
) -> torch.Tensor:
    return _rotary(node, x, cos, sin, pos)


@register("RotaryEmbedding", domain=MS)
def _rotary_embedding_ms(
    node: KernelNode, x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    if node.attr("is_packed_batching", 0):
        raise node.fail("is_packed_batching=1 is not implemented")
    return _rotary(node, x, cos, sin, pos)


# ----------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------


def _causal(s: int, t: int, offsets: torch.Tensor, window: int = -1) -> torch.Tensor:
    qpos = offsets.reshape(-1, 1, 1, 1) + torch.arange(s).reshape(1, 1, s, 1)
    kpos = torch.arange(t).reshape(1, 1, 1, t)
    allowed = kpos <= qpos
    if window > 0:
        allowed &= kpos > qpos - window
    return allowed


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float | None,
    softcap: float = 0.0,
) -> torch.Tensor:
    nq, nkv = q.shape[1], k.shape[1]
    if nq != nkv:
        k = k.repeat_interleave(nq // nkv, dim=1)
        v = v.repeat_interleave(nq // nkv, dim=1)
    scale = scale or 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(_compute(q), _compute(k).transpose(-1, -2)) * scale
    if softcap and softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if bias is not None:
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0)  # rows fully masked
    return torch.matmul(probs, _compute(v)).to(q.dtype)


@register("Attention")
def _attention(
    node: KernelNode,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    past_key: torch.Tensor | None = None,
    past_value: torch.Tensor | None = None,
    nonpad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if node.attr("qk_matmul_output_mode", 0) or nonpad is not None:
        raise node.fail("qk_matmul_output_mode and nonpad_kv_seqlen are not implemented")
    three = q.dim() == 3  # noqa: PLR2004
    if three:
        q = _bnsh(node, q, node.attr("q_num_heads", 0))
        k = _bnsh(node, k, node.attr("kv_num_heads", 0))
        v = _bnsh(node, v, node.attr("kv_num_heads", 0))
    if past_key is not None:
        k = torch.cat([past_key, k], dim=2)
        v = torch.cat([past_value, v], dim=2)  # type: ignore[list-item]
    s, t = q.shape[2], k.shape[2]
    bias = None
    if mask is not None:
        m = mask
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=torch.float32).masked_fill(~m, -math.inf)
        m = _compute(m)
        if m.shape[-1] < t:
            m = torch.nn.functional.pad(m, (0, t - m.shape[-1]), value=-math.inf)
        bias = m
    if node.attr("is_causal", 0):
        c = torch.zeros((1, 1, s, t)).masked_fill(~_causal(s, t, torch.tensor([t - s])), -math.inf)
        bias = c if bias is None else bias + c
    left, right = node.attr("left_window_size", -1), node.attr("right_window_size", -1)
    if left >= 0 or right >= 0:
        qpos = (t - s) + torch.arange(s).reshape(s, 1)
        kpos = torch.arange(t).reshape(1, t)
        keep = torch.ones((s, t), dtype=torch.bool)
        if left >= 0:
            keep &= kpos >= qpos - left
        if right >= 0:
            keep &= kpos <= qpos + right
        w = torch.zeros((s, t)).masked_fill(~keep, -math.inf)
        bias = w if bias is None else bias + w
    y = _sdpa(q, k, v, bias, node.attr("scale"), node.attr("softcap", 0.0))
    return (_merge(y) if three else y), k, v


@register("GroupQueryAttention", domain=MS)
def _group_query_attention(
    node: KernelNode,
    query: torch.Tensor,
    key: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    past_key: torch.Tensor | None = None,
    past_value: torch.Tensor | None = None,
    seqlens_k: torch.Tensor | None = None,
    total_sequence_length: torch.Tensor | None = None,
    cos_cache: torch.Tensor | None = None,
    sin_cache: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    attention_bias: torch.Tensor | None = None,
    *others: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if key is None or value is None or seqlens_k is None or total_sequence_length is None:
        raise node.fail("packed QKV or missing seqlens_k/total_sequence_length")
    if any(o is not None for o in others) or node.attr("smooth_softmax", 0):
        raise node.fail("head_sink and smooth_softmax are not implemented")
    q = _bnsh(node, query, node.attr("num_heads", 1))
    k = _bnsh(node, key, node.attr("kv_num_heads", 1))
    v = _bnsh(node, value, node.attr("kv_num_heads", 1))
    b, s = q.shape[0], q.shape[2]
    total = int(total_sequence_length.reshape(-1)[0])
    lengths = seqlens_k.reshape(-1).to(torch.int64) + 1
    past_lens = torch.zeros(b, dtype=torch.int64) if s == total else lengths - s
    if node.attr("do_rotary", 0):
        if cos_cache is None or sin_cache is None:
            raise node.fail("do_rotary=1 needs cos_cache and sin_cache")
        pos = position_ids if position_ids is not None else past_lens[:, None] + torch.arange(s)
        c, sn = _cache(node, cos_cache, pos, b, s), _cache(node, sin_cache, pos, b, s)
        inter = bool(node.attr("rotary_interleaved", 0))
        q, k = _rotate(q, c, sn, inter, 0), _rotate(k, c, sn, inter, 0)
    p = 0 if past_key is None else past_key.shape[2]
    length = max(p, total)
    pk = torch.zeros((b, k.shape[1], length, k.shape[3]), dtype=k.dtype)
    pv = torch.zeros((b, v.shape[1], length, v.shape[3]), dtype=v.dtype)
    for i in range(b):
        n = int(past_lens[i])
        if n:
            if past_key is None or past_value is None or n > p:
                raise node.fail(f"sequence {i} needs {n} past positions, past has {p}")
            pk[i, :, :n], pv[i, :, :n] = past_key[i, :, :n], past_value[i, :, :n]
        pk[i, :, n : n + s], pv[i, :, n : n + s] = k[i], v[i]
    window = node.attr("local_window_size", -1)
    allowed = _causal(s, length, past_lens, window)
    allowed &= (torch.arange(length)[None, :] < lengths[:, None])[:, None, None, :]
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, -math.inf)
    if attention_bias is not None:
        bias = bias + _compute(attention_bias)
    y = _sdpa(q, pk, pv, bias, node.attr("scale"), node.attr("softcap", 0.0))
    return _merge(y), pk, pv
