"""
Numpy kernels (:class:`onnx.reference.op_run.OpRun`) of the operators
:class:`onnx_diagnostic.reference.ExtendedReferenceEvaluator` adds to
:class:`onnx.reference.ReferenceEvaluator`: the contrib operators of :epkg:`onnxruntime`
(domain ``com.microsoft``, and ``SimplifiedLayerNormalization`` which onnxruntime registers
in the main domain) and fallbacks for the opset-23 operators (``Attention``,
``RMSNormalization``, ``RotaryEmbedding``) used only when the installed onnx lacks them.
"""

from __future__ import annotations

import math

import numpy as np
from onnx.reference.op_run import OpRun

from ._numpy_math import (
    attention,
    causal_bias,
    compute_type,
    erf,
    layer_norm,
    merge_heads,
    rms_norm,
    rotate,
    split_heads,
)

MS = "com.microsoft"


def _fail(op: OpRun, message: str) -> NotImplementedError:
    node = op.onnx_node
    return NotImplementedError(
        f"{node.op_type} (domain {node.domain!r}, node {node.name!r}): {message}"
    )


def _present(x: np.ndarray | None) -> bool:
    return x is not None and x.size > 0 if isinstance(x, np.ndarray) else x is not None


class _MsOp(OpRun):
    """Base of the contrib kernels: no onnx schema (the main domain may have an operator
    with the same name and other attributes)."""

    op_domain = MS
    op_schema = None


# ----------------------------------------------------------------------------------------
# normalizations
# ----------------------------------------------------------------------------------------


class SimplifiedLayerNormalization(_MsOp):
    """onnxruntime's RMS normalization (main domain): outputs ``Y`` (type of the
    scale) and ``inv_std_var``."""

    op_domain = ""

    def _run(self, x, scale, axis=-1, epsilon=1e-5, stash_type=1):  # type: ignore[override]
        y, inv = rms_norm(x, scale, axis, epsilon)
        return (y.astype(scale.dtype), inv)


class RMSNormalization(OpRun):
    """``RMSNormalization`` (opset 23): ``Y`` has the type of ``X``."""

    op_domain = ""

    def _run(self, x, scale, axis=-1, epsilon=1e-5, stash_type=1):  # type: ignore[override]
        y, _ = rms_norm(x, scale, axis, epsilon)
        return (y.astype(x.dtype),)


class SkipSimplifiedLayerNormalization(_MsOp):
    """``S = input + skip (+ bias)``, outputs ``(rms_norm(S) * gamma, mean (zeros),
    inv_std_var, S)``."""

    def _run(self, x, skip, gamma, bias=None, epsilon=1e-5):  # type: ignore[override]
        s = x + skip if bias is None else x + skip + bias
        y, inv = rms_norm(s, gamma, -1, epsilon)
        return (y.astype(x.dtype), np.zeros_like(inv), inv, s)


class SkipLayerNormalization(_MsOp):
    """``S = input + skip (+ bias)``, outputs ``(layer_norm(S) * gamma + beta, mean,
    inv_std_var, S)``."""

    def _run(self, x, skip, gamma, beta=None, bias=None, epsilon=1e-5):  # type: ignore[override]
        s = x + skip if bias is None else x + skip + bias
        y, mean, inv = layer_norm(s, gamma, beta, -1, epsilon)
        return (y.astype(x.dtype), mean, inv, s)


# ----------------------------------------------------------------------------------------
# element-wise and matmul
# ----------------------------------------------------------------------------------------


class FusedMatMul(_MsOp):
    """``alpha * op(A) @ op(B)``, ``op`` transposing the last two axes when
    ``transA``/``transB`` is set."""

    def _run(  # type: ignore[override]
        self, a, b, alpha=1.0, transA=0, transB=0, transBatchA=0, transBatchB=0
    ):
        if transBatchA or transBatchB:
            raise _fail(self, "transBatchA and transBatchB are not implemented")
        if transA:
            a = np.swapaxes(a, -1, -2)
        if transB:
            b = np.swapaxes(b, -1, -2)
        return ((np.matmul(a, b) * a.dtype.type(alpha)).astype(a.dtype),)


