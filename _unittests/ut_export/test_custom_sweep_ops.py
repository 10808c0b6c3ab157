"""Custom exporter: translations the architecture sweep found missing, aten.log_sigmoid
(inkling), aten.linalg_vector_norm, aten.unfold and aten.flip (inkling2), aten.eye and aten.einsum
(xlnet), aten.roll (donut-swin), aten.upsample_nearest2d (DETR family) and aten.prelu (dab-detr),
found by the sweep of the other tasks."""

import unittest

import torch

from onnx_diagnostic.export.api import to_onnx
from onnx_diagnostic.export.custom.translator import translate_program
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.rt_helper import make_session, run_session

DYN = torch.export.Dim.DYNAMIC


def _run(onx, **feeds):
    return run_session(make_session(onx), feeds)


class TestLogSigmoid(ExtTestCase):
    def test_log_sigmoid_stable(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return torch.nn.functional.logsigmoid(x)

        onx = to_onnx(M(), (torch.randn(3, 4),), dynamic_shapes=({0: DYN},), exporter="custom")
        for x in [
            torch.randn(5, 4),
            torch.tensor([[-1000.0, -50.0, 50.0, 1000.0]]),  # no overflow at the extremes
            torch.zeros(0, 4),
        ]:
            with self.subTest(shape=tuple(x.shape)):
                got = _run(onx, x=x)[0]
                self.assertEqualArray(M()(x), got, atol=1e-6)

    def test_log_sigmoid_float16_and_decomposed(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return torch.nn.functional.logsigmoid(x) * 2

        x = torch.randn(3, 4, dtype=torch.float16)
        onx = to_onnx(M(), (x,), exporter="custom")
        self.assertEqualArray(M()(x), _run(onx, x=x)[0], atol=1e-2)
        # the core decomposition (minimum, log1p...) translates too
        x = torch.randn(3, 4) * 30
        ep = torch.export.export(M(), (x,)).run_decompositions()
        targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
        self.assertNotIn("aten.log_sigmoid.default", targets)
        onx = translate_program(ep).model_proto
        self.assertEqualArray(M()(x), _run(onx, x=x)[0], atol=1e-6)


class TestEye(ExtTestCase):
    def test_eye_dynamic_and_static(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return x + torch.eye(x.shape[0], x.shape[1]) + torch.eye(4)[:1, :1].sum()

        onx = to_onnx(
            M(), (torch.rand(3, 4),), dynamic_shapes=({0: DYN, 1: DYN},), exporter="custom"
        )
        for x in [torch.rand(5, 2), torch.rand(2, 6), torch.rand(1, 1)]:
            with self.subTest(shape=tuple(x.shape)):
                self.assertEqualArray(M()(x), _run(onx, x=x)[0])

    def test_eye_types(self):
        class M(torch.nn.Module):
            def forward(self, x):
                n = x.shape[0]
                return (
                    torch.eye(n, dtype=torch.bool) & (x > 0),
                    torch.eye(3, 5, dtype=torch.int64),
                    torch.eye(n, dtype=torch.float16),
                    torch.eye(n, dtype=torch.bfloat16),
                )

        onx = to_onnx(
            M(), (torch.randn(4, 4),), dynamic_shapes=({0: DYN, 1: DYN},), exporter="custom"
        )
        x = torch.randn(6, 6)
        for expected, got in zip(M()(x), _run(onx, x=x)):
            self.assertEqual(expected.dtype, got.dtype)
            self.assertEqual(expected.tolist(), got.tolist())


class TestVectorNormEinsum(ExtTestCase):
    def test_vector_norm(self):
        class M(torch.nn.Module):
            def __init__(self, ord, dim, keepdim):
                super().__init__()
                self.args = ord, dim, keepdim

            def forward(self, x):
                ord, dim, keepdim = self.args
                return torch.linalg.vector_norm(x, ord=ord, dim=dim, keepdim=keepdim)

        x = torch.randn(3, 5, 4)
        x[0, 0, 0] = 0
        for ord in [2, 1, 3, 0.5, 0, float("inf"), float("-inf")]:
            for dim, keepdim in [(-1, True), ((0, 2), False), (None, False)]:
                with self.subTest(ord=ord, dim=dim, keepdim=keepdim):
                    model = M(ord, dim, keepdim)
                    onx = to_onnx(model, (x,), dynamic_shapes=({0: DYN},), exporter="custom")
                    y = torch.randn(2, 5, 4)
                    self.assertEqualArray(model(y), _run(onx, x=y)[0], atol=1e-5, rtol=1e-5)

    def test_vector_norm_float16(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)

        x = torch.randn(3, 8, dtype=torch.float16)
        onx = to_onnx(M(), (x,), exporter="custom")
        self.assertEqualArray(M()(x), _run(onx, x=x)[0], atol=1e-2)

    def test_einsum(self):
        class M(torch.nn.Module):
            def forward(self, a, b):
                return torch.einsum("ibnd,jbnd->bnij", a, b), torch.einsum("i j -> j i", a[:, 0, 0])

        a, b = torch.randn(3, 2, 4, 5), torch.randn(6, 2, 4, 5)
        onx = to_onnx(M(), (a, b), dynamic_shapes=({0: DYN}, {0: DYN}), exporter="custom")
        a, b = torch.randn(4, 2, 4, 5), torch.randn(7, 2, 4, 5)
        for expected, got in zip(M()(a, b), _run(onx, a=a, b=b)):
            self.assertEqualArray(expected, got, atol=1e-5)


class TestUnfold(ExtTestCase):
    def test_unfold(self):
        class M(torch.nn.Module):
            def __init__(self, dim, size, step):
                super().__init__()
                self.args = dim, size, step

            def forward(self, x):
                return x.unfold(*self.args) * 2

        for dim, size, step in [(1, 3, 1), (1, 2, 2), (-1, 4, 3), (0, 1, 1), (2, 5, 5)]:
            with self.subTest(dim=dim, size=size, step=step):
                model = M(dim, size, step)
                onx = to_onnx(
                    model, (torch.randn(6, 7, 5),), dynamic_shapes=({1: DYN},), exporter="custom"
                )
                for x in [torch.randn(6, 7, 5), torch.randn(6, 11, 5)]:
                    self.assertEqualArray(model(x), _run(onx, x=x)[0])

    def test_unfold_dynamic_length_int(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return x.unfold(0, 3, 2).sum(dim=-1)

        onx = to_onnx(M(), (torch.arange(9),), dynamic_shapes=({0: DYN},), exporter="custom")
        for n in (3, 4, 10):
            x = torch.arange(n)
            self.assertEqual(M()(x).tolist(), _run(onx, x=x)[0].tolist())


class TestFlip(ExtTestCase):
    def test_flip(self):
        class M(torch.nn.Module):
            def __init__(self, dims):
                super().__init__()
                self.dims = dims

            def forward(self, x):
                return x.flip(self.dims) + 1

        for dims in [(0,), (-1,), (0, 2), (1, -1, 0), ()]:
            with self.subTest(dims=dims):
                model = M(dims)
                onx = to_onnx(
                    model, (torch.randn(2, 3, 4),), dynamic_shapes=({1: DYN},), exporter="custom"
                )
                for x in [torch.randn(2, 3, 4), torch.randn(2, 1, 4), torch.randn(2, 0, 4)]:
                    self.assertEqualArray(model(x), _run(onx, x=x)[0])

    def test_flip_bool(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return (x > 0).flip(-1)

        onx = to_onnx(M(), (torch.randn(3, 5),), exporter="custom")
        x = torch.randn(3, 5)
        self.assertEqual(M()(x).tolist(), _run(onx, x=x)[0].tolist())


class TestRoll(ExtTestCase):
    def test_roll_dims_dynamic_and_static(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return torch.roll(x, shifts=(2, -1), dims=(1, 2)) + torch.roll(x, 3, 0)

        x = torch.randn(4, 5, 6)
        onx = to_onnx(M(), (x,), dynamic_shapes=({0: DYN, 1: DYN},), exporter="custom")
        for x in [torch.randn(4, 5, 6), torch.randn(7, 3, 6), torch.randn(2, 1, 6)]:
            with self.subTest(shape=tuple(x.shape)):
                self.assertEqualArray(M()(x), _run(onx, x=x)[0])

    def test_roll_without_dims_and_shift_of_the_size(self):
        class M(torch.nn.Module):
            def forward(self, x):
                return torch.roll(x, 5) + torch.roll(x, shifts=4, dims=1)

        x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        onx = to_onnx(M(), (x,), exporter="custom")
        self.assertEqualArray(M()(x), _run(onx, x=x)[0])


class TestUpsampleNearest(ExtTestCase):
    def test_scale_factor_and_size(self):
        class M(torch.nn.Module):
            def forward(self, x, y):
                a = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
                b = torch.nn.functional.interpolate(x, size=y.shape[-2:], mode="nearest")
                return a, b

        x, y = torch.randn(2, 3, 4, 5), torch.randn(1, 1, 7, 3)
        onx = to_onnx(
            M(),
            (x, y),
            dynamic_shapes=({0: DYN, 2: DYN, 3: DYN}, {2: DYN, 3: DYN}),
            exporter="custom",
        )
        for x, y in [
            (torch.randn(2, 3, 4, 5), torch.randn(1, 1, 7, 3)),
            (torch.randn(1, 3, 6, 2), torch.randn(1, 1, 12, 9)),
        ]:
            with self.subTest(x=tuple(x.shape), y=tuple(y.shape)):
                expected = M()(x, y)
                got = _run(onx, x=x, y=y)
                self.assertEqualArray(expected[0], got[0])
                self.assertEqualArray(expected[1], got[1])


class TestPrelu(ExtTestCase):
    def test_prelu_per_channel_and_single(self):
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.channels = torch.nn.PReLU(3, init=0.1)
                self.single = torch.nn.PReLU(init=0.3)

            def forward(self, x, y):
                return self.channels(x), self.single(y), self.channels(y)

        m = M()
        with torch.no_grad():
            m.channels.weight.copy_(torch.tensor([0.1, 0.2, 0.5]))
        x, y = torch.randn(2, 3, 4, 5), torch.randn(4, 3)
        onx = to_onnx(m, (x, y), dynamic_shapes=({0: DYN}, {0: DYN}), exporter="custom")
        x, y = torch.randn(3, 3, 4, 5), torch.randn(6, 3)
        for e, g in zip(m(x, y), _run(onx, x=x, y=y)):
            self.assertEqualArray(e, g, atol=1e-6)


if __name__ == "__main__":
    unittest.main(verbosity=2)
