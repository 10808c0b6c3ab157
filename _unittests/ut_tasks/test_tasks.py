import copy
import unittest

import torch
import transformers

from onnx_diagnostic.cache_helpers import get_cache_layer_types, make_dynamic_cache
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.tasks import (
    TaskInputError,
    check_inputs2,
    get_task_module,
    random_input_kwargs,
    reduce_model_config,
    supported_tasks,
)
from onnx_diagnostic.tasks._reduce import (
    complete_layer_overrides,
    merge_overrides,
    pick_layers,
    reduce_rope,
    reduce_vocabulary,
)
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()


def _llama(**kwargs):
    return transformers.LlamaConfig(
        **{
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 100,
            **kwargs,
        }
    )


def _gemma2():
    return transformers.Gemma2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=100,
        sliding_window=40,
        layer_types=["sliding_attention", "full_attention"],
    )


class TestRegistry(ExtTestCase):
    def test_supported_tasks(self):
        self.assertEqual(
            supported_tasks(),
            [
                "automatic-speech-recognition",
                "feature-extraction",
                "fill-mask",
                "image-classification",
                "image-text-to-text",
                "mask-generation",
                "object-detection",
                "sentence-similarity",
                "summarization",
                "text-classification",
                "text-generation",
                "text2text-generation",
                "zero-shot-image-classification",
            ],
        )
        for task in supported_tasks():
            mod = get_task_module(task)
            self.assertEqual(mod.__TASK__, task)
            self.assertTrue(callable(mod.get_inputs))
            self.assertIsInstance(mod.AUTO_CLASS, str)

    def test_unknown_task(self):
        with self.assertRaises(TaskInputError) as cm:
            random_input_kwargs(_llama(), "text-generations")
        self.assertIn("'text-generations' is not supported", str(cm.exception))
        with self.assertRaises(TaskInputError):
            get_task_module(None)


class TestTextGeneration(ExtTestCase):
    def test_inputs_run_and_inputs2_differ(self):
        config = _llama()
        model = transformers.LlamaForCausalLM(config).eval()
        kwargs, fct = random_input_kwargs(config, "text-generation")
        self.assertEqual(kwargs["num_key_value_heads"], 2)
        self.assertEqual(kwargs["head_dim"], 8)
        res = fct(model, config, add_second_input=True, **kwargs)
        self.assertEqual(check_inputs2(res["inputs"], res["inputs2"], res["dynamic_shapes"]), [])
        self.assertNotIn("token_type_ids", res["inputs"])
        for name in ("inputs", "inputs2"):
            out = model(**copy.deepcopy(res[name]))
            self.assertEqual(out.logits.shape[:2], res[name]["input_ids"].shape)

    def test_sliding_layers_follow_layer_types(self):
        config = _gemma2()
        kwargs, fct = random_input_kwargs(config, "text-generation")
        res = fct(None, config, **kwargs)
        cache = res["inputs"][CACHE]
        self.assertEqual(get_cache_layer_types(cache), ["sliding_attention", "full_attention"])
        model = transformers.Gemma2ForCausalLM(config).eval()
        model(**res["inputs"])

    def test_sliding_layers_hold_at_most_a_window(self):
        # full and sliding layers: the sliding layers hold at most sliding_window - 1
        # positions, past the window too, with their own dimension
        config = _gemma2()
        kwargs, fct = random_input_kwargs(config, "text-generation")
        for past, held in ((10, 10), (39, 39), (40, 39), (100, 39)):
            with self.subTest(past=past):
                kwargs["past_length"] = past
                res = fct(None, config, add_second_input=True, **kwargs)
                layers = res["inputs"][CACHE].layers
                self.assertEqual([la.keys.shape[2] for la in layers], [held, past])
                self.assertEqual([la.cumulative_length for la in layers[:1]], [past])
                layers2 = res["inputs2"][CACHE].layers
                self.assertEqual(layers2[1].keys.shape[2], past + 1)
                self.assertEqual(layers2[0].keys.shape[2], min(past + 1, 39))
        ds = res["dynamic_shapes"][CACHE]
        self.assertEqual([d[2] for d in ds], ["sliding_cache_length"] * 2 + ["cache_length"] * 2)
        model = transformers.Gemma2ForCausalLM(config).eval()
        model(**res["inputs"])

    def test_past_length_must_fit_the_window_of_a_sliding_only_cache(self):
        config = _gemma2()
        config.layer_types = ["sliding_attention"] * config.num_hidden_layers
        kwargs, fct = random_input_kwargs(config, "text-generation")
        kwargs["past_length"] = 40
        with self.assertRaises(TaskInputError) as cm:
            fct(None, config, **kwargs)
        self.assertIn("sliding_window=40", str(cm.exception))

    def test_dtype_from_model_or_argument(self):
        config = _llama(num_hidden_layers=1)
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
        kwargs, fct = random_input_kwargs(config, "text-generation")
        res = fct(model, config, **kwargs)
        self.assertEqual(res["inputs"][CACHE].layers[0].keys.dtype, torch.bfloat16)
        res = fct(None, config, dtype=torch.float16, **kwargs)
        self.assertEqual(res["inputs"][CACHE].layers[0].keys.dtype, torch.float16)
        with self.assertRaises(TaskInputError):
            fct(None, config, dtype=torch.int64, **kwargs)

    def test_config_none_needs_every_size(self):
        fct = get_task_module("text-generation").get_inputs
        with self.assertRaises(TaskInputError) as cm:
            fct(None, None)
        self.assertIn("dummy_max_token_id must be given", str(cm.exception))
        res = fct(
            None,
            None,
            dummy_max_token_id=9,
            num_hidden_layers=1,
            num_key_value_heads=1,
            head_dim=4,
            past_length=0,
        )
        self.assertEqual(tuple(res["inputs"][CACHE].layers[0].keys.shape), (2, 1, 0, 4))

    def test_layer_types_length_is_checked(self):
        config = _llama()
        kwargs, fct = random_input_kwargs(config, "text-generation")
        kwargs["layer_types"] = ["full_attention"]
        with self.assertRaises(TaskInputError) as cm:
            fct(None, config, **kwargs)
        self.assertIn("layer_types has 1 elements", str(cm.exception))


