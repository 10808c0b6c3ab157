import copy
import inspect
import unittest

import torch
import torch.utils._pytree as pytree

from onnx_diagnostic.cache_helpers import make_dynamic_cache
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import compat, string_type
from onnx_diagnostic.helpers.compat import (
    CACHE_ARG_NAMES,
    CacheAliasDict,
    cache_alias_dict,
    cache_arg_name,
    cache_name_of_inputs,
    declared_cache_arg_name,
    default_cache_arg_name,
    forward_parameters,
    output_cache_field,
    rename_cache_argument,
)


def _pair(*shape):
    return torch.rand(*shape), torch.rand(*shape)


class TestCacheArgName(ExtTestCase):
    def test_default_follows_llama_signature(self):
        from transformers.models.llama.modeling_llama import LlamaForCausalLM

        params = inspect.signature(LlamaForCausalLM.forward).parameters
        self.assertIn(default_cache_arg_name(), params)
        self.assertIn(default_cache_arg_name(), CACHE_ARG_NAMES)
        if compat.version_at_least(compat.transformers_version(), "5.24"):
            self.assertEqual(default_cache_arg_name(), "cache")
        else:
            self.assertEqual(default_cache_arg_name(), "past_key_values")

    def test_declared_by_module_function_and_signature(self):
        class Old(torch.nn.Module):
            def forward(self, input_ids, past_key_values=None):
                return input_ids

        class New(torch.nn.Module):
            def forward(self, input_ids, cache=None, **kwargs):
                return input_ids

        self.assertEqual(cache_arg_name(Old()), "past_key_values")
        self.assertEqual(cache_arg_name(New()), "cache")
        self.assertEqual(declared_cache_arg_name(inspect.signature(New().forward)), "cache")
        self.assertEqual(declared_cache_arg_name(lambda x, past_key_values: x), "past_key_values")

    def test_undeclared_falls_back_to_installed_name(self):
        def forward(x, **kwargs):
            return x

        self.assertIsNone(declared_cache_arg_name(forward))
        self.assertEqual(cache_arg_name(forward), default_cache_arg_name())
        self.assertEqual(cache_arg_name(None), default_cache_arg_name())
        # not callable, no signature
        self.assertIsNone(declared_cache_arg_name(3))
        self.assertIsNone(declared_cache_arg_name(len))

    def test_model_built_by_the_library_declares_the_installed_name(self):
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        data = get_tiny_llm()
        self.assertEqual(cache_arg_name(data.model), default_cache_arg_name())
        self.assertIn(default_cache_arg_name(), data.inputs)
        self.assertIn(default_cache_arg_name(), data.dynamic_shapes)

    def test_output_field(self):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        out = CausalLMOutputWithPast(logits=torch.zeros(1), **{output_cache_field(): 1})
        self.assertEqual(list(out.keys()), ["logits", output_cache_field()])
        self.assertEqual(output_cache_field(), default_cache_arg_name())


class TestCacheNameOfInputs(ExtTestCase):
    def test_declared_name_wins(self):
        sig = inspect.signature(lambda input_ids, past_key_values=None, **kw: None)
        self.assertEqual(cache_name_of_inputs(sig, [{"cache": 1}]), "past_key_values")

    def test_first_name_met_when_undeclared(self):
        def forward(x, **kwargs):
            return x

        sets = [{"x": 1}, {"cache": 2}, {"past_key_values": 3}]
        self.assertEqual(cache_name_of_inputs(forward, sets), "cache")
        self.assertIsNone(cache_name_of_inputs(forward, [{"x": 1}]))
        self.assertIsNone(cache_name_of_inputs(forward, []))

    def test_forward_parameters(self):
        class M(torch.nn.Module):
            def forward(self, x, cache=None):
                return x

        self.assertEqual(list(forward_parameters(M())), ["x", "cache"])
        self.assertEqual(list(forward_parameters(inspect.signature(M().forward))), ["x", "cache"])
        self.assertIsNone(forward_parameters(None))
        self.assertIsNone(forward_parameters(3))

    def test_docstring_examples(self):
        self.assertDocstringExamples(compat)


