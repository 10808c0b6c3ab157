import doctest
import os
import tempfile
import unittest
from unittest import mock

import numpy as np
import onnx
import onnxruntime
import torch
import torch.utils._pytree as pytree

from onnx_diagnostic.cache_helpers import make_dynamic_cache, make_encoder_decoder_cache
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.export import api
from onnx_diagnostic.export.api import EXPORTERS, ExportStepError, to_onnx
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _run(onx: onnx.ModelProto, feeds: dict) -> list:
    sess = onnxruntime.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.detach().cpu().numpy() for k, v in feeds.items()})


def _onnx_feeds(names: list[str], inputs: dict) -> dict:
    """Flattens the inputs of a causal LM (a DynamicCache included) with the ONNX names."""
    flat = []
    for name in ("input_ids", "attention_mask", "position_ids", CACHE):
        if name in inputs:
            flat.extend(pytree.tree_leaves(inputs[name]))
    assert len(flat) == len(names), (names, len(flat))
    return dict(zip(names, flat))


class _Tiny(torch.nn.Module):
    def forward(self, x, y=None, scale=2):
        return x * scale if y is None else x * scale + y


class TestToOnnxSmall(ExtTestCase):
    def test_docstring_examples(self):
        res = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
        self.assertEqual(0, res.failed)
        self.assertGreater(res.attempted, 3)

    def test_dummy_llm_names_dims_and_values(self):
        from onnx_diagnostic.helpers.torch_helper import dummy_llm

        model, inputs, ds = dummy_llm(dynamic_shapes=True)
        onx = to_onnx(model, inputs, dynamic_shapes=ds)
        self.assertEqual(["input_ids"], [i.name for i in onx.graph.input])
        self.assertEqual(["output_0"], [o.name for o in onx.graph.output])
        self.assertEqual(["batch", "length"], _dims(onx.graph.input[0]))
        expected = model(*inputs)
        got = _run(onx, {"input_ids": inputs[0]})[0]
        self.assertEqualArray(expected.detach(), got, atol=1e-5)
        # another batch size and length
        other = torch.randint(0, 1024, (3, 11))
        got = _run(onx, {"input_ids": other})[0]
        self.assertEqualArray(model(other).detach(), got, atol=1e-5)

    def test_buffer_registered_as_parameter(self):
        # falcon_mamba (transformers 4.x): register_buffer(name, nn.Parameter(...)), persistent
        # or not; run_decompositions failed with "attribute 'b_c_rms' already exists"
        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                ones = torch.nn.Parameter(torch.ones(4), requires_grad=False)
                self.register_buffer("b_c_rms", ones, persistent=False)
                twos = torch.nn.Parameter(torch.full((4,), 2.0), requires_grad=False)
                self.register_buffer("kept", twos)

            def forward(self, x):
                return x * self.b_c_rms + self.kept

        model, x = Model(), torch.rand(3, 4)
        for exporter in ("custom", "onnx-dynamo"):
            with self.subTest(exporter=exporter):
                onx = to_onnx(
                    model, (x,), dynamic_shapes=({0: "batch"},), exporter=exporter, optimize=False
                )
                self.assertEqualArray(model(x), _run(onx, {"x": x})[0], atol=1e-6)
                # the model is not modified
                self.assertIsInstance(model.b_c_rms, torch.nn.Parameter)
                self.assertIsInstance(model.kept, torch.nn.Parameter)

    def test_zero_dim_and_none_and_constant_inputs(self):
        onx = to_onnx(_Tiny(), (torch.tensor(3.0),), kwargs=dict(y=None, scale=4))
        self.assertEqual(["x"], [i.name for i in onx.graph.input])
        self.assertEqual([], _dims(onx.graph.input[0]))
        self.assertEqualArray(
            np.array(12.0, dtype=np.float32), _run(onx, {"x": torch.tensor(3.0)})[0]
        )

    def test_bfloat16_input(self):
        onx = to_onnx(_Tiny(), (torch.ones((2, 3), dtype=torch.bfloat16),))
        self.assertEqual(onnx.TensorProto.BFLOAT16, onx.graph.input[0].type.tensor_type.elem_type)
        self.assertEqual(onnx.TensorProto.BFLOAT16, onx.graph.output[0].type.tensor_type.elem_type)

    def test_kwargs_follow_the_signature_order(self):
        x, y = torch.rand(2, 3), torch.rand(2, 3)
        onx = to_onnx(
            _Tiny(), (), kwargs=dict(y=y, x=x), dynamic_shapes=dict(y={0: "b"}, x={0: "b"})
        )
        self.assertEqual(["x", "y"], [i.name for i in onx.graph.input])
        self.assertEqual([["b", 3], ["b", 3]], [_dims(i) for i in onx.graph.input])
        self.assertEqualArray((x * 2 + y).numpy(), _run(onx, dict(x=x, y=y))[0], atol=1e-6)

    def test_nested_inputs_and_outputs(self):
        class Nested(torch.nn.Module):
            def forward(self, pair, extra):
                a, b = pair
                return a + extra["z"], (b * 2, a - b)

        inputs = ((torch.rand(2, 3), torch.rand(2, 3)), {"z": torch.rand(2, 3)})
        onx = to_onnx(Nested(), inputs)
        self.assertEqual(["pair.0", "pair.1", "extra.z"], [i.name for i in onx.graph.input])
        self.assertEqual(
            ["output_0", "output_1.0", "output_1.1"], [o.name for o in onx.graph.output]
        )

    def test_output_which_is_an_input(self):
        class Passthrough(torch.nn.Module):
            def forward(self, x, y):
                return x, x + y

        x, y = torch.rand(2, 3), torch.rand(2, 3)
        onx = to_onnx(Passthrough(), (x, y))
        self.assertEqual(["x", "y"], [i.name for i in onx.graph.input])
        self.assertEqual(["output_0", "output_1"], [o.name for o in onx.graph.output])
        got = _run(onx, dict(x=x, y=y))
        self.assertEqualArray(x.numpy(), got[0])
        self.assertEqualArray((x + y).numpy(), got[1], atol=1e-6)

    def test_user_names(self):
        x = torch.rand(2, 3)
        onx = to_onnx(_Tiny(), (x,), input_names=["X"], output_names=["Y"])
        self.assertEqual(["X"], [i.name for i in onx.graph.input])
        self.assertEqual(["Y"], [o.name for o in onx.graph.output])
        self.assertEqualArray((x * 2).numpy(), _run(onx, {"X": x})[0], atol=1e-6)

    def test_user_names_colliding_with_an_intermediate_value(self):
        class Two(torch.nn.Module):
            def forward(self, x):
                return (x + 1) * 2

        x = torch.rand(2, 3)
        onx = to_onnx(Two(), (x,), optimize=False)
        inner = [n.output[0] for n in onx.graph.node if n.output[0] != onx.graph.output[0].name]
        self.assertTrue(inner)
        onx = to_onnx(Two(), (x,), optimize=False, output_names=[inner[0]])
        self.assertEqual([inner[0]], [o.name for o in onx.graph.output])
        onnx.checker.check_model(onx)
        self.assertEqualArray(((x + 1) * 2).numpy(), _run(onx, {"x": x})[0], atol=1e-6)

    def test_encoder_decoder_cache_names(self):
        class UseCache(torch.nn.Module):
            def forward(self, x, past_key_values):
                keys = past_key_values.self_attention_cache.layers[0].keys
                cross = past_key_values.cross_attention_cache.layers[0].values
                return x + keys.sum() + cross.sum()

        def kv(n):
            return [(torch.rand(1, 2, n, 4), torch.rand(1, 2, n, 4))]

        cache = make_encoder_decoder_cache(make_dynamic_cache(kv(3)), make_dynamic_cache(kv(5)))
        onx = to_onnx(UseCache(), (torch.rand(1, 4), cache))
        self.assertEqual(
            [
                "x",
                "past_key_values.0.decoder.key",
                "past_key_values.0.decoder.value",
                "past_key_values.0.encoder.key",
                "past_key_values.0.encoder.value",
            ],
            [i.name for i in onx.graph.input],
        )

    def test_external_data(self):
        x = torch.rand(2, 3)
        model = torch.nn.Linear(3, 4)
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "linear.onnx")
            to_onnx(model, (x,), filename=name, external_data=True)
            self.assertExists(name)
            self.assertExists(name + ".data")
            sess = onnxruntime.InferenceSession(name, providers=["CPUExecutionProvider"])
            got = sess.run(None, {"input": x.numpy()})[0]
            self.assertEqualArray(model(x).detach().numpy(), got, atol=1e-6)
            name2 = os.path.join(tmp, "linear2.onnx")
            to_onnx(model, (x,), filename=name2)
            self.assertExists(name2)
            self.assertFalse(os.path.exists(name2 + ".data"))

    def test_unknown_exporter_lists_the_available_ones(self):
        with self.assertRaisesRegex(ValueError, r"exporter='nope' is unknown.*'onnx-dynamo'"):
            to_onnx(_Tiny(), (torch.rand(2),), exporter="nope")
        self.assertIn("onnx-dynamo", EXPORTERS)

    def test_bad_arguments(self):
        x = torch.rand(2, 3)
        with self.assertRaisesRegex(TypeError, "model must be a torch.nn.Module"):
            to_onnx(lambda x: x, (x,))
        with self.assertRaisesRegex(TypeError, "args must be a tuple"):
            to_onnx(_Tiny(), x)
        with self.assertRaisesRegex(TypeError, "kwargs must be a dict"):
            to_onnx(_Tiny(), (x,), kwargs=[x])
        with self.assertRaisesRegex(ValueError, r"input_names has duplicated names \['a'\]"):
            to_onnx(_Tiny(), (x,), input_names=["a", "a"])
        with self.assertRaisesRegex(TypeError, "output_names must be a list of strings"):
            to_onnx(_Tiny(), (x,), output_names="y")
        with self.assertRaisesRegex(ValueError, r"input_names has 2 names but the model has 1"):
            to_onnx(_Tiny(), (x,), input_names=["a", "b"])
        with self.assertRaisesRegex(ValueError, r"output_names has 2 names but the model has 1"):
            to_onnx(_Tiny(), (x,), output_names=["a", "b"])


