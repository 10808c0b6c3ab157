"""Tests of onnx_diagnostic/export/custom/fusions.py: every pattern is built as the
custom exporter emits it (onnx_ir values with type and shape, symbolic batch and
sequence, constants as initializers), run with onnxruntime before and after."""

from __future__ import annotations

import unittest

import numpy as np
import onnx_ir as ir
import torch

from onnx_diagnostic.ext_test_case import ExtTestCase, requires_onnxruntime

from onnx_diagnostic.export.custom.fusions import (  # noqa: I001
    FUSIONS,
    fuse_attention,
    fuse_rms_normalization,
    fuse_rotary_embedding,
    remove_repeat_kv,
)

F32, F16, I64 = ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.INT64
INT64_MAX = np.iinfo(np.int64).max


class _Builder:
    """A tiny graph builder emitting what the translator emits."""

    def __init__(self, opset: int = 23):
        self.opset = opset
        self.inputs: list[ir.Value] = []
        self.inits: list[ir.Value] = []
        self.nodes: list[ir.Node] = []

    def input(self, name: str, dtype: ir.DataType, shape: list) -> ir.Value:
        value = ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(shape))
        self.inputs.append(value)
        return value

    def const(self, array: np.ndarray | list | float, dtype=np.float32) -> ir.Value:
        arr = np.asarray(array, dtype=dtype)
        name = f"c{len(self.inits)}"
        tensor = ir.tensor(arr, name=name)
        value = ir.Value(
            name=name, type=ir.TensorType(tensor.dtype), shape=tensor.shape, const_value=tensor
        )
        self.inits.append(value)
        return value

    def ints(self, values: list[int]) -> ir.Value:
        return self.const(values, dtype=np.int64)

    def op(self, op_type: str, *inputs, dtype=None, shape=None, **attrs) -> ir.Value:
        node = ir.Node(
            "",
            op_type,
            list(inputs),
            attributes=[ir.convenience.convert_attribute(k, v) for k, v in attrs.items()],
        )
        self.nodes.append(node)
        out = node.outputs[0]
        first = inputs[0]
        out.dtype = dtype if dtype is not None else first.dtype
        out.shape = ir.Shape(shape) if shape is not None else first.shape
        return out

    def model(self, *outputs: ir.Value) -> ir.Model:
        for i, out in enumerate(outputs):
            if out.name is None:
                out.name = f"out{i}"
        graph = ir.Graph(
            self.inputs,
            list(outputs),
            nodes=self.nodes,
            initializers=self.inits,
            opset_imports={"": self.opset},
        )
        return ir.Model(graph, ir_version=10)


