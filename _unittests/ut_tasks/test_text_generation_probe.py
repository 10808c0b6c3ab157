"""
text-generation inputs read from the model: arguments its forward declares, the cache it
creates (latent attention, hybrid and recurrent models, models without a cache).
"""

import copy
import doctest
import unittest

import torch
import transformers

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.helpers.compat import (
    CACHE_ARG_NAMES,
    cache_class,
    declared_cache_arg_name,
    transformers_version,
    version_at_least,
)
from onnx_diagnostic.tasks import TaskInputError, check_inputs2, random_input_kwargs
from onnx_diagnostic.tasks import _cache_probe
from onnx_diagnostic.tasks._cache_probe import (
    causal_lm_class,
    forward_arguments,
    has_recurrent_states,
    probe_cache,
    probe_dynamic_shapes,
)
from onnx_diagnostic.tasks._reduce import (
    Replace,
    merge_overrides,
    reduce_layers,
    reduce_attention,
    reduce_decoder_config,
    reduce_experts,
    reduce_vocabulary,
)
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str

#: transformers >= 5 builds hybrid caches with linear attention layers
HAS_LINEAR_LAYERS = cache_class("LinearAttentionLayer") is not None


def _small(cls: type, **kwargs) -> transformers.PretrainedConfig:
    """A small configuration of a class from its defaults."""
    d = cls().to_dict()
    d = merge_overrides(d, reduce_decoder_config(d))
    d = merge_overrides(d, reduce_experts(d))
    d = merge_overrides(d, reduce_vocabulary(d, max_vocab=1000, reduced_vocab=1000))
    d.update(kwargs)
    return cls.from_dict(d)


def _inputs(model, config, **kwargs):
    torch.manual_seed(0)
    defaults, fct = random_input_kwargs(config, "text-generation")
    defaults.update(kwargs)
    return fct(model, config, add_second_input=True, **defaults)


def _cache_keys(inputs):
    return [k for k in inputs if k in CACHE_ARG_NAMES]


class TestForwardArguments(ExtTestCase):
    def test_no_position_ids_without_model(self):
        config = transformers.BloomConfig(hidden_size=32, n_layer=1, n_head=2, vocab_size=100)
        res = _inputs(None, config)
        self.assertNotIn("position_ids", res["inputs"])
        self.assertNotIn("position_ids", res["dynamic_shapes"])
        self.assertEqual(check_inputs2(res["inputs"], res["inputs2"], res["dynamic_shapes"]), [])

    def test_no_position_ids_with_model_runs_and_exports(self):
        config = transformers.BloomConfig(hidden_size=32, n_layer=1, n_head=2, vocab_size=100)
        model = transformers.BloomForCausalLM(config).eval()
        res = _inputs(model, config)
        self.assertNotIn("position_ids", res["inputs"])
        expected = model(**copy.deepcopy(res["inputs2"]))
        with torch_export_patches(patch_transformers=True):
            ep = torch.export.export(
                model,
                (),
                kwargs=copy.deepcopy(res["inputs"]),
                dynamic_shapes=use_dyn_not_str(res["dynamic_shapes"]),
                strict=False,
            )
            got = ep.module()(**copy.deepcopy(res["inputs2"]))
        self.assertLess(max_diff(expected, got)["abs"], 1e-4)

    def test_model_without_cache_gets_none(self):
        config = transformers.OpenAIGPTConfig(n_embd=32, n_layer=1, n_head=2, vocab_size=100)
        model = transformers.OpenAIGPTLMHeadModel(config).eval()
        for m in (None, model):
            res = _inputs(m, config)
            self.assertEqual(_cache_keys(res["inputs"]), [])
            self.assertEqual(res["inputs"]["attention_mask"].shape, (2, 3))
            self.assertEqual(res["dynamic_shapes"]["attention_mask"], {0: "batch", 1: "seq_length"})
            self.assertEqual(
                check_inputs2(res["inputs"], res["inputs2"], res["dynamic_shapes"]), []
            )
        model(**res["inputs2"])

    def test_forward_arguments(self):
        self.assertEqual(
            sorted(forward_arguments(lambda input_ids, cache=None, **kw: None)),
            ["cache", "input_ids"],
        )
        self.assertIsNone(forward_arguments(lambda **kwargs: None))
        self.assertIsNone(forward_arguments(None, None))
        self.assertIn("position_ids", forward_arguments(None, transformers.LlamaConfig()))

    def test_causal_lm_class(self):
        self.assertIs(causal_lm_class(transformers.GPT2Config()), transformers.GPT2LMHeadModel)
        config = transformers.LlamaConfig(architectures=["NoSuchClass", "MistralForCausalLM"])
        self.assertIs(causal_lm_class(config), transformers.MistralForCausalLM)
        config = transformers.PretrainedConfig()
        self.assertIsNone(causal_lm_class(config))


