"""
Parity checks of issue 3: inside ``torch_export_patches(patch_transformers=True)``, the
untrained reduced models of the required architectures export with
``torch.export.export(..., strict=False)`` and ``torch.onnx.export(..., dynamo=True)`` with
dynamic batch, sequence and cache length, and both match eager within 1e-4 on a second input
set whose batch, sequence and cache sizes all differ from the export inputs.
"""

import copy
import time
import unittest

import onnxruntime
import torch

from onnx_diagnostic.ext_test_case import ExtTestCase, ignore_warnings
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.helpers.helper import flatten_object
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str
from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()

#: architecture -> shipped model id
ARCHITECTURES = {
    "llama": "arnir0/Tiny-LLM",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.3",
    "qwen2": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen3": "Qwen/Qwen3-0.6B",
    "phi3_longrope": "microsoft/Phi-3.5-mini-instruct",
    "gemma2": "google/gemma-2-2b",
    "gemma3_sliding": "google/gemma-3-1b-it",
    "gpt2": "openai-community/gpt2",
    "smollm3": "HuggingFaceTB/SmolLM3-3B",
}

#: figures of the last run, printed by tearDownClass (export seconds, max abs diff)
FIGURES = {}


def _sizes(inputs):
    cache = inputs[CACHE]
    return (
        inputs["input_ids"].shape[0],
        inputs["input_ids"].shape[1],
        cache.layers[0].keys.shape[2],
    )


class TestPatchParity(ExtTestCase):
    @classmethod
    def tearDownClass(cls):
        for name, row in FIGURES.items():
            print(f"[parity] {name}: {row}")

    @ignore_warnings((UserWarning, FutureWarning, DeprecationWarning))
    def _check(self, name):
        model_id = ARCHITECTURES[name]
        data = get_untrained_model_with_inputs(model_id, add_second_input=True)
        model, inputs, inputs2 = data["model"], data["inputs"], data["inputs2"]
        ds = use_dyn_not_str(data["dynamic_shapes"])
        # inputs2 must differ in every dynamic dimension, or the check proves nothing.
        for a, b in zip(_sizes(inputs), _sizes(inputs2)):
            self.assertNotEqual(a, b)
        expected = model(**copy.deepcopy(inputs2))

        with torch_export_patches(patch_transformers=True):
            begin = time.perf_counter()
            ep = torch.export.export(
                model, (), kwargs=copy.deepcopy(inputs), dynamic_shapes=ds, strict=False
            )
            export_time = time.perf_counter() - begin
            begin = time.perf_counter()
            onx = torch.onnx.export(
                model,
                (),
                kwargs=copy.deepcopy(inputs),
                dynamic_shapes=ds,
                dynamo=True,
                verbose=False,
            )
            onnx_time = time.perf_counter() - begin

        got = ep.module()(**copy.deepcopy(inputs2))
        diff_ep = max_diff(expected, got)
        self.assertNotIn("error", diff_ep)
        self.assertLess(diff_ep["abs"], 1e-4, msg=f"{name}: exported program differs")

        sess = onnxruntime.InferenceSession(
            onx.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        flat = flatten_object(copy.deepcopy(inputs2))
        names = [i.name for i in sess.get_inputs()]
        self.assertEqual(len(names), len(flat), msg=f"{name}: inputs {names}")
        feeds = {n: t.detach().numpy() for n, t in zip(names, flat)}
        outputs = sess.run(None, feeds)
        diff_onnx = max_diff(expected, outputs)
        self.assertNotIn("error", diff_onnx)
        self.assertLess(diff_onnx["abs"], 1e-4, msg=f"{name}: onnx model differs")
        FIGURES[name] = dict(
            model_id=model_id,
            export_s=round(export_time, 2),
            onnx_export_s=round(onnx_time, 2),
            abs_ep=diff_ep["abs"],
            abs_onnx=diff_onnx["abs"],
        )


def _add_test(name):
    def test(self):
        self._check(name)

    test.__name__ = f"test_parity_{name}"
    setattr(TestPatchParity, test.__name__, test)


for _name in ARCHITECTURES:
    _add_test(_name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
