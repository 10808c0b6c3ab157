import unittest

import transformers

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.config_helper import (
    check_hasattr,
    config_class_from_architecture,
    pick,
    update_config,
)


class TestUpdateConfig(ExtTestCase):
    def test_flat_values(self):
        config = transformers.LlamaConfig(num_hidden_layers=4, hidden_size=64)
        mkwargs = {"num_hidden_layers": 1, "new_attribute": "x"}
        update_config(config, mkwargs)
        self.assertEqual(config.num_hidden_layers, 1)
        self.assertEqual(config.new_attribute, "x")
        self.assertEqual(config.hidden_size, 64)
        self.assertEqual(mkwargs, {"num_hidden_layers": 1, "new_attribute": "x"})

    def test_attn_implementation(self):
        config = transformers.LlamaConfig()
        update_config(config, {"attn_implementation": "sdpa"})
        self.assertEqual(config._attn_implementation, "sdpa")
        update_config(config, {"attn_implementation": "eager"})
        self.assertEqual(config._attn_implementation, "eager")

    def test_nested_config(self):
        config = transformers.AutoConfig.for_model("gemma3")
        vision = config.vision_config.num_hidden_layers
        update_config(config, {"text_config": {"num_hidden_layers": 1, "head_dim": 8}})
        self.assertEqual(config.text_config.num_hidden_layers, 1)
        self.assertEqual(config.text_config.head_dim, 8)
        self.assertEqual(config.vision_config.num_hidden_layers, vision)

    def test_nested_dict_is_merged_into_a_copy(self):
        config = transformers.LlamaConfig()
        original = {"a": 1, "b": 2}
        config.my_dict = original
        update_config(config, {"my_dict": {"b": 3, "c": 4}})
        self.assertEqual(config.my_dict, {"a": 1, "b": 3, "c": 4})
        self.assertEqual(original, {"a": 1, "b": 2})

    def test_dict_for_a_missing_or_none_attribute(self):
        config = transformers.LlamaConfig()
        config.none_attr = None
        update_config(config, {"none_attr": {"x": 1}, "missing_attr": {"y": 2}})
        self.assertEqual(config.none_attr, {"x": 1})
        self.assertEqual(config.missing_attr, {"y": 2})

    def test_dict_config(self):
        config = {"a": 1, "sub": {"b": 2}}
        update_config(config, {"a": 5, "sub": {"c": 3}, "attn_implementation": "eager"})
        self.assertEqual(config, {"a": 5, "sub": {"b": 2, "c": 3}, "attn_implementation": "eager"})

    def test_empty_update(self):
        config = transformers.LlamaConfig(num_hidden_layers=3)
        update_config(config, {})
        self.assertEqual(config.num_hidden_layers, 3)

    def test_bad_input(self):
        config = transformers.LlamaConfig()
        self.assertRaise(lambda: update_config(None, {}), TypeError, "config must be")
        self.assertRaise(lambda: update_config(config, [("a", 1)]), TypeError, "mkwargs")
        self.assertRaise(lambda: update_config(config, {1: 2}), TypeError, "key 1")
        self.assertRaise(
            lambda: update_config(config, {"hidden_size": {"x": 1}}),
            TypeError,
            "config.hidden_size is a int",
        )
        cfg = transformers.AutoConfig.for_model("gemma3")
        self.assertRaise(
            lambda: update_config(cfg, {"text_config": {"hidden_size": {"x": 1}}}),
            TypeError,
            "config.text_config.hidden_size",
        )


class TestConfigClassFromArchitecture(ExtTestCase):
    def test_known_architectures(self):
        for arch, name in [
            ("LlamaForCausalLM", "LlamaConfig"),
            ("Qwen2ForCausalLM", "Qwen2Config"),
            ("T5ForConditionalGeneration", "T5Config"),
            ("BertModel", "BertConfig"),
        ]:
            with self.subTest(arch=arch):
                self.assertEqual(config_class_from_architecture(arch).__name__, name)
                self.assertIs(
                    config_class_from_architecture(arch, exc=True),
                    getattr(transformers, name),
                )

    def test_unknown(self):
        self.assertIsNone(config_class_from_architecture("NoSuchModelForCausalLM"))
        self.assertIsNone(config_class_from_architecture("PreTrainedModel"))
        self.assertRaise(
            lambda: config_class_from_architecture("NoSuchModelForCausalLM", exc=True),
            ValueError,
            "arch='NoSuchModelForCausalLM'",
        )
        self.assertRaise(
            lambda: config_class_from_architecture("AutoModel", exc=True), ValueError, "AutoModel"
        )

    def test_bad_input(self):
        self.assertRaise(lambda: config_class_from_architecture(""), TypeError, "arch")
        self.assertRaise(lambda: config_class_from_architecture(None), TypeError, "arch")


class TestSmallHelpers(ExtTestCase):
    def test_check_hasattr(self):
        config = transformers.LlamaConfig()
        check_hasattr(config, "hidden_size", ("no_such", "vocab_size"), (("a", "b"), "head_dim"))
        self.assertRaise(lambda: check_hasattr(config, "no_such"), AttributeError, "'no_such'")
        self.assertRaise(
            lambda: check_hasattr(config, ("x", ("hidden_size", "y"))), AttributeError, "none of"
        )
        self.assertRaise(lambda: check_hasattr(config, 3), TypeError)

    def test_pick(self):
        config = transformers.LlamaConfig(hidden_size=32)
        self.assertEqual(pick(config, "hidden_size", 0), 32)
        self.assertEqual(pick(config, "no_such", 7), 7)
        self.assertEqual(pick({}, "a", 1), 1)
        self.assertEqual(pick({"a": 2}, "a", 1), 2)

    def test_examples_in_docstrings_run(self):
        self.assertDocstringExamples("onnx_diagnostic.helpers.config_helper")


if __name__ == "__main__":
    unittest.main(verbosity=2)
