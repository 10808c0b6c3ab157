import math
import unittest

import ml_dtypes
import numpy as np
import onnx.helper as oh
from onnx import TensorProto
from onnx.reference.op_run import OpRun

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.reference import ExtendedReferenceEvaluator
from onnx_diagnostic.reference import _contrib_ops
from onnx_diagnostic.reference.evaluator import onnx_has_kernel

from _reference_tools import one_node_model, ort_run

MS = "com.microsoft"
rnd = np.random.default_rng(0)


def f32(*shape):
    return rnd.standard_normal(shape).astype(np.float32)


def ref_run(op, inputs, n=1, domain=MS, **atts):
    model, feeds = one_node_model(op, inputs, n, domain=domain, **atts)
    return ExtendedReferenceEvaluator(model).run(None, feeds), model, feeds


def sdpa(q, k, v, mask=None):
    """q (B, N, S, H), plain formula."""
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def heads(x, n):
    b, s, d = x.shape
    return x.reshape(b, s, n, d // n).transpose(0, 2, 1, 3)


def merge(x):
    b, n, s, h = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, n * h)


class TestContribFormulas(ExtTestCase):
    def test_simplified_layer_normalization(self):
        x, w = f32(2, 3, 8), f32(8)
        (y, inv), _, _ = ref_run("SimplifiedLayerNormalization", [x, w], 2, domain="", epsilon=1e-6)
        expected = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * w
        self.assertEqualArray(expected, y, atol=1e-5)
        self.assertEqual(inv.shape, (2, 3, 1))

    def test_simplified_layer_normalization_float16_scale(self):
        x, w = f32(2, 8).astype(np.float16), f32(8).astype(np.float16)
        (y, _), _, _ = ref_run("SimplifiedLayerNormalization", [x, w], 2, domain="")
        self.assertEqual(y.dtype, np.float16)
        xf = x.astype(np.float32)
        expected = xf / np.sqrt((xf**2).mean(-1, keepdims=True) + 1e-5) * w.astype(np.float32)
        self.assertEqualArray(expected, y.astype(np.float32), atol=1e-2)

    def test_skip_simplified_layer_normalization(self):
        x, skip, w, b = f32(2, 3, 8), f32(2, 3, 8), f32(8), f32(8)
        (y, _, _, s), model, feeds = ref_run(
            "SkipSimplifiedLayerNormalization", [x, skip, w, b], 4, epsilon=1e-5
        )
        total = x + skip + b
        self.assertEqualArray(total, s, atol=1e-6)
        self.assertEqualArray(
            total / np.sqrt((total**2).mean(-1, keepdims=True) + 1e-5) * w, y, atol=1e-5
        )
        self.assertEqualArray(ort_run(model, feeds)[0], y, atol=1e-5)

    def test_skip_layer_normalization(self):
        x, skip, g, beta = f32(2, 3, 8), f32(2, 3, 8), f32(8), f32(8)
        (y, mean, _, _), model, feeds = ref_run("SkipLayerNormalization", [x, skip, g, beta], 4)
        s = x + skip
        m = s.mean(-1, keepdims=True)
        expected = (s - m) / np.sqrt(((s - m) ** 2).mean(-1, keepdims=True) + 1e-5) * g + beta
        self.assertEqualArray(expected, y, atol=1e-4)
        self.assertEqualArray(m, mean, atol=1e-6)
        for e, g_ in zip(ort_run(model, feeds), [y, mean]):
            self.assertEqualArray(e, g_, atol=1e-4)

    def test_fused_matmul_and_gelus(self):
        a, b = f32(2, 3, 4), f32(2, 5, 4)
        (y,), _, _ = ref_run("FusedMatMul", [a, b], transB=1, alpha=0.5)
        self.assertEqualArray(0.5 * a @ np.swapaxes(b, -1, -2), y, atol=1e-5)
        x = f32(3, 4)
        (y,), _, _ = ref_run("QuickGelu", [x], alpha=1.5)
        self.assertEqualArray(x / (1 + np.exp(-1.5 * x)), y, atol=1e-6)
        erf = np.vectorize(math.erf, otypes=[np.float32])
        (y,), _, _ = ref_run("Gelu", [x])
        self.assertEqualArray(
            (0.5 * x * (1 + erf(x / math.sqrt(2)))).astype(np.float32), y, atol=1e-6
        )
        bias = f32(4)
        (y,), _, _ = ref_run("BiasGelu", [x, bias])
        xb = x + bias
        self.assertEqualArray(
            (0.5 * xb * (1 + erf(xb / math.sqrt(2)))).astype(np.float32), y, atol=1e-6
        )
        (y,), model, feeds = ref_run("FastGelu", [x, bias])
        self.assertEqualArray(ort_run(model, feeds)[0], y, atol=1e-5)

    def test_rotary_embedding_ms_formula(self):
        b, s, n, h = 2, 3, 2, 8
        x, cos, sin = f32(b, s, n * h), f32(10, h // 2), f32(10, h // 2)
        pos = np.array([[0, 1, 2], [4, 5, 6]], dtype=np.int64)
        (y,), model, feeds = ref_run("RotaryEmbedding", [x, pos, cos, sin], num_heads=n)
        x4 = heads(x, n)
        c, sn = cos[pos][:, None], sin[pos][:, None]
        x1, x2 = x4[..., : h // 2], x4[..., h // 2 :]
        expected = merge(np.concatenate([x1 * c - x2 * sn, x2 * c + x1 * sn], -1))
        self.assertEqualArray(expected, y, atol=1e-6)
        self.assertEqualArray(ort_run(model, feeds)[0], y, atol=1e-5)

    def test_rotary_embedding_ms_against_onnxruntime(self):
        b, s, n, h = 2, 3, 2, 8
        cos, sin = f32(10, h // 2), f32(10, h // 2)
        cases = [
            ([f32(b, s, n * h), np.array([3], dtype=np.int64), cos, sin], dict(num_heads=n)),
            ([f32(b, s, n * h), np.zeros((b, s), np.int64), cos, sin], dict(interleaved=1)),
            ([f32(b, n, s, h), np.ones((b, s), np.int64), cos, sin], {}),
            (
                [f32(b, s, n * h), np.ones((b, s), np.int64), cos[:, :2], sin[:, :2]],
                dict(num_heads=n, rotary_embedding_dim=4),
            ),
        ]
        for inputs, atts in cases:
            with self.subTest(atts=atts, shape=inputs[0].shape):
                (y,), model, feeds = ref_run("RotaryEmbedding", inputs, **atts)
                self.assertEqualArray(ort_run(model, feeds)[0], y, atol=1e-5)

    def test_multi_head_attention_formula(self):
        b, s, t, n, h = 2, 3, 5, 2, 4
        q, k, v = f32(b, s, n * h), f32(b, t, n * h), f32(b, t, n * h)
        (y, pk, _), model, feeds = ref_run("MultiHeadAttention", [q, k, v], 3, num_heads=n)
        expected = merge(sdpa(heads(q, n), heads(k, n), heads(v, n)))
        self.assertEqualArray(expected, y, atol=1e-5)
        self.assertEqualArray(heads(k, n), pk)
        self.assertEqualArray(ort_run(model, feeds)[0], y, atol=1e-5)

    def test_multi_head_attention_past_mask_bias(self):
        b, s, p, n, h = 2, 3, 2, 2, 4
        mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=np.int32)
        inputs = [f32(b, s, n * h), f32(b, s, n * h), f32(b, s, n * h), f32(3 * n * h), mask]
        inputs += [f32(1, n, s, s + p), f32(b, n, p, h), f32(b, n, p, h)]
        for uni in (0, 1):
            with self.subTest(unidirectional=uni):
                got, model, feeds = ref_run(
                    "MultiHeadAttention", inputs, 3, num_heads=n, unidirectional=uni
                )
                for e, g in zip(ort_run(model, feeds), got):
                    self.assertEqualArray(e, g, atol=1e-5)

    def test_attention_ms_formula(self):
        b, s, d, n, h = 2, 3, 6, 2, 4
        x, w, bias = f32(b, s, d), f32(d, 3 * n * h), f32(3 * n * h)
        (y, present), model, feeds = ref_run("Attention", [x, w, bias], 2, num_heads=n)
        q, k, v = np.split(x @ w + bias, 3, axis=-1)
        expected = merge(sdpa(heads(q, n), heads(k, n), heads(v, n)))
        self.assertEqualArray(expected, y, atol=1e-5)
        self.assertEqual(present.shape, (2, b, n, s, h))
        self.assertEqualArray(ort_run(model, feeds)[0], y, atol=1e-5)

    def test_attention_ms_masks_against_onnxruntime(self):
        b, s, d, n, h = 2, 3, 6, 2, 4
        x, w, bias = f32(b, s, d), f32(d, 3 * n * h), f32(3 * n * h)
        cases = [
            (
                [x, w, bias, np.array([[1, 1, 0, 1, 1], [1] * 5], np.int32), f32(2, b, n, 2, h)],
                dict(unidirectional=1),
            ),
            ([x, w, bias, np.array([2, 3], np.int32)], {}),
        ]
        for inputs, atts in cases:
            with self.subTest(atts=atts):
                got, model, feeds = ref_run("Attention", inputs, 2, num_heads=n, **atts)
                for e, g in zip(ort_run(model, feeds), got):
                    self.assertEqualArray(e, g, atol=1e-5)

    def test_group_query_attention_first_prompt_formula(self):
        b, s, n, kv, h = 2, 3, 4, 2, 8
        q, k, v = f32(b, s, n * h), f32(b, s, kv * h), f32(b, s, kv * h)
        seqlens, total = np.array([s - 1] * b, np.int32), np.array(s, np.int32)
        inputs = [q, k, v, None, None, seqlens, total]
        (y, pk, pv), model, feeds = ref_run(
            "GroupQueryAttention", inputs, 3, num_heads=n, kv_num_heads=kv
        )
        causal = np.triu(np.full((s, s), -np.inf, dtype=np.float32), 1)
        k4, v4 = np.repeat(heads(k, kv), 2, axis=1), np.repeat(heads(v, kv), 2, axis=1)
        self.assertEqualArray(merge(sdpa(heads(q, n), k4, v4, causal)), y, atol=1e-5)
        for e, g in zip(ort_run(model, feeds), (y, pk, pv)):
            self.assertEqualArray(e, g, atol=1e-5)

    def test_group_query_attention_against_onnxruntime(self):
        b, s, n, kv, h, p = 2, 3, 4, 2, 16, 4
        i32 = np.int32
        cases = [
            # decoding one token with a past
            (
                [
                    f32(b, 1, n * h),
                    f32(b, 1, kv * h),
                    f32(b, 1, kv * h),
                    f32(b, kv, p, h),
                    f32(b, kv, p, h),
                    np.array([p, p], i32),
                    np.array(p + 1, i32),
                ],
                {},
            ),
            # several tokens, rotary, batch 1 (onnxruntime's constraint)
            (
                [
                    f32(1, s, n * h),
                    f32(1, s, kv * h),
                    f32(1, s, kv * h),
                    f32(1, kv, p, h),
                    f32(1, kv, p, h),
                    np.array([p + s - 1], i32),
                    np.array(p + s, i32),
                    f32(16, h // 2),
                    f32(16, h // 2),
                ],
                dict(do_rotary=1),
            ),
            # local window, softcap, right padding in the first prompt
            (
                [
                    f32(b, 6, n * h),
                    f32(b, 6, kv * h),
                    f32(b, 6, kv * h),
                    None,
                    None,
                    np.array([5, 3], i32),
                    np.array(6, i32),
                ],
                dict(local_window_size=2),
            ),
            (
                [
                    f32(b, s, n * h),
                    f32(b, s, kv * h),
                    f32(b, s, kv * h),
                    None,
                    None,
                    np.array([s - 1, s - 1], i32),
                    np.array(s, i32),
                ],
                dict(softcap=2.0),
            ),
        ]
        for inputs, atts in cases:
            with self.subTest(atts=atts):
                got, model, feeds = ref_run(
                    "GroupQueryAttention", inputs, 3, num_heads=n, kv_num_heads=kv, **atts
                )
                expected = ort_run(model, feeds)
                lengths = feeds["i5"] + 1
                for i in range(expected[0].shape[0]):
                    # onnxruntime leaves the padded queries undefined
                    last = int(min(lengths[i], expected[0].shape[1]))
                    self.assertEqualArray(expected[0][i, :last], got[0][i, :last], atol=1e-5)
                    self.assertEqualArray(
                        expected[1][i, :, : lengths[i]], got[1][i, :, : lengths[i]], atol=1e-5
                    )


class TestOpset23Fallbacks(ExtTestCase):
    """The fallbacks of the opset-23 operators against onnx's own kernels."""

    def _compare(self, op, inputs, n=1, **atts):
        model, feeds = one_node_model(op, inputs, n, domain="", **atts)
        expected = ExtendedReferenceEvaluator(model).run(None, feeds)
        cls = getattr(_contrib_ops, op)
        got = ExtendedReferenceEvaluator(model, new_ops=[cls]).run(None, feeds)
        for e, g in zip(expected, got):
            self.assertEqualArray(e, g, atol=1e-5)

    def test_installed_onnx_has_them(self):
        # if it does not, the fallbacks are in default_ops
        for op in ("Attention", "RMSNormalization", "RotaryEmbedding"):
            registered = any(
                c.__name__ == op and c.op_domain == ""
                for c in ExtendedReferenceEvaluator.default_ops
            )
            self.assertNotEqual(onnx_has_kernel(op), registered, msg=op)

    def test_rms_normalization(self):
        self._compare("RMSNormalization", [f32(2, 3, 8), f32(8)], epsilon=1e-3)
        self._compare("RMSNormalization", [f32(2, 3, 8), f32(3, 8)], axis=-2)

    def test_rotary_embedding(self):
        b, s, n, h = 2, 3, 2, 8
        pos = np.array([[0, 1, 2], [3, 4, 5]], np.int64)
        cos, sin = f32(8, h // 2), f32(8, h // 2)
        self._compare("RotaryEmbedding", [f32(b, n, s, h), cos, sin, pos])
        self._compare("RotaryEmbedding", [f32(b, s, n * h), cos, sin, pos], num_heads=n)
        self._compare("RotaryEmbedding", [f32(b, n, s, h), cos[pos], sin[pos]], interleaved=1)

    def test_attention(self):
        b, n, s, h = 2, 4, 3, 8
        q, k, v = f32(b, n, s, h), f32(b, 2, s, h), f32(b, 2, s, h)
        pk, pv = f32(b, 2, 2, h), f32(b, 2, 2, h)
        self._compare("Attention", [q, k, v], 3)
        self._compare("Attention", [q, k, v, None, pk, pv], 3, is_causal=1)
        self._compare("Attention", [q, k, v, f32(1, 1, s, s + 2), pk, pv], 3, scale=0.3)
        mask = rnd.integers(0, 2, (b, 1, s, s)).astype(bool)
        mask[..., 0] = True
        self._compare("Attention", [q, k, v, mask], 3, softcap=2.0)
        self._compare("Attention", [q, k, v, None, pk, pv], 3, left_window_size=1)
        self._compare(
            "Attention",
            [f32(b, s, n * h), f32(b, s, 2 * h), f32(b, s, 2 * h)],
            3,
            q_num_heads=n,
            kv_num_heads=2,
        )


class TestEvaluatorApi(ExtTestCase):
    def test_default_ops_and_new_ops_precedence(self):
        names = {(c.op_domain, c.__name__) for c in ExtendedReferenceEvaluator.default_ops}
        for key in [
            (MS, "Attention"),
            (MS, "GroupQueryAttention"),
            (MS, "RotaryEmbedding"),
            ("", "SimplifiedLayerNormalization"),
            (MS, "MultiHeadAttention"),
        ]:
            self.assertIn(key, names)

        class QuickGelu(OpRun):
            op_domain = MS

            def _run(self, x, alpha=1.0):
                return (x * 0 + 7,)

        model, feeds = one_node_model("QuickGelu", [f32(2)], domain=MS)
        got = ExtendedReferenceEvaluator(model, new_ops=[QuickGelu]).run(None, feeds)
        self.assertEqualArray(np.full(2, 7, np.float32), got[0])

    def test_run_with_a_list_and_intermediate(self):
        model = oh.make_model(
            oh.make_graph(
                [oh.make_node("Add", ["X", "Y"], ["T"]), oh.make_node("Neg", ["T"], ["Z"])],
                "g",
                [oh.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "XY"],
                [oh.make_tensor_value_info("Z", TensorProto.FLOAT, [2])],
            ),
            opset_imports=[oh.make_opsetid("", 18)],
        )
        ref = ExtendedReferenceEvaluator(model)
        one = np.ones(2, np.float32)
        self.assertEqualArray(-2 * one, ref.run([one, one])[0])
        res = ref.run(None, {"X": one, "Y": one}, intermediate=True)
        self.assertEqualArray(2 * one, res["T"])

    def test_empty_zero_d_and_bfloat16(self):
        x, w = np.zeros((0, 8), np.float32), f32(8)
        (y, _), _, _ = ref_run("SimplifiedLayerNormalization", [x, w], 2, domain="")
        self.assertEqual(y.shape, (0, 8))
        (y,), _, _ = ref_run("QuickGelu", [np.array(1.0, dtype=np.float32)])
        self.assertEqual(y.shape, ())
        xb = f32(2, 8).astype(ml_dtypes.bfloat16)
        (y, _, _, _), _, _ = ref_run(
            "SkipSimplifiedLayerNormalization", [xb, xb, np.ones(8, ml_dtypes.bfloat16)], 4
        )
        self.assertEqual(y.dtype, ml_dtypes.bfloat16)

    def test_bad_inputs_name_the_node(self):
        model, feeds = one_node_model(
            "MultiHeadAttention",
            [f32(2, 3, 10), f32(2, 3, 10), f32(2, 3, 10)],
            3,
            domain=MS,
            num_heads=3,
        )
        with self.assertRaises(Exception) as cm:
            ExtendedReferenceEvaluator(model).run(None, feeds)
        self.assertIn("num_heads=3", str(cm.exception))
        model, feeds = one_node_model(
            "FusedMatMul", [f32(2, 2), f32(2, 2)], domain=MS, transBatchA=1
        )
        with self.assertRaises(NotImplementedError) as cm:
            ExtendedReferenceEvaluator(model).run(None, feeds)
        self.assertIn("FusedMatMul (domain 'com.microsoft'", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            ExtendedReferenceEvaluator(model).run(None, {})
        self.assertIn("missing inputs", str(cm.exception))
        with self.assertRaises(TypeError):
            ExtendedReferenceEvaluator(model, new_ops=[int])

    def test_docstring_examples(self):
        self.assertDocstringExamples(
            "onnx_diagnostic.reference", "onnx_diagnostic.reference.evaluator"
        )


if __name__ == "__main__":
    unittest.main(verbosity=2)
