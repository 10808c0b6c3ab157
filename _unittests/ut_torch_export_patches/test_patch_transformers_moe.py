"""The patch of transformers' grouped matrix multiplication of experts: parity, restore, export."""

import copy
import doctest
import unittest

import torch
import transformers

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.patches import patch_transformers_moe
from onnx_diagnostic.torch_export_patches.patches.patch_transformers_moe import (
    PATCH_DBRX_EXPERTS,
    PATCH_EXPERTS_LOOP_V4,
    PATCH_GROUPED_MM,
    PATCH_ZERO_EXPERTS,
    dbrx_experts_forward,
    grouped_mm_traceable,
    zero_experts_forward,
)

try:
    import transformers.integrations.moe as moe
except ImportError:  # transformers < 5
    moe = None

HAS_GROUPED_MM = moe is not None and callable(getattr(moe, "_grouped_mm", None))
HAS_LONGCAT = bool(PATCH_ZERO_EXPERTS.targets())
HAS_DBRX = bool(PATCH_DBRX_EXPERTS.targets())


def _small_longcat():
    config = transformers.AutoConfig.for_model(
        "longcat_flash",
        hidden_size=32,
        num_layers=1,
        num_attention_heads=2,
        ffn_hidden_size=48,
        expert_ffn_hidden_size=16,
        n_routed_experts=4,
        zero_expert_num=2,
        moe_topk=3,
        kv_lora_rank=16,
        q_lora_rank=16,
        qk_rope_head_dim=8,
        head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
        vocab_size=100,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        # the router is initialized at zero: random scores, so that every expert is chosen
        for name, p in model.named_parameters():
            if "router" in name:
                p.normal_()
    return model


def _small_moe():
    config = transformers.Qwen2MoeConfig(
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts=4,
        num_experts_per_tok=2,
        vocab_size=100,
    )
    torch.manual_seed(0)
    return transformers.Qwen2MoeForCausalLM(config).eval()


class TestGroupedMMTraceable(ExtTestCase):
    def test_matches_a_loop_over_experts(self):
        torch.manual_seed(0)
        x, w = torch.randn(9, 5), torch.randn(4, 5, 3)
        # expert 1 has no row, rows 7 and 8 belong to no expert
        offs = torch.tensor([2, 2, 5, 7], dtype=torch.int32)
        expected = torch.zeros(9, 3)
        start = 0
        for e, end in enumerate(offs.tolist()):
            expected[start:end] = x[start:end] @ w[e]
            start = end
        self.assertEqualArray(expected, grouped_mm_traceable(x, w, offs), atol=1e-6)

    def test_dtype_of_the_weights(self):
        x, w = torch.randn(3, 2, dtype=torch.float64), torch.randn(2, 2, 4)
        got = grouped_mm_traceable(x, w, torch.tensor([1, 3]))
        self.assertEqual(got.dtype, torch.float32)
        self.assertEqual(got.shape, (3, 4))

    def test_bad_ranks(self):
        err = self.assertRaise(
            lambda: grouped_mm_traceable(torch.zeros(2, 3, 1), torch.zeros(2, 3, 4), torch.ones(2)),
            ValueError,
            "input (S, K)",
        )
        self.assertIn("(2, 3, 1)", str(err))

    def test_doctest(self):
        res = doctest.testmod(patch_transformers_moe, verbose=False)
        self.assertEqual(res.failed, 0)


@unittest.skipIf(not HAS_GROUPED_MM, "transformers.integrations.moe._grouped_mm (transformers>=5)")
class TestPatchGroupedMM(ExtTestCase):
    def test_parity_with_the_original(self):
        torch.manual_seed(1)
        x, w = torch.randn(11, 8), torch.randn(5, 8, 4)  # strides of 16 bytes (torch kernel)
        offs = torch.tensor([3, 3, 7, 10, 10], dtype=torch.int32)
        original = moe._grouped_mm
        expected = original(x, w, offs)
        with torch_export_patches(patch_transformers=True):
            self.assertIsNot(moe._grouped_mm, original)
            got = moe._grouped_mm(x, w, offs)
        self.assertEqualArray(expected[:10], got[:10], atol=1e-5)
        self.assertEqualArray(torch.zeros(1, 4), got[10:])

    def test_patched_model_equals_original_model(self):
        model = _small_moe()
        ids = torch.randint(0, 100, (2, 7))
        with torch.no_grad():
            expected = model(input_ids=ids).logits
            with torch_export_patches(patch_transformers=True):
                got = model(input_ids=ids).logits
        self.assertEqualArray(expected, got, atol=1e-5)

    def test_restored_after_exit_and_after_an_exception(self):
        original = moe._grouped_mm
        with torch_export_patches(patch_transformers=True):
            self.assertTrue(getattr(moe._grouped_mm, "__onnx_diagnostic_patch__", False))
        self.assertIs(moe._grouped_mm, original)
        with self.assertRaises(ZeroDivisionError):
            with torch_export_patches(patch_transformers=True):
                self.assertIsNot(moe._grouped_mm, original)
                _ = 1 / 0
        self.assertIs(moe._grouped_mm, original)
        self.assertEqual(PATCH_GROUPED_MM.targets(), [(moe, "_grouped_mm")])

    def test_onnx_dynamo_exports_a_moe_model(self):
        from onnx_diagnostic.export.api import onnx_feeds, to_onnx
        from onnx_diagnostic.helpers.rt_helper import make_session, run_session
        from onnx_diagnostic.tasks import random_input_kwargs

        model = _small_moe()
        kwargs, fct = random_input_kwargs(model.config, "text-generation")
        data = fct(model, model.config, add_second_input=True, **kwargs)
        with torch.no_grad():
            expected = model(**copy.deepcopy(data["inputs2"]))
        with torch_export_patches(patch_transformers=True):
            onx = to_onnx(
                model,
                kwargs=copy.deepcopy(data["inputs"]),
                dynamic_shapes=data["dynamic_shapes"],
                exporter="onnx-dynamo",
            )
        names = {n.op_type for n in onx.graph.node}
        self.assertNotIn("grouped_mm_fallback", names)
        got = run_session(make_session(onx), onnx_feeds(model, kwargs=data["inputs2"]))
        self.assertLess(max_diff(expected, got)["abs"], 1e-4)


@unittest.skipIf(not HAS_LONGCAT, "transformers has no LongcatFlashExperts looping over experts")
class TestPatchZeroExperts(ExtTestCase):
    def test_matches_the_loop_of_transformers(self):
        model = _small_longcat()
        experts = next(m for m in model.modules() if type(m).__name__ == "LongcatFlashExperts")
        torch.manual_seed(2)
        x = torch.randn(9, 32)
        index = torch.randint(0, 6, (9, 3))  # 4 routed experts, 2 zero experts
        weights = torch.rand(9, 3)
        with torch.no_grad():
            expected = type(experts).forward(experts, x, index, weights)
            got = zero_experts_forward(experts, x, index, weights)
        self.assertEqualArray(expected, got, atol=1e-6)
        # no token: zeros, as the original
        empty = zero_experts_forward(experts, x[:0], index[:0], weights[:0])
        self.assertEqual((0, 32), tuple(empty.shape))

    def test_bfloat16(self):
        model = _small_longcat().to(torch.bfloat16)
        experts = next(m for m in model.modules() if type(m).__name__ == "LongcatFlashExperts")
        x = torch.randn(5, 32, dtype=torch.bfloat16)
        index = torch.tensor([[0, 4, 1]] * 5)
        weights = torch.rand(5, 3, dtype=torch.bfloat16)
        with torch.no_grad():
            expected = type(experts).forward(experts, x, index, weights)
            got = zero_experts_forward(experts, x, index, weights)
        self.assertEqual(torch.bfloat16, got.dtype)
        self.assertEqualArray(expected.float(), got.float(), atol=0.1)

    def test_restored_after_an_exception_and_exports(self):
        from onnx_diagnostic.export.api import onnx_feeds, to_onnx
        from onnx_diagnostic.helpers.rt_helper import make_session, run_session
        from onnx_diagnostic.tasks import random_input_kwargs

        model = _small_longcat()
        cls = PATCH_ZERO_EXPERTS.targets()[0][0]
        original = cls.forward
        with self.assertRaises(ZeroDivisionError):
            with torch_export_patches(patch_transformers=True):
                self.assertIsNot(cls.forward, original)
                _ = 1 / 0
        self.assertIs(cls.forward, original)
        kwargs, fct = random_input_kwargs(model.config, "text-generation")
        data = fct(model, model.config, add_second_input=True, **kwargs)
        with torch.no_grad():
            expected = model(**copy.deepcopy(data["inputs2"]))
        for exporter in ("custom", "onnx-dynamo"):
            with self.subTest(exporter=exporter):
                with torch_export_patches(patch_transformers=True):
                    onx = to_onnx(
                        model,
                        kwargs=copy.deepcopy(data["inputs"]),
                        dynamic_shapes=data["dynamic_shapes"],
                        exporter=exporter,
                    )
                got = run_session(make_session(onx), onnx_feeds(model, kwargs=data["inputs2"]))
                self.assertLess(max_diff(expected, got)["abs"], 1e-4)
        self.assertIs(cls.forward, original)


@unittest.skipIf(not HAS_DBRX, "transformers has no DbrxExperts looping over experts")
class TestPatchDbrxExperts(ExtTestCase):
    def _experts(self, dtype=torch.float32):
        cls = PATCH_DBRX_EXPERTS.targets()[0][0]
        config = transformers.DbrxConfig(
            d_model=16, ffn_config=dict(ffn_hidden_size=8, moe_num_experts=4, moe_top_k=2)
        )
        torch.manual_seed(0)
        experts = cls(config.ffn_config).to(dtype)
        with torch.no_grad():
            for p in experts.parameters():
                p.normal_()
        return experts

    def test_matches_the_loop_of_transformers(self):
        experts = self._experts()
        x = torch.randn(2, 5, 16)
        index = torch.randint(0, 4, (10, 2))
        weights = torch.rand(10, 2)
        with torch.no_grad():
            expected = type(experts).forward(experts, x, index, weights)
            got = dbrx_experts_forward(experts, x, index, weights)
        self.assertEqual(expected.shape, got.shape)
        self.assertEqualArray(expected, got, atol=1e-4)

    def test_bfloat16(self):
        experts = self._experts(torch.bfloat16)
        x = torch.randn(1, 3, 16, dtype=torch.bfloat16)
        index = torch.tensor([[0, 3], [1, 2], [3, 3]])
        weights = torch.rand(3, 2, dtype=torch.bfloat16)
        with torch.no_grad():
            expected = type(experts).forward(experts, x, index, weights)
            got = dbrx_experts_forward(experts, x, index, weights)
        self.assertEqual(torch.bfloat16, got.dtype)
        self.assertEqualArray(expected.float(), got.float(), atol=1.0, rtol=0.05)

    def test_restored_after_an_exception(self):
        cls = PATCH_DBRX_EXPERTS.targets()[0][0]
        original = cls.forward
        with self.assertRaises(ZeroDivisionError):
            with torch_export_patches(patch_transformers=True):
                self.assertTrue(getattr(cls.forward, "__onnx_diagnostic_patch__", False))
                _ = 1 / 0
        self.assertIs(cls.forward, original)

    def test_exports(self):
        experts = self._experts()
        x = torch.randn(2, 5, 16)
        index = torch.randint(0, 4, (10, 2))
        weights = torch.rand(10, 2)
        ds = ({0: "batch", 1: "seq"}, {0: "tokens"}, {0: "tokens"})
        from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str

        with torch_export_patches(patch_transformers=True):
            ep = torch.export.export(
                experts, (x, index, weights), dynamic_shapes=use_dyn_not_str(ds), strict=False
            )
        x2, index2 = torch.randn(3, 4, 16), torch.randint(0, 4, (12, 2))
        weights2 = torch.rand(12, 2)
        with torch.no_grad():
            expected = type(experts).forward(experts, x2, index2, weights2)
        self.assertEqualArray(expected, ep.module()(x2, index2, weights2), atol=1e-4)


_V4_MOE = {
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
    ),
    "olmoe": dict(num_experts=4, num_experts_per_tok=2),
    "phimoe": dict(num_local_experts=4, num_experts_per_tok=2),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, head_dim=16),
    "dbrx": dict(
        d_model=32,
        n_heads=2,
        n_layers=1,
        ffn_config=dict(moe_num_experts=4, moe_top_k=2, ffn_hidden_size=16),
        attn_config=dict(kv_n_heads=1),
    ),
    "aria_text": dict(
        moe_num_experts=4,
        moe_topk=2,
        moe_num_shared_experts=1,
        moe_intermediate_size=16,
        head_dim=16,
    ),
}


