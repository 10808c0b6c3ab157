"""
Parity checks of the ``custom`` exporter (issue 8): every shipped text-generation model id
and :func:`dummy_llm <onnx_diagnostic.helpers.torch_helper.dummy_llm>` is exported with
``to_onnx(..., exporter="custom")`` (optimize=True) inside
``torch_export_patches(patch_transformers=True)``, run with onnxruntime on ``inputs2``
(batch, sequence and cache length all differ from the export inputs) and on ``inputs``, and
compared with eager within 1e-4. Every test also checks the fused operators expected from the
architecture (Attention for sdpa models, RMSNormalization / SimplifiedLayerNormalization for
RMSNorm models, RotaryEmbedding for rotary models, one per norm module, one Attention per layer,
two RotaryEmbedding per rotary layer), the conventional input and output names and the names of
the symbolic dimensions.
"""

from __future__ import annotations

import collections
import copy
import re
import time
import unittest
from typing import Any

import onnx
import onnxruntime
import torch

from onnx_diagnostic.export.api import onnx_feeds, to_onnx
from onnx_diagnostic.ext_test_case import ExtTestCase, ignore_warnings
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.helpers.torch_helper import dummy_llm
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs
from onnx_diagnostic.torch_models.hghub.hub_api import shipped_model_ids
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()

#: every shipped text-generation model id gets its own test
MODEL_IDS = shipped_model_ids("text-generation")

#: model_type -> (normalization kind, rotary): "rms" models must show one
#: RMSNormalization (or SimplifiedLayerNormalization) per RMSNorm module, "layer" models one
#: LayerNormalization per torch.nn.LayerNorm; rotary models two RotaryEmbedding per layer
#: applying rope (queries and keys). A model type missing here fails its test: classify it.
FAMILIES: dict[str, tuple[str, bool]] = {
    "llama": ("rms", True),
    "mistral": ("rms", True),
    "qwen2": ("rms", True),
    "qwen3": ("rms", True),
    "phi3": ("rms", True),
    "smollm3": ("rms", True),
    "gemma2": ("rms", True),
    "gemma3_text": ("rms", True),
    "phi": ("layer", True),
    "falcon": ("layer", True),
    "gpt2": ("layer", False),
}

#: figures of the run, printed by tearDownClass
FIGURES: dict[str, dict[str, Any]] = {}

_FUSED = (
    "Attention",
    "RMSNormalization",
    "SimplifiedLayerNormalization",
    "RotaryEmbedding",
    "LayerNormalization",
)


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _axes_specs(ds: dict[str, Any]) -> list[dict[int, str]]:
    specs = []
    for value in ds.values():
        specs.extend(value if isinstance(value, list) else [value])
    return specs


def _derived_names(dim: str, declared: set[str]) -> list[str]:
    """
    An axis declared ``cache+seq`` that torch.export proves equal to the sum of two other
    declared axes keeps that expression as its name (transformers 4.57, falcon):
    ``cache_length + seq_length`` is accepted for it, nothing else.
    """
    if "+" not in dim:
        return []
    others = sorted(d for d in declared if d != dim and "+" not in d)
    return [f"{a} + {b}" for a in others for b in others if a != b]


def _count_modules(model: torch.nn.Module, suffix: str) -> int:
    return sum(type(m).__name__.endswith(suffix) for m in model.modules())


def _rope_layers(config: Any) -> int:
    """Number of decoder layers applying rope (SmolLM3 skips it in some layers)."""
    n_layers = config.num_hidden_layers
    no_rope = getattr(config, "no_rope_layers", None)
    if no_rope is not None:
        return int(sum(no_rope[:n_layers]))
    return n_layers


def _run(sess: onnxruntime.InferenceSession, feeds: dict[str, torch.Tensor]) -> list:
    return sess.run(None, {k: v.detach().numpy() for k, v in feeds.items()})


def _method_name(model_id: str) -> str:
    return "test_custom_parity_" + re.sub(r"[^0-9a-zA-Z]+", "_", model_id).strip("_").lower()


