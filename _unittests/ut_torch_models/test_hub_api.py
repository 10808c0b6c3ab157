import json
import os
import tempfile
import unittest

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.tasks import supported_tasks
from onnx_diagnostic.torch_models.hghub import hub_api
from onnx_diagnostic.torch_models.hghub.hub_api import (
    UnknownModelIdError,
    config_from_dict,
    get_pretrained_config,
    load_config_dict,
    shipped_model_ids,
    task_from_architecture,
    task_from_id,
)

REQUIRED_IDS = """
arnir0/Tiny-LLM microsoft/phi-1_5 microsoft/phi-2 microsoft/Phi-3-mini-4k-instruct
microsoft/Phi-3.5-mini-instruct microsoft/Phi-4-mini-instruct Qwen/Qwen2.5-0.5B-Instruct
Qwen/Qwen2.5-1.5B-Instruct Qwen/Qwen3-0.6B Qwen/Qwen3-1.7B meta-llama/Llama-3.2-1B
meta-llama/Llama-3.2-3B-Instruct meta-llama/Llama-3.1-8B-Instruct
mistralai/Mistral-7B-Instruct-v0.3 google/gemma-2-2b google/gemma-3-1b-it
HuggingFaceTB/SmolLM2-135M HuggingFaceTB/SmolLM2-1.7B-Instruct HuggingFaceTB/SmolLM3-3B
openai-community/gpt2 codellama/CodeLlama-7b-hf tiiuae/falcon-7b google-t5/t5-small
facebook/bart-base openai/whisper-tiny google-bert/bert-base-uncased FacebookAI/roberta-base
sentence-transformers/all-MiniLM-L6-v2 google/vit-base-patch16-224
""".split()


class TestShippedConfigs(ExtTestCase):
    def test_at_least_30_ids_ship_with_every_task(self):
        ids = shipped_model_ids()
        self.assertGreaterEqual(len(ids), 30)
        for mid in REQUIRED_IDS:
            self.assertIn(mid, ids)
        tasks = {task_from_id(mid) for mid in ids}
        # the vision tasks and summarization have no shipped configuration yet
        no_config = {
            "mask-generation",
            "object-detection",
            "summarization",
            "zero-shot-image-classification",
        }
        self.assertEqual(tasks, set(supported_tasks()) - no_config)
        self.assertEqual(len(shipped_model_ids("image-text-to-text")), 1)
        self.assertEqual(shipped_model_ids("no-such-task"), [])

    def test_every_file_is_named_after_its_id(self):
        folder = os.path.join(os.path.dirname(hub_api.__file__), "configs")
        for name in sorted(os.listdir(folder)):
            with self.subTest(name=name):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    data = json.load(f)
                self.assertEqual(sorted(data), ["config", "model_id", "task"])
                self.assertEqual(name, data["model_id"].replace("/", "__") + ".json")
                self.assertIn(data["task"], supported_tasks())
                self.assertIn("model_type", data["config"])
                self.assertTrue(data["config"]["architectures"])

    def test_every_config_loads_with_the_installed_transformers(self):
        import transformers

        for mid in shipped_model_ids():
            with self.subTest(model_id=mid):
                model_type = load_config_dict(mid)["model_type"]
                if model_type not in transformers.CONFIG_MAPPING:
                    self.skipTest(
                        f"transformers {transformers.__version__} has no {model_type!r} ({mid})"
                    )
                config = get_pretrained_config(mid)
                self.assertEqual(config.model_type, load_config_dict(mid)["model_type"])

    def test_published_facts(self):
        c = get_pretrained_config("meta-llama/Llama-3.2-1B")
        self.assertEqual(
            (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads),
            (2048, 16, 32, 8),
        )
        self.assertEqual((c.vocab_size, c.head_dim, c.tie_word_embeddings), (128256, 64, True))
        c = get_pretrained_config("google/gemma-3-1b-it")
        self.assertEqual(c.layer_types[:6], ["sliding_attention"] * 5 + ["full_attention"])
        self.assertEqual((c.sliding_window, c.head_dim, c.num_key_value_heads), (512, 256, 1))
        c = get_pretrained_config("microsoft/Phi-3.5-mini-instruct")
        rope = getattr(c, "rope_parameters", None) or c.rope_scaling
        self.assertEqual(len(rope["long_factor"]), 48)
        self.assertEqual(len(rope["short_factor"]), 48)
        c = get_pretrained_config("tiiuae/falcon-7b")
        self.assertTrue(c.multi_query)
        self.assertEqual((c.hidden_size, c.num_attention_heads), (4544, 71))
        c = get_pretrained_config("openai-community/gpt2")
        self.assertEqual((c.n_embd, c.n_layer, c.vocab_size), (768, 12, 50257))

    def test_load_config_dict_returns_a_copy(self):
        d = load_config_dict("arnir0/Tiny-LLM")
        d["hidden_size"] = 1
        self.assertEqual(load_config_dict("arnir0/Tiny-LLM")["hidden_size"], 192)