class TestExpertsLoopHelpers(ExtTestCase):
    def test_eager_and_traced(self):
        hit = torch.tensor([[0], [2]])
        self.assertEqualArray(patch_transformers_moe.experts_to_run(hit, 4), hit)
        self.assertEqualArray(patch_transformers_moe.expert_rows(hit, 4), hit)
        self.assertTrue(patch_transformers_moe.no_rows(torch.zeros(0, dtype=torch.int64)))

        class Model(torch.nn.Module):
            def forward(self, x):
                hit = (x > 0).nonzero()
                n = len(list(patch_transformers_moe.experts_to_run(hit, 3)))
                rows = patch_transformers_moe.expert_rows(hit, 3)
                empty = patch_transformers_moe.no_rows(hit[:, 0])
                return x + n + len(rows) + int(empty)

        ep = torch.export.export(Model(), (torch.tensor([1.0, -1.0, 2.0]),), strict=False)
        # traced: every expert (3), never skipped
        self.assertEqualArray(ep.module()(torch.tensor([0.0, 0.0, 0.0])), torch.full((3,), 6.0))


@unittest.skipIf(
    PATCH_EXPERTS_LOOP_V4.applies(), "transformers 4.x (the loops are gone in transformers 5)"
)
class TestPatchExpertsLoopV5(ExtTestCase):
    def test_no_target_on_transformers_5(self):
        self.assertEqual(PATCH_EXPERTS_LOOP_V4.targets(), [])


