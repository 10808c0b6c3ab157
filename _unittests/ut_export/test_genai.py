import json
import os
import tempfile
import unittest

import onnx
import torch
from onnx import TensorProto
from onnx import helper as oh

from onnx_diagnostic.export.genai import (
    GENAI_CONFIG,
    genai_generate,
    make_genai_config,
    write_genai_config,
)
from onnx_diagnostic.ext_test_case import ExtTestCase, requires_onnxruntime_genai


def _graph(
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    layers: int = 2,
    cache_shape: list | None = None,
) -> onnx.ModelProto:
    """A graph with only the inputs and outputs make_genai_config reads."""
    if inputs is None:
        inputs = ["input_ids", "attention_mask", "position_ids"]
        for i in range(layers):
            inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    if outputs is None:
        outputs = ["logits"]
        for i in range(layers):
            outputs += [f"present.{i}.key", f"present.{i}.value"]
    shape = cache_shape or ["batch", "heads", "past", "head_dim"]
    graph = oh.make_graph(
        [],
        "g",
        [
            oh.make_tensor_value_info(
                n, TensorProto.FLOAT, shape if n.startswith("past") else ["batch", "seq"]
            )
            for n in inputs
        ],
        [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
    )
    return oh.make_model(graph)


def _config(**kwargs) -> dict:
    config = dict(
        model_type="llama",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        vocab_size=100,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    )
    config.update(kwargs)
    return config


class TestMakeGenaiConfig(ExtTestCase):
    def test_docstring_examples(self):
        import doctest

        from onnx_diagnostic.export import genai

        res = doctest.testmod(genai, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertGreater(res.attempted, 4)
        self.assertEqual(0, res.failed)

    def test_fields_from_config_and_graph(self):
        cfg = make_genai_config(_config(), _graph(), filename="llm.onnx")
        decoder = cfg["model"]["decoder"]
        self.assertEqual("llm.onnx", decoder["filename"])
        self.assertEqual(16, decoder["head_size"])
        self.assertEqual(
            (4, 2, 2),
            tuple(
                decoder[k]
                for k in ("num_attention_heads", "num_key_value_heads", "num_hidden_layers")
            ),
        )
        self.assertEqual(
            {
                "input_ids": "input_ids",
                "attention_mask": "attention_mask",
                "position_ids": "position_ids",
                "past_key_names": "past_key_values.%d.key",
                "past_value_names": "past_key_values.%d.value",
            },
            decoder["inputs"],
        )
        self.assertEqual("present.%d.value", decoder["outputs"]["present_value_names"])
        self.assertEqual([], decoder["session_options"]["provider_options"])
        self.assertEqual("llama", cfg["model"]["type"])
        # no pad token: the eos token, as the builder of onnxruntime-genai does
        self.assertEqual(
            (1, 2, 2),
            (
                cfg["model"]["bos_token_id"],
                cfg["model"]["eos_token_id"],
                cfg["model"]["pad_token_id"],
            ),
        )
        self.assertEqual(256, cfg["search"]["max_length"])
        self.assertFalse(cfg["search"]["past_present_share_buffer"])
        self.assertFalse(cfg["search"]["do_sample"])

    def test_static_cache_shape_wins_over_config(self):
        cfg = make_genai_config(_config(head_dim=None), _graph(cache_shape=["b", 1, "p", 32]))
        self.assertEqual(
            (1, 32),
            (cfg["model"]["decoder"]["num_key_value_heads"], cfg["model"]["decoder"]["head_size"]),
        )

    def test_options(self):
        cfg = make_genai_config(
            _config(eos_token_id=[7]),
            _graph(layers=1),
            max_length=512,
            provider="cuda",
            model_type="qwen2",
        )
        self.assertEqual(512, cfg["search"]["max_length"])
        self.assertEqual(512, cfg["model"]["context_length"])
        self.assertEqual(
            [{"cuda": {}}], cfg["model"]["decoder"]["session_options"]["provider_options"]
        )
        self.assertEqual("qwen2", cfg["model"]["type"])
        self.assertEqual(7, cfg["model"]["eos_token_id"])
        self.assertEqual(1, cfg["model"]["decoder"]["num_hidden_layers"])

    def test_inputs_without_mask_nor_positions(self):
        inputs = ["input_ids", "past_key_values.0.key", "past_key_values.0.value"]
        cfg = make_genai_config(_config(), _graph(inputs=inputs, layers=1))
        self.assertEqual(
            ["input_ids", "past_key_names", "past_value_names"],
            list(cfg["model"]["decoder"]["inputs"]),
        )

    def test_transformers_config(self):
        from transformers import LlamaConfig

        config = LlamaConfig(**{k: v for k, v in _config().items() if k != "model_type"})
        cfg = make_genai_config(config, _graph())
        self.assertEqual("llama", cfg["model"]["type"])
        self.assertEqual(100, cfg["model"]["vocab_size"])

    def test_bad_arguments(self):
        with self.assertRaisesRegex(TypeError, "config must be"):
            make_genai_config(None, _graph())
        with self.assertRaisesRegex(ValueError, "provider must be"):
            make_genai_config(_config(), _graph(), provider="gpu")
        with self.assertRaisesRegex(ValueError, "filename must be"):
            make_genai_config(_config(), _graph(), filename="")
        with self.assertRaisesRegex(TypeError, "model must be"):
            make_genai_config(_config(), 3)
        with self.assertRaisesRegex(FileNotFoundError, "model='/does/not/exist.onnx'"):
            make_genai_config(_config(), "/does/not/exist.onnx")
        with self.assertRaisesRegex(ValueError, "max_length must be"):
            make_genai_config(_config(), _graph(), max_length=0)
        with self.assertRaisesRegex(ValueError, "config has no \\['vocab_size'\\]"):
            make_genai_config(_config(vocab_size=None), _graph())
        with self.assertRaisesRegex(ValueError, "config has no model_type"):
            make_genai_config(_config(model_type=None), _graph())

    def test_graphs_genai_cannot_run(self):
        with self.assertRaisesRegex(ValueError, "no input 'input_ids'"):
            make_genai_config(
                _config(),
                _graph(
                    inputs=["ids", "past_key_values.0.key", "past_key_values.0.value"], layers=1
                ),
            )
        with self.assertRaisesRegex(ValueError, "no output 'logits'"):
            make_genai_config(_config(), _graph(outputs=["output_0"]))
        # a cache output missing
        with self.assertRaisesRegex(ValueError, "return present.N.key"):
            make_genai_config(_config(), _graph(outputs=["logits", "present.0.key"], layers=1))
        # no cache at all
        with self.assertRaisesRegex(ValueError, "must take past_key_values"):
            make_genai_config(_config(), _graph(inputs=["input_ids"], outputs=["logits"]))
        inputs = ["input_ids", "cache_position", "past_key_values.0.key", "past_key_values.0.value"]
        with self.assertRaisesRegex(ValueError, "cannot feed the inputs \\['cache_position'\\]"):
            make_genai_config(_config(), _graph(inputs=inputs, layers=1))


class TestWriteGenaiConfig(ExtTestCase):
    def test_writes_beside_the_model(self):
        with tempfile.TemporaryDirectory() as folder:
            name = os.path.join(folder, "llm.onnx")
            onnx.save(_graph(), name)
            written = write_genai_config(_config(), name, max_length=64)
            self.assertEqual(os.path.join(folder, GENAI_CONFIG), written)
            with open(written) as f:
                cfg = json.load(f)
            self.assertEqual("llm.onnx", cfg["model"]["decoder"]["filename"])
            self.assertEqual(64, cfg["search"]["max_length"])
            with self.assertRaisesRegex(FileExistsError, "overwrite is False"):
                write_genai_config(_config(), name, overwrite=False)
            write_genai_config(_config(), name, max_length=32)
            with open(written) as f:
                self.assertEqual(32, json.load(f)["search"]["max_length"])

    def test_bad_model_file(self):
        with self.assertRaisesRegex(TypeError, "model_file must be"):
            write_genai_config(_config(), _graph())
        with self.assertRaisesRegex(FileNotFoundError, "model_file='missing.onnx'"):
            write_genai_config(_config(), "missing.onnx")


class TestToOnnxGenaiConfig(ExtTestCase):
    def test_needs_filename_and_config(self):
        from onnx_diagnostic.export.api import to_onnx
        from onnx_diagnostic.helpers.torch_helper import dummy_llm

        model, inputs = dummy_llm()
        with self.assertRaisesRegex(ValueError, "filename must be given"):
            to_onnx(model, inputs, genai_config=True, exporter="custom")
        with tempfile.TemporaryDirectory() as folder:
            with self.assertRaisesRegex(ValueError, "reads model.config"):
                to_onnx(
                    model,
                    inputs,
                    genai_config=True,
                    exporter="custom",
                    filename=os.path.join(folder, "m.onnx"),
                )
            # nothing was exported
            self.assertEqual([], os.listdir(folder))

    @requires_onnxruntime_genai(
        "onnxruntime-genai is not installed (pip install onnx-diagnostic[genai])"
    )
    def test_onnxruntime_genai_runs_the_export(self):
        from onnx_diagnostic.export.api import to_onnx
        from onnx_diagnostic.helpers.rt_helper import onnx_generate
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        data = get_tiny_llm()
        model = data.model
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = None
        prompt = torch.randint(
            3, model.config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(0)
        )
        new = 12
        with torch.no_grad():
            expected = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False
            )
        with tempfile.TemporaryDirectory() as folder:
            filename = os.path.join(folder, "model.onnx")
            with torch_export_patches(patch_transformers=True):
                to_onnx(
                    model,
                    kwargs=data.inputs,
                    dynamic_shapes=data.dynamic_shapes,
                    filename=filename,
                    exporter="custom",
                    genai_config=True,
                )
            self.assertTrue(os.path.exists(os.path.join(folder, GENAI_CONFIG)))
            got = genai_generate(folder, prompt, new)
            # the same file run by onnx_generate
            ours = onnx_generate(filename, prompt, max_new_tokens=new)
        self.assertEqualArray(expected, got)
        self.assertEqualArray(expected, ours)

    @requires_onnxruntime_genai(
        "onnxruntime-genai is not installed (pip install onnx-diagnostic[genai])"
    )
    def test_genai_generate_batch_and_errors(self):
        from onnx_diagnostic.export.api import to_onnx
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        data = get_tiny_llm()
        model = data.model
        model.generation_config.eos_token_id = None
        prompt = torch.randint(
            3, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(2)
        )
        with torch.no_grad():
            expected = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False
            )
        with tempfile.TemporaryDirectory() as folder:
            with torch_export_patches(patch_transformers=True):
                to_onnx(
                    model,
                    kwargs=data.inputs,
                    dynamic_shapes=data.dynamic_shapes,
                    filename=os.path.join(folder, "model.onnx"),
                    exporter="custom",
                    genai_config=True,
                )
            # batch 2, a numpy prompt
            self.assertEqualArray(expected, genai_generate(folder, prompt.numpy(), 6))
            with self.assertRaisesRegex(ValueError, "max_new_tokens must be an int >= 1, got 0"):
                genai_generate(folder, prompt, 0)
            with self.assertRaisesRegex(ValueError, "input_ids must be a tensor of shape"):
                genai_generate(folder, prompt[0], 3)
            with self.assertRaisesRegex(ValueError, "input_ids must be a tensor of shape"):
                genai_generate(folder, prompt[:, :0], 3)

    def test_genai_generate_not_installed(self):
        import sys

        saved = sys.modules.get("onnxruntime_genai", None)
        sys.modules["onnxruntime_genai"] = None  # import fails
        try:
            with self.assertRaisesRegex(ImportError, "onnx-diagnostic\\[genai\\]"):
                genai_generate("folder", torch.tensor([[1, 2]]), 2)
        finally:
            if saved is None:
                del sys.modules["onnxruntime_genai"]
            else:
                sys.modules["onnxruntime_genai"] = saved


if __name__ == "__main__":
    unittest.main(verbosity=2)
