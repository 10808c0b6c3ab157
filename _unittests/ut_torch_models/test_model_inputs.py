import copy
import json
import os
import tempfile
import unittest

import torch
import transformers

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.tasks import check_inputs2
from onnx_diagnostic.torch_models.hghub import (
    get_untrained_model_with_inputs,
    shipped_model_ids,
)
from onnx_diagnostic.torch_models.hghub.hub_api import load_config_dict
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()


def _missing_class(model_id):
    """Returns the architecture the installed transformers does not have, or None."""
    d = load_config_dict(model_id)
    if d["model_type"] not in transformers.CONFIG_MAPPING:
        return f"model_type {d['model_type']!r}"
    for arch in d["architectures"]:
        if getattr(transformers, arch, None) is None:
            return arch
    return None


def _build(test, model_id, **kwargs):
    missing = _missing_class(model_id)
    if missing:
        test.skipTest(f"transformers {transformers.__version__} has no class {missing}")
    return get_untrained_model_with_inputs(model_id, **kwargs)


class TestEveryShippedId(ExtTestCase):
    def test_every_shipped_id_runs_inputs_and_inputs2(self):
        for mid in shipped_model_ids():
            with self.subTest(model_id=mid):
                data = _build(self, mid, add_second_input=True)
                self.assertEqual(check_inputs2(data.inputs, data.inputs2, data.dynamic_shapes), [])
                self.assertEqual(data.model_id, mid)
                self.assertLess(data.n_weights, 5_000_000)
                self.assertGreater(data.size, data.n_weights)
                with torch.no_grad():
                    out1 = data.model(**copy.deepcopy(data.inputs))
                    out2 = data.model(**copy.deepcopy(data.inputs2))
                first1 = out1[0] if isinstance(out1[0], torch.Tensor) else out1[0][0]
                first2 = out2[0] if isinstance(out2[0], torch.Tensor) else out2[0][0]
                self.assertEqual(first1.shape[0] + 1, first2.shape[0], msg="batch differs")
                self.assertFalse(torch.isnan(first1).any())

    def test_every_model_is_reduced(self):
        for mid in shipped_model_ids():
            with self.subTest(model_id=mid):
                data = _build(self, mid)
                config = data.configuration
                cfg = getattr(config, "text_config", None) or config
                layers = [
                    getattr(cfg, k)
                    for k in ("num_hidden_layers", "num_layers", "encoder_layers", "n_layers")
                    if isinstance(getattr(cfg, k, None), int)
                ]
                if layers:
                    self.assertLessEqual(max(layers), 2)
                vocab = getattr(cfg, "vocab_size", None)
                if vocab is not None:
                    self.assertLessEqual(vocab, 50265)


