"""
Models called with a ``StaticCache`` (a buffer of ``max_cache_len`` positions written at
``cache_position``, transformers >= 5 also tracks the filled length of every layer):
exported by both exporters, inputs and outputs named ``past_key_values.N.key``,
``past_key_values.N.cumulative_length``, results equal to eager.
"""

import unittest

import onnx
import torch

from onnx_diagnostic.export.api import onnx_feeds, to_onnx
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.helpers.helper import flatten_object
from onnx_diagnostic.helpers.rt_helper import make_session, run_session
from onnx_diagnostic.helpers.torch_helper import torch_deepcopy
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.llms import get_tiny_llm


def _names(values):
    return [v.name for v in values]


class TestStaticCacheExport(ExtTestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = get_tiny_llm(use_static_cache=True)
        cache = next(v for v in cls.data.inputs.values() if type(v).__name__ == "StaticCache")
        cls.has_lengths = (
            hasattr(cache.layers[0], "cumulative_length") if hasattr(cache, "layers") else False
        )

    def test_both_exporters(self):
        data = self.data
        expected = data.model(**torch_deepcopy(data.inputs))
        for exporter in ["custom", "onnx-dynamo"]:
            with self.subTest(exporter=exporter):
                with torch_export_patches(patch_transformers=True):
                    onx = to_onnx(
                        data.model,
                        kwargs=torch_deepcopy(data.inputs),
                        dynamic_shapes=data.dynamic_shapes,
                        exporter=exporter,
                    )
                inputs = _names(onx.graph.input)
                outputs = _names(onx.graph.output)
                self.assertIn("past_key_values.0.key", inputs)
                self.assertIn("present.0.value", outputs)
                if self.has_lengths:
                    self.assertIn("past_key_values.0.cumulative_length", inputs)
                    self.assertIn("present.0.cumulative_length", outputs)
                # the buffer keeps its fixed length, written at cache_position
                key = onx.graph.input[inputs.index("past_key_values.0.key")]
                self.assertEqual(key.type.tensor_type.shape.dim[2].dim_value, 34)
                feeds = onnx_feeds(data.model, kwargs=torch_deepcopy(data.inputs))
                got = run_session(make_session(onx), feeds)
                diff = max_diff(expected, got)
                self.assertLess(diff["abs"], 1e-4, msg=str(diff))
                if exporter == "custom":
                    self.assertIn("ScatterElements", {n.op_type for n in onx.graph.node})

    def test_onnx_generate(self):
        from onnx_diagnostic.helpers.rt_helper import model_layout, onnx_generate

        model = self.data.model
        gen = torch.Generator().manual_seed(1)
        prompt = torch.randint(3, model.config.vocab_size, (2, 6), generator=gen)
        mask = torch.ones_like(prompt)
        mask[1, :2] = 0  # left padding
        prompt[1, :2] = 0
        expected = {}
        for batch in (1, 2):
            # before any export: transformers 4.57's generate reuses a static cache it made
            with torch.no_grad():
                expected[batch] = model.generate(
                    prompt[:batch],
                    attention_mask=mask[:batch],
                    max_new_tokens=25,
                    min_new_tokens=25,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )
        for exporter in ["custom", "onnx-dynamo"]:
            with torch_export_patches(patch_transformers=True):
                onx = to_onnx(
                    model,
                    kwargs=torch_deepcopy(self.data.inputs),
                    dynamic_shapes=self.data.dynamic_shapes,
                    exporter=exporter,
                )
            sess = make_session(onx)
            self.assertEqual(model_layout(sess).cache_lengths[:2], [34, 34])
            for batch in (1, 2):
                with self.subTest(exporter=exporter, batch=batch):
                    p, m = prompt[:batch], mask[:batch]
                    got = onnx_generate(
                        sess, p, attention_mask=m, eos_token_id=None, max_new_tokens=25
                    )
                    self.assertEqual(got.tolist(), expected[batch].tolist())
            with self.assertRaisesRegex(ValueError, "static cache of 34 positions"):
                onnx_generate(sess, prompt, eos_token_id=None, max_new_tokens=40)

    def test_flatten_object_follows_the_pytree_flattening(self):
        cache = next(v for v in self.data.inputs.values() if type(v).__name__ == "StaticCache")
        flat = flatten_object(cache)
        leaves = torch.utils._pytree.tree_leaves(cache)
        self.assertEqual(len(flat), len(leaves))
        for a, b in zip(flat, leaves):
            self.assertIs(a, b)
        self.assertEqual(len(flat), 3 if self.has_lengths else 2)


class TestIndexCopy(ExtTestCase):
    def _check(self, model, *inputs):
        onx = to_onnx(model, inputs, exporter="custom")
        self.assertIsInstance(onx, onnx.ModelProto)
        feeds = {i.name: x for i, x in zip(onx.graph.input, inputs)}
        got = run_session(make_session(onx), feeds)
        self.assertEqualArray(model(*[x.clone() for x in inputs]), got[0])

    def test_index_copy(self):
        class M(torch.nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.dim = dim

            def forward(self, x, index, source):
                return x.index_copy(self.dim, index, source)

        x = torch.zeros(2, 5, 3)
        self._check(M(1), x, torch.tensor([4, 0]), torch.rand(2, 2, 3))
        self._check(M(-1), x, torch.tensor([2]), torch.rand(2, 5, 1))
        self._check(M(0), x, torch.tensor([1, 0]), torch.rand(2, 5, 3))
        self._check(
            M(1), x.to(torch.bool), torch.tensor([3]), torch.ones(2, 1, 3, dtype=torch.bool)
        )
        self._check(
            M(1), x.to(torch.int64), torch.tensor([3, 1]), torch.ones(2, 2, 3, dtype=torch.int64)
        )

    def test_index_copy_inplace(self):
        class M(torch.nn.Module):
            def forward(self, x, index, source):
                y = x * 1
                y.index_copy_(2, index, source)
                return y + 1

        self._check(M(), torch.zeros(1, 2, 6, 4), torch.tensor([5, 2]), torch.rand(1, 2, 2, 4))


if __name__ == "__main__":
    unittest.main(verbosity=2)