class TestOtherTasks(ExtTestCase):
    def _run(self, task, config, model):
        kwargs, fct = random_input_kwargs(config, task)
        res = fct(model, config, add_second_input=True, **kwargs)
        self.assertEqual(check_inputs2(res["inputs"], res["inputs2"], res["dynamic_shapes"]), [])
        model.eval()
        with torch.no_grad():
            for name in ("inputs", "inputs2"):
                model(**copy.deepcopy(res[name]))
        return res

    def test_encoders(self):
        bert = transformers.BertConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=100,
        )
        for task, cls in [
            ("fill-mask", transformers.BertForMaskedLM),
            ("feature-extraction", transformers.BertModel),
            ("sentence-similarity", transformers.BertModel),
            ("text-classification", transformers.BertForSequenceClassification),
        ]:
            with self.subTest(task=task):
                res = self._run(task, bert, cls(bert))
                self.assertIn("token_type_ids", res["inputs"])
        distil = transformers.DistilBertConfig(
            dim=32, hidden_dim=64, n_layers=1, n_heads=2, vocab_size=100
        )
        res = self._run(
            "text-classification", distil, transformers.DistilBertForSequenceClassification(distil)
        )
        self.assertNotIn("token_type_ids", res["inputs"])

    def test_text2text(self):
        config = transformers.T5Config(
            d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, vocab_size=100
        )
        res = self._run(
            "text2text-generation", config, transformers.T5ForConditionalGeneration(config)
        )
        self.assertEqual([len(x) for x in res["dynamic_shapes"][CACHE]], [2, 2], msg="self, cross")

    def test_speech(self):
        config = transformers.WhisperConfig(
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_source_positions=16,
            num_mel_bins=8,
            vocab_size=100,
            pad_token_id=1,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=3,
        )
        res = self._run(
            "automatic-speech-recognition",
            config,
            transformers.WhisperForConditionalGeneration(config),
        )
        self.assertEqual(tuple(res["inputs"]["input_features"].shape), (2, 8, 32))

    def test_images(self):
        config = transformers.ViTConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        )
        res = self._run(
            "image-classification", config, transformers.ViTForImageClassification(config)
        )
        self.assertEqual(tuple(res["inputs2"]["pixel_values"].shape), (3, 3, 32, 32))
        fct = get_task_module("image-classification").get_inputs
        with self.assertRaises(TaskInputError):
            fct(None, None)
        with self.assertRaises(TaskInputError):
            fct(None, config, batch_size=0)

    def test_image_text_to_text_sequence_must_hold_the_image(self):
        over = reduce_model_config(
            {
                "mm_tokens_per_image": 256,
                "image_token_index": 262144,
                "text_config": {
                    "num_hidden_layers": 34,
                    "hidden_size": 2560,
                    "num_attention_heads": 8,
                    "num_key_value_heads": 4,
                    "head_dim": 256,
                    "vocab_size": 262208,
                },
                "vision_config": {"image_size": 896, "patch_size": 14, "hidden_size": 1152},
            },
            "image-text-to-text",
        )
        self.assertEqual(over["mm_tokens_per_image"], 4)
        self.assertEqual(over["image_token_index"], 31999)
        self.assertEqual(over["text_config"]["vocab_size"], 32000)
        self.assertEqual(over["text_config"]["head_dim"], 16)
        config = transformers.Gemma3Config(
            text_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                vocab_size=120,
                layer_types=["sliding_attention", "full_attention"],
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=56,
                patch_size=14,
            ),
            mm_tokens_per_image=4,
            image_token_index=110,
            boi_token_index=108,
            eoi_token_index=109,
        )
        kwargs, fct = random_input_kwargs(config, "image-text-to-text")
        self.assertEqual(kwargs["dummy_max_token_id"], 109)
        kwargs["sequence_length"] = 4
        with self.assertRaises(TaskInputError) as cm:
            fct(None, config, **kwargs)
        self.assertIn("sequence_length must be >= 5", str(cm.exception))
        kwargs["sequence_length"] = 5
        model = transformers.Gemma3ForConditionalGeneration(config).eval()
        res = fct(model, config, add_second_input=True, **kwargs)
        self.assertEqual(int((res["inputs"]["input_ids"] == 110).sum()), 8)
        with torch.no_grad():
            model(**copy.deepcopy(res["inputs2"]))


