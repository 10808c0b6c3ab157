import os
import tempfile
import unittest

import numpy as np
import onnx
import torch

from onnx_diagnostic.cache_helpers import (
    get_cache_kv,
    get_cache_layer_types,
    make_dynamic_cache,
    make_encoder_decoder_cache,
    make_sliding_window_cache,
    make_static_cache,
)

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.compat import cache_class
from onnx_diagnostic.helpers.mini_onnx_builder import (
    DumpFormatError,
    create_input_tensors_from_onnx_model,
    create_onnx_model_from_input_tensors,
    proto_to_tensor,
    save_onnx_dump,
    tensor_to_proto,
)

ALL_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
]


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _random(shape, dtype):
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), shape, dtype=dtype)


class TestMiniOnnxBuilder(ExtTestCase):
    def assert_bit_exact(self, expected, got, where="obj"):
        """Same types, same structure, same bytes (NaN and -0.0 included)."""
        self.assertEqual(type(expected), type(got), msg=where)
        if isinstance(expected, torch.Tensor):
            self.assertEqual(expected.dtype, got.dtype, msg=where)
            self.assertEqual(expected.shape, got.shape, msg=where)
            self.assertEqual(_bits(expected), _bits(got), msg=where)
        elif isinstance(expected, np.ndarray):
            self.assertEqual(expected.dtype, got.dtype, msg=where)
            self.assertEqual(expected.shape, got.shape, msg=where)
            self.assertEqual(expected.tobytes(), got.tobytes(), msg=where)
        elif isinstance(expected, (tuple, list)):
            self.assertEqual(len(expected), len(got), msg=where)
            for i, (e, g) in enumerate(zip(expected, got)):
                self.assert_bit_exact(e, g, f"{where}[{i}]")
        elif isinstance(expected, dict):
            self.assertEqual(list(expected), list(got), msg=where)
            for k in expected:
                self.assert_bit_exact(expected[k], got[k], f"{where}[{k!r}]")
        elif type(expected).__name__ == "EncoderDecoderCache":
            self.assert_bit_exact(
                expected.self_attention_cache, got.self_attention_cache, f"{where}.self"
            )
            self.assert_bit_exact(
                expected.cross_attention_cache, got.cross_attention_cache, f"{where}.cross"
            )
        elif type(expected).__name__.endswith("Cache"):
            self.assertEqual(get_cache_layer_types(expected), get_cache_layer_types(got))
            self.assert_bit_exact(list(get_cache_kv(expected)), list(get_cache_kv(got)), where)
        elif hasattr(expected, "to_tuple"):
            self.assert_bit_exact(dict(expected.items()), dict(got.items()), where)
        else:
            self.assertEqual(expected, got, msg=where)

    def roundtrip(self, obj, **kwargs):
        proto = create_onnx_model_from_input_tensors(obj)
        onnx.checker.check_model(proto)
        got = create_input_tensors_from_onnx_model(proto, **kwargs)
        self.assert_bit_exact(obj, got)
        return proto, got

    def test_every_dtype_is_bit_exact(self):
        for dtype in ALL_DTYPES:
            with self.subTest(dtype=dtype):
                self.roundtrip(_random((3, 5), dtype))

    def test_special_float_values_are_bit_exact(self):
        values = [float("nan"), float("inf"), -float("inf"), -0.0, 1e-40, 65504.0, 3.14159]
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                self.roundtrip(torch.tensor(values).to(dtype))

    def test_bfloat16_keeps_every_bit_pattern(self):
        every = torch.arange(-(2**15), 2**15, dtype=torch.int32)
        patterns = every.to(torch.int16).view(torch.bfloat16)
        _, got = self.roundtrip(patterns)
        self.assertEqual(got.view(torch.int16).tolist(), patterns.view(torch.int16).tolist())

    def test_empty_and_zero_dim_tensors(self):
        for dtype in ALL_DTYPES:
            with self.subTest(dtype=dtype):
                self.roundtrip([torch.empty((0, 3), dtype=dtype), _random((), dtype)])
        self.roundtrip(torch.empty((2, 0, 4)))
        # a 0-d numpy array stays 0-d
        got = create_input_tensors_from_onnx_model(
            create_onnx_model_from_input_tensors(np.array(3.0, dtype=np.float32))
        )
        self.assertEqual((got.shape, float(got)), ((), 3.0))

    def test_non_contiguous_and_grad_tensors(self):
        t = torch.randn(4, 6, requires_grad=True)
        _, got = self.roundtrip((t.detach().t(), t[:, ::2].detach()))
        self.assertFalse(got[0].requires_grad)
        proto = create_onnx_model_from_input_tensors(t)
        self.assert_bit_exact(t.detach(), create_input_tensors_from_onnx_model(proto))

    def test_nested_containers_and_scalars(self):
        obj = (
            [torch.ones(2), None, (), [], {}],
            dict(a=1, b=-2.5, c=True, d="text/with%slash é", e=None, f=2**62),
            {0: torch.zeros(1), 1: (torch.arange(3),)},
            {("model", 0, "I"): ((torch.arange(2),), {}), ("model", 0, "O"): torch.ones(1)},
            {"x.y/z": torch.ones(1), "%2F": torch.zeros(1), "": torch.ones(2)},
        )
        self.roundtrip(obj)

    def test_root_leaves(self):
        for obj in (None, 3, 2.5, False, "", "abc", (), [], {}, torch.tensor(1.0)):
            with self.subTest(obj=obj):
                self.roundtrip(obj)

    def test_numpy_arrays_come_back_as_numpy(self):
        self.roundtrip(dict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.array([True])))

    def test_output_names_encode_the_structure(self):
        cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
        obj = dict(ids=torch.ones(1), past=cache, misc=(None, 1, [], {("a", 0): 2.5}))
        proto = create_onnx_model_from_input_tensors(obj)
        self.assertEqual(
            [o.name for o in proto.graph.output],
            [
                'dict:"ids"/tensor',
                'dict:"past"/DynamicCache[full]:0/tensor',
                'dict:"past"/DynamicCache[full]:1/tensor',
                'dict:"misc"/tuple:0/none',
                'dict:"misc"/tuple:1/int',
                'dict:"misc"/tuple:2/empty:list',
                'dict:"misc"/tuple:3/dict:["a",0]/float',
            ],
        )
        self.assertEqual({n.op_type for n in proto.graph.node}, {"Identity"})
        self.assertEqual(len(proto.graph.initializer), 7)

    def test_dynamic_cache(self):
        cache = make_dynamic_cache(
            [(torch.randn(2, 4, 3, 7), torch.randn(2, 4, 3, 7)) for _ in range(3)]
        )
        _, got = self.roundtrip(dict(past_key_values=cache, empty=make_dynamic_cache([])))
        self.assertEqual(type(got["past_key_values"]).__name__, "DynamicCache")

    @unittest.skipIf(cache_class("DynamicSlidingWindowLayer") is None, "no sliding window layers")
    def test_sliding_layers_come_back(self):
        cache = make_dynamic_cache(
            [(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)) for _ in range(3)],
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            sliding_window=5,
        )
        _, got = self.roundtrip(cache)
        self.assertEqual(
            get_cache_layer_types(got),
            ["sliding_attention", "full_attention", "sliding_attention"],
        )
        self.assertEqual(got.layers[0].sliding_window, 5)
        _, got = self.roundtrip(make_sliding_window_cache([(torch.ones(1, 1, 2, 2),) * 2], 8))
        self.assertEqual(got.layers[0].sliding_window, 8)

    def test_encoder_decoder_cache(self):
        sa = make_dynamic_cache([(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))])
        ca = make_dynamic_cache([(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4))])
        _, got = self.roundtrip([make_encoder_decoder_cache(sa, ca)])
        self.assertEqual(type(got[0]).__name__, "EncoderDecoderCache")

    def test_static_cache_keeps_its_length(self):
        cache = make_static_cache([(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))] * 2, 6)
        _, got = self.roundtrip(cache)
        self.assertEqual(type(got).__name__, "StaticCache")
        self.assertEqual(int(got.get_seq_length()), 3)
        self.assertEqual(got.layers[0].keys.shape[2], 6)

    def test_model_output_with_cache(self):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        cache = make_dynamic_cache([(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))])
        out = CausalLMOutputWithPast(logits=torch.randn(1, 3, 10), past_key_values=cache)
        _, got = self.roundtrip(out)
        self.assertIsInstance(got, CausalLMOutputWithPast)
        self.assertIsNone(got.loss)

    def test_other_runtimes_replay_the_dump(self):
        obj = dict(a=torch.randn(2, 3), b=[torch.arange(4), torch.tensor(True)])
        proto = create_onnx_model_from_input_tensors(obj)
        import onnxruntime

        sess = onnxruntime.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        results = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {})))
        self.assertEqual(results['dict:"a"/tensor'].tolist(), obj["a"].tolist())
        self.assertEqual(results['dict:"b"/list:0/tensor'].tolist(), [0, 1, 2, 3])
        obj["c"] = _random((2, 2), torch.bfloat16)
        self.roundtrip(obj, engine="reference")

    def test_save_and_load_file(self):
        obj = dict(x=torch.randn(3, 4), y=(torch.arange(2), "s"))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dump.onnx")
            proto = create_onnx_model_from_input_tensors(obj)
            self.assertFalse(save_onnx_dump(proto, path))
            self.assertFalse(os.path.exists(path + ".data"))
            self.assert_bit_exact(obj, create_input_tensors_from_onnx_model(path))

    def test_large_dump_uses_external_data(self):
        obj = dict(x=torch.randn(64, 64), y=[_random((10,), torch.bfloat16), torch.empty(0)])
        proto = create_onnx_model_from_input_tensors(obj)
        before = proto.SerializeToString()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dump.onnx")
            for _ in range(2):  # saving twice must not append to the data file
                self.assertTrue(save_onnx_dump(proto, path, external_data_threshold=1024))
                self.assertEqual(os.path.getsize(path + ".data"), 64 * 64 * 4 + 20)
            self.assertLess(os.path.getsize(path), 4096)
            self.assertEqual(proto.SerializeToString(), before)  # not modified
            self.assert_bit_exact(obj, create_input_tensors_from_onnx_model(path))
            light = onnx.load(path, load_external_data=False)
            with self.assertRaises(ValueError) as cm:
                create_input_tensors_from_onnx_model(light)
            self.assertIn("stored outside the model", str(cm.exception))

    def test_device_argument(self):
        proto = create_onnx_model_from_input_tensors([torch.ones(2)])
        got = create_input_tensors_from_onnx_model(proto, device="meta")
        self.assertEqual(got[0].device.type, "meta")

    def test_switch_low_high_swaps_bytes(self):
        t = torch.tensor([1, 256], dtype=torch.int16)
        proto = tensor_to_proto(t, "t", switch_low_high=True)
        self.assertEqual(proto_to_tensor(proto).tolist(), [256, 1])
        self.assertEqual(proto_to_tensor(tensor_to_proto(t, "t", False)).tolist(), [1, 256])
        c = torch.tensor([1 + 2j], dtype=torch.complex64)
        swapped = proto_to_tensor(tensor_to_proto(c, "c", switch_low_high=True))
        back = swapped.view(torch.int32).numpy().byteswap()
        self.assertEqual(back.tobytes(), c.view(torch.int32).numpy().tobytes())

    def test_proto_with_typed_fields(self):
        proto = onnx.helper.make_tensor("t", onnx.TensorProto.FLOAT, [2], [1.5, -2.0])
        self.assertEqual(proto_to_tensor(proto).tolist(), [1.5, -2.0])
        proto = onnx.helper.make_tensor("t", onnx.TensorProto.BFLOAT16, [1], [1.5])
        self.assertEqual(proto_to_tensor(proto).to(torch.float32).tolist(), [1.5])

    def test_unsupported_type_names_the_path(self):
        with self.assertRaises(TypeError) as cm:
            create_onnx_model_from_input_tensors(dict(a=[torch.ones(1), {1, 2}]))
        self.assertIn("obj['a'][1]", str(cm.exception))
        self.assertIn("set", str(cm.exception))

    def test_unsupported_key_names_the_path(self):
        with self.assertRaises(TypeError) as cm:
            create_onnx_model_from_input_tensors([{torch.float32: torch.ones(1)}])
        self.assertIn("obj[0]", str(cm.exception))
        self.assertIn("dictionary key", str(cm.exception))

    def test_integer_overflow(self):
        with self.assertRaises(OverflowError) as cm:
            create_onnx_model_from_input_tensors(dict(n=2**70))
        self.assertIn("obj['n']", str(cm.exception))

    def test_meta_tensor_is_refused(self):
        with self.assertRaises(TypeError) as cm:
            create_onnx_model_from_input_tensors(torch.empty(2, device="meta"))
        self.assertIn("meta", str(cm.exception))

    def test_model_that_is_not_a_dump(self):
        x = onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1])
        y = onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [1])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Neg", ["X"], ["Y"])], "g", [x], [y])
        model = onnx.helper.make_model(graph)
        with self.assertRaises(DumpFormatError) as cm:
            create_input_tensors_from_onnx_model(model)
        self.assertIn("not a dump", str(cm.exception))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "text.onnx")
            with open(path, "w") as f:
                f.write("this is not onnx")
            with self.assertRaises(DumpFormatError) as cm:
                create_input_tensors_from_onnx_model(path)
            self.assertIn("not an ONNX model", str(cm.exception))
            with self.assertRaises(FileNotFoundError):
                create_input_tensors_from_onnx_model(os.path.join(tmp, "missing.onnx"))

    def test_corrupted_dump(self):
        proto = create_onnx_model_from_input_tensors((torch.ones(1), torch.ones(2)))
        proto.graph.output[1].name = proto.graph.node[1].output[0] = "tuple:1/oops"
        with self.assertRaises(DumpFormatError) as cm:
            create_input_tensors_from_onnx_model(proto)
        self.assertIn("unknown leaf", str(cm.exception))
        proto = create_onnx_model_from_input_tensors((torch.ones(1), torch.ones(2)))
        del proto.graph.output[0]
        with self.assertRaises(DumpFormatError) as cm:
            create_input_tensors_from_onnx_model(proto)
        self.assertIn("missing elements", str(cm.exception))
        proto = create_onnx_model_from_input_tensors((torch.ones(1), torch.ones(2)))
        proto.graph.output[1].name = "tuple:0/tensor"
        with self.assertRaises(DumpFormatError) as cm:
            create_input_tensors_from_onnx_model(proto)
        self.assertIn("duplicated position", str(cm.exception))

    def test_bad_arguments(self):
        proto = create_onnx_model_from_input_tensors(torch.ones(1))
        with self.assertRaises(ValueError) as cm:
            create_input_tensors_from_onnx_model(proto, engine="onnxruntime")
        self.assertIn("engine", str(cm.exception))
        with self.assertRaises(TypeError):
            create_input_tensors_from_onnx_model(3)
        with self.assertRaises(TypeError):
            save_onnx_dump(torch.ones(1), "x.onnx")
        with self.assertRaises(TypeError):
            tensor_to_proto([1.0], "t")