class QuickGelu(_MsOp):
    """``x * sigmoid(alpha * x)``."""

    def _run(self, x, alpha=1.702):  # type: ignore[override]
        ct = compute_type(x.dtype)
        xf = x.astype(ct)
        return ((xf / (1 + np.exp(-ct(alpha) * xf))).astype(x.dtype),)


class Gelu(_MsOp):
    """``0.5 * x * (1 + erf(x / sqrt(2)))`` (the contrib version)."""

    def _run(self, x):  # type: ignore[override]
        return ((0.5 * x * (1 + erf(x / math.sqrt(2)))).astype(x.dtype),)


class BiasGelu(_MsOp):
    """``Gelu(A + B)``."""

    def _run(self, a, b):  # type: ignore[override]
        x = a + b
        return ((0.5 * x * (1 + erf(x / math.sqrt(2)))).astype(a.dtype),)


class FastGelu(_MsOp):
    """``Gelu`` approximated with tanh, on ``X (+ bias)``."""

    def _run(self, x, bias=None):  # type: ignore[override]
        ct = compute_type(x.dtype)
        xf = x.astype(ct) if bias is None else (x + bias).astype(ct)
        c = ct(math.sqrt(2 / math.pi))
        y = 0.5 * xf * (1 + np.tanh(c * (xf + ct(0.044715) * xf**3)))
        return (y.astype(x.dtype),)


# ----------------------------------------------------------------------------------------
# rotary embedding
# ----------------------------------------------------------------------------------------


def _to_bnsh(op: OpRun, x: np.ndarray, num_heads: int, head_size: int) -> np.ndarray:
    if x.ndim == 4:
        return x
    if x.ndim != 3:
        raise _fail(op, f"input must be 3-D or 4-D, not of shape {x.shape}")
    if not num_heads:
        if not head_size or x.shape[-1] % head_size:
            raise _fail(op, f"num_heads is needed for a 3-D input of shape {x.shape}")
        num_heads = x.shape[-1] // head_size
    try:
        return split_heads(x, num_heads)
    except ValueError as e:
        raise _fail(op, str(e)) from e


def _gather_cache(
    op: OpRun, cache: np.ndarray, position_ids: np.ndarray | None, b: int, s: int
) -> np.ndarray:
    """Returns the cache as ``(B, S, R/2)``."""
    if position_ids is None:
        if cache.ndim != 3:
            raise _fail(op, f"without position_ids, the cache must be 3-D, not {cache.shape}")
        return cache
    pos = np.asarray(position_ids).astype(np.int64)
    if pos.size == 1 and (b, s) != (1, 1):
        pos = pos.reshape((1, 1)) + np.arange(s).reshape((1, s))
        pos = np.broadcast_to(pos, (b, s))
    if pos.max(initial=0) >= cache.shape[0] or pos.min(initial=0) < 0:
        raise _fail(op, f"position_ids out of the cache range [0, {cache.shape[0]})")
    return cache[pos]


