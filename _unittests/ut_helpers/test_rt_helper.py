import os
import tempfile
import unittest
from unittest import mock

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as onh

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.rt_helper import make_session, model_layout, onnx_generate


def _counting_model(
    vocab: int = 20,
    cache_type: int = TensorProto.FLOAT,
    layers: int = 1,
    with_mask: bool = True,
    with_positions: bool = True,
    extra_input: str | None = None,
    symbolic_heads: bool = False,
    present_names: bool = True,
) -> onnx.ModelProto:
    """
    A handmade model predicting ``token + 1`` (modulo vocab) whose cache accumulates
    the tokens it received: ``present.i.key[:, h, t, d] == token t``.
    """
    weights = np.zeros((vocab, vocab), dtype=np.float32)
    for i in range(vocab):
        weights[i, (i + 1) % vocab] = 1
    nodes = [
        oh.make_node("Gather", ["W", "input_ids"], ["logits"], axis=0),
        oh.make_node("Unsqueeze", ["input_ids", "axes"], ["u"]),
        oh.make_node("Expand", ["u", "shape"], ["ue"]),
        oh.make_node("Cast", ["ue"], ["new"], to=cache_type),
    ]
    inputs = [oh.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    if with_mask:
        inputs.append(
            oh.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"])
        )
    if with_positions:
        inputs.append(
            oh.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])
        )
    if extra_input:
        inputs.append(oh.make_tensor_value_info(extra_input, TensorProto.INT64, ["batch"]))
    outputs = [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    heads = "heads" if symbolic_heads else 2
    for i in range(layers):
        for kind in ("key", "value"):
            name_in = f"past_key_values.{i}.{kind}"
            name_out = f"present.{i}.{kind}" if present_names else f"out_{i}_{kind}"
            inputs.append(
                oh.make_tensor_value_info(name_in, cache_type, ["batch", heads, "past", 4])
            )
            outputs.append(
                oh.make_tensor_value_info(name_out, cache_type, ["batch", heads, "total", 4])
            )
            nodes.append(oh.make_node("Concat", [name_in, "new"], [name_out], axis=2))
    graph = oh.make_graph(
        nodes,
        "counting",
        inputs,
        outputs,
        [
            onh.from_array(weights, "W"),
            onh.from_array(np.array([1, 3], dtype=np.int64), "axes"),
            onh.from_array(np.array([1, 2, 1, 4], dtype=np.int64), "shape"),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=9)


class TestOnnxGenerateMechanics(ExtTestCase):
    """The generation loop on a handmade model whose answer is known."""

    def test_docstring_examples(self):
        import doctest

        from onnx_diagnostic.helpers import rt_helper

        res = doctest.testmod(rt_helper, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertGreater(res.attempted, 10)
        self.assertEqual(0, res.failed)

    def test_make_session_threads_do_not_spin_by_default(self):
        key = "session.intra_op.allow_spinning"
        session = make_session(_counting_model())
        self.assertEqual("0", session.get_session_options().get_session_config_entry(key))
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        session = make_session(_counting_model(), session_options=opts)
        self.assertEqual(1, session.get_session_options().intra_op_num_threads)
        with self.assertRaisesRegex(RuntimeError, "does not have configuration"):
            session.get_session_options().get_session_config_entry(key)

    def test_run_session_any_dtype(self):
        from onnx_diagnostic.helpers.rt_helper import run_session

        model = _counting_model(cache_type=TensorProto.BFLOAT16)
        session = make_session(model)
        feeds = {
            "input_ids": torch.tensor([[4, 5]]),
            "attention_mask": torch.ones((1, 3), dtype=torch.int64),
            "position_ids": torch.tensor([[1, 2]]),
            "past_key_values.0.key": torch.full((1, 2, 1, 4), 3, dtype=torch.bfloat16),
            "past_key_values.0.value": torch.zeros((1, 2, 1, 4), dtype=torch.bfloat16),
        }
        logits, key, value = run_session(session, feeds)
        self.assertEqual((1, 2, 20), tuple(logits.shape))
        self.assertEqualArray(torch.tensor([[5, 6]]), logits.argmax(-1))
        self.assertEqual(torch.bfloat16, key.dtype)
        self.assertEqualArray(torch.tensor([3, 4, 5], dtype=torch.bfloat16), key[0, 0, :, 0])
        self.assertEqualArray(torch.tensor([0, 4, 5], dtype=torch.bfloat16), value[0, 1, :, 2])
        with self.assertRaisesRegex(ValueError, "feeds has keys"):
            run_session(session, {"input_ids": feeds["input_ids"]})
        with self.assertRaisesRegex(TypeError, r"feeds\['input_ids'\] must be a torch.Tensor"):
            run_session(session, {**feeds, "input_ids": [[4, 5]]})

    def test_counts_until_max_new_tokens(self):
        tokens = onnx_generate(_counting_model(), torch.tensor([[3, 4, 5]]), max_new_tokens=4)
        self.assertEqualArray(torch.tensor([[3, 4, 5, 6, 7, 8, 9]]), tokens)

    def test_eos_per_row_then_pad(self):
        prompt = torch.tensor([[3, 4, 5], [1, 7, 8]])
        tokens = onnx_generate(_counting_model(), prompt, eos_token_id=10, max_new_tokens=8)
        # row 1 reaches 10 after two tokens then receives eos (the pad), row 0 after five
        expected = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10], [1, 7, 8, 9, 10, 10, 10, 10]])
        self.assertEqualArray(expected, tokens)

    def test_explicit_pad_and_eos_list(self):
        prompt = torch.tensor([[3, 4, 5], [1, 7, 8]])
        tokens = onnx_generate(
            _counting_model(), prompt, eos_token_id=[10, 12], max_new_tokens=8, pad_token_id=0
        )
        expected = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10], [1, 7, 8, 9, 10, 0, 0, 0]])
        self.assertEqualArray(expected, tokens)

    def test_eos_in_prompt_is_ignored(self):
        tokens = onnx_generate(
            _counting_model(), torch.tensor([[10, 4]]), eos_token_id=10, max_new_tokens=3
        )
        self.assertEqualArray(torch.tensor([[10, 4, 5, 6, 7]]), tokens)

    def test_max_new_tokens_zero_returns_prompt(self):
        prompt = torch.tensor([[3, 4, 5]])
        tokens = onnx_generate(_counting_model(), prompt, max_new_tokens=0)
        self.assertEqualArray(prompt, tokens)
        self.assertIsNot(prompt, tokens)

    def test_cache_round_trip_and_last_feeds(self):
        for cache_type, dtype in [
            (TensorProto.FLOAT, torch.float32),
            (TensorProto.FLOAT16, torch.float16),
            (TensorProto.BFLOAT16, torch.bfloat16),
        ]:
            with self.subTest(dtype=dtype):
                prompt = torch.tensor([[3, 4, 5], [1, 7, 8]])
                tokens, session, feeds = onnx_generate(
                    _counting_model(cache_type=cache_type, layers=2),
                    prompt,
                    max_new_tokens=5,
                    return_session=True,
                )
                self.assertIsInstance(session, onnxruntime.InferenceSession)
                self.assertEqual(
                    [
                        "input_ids",
                        "attention_mask",
                        "position_ids",
                        "past_key_values.0.key",
                        "past_key_values.0.value",
                        "past_key_values.1.key",
                        "past_key_values.1.value",
                    ],
                    list(feeds),
                )
                # the last step receives the last token but one and a cache of all the others
                self.assertEqualArray(tokens[:, -2:-1], feeds["input_ids"])
                for name in ("past_key_values.0.key", "past_key_values.1.value"):
                    self.assertEqual(dtype, feeds[name].dtype)
                    self.assertEqualArray(
                        tokens[:, :-2].to(dtype), feeds[name][:, 1, :, 3], msg=name
                    )
                self.assertEqualArray(
                    torch.ones((2, 7), dtype=torch.int64), feeds["attention_mask"]
                )
                self.assertEqualArray(torch.tensor([[6], [6]]), feeds["position_ids"])

    def test_left_padding_positions(self):
        prompt = torch.tensor([[0, 0, 5], [3, 4, 5]])
        mask = torch.tensor([[0, 0, 1], [1, 1, 1]])
        tokens, _, feeds = onnx_generate(
            _counting_model(), prompt, attention_mask=mask, max_new_tokens=3, return_session=True
        )
        self.assertEqualArray(torch.tensor([[0, 0, 5, 6, 7, 8], [3, 4, 5, 6, 7, 8]]), tokens)
        self.assertEqualArray(
            torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]), feeds["attention_mask"]
        )
        self.assertEqualArray(torch.tensor([[2], [4]]), feeds["position_ids"])

    def test_session_passed_back(self):
        prompt = torch.tensor([[3, 4, 5]])
        first, session, _ = onnx_generate(
            _counting_model(), prompt, max_new_tokens=2, return_session=True
        )
        second = onnx_generate(session, prompt, max_new_tokens=2)
        self.assertEqualArray(first, second)

    def test_model_without_mask_nor_positions(self):
        model = _counting_model(with_mask=False, with_positions=False)
        tokens = onnx_generate(model, torch.tensor([[1]]), max_new_tokens=3)
        self.assertEqualArray(torch.tensor([[1, 2, 3, 4]]), tokens)

    def test_outputs_paired_by_order_when_not_named_present(self):
        model = _counting_model(layers=2, present_names=False)
        layout = model_layout(make_session(model))
        self.assertEqual(
            ["out_0_key", "out_0_value", "out_1_key", "out_1_value"], layout.cache_outputs
        )
        tokens = onnx_generate(model, torch.tensor([[1]]), max_new_tokens=3)
        self.assertEqualArray(torch.tensor([[1, 2, 3, 4]]), tokens)

    def test_file_name_and_int32_tokens(self):
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "counting.onnx")
            onnx.save(_counting_model(), name)
            tokens = onnx_generate(
                name, torch.tensor([[1, 2]], dtype=torch.int32), max_new_tokens=3
            )
        self.assertEqual(torch.int64, tokens.dtype)
        self.assertEqualArray(torch.tensor([[1, 2, 3, 4, 5]]), tokens)

    def test_cache_never_copied_through_numpy(self):
        from onnxruntime.capi.onnxruntime_inference_collection import OrtValue

        original = OrtValue.numpy
        converted = []

        def _logits_only(value, *args, **kwargs):
            # greedy decoding on CPU takes the argmax of the logits with numpy (a faster
            # argmax) through a preallocated buffer or a dlpack view, never a copy, and the
            # cache must never go through numpy
            if len(value.shape()) != 3:
                raise AssertionError(f"OrtValue.numpy was called on shape {value.shape()}")
            converted.append(tuple(value.shape()))
            return original(value, *args, **kwargs)

        with mock.patch.object(OrtValue, "numpy", _logits_only):
            tokens = onnx_generate(_counting_model(), torch.tensor([[1]]), max_new_tokens=5)
        self.assertEqualArray(torch.tensor([[1, 2, 3, 4, 5, 6]]), tokens)
        self.assertIs(OrtValue.numpy, original)
        self.assertEqual([], converted)

    def test_sampling(self):
        model = _counting_model()
        prompt = torch.tensor([[1, 2]])
        # top_k=1 keeps the most probable token only: it is greedy decoding
        sampled = onnx_generate(model, prompt, max_new_tokens=4, do_sample=True, top_k=1)
        self.assertEqualArray(torch.tensor([[1, 2, 3, 4, 5, 6]]), sampled)
        # a small top_p keeps the most probable token only
        sampled = onnx_generate(model, prompt, max_new_tokens=4, do_sample=True, top_p=0.1)
        self.assertEqualArray(torch.tensor([[1, 2, 3, 4, 5, 6]]), sampled)
        # a high temperature flattens the distribution, a seeded generator repeats itself
        runs = [
            onnx_generate(
                model,
                prompt,
                max_new_tokens=20,
                do_sample=True,
                temperature=100.0,
                generator=torch.Generator().manual_seed(7),
            )
            for _ in range(2)
        ]
        self.assertEqualArray(runs[0], runs[1])
        self.assertFalse(torch.equal(runs[0][0, 2:], torch.arange(3, 23) % 20))

    def test_bad_inputs(self):
        model = _counting_model()
        with self.assertRaisesRegex(ValueError, "input_ids must have a shape"):
            onnx_generate(model, torch.tensor([1, 2]))
        with self.assertRaisesRegex(ValueError, "input_ids must have a shape"):
            onnx_generate(model, torch.zeros((1, 0), dtype=torch.int64))
        with self.assertRaisesRegex(TypeError, "input_ids must be integers"):
            onnx_generate(model, torch.tensor([[1.0]]))
        with self.assertRaisesRegex(TypeError, "input_ids must be a torch.Tensor"):
            onnx_generate(model, [[1, 2]])
        with self.assertRaisesRegex(ValueError, "attention_mask must be a tensor"):
            onnx_generate(model, torch.tensor([[1, 2]]), attention_mask=torch.ones((1, 3)))
        for bad in (-1, 1.5, True, "3", None):
            with self.assertRaisesRegex(ValueError, "max_new_tokens must be an int >= 0"):
                onnx_generate(model, torch.tensor([[1]]), max_new_tokens=bad)
        with self.assertRaisesRegex(TypeError, "eos_token_id must be None"):
            onnx_generate(model, torch.tensor([[1]]), eos_token_id="2")
        with self.assertRaisesRegex(ValueError, "temperature must be > 0"):
            onnx_generate(model, torch.tensor([[1]]), do_sample=True, temperature=0)
        with self.assertRaisesRegex(ValueError, "top_k must be None"):
            onnx_generate(model, torch.tensor([[1]]), do_sample=True, top_k=0)
        with self.assertRaisesRegex(ValueError, "top_p must be None"):
            onnx_generate(model, torch.tensor([[1]]), do_sample=True, top_p=1.5)
        with self.assertRaisesRegex(
            FileNotFoundError, "onnx_generate: model_or_session='does_not_exist.onnx' does not"
        ):
            onnx_generate("does_not_exist.onnx", torch.tensor([[1]]))
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(FileNotFoundError, "is a folder"):
                onnx_generate(tmp, torch.tensor([[1]]))
            text = os.path.join(tmp, "notes.txt")
            with open(text, "w") as f:
                f.write("not a model")
            with self.assertRaisesRegex(
                ValueError, "model_or_session: '.*notes.txt' is not an ONNX"
            ):
                onnx_generate(text, torch.tensor([[1]]))
        with self.assertRaisesRegex(ValueError, "model_or_session: the given model is not an ONNX"):
            onnx_generate(b"garbage", torch.tensor([[1]]))
        with self.assertRaisesRegex(TypeError, "model_or_session must be"):
            onnx_generate(3, torch.tensor([[1]]))

    def test_bad_models(self):
        with self.assertRaisesRegex(ValueError, r"cannot feed: \['token_type_ids'\]"):
            onnx_generate(_counting_model(extra_input="token_type_ids"), torch.tensor([[1]]))
        with self.assertRaisesRegex(ValueError, "static heads and head_dim"):
            onnx_generate(_counting_model(symbolic_heads=True), torch.tensor([[1]]))
        model = _counting_model()
        model.graph.input[0].name = "tokens"
        model.graph.node[0].input[1] = "tokens"
        model.graph.node[1].input[0] = "tokens"
        with self.assertRaisesRegex(ValueError, "no input named 'input_ids'"):
            onnx_generate(model, torch.tensor([[1]]))
        model = _counting_model(layers=2, present_names=False)
        del model.graph.output[-1]
        with self.assertRaisesRegex(ValueError, "cannot pair the cache inputs"):
            onnx_generate(model, torch.tensor([[1]]))