class TestToOnnxFailures(ExtTestCase):
    def test_torch_export_failure_names_the_step(self):
        class DataDependent(torch.nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    return x + 1
                return x - 1

        model = DataDependent()
        forward = model.forward
        with self.assertRaises(ExportStepError) as cm:
            to_onnx(model, (torch.rand(2, 3),))
        self.assertEqual("torch.export", cm.exception.step)
        self.assertIn("failed at step 'torch.export'", str(cm.exception))
        self.assertIn("torch_export_patches(patch_transformers=True)", str(cm.exception))
        self.assertIsNotNone(cm.exception.__cause__)
        self.assertEqual(forward, model.forward)
        self.assertNotIn("forward", model.__dict__)

    def test_translation_failure_names_the_step(self):
        lib = torch.library.Library("onnxdiag_test_api", "DEF")
        try:
            lib.define("twice(Tensor x) -> Tensor")
            lib.impl("twice", lambda x: x * 2, "CompositeExplicitAutograd")
            lib.impl("twice", lambda x: torch.empty_like(x), "Meta")

            class Custom(torch.nn.Module):
                def forward(self, x):
                    return torch.ops.onnxdiag_test_api.twice(x)

            with self.assertRaises(ExportStepError) as cm:
                to_onnx(Custom(), (torch.rand(2, 3),))
            self.assertEqual("translation", cm.exception.step)
            self.assertIn("twice", str(cm.exception))
        finally:
            lib._destroy()

    def test_error_message_first_line_tells_the_cause(self):
        text = (
            "Failed to decompose the FX graph. \x1b[96mThis is step 2/3\x1b[0m\n- report\n\n"
            "## Exception summary\n\n<class 'ValueError'>: Cannot view a tensor\n\nWhile ..."
        )
        err = ExportStepError("translation", "onnx-dynamo", RuntimeError(text), "the hint")
        lines = str(err).splitlines()
        self.assertEqual(
            "to_onnx(exporter='onnx-dynamo') failed at step 'translation': RuntimeError: "
            "Failed to decompose the FX graph. This is step 2/3 "
            "(<class 'ValueError'>: Cannot view a tensor)",
            lines[0],
        )
        self.assertEqual("Hint: the hint", lines[1])
        self.assertNotIn("\x1b", str(err))
        self.assertIn("While ...", str(err))
        empty = ExportStepError("save", "onnx-dynamo", OSError(), "h")
        self.assertEqual(
            "to_onnx(exporter='onnx-dynamo') failed at step 'save': OSError: ",
            str(empty).splitlines()[0],
        )

    def test_optimization_failure_names_the_step(self):
        def _broken(self):
            raise RuntimeError("optimizer is broken")

        with mock.patch.object(torch.onnx.ONNXProgram, "optimize", _broken):
            with self.assertRaises(ExportStepError) as cm:
                to_onnx(_Tiny(), (torch.rand(2, 3),))
            # optimize=False skips the step
            onx = to_onnx(_Tiny(), (torch.rand(2, 3),), optimize=False)
        self.assertEqual("optimization", cm.exception.step)
        self.assertIn("optimize=False", str(cm.exception))
        self.assertEqual(["x"], [i.name for i in onx.graph.input])

    def test_missing_folder_refused_before_exporting(self):
        calls = []

        class Counting(_Tiny):
            def forward(self, *args):
                calls.append(1)
                return super().forward(*args)

        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "missing_folder", "model.onnx")
            with self.assertRaises(FileNotFoundError) as cm:
                to_onnx(Counting(), (torch.rand(2, 3),), filename=name)
            self.assertIn(f"filename={name!r}", str(cm.exception))
            self.assertIn("nothing was exported", str(cm.exception))
            with self.assertRaises(IsADirectoryError):
                to_onnx(Counting(), (torch.rand(2, 3),), filename=tmp)
        with self.assertRaises(TypeError) as cm:
            to_onnx(Counting(), (torch.rand(2, 3),), filename=3)
        self.assertIn("to_onnx: filename must be a file name, not int", str(cm.exception))
        self.assertEqual(calls, [])

    def test_save_failure_names_the_step(self):
        from unittest import mock

        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "model.onnx")
            with mock.patch.object(
                torch.onnx.ONNXProgram, "save", side_effect=OSError("No space left on device")
            ):
                with self.assertRaises(ExportStepError) as cm:
                    to_onnx(_Tiny(), (torch.rand(2, 3),), filename=name)
        self.assertEqual("save", cm.exception.step)
        self.assertIn("No space left on device", str(cm.exception))
        self.assertIn("folder of `filename`", str(cm.exception))

    def test_verbose_prints_the_steps(self):
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "model.onnx")
            _, out, _ = self.capture(
                lambda: to_onnx(_Tiny(), (torch.rand(2),), filename=name, verbose=1)
            )
        for step in ("torch.export", "translation", "optimization", "save"):
            self.assertIn(f"[to_onnx] {step} done in", out)