def _rotary(
    op: OpRun,
    x: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    position_ids: np.ndarray | None,
    interleaved: int,
    num_heads: int,
    rotary_embedding_dim: int,
) -> np.ndarray:
    half = cos.shape[-1]
    head = (x.shape[-1] // num_heads) if (x.ndim == 3 and num_heads) else 2 * half
    x4 = _to_bnsh(op, x, num_heads, head)
    c = _gather_cache(op, cos, position_ids, x4.shape[0], x4.shape[2])
    s = _gather_cache(op, sin, position_ids, x4.shape[0], x4.shape[2])
    try:
        y = rotate(x4, c, s, bool(interleaved), rotary_embedding_dim).astype(x.dtype)
    except ValueError as e:
        raise _fail(op, str(e)) from e
    return merge_heads(y) if x.ndim == 3 else y


class RotaryEmbedding(OpRun):
    """``RotaryEmbedding`` (opset 23): inputs ``X, cos_cache, sin_cache[, position_ids]``."""

    op_domain = ""

    def _run(  # type: ignore[override]
        self,
        x,
        cos_cache,
        sin_cache,
        position_ids=None,
        interleaved=0,
        num_heads=0,
        rotary_embedding_dim=0,
    ):
        y = _rotary(
            self,
            x,
            cos_cache,
            sin_cache,
            position_ids,
            interleaved,
            num_heads,
            rotary_embedding_dim,
        )
        return (y,)


class RotaryEmbeddingMS(_MsOp):
    """``RotaryEmbedding`` of onnxruntime (``com.microsoft``): inputs ``input,
    position_ids, cos_cache, sin_cache``, ``position_ids`` either ``(B, S)`` or one
    offset; ``scale`` and ``is_packed_batching`` are not supported."""

    def _run(  # type: ignore[override]
        self,
        x,
        position_ids,
        cos_cache,
        sin_cache,
        interleaved=0,
        is_packed_batching=0,
        num_heads=0,
        rotary_embedding_dim=0,
        scale=1.0,
    ):
        if is_packed_batching:
            raise _fail(self, "is_packed_batching=1 is not implemented")
        y = _rotary(
            self,
            x,
            cos_cache,
            sin_cache,
            position_ids,
            interleaved,
            num_heads,
            rotary_embedding_dim,
        )
        return (y,)


# ----------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------


class Attention(OpRun):
    """
    ``Attention`` (opset 23), the fallback for an onnx without it: Q, K, V of rank 4
    (or 3 with ``q_num_heads``/``kv_num_heads``), optional mask (boolean or additive),
    past key/value, ``is_causal``, ``scale``, ``softcap``; outputs
    ``Y, present_key, present_value``.
    """

    op_domain = ""

    def _run(  # type: ignore[override]
        self,
        q,
        k,
        v,
        attn_mask=None,
        past_key=None,
        past_value=None,
        nonpad_kv_seqlen=None,
        is_causal=0,
        kv_num_heads=0,
        q_num_heads=0,
        qk_matmul_output_mode=0,
        scale=None,
        softcap=0.0,
        softmax_precision=None,
        left_window_size=-1,
        right_window_size=-1,
    ):
        if qk_matmul_output_mode:
            raise _fail(self, "qk_matmul_output_mode != 0 is not implemented")
        if nonpad_kv_seqlen is not None:
            raise _fail(self, "nonpad_kv_seqlen is not implemented")
        three = q.ndim == 3
        if three:
            q = _to_bnsh(self, q, q_num_heads, 0)
            k = _to_bnsh(self, k, kv_num_heads, 0)
            v = _to_bnsh(self, v, kv_num_heads, 0)
        if past_key is not None:
            k = np.concatenate([past_key, k], axis=2)
            v = np.concatenate([past_value, v], axis=2)
        s, t = q.shape[2], k.shape[2]
        ct = compute_type(q.dtype)
        bias = None
        if attn_mask is not None:
            m = attn_mask
            if m.dtype == np.bool_:
                m = np.where(m, 0, -np.inf).astype(ct)
            if m.shape[-1] < t:  # padded with -inf up to the total length
                pad = [(0, 0)] * (m.ndim - 1) + [(0, t - m.shape[-1])]
                m = np.pad(m.astype(ct), pad, constant_values=-np.inf)
            bias = m.astype(ct)
        if is_causal:
            c = causal_bias(s, t, t - s, ct)
            bias = c if bias is None else bias + c
        if left_window_size >= 0 or right_window_size >= 0:
            qpos = (t - s) + np.arange(s).reshape((s, 1))
            kpos = np.arange(t).reshape((1, t))
            keep = np.ones((s, t), dtype=bool)
            if left_window_size >= 0:
                keep &= kpos >= qpos - left_window_size
            if right_window_size >= 0:
                keep &= kpos <= qpos + right_window_size
            w = np.where(keep, 0, -np.inf).astype(ct)
            bias = w if bias is None else bias + w
        y, _ = attention(q, k, v, bias, scale, softcap)
        y = y.astype(q.dtype)
        return (merge_heads(y) if three else y, k, v)


def _mask_to_bias(
    op: OpRun, mask: np.ndarray | None, b: int, s: int, t: int, filter_value: float, ct: type
) -> np.ndarray | None:
    """Converts a padding mask of onnxruntime into an additive bias ``(B, 1, S, T)``."""
    if mask is None or mask.size == 0:
        return None
    if mask.ndim == 1 and mask.shape[0] == b:  # end position of every sequence
        keep = np.arange(t).reshape((1, t)) < mask.reshape((b, 1))
        keep = keep[:, None, None, :]
    elif mask.ndim == 2 and mask.shape == (b, t):  # noqa: PLR2004
        keep = (mask != 0)[:, None, None, :]
    elif mask.ndim == 3 and mask.shape == (b, s, t):  # noqa: PLR2004
        keep = (mask != 0)[:, None, :, :]
    else:
        raise _fail(
            op, f"mask of shape {mask.shape} is not implemented (batch={b}, total length={t})"
        )
    return np.where(keep, 0, filter_value).astype(ct)


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a + b


class AttentionMS(_MsOp):
    """
    ``Attention`` of onnxruntime (``com.microsoft``): projects ``input`` with
    ``weights`` (and ``bias``) into Q, K, V, optional ``mask_index`` (``(B,)`` end
    positions, ``(B, T)`` or ``(B, S, T)`` 0/1 masks), ``past`` ``(2, B, N, P, H)``,
    ``attention_bias``; outputs ``output, present``.
    """

    def _run(  # type: ignore[override]
        self,
        x,
        weights,
        bias=None,
        mask_index=None,
        past=None,
        attention_bias=None,
        past_sequence_length=None,
        num_heads=1,
        unidirectional=0,
        scale=None,
        qkv_hidden_sizes=None,
        mask_filter_value=-10000.0,
        do_rotary=0,
        past_present_share_buffer=0,
        rotary_embedding_dim=0,
    ):
        if do_rotary or past_present_share_buffer or past_sequence_length is not None:
            raise _fail(self, "do_rotary, past_present_share_buffer are not implemented")
        ct = compute_type(x.dtype)
        proj = np.matmul(x.astype(ct), weights.astype(ct))
        if bias is not None:
            proj = proj + bias.astype(ct)
        sizes = list(qkv_hidden_sizes) if qkv_hidden_sizes else [proj.shape[-1] // 3] * 3
        if sum(sizes) != proj.shape[-1]:
            raise _fail(self, f"qkv_hidden_sizes={sizes} do not sum to {proj.shape[-1]}")
        q, k, v = np.split(proj, [sizes[0], sizes[0] + sizes[1]], axis=-1)
        q, k, v = (_to_bnsh(self, t, num_heads, 0) for t in (q, k, v))
        if _present(past):
            k = np.concatenate([past[0].astype(ct), k], axis=2)
            v = np.concatenate([past[1].astype(ct), v], axis=2)
        b, s, t = q.shape[0], q.shape[2], k.shape[2]
        bias_ = _mask_to_bias(self, mask_index, b, s, t, mask_filter_value, ct)
        if unidirectional:
            c = np.where(causal_bias(s, t, t - s, ct) == 0, 0, mask_filter_value).astype(ct)
            bias_ = _add(bias_, c)
        if attention_bias is not None:
            bias_ = _add(bias_, attention_bias.astype(ct))
        y, _ = attention(q, k, v, bias_, scale or None)
        present = np.stack([k, v]).astype(x.dtype)
        return (merge_heads(y).astype(x.dtype), present)


class MultiHeadAttention(_MsOp):
    """
    ``MultiHeadAttention`` of onnxruntime (``com.microsoft``): ``query (B, S, D)``,
    ``key``/``value`` ``(B, L, D)`` (or already ``(B, N, L, H)``, then used as they
    are), optional ``bias`` (Q, K, V biases concatenated), ``key_padding_mask``,
    ``attention_bias``, ``past_key``/``past_value``; outputs ``output, present_key,
    present_value``. Packed QKV (no key) is not supported.
    """

    def _run(  # type: ignore[override]
        self,
        query,
        key=None,
        value=None,
        bias=None,
        key_padding_mask=None,
        attention_bias=None,
        past_key=None,
        past_value=None,
        past_sequence_length=None,
        cache_indirection=None,
        num_heads=1,
        scale=None,
        unidirectional=0,
        mask_filter_value=-10000.0,
        output_qk=0,
    ):
        if key is None or value is None or query.ndim != 3:  # noqa: PLR2004
            raise _fail(self, "packed QKV or a query not 3-D is not implemented")
        if cache_indirection is not None or output_qk:
            raise _fail(self, "cache_indirection and output_qk are not implemented")
        ct = compute_type(query.dtype)
        q, k, v = query.astype(ct), key.astype(ct), value.astype(ct)
        if bias is not None:
            dq, dk = q.shape[-1], q.shape[-1] if k.ndim == 4 else k.shape[-1]  # noqa: PLR2004
            bq, bk, bv = np.split(bias.astype(ct), [dq, dq + dk])
            q = q + bq
            if k.ndim == 3:  # noqa: PLR2004
                k, v = k + bk, v + bv
        q = split_heads(q, num_heads)
        k = k if k.ndim == 4 else _to_bnsh(self, k, num_heads, 0)  # noqa: PLR2004
        v = v if v.ndim == 4 else _to_bnsh(self, v, num_heads, 0)  # noqa: PLR2004
        if _present(past_key):
            k = np.concatenate([past_key.astype(ct), k], axis=2)
            v = np.concatenate([past_value.astype(ct), v], axis=2)
        b, s, t = q.shape[0], q.shape[2], k.shape[2]
        bias_ = _mask_to_bias(self, key_padding_mask, b, s, t, mask_filter_value, ct)
        if unidirectional:
            c = np.where(causal_bias(s, t, t - s, ct) == 0, 0, mask_filter_value).astype(ct)
            bias_ = _add(bias_, c)
        if attention_bias is not None:
            bias_ = _add(bias_, attention_bias.astype(ct))
        y, _ = attention(q, k, v, bias_, scale or None)
        dt = query.dtype
        return (merge_heads(y).astype(dt), k.astype(dt), v.astype(dt))


class GroupQueryAttention(_MsOp):
    """
    ``GroupQueryAttention`` of onnxruntime (``com.microsoft``), always causal:
    ``query (B, S, N*H)``, ``key``/``value`` ``(B, S, Nkv*H)``, ``past_key``/
    ``past_value`` ``(B, Nkv, P, H)``, ``seqlens_k`` (total length - 1 of every
    sequence), ``total_sequence_length``, optional ``cos_cache``/``sin_cache`` used when
    ``do_rotary=1``. Sequence ``b`` holds ``seqlens_k[b] + 1 - S`` past positions, except
    for the first prompt (``S == total_sequence_length``) where it holds none and the
    positions beyond ``seqlens_k[b]`` are padding. Outputs ``output, present_key,
    present_value`` (``present`` of length ``max(P, total_sequence_length)``).
    """

    def _run(  # type: ignore[override]
        self,
        query,
        key=None,
        value=None,
        past_key=None,
        past_value=None,
        seqlens_k=None,
        total_sequence_length=None,
        cos_cache=None,
        sin_cache=None,
        position_ids=None,
        attention_bias=None,
        head_sink=None,
        num_heads=1,
        kv_num_heads=1,
        scale=None,
        do_rotary=0,
        rotary_interleaved=0,
        local_window_size=-1,
        softcap=0.0,
        smooth_softmax=0,
        qk_output=0,
    ):
        if key is None or value is None:
            raise _fail(self, "packed QKV (no key) is not implemented")
        if head_sink is not None or smooth_softmax or qk_output:
            raise _fail(self, "head_sink, smooth_softmax, qk_output are not implemented")
        if seqlens_k is None or total_sequence_length is None:
            raise _fail(self, "seqlens_k and total_sequence_length are required")
        ct = compute_type(query.dtype)
        q = _to_bnsh(self, query.astype(ct), num_heads, 0)
        k = _to_bnsh(self, key.astype(ct), kv_num_heads, 0)
        v = _to_bnsh(self, value.astype(ct), kv_num_heads, 0)
        b, s = q.shape[0], q.shape[2]
        total = int(np.asarray(total_sequence_length).reshape(-1)[0])
        lengths = np.asarray(seqlens_k).reshape(-1).astype(np.int64) + 1
        if lengths.shape[0] != b:
            raise _fail(self, f"seqlens_k has {lengths.shape[0]} values for a batch of {b}")
        first = s == total
        past_lens = np.zeros(b, dtype=np.int64) if first else lengths - s
        if (past_lens < 0).any():
            raise _fail(self, f"seqlens_k={seqlens_k} is shorter than the new tokens ({s})")
        if do_rotary:
            if cos_cache is None or sin_cache is None:
                raise _fail(self, "do_rotary=1 needs cos_cache and sin_cache")
            pos = (
                position_ids.astype(np.int64)
                if position_ids is not None
                else past_lens.reshape((b, 1)) + np.arange(s).reshape((1, s))
            )
            c = _gather_cache(self, cos_cache, pos, b, s)
            sn = _gather_cache(self, sin_cache, pos, b, s)
            q = rotate(q, c, sn, bool(rotary_interleaved))
            k = rotate(k, c, sn, bool(rotary_interleaved))
        p = 0 if past_key is None else past_key.shape[2]
        length = max(p, total)
        shape = (b, k.shape[1], length, k.shape[3])
        pk, pv = np.zeros(shape, dtype=ct), np.zeros(shape[:3] + (v.shape[3],), dtype=ct)
        for i in range(b):
            n = int(past_lens[i])
            if n:
                if past_key is None or n > p:
                    raise _fail(self, f"sequence {i} needs {n} past positions, past has {p}")
                pk[i, :, :n], pv[i, :, :n] = past_key[i, :, :n], past_value[i, :, :n]
            pk[i, :, n : n + s], pv[i, :, n : n + s] = k[i], v[i]
        window = local_window_size if local_window_size > 0 else -1
        bias = causal_bias(s, length, past_lens, ct, window)
        valid = np.arange(length).reshape((1, length)) < lengths.reshape((b, 1))
        bias = bias + np.where(valid, 0, -np.inf).astype(ct)[:, None, None, :]
        if attention_bias is not None:
            bias = bias + attention_bias.astype(ct)
        y, _ = attention(q, pk, pv, bias, scale or None, softcap)
        dt = query.dtype
        return (merge_heads(y).astype(dt), pk.astype(dt), pv.astype(dt))


#: Kernels for the contrib operators, their class name is the operator name except
#: for the ``com.microsoft`` versions of names the main domain also has (suffix ``MS``).
CONTRIB_KERNELS: list[type[OpRun]] = [
    AttentionMS,
    BiasGelu,
    FastGelu,
    FusedMatMul,
    Gelu,
    GroupQueryAttention,
    MultiHeadAttention,
    QuickGelu,
    RotaryEmbeddingMS,
    SimplifiedLayerNormalization,
    SkipLayerNormalization,
    SkipSimplifiedLayerNormalization,
]

#: Kernels of opset-23 operators, registered only if the installed onnx has none.
OPSET23_FALLBACKS: list[type[OpRun]] = [Attention, RMSNormalization, RotaryEmbedding]
