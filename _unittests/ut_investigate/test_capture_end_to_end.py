"""
End-to-end: record what ``generate`` sends to an untrained Tiny-LLM, infer the export
arguments and dynamic shapes from it, export, and check the exported model.
"""

import os
import tempfile
import unittest

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.export import ModelInputs
from onnx_diagnostic.helpers.mini_onnx_builder import create_input_tensors_from_onnx_model
from onnx_diagnostic.helpers.torch_helper import steal_forward
from onnx_diagnostic.investigate.input_observer import InputObserver
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.llms import get_tiny_llm
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()


def _generate(model, batch):
    torch.manual_seed(batch)
    input_ids = torch.randint(3, 32000, (batch, 8))
    return model.generate(input_ids, max_new_tokens=5, do_sample=False, pad_token_id=0)


class TestCaptureEndToEnd(ExtTestCase):
    def test_input_observer_generate_export_onnx(self):
        model = get_tiny_llm()["model"]
        observer = InputObserver()
        with observer(model):
            _generate(model, batch=1)
        self.assertEqual(observer.num_obs(), 3)
        ds = observer.infer_dynamic_shapes(set_batch_dimension_for=True)
        # batch and sequence are 1 in the decoding calls, torch.export specializes
        # them unless they are grown
        kwargs = observer.infer_arguments(for_export=True, set_batch_dimension_for=True)
        self.assertEqual(kwargs["input_ids"].shape, (2, 2))
        self.assertEqual(kwargs[CACHE].layers[0].keys.shape, (2, 1, 8, 96))
        with torch_export_patches(patch_transformers=True):
            ep = torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=ds, strict=False)
            epo = torch.onnx.export(ep, (), kwargs=kwargs, dynamic_shapes=ds, dynamo=True)
        # the exported program runs the recorded decoding call (batch 1, one new token)
        expected = model(**observer.infer_arguments(2))
        got = ep.module()(**observer.infer_arguments(2))
        self.assertEqualArray(expected.logits, got.logits, atol=1e-4)
        # and the ONNX model every recorded call, the prefill with an empty cache included
        res = observer.check_discrepancies(epo, atol=1e-4)
        self.assertEqual([r["index"] for r in res], [0, 1, 2])
        self.assertEqual([r["n_empty"] for r in res], [2, 0, 0])
        for r in res:
            self.assertTrue(r["SUCCESS"], msg=str(r))

    def test_model_inputs_from_steal_forward_dump(self):
        model = get_tiny_llm()["model"]
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "generate.inputs.onnx")

            def run():
                with steal_forward(model, dump_file=dump):
                    return _generate(model, batch=2)

            _, out, _ = self.capture(run)
            self.assertIn("iteration 4", out)
            stored = create_input_tensors_from_onnx_model(dump)
        # decoding calls share one structure (the prefill one has an empty cache)
        inputs = []
        for i in range(1, 5):
            args, kwargs = stored["", i, "I"]
            self.assertEqual(args, ())
            # torch.export cannot match a constant caught by **kwargs (return_dict)
            kwargs = {k: v for k, v in kwargs.items() if k != "return_dict"}
            inputs.append(kwargs)
        mi = ModelInputs(model, inputs)
        for auto in (False, "dim"):
            with self.subTest(auto=auto):
                args_ds, kwargs_ds = mi.guess_dynamic_shapes(auto=auto)
                self.assertEqual(args_ds, ())
                self.assertEqual(kwargs_ds["input_ids"], {})  # one new token in every call
                self.assertEqual(list(kwargs_ds[CACHE][0]), [2])
                with torch_export_patches(patch_transformers=True):
                    ep = torch.export.export(
                        model, (), kwargs=inputs[0], dynamic_shapes=kwargs_ds, strict=False
                    )
                expected = stored["", 3, "O"]
                got = ep.module()(**inputs[2])
                self.assertEqualArray(expected.logits, got.logits, atol=1e-4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
