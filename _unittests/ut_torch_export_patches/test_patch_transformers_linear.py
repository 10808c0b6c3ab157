"""The patch of the linear attention cache layers: parity, inputs left unchanged, restore."""

import copy
import doctest
import unittest

import torch
import transformers

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.helpers.compat import cache_class
from onnx_diagnostic.tasks import random_input_kwargs
from onnx_diagnostic.tasks._reduce import merge_overrides, reduce_decoder_config
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.patches import patch_transformers_linear
from onnx_diagnostic.torch_export_patches.patches.patch_transformers_linear import (
    PATCH_LINEAR_STATES,
)

LAYER = cache_class("LinearAttentionLayer")


def _qwen3_next():
    d = transformers.Qwen3NextConfig().to_dict()
    d = merge_overrides(d, reduce_decoder_config(d))
    d.update(num_experts=4, num_experts_per_tok=2, vocab_size=1000)
    config = transformers.Qwen3NextConfig.from_dict(d)
    torch.manual_seed(0)
    model = transformers.Qwen3NextForCausalLM(config).eval()
    kwargs, fct = random_input_kwargs(config, "text-generation")
    return model, fct(model, config, add_second_input=True, **kwargs)


def _states(cache):
    """The state tensors themselves (not copies)."""
    return [
        t
        for layer in cache.layers
        if isinstance(layer, LAYER)
        for d in (layer.conv_states, layer.recurrent_states)
        for t in d.values()
        if t is not None
    ]


class TestPatchLinearDoc(ExtTestCase):
    def test_doctest(self):
        res = doctest.testmod(patch_transformers_linear, verbose=False)
        self.assertEqual(res.failed, 0)

    @unittest.skipIf(LAYER is not None, "checked where transformers has no linear layers")
    def test_no_target(self):
        self.assertEqual(PATCH_LINEAR_STATES.targets(), [])


@unittest.skipIf(LAYER is None, "LinearAttentionLayer (transformers>=5)")
class TestPatchLinearStates(ExtTestCase):
    def test_parity_and_input_states_unchanged(self):
        model, data = _qwen3_next()
        name = next(k for k in data["inputs"] if k in ("cache", "past_key_values"))
        inputs_original = copy.deepcopy(data["inputs"])
        inputs_patched = copy.deepcopy(data["inputs"])
        tensors_original = _states(inputs_original[name])
        tensors_patched = _states(inputs_patched[name])
        values = [t.clone() for t in tensors_patched]
        self.assertGreater(len(values), 0)
        with torch.no_grad():
            expected = model(**inputs_original)
            with torch_export_patches(patch_transformers=True):
                got = model(**inputs_patched)
        # the other patches (experts, rotary) may change the last bits
        self.assertLess(max_diff(expected, got)["abs"], 1e-5)
        # the original writes the new states into the tensors of the input cache,
        # the patched layers leave them as they were and keep new ones in the cache
        self.assertTrue(any(not torch.equal(a, b) for a, b in zip(values, tensors_original)))
        for a, b in zip(values, tensors_patched):
            self.assertTrue(torch.equal(a, b))
        self.assertTrue(
            any(a is not b for a, b in zip(tensors_patched, _states(inputs_patched[name])))
        )

    def test_restored_after_exit_and_after_an_exception(self):
        targets = PATCH_LINEAR_STATES.targets()
        originals = {(owner, name): vars(owner)[name] for owner, name in targets}
        self.assertEqual(
            sorted(name for _, name in originals),
            [
                "get_conv_state",
                "get_recurrent_state",
                "update_conv_state",
                "update_recurrent_state",
            ],
        )
        with torch_export_patches(patch_transformers=True):
            for (owner, name), fct in originals.items():
                self.assertIsNot(vars(owner)[name], fct)
        for (owner, name), fct in originals.items():
            self.assertIs(vars(owner)[name], fct)
        with self.assertRaises(ZeroDivisionError):
            with torch_export_patches(patch_transformers=True):
                _ = 1 / 0
        for (owner, name), fct in originals.items():
            self.assertIs(vars(owner)[name], fct)

    def test_custom_export_has_no_extra_output(self):
        from onnx_diagnostic.export.api import onnx_feeds, to_onnx
        from onnx_diagnostic.helpers.rt_helper import make_session, run_session

        model, data = _qwen3_next()
        with torch.no_grad():
            expected = model(**copy.deepcopy(data["inputs2"]))
        with torch_export_patches(patch_transformers=True):
            onx = to_onnx(
                model,
                kwargs=copy.deepcopy(data["inputs"]),
                dynamic_shapes=data["dynamic_shapes"],
                exporter="custom",
            )
        self.assertEqual(onx.graph.output[0].name, "logits")
        got = run_session(make_session(onx), onnx_feeds(model, kwargs=data["inputs2"]))
        self.assertLess(max_diff(expected, got)["abs"], 1e-4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