def _run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    proto = ir.to_proto(model)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _op_types(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


# ----------------------------------------------------------------------------------------
# patterns
# ----------------------------------------------------------------------------------------


def _rms(
    b: _Builder,
    x: ir.Value,
    weight: np.ndarray,
    eps: float = 1e-6,
    weight_first: bool = True,
    cast_weight: bool = False,
    cast_back: bool = True,
    axes: int = -1,
) -> tuple[ir.Value, dict[str, ir.Value]]:
    """LlamaRMSNorm as translated; returns Y and the intermediates."""
    xf = x if x.dtype == F32 else b.op("Cast", x, dtype=F32, to=F32)
    p = b.op("Pow", xf, b.const(2.0))
    shape = list(x.shape.dims)
    shape[axes] = 1
    m = b.op("ReduceMean", p, b.ints([axes]), shape=shape, keepdims=1)
    a = b.op("Add", m, b.const(eps))
    r = b.op("Reciprocal", b.op("Sqrt", a))
    n = b.op("Mul", xf, r)
    if cast_back and x.dtype != F32:
        n = b.op("Cast", n, dtype=x.dtype, to=x.dtype)
    w = b.const(weight, dtype=weight.dtype)
    if cast_weight:
        w = b.op("Cast", w, dtype=F32, to=F32)
    y = b.op("Mul", w, n, shape=n.shape) if weight_first else b.op("Mul", n, w)
    return y, dict(xf=xf, p=p, m=m, a=a, r=r, n=n)


def _rotary(
    b: _Builder, q: ir.Value, cos: ir.Value, sin: ir.Value, depth: int, axis: int = 3
) -> tuple[ir.Value, dict[str, ir.Value]]:
    """apply_rotary_pos_emb (rotate_half) on q (B, H, S, D) as translated."""
    half = depth // 2
    shape = list(q.shape.dims)
    c = b.op("Unsqueeze", cos, b.ints([1]), shape=[shape[0], 1, shape[2], depth])
    s = b.op("Unsqueeze", sin, b.ints([1]), shape=[shape[0], 1, shape[2], depth])
    x2 = b.op(
        "Slice", q, b.ints([half]), b.ints([INT64_MAX]), b.ints([axis]), shape=[*shape[:3], half]
    )
    x1 = b.op("Slice", q, b.ints([0]), b.ints([half]), b.ints([axis]), shape=[*shape[:3], half])
    rot = b.op("Concat", b.op("Neg", x2), x1, axis=-1, shape=shape)
    y = b.op("Add", b.op("Mul", q, c, shape=shape), b.op("Mul", rot, s, shape=shape))
    return y, dict(rot=rot, x1=x1, x2=x2)


def _cos_sin(
    b: _Builder, freqs: ir.Value, depth: int, scaling: float | None = 1.0, other=None
) -> tuple[ir.Value, ir.Value]:
    """E = Concat(F, F); COS = Cos(E) * scaling; SIN = Sin(E) * scaling."""
    shape = [*freqs.shape.dims[:-1], depth]
    emb = b.op("Concat", freqs, freqs if other is None else other, axis=-1, shape=shape)
    cos, sin = b.op("Cos", emb), b.op("Sin", emb)
    if scaling is not None:
        cos = b.op("Mul", cos, b.const(scaling))
        sin = b.op("Mul", b.const(scaling), sin, shape=sin.shape)
    return cos, sin


def _decomposed_attention(
    b: _Builder, q, k, v, mask, scale: float, split_scale: bool = False
) -> ir.Value:
    """Softmax(Q K^T * scale + mask) V as translated (scale after MatMul or split)."""
    bq, h, s, d = q.shape.dims
    t = k.shape[2]
    kt = b.op("Transpose", k, perm=[0, 1, 3, 2], shape=[bq, k.shape[1], d, t])
    if split_scale:
        root = float(np.sqrt(scale))
        q = b.op("Mul", q, b.const(root))
        kt = b.op("Mul", kt, b.const(root))
    scores = b.op("MatMul", q, kt, shape=[bq, h, s, t])
    if not split_scale:
        scores = b.op("Mul", scores, b.const(scale))
    if mask is not None:
        scores = b.op("Add", mask, scores, shape=[bq, h, s, t])
    return b.op("MatMul", b.op("Softmax", scores, axis=-1), v, shape=[bq, h, s, v.shape[3]])


def _repeat_kv(b: _Builder, k: ir.Value, n_rep: int, dynamic_shape: bool = True) -> ir.Value:
    """HF repeat_kv as translated, shapes built with Concat of Shape pieces."""
    bk, hkv, t, d = k.shape.dims
    u = b.op("Unsqueeze", k, b.ints([2]), shape=[bk, hkv, 1, t, d])
    if dynamic_shape:
        dim_b = b.op("Shape", k, dtype=I64, shape=[1], start=0, end=1)
        dim_t = b.op("Shape", k, dtype=I64, shape=[1], start=2, end=3)
        shape1 = b.op("Concat", dim_b, b.ints([hkv, n_rep]), dim_t, b.ints([d]), axis=0, shape=[5])
        shape2 = b.op("Concat", dim_b, b.ints([hkv * n_rep]), dim_t, b.ints([d]), axis=0, shape=[4])
    else:
        shape1, shape2 = b.ints([1, hkv, n_rep, 1, d]), b.ints([0, hkv * n_rep, -1, d])
    e = b.op("Expand", u, shape1, shape=[bk, hkv, n_rep, t, d])
    return b.op("Reshape", e, shape2, shape=[bk, hkv * n_rep, t, d])


# ----------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------


@requires_onnxruntime("1.20")
class TestFuseRmsNormalization(ExtTestCase):
    def _check(self, model: ir.Model, feeds: dict, expected_op: str, atol: float = 1e-5):
        before = _run(model, feeds)
        names = [v.name for v in model.graph.inputs], [v.name for v in model.graph.outputs]
        self.assertEqual(fuse_rms_normalization(model), 1)
        self.assertIn(expected_op, _op_types(model))
        for op in ["Pow", "ReduceMean", "Sqrt", "Reciprocal"]:
            self.assertNotIn(op, _op_types(model))
        self.assertEqual(
            names, ([v.name for v in model.graph.inputs], [v.name for v in model.graph.outputs])
        )
        after = _run(model, feeds)
        self.assertEqual(before[0].dtype, after[0].dtype)
        self.assertEqualArray(before[0], after[0], atol=atol)
        return model

    def test_float32_opset23_gives_rms_normalization(self):
        b = _Builder(23)
        x = b.input("X", F32, ["batch", "seq", 16])
        y, _ = _rms(b, x, np.random.rand(16).astype(np.float32))
        model = self._check(
            b.model(y), {"X": np.random.randn(2, 3, 16).astype(np.float32)}, "RMSNormalization"
        )
        self.assertEqual(_op_types(model), ["RMSNormalization"])
        node = next(iter(model.graph))
        self.assertAlmostEqual(node.attributes["epsilon"].value, 1e-6, places=10)
        self.assertEqual(node.inputs[0].name, "X")

    def test_opset18_gives_simplified_layer_normalization_weight_last(self):
        b = _Builder(18)
        x = b.input("X", F32, ["batch", "seq", 16])
        y, _ = _rms(b, x, np.random.rand(16).astype(np.float32), weight_first=False)
        model = self._check(
            b.model(y),
            {"X": np.random.randn(2, 5, 16).astype(np.float32)},
            "SimplifiedLayerNormalization",
        )
        self.assertEqual(_op_types(model), ["SimplifiedLayerNormalization"])

    def test_float16_cast_back_reads_x(self):
        for opset, op in [(23, "RMSNormalization"), (18, "SimplifiedLayerNormalization")]:
            with self.subTest(opset=opset):
                b = _Builder(opset)
                x = b.input("X", F16, ["batch", "seq", 32])
                y, _ = _rms(b, x, np.random.rand(32).astype(np.float16))
                feeds = {"X": np.random.randn(2, 3, 32).astype(np.float16)}
                model = self._check(b.model(y), feeds, op, atol=1e-2)
                # the Cast to float and back are gone, the fused node reads X in float16
                self.assertEqual(_op_types(model), [op])
                self.assertEqual(next(iter(model.graph)).outputs[0].dtype, F16)

    def test_gemma_float16_cast_weight_multiplies_in_float(self):
        b = _Builder(23)
        x = b.input("X", F16, ["batch", "seq", 16])
        y, _ = _rms(
            b,
            x,
            np.random.rand(16).astype(np.float16),
            cast_weight=True,
            cast_back=False,
            weight_first=False,
        )
        y = b.op("Cast", y, dtype=F16, to=F16)
        model = self._check(
            b.model(y),
            {"X": np.random.randn(2, 3, 16).astype(np.float16)},
            "RMSNormalization",
            atol=1e-3,
        )
        self.assertEqual(_op_types(model), ["Cast", "Cast", "RMSNormalization", "Cast"])

    def test_untyped_input_and_intermediates(self):
        b = _Builder(23)
        x = b.input("X", F32, ["batch", "seq", 16])
        h = b.op("Neg", x)
        y, inter = _rms(b, h, np.random.rand(16).astype(np.float32))
        for v in [h, inter["a"], inter["n"], y]:
            v.type, v.shape = None, None
        y.dtype = F32  # a graph output needs a type
        model = self._check(
            b.model(y), {"X": np.random.randn(2, 3, 16).astype(np.float32)}, "RMSNormalization"
        )
        self.assertEqual(model.graph.outputs[0].dtype, F32)

    def test_x_cast_used_elsewhere_is_kept(self):
        b = _Builder(23)
        x = b.input("X", F16, ["batch", "seq", 16])
        y, inter = _rms(b, x, np.random.rand(16).astype(np.float32), cast_back=False)
        model = self._check(
            b.model(y, inter["xf"]),
            {"X": np.random.randn(2, 3, 16).astype(np.float16)},
            "RMSNormalization",
            atol=1e-3,
        )
        self.assertEqual(_op_types(model), ["Cast", "RMSNormalization"])

    def test_graph_output_keeps_its_name_and_order(self):
        b = _Builder(23)
        x = b.input("X", F32, ["batch", 16])
        other = b.op("Neg", x)
        y, _ = _rms(b, x, np.random.rand(16).astype(np.float32))
        y.name = "normed"
        model = b.model(other, y)
        self.assertEqual(fuse_rms_normalization(model), 1)
        self.assertEqual([v.name for v in model.graph.outputs], ["out0", "normed"])
        self.assertEqual(model.graph.outputs[1].producer().op_type, "RMSNormalization")

    def test_two_norms_share_input(self):
        b = _Builder(23)
        x = b.input("X", F32, ["batch", "seq", 16])
        y1, _ = _rms(b, x, np.random.rand(16).astype(np.float32))
        y2, _ = _rms(b, x, np.random.rand(16).astype(np.float32), eps=1e-5)
        model = b.model(y1, y2)
        feeds = {"X": np.random.randn(2, 3, 16).astype(np.float32)}
        before = _run(model, feeds)
        self.assertEqual(fuse_rms_normalization(model), 2)
        self.assertEqual(_op_types(model), ["RMSNormalization", "RMSNormalization"])
        for e, g in zip(before, _run(model, feeds)):
            self.assertEqualArray(e, g, atol=1e-5)

    def test_refused_cases_leave_model_unchanged(self):
        w16 = np.random.rand(16).astype(np.float32)
        cases = {}
        for name in ["m", "a", "r", "n"]:
            b = _Builder(23)
            x = b.input("X", F32, ["batch", 16])
            y, inter = _rms(b, x, w16)
            cases[f"intermediate {name} is an output"] = b.model(y, inter[name])
        b = _Builder(23)
        x = b.input("X", F32, ["batch", 16])
        y, inter = _rms(b, x, w16)
        b.op("Neg", inter["r"])  # another consumer, not an output
        cases["intermediate r has another consumer"] = b.model(y)
        b = _Builder(23)
        x = b.input("X", F32, ["batch", 16])
        cases["wrong weight size"] = b.model(_rms(b, x, np.random.rand(8).astype(np.float32))[0])
        b = _Builder(23)
        x = b.input("X", F32, [16, "batch"])
        cases["not the last axis"] = b.model(
            _rms(b, x, np.random.rand(16).astype(np.float32), axes=0)[0]
        )
        b = _Builder(23)
        x = b.input("X", F32, ["batch", "hidden"])
        cases["hidden dimension not static"] = b.model(_rms(b, x, w16)[0])
        b = _Builder(23)
        x = b.input("X", F32, ["batch", 16])
        w = b.input("W", F32, [16])
        xf_p = b.op("Pow", x, b.const(2.0))
        m = b.op("ReduceMean", xf_p, b.ints([-1]), shape=["batch", 1])
        r = b.op("Reciprocal", b.op("Sqrt", b.op("Add", m, b.const(1e-6))))
        cases["weight not a constant"] = b.model(b.op("Mul", w, b.op("Mul", x, r)))
        for name, model in cases.items():
            with self.subTest(case=name):
                before = _op_types(model)
                self.assertEqual(fuse_rms_normalization(model), 0)
                self.assertEqual(before, _op_types(model))

    def test_matches_torch_rms_norm(self):
        class RMSNorm(torch.nn.Module):
            def __init__(self, hidden, eps=1e-6):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.rand(hidden))
                self.eps = eps

            def forward(self, x):
                xf = x.to(torch.float32)
                var = xf.pow(2).mean(-1, keepdim=True)
                xf = xf * torch.rsqrt(var + self.eps)
                return self.weight * xf.to(x.dtype)

        norm = RMSNorm(16)
        x = torch.randn(2, 7, 16)
        expected = norm(x).detach().numpy()
        b = _Builder(23)
        xv = b.input("X", F32, ["batch", "seq", 16])
        model = b.model(_rms(b, xv, norm.weight.detach().numpy())[0])
        self.assertEqual(fuse_rms_normalization(model), 1)
        self.assertEqualArray(expected, _run(model, {"X": x.numpy()})[0], atol=1e-5)