class TestToOnnxTinyLLM(ExtTestCase):
    """to_onnx on the untrained Tiny-LLM with its cache, inside torch_export_patches."""

    @classmethod
    def setUpClass(cls):
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        torch.manual_seed(0)
        cls.data = get_tiny_llm(add_second_input=True)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.filename = os.path.join(cls.tmp.name, "tiny_llm.onnx")
        model = cls.data["model"]
        cls.forward = model.forward
        cache = cls.data["inputs"][CACHE]
        cls.cache_before = (cache, cache.layers[0].keys, tuple(cache.layers[0].keys.shape))
        with torch_export_patches(patch_transformers=True):
            cls.onx = to_onnx(
                model,
                (),
                kwargs=cls.data["inputs"],
                dynamic_shapes=cls.data["dynamic_shapes"],
                filename=cls.filename,
            )

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_inputs_are_left_unchanged(self):
        cache, keys, shape = self.cache_before
        self.assertIs(cache, self.data["inputs"][CACHE])
        self.assertIs(keys, cache.layers[0].keys)
        self.assertEqual(shape, tuple(cache.layers[0].keys.shape))
        self.assertEqual((2, 1, 30, 96), shape)

    def test_names_follow_the_transformers_convention(self):
        self.assertEqual(
            [
                "input_ids",
                "attention_mask",
                "position_ids",
                "past_key_values.0.key",
                "past_key_values.0.value",
            ],
            [i.name for i in self.onx.graph.input],
        )
        self.assertEqual(
            ["logits", "present.0.key", "present.0.value"],
            [o.name for o in self.onx.graph.output],
        )

    def test_dimension_names_come_from_dynamic_shapes(self):
        dims = {i.name: _dims(i) for i in self.onx.graph.input}
        self.assertEqual(["batch", "seq_length"], dims["input_ids"])
        self.assertEqual(["batch", "cache+seq"], dims["attention_mask"])
        self.assertEqual(["batch", 1, "cache_length", 96], dims["past_key_values.0.key"])
        logits = _dims(self.onx.graph.output[0])
        self.assertEqual(["batch", "seq_length", 32000], logits)

    def test_saved_model_equals_the_returned_one(self):
        saved = onnx.load(self.filename)
        self.assertEqual(
            [i.name for i in self.onx.graph.input], [i.name for i in saved.graph.input]
        )
        self.assertEqual(len(self.onx.graph.node), len(saved.graph.node))

    def test_discrepancies_on_both_input_sets(self):
        from onnx_diagnostic.helpers import max_diff
        from onnx_diagnostic.helpers.torch_helper import torch_deepcopy

        model = self.data["model"]
        self.assertEqual(self.forward, model.forward)
        names = [i.name for i in self.onx.graph.input]
        for key in ("inputs", "inputs2"):
            with self.subTest(inputs=key):
                inputs = self.data[key]
                feeds = _onnx_feeds(names, inputs)
                with torch.no_grad():
                    expected = model(**torch_deepcopy(inputs))
                got = _run(self.onx, feeds)
                diff = max_diff(expected, got)
                self.assertLess(diff["abs"], 1e-4, msg=str(diff))

    def test_no_optimization_keeps_more_nodes(self):
        from onnx_diagnostic.torch_export_patches import torch_export_patches

        with torch_export_patches(patch_transformers=True):
            raw = to_onnx(
                self.data["model"],
                (),
                kwargs=self.data["inputs"],
                dynamic_shapes=self.data["dynamic_shapes"],
                optimize=False,
            )
        self.assertEqual([i.name for i in self.onx.graph.input], [i.name for i in raw.graph.input])
        self.assertGreater(len(raw.graph.node), len(self.onx.graph.node))