class TestCheckInputs2(ExtTestCase):
    def test_detects_static_and_inconsistent_dimensions(self):
        x, y = torch.zeros(2, 3), torch.zeros(2, 4)
        ds = {"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}}
        problems = check_inputs2({"x": x, "y": y}, {"x": torch.zeros(3, 4), "y": y}, ds)
        self.assertIn("inputs['y'] dim 0 'batch': same size 2 in both sets", problems)
        self.assertTrue(any("has 3 in inputs" in p for p in problems), problems)

    def test_keys_and_cache_structure(self):
        self.assertIn("keys differ", check_inputs2({"x": 1}, {}, {"x": None})[0])
        cache = make_dynamic_cache([(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))])
        with self.assertRaises(TaskInputError) as cm:
            check_inputs2({"c": cache}, {"c": cache}, {"c": [{0: "batch"}]})
        self.assertIn("inputs['c'] (cache) flattens into 2 tensors", str(cm.exception))
        problems = check_inputs2({"c": cache}, {"c": cache}, {"c": [{2: "cache"}] * 2})
        self.assertEqual(problems[0], "inputs['c'][0] dim 2 'cache': same size 3 in both sets")

    def test_none_and_scalars_are_ignored(self):
        self.assertEqual(
            check_inputs2({"a": None, "b": 1}, {"a": None, "b": 2}, {"a": None, "b": None}), []
        )


class TestReduce(ExtTestCase):
    def test_pick_layers(self):
        d = {"layer_types": ["sliding_attention"] * 5 + ["full_attention"] * 2}
        self.assertEqual(pick_layers(d, 7), [0, 5])
        self.assertEqual(pick_layers(d, 7, 1), [0])
        self.assertEqual(pick_layers({}, 4, 3), [0, 1, 2])

    def test_vocabulary_remap_keeps_ids_distinct(self):
        d = {"vocab_size": 200000, "bos_token_id": 5, "eos_token_id": [199999, 128000]}
        d["text_config"] = {"pad_token_id": 128000}
        over = reduce_vocabulary(d)
        self.assertEqual(over["vocab_size"], 32000)
        self.assertEqual(over["eos_token_id"], [31999, 31998])
        self.assertEqual(over["text_config"], {"pad_token_id": 31998})
        self.assertEqual(reduce_vocabulary({"vocab_size": 1000, "bos_token_id": 5}), {})

    def test_rope_factors(self):
        rope = {"rope_type": "longrope", "long_factor": list(range(48)), "short_factor": [1] * 48}
        over = reduce_rope({"rope_scaling": rope, "partial_rotary_factor": 0.5}, 16)
        self.assertEqual(over["rope_scaling"]["long_factor"], [0, 16, 31, 47])
        self.assertEqual(over["rope_scaling"]["rope_type"], "longrope")
        self.assertEqual(reduce_rope({"rope_scaling": None}, 16), {})

    def test_merge_and_complete(self):
        d = {"a": 1, "sub": {"num_hidden_layers": 3, "layer_types": ["x", "y", "z"]}}
        over = complete_layer_overrides(d, {"sub": {"num_hidden_layers": 2}})
        self.assertEqual(over, {"sub": {"num_hidden_layers": 2, "layer_types": ["x", "y"]}})
        merged = merge_overrides(d, over)
        self.assertEqual(merged["sub"]["layer_types"], ["x", "y"])
        self.assertEqual(d["sub"]["layer_types"], ["x", "y", "z"], msg="not modified")

    def test_complete_more_layers_repeats_the_pattern(self):
        d = {"num_hidden_layers": 2, "layer_types": ["s", "f"], "no_rope_layers": [1, 0]}
        over = complete_layer_overrides(d, {"num_hidden_layers": 5})
        self.assertEqual(over["layer_types"], ["s", "f", "s", "f", "s"])
        self.assertEqual(over["no_rope_layers"], [1, 0, 1, 0, 1])
        # lists given by the caller are kept
        over = complete_layer_overrides(d, {"num_hidden_layers": 3, "layer_types": ["f"] * 3})
        self.assertEqual(over["layer_types"], ["f", "f", "f"])
        self.assertEqual(
            complete_layer_overrides({"num_hidden_layers": 0}, {"num_hidden_layers": 2}),
            {"num_hidden_layers": 2},
        )

    def test_reduce_gqa_mqa_mha(self):
        base = {"hidden_size": 512, "num_attention_heads": 8, "vocab_size": 10}
        for kv, expected in ((8, 4), (2, 2), (1, 1)):
            over = reduce_model_config({**base, "num_key_value_heads": kv}, "text-generation")
            self.assertEqual(over["num_key_value_heads"], expected, msg=f"kv={kv}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
