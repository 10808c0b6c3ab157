"""The patches of the complex rotary embeddings (deepseek_v2, llama4): parity, restore, export."""

import copy
import doctest
import importlib
import unittest

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.patches import known_patches, patch_transformers_complex
from onnx_diagnostic.torch_export_patches.patches.patch_transformers import PATCH_DYNAMIC_ROPE
from onnx_diagnostic.torch_export_patches.patches.patch_transformers_complex import (
    PATCH_DEEPSEEK_V2_COMPLEX_ROTARY,
    PATCH_LLAMA4_COMPLEX_ROTARY,
    real_rotary_frequencies,
    rotate_pairs,
)

#: model type -> (module of transformers.models, rotary class, spec, small sizes)
MODELS = {
    "deepseek_v2": (
        "deepseek_v2.modeling_deepseek_v2",
        "DeepseekV2RotaryEmbedding",
        PATCH_DEEPSEEK_V2_COMPLEX_ROTARY,
        dict(
            kv_lora_rank=32,
            q_lora_rank=None,
            qk_nope_head_dim=16,
            qk_rope_head_dim=8,
            v_head_dim=16,
            moe_intermediate_size=32,
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_shared_experts=1,
            # dense layers only: the experts of transformers<5 branch on the number of
            # tokens routed to each of them, which torch.export cannot trace
            first_k_dense_replace=2,
            num_key_value_heads=4,
            n_group=1,
            topk_group=1,
        ),
    ),
    "llama4_text": (
        "llama4.modeling_llama4",
        "Llama4TextRotaryEmbedding",
        PATCH_LLAMA4_COMPLEX_ROTARY,
        dict(
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size_mlp=128,
            num_local_experts=2,
            num_experts_per_tok=1,
            interleave_moe_layer_step=1,
            no_rope_layers=[1, 0],
            attention_chunk_size=64,
        ),
    ),
}


def _module(model_type: str):
    try:
        return importlib.import_module(f"transformers.models.{MODELS[model_type][0]}")
    except ImportError:
        return None


def _is_complex(model_type: str) -> bool:
    """Tells if the installed code of the model is the one the patch rewrites."""
    return bool(MODELS[model_type][2].targets())