class TestGetUntrainedModel(ExtTestCase):
    def test_sliding_and_full_layers_are_both_kept(self):
        for mid in ("google/gemma-2-2b", "google/gemma-3-1b-it"):
            with self.subTest(model_id=mid):
                data = _build(self, mid, add_second_input=True)
                self.assertEqual(
                    data.configuration.layer_types, ["sliding_attention", "full_attention"]
                )
                layers = data.inputs[CACHE].layers
                self.assertEqual([type(la).__name__ for la in layers][1], "DynamicLayer")
                self.assertTrue(getattr(layers[0], "is_sliding", False))

    def test_per_layer_lists_follow_the_kept_layers(self):
        data = _build(self, "HuggingFaceTB/SmolLM3-3B")
        self.assertEqual(data.configuration.no_rope_layers, [1, 0])

    def test_vocabulary_reduced_and_special_tokens_moved(self):
        data = _build(self, "meta-llama/Llama-3.2-3B-Instruct")
        c = data.configuration
        self.assertEqual(c.vocab_size, 32000)
        self.assertLess(c.bos_token_id, 32000)
        self.assertEqual(len(set(c.eos_token_id)), 3)
        self.assertTrue(all(i < 32000 for i in c.eos_token_id))
        self.assertLess(int(data.inputs["input_ids"].max()), 32000)

    def test_longrope_factors_follow_the_rotary_dimension(self):
        data = _build(self, "microsoft/Phi-4-mini-instruct")
        c = data.configuration
        rope = getattr(c, "rope_parameters", None) or c.rope_scaling
        head_dim = c.hidden_size // c.num_attention_heads
        self.assertEqual(len(rope["long_factor"]), int(head_dim * 0.75) // 2)

    def test_image_text_to_text_has_image_tokens(self):
        data = _build(self, "google/gemma-3-4b-it", add_second_input=True)
        c = data.configuration
        ids = data.inputs["input_ids"]
        n = int((ids == c.image_token_id).sum())
        self.assertEqual(n, ids.shape[0] * c.mm_tokens_per_image)
        self.assertEqual(data.inputs["pixel_values"].shape[0], ids.shape[0])

    def test_same_as_trained_keeps_sizes(self):
        data = get_untrained_model_with_inputs("arnir0/Tiny-LLM", same_as_trained=True)
        self.assertEqual(data.configuration.hidden_size, 192)
        self.assertEqual(data.configuration.intermediate_size, 1024)
        self.assertEqual(tuple(data.inputs[CACHE].layers[0].keys.shape), (2, 1, 30, 96))

    def test_model_kwargs_applied_last(self):
        data = get_untrained_model_with_inputs(
            "google/gemma-3-4b-it", model_kwargs={"text_config": {"num_hidden_layers": 1}}
        )
        self.assertEqual(data.configuration.text_config.num_hidden_layers, 1)
        self.assertEqual(data.configuration.text_config.hidden_size, 64)
        self.assertEqual(len(data.dynamic_shapes[CACHE]), 2)

    def test_inputs_kwargs(self):
        data = get_untrained_model_with_inputs(
            "arnir0/Tiny-LLM", inputs_kwargs={"batch_size": 1, "past_length": 5}
        )
        self.assertEqual(tuple(data.inputs["attention_mask"].shape), (1, 8))
        with self.assertRaises(TypeError) as cm:
            get_untrained_model_with_inputs("arnir0/Tiny-LLM", inputs_kwargs={"batch": 1})
        self.assertIn("'batch'", str(cm.exception))

    def test_config_given(self):
        config = transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=100,
            architectures=["LlamaForCausalLM"],
        )
        data = get_untrained_model_with_inputs("mine", config=config, same_as_trained=True)
        self.assertEqual(data.task, "text-generation")
        self.assertEqual(data.configuration.hidden_size, 32)
        self.assertLess(int(data.inputs["input_ids"].max()), 100)

    def test_config_without_architecture_needs_a_task(self):
        config = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 2}
        with self.assertRaises(ValueError) as cm:
            get_untrained_model_with_inputs("mine", config=config)
        self.assertIn("task=", str(cm.exception))
        data = get_untrained_model_with_inputs(
            "mine", config={**config, "vocab_size": 100}, task="text-generation"
        )
        self.assertEqual(type(data.model).__name__, "LlamaForCausalLM")

    def test_local_config_json(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "config.json")
            with open(path, "w") as f:
                json.dump(load_config_dict("google-bert/bert-base-uncased"), f)
            data = get_untrained_model_with_inputs(path)
        self.assertEqual(data.task, "fill-mask")
        self.assertEqual(type(data.model).__name__, "BertForMaskedLM")

    def test_unknown_id(self):
        with self.assertRaises(KeyError) as cm:
            get_untrained_model_with_inputs("someone/unknown")
        self.assertIn("not shipped", str(cm.exception))

    def test_verbose(self):
        data, out, _ = self.capture(
            lambda: get_untrained_model_with_inputs("arnir0/Tiny-LLM", verbose=1)
        )
        self.assertIn("creates LlamaForCausalLM", out)
        self.assertIn("weights", out)
        self.assertEqual(data["task"], "text-generation")


class TestExportTextGeneration(ExtTestCase):
    def test_every_text_generation_id_exports(self):
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str

        for mid in shipped_model_ids("text-generation"):
            with self.subTest(model_id=mid):
                data = _build(self, mid, add_second_input=True)
                with torch.no_grad():
                    expected = data.model(**copy.deepcopy(data.inputs2))
                with torch_export_patches(patch_transformers=True):
                    ep = torch.export.export(
                        data.model,
                        (),
                        kwargs=copy.deepcopy(data.inputs),
                        dynamic_shapes=use_dyn_not_str(data.dynamic_shapes),
                        strict=False,
                    )
                got = ep.module()(**copy.deepcopy(data.inputs2))
                diff = max_diff(expected, got)
                self.assertLess(diff["abs"], 1e-4, msg=f"{mid}: {diff}")


class TestUntrainedModelArguments(ExtTestCase):
    def test_kwargs_must_be_dicts(self):
        from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs

        for argname in ("model_kwargs", "inputs_kwargs"):
            for bad in (3, [("a", 1)], "x=1"):
                with self.subTest(argname=argname, value=bad):
                    with self.assertRaises(TypeError) as cm:
                        get_untrained_model_with_inputs("arnir0/Tiny-LLM", **{argname: bad})
                    self.assertIn(f"{argname} must be a dict or None", str(cm.exception))
            with self.assertRaises(TypeError) as cm:
                get_untrained_model_with_inputs("arnir0/Tiny-LLM", **{argname: {1: 2}})
            self.assertIn(f"the keys of {argname} must be strings", str(cm.exception))


