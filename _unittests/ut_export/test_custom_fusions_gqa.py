"""
``to_onnx(..., exporter="custom", genai_style=True)``: every attention layer becomes one
``com.microsoft.GroupQueryAttention`` (rotary inside, cos/sin tables, sequence lengths
read from ``attention_mask``, cache buffers shared by past and present). Small untrained
models (llama with grouped key/value heads, qwen2 with biased projections, qwen3 with
q/k norms, Tiny-LLM):
the graph, the outputs of the model fed as an ordinary one, the tokens of
:func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>` and
onnxruntime-genai against transformers' greedy ``generate``, the errors.
"""

import json
import os
import tempfile
import unittest

import onnx
import onnx_ir as ir
import torch

from onnx_diagnostic.export.api import to_onnx
from onnx_diagnostic.export.custom.fusions_genai import apply_genai_fusions
from onnx_diagnostic.export.custom.fusions_gqa import (
    MAX_LENGTH_KEY,
    SHARED_BUFFER_KEY,
    fuse_group_query_attention,
    pack_group_query_attention_qkv,
)
from onnx_diagnostic.ext_test_case import ExtTestCase, requires_onnxruntime_genai
from onnx_diagnostic.helpers.compat import CACHE_ARG_NAMES
from onnx_diagnostic.helpers.rt_helper import make_session, onnx_generate
from onnx_diagnostic.torch_export_patches import torch_export_patches

NEW = 24
_MS = "com.microsoft"

#: a small llama: 2 layers, 4 heads sharing 2 key/value heads of 16 dimensions
_SMALL = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_hidden_layers=2,
    intermediate_size=128,
    vocab_size=1000,
    max_position_embeddings=256,
)


def _small_model(family: str = "llama", **kwargs):
    """A small untrained model of ``family`` and the example inputs of its task."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from onnx_diagnostic.tasks import random_input_kwargs

    config = AutoConfig.for_model(family, **{**_SMALL, **kwargs})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    # every method generates all the tokens
    model.generation_config.eos_token_id = None
    input_kwargs, fct = random_input_kwargs(config, "text-generation")
    data = fct(model, config, **input_kwargs)
    return model, data["inputs"], data["dynamic_shapes"]


def _export(model, inputs, dynamic_shapes, exporter="custom", **kwargs) -> onnx.ModelProto:
    with torch_export_patches(patch_transformers=True):
        return to_onnx(
            model, kwargs=inputs, dynamic_shapes=dynamic_shapes, exporter=exporter, **kwargs
        )


def _cache_name(inputs: dict) -> str:
    return next(k for k in inputs if k in CACHE_ARG_NAMES)


def _prompts(vocab: int, seed: int = 0):
    """A prompt of batch 1 and one of batch 2 whose second row has 3 tokens of left padding."""
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(3, vocab, (2, 8), generator=gen)
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0
    prompt[1, :3] = 0
    return prompt[:1].clone(), (prompt, mask)


def _greedy(model, prompt, mask=None, new=NEW):
    with torch.no_grad():
        return model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt) if mask is None else mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )


class _GenerateLikeTransformers:
    """onnx_generate on the genai_style export and on the plain custom export gives the
    tokens of transformers' greedy generate."""

    @classmethod
    def _model(cls):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.model, cls.inputs, cls.ds = cls._model()
        cls.gqa = _export(cls.model, cls.inputs, cls.ds, genai_style=True)
        cls.plain = _export(cls.model, cls.inputs, cls.ds)
        cls.sessions = {"genai_style": make_session(cls.gqa), "plain": make_session(cls.plain)}
        cls.single, cls.padded = _prompts(cls.model.config.vocab_size)

    def test_fused_every_layer(self):
        ops = [n.op_type for n in self.gqa.graph.node if n.domain == _MS]
        self.assertEqual(
            self.model.config.num_hidden_layers, ops.count("GroupQueryAttention"), msg=str(ops)
        )
        self.assertEqual(
            "1", {p.key: p.value for p in self.gqa.metadata_props}.get(SHARED_BUFFER_KEY)
        )

    def test_generate_batch_1(self):
        expected = _greedy(self.model, self.single)
        self.assertEqual((1, 8 + NEW), tuple(expected.shape))
        for name, sess in self.sessions.items():
            with self.subTest(model=name):
                got = onnx_generate(sess, self.single, max_new_tokens=NEW)
                self.assertEqualArray(expected, got)

    def test_generate_batch_2_left_padding(self):
        prompt, mask = self.padded
        expected = _greedy(self.model, prompt, mask)
        self.assertEqual((2, 8 + NEW), tuple(expected.shape))
        for name, sess in self.sessions.items():
            with self.subTest(model=name):
                got = onnx_generate(sess, prompt, attention_mask=mask, max_new_tokens=NEW)
                self.assertEqualArray(expected, got)