if __name__ == "__main__":
    unittest.main(verbosity=2)


class _NewNames(torch.nn.Module):
    """A model declaring the cache argument as transformers>=5.24 does."""

    def forward(self, input_ids, cache=None):
        return input_ids.float().sum() + cache.layers[0].keys.sum()


class _OldNames(torch.nn.Module):
    """A model declaring the cache argument as transformers<5.24 does."""

    def forward(self, input_ids, past_key_values=None):
        return input_ids.float().sum() + past_key_values.layers[0].keys.sum()


class TestCacheArgumentNames(ExtTestCase):
    def _cache(self, batch=2, length=3):
        return make_dynamic_cache(
            [(torch.rand(batch, 1, length, 4), torch.rand(batch, 1, length, 4))]
        )

    def test_either_name_gives_the_same_onnx_signature(self):
        D = torch.export.Dim.DYNAMIC
        for cls in (_NewNames, _OldNames):
            for given in ("cache", "past_key_values"):
                with self.subTest(model=cls.__name__, given=given):
                    cache = self._cache()
                    kwargs = {"input_ids": torch.ones((2, 3), dtype=torch.int64), given: cache}
                    ds = {"input_ids": {0: "batch"}, given: [{0: "batch", 2: D}] * 2}
                    onx = to_onnx(cls(), (), kwargs=kwargs, dynamic_shapes=ds)
                    self.assertEqual(
                        [i.name for i in onx.graph.input],
                        ["input_ids", "past_key_values.0.key", "past_key_values.0.value"],
                    )
                    self.assertEqual(_dims(onx.graph.input[1])[0], "batch")
                    # the user's inputs are left as they were
                    self.assertEqual(list(kwargs), ["input_ids", given])
                    self.assertIs(kwargs[given], cache)
                    feeds = api.onnx_feeds(cls(), (), kwargs)
                    self.assertEqual(list(feeds), [i.name for i in onx.graph.input])

    def test_both_names_is_a_clear_error(self):
        kwargs = {"cache": self._cache(), "past_key_values": self._cache()}
        kwargs["input_ids"] = torch.ones((2, 3), dtype=torch.int64)
        with self.assertRaises(ValueError) as cm:
            to_onnx(_NewNames(), (), kwargs=kwargs)
        self.assertIn("kwargs gives the cache twice", str(cm.exception))

    def test_align_cache_argument(self):
        kw, ds = api.align_cache_argument(_NewNames(), {"past_key_values": 1}, None)
        self.assertEqual(kw, {"cache": 1})
        self.assertIsNone(ds)
        kw, ds = api.align_cache_argument(_OldNames(), {"cache": 1}, ({0: "b"},))
        self.assertEqual(kw, {"past_key_values": 1})
        self.assertEqual(ds, ({0: "b"},))

        def forward(x, **kwargs):
            return x

        kw, ds = api.align_cache_argument(forward, {"cache": 1}, {"cache": 2})
        self.assertEqual((kw, ds), ({"cache": 1}, {"cache": 2}))

    def test_llm_of_the_installed_transformers_with_the_old_name(self):
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_models.llms import get_tiny_llm

        data = get_tiny_llm()
        inputs = dict(data.inputs)
        ds = dict(data.dynamic_shapes)
        name = cache_arg_name(data.model)
        other = "past_key_values" if name == "cache" else "cache"
        inputs[other] = inputs.pop(name)
        ds[other] = ds.pop(name)
        with torch_export_patches(patch_transformers=True):
            onx = to_onnx(data.model, (), kwargs=inputs, dynamic_shapes=ds)
        names = [i.name for i in onx.graph.input]
        self.assertEqual(names[-2:], ["past_key_values.0.key", "past_key_values.0.value"])
        self.assertEqual(
            [o.name for o in onx.graph.output][1:], ["present.0.key", "present.0.value"]
        )


