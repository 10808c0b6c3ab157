import copy
import unittest

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.tasks import TaskInputError, check_inputs2
from onnx_diagnostic.torch_models.llms import get_tiny_llm
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()


class TestGetTinyLlm(ExtTestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = get_tiny_llm(add_second_input=True)

    def test_inputs_are_those_printed_by_seed_000(self):
        self.assertEqual(
            string_type(self.data["inputs"], with_shape=True),
            "dict(input_ids:T7s2x3,attention_mask:T7s2x33,position_ids:T7s2x3,"
            f"{CACHE}:DynamicCache(key_cache=#1[T1s2x1x30x96], "
            "value_cache=#1[T1s2x1x30x96]))",
        )

    def test_dynamic_shapes_use_the_flat_cache_layout(self):
        self.assertEqual(
            self.data["dynamic_shapes"],
            {
                "input_ids": {0: "batch", 1: "seq_length"},
                "attention_mask": {0: "batch", 1: "cache+seq"},
                "position_ids": {0: "batch", 1: "seq_length"},
                CACHE: [{0: "batch", 2: "cache_length"}] * 2,
            },
        )

    def test_position_ids_continue_the_cache(self):
        expected = torch.tensor([[30, 31, 32], [30, 31, 32]], dtype=torch.int64)
        self.assertEqualArray(expected, self.data["inputs"]["position_ids"])
        self.assertEqualArray(
            torch.arange(31, 35).expand(3, -1), self.data["inputs2"]["position_ids"]
        )

    def test_attention_mask_covers_cache_and_sequence(self):
        mask = self.data["inputs"]["attention_mask"]
        self.assertEqual(mask.dtype, torch.int64)
        self.assertEqual(int(mask.min()), 1)

    def test_input_ids_within_vocabulary(self):
        ids = self.data["inputs"]["input_ids"]
        self.assertGreaterEqual(int(ids.min()), 0)
        self.assertLess(int(ids.max()), 32000)

    def test_configuration_is_tiny_llm(self):
        c = self.data["configuration"]
        self.assertEqual(type(self.data["model"]).__name__, "LlamaForCausalLM")
        expected = dict(
            vocab_size=32000,
            hidden_size=192,
            intermediate_size=1024,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=96,
            max_position_embeddings=1024,
            rms_norm_eps=1e-5,
            hidden_act="silu",
            bos_token_id=1,
            eos_token_id=2,
        )
        for k, v in expected.items():
            self.assertEqual(getattr(c, k), v, msg=k)
        self.assertEqual(self.data.model_id, "arnir0/Tiny-LLM")
        self.assertEqual(self.data.task, "text-generation")

    def test_size_counts_the_weights(self):
        n = sum(p.numel() for p in self.data.model.parameters())
        self.assertEqual(self.data.n_weights, n + sum(b.numel() for b in self.data.model.buffers()))
        self.assertGreaterEqual(self.data.size, 4 * n)

    def test_model_runs_inputs_and_inputs2(self):
        model = self.data["model"]
        for name, batch, seq, total in (("inputs", 2, 3, 33), ("inputs2", 3, 4, 35)):
            with self.subTest(name=name):
                inputs = copy.deepcopy(self.data[name])
                out = model(**inputs)
                self.assertEqual(tuple(out.logits.shape), (batch, seq, 32000))
                keys = out.past_key_values.layers[0].keys
                self.assertEqual(tuple(keys.shape), (batch, 1, total, 96))

    def test_inputs2_differ_in_every_dynamic_dimension(self):
        self.assertEqual(
            check_inputs2(self.data.inputs, self.data.inputs2, self.data.dynamic_shapes), []
        )

    def test_dict_access(self):
        self.assertIs(self.data["model"], self.data.model)
        self.assertIn("inputs2", self.data)
        self.assertNotIn("inputs2", get_tiny_llm(num_hidden_layers=1))


class TestGetTinyLlmOptions(ExtTestCase):
    def test_sizes(self):
        data = get_tiny_llm(batch_size=1, sequence_length=5, past_length=7)
        self.assertEqual(
            string_type(data.inputs, with_shape=True),
            "dict(input_ids:T7s1x5,attention_mask:T7s1x12,position_ids:T7s1x5,"
            f"{CACHE}:DynamicCache(key_cache=#1[T1s1x1x7x96], "
            "value_cache=#1[T1s1x1x7x96]))",
        )
        self.assertEqualArray(torch.arange(7, 12).unsqueeze(0), data.inputs["position_ids"])

    def test_empty_cache(self):
        data = get_tiny_llm(past_length=0)
        out = data.model(**data.inputs)
        self.assertEqual(tuple(out.past_key_values.layers[0].keys.shape), (2, 1, 3, 96))

    def test_config_overrides(self):
        data = get_tiny_llm(num_hidden_layers=2, hidden_size=64, intermediate_size=32, head_dim=32)
        self.assertEqual(data.configuration.num_hidden_layers, 2)
        self.assertEqual(len(data.inputs[CACHE].layers), 2)
        self.assertEqual(len(data.dynamic_shapes[CACHE]), 4)
        out = data.model(**data.inputs)
        self.assertEqual(tuple(out.logits.shape), (2, 3, 32000))

    def test_dynamic_rope(self):
        data = get_tiny_llm(dynamic_rope=True)
        c = data.configuration
        rope = getattr(c, "rope_parameters", None) or c.rope_scaling
        self.assertEqual(rope["rope_type"], "dynamic")
        self.assertEqual(rope["factor"], 10.0)
        out = data.model(**data.inputs)
        self.assertEqual(tuple(out.logits.shape), (2, 3, 32000))

    def test_unknown_override_is_an_error(self):
        with self.assertRaises(TypeError) as cm:
            get_tiny_llm(num_hiden_layers=2)
        self.assertIn("num_hiden_layers", str(cm.exception))

    def test_bad_sizes_are_errors(self):
        with self.assertRaises(TaskInputError) as cm:
            get_tiny_llm(batch_size=0)
        self.assertIn("batch_size must be >= 1", str(cm.exception))
        with self.assertRaises(TaskInputError) as cm:
            get_tiny_llm(sequence_length="3")
        self.assertIn("sequence_length must be an int", str(cm.exception))
        with self.assertRaises(TaskInputError) as cm:
            get_tiny_llm(past_length=-1)
        self.assertIn("past_length must be >= 0", str(cm.exception))


class TestGetTinyLlmExport(ExtTestCase):
    def _export(self, data):
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str

        with torch_export_patches(patch_transformers=True):
            return torch.export.export(
                data.model,
                (),
                kwargs=copy.deepcopy(data.inputs),
                dynamic_shapes=use_dyn_not_str(data.dynamic_shapes),
                strict=False,
            )

    def test_export_with_patches_matches_eager_on_inputs2(self):
        for dynamic_rope in (False, True):
            with self.subTest(dynamic_rope=dynamic_rope):
                data = get_tiny_llm(dynamic_rope=dynamic_rope, add_second_input=True)
                ep = self._export(data)
                expected = data.model(**copy.deepcopy(data.inputs2))
                got = ep.module()(**copy.deepcopy(data.inputs2))
                self.assertEqualAny(expected.logits, got.logits, atol=1e-4)
                self.assertEqualAny(expected.past_key_values, got.past_key_values, atol=1e-4)


class TestGetPhi2(ExtTestCase):
    SMALL = dict(
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=1000,
        bos_token_id=0,
        eos_token_id=0,
    )

    def test_phi2_untrained_runs_and_exports(self):
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str
        from onnx_diagnostic.torch_models.llms import get_phi2

        data = get_phi2(batch_size=2, sequence_length=5, sequence_length2=2, **self.SMALL)
        self.assertEqual(type(data["model"]).__name__, "PhiForCausalLM")
        self.assertEqual(data["model_id"], "microsoft/phi-2")
        self.assertEqual(tuple(data["inputs"]["input_ids"].shape), (2, 2))
        self.assertEqual(data["configuration"].model_type, "phi")
        out = data["model"](**data["inputs"])
        self.assertEqual(tuple(out.logits.shape), (2, 2, 1000))
        with torch_export_patches(patch_transformers=True):
            ep = torch.export.export(
                data["model"],
                (),
                kwargs=data["inputs"],
                dynamic_shapes=use_dyn_not_str(data["dynamic_shapes"]),
                strict=False,
            )
        self.assertGreater(len(ep.graph.nodes), 10)

    def test_phi2_bad_override(self):
        from onnx_diagnostic.torch_models.llms import get_phi2

        self.assertRaise(lambda: get_phi2(not_an_attribute=3), TypeError, "PhiConfig")


class TestGetTinyLlmStaticCache(ExtTestCase):
    """get_tiny_llm(use_static_cache=True)."""

    @classmethod
    def setUpClass(cls):
        cls.data = get_tiny_llm(use_static_cache=True, add_second_input=True)

    def test_inputs_hold_a_static_cache(self):
        import transformers

        cache = self.data.inputs[CACHE]
        self.assertIsInstance(cache, transformers.StaticCache)
        self.assertEqual(self.data.configuration.cache_implementation, "static")
        keys = cache.layers[0].keys
        self.assertEqual(tuple(keys.shape), (2, 1, 34, 96))
        # the first past_length positions are filled, the others are zeros
        self.assertGreater(keys[:, :, :30].abs().sum().item(), 0)
        self.assertEqual(keys[:, :, 30:].abs().sum().item(), 0)
        self.assertEqual(int(cache.get_seq_length()), 30)
        self.assertIs(self.data.inputs["past_key_values"], cache)

    def test_dynamic_shapes_fit_the_flattened_cache(self):
        ds = self.data.dynamic_shapes
        leaves = torch.utils._pytree.tree_leaves(self.data.inputs[CACHE])
        self.assertEqual(len(ds[CACHE]), len(leaves))
        self.assertEqual(ds[CACHE][:2], [{0: "batch"}, {0: "batch"}])
        for spec, leaf in zip(ds[CACHE], leaves):
            self.assertTrue(all(axis < leaf.dim() for axis in spec))
        self.assertEqual(set(ds), set(self.data.inputs))
        self.assertEqual(
            check_inputs2(self.data.inputs, self.data.inputs2, self.data.dynamic_shapes), []
        )

    def test_eager_runs_and_matches_a_dynamic_cache(self):
        from onnx_diagnostic.cache_helpers import make_dynamic_cache

        model = self.data.model
        for name, batch, seq in (("inputs", 2, 3), ("inputs2", 3, 4)):
            with self.subTest(name=name):
                inputs = copy.deepcopy(self.data[name])
                layer = inputs[CACHE].layers[0]
                pairs = [(layer.keys[:, :, :30].clone(), layer.values[:, :, :30].clone())]
                dyn = {k: v for k, v in inputs.items() if k not in (CACHE, "cache_position")}
                dyn[CACHE] = make_dynamic_cache(pairs)
                with torch.no_grad():
                    got = model(**inputs)
                    expected = model(**dyn)
                self.assertEqual(tuple(got.logits.shape), (batch, seq, 32000))
                self.assertEqualArray(expected.logits, got.logits, atol=1e-4)
                # the new tokens were written after the past ones
                new_keys = got.past_key_values.layers[0].keys
                self.assertEqual(tuple(new_keys.shape), (batch, 1, 34, 96))
                self.assertEqualArray(
                    expected.past_key_values.layers[0].keys,
                    new_keys[:, :, : 30 + seq],
                    atol=1e-5,
                )

    def test_sizes_and_empty_cache(self):
        data = get_tiny_llm(use_static_cache=True, batch_size=1, sequence_length=2, past_length=0)
        self.assertEqual(tuple(data.inputs[CACHE].layers[0].keys.shape), (1, 1, 3, 96))
        self.assertEqual(tuple(data.inputs["attention_mask"].shape), (1, 2))
        with torch.no_grad():
            out = data.model(**copy.deepcopy(data.inputs))
        self.assertEqual(tuple(out.logits.shape), (1, 2, 32000))

    def test_bad_input(self):
        with self.assertRaisesRegex(TypeError, "use_static_cache must be a bool"):
            get_tiny_llm(use_static_cache="yes")
        with self.assertRaisesRegex(ValueError, "past_length must be an int >= 0"):
            get_tiny_llm(use_static_cache=True, past_length=-1)
        with self.assertRaisesRegex(ValueError, "sequence_length must be an int >= 1"):
            get_tiny_llm(use_static_cache=True, sequence_length=0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