class TestHubApi(ExtTestCase):
    def test_get_pretrained_config_overrides(self):
        c = get_pretrained_config("arnir0/Tiny-LLM", num_hidden_layers=3)
        self.assertEqual(c.num_hidden_layers, 3)
        self.assertEqual(type(c).__name__, "LlamaConfig")

    def test_task_from_id(self):
        self.assertEqual(task_from_id("arnir0/Tiny-LLM"), "text-generation")
        self.assertEqual(task_from_id("google-t5/t5-small"), "text2text-generation")
        self.assertEqual(task_from_id("openai/whisper-tiny"), "automatic-speech-recognition")
        self.assertEqual(task_from_id("google/gemma-3-4b-it"), "image-text-to-text")

    def test_task_from_architecture(self):
        for arch, model_type, task in [
            ("LlamaForCausalLM", None, "text-generation"),
            ("GPT2LMHeadModel", None, "text-generation"),
            ("BertForMaskedLM", None, "fill-mask"),
            ("BertModel", None, "feature-extraction"),
            ("ViTForImageClassification", None, "image-classification"),
            ("T5ForConditionalGeneration", "t5", "text2text-generation"),
            ("WhisperForConditionalGeneration", "whisper", "automatic-speech-recognition"),
            ("Gemma3ForConditionalGeneration", "gemma3", "image-text-to-text"),
        ]:
            self.assertEqual(task_from_architecture(arch, model_type), task, msg=arch)
        with self.assertRaises(ValueError) as cm:
            task_from_architecture("Something")
        self.assertIn("'Something'", str(cm.exception))

    def test_unknown_id_says_how_to_pass_a_config(self):
        with self.assertRaises(UnknownModelIdError) as cm:
            get_pretrained_config("someone/unknown-model")
        msg = str(cm.exception)
        self.assertIn("'someone/unknown-model' is not shipped", msg)
        self.assertIn("config=", msg)
        self.assertIn("config.json", msg)
        self.assertIsInstance(cm.exception, KeyError)

    def test_use_hub_is_refused_offline(self):
        old = os.environ.get("HF_HUB_OFFLINE", None)
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            with self.assertRaises(UnknownModelIdError):
                load_config_dict("someone/unknown-model", use_hub=True)
            with self.assertRaises(UnknownModelIdError):
                task_from_id("someone/unknown-model", use_hub=True)
        finally:
            if old is None:
                del os.environ["HF_HUB_OFFLINE"]
            else:
                os.environ["HF_HUB_OFFLINE"] = old

    def test_bad_model_id(self):
        for bad in (None, "", 3):
            with self.assertRaises(TypeError):
                load_config_dict(bad)

    def test_local_config_file_and_folder(self):
        d = load_config_dict("openai-community/gpt2")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "config.json")
            with open(path, "w") as f:
                json.dump(d, f)
            for name in (path, tmp):
                with self.subTest(name=name):
                    self.assertEqual(get_pretrained_config(name).n_embd, 768)
                    self.assertEqual(task_from_id(name), "text-generation")

    def test_config_from_dict_errors(self):
        with self.assertRaises(ValueError) as cm:
            config_from_dict({"hidden_size": 3})
        self.assertIn("no 'model_type'", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            config_from_dict({"model_type": "no-such-model"})
        self.assertIn("'no-such-model' is unknown", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