@requires_onnxruntime("1.20")
class TestFuseRotaryEmbedding(ExtTestCase):
    def _model(self, opset=23, scaling=1.0, other=False, axis=3, dtype=F32):
        b = _Builder(opset)
        q = b.input("Q", dtype, ["batch", 4, "seq", 8])
        k = b.input("K", dtype, ["batch", 2, "seq", 8])
        freqs = b.input("F", F32, ["batch", "seq", 4])
        freqs2 = b.op("Neg", freqs) if other else None
        cos, sin = _cos_sin(b, freqs, 8, scaling=scaling, other=freqs2)
        if dtype != F32:
            cos, sin = (
                b.op("Cast", cos, dtype=dtype, to=dtype),
                b.op("Cast", sin, dtype=dtype, to=dtype),
            )
        yq, _ = _rotary(b, q, cos, sin, 8, axis=axis)
        yk, _ = _rotary(b, k, cos, sin, 8, axis=axis)
        return b.model(yq, yk)

    def _feeds(self, dtype=np.float32):
        return {
            "Q": np.random.randn(2, 4, 3, 8).astype(dtype),
            "K": np.random.randn(2, 2, 3, 8).astype(dtype),
            "F": np.random.randn(2, 3, 4).astype(np.float32),
        }

    def test_queries_and_keys_share_one_half_cache(self):
        for scaling, axis in [(1.0, 3), (0.7, -1), (None, 3)]:
            with self.subTest(scaling=scaling, axis=axis):
                model = self._model(scaling=scaling, axis=axis)
                feeds = self._feeds()
                before = _run(model, feeds)
                self.assertEqual(fuse_rotary_embedding(model), 2)
                ops = _op_types(model)
                self.assertEqual(ops.count("RotaryEmbedding"), 2)
                self.assertEqual(ops.count("Cos"), 1)
                for op in ["Slice", "Neg", "Concat", "Add", "Unsqueeze"]:
                    self.assertNotIn(op, ops)
                after = _run(model, feeds)
                for e, g in zip(before, after):
                    self.assertEqualArray(e, g, atol=1e-5)
                self.assertEqual([v.name for v in model.graph.outputs], ["out0", "out1"])

    def test_float16_with_cast(self):
        model = self._model(dtype=F16, scaling=0.5)
        feeds = self._feeds(np.float16)
        before = _run(model, feeds)
        self.assertEqual(fuse_rotary_embedding(model), 2)
        after = _run(model, feeds)
        for e, g in zip(before, after):
            self.assertEqualArray(e, g, atol=1e-2)

    def test_partial_rotary_fuses_rotary_part_only(self):
        b = _Builder(23)
        q = b.input("Q", F32, ["batch", 2, "seq", 16])
        freqs = b.input("F", F32, ["batch", "seq", 4])
        cos, sin = _cos_sin(b, freqs, 8)
        shape = ["batch", 2, "seq", 8]
        q_rot = b.op("Slice", q, b.ints([0]), b.ints([8]), b.ints([3]), shape=shape)
        q_pass = b.op("Slice", q, b.ints([8]), b.ints([INT64_MAX]), b.ints([3]), shape=shape)
        y, _ = _rotary(b, q_rot, cos, sin, 8)
        out = b.op("Concat", y, q_pass, axis=-1, shape=["batch", 2, "seq", 16])
        model = b.model(out)
        feeds = {
            "Q": np.random.randn(2, 2, 5, 16).astype(np.float32),
            "F": np.random.randn(2, 5, 4).astype(np.float32),
        }
        before = _run(model, feeds)
        self.assertEqual(fuse_rotary_embedding(model), 1)
        self.assertEqual(_op_types(model).count("Slice"), 2)
        self.assertEqualArray(before[0], _run(model, feeds)[0], atol=1e-5)

    def test_untyped_intermediates_as_left_by_the_translator(self):
        # the translator (after remove_identities) leaves some results without type/shape
        model = self._model(scaling=0.5)
        for node in model.graph:
            if node.op_type in {"Mul", "Add", "Concat"} and node.inputs[0].name == "F":
                continue
            if node.op_type in {"Mul", "Add"}:
                node.outputs[0].type = None
                node.outputs[0].shape = None
        feeds = self._feeds()
        before = _run(model, feeds)
        self.assertEqual(fuse_rotary_embedding(model), 2)
        for node in model.graph:
            if node.op_type in {"Cos", "Sin", "Mul"}:
                self.assertEqual(node.outputs[0].dtype, F32)
        after = _run(model, feeds)
        for e, g in zip(before, after):
            self.assertEqualArray(e, g, atol=1e-5)

    def test_refused_cases_leave_model_unchanged(self):
        cases = {
            "opset 18": self._model(opset=18),
            "Concat of two different values": self._model(other=True),
        }
        b = _Builder(23)
        q = b.input("Q", F32, ["batch", 4, "seq", 8])
        freqs = b.input("F", F32, ["batch", "seq", 4])
        cos, sin = _cos_sin(b, freqs, 8)
        y, inter = _rotary(b, q, cos, sin, 8)
        cases["rotate_half used elsewhere"] = b.model(y, inter["rot"])
        b = _Builder(23)
        q = b.input("Q", F32, ["batch", 4, "seq", 8])
        cos = b.input("COS", F32, ["batch", "seq", 8])
        sin = b.input("SIN", F32, ["batch", "seq", 8])
        cases["cos not from Concat(F, F)"] = b.model(_rotary(b, q, cos, sin, 8)[0])
        for name, model in cases.items():
            with self.subTest(case=name):
                before = _op_types(model)
                self.assertEqual(fuse_rotary_embedding(model), 0)
                self.assertEqual(before, _op_types(model))

    def test_cos_sin_broadcast_on_the_batch_are_expanded(self):
        # positions computed inside the model: COS and SIN have a batch of 1, torch
        # broadcasts them, RotaryEmbedding needs the batch of Q
        for dims in (1, "one"):
            with self.subTest(cos_batch=dims):
                b = _Builder(23)
                q = b.input("Q", F32, ["batch", 4, "seq", 8])
                k = b.input("K", F32, ["batch", 2, "seq", 8])
                freqs = b.input("F", F32, [dims, "seq", 4])
                cos, sin = _cos_sin(b, freqs, 8, scaling=0.9)
                yq, _ = _rotary(b, q, cos, sin, 8)
                yk, _ = _rotary(b, k, cos, sin, 8)
                model = b.model(yq, yk)
                feeds = {
                    "Q": np.random.randn(3, 4, 5, 8).astype(np.float32),
                    "K": np.random.randn(3, 2, 5, 8).astype(np.float32),
                    "F": np.random.randn(1, 5, 4).astype(np.float32),
                }
                before = _run(model, feeds)
                self.assertEqual(fuse_rotary_embedding(model), 2)
                ops = _op_types(model)
                # one Expand for COS, one for SIN, shared by queries and keys
                self.assertEqual(ops.count("Expand"), 2)
                self.assertEqual(ops.count("RotaryEmbedding"), 2)
                for e, g in zip(before, _run(model, feeds)):
                    self.assertEqualArray(e, g, atol=1e-5)

    def test_matches_torch_apply_rotary_pos_emb(self):
        def rotate_half(x):
            x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
            return torch.cat((-x2, x1), dim=-1)

        q = torch.randn(2, 4, 3, 8)
        freqs = torch.randn(2, 3, 4)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = (emb.cos() * 0.9).unsqueeze(1), (emb.sin() * 0.9).unsqueeze(1)
        expected = (q * cos) + (rotate_half(q) * sin)
        b = _Builder(23)
        qv = b.input("Q", F32, ["batch", 4, "seq", 8])
        fv = b.input("F", F32, ["batch", "seq", 4])
        cosv, sinv = _cos_sin(b, fv, 8, scaling=0.9)
        model = b.model(_rotary(b, qv, cosv, sinv, 8)[0])
        self.assertEqual(fuse_rotary_embedding(model), 1)
        got = _run(model, {"Q": q.numpy(), "F": freqs.numpy()})[0]
        self.assertEqualArray(expected.numpy(), got, atol=1e-5)


