"""
Hybrid caches: models whose layers keep fixed-size states (linear attention, mamba,
short convolutions) next to attention keys and values, and pure state-space models.
Each family is exported by both exporters; the states must be named
``past_key_values.N.conv_state`` / ``.recurrent_state`` (N the index of the layer) and
returned as ``present.N.conv_state``..., and onnx_generate must give the tokens of
transformers' greedy generate, batch 1 and batch 2 with left padding.

These models are exported for their recurrent step (one token per call): onnx_generate
feeds the prompt one token at a time, a padding token leaving the states of its row as
they were. On transformers 4.x, these families use a cache class of their own
(``Qwen3NextDynamicCache``, ``HybridMambaAttentionDynamicCache``, ``MambaCache``...),
flattened into the same names; a family the installed transformers does not have is skipped.
"""

import os
import re
import tempfile
import unittest
import warnings

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.compat import declared_cache_arg_name
from onnx_diagnostic.helpers.rt_helper import make_session, model_layout, onnx_generate

NEW_TOKENS = 24

_COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)

#: small configurations holding every kind of layer of the family
FAMILIES = {
    "qwen3_next": dict(
        num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"],
        head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        linear_conv_kernel_dim=4,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        decoder_sparse_step=1,
    ),
    "qwen3_5_text": dict(
        num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"],
        head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        linear_conv_kernel_dim=4,
    ),
    "lfm2": dict(
        num_hidden_layers=3,
        layer_types=["conv", "full_attention", "conv"],
        conv_L_cache=3,
        block_ff_dim=96,
        block_auto_adjust_ff_dim=False,
    ),
    "falcon_h1": dict(
        num_hidden_layers=2,
        head_dim=16,
        mamba_d_ssm=64,
        mamba_n_heads=4,
        mamba_d_head=16,
        mamba_d_state=16,
        mamba_d_conv=4,
        mamba_n_groups=1,
        mamba_chunk_size=16,
    ),
    "jamba": dict(
        num_hidden_layers=2,
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_experts=2,
        num_experts_per_tok=1,
        mamba_d_state=8,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_dt_rank=8,
        use_mamba_kernels=False,
    ),
    "bamba": dict(
        num_hidden_layers=2,
        attn_layer_indices=[1],
        mamba_n_heads=4,
        mamba_d_head=32,
        mamba_d_state=16,
        mamba_d_conv=4,
        mamba_n_groups=1,
        mamba_chunk_size=16,
    ),
    "granitemoehybrid": dict(
        num_hidden_layers=2,
        layer_types=["mamba", "attention"],
        mamba_n_heads=4,
        mamba_d_head=32,
        mamba_d_state=16,
        mamba_d_conv=4,
        mamba_n_groups=1,
        mamba_chunk_size=16,
        num_local_experts=2,
        num_experts_per_tok=1,
        shared_intermediate_size=32,
    ),
    "nemotron_h": dict(
        num_hidden_layers=3,
        hybrid_override_pattern="M*-",
        mamba_num_heads=4,
        mamba_head_dim=32,
        ssm_state_size=16,
        conv_kernel=4,
        n_groups=1,
        chunk_size=16,
        head_dim=16,
    ),
    "olmo_hybrid": dict(num_hidden_layers=2, layer_types=["linear_attention", "full_attention"]),
    "zamba2": dict(
        num_hidden_layers=2,
        layers_block_type=["mamba", "hybrid"],
        hybrid_layer_ids=[1],
        mamba_d_state=16,
        mamba_headdim=16,
        n_mamba_heads=8,
        mamba_ngroups=1,
        chunk_size=16,
        attention_head_dim=16,
        num_mem_blocks=1,
    ),
    "mamba": dict(num_hidden_layers=2, state_size=8, conv_kernel=4, expand=2, time_step_rank=8),
    "mamba2": dict(
        num_hidden_layers=2, num_heads=4, head_dim=32, state_size=16, n_groups=1, chunk_size=16
    ),
    "falcon_mamba": dict(
        num_hidden_layers=2, state_size=8, conv_kernel=4, expand=2, time_step_rank=8
    ),
}

_CACHE_NAME = re.compile(r"^past_key_values\.(\d+)\.(key|value|conv_state|recurrent_state)$")
_STATE_LAYERS = {"linear_attention", "hybrid", "hybrid_sliding"}


