"""
Models with sliding-window layers next to full attention layers (gemma2, gemma3 from their
configurations, qwen2 with use_sliding_window, cohere2, gpt_oss from small ones) exported by
both exporters, then run by onnx_generate well past the window: the tokens must be those of
transformers' generate. The window is reduced to 8 so that 3 windows are 24 tokens.
"""

import os
import tempfile
import unittest

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.compat import CACHE_ARG_NAMES as CACHE_NAMES
from onnx_diagnostic.helpers.rt_helper import make_session, onnx_generate

WINDOW = 8


def _save(model, data: dict, exporter: str, filename: str) -> None:
    """Exports ``model`` on the inputs of ``data`` with the patches into ``filename``."""
    from onnx_diagnostic.export.api import to_onnx
    from onnx_diagnostic.torch_export_patches import torch_export_patches

    with torch_export_patches(patch_transformers=True):
        to_onnx(
            model,
            (),
            kwargs=data["inputs"],
            dynamic_shapes=data["dynamic_shapes"],
            filename=filename,
            exporter=exporter,
        )


def _export(model_id: str, exporter: str, folder: str, window: int = WINDOW):
    from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs

    torch.manual_seed(0)
    data = get_untrained_model_with_inputs(model_id, model_kwargs=dict(sliding_window=window))
    model = data["model"]
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    filename = os.path.join(folder, f"{model_id.replace('/', '_')}_{exporter}.onnx")
    _save(model, data, exporter, filename)
    return model, data, filename


#: small configurations of other families with sliding layers next to full layers (the
#: configurations of the hub are used for gemma2 and gemma3)
_SMALL = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
    sliding_window=WINDOW,
    num_hidden_layers=2,
)
CONFIGS = {
    "qwen2": dict(
        use_sliding_window=True,
        max_window_layers=1,
        layer_types=["full_attention", "sliding_attention"],
    ),
    "cohere2": dict(layer_types=["sliding_attention", "full_attention"]),
    "gpt_oss": dict(
        layer_types=["sliding_attention", "full_attention"],
        num_local_experts=4,
        num_experts_per_tok=2,
    ),
}