@requires_onnxruntime("1.20")
class TestFuseAttention(ExtTestCase):
    def _model(self, opset=23, split_scale=False, mask=True, kv_heads=4):
        b = _Builder(opset)
        q = b.input("Q", F32, ["batch", 4, "seq", 8])
        k = b.input("K", F32, ["batch", kv_heads, "total", 8])
        v = b.input("V", F32, ["batch", kv_heads, "total", 8])
        m = None
        if mask:
            m = b.input(
                "M", F32, ["seq", "total"] if mask == "2d" else ["batch", 1, "seq", "total"]
            )
        y = _decomposed_attention(b, q, k, v, m, scale=0.3, split_scale=split_scale)
        return b.model(y)

    def _feeds(self, mask=True, kv_heads=4):
        feeds = {
            "Q": np.random.randn(2, 4, 3, 8).astype(np.float32),
            "K": np.random.randn(2, kv_heads, 5, 8).astype(np.float32),
            "V": np.random.randn(2, kv_heads, 5, 8).astype(np.float32),
        }
        if mask:
            m = np.zeros((3, 5) if mask == "2d" else (2, 1, 3, 5), dtype=np.float32)
            m[..., -1] = -np.inf
            feeds["M"] = m
        return feeds

    def test_fused_forms(self):
        for split, mask, kv in [
            (False, True, 4),
            (True, True, 4),
            (False, False, 4),
            (True, False, 1),
            (False, "2d", 4),
        ]:
            with self.subTest(split_scale=split, mask=mask, kv_heads=kv):
                model = self._model(split_scale=split, mask=mask, kv_heads=kv)
                feeds = self._feeds(mask=mask, kv_heads=kv)
                before = _run(model, feeds)
                self.assertEqual(fuse_attention(model), 1)
                self.assertEqual(_op_types(model), ["Attention"])
                node = next(iter(model.graph))
                self.assertAlmostEqual(node.attributes["scale"].value, 0.3, places=6)
                self.assertEqual(len(node.inputs), 4 if mask else 3)
                self.assertEqualArray(before[0], _run(model, feeds)[0], atol=1e-5)

    def test_refused_cases_leave_model_unchanged(self):
        cases = {"opset 18": self._model(opset=18)}
        b = _Builder(23)
        q = b.input("Q", F32, ["batch", 4, "seq", 8])
        k = b.input("K", F32, ["batch", 4, "total", 8])
        v = b.input("V", F32, ["batch", 4, "total", 8])
        y = _decomposed_attention(b, q, k, v, None, scale=0.3)
        cases["softmax used elsewhere"] = b.model(y, y.producer().inputs[0])
        b = _Builder(23)
        q = b.input("Q", F32, ["batch", 4, "seq", 8])
        k = b.input("K", F32, ["batch", 4, "total", 8])
        v = b.input("V", F32, ["batch", 4, "total", 8])
        kt = b.op("Transpose", k, perm=[0, 1, 2, 3])
        scores = b.op("MatMul", q, kt, shape=["batch", 4, "seq", "total"])
        cases["wrong permutation"] = b.model(b.op("MatMul", b.op("Softmax", scores, axis=-1), v))
        for name, model in cases.items():
            with self.subTest(case=name):
                before = _op_types(model)
                self.assertEqual(fuse_attention(model), 0)
                self.assertEqual(before, _op_types(model))

    def test_matches_torch_scaled_dot_product_attention(self):
        feeds = self._feeds()
        tq, tk, tv, tm = (torch.from_numpy(feeds[n]) for n in "QKVM")
        expected = torch.nn.functional.scaled_dot_product_attention(
            tq, tk, tv, attn_mask=tm, scale=0.3
        )
        model = self._model(split_scale=True)
        self.assertEqual(fuse_attention(model), 1)
        self.assertEqualArray(expected.numpy(), _run(model, feeds)[0], atol=1e-5)