class TestBatch1EmptyCacheSubfolder(ExtTestCase):
    """inputs_batch1, inputs_empty_cache and subfolder= (onnx-diagnostic's API)."""

    def test_tiny_llm_batch1_and_empty_cache_run(self):
        from onnx_diagnostic.helpers.cache_helper import get_cache_kv
        from onnx_diagnostic.helpers.torch_helper import torch_deepcopy

        data = get_untrained_model_with_inputs("arnir0/Tiny-LLM")
        self.assertIn("inputs_batch1", data)
        self.assertIn("inputs_empty_cache", data)
        b1, empty = data["inputs_batch1"], data["inputs_empty_cache"]
        self.assertEqual(list(b1), list(data.inputs))
        self.assertEqual(list(empty), list(data.inputs))
        self.assertEqual(b1["input_ids"].shape[0], 1)
        self.assertEqual(b1["attention_mask"].shape, (1, data.inputs["attention_mask"].shape[1]))
        self.assertEqual(get_cache_kv(b1[CACHE])[0][0].shape[0], 1)
        keys, values = get_cache_kv(empty[CACHE])
        self.assertEqual([k.shape[2] for k in keys + values], [0] * (2 * len(keys)))
        self.assertEqual(empty["input_ids"].shape, data.inputs["input_ids"].shape)
        self.assertEqual(empty["attention_mask"].shape, data.inputs["input_ids"].shape)
        self.assertEqual(empty["position_ids"][0].tolist(), [0, 1, 2])
        model = data.model
        with torch.no_grad():
            got_b1 = model(**torch_deepcopy(b1))
            got_empty = model(**torch_deepcopy(empty))
        self.assertEqual(got_b1.logits.shape[:2], b1["input_ids"].shape)
        self.assertEqual(got_empty.logits.shape[:2], empty["input_ids"].shape)
        # the dynamic shapes of the main inputs also describe both other sets
        self.assertEqual(set(data.dynamic_shapes), set(b1))

    def test_batch1_without_cache_task(self):
        data = get_untrained_model_with_inputs("google-bert/bert-base-uncased")
        self.assertEqual(data.task, "fill-mask")
        self.assertNotIn("inputs_empty_cache", data)
        self.assertIsNone(data.inputs_empty_cache)
        b1 = data["inputs_batch1"]
        self.assertEqual({t.shape[0] for t in b1.values()}, {1})
        with torch.no_grad():
            data.model(**b1)

    def test_subfolder_of_a_local_folder(self):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "text_encoder"))
            with open(os.path.join(tmp, "text_encoder", "config.json"), "w") as f:
                json.dump(load_config_dict("google-bert/bert-base-uncased"), f)
            data = get_untrained_model_with_inputs(tmp, subfolder="text_encoder")
            self.assertEqual(data.task, "fill-mask")
            self.assertEqual(type(data.model).__name__, "BertForMaskedLM")
            self.assertEqual(data.model_id, tmp)
            with self.assertRaisesRegex(FileNotFoundError, "subfolder='unet'"):
                get_untrained_model_with_inputs(tmp, subfolder="unet")
            with self.assertRaisesRegex(ValueError, "non empty relative path"):
                get_untrained_model_with_inputs(tmp, subfolder="/abs")
            with self.assertRaisesRegex(ValueError, "non empty relative path"):
                get_untrained_model_with_inputs(tmp, subfolder="")

    def test_subfolder_errors(self):
        with self.assertRaisesRegex(ValueError, "shipped model id"):
            get_untrained_model_with_inputs("arnir0/Tiny-LLM", subfolder="text_encoder")
        with self.assertRaisesRegex(ValueError, "not one"):
            get_untrained_model_with_inputs("nobody/nothing", subfolder="text_encoder")
        with self.assertRaisesRegex(ValueError, "cannot be used with config"):
            get_untrained_model_with_inputs(
                "x", config=load_config_dict("arnir0/Tiny-LLM"), subfolder="a"
            )

    def test_every_text_generation_id_runs_batch1_and_empty_cache(self):
        from onnx_diagnostic.helpers.torch_helper import torch_deepcopy

        for model_id in shipped_model_ids():
            if _missing_class(model_id) or load_config_dict(model_id).get("model_type") is None:
                continue
            with self.subTest(model_id=model_id):
                data = get_untrained_model_with_inputs(model_id)
                if data.task != "text-generation":
                    continue
                with torch.no_grad():
                    for key in ("inputs_batch1", "inputs_empty_cache"):
                        out = data.model(**torch_deepcopy(data[key]))
                        self.assertEqual(out.logits.shape[:2], data[key]["input_ids"].shape)


if __name__ == "__main__":
    unittest.main(verbosity=2)