def _build(family: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    from onnx_diagnostic.tasks import random_input_kwargs

    kwargs = {**_COMMON, **FAMILIES[family]}
    try:
        config = AutoConfig.for_model(family, **kwargs)
    except ValueError as e:
        raise unittest.SkipTest(f"{family}: not in this version of transformers ({e})") from e
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    kwargs, fct = random_input_kwargs(config, "text-generation")
    data = fct(model, config, **kwargs)
    return model, data


class _HybridGeneration:
    family = ""

    @classmethod
    def setUpClass(cls):
        from onnx_diagnostic.cache_helpers import get_cache_layer_types, is_cache
        from onnx_diagnostic.export.api import to_onnx
        from onnx_diagnostic.torch_export_patches import torch_export_patches

        cls.model, data = _build(cls.family)
        if declared_cache_arg_name(cls.model) is None:
            # mamba before transformers 5.24 names its cache argument cache_params, a name
            # the library does not take for a cache: its inputs hold no cache
            raise unittest.SkipTest(f"{cls.family}: the forward takes no cache argument")
        cls.tmp = tempfile.TemporaryDirectory()
        cache = next(v for v in data["inputs"].values() if is_cache(v))
        cls.layer_types = get_cache_layer_types(cache)
        cls.sessions = {}
        for exporter in ("custom", "onnx-dynamo"):
            filename = os.path.join(cls.tmp.name, f"{cls.family}_{exporter}.onnx")
            with torch_export_patches(patch_transformers=True):
                to_onnx(
                    cls.model,
                    (),
                    kwargs=data["inputs"],
                    dynamic_shapes=data["dynamic_shapes"],
                    filename=filename,
                    exporter=exporter,
                )
            cls.sessions[exporter] = make_session(filename)
        cls.vocab = cls.model.config.get_text_config(decoder=True).vocab_size

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _expected(self, prompt, mask=None):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model.generate(
                prompt,
                attention_mask=mask,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )

    def _prompt(self, batch, length, seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(3, self.vocab, (batch, length), generator=gen)

    def test_state_names(self):
        with_states = [i for i, k in enumerate(self.layer_types) if k in _STATE_LAYERS]
        self.assertTrue(with_states, msg=f"no layer keeps a state: {self.layer_types}")
        for exporter, sess in self.sessions.items():
            with self.subTest(exporter=exporter):
                inputs = [i.name for i in sess.get_inputs()]
                outputs = {o.name for o in sess.get_outputs()}
                cache = [n for n in inputs if n.startswith("past_key_values")]
                for name in cache:
                    self.assertRegex(name, _CACHE_NAME)
                    self.assertIn(name.replace("past_key_values", "present"), outputs)
                conv = sorted(int(_CACHE_NAME.match(n).group(1)) for n in cache if "conv" in n)
                self.assertEqual(conv, with_states)
                layout = model_layout(sess)
                self.assertTrue(layout.one_token)
                for name, kind, shape in zip(
                    layout.cache_inputs, layout.cache_kinds, layout.cache_empty_shapes
                ):
                    self.assertEqual(name.split(".")[-1], kind)
                    if kind in ("conv_state", "recurrent_state"):
                        self.assertNotIn(0, shape)
                    else:
                        self.assertEqual(shape[1], 0)

    def test_generate_batch_1(self):
        prompt = self._prompt(1, 5, 0)
        expected = self._expected(prompt)
        for exporter, sess in self.sessions.items():
            with self.subTest(exporter=exporter):
                got = onnx_generate(sess, prompt, eos_token_id=None, max_new_tokens=NEW_TOKENS)
                self.assertEqualArray(expected, got)

    def test_generate_batch_2_left_padding(self):
        prompt = self._prompt(2, 7, 1)
        mask = torch.ones_like(prompt)
        mask[1, :3] = 0
        prompt[1, :3] = 0
        expected = self._expected(prompt, mask)
        for exporter, sess in self.sessions.items():
            with self.subTest(exporter=exporter):
                got = onnx_generate(
                    sess, prompt, attention_mask=mask, eos_token_id=None, max_new_tokens=NEW_TOKENS
                )
                self.assertEqualArray(expected, got)


def _family_case(family: str) -> type:
    name = "Test" + "".join(p.capitalize() for p in family.split("_")) + "Generation"
    cls = type(name, (_HybridGeneration, ExtTestCase), {"family": family})
    cls.__module__ = __name__
    return cls


for _family in FAMILIES:
    _case = _family_case(_family)
    globals()[_case.__name__] = _case
del _family, _case


if __name__ == "__main__":
    unittest.main(verbosity=2)