@requires_onnxruntime("1.20")
class TestRemoveRepeatKv(ExtTestCase):
    def _model(self, opset=23, dynamic_shape=True, v_rep=2, q_heads=4):
        b = _Builder(opset)
        q = b.input("Q", F32, ["batch", q_heads, "seq", 8])
        k = b.input("K", F32, ["batch", 2, "total", 8])
        v = b.input("V", F32, ["batch", 2, "total", 8])
        kr = _repeat_kv(b, k, 2, dynamic_shape=dynamic_shape)
        vr = _repeat_kv(b, v, v_rep, dynamic_shape=dynamic_shape)
        y = b.op("Attention", q, kr, vr, scale=0.25)
        return b.model(y)

    def test_attention_reads_kv_directly(self):
        for dynamic_shape in [True, False]:
            with self.subTest(dynamic_shape=dynamic_shape):
                model = self._model(dynamic_shape=dynamic_shape)
                feeds = {
                    "Q": np.random.randn(2, 4, 3, 8).astype(np.float32),
                    "K": np.random.randn(2, 2, 5, 8).astype(np.float32),
                    "V": np.random.randn(2, 2, 5, 8).astype(np.float32),
                }
                before = _run(model, feeds)
                self.assertEqual(remove_repeat_kv(model), 1)
                self.assertEqual(_op_types(model), ["Attention"])
                node = next(iter(model.graph))
                self.assertEqual([i.name for i in node.inputs], ["Q", "K", "V"])
                self.assertEqualArray(before[0], _run(model, feeds)[0], atol=1e-5)

    def test_refused_cases_leave_model_unchanged(self):
        cases = {
            "opset 18": self._model(opset=18),
            "key and value repeated differently": self._model(v_rep=1, q_heads=4),
        }
        for name, model in cases.items():
            with self.subTest(case=name):
                before = _op_types(model)
                self.assertEqual(remove_repeat_kv(model), 0)
                self.assertEqual(before, _op_types(model))

    def test_decomposed_attention_then_repeat_kv(self):
        b = _Builder(23)
        q = b.input("Q", F32, ["batch", 4, "seq", 8])
        k = b.input("K", F32, ["batch", 2, "total", 8])
        v = b.input("V", F32, ["batch", 2, "total", 8])
        y = _decomposed_attention(b, q, _repeat_kv(b, k, 2), _repeat_kv(b, v, 2), None, 0.35)
        model = b.model(y)
        feeds = {
            "Q": np.random.randn(1, 4, 3, 8).astype(np.float32),
            "K": np.random.randn(1, 2, 3, 8).astype(np.float32),
            "V": np.random.randn(1, 2, 3, 8).astype(np.float32),
        }
        before = _run(model, feeds)
        counts = [fct(model) for fct in FUSIONS]
        self.assertEqual(counts, [0, 0, 1, 1])
        self.assertEqual(_op_types(model), ["Attention"])
        self.assertEqualArray(before[0], _run(model, feeds)[0], atol=1e-5)


class TestBadInput(ExtTestCase):
    def test_not_a_model_raises_type_error_naming_the_argument(self):
        import onnx

        proto = onnx.ModelProto()
        for fct in FUSIONS:
            for bad in [None, "model.onnx", proto]:
                with self.subTest(fct=fct.__name__, bad=type(bad).__name__):
                    with self.assertRaises(TypeError) as cm:
                        fct(bad)  # type: ignore[arg-type]
                    self.assertIn("'model'", str(cm.exception))
                    self.assertIn(fct.__name__, str(cm.exception))

    def test_empty_model(self):
        model = ir.Model(ir.Graph([], [], nodes=[], opset_imports={"": 23}), ir_version=10)
        self.assertEqual([fct(model) for fct in FUSIONS], [0, 0, 0, 0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