@unittest.skipUnless(PATCH_EXPERTS_LOOP_V4.applies(), "the experts loops of transformers 4.x")
class TestPatchExpertsLoopV4(ExtTestCase):
    def _model(self, family):
        config = transformers.AutoConfig.for_model(
            family,
            vocab_size=99,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            **_V4_MOE[family],
        )
        torch.manual_seed(0)
        return transformers.AutoModelForCausalLM.from_config(config).eval()

    def test_exported_program_equals_eager(self):
        for family in _V4_MOE:
            with self.subTest(family=family):
                model = self._model(family)
                ids = torch.randint(0, 99, (2, 7))
                expected = model(ids, use_cache=False).logits
                with torch_export_patches(patch_transformers=True):
                    dim = torch.export.Dim.DYNAMIC
                    ep = torch.export.export(
                        model,
                        (),
                        kwargs=dict(input_ids=ids, use_cache=False),
                        dynamic_shapes=dict(input_ids={0: dim, 1: dim}, use_cache=None),
                        strict=False,
                    )
                got = ep.module()(input_ids=ids, use_cache=False).logits
                self.assertEqualArray(expected, got, atol=1e-5)
                other = torch.randint(0, 99, (3, 4))
                self.assertEqualArray(
                    model(other, use_cache=False).logits,
                    ep.module()(input_ids=other, use_cache=False).logits,
                    atol=1e-5,
                )

    def test_sequential_experts_gemm(self):
        from transformers.models.aria import modeling_aria

        original = modeling_aria.sequential_experts_gemm
        patched = patch_transformers_moe._make_sequential_gemm(original)
        weights = torch.randn(4, 8, 5)
        # an expert without tokens, a bfloat16 case
        for counts, dtype in (([3, 0, 2, 1], torch.float32), ([1, 1, 1, 1], torch.bfloat16)):
            with self.subTest(counts=counts, dtype=dtype):
                tokens = torch.randn(sum(counts), 8).to(dtype)
                per_expert = torch.tensor(counts)
                expected = original(tokens, weights.to(dtype), per_expert)
                got = patched(tokens, weights.to(dtype), per_expert)
                self.assertEqual(got.dtype, expected.dtype)
                self.assertEqualArray(expected.float(), got.float(), atol=1e-2)

    def test_restored_and_eager_unchanged(self):
        model = self._model("mixtral")
        cls = type(model.model.layers[0].block_sparse_moe)
        original = cls.forward
        ids = torch.randint(0, 99, (2, 5))
        expected = model(ids).logits
        with self.assertRaises(ValueError):
            with torch_export_patches(patch_transformers=True):
                self.assertIsNot(cls.forward, original)
                self.assertEqualArray(expected, model(ids).logits)
                raise ValueError("escapes")
        self.assertIs(cls.forward, original)


@unittest.skipIf(HAS_GROUPED_MM, "checked where transformers has no grouped experts")
class TestPatchGroupedMMMissingTarget(ExtTestCase):
    def test_no_target(self):
        self.assertEqual(PATCH_GROUPED_MM.targets(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