def _counting_state_model(vocab: int = 12, state_dims: tuple = (1, 12)) -> onnx.ModelProto:
    """
    A handmade recurrent model taking one token per call: its state counts the tokens it
    received (``present.0.recurrent_state[b, 0, t]``), its logits are that state (the next
    token is the most frequent one so far, the smallest on a tie).
    """
    nodes = [
        oh.make_node("OneHot", ["input_ids", "depth", "values"], ["onehot"], axis=-1),
        oh.make_node("Add", ["past_key_values.0.recurrent_state", "onehot"], ["new_state"]),
        oh.make_node("Identity", ["new_state"], ["present.0.recurrent_state"]),
        oh.make_node("Identity", ["new_state"], ["logits"]),
    ]
    inputs = [
        oh.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 1]),
        oh.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
        oh.make_tensor_value_info(
            "past_key_values.0.recurrent_state", TensorProto.FLOAT, ["batch", *state_dims]
        ),
    ]
    outputs = [
        oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, vocab]),
        oh.make_tensor_value_info(
            "present.0.recurrent_state", TensorProto.FLOAT, ["batch", *state_dims]
        ),
    ]
    graph = oh.make_graph(
        nodes,
        "counting_state",
        inputs,
        outputs,
        [
            onh.from_array(np.array(vocab, dtype=np.int64), "depth"),
            onh.from_array(np.array([0, 1], dtype=np.float32), "values"),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=9)


class TestOnnxGenerateStates(ExtTestCase):
    """A model keeping a fixed-size state and taking one token at a time (mamba-like)."""

    @staticmethod
    def _expected(prompt, mask, new_tokens, vocab=12):
        counts = torch.zeros((prompt.shape[0], vocab))
        for t in range(prompt.shape[1]):
            counts += torch.nn.functional.one_hot(prompt[:, t], vocab) * mask[:, t : t + 1]
        tokens = [prompt]
        for _ in range(new_tokens):
            nxt = counts.argmax(dim=-1, keepdim=True)
            counts += torch.nn.functional.one_hot(nxt[:, 0], vocab)
            tokens.append(nxt)
        return torch.cat(tokens, dim=1), counts

    def test_layout(self):
        layout = model_layout(make_session(_counting_state_model()))
        self.assertTrue(layout.one_token)
        self.assertEqual(["past_key_values.0.recurrent_state"], layout.cache_inputs)
        self.assertEqual(["present.0.recurrent_state"], layout.cache_outputs)
        self.assertEqual(["recurrent_state"], layout.cache_kinds)
        self.assertEqual([(1, 12)], layout.cache_empty_shapes)

    def test_prompt_one_token_at_a_time_padding_leaves_the_state(self):
        sess = make_session(_counting_state_model())
        prompt = torch.tensor([[3, 5, 5, 7, 3, 3], [0, 0, 0, 9, 4, 9]])
        mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
        expected, _ = self._expected(prompt, mask, 5)
        got, _, feeds = onnx_generate(
            sess, prompt, attention_mask=mask, max_new_tokens=5, return_session=True
        )
        self.assertEqualArray(expected, got)
        # the state fed at the last step (its input_ids: the fourth generated token):
        # the prompt and the first three generated tokens, the three padding tokens (0)
        # of the second row left out
        _, counts = self._expected(prompt, mask, 3)
        self.assertEqualArray(counts[:, None, :], feeds["past_key_values.0.recurrent_state"])
        self.assertEqual(0, int(feeds["past_key_values.0.recurrent_state"][1, 0, 0]))

    def test_prompt_of_one_token(self):
        sess = make_session(_counting_state_model())
        prompt = torch.tensor([[4]])
        got = onnx_generate(sess, prompt, max_new_tokens=3)
        self.assertEqualArray(torch.tensor([[4, 4, 4, 4]]), got)

    def test_state_with_a_dynamic_dimension(self):
        sess = make_session(_counting_state_model(state_dims=(1, "vocab")))
        with self.assertRaises(ValueError) as cm:
            model_layout(sess)
        self.assertIn("past_key_values.0.recurrent_state", str(cm.exception))
        self.assertIn("static dimensions after the batch", str(cm.exception))


class TestOnnxGenerateTinyLLM(ExtTestCase):
    """onnx_generate reproduces transformers' greedy generation on the untrained Tiny-LLM."""

    @classmethod
    def setUpClass(cls):
        from onnx_diagnostic.export.api import to_onnx
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        torch.manual_seed(0)
        data = get_tiny_llm()
        cls.model = data["model"]
        # transformers must not stop on the eos of the configuration unless asked
        cls.model.generation_config.eos_token_id = None
        cls.model.generation_config.pad_token_id = None
        cls.tmp = tempfile.TemporaryDirectory()
        cls.filename = os.path.join(cls.tmp.name, "tiny_llm.onnx")
        with torch_export_patches(patch_transformers=True):
            to_onnx(
                cls.model,
                (),
                kwargs=data["inputs"],
                dynamic_shapes=data["dynamic_shapes"],
                filename=cls.filename,
            )
        cls.session = make_session(cls.filename)
        cls.vocab = cls.model.config.vocab_size

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _transformers(self, prompt, max_new_tokens, eos=None, mask=None):
        kwargs = {} if eos is None else dict(eos_token_id=eos, pad_token_id=eos)
        with torch.no_grad():
            return self.model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt) if mask is None else mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                **kwargs,
            )

    def test_model_layout(self):
        layout = model_layout(self.session)
        self.assertEqual(["past_key_values.0.key", "past_key_values.0.value"], layout.cache_inputs)
        self.assertEqual(["present.0.key", "present.0.value"], layout.cache_outputs)
        self.assertEqual([(1, 96), (1, 96)], layout.cache_shapes)
        self.assertEqual("attention_mask", layout.attention_mask)
        self.assertEqual("position_ids", layout.position_ids)

    def test_greedy_equals_transformers_without_eos(self):
        for batch in (1, 2):
            with self.subTest(batch=batch):
                prompt = torch.randint(
                    3, self.vocab, (batch, 8), generator=torch.Generator().manual_seed(batch)
                )
                expected = self._transformers(prompt, 20)
                got = onnx_generate(self.session, prompt, max_new_tokens=20)
                self.assertEqual((batch, 28), tuple(got.shape))
                self.assertEqualArray(expected, got)

    def test_greedy_equals_transformers_with_eos_hit(self):
        for batch in (1, 2):
            with self.subTest(batch=batch):
                prompt = torch.randint(
                    3, self.vocab, (batch, 8), generator=torch.Generator().manual_seed(10 + batch)
                )
                free = onnx_generate(self.session, prompt, max_new_tokens=12)
                # the token row 0 produces at the fifth step becomes the eos token
                eos = int(free[0, 8 + 4])
                expected = self._transformers(prompt, 12, eos=eos)
                got = onnx_generate(self.session, prompt, eos_token_id=eos, max_new_tokens=12)
                self.assertEqualArray(expected, got)
                self.assertEqual(eos, int(got[0, 8 + 4]))
                self.assertLess(got.shape[1], 8 + 12 + 1)
                if batch == 1:
                    self.assertEqual(8 + 5, got.shape[1])

    def test_max_new_tokens_zero_on_the_exported_llm(self):
        prompt = torch.tensor([[5, 6, 7]])
        got = onnx_generate(self.filename, prompt, eos_token_id=-1, max_new_tokens=0)
        self.assertEqualArray(prompt, got)
        got, session, feeds = onnx_generate(
            self.session, prompt, max_new_tokens=0, return_session=True
        )
        self.assertEqualArray(prompt, got)
        self.assertIs(session, self.session)
        self.assertEqual(feeds, {})

    def test_onnxruntime_failure_says_which_step(self):
        with self.assertRaises(RuntimeError) as cm:
            onnx_generate(self.session, torch.tensor([[1, 2, self.vocab + 10]]), max_new_tokens=2)
        msg = str(cm.exception)
        self.assertIn("onnx_generate: onnxruntime failed at step 0 (prefill", msg)
        self.assertIn(f"ids in [1, {self.vocab + 10}]", msg)
        self.assertIn("Gather", msg)

    def test_greedy_equals_transformers_left_padding(self):
        prompt = torch.randint(3, self.vocab, (2, 8), generator=torch.Generator().manual_seed(5))
        mask = torch.ones_like(prompt)
        mask[1, :3] = 0
        prompt[1, :3] = 0
        expected = self._transformers(prompt, 10, mask=mask)
        got = onnx_generate(self.session, prompt, attention_mask=mask, max_new_tokens=10)
        self.assertEqualArray(expected, got)