class TestProbedCache(ExtTestCase):
    def test_latent_attention_cache_comes_from_the_model(self):
        config = _small(transformers.DeepseekV3Config)
        model = transformers.DeepseekV3ForCausalLM(config).eval()
        res = _inputs(model, config)
        expected = model(**copy.deepcopy(res["inputs2"]))
        self.assertEqual(check_inputs2(res["inputs"], res["inputs2"], res["dynamic_shapes"]), [])
        # the cache is the one the model makes, not (batch, kv heads, past, head_dim)
        probed = probe_cache(model, 2, 30, 10)
        cache = res["inputs"][_cache_keys(res["inputs"])[0]]
        self.assertEqual(
            [t.shape for t in _cache_probe.cache_leaves(cache, "c")],
            [t.shape for t in _cache_probe.cache_leaves(probed, "c")],
        )
        self.assertIsNotNone(expected.logits)

    def test_layers_of_the_config_are_kept_when_the_model_agrees(self):
        config = transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=100,
        )
        model = transformers.LlamaForCausalLM(config).eval()
        torch.manual_seed(0)
        kwargs, fct = random_input_kwargs(config, "text-generation")
        with_model = fct(model, config, **kwargs)
        torch.manual_seed(0)
        without = fct(None, config, **kwargs)
        self.assertEqual(max_diff(with_model["inputs"], without["inputs"])["abs"], 0)
        self.assertEqual(with_model["dynamic_shapes"], without["dynamic_shapes"])

    def test_state_space_model_gets_states_no_mask_one_token(self):
        config = _small(transformers.MambaConfig)
        model = transformers.MambaForCausalLM(config).eval()
        res = _inputs(model, config)
        # transformers < 5.24 names mamba's argument cache_params
        name = declared_cache_arg_name(model)
        self.assertIn(name, (*CACHE_ARG_NAMES, "cache_params"))
        self.assertNotIn("attention_mask", res["inputs"])
        self.assertEqual(res["inputs"]["input_ids"].shape, (2, 1))
        self.assertEqual(res["dynamic_shapes"]["input_ids"], {0: "batch"})
        self.assertTrue(has_recurrent_states(res["inputs"][name]))
        if not version_at_least(transformers_version(), "5"):
            # MambaCache of transformers 4.x: the model requires cache_position with it
            self.assertEqual(res["inputs"]["cache_position"].tolist(), [30])
            self.assertEqual(res["dynamic_shapes"]["cache_position"], {})
        self.assertEqual(check_inputs2(res["inputs"], res["inputs2"], res["dynamic_shapes"]), [])
        model(**copy.deepcopy(res["inputs2"]))

    @unittest.skipIf(not HAS_LINEAR_LAYERS, "no linear attention layers before transformers 5")
    def test_hybrid_model_exports(self):
        config = _small(transformers.Qwen3NextConfig)
        model = transformers.Qwen3NextForCausalLM(config).eval()
        res = _inputs(model, config)
        cache = res["inputs"][_cache_keys(res["inputs"])[0]]
        kinds = {type(layer).__name__ for layer in cache.layers}
        self.assertIn("LinearAttentionLayer", kinds)
        self.assertEqual(check_inputs2(res["inputs"], res["inputs2"], res["dynamic_shapes"]), [])
        expected = model(**copy.deepcopy(res["inputs2"]))
        with torch_export_patches(patch_transformers=True):
            ep = torch.export.export(
                model,
                (),
                kwargs=copy.deepcopy(res["inputs"]),
                dynamic_shapes=use_dyn_not_str(res["dynamic_shapes"]),
                strict=False,
            )
            got = ep.module()(**copy.deepcopy(res["inputs2"]))
        self.assertLess(max_diff(expected, got)["abs"], 1e-4)

    def test_hybrid_layer_types_without_model_name_the_layer_class(self):
        config = _small(transformers.Qwen3NextConfig)
        err = self.assertRaise(lambda: _inputs(None, config), TaskInputError)
        text = str(err)
        self.assertIn("linear_attention", text)
        self.assertIn("model=", text)
        self.assertNotIn("sliding_window", text)
        if HAS_LINEAR_LAYERS:
            self.assertIn("LinearAttentionLayer", text)

    @unittest.skipIf(not HAS_LINEAR_LAYERS, "MiniMaxCache checked on transformers 5")
    def test_cache_class_of_a_model_is_named(self):
        config = _small(transformers.MiniMaxConfig)
        model = transformers.MiniMaxForCausalLM(config).eval()
        self.assertRaise(lambda: _inputs(model, config), TaskInputError, "MiniMaxCache")

    def test_unflattenable_cache_of_the_model_falls_back_to_the_configuration(self):
        class OwnCache:
            pass

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(2, 2)

            def forward(
                self, input_ids, attention_mask=None, position_ids=None, cache=None, **kwargs
            ):
                return {"cache": OwnCache()}

        config = transformers.LlamaConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=100
        )
        res = _inputs(Model(), config)
        self.assertEqual(type(res["inputs"]["cache"]).__name__, "DynamicCache")

        # without a configuration to fall back on, the error names the class
        class NoHeads:
            num_hidden_layers = 1
            vocab_size = 100

        self.assertRaise(lambda: _inputs(Model(), NoHeads()), TaskInputError, "OwnCache")

    def test_model_refusing_the_cache_of_the_configuration_names_its_class(self):
        # zamba2 on transformers 4.57: the model makes its own cache class and fails on the
        # DynamicCache built from the configuration (silently wrong inputs before)
        class OwnCache:
            states_by_layer = {}

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(2, 2)

            def forward(
                self, input_ids, attention_mask=None, position_ids=None, cache=None, **kwargs
            ):
                if cache is not None:
                    _ = cache.states_by_layer
                return {"cache": OwnCache()}

        config = transformers.LlamaConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=100
        )
        with self.assertRaises(TaskInputError) as cm:
            _inputs(Model(), config)
        self.assertIn("OwnCache", str(cm.exception))
        self.assertIn("does not fit it either", str(cm.exception))
        self.assertIn("states_by_layer", str(cm.exception))

    def test_probe_cache_bad_model(self):
        self.assertRaise(lambda: probe_cache("model", 2, 3, 10), TaskInputError, "nn.Module")

    def test_probe_cache_failing_model_names_the_shape(self):
        class Broken(torch.nn.Module):
            def forward(self, input_ids, use_cache=False):
                raise RuntimeError("boom")

        err = self.assertRaise(lambda: probe_cache(Broken(), 2, 3, 10), TaskInputError, "boom")
        self.assertIn("(2, 3)", str(err))

    def test_probe_dynamic_shapes_mismatch(self):
        from onnx_diagnostic.cache_helpers import make_dynamic_cache

        kv = (torch.zeros(2, 1, 5, 4), torch.zeros(2, 1, 5, 4))
        kv2 = (torch.zeros(3, 1, 6, 4), torch.zeros(3, 1, 6, 4))
        c1, c2 = make_dynamic_cache([kv]), make_dynamic_cache([kv2, kv2])
        self.assertRaise(
            lambda: probe_dynamic_shapes(c1, c2, (2, 5), (3, 6)), TaskInputError, "2 and 4 tensors"
        )
        self.assertRaise(lambda: _cache_probe.cache_leaves(3, "x"), TaskInputError, "int")

    def test_doctest(self):
        res = doctest.testmod(_cache_probe, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertEqual(res.failed, 0)
        self.assertGreater(res.attempted, 5)


class TestReduceExperts(ExtTestCase):
    def test_reduce_experts(self):
        over = reduce_experts(
            {
                "n_routed_experts": 64,
                "num_experts_per_tok": 6,
                "n_shared_experts": 2,
                "n_group": 8,
                "topk_group": 3,
                "moe_intermediate_size": 1408,
                "first_k_dense_replace": 3,
            }
        )
        self.assertEqual(
            over,
            {
                "n_routed_experts": 4,
                "num_experts_per_tok": 2,
                "n_shared_experts": 1,
                "n_group": 1,
                "topk_group": 1,
                "moe_intermediate_size": 32,
                "first_k_dense_replace": 1,
            },
        )

    def test_per_token_left_to_none(self):
        self.assertEqual(
            reduce_experts({"num_experts": 4, "num_experts_per_tok": None}),
            {"num_experts_per_tok": 2},
        )
        self.assertEqual(reduce_experts({"num_experts_per_tok": None}), {})
        self.assertEqual(reduce_experts({"hidden_size": 64}), {})

    def test_bad_arguments(self):
        self.assertRaise(lambda: reduce_experts([1]), TypeError, "dict")
        self.assertRaise(lambda: reduce_experts({}, experts=2, per_token=3), ValueError, "3")

    def test_reduce_vocabulary_to_a_given_size(self):
        d = {"vocab_size": 5000, "eos_token_id": 4999, "bos_token_id": 1, "pad_token_id": 4998}
        over = reduce_vocabulary(d, max_vocab=1000, reduced_vocab=1000)
        self.assertEqual(over, {"eos_token_id": 999, "pad_token_id": 998, "vocab_size": 1000})
        self.assertEqual(reduce_vocabulary(d, max_vocab=10000, reduced_vocab=1000), {})
        self.assertRaise(
            lambda: reduce_vocabulary(d, max_vocab=100, reduced_vocab=1000), ValueError, "100"
        )
        self.assertRaise(lambda: reduce_vocabulary(d, reduced_vocab="a"), TypeError, "'a'")
        many = {"vocab_size": 5000, "a_token_ids": list(range(4000, 4010))}
        self.assertRaise(
            lambda: reduce_vocabulary(many, max_vocab=8, reduced_vocab=8), ValueError, "10 token"
        )

    def test_reduce_latent_attention(self):
        d = transformers.DeepseekV3Config().to_dict()
        over = reduce_attention(d)
        self.assertEqual(over["qk_rope_head_dim"], 8)
        self.assertEqual(over["qk_nope_head_dim"], 8)
        self.assertEqual(over["v_head_dim"], 16)
        self.assertEqual(over["kv_lora_rank"], 32)
        config = transformers.DeepseekV3Config.from_dict(merge_overrides(d, over))
        self.assertEqual(config.qk_head_dim, 16)


class TestReduceLayers(ExtTestCase):
    def test_dictionary_keyed_by_layer_is_renumbered(self):
        d = {
            "num_hidden_layers": 6,
            "layer_types": ["s"] * 5 + ["f"],
            "per_layer_config": {"02": {"head_dim": 8}, "05": {"head_dim": 16}},
        }
        over = reduce_layers(d, "num_hidden_layers")
        self.assertEqual(over["layer_types"], ["s", "f"])
        self.assertIsInstance(over["per_layer_config"], Replace)
        self.assertEqual(dict(over["per_layer_config"]), {"1": {"head_dim": 16}})
        merged = merge_overrides(d, over)
        self.assertEqual(dict(merged["per_layer_config"]), {"1": {"head_dim": 16}})

    def test_integer_keys_stay_integers(self):
        d = {"num_hidden_layers": 3, "layer_types": ["s", "s", "f"], "extra": {0: "a", 2: "b"}}
        over = reduce_layers(d, "num_hidden_layers")
        self.assertEqual(dict(over["extra"]), {0: "a", 1: "b"})

    def test_dictionary_not_keyed_by_layer_is_left(self):
        d = {"num_hidden_layers": 4, "rope_scaling": {"type": "linear", "factor": 2.0}}
        self.assertNotIn("rope_scaling", reduce_layers(d, "num_hidden_layers"))
        d = {"num_hidden_layers": 4, "map": {"7": 1}}
        self.assertNotIn("map", reduce_layers(d, "num_hidden_layers"))

    def test_shared_kv_layers_removed(self):
        d = {"num_hidden_layers": 30, "num_kv_shared_layers": 10}
        self.assertEqual(reduce_layers(d, "num_hidden_layers")["num_kv_shared_layers"], 0)

    def test_merge_replace(self):
        res = merge_overrides({"a": {"x": 1, "y": 2}}, {"a": Replace({"z": 3})})
        self.assertEqual(dict(res["a"]), {"z": 3})
        self.assertEqual(repr(Replace({"z": 3})), "Replace({'z': 3})")

    def test_unreadable_configuration_without_model(self):
        class Config:
            num_hidden_layers = 1
            vocab_size = 100
            hidden_size = 32
            num_attention_heads = 2

            @property
            def head_dim(self):
                raise RuntimeError("per-layer attribute")

        config = Config()
        err = self.assertRaise(lambda: _inputs(None, config), TaskInputError, "per-layer")
        self.assertIn("model=", str(err))


if __name__ == "__main__":
    unittest.main(verbosity=2)