class TestTorchExportHint(ExtTestCase):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x + 1
            return x - 1

    def test_outside_patches_suggests_them(self):
        with self.assertRaises(ExportStepError) as cm:
            to_onnx(self.DataDependent(), (torch.rand(2, 3),))
        self.assertIn("it did not", cm.exception.hint)

    def test_inside_patches_does_not_suggest_entering_them(self):
        from onnx_diagnostic.torch_export_patches import torch_export_patches

        with torch_export_patches(patch_transformers=True):
            with self.assertRaises(ExportStepError) as cm:
                to_onnx(self.DataDependent(), (torch.rand(2, 3),))
        hint = cm.exception.hint
        self.assertNotIn("it did not", hint)
        self.assertIn("It ran inside torch_export_patches(patch_transformers=True)", hint)
        with torch_export_patches(patch_transformers=False):
            with self.assertRaises(ExportStepError) as cm:
                to_onnx(self.DataDependent(), (torch.rand(2, 3),))
        self.assertIn("patch_transformers=True applies", cm.exception.hint)

    def test_unknown_dynamic_shapes_name_is_named(self):
        class M(torch.nn.Module):
            def forward(self, input_ids, attention_mask=None, **kwargs):
                return input_ids * 2

        x = torch.ones((2, 3))
        with self.assertRaises(ExportStepError) as cm:
            to_onnx(
                M(),
                (),
                kwargs=dict(input_ids=x, attention_mask=x),
                dynamic_shapes=dict(input_ids={0: "batch"}, mask={0: "batch"}),
            )
        hint = cm.exception.hint
        self.assertIn("dynamic_shapes names ['mask']", hint)
        self.assertIn("['input_ids', 'attention_mask'] and **kwargs", hint)
        self.assertIn("dynamic_shapes['kwargs']", hint)
        self.assertNotIn("torch_export_patches", hint)