class TestOrtProfile(ExtTestCase):
    """js_profile_to_dataframe and plot_ort_profile on a real onnxruntime profile."""

    @classmethod
    def setUpClass(cls):
        import onnx.helper as oh
        import onnxruntime

        model = oh.make_model(
            oh.make_graph(
                [oh.make_node("Add", ["X", "X"], ["Y"]), oh.make_node("Abs", ["Y"], ["Z"])],
                "g",
                [oh.make_tensor_value_info("X", 1, [None, None])],
                [oh.make_tensor_value_info("Z", 1, [None, None])],
            ),
            opset_imports=[oh.make_opsetid("", 18)],
            ir_version=9,
        )
        cls.tmp = tempfile.TemporaryDirectory()
        opts = onnxruntime.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(cls.tmp.name, "prof")
        sess = onnxruntime.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        for _ in range(4):
            sess.run(None, {"X": np.arange(6, dtype=np.float32).reshape(2, 3)})
        cls.profile = sess.end_profiling()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_events(self):
        from onnx_diagnostic.helpers.rt_helper import js_profile_to_dataframe

        df = js_profile_to_dataframe(self.profile)
        kernels = df[df["event_name"] == "kernel_time"]
        self.assertEqual(sorted(set(kernels["op_name"])), ["Abs", "Add"])
        self.assertEqual(sorted(set(kernels["iteration"])), [0, 1, 2, 3])
        self.assertEqual(int(kernels["it==0"].sum()), 2)
        self.assertIn("float[2x3],float[2x3]", set(kernels["input_type_shape"]))
        self.assertEqual(set(df[df["name"] == "session_initialization"]["iteration"]), {-1})
        rows = js_profile_to_dataframe(self.profile, as_df=False)
        self.assertEqual(len(rows), len(df))

    def test_aggregation(self):
        from onnx_diagnostic.helpers.rt_helper import js_profile_to_dataframe

        agg = js_profile_to_dataframe(self.profile, agg=True)
        self.assertEqual(sorted(agg.index), ["Abs", "Add"])
        self.assertEqual(agg["count"].tolist(), [4, 4])
        self.assertAlmostEqual(float(agg["pct"].sum()), 100.0, atol=1e-6)
        out = js_profile_to_dataframe(self.profile, agg=True, first_it_out=True)
        self.assertEqual(out["count"].tolist(), [3, 3])
        by_node = js_profile_to_dataframe(self.profile, agg=True, agg_op_name=False)
        self.assertEqual(len(by_node), 2)
        shaped = js_profile_to_dataframe(self.profile, agg=True, with_shape=True)
        self.assertIn("Add(float[2x3],float[2x3])", shaped.index)

    def test_plot(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from onnx_diagnostic.helpers.rt_helper import js_profile_to_dataframe, plot_ort_profile

        df = js_profile_to_dataframe(self.profile)
        fig, (ax0, ax1) = plt.subplots(1, 2)
        self.assertIs(plot_ort_profile(df, ax0, ax1, title="t"), ax0)
        self.assertEqual(ax0.get_title(), "t")
        plt.close(fig)
        with self.assertRaises(ValueError) as cm:
            plot_ort_profile(js_profile_to_dataframe(self.profile, agg=True))
        self.assertIn("no column 'cat'", str(cm.exception))

    def test_bad_input(self):
        from onnx_diagnostic.helpers.rt_helper import js_profile_to_dataframe

        with self.assertRaises(FileNotFoundError):
            js_profile_to_dataframe("missing.json")
        with self.assertRaises(TypeError):
            js_profile_to_dataframe(3)
        with tempfile.TemporaryDirectory() as tmp:
            bad = os.path.join(tmp, "bad.json")
            with open(bad, "w") as f:
                f.write("{not json")
            with self.assertRaises(ValueError) as cm:
                js_profile_to_dataframe(bad)
            self.assertIn("is not a JSON profile", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            js_profile_to_dataframe([{"dur": 3}])
        self.assertIn("event 0 is not a profile event", str(cm.exception))
        self.assertEqual(len(js_profile_to_dataframe([])), 0)

    def test_docstring(self):
        import doctest

        from onnx_diagnostic.helpers import _ort_profile

        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)  # onnxruntime writes its profile in the current folder
            try:
                res = doctest.testmod(_ort_profile, verbose=False)
            finally:
                os.chdir(cwd)
        self.assertEqual(res.failed, 0)


class TestMakeFeeds(ExtTestCase):
    def test_names_and_nested_inputs(self):
        from onnx_diagnostic.cache_helpers import make_dynamic_cache
        from onnx_diagnostic.helpers.rt_helper import make_feeds

        kv = torch.ones(1, 2, 3, 4)
        cache = make_dynamic_cache([(kv, kv * 2)])
        names = ["input_ids", "past_key_values.0.key", "past_key_values.0.value"]
        feeds = make_feeds(names, dict(input_ids=torch.tensor([[1, 2]]), cache=cache))
        self.assertEqual(list(feeds), names)
        self.assertEqual(float(feeds["past_key_values.0.value"][0, 0, 0, 0]), 2.0)
        feeds = make_feeds(names, (torch.tensor([[1]]), cache), use_numpy=True, copy=True)
        self.assertIsInstance(feeds["input_ids"], np.ndarray)
        bf = make_feeds(["x"], [torch.ones(2, dtype=torch.bfloat16)], use_numpy=True)
        self.assertEqual(str(bf["x"].dtype), "bfloat16")
        x = torch.zeros(2)
        self.assertIsNot(make_feeds(["x"], [x], copy=True)["x"], x)
        self.assertIs(make_feeds(["x"], [x])["x"], x)
        self.assertEqual(make_feeds([], ()), {})

    def test_from_model_and_session(self):
        from onnx_diagnostic.helpers.rt_helper import make_feeds

        model = oh.make_model(
            oh.make_graph(
                [oh.make_node("Add", ["a", "b"], ["c"])],
                "g",
                [oh.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "ab"],
                [oh.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
            ),
            opset_imports=[oh.make_opsetid("", 18)],
            ir_version=9,
        )
        inputs = (torch.ones(2), torch.ones(2))
        self.assertEqual(list(make_feeds(model, inputs)), ["a", "b"])
        sess = make_session(model)
        got = sess.run(None, make_feeds(sess, inputs, use_numpy=True))
        self.assertEqual(got[0].tolist(), [2.0, 2.0])

    def test_bad_inputs(self):
        from onnx_diagnostic.helpers.rt_helper import make_feeds

        with self.assertRaises(ValueError) as cm:
            make_feeds(["a", "b"], (torch.ones(1),))
        self.assertIn(
            "the model has 2 inputs ['a', 'b'] but inputs holds 1 tensors", str(cm.exception)
        )
        with self.assertRaises(TypeError) as cm:
            make_feeds(3, (torch.ones(1),))
        self.assertIn("make_feeds: proto must be", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