def _small_model(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        **MODELS[model_type][3],
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _inputs(model):
    from onnx_diagnostic.tasks import random_input_kwargs

    kwargs, fct = random_input_kwargs(model.config, "text-generation")
    return fct(model, model.config, add_second_input=True, **kwargs)


class TestRealRotary(ExtTestCase):
    def test_doctest(self):
        res = doctest.testmod(patch_transformers_complex, verbose=False)
        self.assertEqual(res.failed, 0)
        self.assertGreater(res.attempted, 3)

    def test_frequencies_are_view_as_real_of_polar(self):
        inv_freq = 1.0 / (10000 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
        pos = torch.arange(37)[None].expand(2, -1)
        freqs = pos[..., None].float() * inv_freq
        expected = torch.view_as_real(torch.polar(torch.ones_like(freqs), freqs) * 0.7)
        got = real_rotary_frequencies(inv_freq, pos, 0.7)
        self.assertEqual(got.dtype, torch.float32)
        self.assertEqualArray(expected, got, atol=1e-6)

    def test_rotation_equals_the_complex_product(self):
        torch.manual_seed(0)
        x = torch.randn(2, 3, 5, 8)
        f = torch.view_as_real(torch.polar(torch.rand(2, 1, 5, 4), torch.randn(2, 1, 5, 4)))
        expected = torch.view_as_real(
            torch.view_as_complex(x.reshape(2, 3, 5, 4, 2)) * torch.view_as_complex(f)
        ).flatten(3)
        self.assertEqualArray(expected, rotate_pairs(x, f), atol=1e-6)
        self.assertEqual(rotate_pairs(x.to(torch.bfloat16), f).dtype, torch.bfloat16)


class _ComplexRotaryCase:
    """The checks of one model, run by the subclasses below."""

    model_type = ""

    def setUp(self):
        if _module(self.model_type) is None:
            raise unittest.SkipTest(f"transformers has no {self.model_type}")
        if not _is_complex(self.model_type):
            raise unittest.SkipTest(
                f"the rotary embedding of {self.model_type} in this transformers is not "
                "computed with torch.polar / view_as_complex, nothing to patch"
            )

    def _targets(self):
        mod = _module(self.model_type)
        cls = getattr(mod, MODELS[self.model_type][1])
        return mod, cls, vars(cls)["forward"], vars(mod)["apply_rotary_emb"]

    def test_targets_both_functions(self):
        mod, cls, _, _ = self._targets()
        spec = MODELS[self.model_type][2]
        self.assertEqual(spec.targets(), [(cls, "forward"), (mod, "apply_rotary_emb")])
        # placed before the dynamic rope patch, which also targets this forward
        names = [s.name for s in known_patches()]
        self.assertLess(names.index(spec.name), names.index(PATCH_DYNAMIC_ROPE.name))

    def test_patched_rotary_returns_real_pairs(self):
        model = _small_model(self.model_type)
        rotary = model.model.rotary_emb
        x = torch.randn(2, 7, 64)
        pos = torch.arange(3, 10)[None].expand(2, -1)
        with torch.no_grad():
            expected = rotary(x, pos)
            self.assertTrue(expected.is_complex())
            with torch_export_patches(patch_transformers=True):
                got = rotary(x, pos)
        self.assertFalse(got.is_complex())
        self.assertEqualArray(torch.view_as_real(expected), got, atol=1e-6)

    def test_eager_float32_equals_the_original(self):
        model = _small_model(self.model_type)
        data = _inputs(model)
        for key in ("inputs", "inputs2"):
            with torch.no_grad():
                expected = model(**copy.deepcopy(data[key]))
                with torch_export_patches(patch_transformers=True):
                    got = model(**copy.deepcopy(data[key]))
            diff = max_diff(expected, got)
            self.assertLessEqual(diff["abs"], 1e-5, msg=f"{key}: {diff}")

    def test_eager_bfloat16_equals_the_original(self):
        model = _small_model(self.model_type).to(torch.bfloat16)
        ids = torch.randint(0, 1000, (2, 9))
        with torch.no_grad():
            expected = model(input_ids=ids).logits
            with torch_export_patches(patch_transformers=True):
                got = model(input_ids=ids).logits
        self.assertEqual(got.dtype, torch.bfloat16)
        self.assertEqualArray(expected.float(), got.float(), atol=1e-2)

    def test_restored_after_exit_and_after_an_exception(self):
        mod, cls, forward, apply = self._targets()
        with torch_export_patches(patch_transformers=True):
            self.assertIsNot(vars(cls)["forward"], forward)
            self.assertIsNot(mod.apply_rotary_emb, apply)
            self.assertTrue(getattr(vars(cls)["forward"], "__onnx_diagnostic_patch__", False))
            self.assertTrue(getattr(mod.apply_rotary_emb, "__onnx_diagnostic_patch__", False))
        self.assertIs(vars(cls)["forward"], forward)
        self.assertIs(mod.apply_rotary_emb, apply)
        with self.assertRaises(ZeroDivisionError):
            with torch_export_patches(patch_transformers=True):
                self.assertIsNot(mod.apply_rotary_emb, apply)
                _ = 1 / 0
        self.assertIs(vars(cls)["forward"], forward)
        self.assertIs(mod.apply_rotary_emb, apply)

    def test_nested_contexts_patch_once(self):
        mod, cls, forward, apply = self._targets()
        with torch_export_patches(patch_transformers=True):
            outer = vars(cls)["forward"], mod.apply_rotary_emb
            with torch_export_patches(patch_transformers=True):
                self.assertEqual(outer, (vars(cls)["forward"], mod.apply_rotary_emb))
            self.assertEqual(outer, (vars(cls)["forward"], mod.apply_rotary_emb))
        self.assertIs(vars(cls)["forward"], forward)
        self.assertIs(mod.apply_rotary_emb, apply)

    def test_patched_apply_accepts_complex_frequencies(self):
        mod, _, _, apply = self._targets()
        torch.manual_seed(0)
        # deepseek_v2: (batch, heads, seq, dim), llama4: (batch, seq, heads, dim)
        q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
        axis = 1 if self.model_type == "deepseek_v2" else 2
        shape = (2, 5, 4) if axis == 1 else (2, 3, 4)
        freqs = torch.polar(torch.ones(shape), torch.randn(shape))
        expected = apply(q, k, freqs)
        with torch_export_patches(patch_transformers=True):
            from_complex = mod.apply_rotary_emb(q, k, freqs)
            from_real = mod.apply_rotary_emb(q, k, torch.view_as_real(freqs))
        for e, c, r in zip(expected, from_complex, from_real):
            self.assertEqualArray(e, c)
            self.assertEqualArray(e, r, atol=1e-6)

    def _export(self, exporter: str):
        from onnx_diagnostic.export.api import onnx_feeds, to_onnx
        from onnx_diagnostic.helpers.rt_helper import make_session, run_session
        from onnx_diagnostic.helpers.torch_helper import torch_deepcopy

        model = _small_model(self.model_type)
        data = _inputs(model)
        with torch.no_grad():
            expected = model(**torch_deepcopy(data["inputs2"]))
        with torch_export_patches(patch_transformers=True):
            onx = to_onnx(
                model,
                (),
                kwargs=torch_deepcopy(data["inputs"]),
                dynamic_shapes=data["dynamic_shapes"],
                exporter=exporter,
            )
        got = run_session(make_session(onx), onnx_feeds(model, kwargs=data["inputs2"]))
        diff = max_diff(expected, got)
        self.assertLess(diff["abs"], 1e-4, msg=str(diff))

    def test_export_custom(self):
        self._export("custom")

    def test_export_onnx_dynamo(self):
        self._export("onnx-dynamo")


class TestDeepseekV2ComplexRotary(_ComplexRotaryCase, ExtTestCase):
    model_type = "deepseek_v2"


class TestLlama4ComplexRotary(_ComplexRotaryCase, ExtTestCase):
    model_type = "llama4_text"


if __name__ == "__main__":
    unittest.main(verbosity=2)