class TestRenameCacheArgument(ExtTestCase):
    def test_renames_in_place_of_the_key(self):
        got = rename_cache_argument({"a": 1, "past_key_values": 2, "b": 3}, "cache")
        self.assertEqual(list(got), ["a", "cache", "b"])
        self.assertEqual(got["cache"], 2)

    def test_returns_the_same_object_when_nothing_changes(self):
        d = {"a": 1, "cache": 2}
        self.assertIs(rename_cache_argument(d, "cache"), d)
        e = {"a": 1}
        self.assertIs(rename_cache_argument(e, "cache"), e)
        empty = {}
        self.assertIs(rename_cache_argument(empty, "cache"), empty)
        self.assertIsNone(rename_cache_argument(None, "cache"))
        t = ({0: "batch"},)
        self.assertIs(rename_cache_argument(t, "cache"), t)

    def test_input_is_not_modified(self):
        d = {"past_key_values": 2}
        rename_cache_argument(d, "cache")
        self.assertEqual(d, {"past_key_values": 2})

    def test_both_names_is_an_error_naming_the_argument(self):
        with self.assertRaises(ValueError) as cm:
            rename_cache_argument({"cache": 1, "past_key_values": 2}, "cache", "dynamic_shapes")
        msg = str(cm.exception)
        self.assertIn("dynamic_shapes", msg)
        self.assertIn("'cache'", msg)
        self.assertIn("'past_key_values'", msg)


class TestCacheAliasDict(ExtTestCase):
    def test_other_name_reads_and_writes_the_stored_key(self):
        cache = make_dynamic_cache([_pair(1, 2, 3, 4)])
        other = "past_key_values" if default_cache_arg_name() == "cache" else "cache"
        inputs = cache_alias_dict({"input_ids": torch.zeros(1, 2), default_cache_arg_name(): cache})
        self.assertIs(inputs[other], cache)
        self.assertIn(other, inputs)
        self.assertIs(inputs.get(other), cache)
        self.assertEqual(list(inputs), ["input_ids", default_cache_arg_name()])
        inputs[other] = 5
        self.assertEqual(inputs[default_cache_arg_name()], 5)
        self.assertNotIn(other, list(inputs.keys()))
        self.assertEqual(inputs.pop(other), 5)
        self.assertNotIn(default_cache_arg_name(), inputs)
        # without a cache, names are plain keys
        self.assertNotIn(other, inputs)
        self.assertIsNone(inputs.get(other))
        inputs[other] = 6
        self.assertEqual(list(inputs), ["input_ids", other])

    def test_other_keys_behave_like_a_dict(self):
        d = CacheAliasDict(x=1)
        with self.assertRaises(KeyError):
            d["y"]
        self.assertEqual(d.setdefault("y", 2), 2)
        del d["x"]
        self.assertEqual(dict(d), {"y": 2})
        self.assertIsInstance(d.copy(), CacheAliasDict)
        self.assertEqual(CacheAliasDict(), {})

    def test_pytree_deepcopy_and_string_type(self):
        cache = make_dynamic_cache([_pair(1, 2, 3, 4)])
        inputs = cache_alias_dict({"x": torch.zeros(2), "past_key_values": cache})
        leaves, spec = pytree.tree_flatten(inputs)
        self.assertEqual(len(leaves), 3)
        back = pytree.tree_unflatten(leaves, spec)
        self.assertIsInstance(back, CacheAliasDict)
        self.assertIs(back["cache"], back["past_key_values"])
        copied = copy.deepcopy(inputs)
        self.assertIsInstance(copied, CacheAliasDict)
        self.assertIsNot(copied["x"], inputs["x"])
        self.assertEqual(
            string_type(inputs, with_shape=True),
            "dict(x:T1s2,past_key_values:DynamicCache(key_cache=#1[T1s1x2x3x4], "
            "value_cache=#1[T1s1x2x3x4]))",
        )

    def test_model_called_with_the_dict(self):
        class M(torch.nn.Module):
            def forward(self, x, cache=None):
                return x + cache

        inputs = cache_alias_dict({"x": torch.ones(2), "cache": torch.ones(2)})
        self.assertEqualArray(M()(**inputs), torch.full((2,), 2.0))
        ep = torch.export.export(M(), (), kwargs=inputs, strict=False)
        self.assertEqualArray(ep.module()(**inputs), torch.full((2,), 2.0))


if __name__ == "__main__":
    unittest.main(verbosity=2)