class TestGqaTinyLLM(_GenerateLikeTransformers, ExtTestCase):
    @classmethod
    def _model(cls):
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        data = get_tiny_llm()
        data.model.generation_config.eos_token_id = None
        return data.model, data.inputs, data.dynamic_shapes


class TestGqaQwen2(_GenerateLikeTransformers, ExtTestCase):
    @classmethod
    def _model(cls):
        return _small_model("qwen2")

    def test_projections_have_biases(self):
        attn = self.model.model.layers[0].self_attn
        self.assertIsNotNone(attn.q_proj.bias)
        self.assertIsNotNone(attn.v_proj.bias)


class TestGqaQwen3(_GenerateLikeTransformers, ExtTestCase):
    """q_norm and k_norm between the projections and the rotary embedding: the attention
    receives the normalized query and key (no packed QKV)."""

    @classmethod
    def _model(cls):
        return _small_model("qwen3", head_dim=16)

    def test_normalized_query_and_key(self):
        self.assertIsNotNone(self.model.model.layers[0].self_attn.q_norm)
        producer = {o: n for n in self.gqa.graph.node for o in n.output}
        gqas = [n for n in self.gqa.graph.node if n.op_type == "GroupQueryAttention"]
        self.assertEqual(2, len(gqas))
        for node in gqas:
            self.assertNotEqual("", node.input[1])
            # the heads merged back after the normalization: (batch, seq, heads * head_dim)
            for name in node.input[:2]:
                reshape = producer[name]
                self.assertEqual("Reshape", reshape.op_type)
                self.assertEqual("RMSNormalization", producer[reshape.input[0]].op_type)