class TestNumpyArrays(ExtTestCase):
    """numpy arrays of every numeric dtype, ml_dtypes included, stored bit-exact."""

    def _roundtrip(self, obj, engine="onnx"):
        return create_input_tensors_from_onnx_model(
            create_onnx_model_from_input_tensors(obj), engine=engine
        )

    def test_ml_dtypes_arrays_bit_exact(self):
        import ml_dtypes

        values = np.array([[-2.5, 0.0, 1.0], [3.0, -0.5, 6.0]], dtype=np.float32)
        for name, onnx_type in [
            ("bfloat16", onnx.TensorProto.BFLOAT16),
            ("float8_e4m3fn", onnx.TensorProto.FLOAT8E4M3FN),
            ("float8_e5m2", onnx.TensorProto.FLOAT8E5M2),
            ("int4", onnx.TensorProto.INT4),
            ("uint4", onnx.TensorProto.UINT4),
            ("float4_e2m1fn", onnx.TensorProto.FLOAT4E2M1),
        ]:
            dtype = getattr(ml_dtypes, name)
            a = np.abs(values).astype(dtype) if name == "uint4" else values.astype(dtype)
            proto = create_onnx_model_from_input_tensors({"a": a})
            self.assertEqual(proto.graph.initializer[0].data_type, onnx_type)
            for engine in ("onnx", "reference"):
                with self.subTest(dtype=name, engine=engine):
                    back = self._roundtrip({"a": a, "empty": a[:0], "s": a[1, 2]}, engine)
                    self.assertEqual(back["a"].dtype, a.dtype)
                    self.assertEqual(back["a"].shape, (2, 3))
                    self.assertEqual(back["a"].view(np.uint8).tolist(), a.view(np.uint8).tolist())
                    self.assertEqual(back["empty"].shape, (0, 3))
                    self.assertEqual(back["empty"].dtype, a.dtype)
                    self.assertEqual(back["s"].dtype, a.dtype)
                    self.assertEqual(np.asarray(back["s"]).shape, ())
                    self.assertEqual(float(back["s"]), float(a[1, 2]))

    def test_numpy_scalars_and_0d_arrays(self):
        back = self._roundtrip([np.float32(3), np.int8(-2), np.array(5, dtype=np.int64)])
        self.assertIsInstance(back[0], np.float32)
        self.assertEqual(back[0], 3)
        self.assertIsInstance(back[1], np.int8)
        self.assertIsInstance(back[2], np.ndarray)
        self.assertEqual(back[2].shape, ())
        self.assertEqual(int(back[2]), 5)

    def test_native_dtypes_unchanged(self):
        for dtype in (np.float16, np.float64, np.uint64, np.bool_, np.complex64):
            a = np.arange(4).reshape(2, 2).astype(dtype)
            back = self._roundtrip(a)
            self.assertEqual(back.dtype, a.dtype)
            self.assertEqual(back.tolist(), a.tolist())

    def test_not_numeric_arrays_refused_with_path(self):
        for bad, what in [
            (np.array(["a", "b"]), "str"),
            (np.array([b"a"]), "bytes"),
            (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetime64"),
            (np.array([1], dtype="timedelta64[s]"), "timedelta64"),
            (np.array([{}, 1], dtype=object), "object"),
            (np.zeros(2, dtype=[("f", "i4")]), "cannot be stored"),
        ]:
            with self.subTest(dtype=str(bad.dtype)):
                with self.assertRaises(TypeError) as cm:
                    create_onnx_model_from_input_tensors([1, {"x": bad}])
                msg = str(cm.exception)
                self.assertIn("obj[1]['x']", msg)
                self.assertIn(what, msg)
                self.assertIn(str(bad.dtype), msg)


class TestUnstorableValues(ExtTestCase):
    def test_errors_raise_names_the_path(self):
        with self.assertRaises(TypeError) as cm:
            create_onnx_model_from_input_tensors({"a": [torch.ones(1), {1, 2}]})
        self.assertIn("obj['a'][1]: type set cannot be stored", str(cm.exception))

    def test_errors_mark_keeps_the_rest(self):
        from onnx_diagnostic.helpers.mini_onnx_builder import Unstored, unstored_values

        obj = {"a": [torch.ones(1), {1, 2}], "b": 2**70, "c": (None, np.array(["s"]))}
        proto = create_onnx_model_from_input_tensors(obj, errors="mark")
        back = create_input_tensors_from_onnx_model(proto)
        self.assertEqual(back["a"][0].tolist(), [1.0])
        self.assertEqual(back["a"][1].type_name, "set")
        self.assertIsInstance(back["b"], Unstored)
        self.assertIn("does not fit in int64", back["b"].reason)
        self.assertIsNone(back["c"][0])
        self.assertEqual(back["c"][1].type_name, "ndarray")
        self.assertEqual(
            [p for p, _ in unstored_values(proto)], ["obj['a'][1]", "obj['b']", "obj['c'][1]"]
        )
        # reason without the path, the path is the first element
        self.assertFalse(unstored_values(proto)[0][1].startswith("obj"))
        self.assertEqual(unstored_values(create_onnx_model_from_input_tensors(1)), [])
        with self.assertRaises(ValueError) as cm:
            create_onnx_model_from_input_tensors(obj, errors="ignore")
        self.assertIn("errors='ignore'", str(cm.exception))

    def test_structure_containing_itself(self):
        cyclic = [torch.ones(1)]
        cyclic.append({"loop": cyclic})
        with self.assertRaises(TypeError) as cm:
            create_onnx_model_from_input_tensors(cyclic)
        self.assertIn("obj[1]['loop']: the structure contains itself", str(cm.exception))
        back = create_input_tensors_from_onnx_model(
            create_onnx_model_from_input_tensors(cyclic, errors="mark")
        )
        self.assertEqual(back[0].tolist(), [1.0])
        self.assertEqual(back[1]["loop"].type_name, "list")
        # the same object twice is not a cycle
        shared = [torch.ones(1)]
        back = create_input_tensors_from_onnx_model(
            create_onnx_model_from_input_tensors((shared, shared))
        )
        self.assertEqual(len(back), 2)

    def test_empty_file_and_folder(self):
        with tempfile.TemporaryDirectory() as tmp:
            empty = os.path.join(tmp, "empty.onnx")
            open(empty, "wb").close()
            with self.assertRaises(DumpFormatError) as cm:
                create_input_tensors_from_onnx_model(empty)
            self.assertIn("is empty (0 bytes)", str(cm.exception))
            with self.assertRaises(DumpFormatError) as cm:
                create_input_tensors_from_onnx_model(tmp)
            self.assertIn("is a folder", str(cm.exception))


class TestDocstrings(ExtTestCase):
    def test_docstring_examples(self):
        import doctest

        from onnx_diagnostic.helpers import mini_onnx_builder

        res = doctest.testmod(mini_onnx_builder, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertEqual(res.failed, 0)
        self.assertGreater(res.attempted, 3)


class TestMiniOnnxBuilderClass(ExtTestCase):
    """onnx-diagnostic's MiniOnnxBuilder and proto_from_array"""

    def _run(self, proto):
        import onnxruntime

        sess = onnxruntime.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {})))

    def test_initializers_sequence_dict(self):
        from onnx_diagnostic.helpers.mini_onnx_builder import MiniOnnxBuilder

        b = MiniOnnxBuilder()
        b.append_output_initializer("x", torch.arange(6, dtype=torch.int64).reshape((2, 3)))
        b.append_output_initializer("y", np.array([1.5, 2.5], dtype=np.float16))
        b.append_output_sequence("s", [torch.zeros(1), torch.ones(3)])
        b.append_output_sequence("empty", [])
        b.append_output_dict("d", dict(a=torch.ones(2), b=torch.zeros(2)))
        proto = b.to_onnx()
        onnx.checker.check_model(proto)
        got = self._run(proto)
        self.assertEqual(list(got), ["x", "y", "s", "empty", "d___keys", "d___values"])
        self.assertEqualArray(got["x"], np.arange(6).reshape((2, 3)))
        self.assertEqual(got["y"].dtype, np.float16)
        self.assertEqual([t.shape for t in got["s"]], [(1,), (3,)])
        self.assertEqual(got["empty"], [])
        self.assertEqual(got["d___keys"].tolist(), ["a", "b"])
        self.assertEqualArray(got["d___values"][0], np.ones(2, dtype=np.float32))

    def test_bfloat16_bit_exact(self):
        from onnx_diagnostic.helpers.mini_onnx_builder import MiniOnnxBuilder, proto_to_tensor

        t = torch.tensor([1.5, -0.0078125, 3.0], dtype=torch.bfloat16)
        b = MiniOnnxBuilder(sep="__")
        b.append_output_initializer("t", t)
        proto = b.to_onnx()
        init = proto.graph.initializer[0]
        self.assertEqual(init.name, "t_t")
        self.assertEqual(init.data_type, onnx.TensorProto.BFLOAT16)
        self.assertEqual(
            proto_to_tensor(init).view(torch.int16).tolist(), t.view(torch.int16).tolist()
        )

    def test_randomize(self):
        from onnx_diagnostic.helpers.mini_onnx_builder import MiniOnnxBuilder

        b = MiniOnnxBuilder()
        b.append_output_initializer("w", torch.rand((50, 40)), randomize=True)
        b.append_output_initializer("i", torch.arange(3), randomize=True)
        proto = b.to_onnx()
        self.assertEqual([n.op_type for n in proto.graph.node], ["RandomNormal", "Identity"])
        self.assertEqual(len(proto.graph.initializer), 1)
        got = self._run(proto)
        self.assertEqual(got["w"].shape, (50, 40))
        self.assertEqual(got["i"].tolist(), [0, 1, 2])

    def test_bad_inputs(self):
        from onnx_diagnostic.helpers.mini_onnx_builder import MiniOnnxBuilder

        b = MiniOnnxBuilder()
        b.append_output_initializer("x", torch.zeros(1))
        self.assertRaise(
            lambda: b.append_output_initializer("x", torch.zeros(1)), ValueError, "'x' already"
        )
        self.assertRaise(
            lambda: b.append_output_initializer("z", [1, 2]), TypeError, "must be a torch.Tensor"
        )
        self.assertRaise(
            lambda: b.append_output_initializer("", torch.zeros(1)), TypeError, "name must be"
        )
        self.assertRaise(
            lambda: b.append_output_sequence(
                "s", [torch.zeros(1), torch.zeros(1, dtype=torch.int64)]
            ),
            TypeError,
            "one element type",
        )
        self.assertRaise(lambda: b.append_output_sequence("s", torch.zeros(1)), TypeError, "a list")
        self.assertRaise(lambda: b.append_output_dict("d", {1: torch.zeros(1)}), TypeError, "keys")
        self.assertRaise(lambda: MiniOnnxBuilder(sep=""), ValueError, "sep must be")

    def test_proto_from_array(self):
        import ml_dtypes

        from onnx_diagnostic.helpers.mini_onnx_builder import proto_from_array, proto_to_tensor

        p = proto_from_array(torch.arange(4, dtype=torch.int32), name="a")
        self.assertEqual((p.name, p.data_type, list(p.dims)), ("a", 6, [4]))
        self.assertEqual(proto_to_tensor(p).tolist(), [0, 1, 2, 3])
        p = proto_from_array(np.array([1.5], dtype=ml_dtypes.bfloat16))
        self.assertEqual((p.name, p.data_type), ("", onnx.TensorProto.BFLOAT16))
        p = proto_from_array(torch.zeros((0, 3)))
        self.assertEqual(list(p.dims), [0, 3])
        self.assertRaise(lambda: proto_from_array([1.0]), TypeError, "arr must be")
        self.assertRaise(lambda: proto_from_array(torch.zeros(1), name=3), TypeError, "name must")

    def test_docstrings(self):
        from onnx_diagnostic.helpers import _mini_builder

        self.assertDocstringExamples(_mini_builder)


if __name__ == "__main__":
    unittest.main(verbosity=2)