class TestCustomParity(ExtTestCase):
    @classmethod
    def tearDownClass(cls):
        for name, row in sorted(FIGURES.items()):
            print(f"[custom-parity] {name}: {row}")

    def _export(self, model, inputs, dynamic_shapes):
        with torch_export_patches(patch_transformers=True):
            begin = time.perf_counter()
            onx = to_onnx(
                model,
                (),
                kwargs=copy.deepcopy(inputs),
                dynamic_shapes=dynamic_shapes,
                exporter="custom",
            )
            return onx, time.perf_counter() - begin

    def _check_names(self, model_id, onx, data):
        """Conventional names and the names of the dynamic dimensions."""
        inputs, ds = data.inputs, data.dynamic_shapes
        n_cache = len(ds[CACHE])
        self.assertEqual(n_cache % 2, 0, msg=f"{model_id}: {n_cache} cache tensors")
        cache_names = [f"{i}.{k}" for i in range(n_cache // 2) for k in ("key", "value")]
        first = [n for n in ("input_ids", "attention_mask", "position_ids") if n in inputs]
        expected_inputs = [*first, *(f"past_key_values.{n}" for n in cache_names)]
        # the order is the one of the forward signature (gpt2 and falcon take
        # past_key_values before attention_mask), onnx_feeds follows it too
        onnx_inputs = [i.name for i in onx.graph.input]
        self.assertEqual(sorted(onnx_inputs), sorted(expected_inputs), msg=f"{model_id}: inputs")
        self.assertEqual(
            list(onnx_feeds(data.model, (), inputs)), onnx_inputs, msg=f"{model_id}: feeds"
        )
        self.assertEqual(
            [o.name for o in onx.graph.output],
            ["logits", *(f"present.{n}" for n in cache_names)],
            msg=f"{model_id}: outputs",
        )
        by_name = {i.name: _dims(i) for i in onx.graph.input}
        declared = {d for spec in _axes_specs(ds) for d in spec.values()}
        self.assertEqual(by_name["input_ids"][:2], ["batch", "seq_length"], msg=model_id)
        for name in onnx_inputs:
            if name.startswith("past_key_values."):
                spec = ds[CACHE][cache_names.index(name[len("past_key_values.") :])]
                self.assertEqual(by_name[name][0], "batch", msg=f"{model_id}: {name}")
                # the sliding layers of a cache with full layers have their own length
                self.assertEqual(by_name[name][2], spec[2], msg=f"{model_id}: {name}")
                self.assertIn(spec[2], ("cache_length", "sliding_cache_length"), msg=name)
            else:
                spec = ds[name]
            for axis, dim in spec.items():
                self.assertIn(
                    by_name[name][axis],
                    (dim, *_derived_names(dim, declared)),
                    msg=f"{model_id}: input {name!r} axis {axis} is {by_name[name]}",
                )

    def _check_fusions(self, model_id, onx, data) -> dict[str, int]:
        """The fused operators the architecture allows, one per norm, layer, rotary layer."""
        config = data.configuration
        ops = collections.Counter(n.op_type for n in onx.graph.node)
        fused = {k: ops[k] for k in _FUSED if ops[k]}
        model_type = config.model_type
        self.assertIn(
            model_type,
            FAMILIES,
            msg=f"{model_id}: model_type {model_type!r} not classified in FAMILIES, "
            f"fused operators {fused}",
        )
        norm, rotary = FAMILIES[model_type]
        msg = f"{model_id} ({model_type}): fused operators {fused}"
        if norm == "rms":
            n_norms = _count_modules(data.model, "RMSNorm")
            self.assertGreater(n_norms, 0, msg=msg)
            got = ops["RMSNormalization"] + ops["SimplifiedLayerNormalization"]
            self.assertEqual(got, n_norms, msg=msg)
        else:
            n_norms = sum(isinstance(m, torch.nn.LayerNorm) for m in data.model.modules())
            self.assertGreater(n_norms, 0, msg=msg)
            self.assertEqual(ops["LayerNormalization"], n_norms, msg=msg)
        if rotary:
            self.assertEqual(ops["RotaryEmbedding"], 2 * _rope_layers(config), msg=msg)
        else:
            self.assertEqual(ops["RotaryEmbedding"], 0, msg=msg)
        if config._attn_implementation == "sdpa":
            self.assertEqual(ops["Attention"], config.num_hidden_layers, msg=msg)
        return fused

    @ignore_warnings((UserWarning, FutureWarning, DeprecationWarning))
    def _check(self, model_id):
        data = get_untrained_model_with_inputs(model_id, add_second_input=True)
        model, inputs, inputs2 = data.model, data.inputs, data.inputs2
        onx, export_time = self._export(model, inputs, data.dynamic_shapes)
        sess = onnxruntime.InferenceSession(
            onx.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        diffs = {}
        for label, feeds_inputs in (("inputs2", inputs2), ("inputs", inputs)):
            expected = model(**copy.deepcopy(feeds_inputs))
            got = _run(sess, onnx_feeds(model, (), copy.deepcopy(feeds_inputs)))
            diff = max_diff(expected, got)
            self.assertNotIn("error", diff, msg=f"{model_id}, {label}")
            self.assertLess(diff["abs"], 1e-4, msg=f"{model_id}, {label}: {diff}")
            diffs[label] = diff["abs"]
        self._check_names(model_id, onx, data)
        fused = self._check_fusions(model_id, onx, data)
        FIGURES[model_id] = dict(
            export_s=round(export_time, 2),
            nodes=len(onx.graph.node),
            abs_inputs=diffs["inputs"],
            abs_inputs2=diffs["inputs2"],
            fused=fused,
        )

    @ignore_warnings((UserWarning, FutureWarning, DeprecationWarning))
    def test_custom_parity_dummy_llm(self):
        model, (input_ids,), ds = dummy_llm(dynamic_shapes=True)
        inputs = dict(input_ids=input_ids)
        inputs2 = dict(
            input_ids=torch.randint(0, 1024, (input_ids.shape[0] + 1, input_ids.shape[1] - 7))
        )
        onx, export_time = self._export(model, inputs, ds)
        self.assertEqual([i.name for i in onx.graph.input], ["input_ids"])
        self.assertEqual([o.name for o in onx.graph.output], ["output_0"])
        self.assertEqual(_dims(onx.graph.input[0]), ["batch", "length"])
        ops = collections.Counter(n.op_type for n in onx.graph.node)
        self.assertEqual(ops["LayerNormalization"], 2)
        sess = onnxruntime.InferenceSession(
            onx.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        diffs = {}
        for label, feeds_inputs in (("inputs2", inputs2), ("inputs", inputs)):
            expected = model(**feeds_inputs)
            got = _run(sess, onnx_feeds(model, (), feeds_inputs))
            diff = max_diff(expected, got)
            self.assertNotIn("error", diff, msg=label)
            self.assertLess(diff["abs"], 1e-4, msg=f"{label}: {diff}")
            diffs[label] = diff["abs"]
        FIGURES["dummy_llm"] = dict(
            export_s=round(export_time, 2),
            nodes=len(onx.graph.node),
            abs_inputs=diffs["inputs"],
            abs_inputs2=diffs["inputs2"],
            fused={k: ops[k] for k in _FUSED if ops[k]},
        )


def _add_test(model_id: str) -> None:
    def test(self):
        self._check(model_id)

    test.__name__ = _method_name(model_id)
    test.__doc__ = f"custom exporter parity, fusions and names for {model_id}"
    if hasattr(TestCustomParity, test.__name__):
        raise RuntimeError(f"two model ids give the test name {test.__name__!r}")
    setattr(TestCustomParity, test.__name__, test)


for _model_id in MODEL_IDS:
    _add_test(_model_id)


if __name__ == "__main__":
    unittest.main(verbosity=2)