class TestGqaLlama(_GenerateLikeTransformers, ExtTestCase):
    """The 2-layer llama with 2 key/value heads for 4 heads."""

    @classmethod
    def _model(cls):
        return _small_model("llama")

    def test_graph(self):
        config = self.model.config
        self.assertLess(config.num_key_value_heads, config.num_attention_heads)
        graph = self.gqa.graph
        gqas = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
        self.assertEqual(2, len(gqas))
        for node in gqas:
            self.assertEqual(_MS, node.domain)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            self.assertEqual(4, attrs["num_heads"])
            self.assertEqual(2, attrs["kv_num_heads"])
            self.assertEqual(1, attrs["do_rotary"])
            self.assertEqual(0, attrs.get("rotary_interleaved", 0))
            self.assertAlmostEqual(16**-0.5, attrs["scale"], atol=1e-7)
            # packed QKV: query only, no key nor value
            self.assertEqual(["", ""], list(node.input[1:3]))
            self.assertNotEqual("", node.input[0])
            self.assertEqual(9, len(node.input))
            self.assertIn("past_key_values.", node.input[3])
        self.assertEqual(
            ["past_key_values.0.key", "past_key_values.0.value"], list(gqas[0].input[3:5])
        )
        ops = {n.op_type for n in graph.node}
        for op in ("RotaryEmbedding", "Cos", "Sin", "Concat", "Softmax", "Attention"):
            self.assertNotIn(op, ops)
        self.assertEqual(
            [
                "input_ids",
                "attention_mask",
                "past_key_values.0.key",
                "past_key_values.0.value",
                "past_key_values.1.key",
                "past_key_values.1.value",
            ],
            [i.name for i in graph.input],
        )
        self.assertEqual(
            ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"],
            [o.name for o in graph.output],
        )
        # the presents are the outputs of the attention
        produced = {o: n.op_type for n in graph.node for o in n.output}
        for o in graph.output[1:]:
            self.assertEqual("GroupQueryAttention", produced[o.name])
        meta = {p.key: p.value for p in self.gqa.metadata_props}
        self.assertEqual("1", meta[SHARED_BUFFER_KEY])
        self.assertEqual("256", meta[MAX_LENGTH_KEY])
        self.assertIn(_MS, {o.domain for o in self.gqa.opset_import})
        # the tables: one row per position, half the head dimension
        inits = {i.name: tuple(i.dims) for i in graph.initializer}
        self.assertEqual((256, 8), inits[gqas[0].input[7]])
        self.assertEqual((256, 8), inits[gqas[0].input[8]])

    def _eager_and_onnx(self, batch: int, seq: int, past: int):
        from transformers import DynamicCache

        gen = torch.Generator().manual_seed(batch * 100 + seq * 10 + past)
        ids = torch.randint(0, self.model.config.vocab_size, (batch, seq), generator=gen)
        mask = torch.ones((batch, past + seq), dtype=torch.int64)
        pasts = [
            (
                torch.randn(batch, 2, past, 16, generator=gen),
                torch.randn(batch, 2, past, 16, generator=gen),
            )
            for _ in range(2)
        ]
        cache = DynamicCache(config=self.model.config)
        if past:
            for i, (k, v) in enumerate(pasts):
                cache.update(k.clone(), v.clone(), i)
        self.assertEqual(past, cache.get_seq_length())
        with torch.no_grad():
            expected = self.model(
                input_ids=ids, attention_mask=mask, **{_cache_name(self.inputs): cache}
            )
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        for i, (k, v) in enumerate(pasts):
            feeds[f"past_key_values.{i}.key"] = k.numpy()
            feeds[f"past_key_values.{i}.value"] = v.numpy()
        return expected, feeds

    def _check_eager(self, batch: int, seq: int, past: int):
        expected, feeds = self._eager_and_onnx(batch, seq, past)
        got = self.sessions["genai_style"].run(None, feeds)
        self.assertEqual((batch, seq, 1000), got[0].shape)
        self.assertEqualArray(expected.logits, torch.from_numpy(got[0]), atol=1e-4)
        cache = getattr(expected, "past_key_values", None) or expected.cache
        for i in range(2):
            self.assertEqual((batch, 2, past + seq, 16), got[1 + 2 * i].shape)
            self.assertEqualArray(cache.layers[i].keys, torch.from_numpy(got[1 + 2 * i]), atol=1e-4)
            self.assertEqualArray(
                cache.layers[i].values, torch.from_numpy(got[2 + 2 * i]), atol=1e-4
            )

    def test_eager_batch_2_prompt_empty_past(self):
        self._check_eager(2, 5, 0)

    def test_eager_batch_2_one_token_past_7(self):
        self._check_eager(2, 1, 7)

    def test_eager_batch_1_four_tokens_past_3(self):
        self._check_eager(1, 4, 3)

    def test_ort_refuses_batch_2_several_new_tokens_with_a_past(self):
        # onnxruntime's GroupQueryAttention: batch_size must be 1 when sequence_length > 1
        # and past context is given
        _, feeds = self._eager_and_onnx(2, 3, 4)
        with self.assertRaisesRegex(Exception, "batch_size must be 1"):
            self.sessions["genai_style"].run(None, feeds)

    def test_return_session_full_buffers(self):
        for name, (prompt, mask) in {"batch 1": (self.single, None), "padded": self.padded}.items():
            with self.subTest(prompt=name):
                _, sess, feeds = onnx_generate(
                    self.sessions["genai_style"],
                    prompt,
                    attention_mask=mask,
                    max_new_tokens=NEW,
                    return_session=True,
                )
                self.assertIs(sess, self.sessions["genai_style"])
                batch = prompt.shape[0]
                for i in range(2):
                    for kind in ("key", "value"):
                        self.assertEqual(
                            (batch, 2, 8 + NEW, 16),
                            tuple(feeds[f"past_key_values.{i}.{kind}"].shape),
                        )
                # the mask of the last step: every position fed, the last token excepted
                self.assertEqual((batch, 8 + NEW - 1), tuple(feeds["attention_mask"].shape))

    def test_return_session_buffers_hold_the_cache(self):
        # the returned feeds own the shared buffers: the memory is not freed when
        # onnx_generate returns and reused by the next allocations
        import gc

        from transformers import DynamicCache

        corrupted = []
        for trial in range(5):
            tokens, _, feeds = onnx_generate(
                self.sessions["genai_style"], self.single, max_new_tokens=NEW, return_session=True
            )
            gc.collect()
            # allocations of the same size
            junk = [torch.full((1, 2, 8 + NEW, 16), float("nan")) for _ in range(64)]
            with torch.no_grad():
                expected = self.model(
                    input_ids=tokens[:, :-1],
                    **{_cache_name(self.inputs): DynamicCache(config=self.model.config)},
                )
            del junk
            cache = getattr(expected, "past_key_values", None) or expected.cache
            # the buffer holds the positions of every token fed (all but the last generated
            # one), the last position was never written
            for i in range(2):
                for kind, exp in (("key", cache.layers[i].keys), ("value", cache.layers[i].values)):
                    got = feeds[f"past_key_values.{i}.{kind}"]
                    if not (
                        torch.allclose(exp, got[:, :, :-1], atol=1e-4)
                        and float(got[:, :, -1].abs().max()) == 0
                    ):
                        corrupted.append((trial, i, kind))
        self.assertEqual([], corrupted)

    def test_max_length(self):
        proto, counts = apply_genai_fusions(self.plain, llm=self.model, max_length=32)
        self.assertEqual(2, counts["fuse_group_query_attention"])
        self.assertEqual(2, counts["pack_group_query_attention_qkv"])
        self.assertEqual("32", {p.key: p.value for p in proto.metadata_props}[MAX_LENGTH_KEY])
        sess = make_session(proto)
        # 8 + 25 tokens, the last one is not fed: 32 positions, the tables' length
        expected = _greedy(self.model, self.single, new=25)
        self.assertEqualArray(expected, onnx_generate(sess, self.single, max_new_tokens=25))
        with self.assertRaisesRegex(ValueError, "at most 32 positions.*max_new_tokens=26"):
            onnx_generate(sess, self.single, max_new_tokens=26)
        # left padding is moved to the right: 5 tokens + 28 new ones fit in 32 positions
        prompt, mask = self.padded
        expected = _greedy(self.model, prompt[1:], mask[1:], new=28)
        got = onnx_generate(sess, prompt[1:], attention_mask=mask[1:], max_new_tokens=28)
        self.assertEqualArray(expected, got)

    def test_genai_config_bounded_by_the_tables(self):
        from onnx_diagnostic.export.genai import make_genai_config

        cfg = make_genai_config(self.model.config, self.gqa)
        self.assertTrue(cfg["search"]["past_present_share_buffer"])
        self.assertEqual(256, cfg["search"]["max_length"])
        self.assertFalse(
            make_genai_config(self.model.config, self.plain)["search"]["past_present_share_buffer"]
        )
        proto, _ = apply_genai_fusions(self.plain, llm=self.model, max_length=32)
        cfg = make_genai_config(self.model.config, proto)
        self.assertEqual(32, cfg["search"]["max_length"])
        with self.assertRaisesRegex(ValueError, "max_length=64 exceeds the 32 positions"):
            make_genai_config(self.model.config, proto, max_length=64)

    def test_mask_with_a_hole(self):
        prompt = torch.tensor([[5, 6, 7, 8]])
        mask = torch.tensor([[1, 0, 1, 1]])
        with self.assertRaisesRegex(ValueError, "attention_mask.*contiguous.*rows \\[0\\]"):
            onnx_generate(self.sessions["genai_style"], prompt, attention_mask=mask)
        # the plain model reads positions, not lengths: it takes it
        got = onnx_generate(self.sessions["plain"], prompt, attention_mask=mask, max_new_tokens=2)
        self.assertEqual((1, 6), tuple(got.shape))

    def test_mask_with_an_empty_row(self):
        prompt = torch.tensor([[5, 6, 7, 8], [0, 0, 0, 0]])
        mask = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]])
        with self.assertRaisesRegex(
            ValueError, "attention_mask has rows without any token: \\[1\\]"
        ):
            onnx_generate(self.sessions["genai_style"], prompt, attention_mask=mask)

    def test_max_length_zero(self):
        for value in (0, -3, 2.5, True):
            with self.subTest(max_length=value):
                with self.assertRaisesRegex(
                    ValueError, f"max_length must be an int > 0, got {value}"
                ):
                    fuse_group_query_attention(ir.from_proto(self.plain), self.model, value)

    def test_logits_to_keep_1(self):
        inputs = dict(self.inputs, logits_to_keep=1)
        ds = dict(self.ds, logits_to_keep=None)
        proto = _export(self.model, inputs, ds, genai_style=True)
        sess = make_session(proto)
        self.assertEqual(1, sess.get_outputs()[0].shape[1])
        self.assertEqualArray(
            _greedy(self.model, self.single), onnx_generate(sess, self.single, max_new_tokens=NEW)
        )
        prompt, mask = self.padded
        with self.assertRaisesRegex(ValueError, "logits_to_keep"):
            onnx_generate(sess, prompt, attention_mask=mask, max_new_tokens=NEW)
        # rows of the same length end at the same position
        both = torch.cat([self.single, self.single.flip(1)])
        self.assertEqualArray(
            _greedy(self.model, both), onnx_generate(sess, both, max_new_tokens=NEW)
        )

    def test_onnx_dynamo_refused(self):
        with self.assertRaisesRegex(
            ValueError, "genai_style=True.*exporter='onnx-dynamo' is not supported"
        ):
            _export(self.model, self.inputs, self.ds, exporter="onnx-dynamo", genai_style=True)
        # a model exported by onnx-dynamo: no module path on the nodes
        proto = _export(self.model, self.inputs, self.ds, exporter="onnx-dynamo")
        with self.assertRaisesRegex(ValueError, "no module path.*exporter='custom'"):
            fuse_group_query_attention(ir.from_proto(proto), self.model)


