"""
Numpy formulas shared by the kernels of :mod:`onnx_diagnostic.reference.evaluator`:
normalizations, rotary embedding and scaled dot-product attention. Every function computes
in float32 (or float64 if the input is float64) and returns that type; the kernels cast back.
"""

from __future__ import annotations

import math

import numpy as np


def compute_type(dtype: np.dtype) -> type:
    """float64 stays float64, every other float type (float16, bfloat16...) becomes float32."""
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def rms_norm(
    x: np.ndarray, scale: np.ndarray, axis: int, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """``x / sqrt(mean(x**2 over axes >= axis) + epsilon) * scale``, returns
    ``(y, inv_std)``."""
    ct = compute_type(x.dtype)
    xf = x.astype(ct)
    axes = tuple(range(axis % max(x.ndim, 1), x.ndim))
    ms = np.mean(xf * xf, axis=axes, keepdims=True) if axes else xf * xf
    inv = 1.0 / np.sqrt(ms + ct(epsilon))
    return xf * inv * scale.astype(ct), inv.astype(ct)


def layer_norm(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, axis: int, epsilon: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer normalization over axes >= axis, returns ``(y, mean, inv_std)``."""
    ct = compute_type(x.dtype)
    xf = x.astype(ct)
    axes = tuple(range(axis % max(x.ndim, 1), x.ndim))
    mean = np.mean(xf, axis=axes, keepdims=True)
    var = np.mean((xf - mean) ** 2, axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + ct(epsilon))
    y = (xf - mean) * inv * scale.astype(ct)
    if bias is not None:
        y = y + bias.astype(ct)
    return y, mean, inv


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, a row filled with ``-inf`` gives zeros instead of NaN."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    return e / np.where(s == 0, 1, s)


def erf(x: np.ndarray) -> np.ndarray:
    """Element-wise error function (math.erf, computed in float64)."""
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64))


def rotate(
    x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool, rotary_dim: int = 0
) -> np.ndarray:
    """
    Applies a rotary embedding to ``x`` of shape ``(B, N, S, H)``; ``cos`` and ``sin``
    have shape ``(B, S, R/2)`` where ``R`` (``rotary_dim`` or ``2 * cos.shape[-1]``)
    is the number of rotated dimensions; the last ``H - R`` ones are left untouched.
    """
    ct = compute_type(x.dtype)
    half = cos.shape[-1]
    rd = rotary_dim or 2 * half
    if rd != 2 * half:
        raise ValueError(f"rotary dimension {rd} != 2 * cos_cache.shape[-1] ({2 * half})")
    if rd > x.shape[-1]:
        raise ValueError(f"rotary dimension {rd} > head size {x.shape[-1]}")
    xf = x.astype(ct)
    c = cos.astype(ct)[:, None, :, :]
    s = sin.astype(ct)[:, None, :, :]
    rot, rest = xf[..., :rd], xf[..., rd:]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out = np.empty_like(rot)
        out[..., 0::2] = x1 * c - x2 * s
        out[..., 1::2] = x2 * c + x1 * s
    else:
        x1, x2 = rot[..., :half], rot[..., half:]
        out = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return np.concatenate([out, rest], axis=-1)


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    bias: np.ndarray | None = None,
    scale: float | None = None,
    softcap: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Scaled dot-product attention on ``(B, Nq, S, H)``, ``(B, Nkv, T, H)``,
    ``(B, Nkv, T, Hv)`` (``Nq`` a multiple of ``Nkv``: head ``h`` of q reads head
    ``h // (Nq / Nkv)`` of k and v), ``bias`` an additive float mask broadcastable to
    ``(B, Nq, S, T)``. Returns ``(output, scores before softmax)``.
    """
    ct = compute_type(q.dtype)
    nq, nkv = q.shape[1], k.shape[1]
    if nkv == 0 or nq % nkv != 0:
        raise ValueError(f"the number of query heads {nq} is not a multiple of kv heads {nkv}")
    if nq != nkv:
        k = np.repeat(k, nq // nkv, axis=1)
        v = np.repeat(v, nq // nkv, axis=1)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = np.matmul(q.astype(ct), np.swapaxes(k.astype(ct), -1, -2)) * ct(scale)
    if softcap and softcap > 0:
        scores = ct(softcap) * np.tanh(scores / ct(softcap))
    if bias is not None:
        scores = scores + bias.astype(ct)
    probs = softmax(scores, axis=-1)
    return np.matmul(probs, v.astype(ct)).astype(ct), scores


def causal_bias(
    s: int, t: int, offsets: np.ndarray | int, dtype: type = np.float32, window: int = -1
) -> np.ndarray:
    """
    Additive causal mask of shape ``(B or 1, 1, S, T)``: query ``i`` of batch ``b`` sits
    at position ``offsets[b] + i`` and sees the keys at positions ``<=`` its own (and,
    with ``window > 0``, ``> position - window``).
    """
    off = np.array(offsets, dtype=np.int64).reshape((-1, 1, 1, 1))
    qpos = off + np.arange(s).reshape((1, 1, s, 1))
    kpos = np.arange(t).reshape((1, 1, 1, t))
    allowed = kpos <= qpos
    if window is not None and window > 0:
        allowed &= kpos > qpos - window
    return np.where(allowed, 0, -np.inf).astype(dtype)


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """``(B, S, N * H)`` -> ``(B, N, S, H)``."""
    b, s, d = x.shape
    if num_heads <= 0 or d % num_heads != 0:
        raise ValueError(f"hidden size {d} is not a multiple of num_heads={num_heads}")
    return x.reshape((b, s, num_heads, d // num_heads)).transpose((0, 2, 1, 3))


def merge_heads(x: np.ndarray) -> np.ndarray:
    """``(B, N, S, H)`` -> ``(B, S, N * H)``."""
    b, n, s, h = x.shape
    return x.transpose((0, 2, 1, 3)).reshape((b, s, n * h))
