"""
Translations of the ATen operators of neural networks: normalizations, linear algebra,
convolutions and pools, tensor creation, ``scaled_dot_product_attention``,
registered in :data:`onnx_diagnostic.export.custom.aten_ops.TRANSLATIONS`.

>>> import torch
>>> from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS
>>> torch.ops.aten.scaled_dot_product_attention.default in TRANSLATIONS
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from .aten_ops import (
    _dims,
    _fill_value,
    _meta,
    _out,
    _out_dtype,
    _rank,
    _static_shape,
    _tensor,
    aten,
    register,
)
from .builder import GraphBuilder


# normalization, linear algebra, convolution


@register(aten.layer_norm.default)
def _layer_norm(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    normalized_shape: Sequence[int],
    weight: ir.Value | None = None,
    bias: ir.Value | None = None,
    eps: float = 1e-5,
    cudnn_enable: bool = True,
) -> ir.Value:
    dtype = _out_dtype(node)
    if weight is None:
        weight = g.const(np.ones(list(normalized_shape)), dtype)
    # no trailing empty input: onnxruntime 1.31 crashes on LayerNormalization(x, w, "")
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return g.op("LayerNormalization", *inputs, axis=-len(normalized_shape), epsilon=float(eps))


@register(aten.rms_norm.default)
def _rms_norm(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    normalized_shape: Sequence[int],
    weight: ir.Value | None = None,
    eps: float | None = None,
) -> ir.Value:
    dtype = _out_dtype(node)
    if eps is None:
        # torch's default: the machine epsilon of the input type
        eps = torch.finfo(_meta(node.args[0]).dtype).eps
    n = len(normalized_shape)
    if not all(isinstance(d, int) for d in normalized_shape):
        raise NotImplementedError("rms_norm with a symbolic normalized_shape")
    if weight is None:
        weight = g.const(np.ones(list(normalized_shape)), dtype)
    if g.opset >= 23:
        return g.op("RMSNormalization", x, weight, axis=-n, epsilon=float(eps), stash_type=1)
    # x / sqrt(mean(x^2) + eps) * weight, computed in float for halves as torch does
    cdt = ir.DataType.FLOAT if dtype in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16) else dtype
    xf = g.cast(x, cdt)
    axes = g.ints(list(range(-n, 0)))
    ms = g.op("ReduceMean", g.op("Mul", xf, xf), axes, keepdims=1)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", ms, g.const(eps, cdt))))
    return g.op("Mul", g.cast(g.op("Mul", xf, inv), dtype), g.cast(weight, dtype))


@register(aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
def _batch_norm(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, weight, bias, mean, var, *a):
    if node.target is aten.batch_norm.default:
        training, _momentum, eps = a[0], a[1], a[2]
    else:
        training, eps = False, a[1]
    if training:
        raise NotImplementedError("batch_norm in training mode, call model.eval()")
    dtype = _out_dtype(node)
    channels = _meta(node.args[0]).shape[1]
    if weight is None:
        weight = g.const(np.ones((channels,)), dtype)
    if bias is None:
        bias = g.const(np.zeros((channels,)), dtype)
    res = g.op("BatchNormalization", x, weight, bias, mean, var, epsilon=float(eps))
    if node.target is not aten.batch_norm.default:
        return res, None, None
    return res


@register(aten.linear.default)
def _linear(
    g: GraphBuilder, node: torch.fx.Node, x: ir.Value, w: ir.Value, b: ir.Value | None = None
):
    wt = g.transpose_2d(w) if _rank(node.args[1]) == 2 else w
    y = g.op("MatMul", x, wt)
    return y if b is None else g.op("Add", y, b)


@register(aten.addmm.default)
def _addmm(g: GraphBuilder, node: torch.fx.Node, bias, a, b, beta: Any = 1, alpha: Any = 1):
    return g.op("Gemm", a, b, bias, alpha=float(alpha), beta=float(beta))


@register(aten.baddbmm.default)
def _baddbmm(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    b1: ir.Value,
    b2: ir.Value,
    beta: Any = 1,
    alpha: Any = 1,
) -> ir.Value:
    dtype = _out_dtype(node)
    prod = g.op("MatMul", g.cast(b1, dtype), g.cast(b2, dtype))
    if alpha != 1:
        prod = g.op("Mul", prod, _tensor(g, alpha, dtype))
    if isinstance(beta, (int, float)) and beta == 0:
        # torch ignores the input (its nan and inf) when beta is 0
        return prod
    base = g.cast(x, dtype)
    if beta != 1:
        base = g.op("Mul", base, _tensor(g, beta, dtype))
    return g.op("Add", base, prod)


@register(aten.mm, aten.bmm, aten.matmul)
def _matmul(g: GraphBuilder, node: torch.fx.Node, a: ir.Value, b: ir.Value) -> ir.Value:
    return g.op("MatMul", a, b)


def _pads(padding: Sequence[int], n: int) -> list[int]:
    padding = list(padding) if len(padding) == n else list(padding) * n
    return padding + padding


@register(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default)
def _conv(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    w: ir.Value,
    b: ir.Value | None = None,
    stride: Sequence[int] = (1,),
    padding: Sequence[int] = (0,),
    dilation: Sequence[int] = (1,),
    groups: int = 1,
) -> ir.Value:
    n = _rank(node.args[1]) - 2
    stride = list(stride) * n if len(stride) == 1 else list(stride)
    dilation = list(dilation) * n if len(dilation) == 1 else list(dilation)
    kernel = [int(d) for d in _meta(node.args[1]).shape[2:]]
    return g.op(
        "Conv",
        x,
        w,
        b,
        strides=stride,
        pads=_pads(padding, n),
        dilations=dilation,
        group=groups,
        kernel_shape=kernel,
    )


@register(aten.conv1d.padding, aten.conv2d.padding)
def _conv_padding(g, node, x, w, b=None, stride=(1,), padding="valid", dilation=(1,), groups=1):
    n = _rank(node.args[1]) - 2
    kernel = [int(d) for d in _meta(node.args[1]).shape[2:]]
    dilation = list(dilation) * n if len(dilation) == 1 else list(dilation)
    if padding == "valid":
        pads = [0] * (2 * n)
    else:
        total = [dl * (k - 1) for dl, k in zip(dilation, kernel)]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    stride = list(stride) * n if len(stride) == 1 else list(stride)
    return g.op(
        "Conv",
        x,
        w,
        b,
        strides=stride,
        pads=pads,
        dilations=dilation,
        group=groups,
        kernel_shape=kernel,
    )


@register(aten.max_pool2d.default)
def _max_pool(g, node, x, kernel, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
    kernel = list(kernel) * 2 if len(kernel) == 1 else list(kernel)
    stride = list(stride or kernel)
    stride = stride * 2 if len(stride) == 1 else stride
    dilation = list(dilation) * 2 if len(dilation) == 1 else list(dilation)
    return g.op(
        "MaxPool",
        x,
        kernel_shape=kernel,
        strides=stride,
        pads=_pads(padding, 2),
        dilations=dilation,
        ceil_mode=int(ceil_mode),
    )


@register(aten.avg_pool2d.default)
def _avg_pool(
    g, node, x, kernel, stride=(), padding=(0,), ceil_mode=False, count_include_pad=True, div=None
):
    if div is not None:
        raise NotImplementedError("avg_pool2d with divisor_override")
    kernel = list(kernel) * 2 if len(kernel) == 1 else list(kernel)
    stride = list(stride or kernel)
    stride = stride * 2 if len(stride) == 1 else stride
    return g.op(
        "AveragePool",
        x,
        kernel_shape=kernel,
        strides=stride,
        pads=_pads(padding, 2),
        ceil_mode=int(ceil_mode),
        count_include_pad=int(count_include_pad),
    )


@register(aten.adaptive_avg_pool2d.default, aten.adaptive_avg_pool1d.default)
def _adaptive_avg_pool(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, size: Sequence[int]):
    if any(s != 1 for s in size):
        raise NotImplementedError(f"adaptive_avg_pool with output size {list(size)} (only 1)")
    return g.op("GlobalAveragePool", x)


# creation


def _constant_of_shape(g: GraphBuilder, node: torch.fx.Node, shape: ir.Value, value: Any):
    dtype = _out_dtype(node)
    if isinstance(value, ir.Value):
        return g.op("Expand", g.cast(value, dtype), shape)
    return g.op("ConstantOfShape", shape, value=_fill_value(value, dtype))


def _shape_arg(g: GraphBuilder, node: torch.fx.Node, size: Sequence[Any]) -> ir.Value:
    static = _static_shape(node)
    return g.ints(static) if static is not None else _dims(g, size)


@register(aten.zeros.default, aten.empty.memory_format)
def _zeros(g: GraphBuilder, node: torch.fx.Node, size: Sequence[Any], **kw: Any) -> ir.Value:
    return _constant_of_shape(g, node, _shape_arg(g, node, size), 0)


@register(aten.ones.default)
def _ones(g: GraphBuilder, node: torch.fx.Node, size: Sequence[Any], **kw: Any) -> ir.Value:
    return _constant_of_shape(g, node, _shape_arg(g, node, size), 1)


@register(aten.eye.default, aten.eye.m)
def _eye(g: GraphBuilder, node: torch.fx.Node, n: Any, m: Any = None, **kw: Any) -> ir.Value:
    # zeros of shape (n, m), then ones on the diagonal; onnxruntime's EyeLike takes
    # float, double, int32 and int64: other types are cast from float
    dtype = _out_dtype(node)
    shape = _shape_arg(g, node, [n, n if m is None else m])
    if dtype in (ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.INT32, ir.DataType.INT64):
        return g.op("EyeLike", _constant_of_shape(g, node, shape, 0))
    zeros = g.op("ConstantOfShape", shape, value=ir.tensor(np.zeros(1, dtype=np.float32)))
    return g.cast(g.op("EyeLike", zeros), dtype)


@register(aten.full.default)
def _full(g: GraphBuilder, node: torch.fx.Node, size: Sequence[Any], value: Any, **kw: Any):
    return _constant_of_shape(g, node, _shape_arg(g, node, size), value)


@register(aten.new_zeros.default, aten.new_empty.default)
def _new_zeros(g, node, x, size, **kw):
    return _constant_of_shape(g, node, _shape_arg(g, node, size), 0)


@register(aten.new_ones.default)
def _new_ones(g, node, x, size, **kw):
    return _constant_of_shape(g, node, _shape_arg(g, node, size), 1)


@register(aten.new_full.default)
def _new_full(g, node, x, size, value, **kw):
    return _constant_of_shape(g, node, _shape_arg(g, node, size), value)


@register(aten.zeros_like.default, aten.empty_like.default, aten.zero.default, aten.zero_.default)
def _zeros_like(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, **kw: Any) -> ir.Value:
    return _constant_of_shape(g, node, g.op("Shape", x), 0)


@register(aten.ones_like.default)
def _ones_like(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, **kw: Any) -> ir.Value:
    return _constant_of_shape(g, node, g.op("Shape", x), 1)


@register(aten.full_like.default)
def _full_like(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, value: Any, **kw: Any):
    return _constant_of_shape(g, node, g.op("Shape", x), value)


@register(aten.fill.Scalar, aten.fill_.Scalar, aten.fill.Tensor, aten.fill_.Tensor)
def _fill(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, value: Any) -> ir.Value:
    return _constant_of_shape(g, node, g.op("Shape", x), value)


@register(aten.copy_.default, aten.copy.default)
def _copy(g: GraphBuilder, node: torch.fx.Node, dst: ir.Value, src: ir.Value, *a: Any):
    return g.op("Expand", g.cast(src, _out_dtype(node)), g.op("Shape", dst))


@register(aten.scalar_tensor.default)
def _scalar_tensor(g: GraphBuilder, node: torch.fx.Node, value: Any, **kw: Any) -> ir.Value:
    return _tensor(g, value, _out_dtype(node))


@register(aten.arange.default, aten.arange.start, aten.arange.start_step)
def _arange(g: GraphBuilder, node: torch.fx.Node, *args: Any, **kw: Any) -> ir.Value:
    dtype = _out_dtype(node)
    nums = [a for a in args if not isinstance(a, (torch.dtype, torch.device, torch.layout))]
    if len(nums) == 1:
        start, end, step = 0, nums[0], 1
    elif len(nums) == 2:
        (start, end), step = nums, 1
    else:
        start, end, step = nums[:3]
    if all(isinstance(v, (int, float)) for v in (start, end, step)):
        arr = np.arange(start, end, step).astype(dtype.numpy())
        if arr.size <= 1024 and dtype != ir.DataType.BFLOAT16:
            return g.const(arr, dtype)
    return g.op("Range", _tensor(g, start, dtype), _tensor(g, end, dtype), _tensor(g, step, dtype))


@register(aten.tril, aten.triu, aten.tril_, aten.triu_)
def _trilu(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, diagonal: Any = 0) -> ir.Value:
    upper = int(node.target.overloadpacket in (aten.triu, aten.triu_))
    dtype = _out_dtype(node)
    xx = g.cast(x, ir.DataType.INT64) if dtype == ir.DataType.BOOL else x
    res = g.op("Trilu", xx, g.scalar(diagonal), upper=upper)
    return g.cast(res, ir.DataType.BOOL) if dtype == ir.DataType.BOOL else res


@register(aten.item.default, aten._local_scalar_dense.default)
def _item(g: GraphBuilder, node: torch.fx.Node, x: ir.Value) -> ir.Value:
    res = g.op("Reshape", x, g.ints([]))
    val = _out(node)
    if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
        return g.cast(res, ir.DataType.INT64)
    return res


# attention


@register(aten.scaled_dot_product_attention.default)
def _sdpa(
    g: GraphBuilder,
    node: torch.fx.Node,
    q: ir.Value,
    k: ir.Value,
    v: ir.Value,
    attn_mask: ir.Value | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> ir.Value:
    if dropout_p:
        raise NotImplementedError("scaled_dot_product_attention with dropout_p > 0")
    qm, km = _meta(node.args[0]), _meta(node.args[1])
    head = qm.shape[-1]
    if scale is None:
        if not isinstance(head, int):
            raise NotImplementedError("scaled_dot_product_attention with a dynamic head size")
        scale = 1.0 / math.sqrt(head)
    if g.opset >= 23 and qm.dim() == 4:
        return g.op("Attention", q, k, v, attn_mask, scale=float(scale), is_causal=int(is_causal))
    dtype = _out_dtype(node)
    if enable_gqa and qm.shape[-3] != km.shape[-3]:
        # key and value head i // (q heads / kv heads) for query head i (repeat_interleave)
        hq, hkv = qm.shape[-3], km.shape[-3]
        if not isinstance(hq, int) or not isinstance(hkv, int):
            raise NotImplementedError("enable_gqa=True with a dynamic number of heads")
        heads = g.ints([i // (hq // hkv) for i in range(hq)])
        k = g.op("Gather", k, heads, axis=-3)
        v = g.op("Gather", v, heads, axis=-3)
    kt = g.op("Transpose", k, perm=[*range(km.dim() - 2), km.dim() - 1, km.dim() - 2])
    scores = g.op("Mul", g.op("MatMul", q, kt), g.const(scale, dtype))
    if is_causal:
        ones = g.op(
            "ConstantOfShape",
            g.op("Shape", scores, start=-2),
            value=_fill_value(1, ir.DataType.INT64),
        )
        attn_mask = g.cast(g.op("Trilu", ones, upper=0), ir.DataType.BOOL)
    if attn_mask is not None:
        if g.dtype_of(attn_mask) == ir.DataType.BOOL:
            attn_mask = g.op("Where", attn_mask, g.const(0.0, dtype), g.const(-float("inf"), dtype))
        scores = g.op("Add", scores, attn_mask)
    return g.op("MatMul", g.op("Softmax", scores, axis=-1), v)


@register(aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default)
def _upsample_nearest2d(
    g: GraphBuilder,
    node: torch.fx.Node,
    x: ir.Value,
    output_size: Sequence[Any] | None = None,
    scales: Any = None,
    scales_w: Any = None,
) -> ir.Value:
    # torch's "nearest": source index floor(dst * in / out), ONNX Resize asymmetric + floor
    attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if node.target == aten.upsample_nearest2d.default and scales_w is not None:
        # (input, output_size, scales_h, scales_w): the output size decides
        scales = None
    if output_size is not None:
        sizes = g.shape_tensor([g.size(x, 0), g.size(x, 1), *output_size])
        return g.op("Resize", x, None, None, sizes, **attrs)
    if scales is None or len(scales) != 2:
        raise NotImplementedError(f"upsample_nearest2d with scales={scales!r}")
    factors = g.const(
        np.array([1.0, 1.0, *[float(s) for s in scales]], dtype=np.float32), ir.DataType.FLOAT
    )
    return g.op("Resize", x, None, factors, **attrs)


@register(aten.prelu.default, aten._prelu_kernel.default)
def _prelu(g: GraphBuilder, node: torch.fx.Node, x: ir.Value, weight: ir.Value) -> ir.Value:
    # torch applies one slope per channel (dimension 1), ONNX broadcasts from the last one
    rank = _rank(node.args[0])
    w_shape = _static_shape(node.args[1])
    if rank > 2 and (w_shape is None or w_shape != [1]):
        weight = g.op("Reshape", weight, g.ints([-1] + [1] * (rank - 2)))
    return g.op("PRelu", x, weight)