class TestGqaRefused(ExtTestCase):
    """What GroupQueryAttention does not compute: the error names the module."""

    def _refused(self, pattern: str, family: str, **kwargs):
        model, inputs, ds = _small_model(family, **kwargs)
        proto = _export(model, inputs, ds)
        irm = ir.from_proto(proto)
        with self.assertRaisesRegex(ValueError, pattern):
            fuse_group_query_attention(irm, model)
        # nothing was fused
        self.assertNotIn(_MS, {n.domain for n in irm.graph})
        self.assertNotIn(SHARED_BUFFER_KEY, irm.metadata_props)
        return model, inputs, ds

    def test_mistral_sliding_window(self):
        self._refused("model\\.layers\\.0\\.self_attn: sliding-window", "mistral", sliding_window=8)

    def test_qwen2_use_sliding_window(self):
        self._refused(
            "model\\.layers\\.0\\.self_attn: sliding-window",
            "qwen2",
            use_sliding_window=True,
            sliding_window=8,
            max_window_layers=0,
        )

    def test_dynamic_rope(self):
        import transformers

        rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
        # transformers 4.x names it rope_scaling
        key = "rope_parameters" if transformers.__version__ >= "5" else "rope_scaling"
        self._refused("rope type 'dynamic' is not supported", "llama", **{key: rope})

    def test_head_dim_not_multiple_of_16(self):
        self._refused(
            "head_dim=8: onnxruntime's GroupQueryAttention needs a head dimension which is "
            "a multiple of 16",
            "llama",
            num_attention_heads=8,
            num_key_value_heads=4,
        )

    def test_bfloat16(self):
        model, inputs, ds = _small_model("llama")
        proto = _export(model, inputs, ds)
        model.to(torch.bfloat16)
        with self.assertRaisesRegex(ValueError, "torch.bfloat16.*float32 and float16"):
            fuse_group_query_attention(ir.from_proto(proto), model)