def _small_model(family: str, **kwargs):
    """A small untrained model of ``family`` (:data:`CONFIGS`) and its inputs."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from onnx_diagnostic.tasks import random_input_kwargs

    config = AutoConfig.for_model(family, **_SMALL, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    input_kwargs, fct = random_input_kwargs(config, "text-generation")
    data = fct(model, config, **input_kwargs)
    data["configuration"] = config
    data["past_length"] = input_kwargs["past_length"]
    return model, data


def _export_config(family: str, exporter: str, folder: str):
    """Exports a small untrained model of ``family`` (:data:`CONFIGS`)."""
    model, data = _small_model(family, **CONFIGS[family])
    filename = os.path.join(folder, f"{family}_{exporter}.onnx")
    _save(model, data, exporter, filename)
    return model, data, filename


class _SlidingWindowGeneration:
    model_id = ""
    family = ""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.exported = {}
        for exporter in ("custom", "onnx-dynamo"):
            if cls.family:
                model, data, filename = _export_config(cls.family, exporter, cls.tmp.name)
            else:
                model, data, filename = _export(cls.model_id, exporter, cls.tmp.name)
            cls.exported[exporter] = make_session(filename)
        cls.model, cls.data = model, data
        cls.vocab = model.config.vocab_size

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _expected(self, prompt, n, mask=None):
        with torch.no_grad():
            return self.model.generate(
                prompt,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )

    def _prompt(self, batch, length, seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(3, self.vocab, (batch, length), generator=gen)

    def test_present_length_of_sliding_layers(self):
        # torch declares window - 1 positions, the first steps have fewer: the declared
        # length says so (onnxruntime would warn at every such step otherwise)
        for exporter, sess in self.exported.items():
            with self.subTest(exporter=exporter):
                shapes = {o.name: o.shape for o in sess.get_outputs()}
                dims = [s[2] for n, s in shapes.items() if n.startswith("present.")]
                capped = [d for d in dims if isinstance(d, str) and d.startswith("min(")]
                self.assertIn(f"min(sliding_cache_length+seq_length,{WINDOW - 1})", capped)
                self.assertNotIn(WINDOW - 1, dims)

    def test_inputs_hold_a_window(self):
        layer_types = self.data["configuration"].layer_types
        cache = self.data["inputs"][next(k for k in self.data["inputs"] if k in CACHE_NAMES)]
        lengths = [layer.keys.shape[2] for layer in cache.layers]
        for kind, length in zip(layer_types, lengths):
            self.assertEqual(length, WINDOW - 1 if kind == "sliding_attention" else 30)

    def test_three_windows_batch_1(self):
        prompt = self._prompt(1, 5, 0)
        expected = self._expected(prompt, 3 * WINDOW)
        for exporter, sess in self.exported.items():
            with self.subTest(exporter=exporter):
                got = onnx_generate(sess, prompt, eos_token_id=None, max_new_tokens=3 * WINDOW)
                self.assertEqualArray(expected, got)

    def test_prefill_longer_than_the_window_left_padding(self):
        prompt = self._prompt(2, 2 * WINDOW + 3, 1)
        mask = torch.ones_like(prompt)
        mask[1, :4] = 0
        prompt[1, :4] = 0
        expected = self._expected(prompt, 3 * WINDOW, mask)
        for exporter, sess in self.exported.items():
            with self.subTest(exporter=exporter):
                got = onnx_generate(
                    sess, prompt, attention_mask=mask, eos_token_id=None, max_new_tokens=3 * WINDOW
                )
                self.assertEqualArray(expected, got)

    def test_present_of_sliding_layers_keeps_the_window(self):
        prompt = self._prompt(1, 3, 2)
        layer_types = self.data["configuration"].layer_types
        for exporter, sess in self.exported.items():
            with self.subTest(exporter=exporter):
                _, _, feeds = onnx_generate(
                    sess, prompt, max_new_tokens=2 * WINDOW, return_session=True
                )
                # the feeds of the last step: the prompt and every token generated but the last
                total = prompt.shape[1] + 2 * WINDOW - 2
                for i, kind in enumerate(layer_types):
                    length = feeds[f"past_key_values.{i}.key"].shape[2]
                    self.assertEqual(
                        length, WINDOW - 1 if kind == "sliding_attention" else total, msg=f"{i}"
                    )


class TestGemma3SlidingWindow(_SlidingWindowGeneration, ExtTestCase):
    model_id = "google/gemma-3-1b-it"


class TestGemma2SlidingWindow(_SlidingWindowGeneration, ExtTestCase):
    model_id = "google/gemma-2-2b"


class TestQwen2SlidingWindow(_SlidingWindowGeneration, ExtTestCase):
    family = "qwen2"


class TestCohere2SlidingWindow(_SlidingWindowGeneration, ExtTestCase):
    family = "cohere2"


class TestGptOssSlidingWindow(_SlidingWindowGeneration, ExtTestCase):
    family = "gpt_oss"


class TestEveryLayerSliding(ExtTestCase):
    """mistral: every layer slides. A cache of sliding layers only does not tell how many
    tokens were seen (the masks need it past the window): the inputs get a past shorter than
    the window, their cache keeps every position, the export is exact at every length."""

    @classmethod
    def setUpClass(cls):
        cls.model, cls.data = _small_model("mistral")
        cls.past_length = cls.data["past_length"]
        cls.tmp = tempfile.TemporaryDirectory()
        cls.sessions = {}
        for exporter in ("custom", "onnx-dynamo"):
            filename = os.path.join(cls.tmp.name, f"mistral_{exporter}.onnx")
            _save(cls.model, cls.data, exporter, filename)
            cls.sessions[exporter] = make_session(filename)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_inputs_are_shorter_than_the_window(self):
        self.assertGreaterEqual(self.past_length, WINDOW)
        inputs = self.data["inputs"]
        cache = inputs[next(k for k in inputs if k in CACHE_NAMES)]
        self.assertIn("attention_mask", inputs)
        for layer in cache.layers:
            self.assertLess(layer.keys.shape[2], WINDOW - 1)
        ds = self.data["dynamic_shapes"][next(k for k in inputs if k in CACHE_NAMES)]
        self.assertTrue(all(d.get(2) == "cache_length" for d in ds))

    def test_past_the_window_left_padding(self):
        gen = torch.Generator().manual_seed(1)
        for batch, length in ((1, 5), (2, 2 * WINDOW + 3)):
            prompt = torch.randint(3, 256, (batch, length), generator=gen)
            mask = torch.ones_like(prompt)
            if batch == 2:
                mask[1, :4] = 0
                prompt[1, :4] = 0
            with torch.no_grad():
                expected = self.model.generate(
                    prompt,
                    attention_mask=mask,
                    max_new_tokens=3 * WINDOW,
                    min_new_tokens=3 * WINDOW,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )
            for exporter, sess in self.sessions.items():
                with self.subTest(exporter=exporter, batch=batch):
                    got = onnx_generate(
                        sess,
                        prompt,
                        attention_mask=mask,
                        eos_token_id=None,
                        max_new_tokens=3 * WINDOW,
                    )
                    self.assertEqualArray(expected, got)


class TestExportedBeforeTheWindow(ExtTestCase):
    """The example inputs (30 past positions) are shorter than the window (40): sliding and
    full layers hold as many positions when exported, the model must still be right past the
    window (it must not have merged the two lengths)."""

    def test_generate_past_the_window(self):
        with tempfile.TemporaryDirectory() as tmp:
            model, data, filename = _export("google/gemma-3-1b-it", "custom", tmp, window=40)
            cache = next(v for k, v in data["inputs"].items() if k in CACHE_NAMES)
            self.assertEqual({la.keys.shape[2] for la in cache.layers}, {30})
            sess = make_session(filename)
        gen = torch.Generator().manual_seed(3)
        prompt = torch.randint(3, model.config.vocab_size, (2, 6), generator=gen)
        mask = torch.ones_like(prompt)
        mask[0, :2] = 0
        prompt[0, :2] = 0
        with torch.no_grad():
            expected = model.generate(
                prompt,
                attention_mask=mask,
                max_new_tokens=90,
                min_new_tokens=90,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        got = onnx_generate(sess, prompt, attention_mask=mask, eos_token_id=None, max_new_tokens=90)
        self.assertEqualArray(expected, got)


if __name__ == "__main__":
    unittest.main(verbosity=2)