def _gqa_graph(kind: str) -> ir.Model:
    """GroupQueryAttention fed by a Split (packable) or variations which are not."""
    x = ir.Value(name="x")
    nodes = []
    if kind in ("split", "used_elsewhere", "axis_1"):
        axis = 1 if kind == "axis_1" else -1
        split = ir.node("Split", [x], attributes={"axis": axis}, num_outputs=3)
        nodes.append(split)
        q, k, v = split.outputs
    else:  # three projections
        q, k, v = (ir.node("Relu", [x], num_outputs=1).outputs[0] for _ in range(3))
        nodes.extend(t.producer() for t in (q, k, v))
    gqa = ir.node("GroupQueryAttention", [q, k, v], domain=_MS, num_outputs=1)
    nodes.append(gqa)
    outputs = list(gqa.outputs)
    if kind == "used_elsewhere":
        other = ir.node("Neg", [k], num_outputs=1)
        nodes.append(other)
        outputs.extend(other.outputs)
    return ir.Model(ir.Graph([x], outputs, nodes=nodes), ir_version=10)


class TestPackQkv(ExtTestCase):
    def test_docstring_examples(self):
        import doctest

        from onnx_diagnostic.export.custom import fusions_gqa

        res = doctest.testmod(fusions_gqa, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertGreater(res.attempted, 10)
        self.assertEqual(0, res.failed)

    def test_packed(self):
        model = _gqa_graph("split")
        self.assertEqual(1, pack_group_query_attention_qkv(model))
        self.assertEqual(["GroupQueryAttention"], [n.op_type for n in model.graph])
        gqa = next(iter(model.graph))
        self.assertIs(model.graph.inputs[0], gqa.inputs[0])
        self.assertEqual([None, None], list(gqa.inputs[1:3]))

    def test_unchanged(self):
        for kind in ("used_elsewhere", "axis_1", "projections"):
            with self.subTest(kind=kind):
                model = _gqa_graph(kind)
                before = [
                    (n.op_type, [i.name if i else None for i in n.inputs]) for n in model.graph
                ]
                gqa = next(n for n in model.graph if n.op_type == "GroupQueryAttention")
                inputs = list(gqa.inputs)
                self.assertEqual(0, pack_group_query_attention_qkv(model))
                after = [
                    (n.op_type, [i.name if i else None for i in n.inputs]) for n in model.graph
                ]
                self.assertEqual(before, after)
                self.assertEqual(inputs, list(gqa.inputs))
                self.assertTrue(all(v is not None for v in gqa.inputs))


class TestOnnxruntimeGenai(ExtTestCase):
    @requires_onnxruntime_genai(
        "onnxruntime-genai is not installed (pip install onnx-diagnostic[genai])"
    )
    def test_onnxruntime_genai_greedy(self):
        from onnx_diagnostic.export.genai import GENAI_CONFIG, genai_generate
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        data = get_tiny_llm()
        model = data.model
        model.generation_config.eos_token_id = None
        prompt, _ = _prompts(model.config.vocab_size, seed=1)
        expected = _greedy(model, prompt)
        total = prompt.shape[1] + NEW
        with tempfile.TemporaryDirectory() as folder:
            filename = os.path.join(folder, "model.onnx")
            _export(
                model,
                data.inputs,
                data.dynamic_shapes,
                genai_style=True,
                filename=filename,
                genai_config=True,
            )
            with open(os.path.join(folder, GENAI_CONFIG)) as f:
                cfg = json.load(f)
            self.assertTrue(cfg["search"]["past_present_share_buffer"])
            self.assertEqual(
                ["input_ids", "attention_mask", "past_key_names", "past_value_names"],
                list(cfg["model"]["decoder"]["inputs"]),
            )
            got = genai_generate(folder, prompt, NEW)
            ours = onnx_generate(filename, prompt, max_new_tokens=NEW)
        self.assertEqual((1, total), tuple(got.shape))
        self.assertEqualArray(expected, got)
        self.assertEqualArray(expected, ours)


if __name__ == "__main__":
    unittest.main(verbosity=2)
