import os
import tempfile
import unittest

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.helpers.mini_onnx_builder import create_input_tensors_from_onnx_model
from onnx_diagnostic.helpers.steal import steal_forward
from onnx_diagnostic.helpers.torch_helper import dummy_llm
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()

# What seed 002 printed (its output with verbose=1 and a dump file).
SEED_002 = """
+model -- stolen forward for class LLM -- iteration 0
  <- args=(T7s2x30,) --- kwargs={}
+model.decoder -- stolen forward for class DecoderLayer -- iteration 0
  <- args=(T1s2x30x16,) --- kwargs={}
+model.decoder.norm_1 -- stolen forward for class LayerNorm -- iteration 0
  <- args=(T1s2x30x16,) --- kwargs={}
  -> T1s2x30x16
-model.decoder.norm_1.
-- stores key=('model.decoder.norm_1', 0), size 3Kb -- T1s2x30x16
+model.decoder.attention -- stolen forward for class MultiAttentionBlock -- iteration 0
  <- args=(T1s2x30x16,) --- kwargs={}
  -> T1s2x30x16
-model.decoder.attention.
-- stores key=('model.decoder.attention', 0), size 3Kb -- T1s2x30x16
+model.decoder.norm_2 -- stolen forward for class LayerNorm -- iteration 0
  <- args=(T1s2x30x16,) --- kwargs={}
  -> T1s2x30x16
-model.decoder.norm_2.
-- stores key=('model.decoder.norm_2', 0), size 3Kb -- T1s2x30x16
+model.decoder.feed_forward -- stolen forward for class FeedForward -- iteration 0
  <- args=(T1s2x30x16,) --- kwargs={}
  -> T1s2x30x16
-model.decoder.feed_forward.
-- stores key=('model.decoder.feed_forward', 0), size 3Kb -- T1s2x30x16
  -> T1s2x30x16
-model.decoder.
-- stores key=('model.decoder', 0), size 3Kb -- T1s2x30x16
  -> T1s2x30x16
-model.
-- stores key=('model', 0), size 3Kb -- T1s2x30x16
-- gather stored 12 objects, size=0 Mb
-- dumps stored objects
-- done dump stored objects
"""

SEED_002_RESTORED = """
('model', 0, 'I') -- ((T7s2x30,),{})
('model.decoder', 0, 'I') -- ((T1s2x30x16,),{})
('model.decoder.norm_1', 0, 'I') -- ((T1s2x30x16,),{})
('model.decoder.norm_1', 0, 'O') -- T1s2x30x16
('model.decoder.attention', 0, 'I') -- ((T1s2x30x16,),{})
('model.decoder.attention', 0, 'O') -- T1s2x30x16
('model.decoder.norm_2', 0, 'I') -- ((T1s2x30x16,),{})
('model.decoder.norm_2', 0, 'O') -- T1s2x30x16
('model.decoder.feed_forward', 0, 'I') -- ((T1s2x30x16,),{})
('model.decoder.feed_forward', 0, 'O') -- T1s2x30x16
('model.decoder', 0, 'O') -- T1s2x30x16
('model', 0, 'O') -- T1s2x30x16
"""


class KwModel(torch.nn.Module):
    def forward(self, x, extra=None, scale: float = 1.0):
        return x * scale if extra is None else (x + 1, extra)


def _tiny_llama():
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=1000,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


class TestStealForward(ExtTestCase):
    def test_seed_002_prints_and_dumps(self):
        model, inputs, _ = dummy_llm(dynamic_shapes=True)
        names = ["", ".decoder", ".decoder.attention", ".decoder.feed_forward"]
        names += [".decoder.norm_1", ".decoder.norm_2"]
        modules = [(f"model{n}", model.get_submodule(n[1:]) if n else model) for n in names]
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "plot_dump_intermediate_results.inputs.onnx")

            def run():
                with steal_forward(modules, dump_file=dump, verbose=1, storage_limit=2**28):
                    return model(*inputs)

            expected, out, _ = self.capture(run)
            self.assertEqual(out.strip(), SEED_002.strip())
            saved = create_input_tensors_from_onnx_model(dump)
        lines = [f"{k} -- {string_type(v, with_shape=True)}" for k, v in saved.items()]
        self.assertEqual("\n".join(lines), SEED_002_RESTORED.strip())
        self.assertEqualAny(inputs, saved["model", 0, "I"][0])
        self.assertEqualAny(expected, saved["model", 0, "O"])
        self.assertEqualAny(
            model.decoder.norm_1(saved["model.decoder", 0, "I"][0][0]),
            saved["model.decoder.norm_1", 0, "O"],
        )

    def test_seed_002_runs_unchanged(self):
        def seed():
            import onnx
            import torch

            from onnx_diagnostic import doc
            from onnx_diagnostic.helpers import string_type
            from onnx_diagnostic.helpers.mini_onnx_builder import (
                create_input_tensors_from_onnx_model,
            )
            from onnx_diagnostic.helpers.torch_helper import dummy_llm, steal_forward

            model, inputs, ds = dummy_llm(dynamic_shapes=True)

            print(f"type(model)={type(model)}")
            print(f"inputs={string_type(inputs, with_shape=True)}")
            print(f"ds={string_type(ds, with_shape=True)}")

            for name, mod in model.named_modules():
                print(f"- {name}: {type(mod)}")

            with steal_forward(
                [
                    ("model", model),
                    ("model.decoder", model.decoder),
                    ("model.decoder.attention", model.decoder.attention),
                    ("model.decoder.feed_forward", model.decoder.feed_forward),
                    ("model.decoder.norm_1", model.decoder.norm_1),
                    ("model.decoder.norm_2", model.decoder.norm_2),
                ],
                dump_file="plot_dump_intermediate_results.inputs.onnx",
                verbose=1,
                storage_limit=2**28,
            ):
                model(*inputs)

            saved_tensors = create_input_tensors_from_onnx_model(
                "plot_dump_intermediate_results.inputs.onnx"
            )
            for k, v in saved_tensors.items():
                print(f"{k} -- {string_type(v, with_shape=True)}")

            epo = torch.onnx.export(model, inputs, dynamic_shapes=ds, dynamo=True)
            epo.optimize()
            epo.save("plot_dump_intermediate_results.onnx")

            onx = onnx.load("plot_dump_intermediate_results.onnx")
            # plot_dot(onx) (onnx_array_api) is left out
            doc.plot_legend("steal and dump\nintermediate\nresults", "steal_forward", "blue")
            return onx

        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            try:
                onx, out, _ = self.capture(seed)
            finally:
                os.chdir(cwd)
        self.assertIn("ds=dict(input_ids:{0:Dim(batch),1:Dim(length)})", out)
        self.assertIn(SEED_002.strip(), out)
        self.assertIn(SEED_002_RESTORED.strip(), out)
        self.assertGreater(len(onx.graph.node), 5)

    def test_single_model_without_name(self):
        model = KwModel()
        with steal_forward(model):
            _, out, _ = self.capture(lambda: model(torch.ones(2, 3), scale=2.0))
        self.assertEqual(
            out.splitlines(),
            [
                "+ -- stolen forward for class KwModel -- iteration 0",
                "  <- args=(T1s2x3,) --- kwargs=dict(scale:float)",
                "  -> T1s2x3",
                "-.",
            ],
        )

    def test_iterations_min_max_and_custom_fprint(self):
        model = KwModel()

        def run():
            with steal_forward(model, with_min_max=True):
                model(torch.zeros(1))
                model(torch.ones(1))

        _, out, _ = self.capture(run)
        self.assertIn("iteration 1", out)
        self.assertIn("  -> T1s1[1.0,1.0:A1.0]", out)

        def run_custom():
            with steal_forward(
                model, fprint=lambda o, prefix="": f"{prefix}{type(o).__name__}", prefix=">"
            ):
                model(torch.zeros(1))

        _, out, _ = self.capture(run_custom)
        self.assertIn("  <- args=>tuple --- kwargs=>dict", out)
        self.assertIn("  -> >Tensor", out)

    def test_restores_forward(self):
        model, inputs = dummy_llm()
        before = {n: dict(m.__dict__) for n, m in model.named_modules()}
        with steal_forward([("a", model), ("b", model.decoder)]):
            self.assertIn("forward", model.__dict__)
            self.capture(lambda: model(*inputs))
        after = {n: dict(m.__dict__) for n, m in model.named_modules()}
        self.assertEqual(list(before), list(after))
        for name in before:
            self.assertEqual(list(before[name]), list(after[name]))
            for k, v in before[name].items():
                self.assertIs(v, after[name][k])

    def test_restores_forward_after_exception(self):
        model = KwModel()
        patched = lambda x, **kw: x  # noqa: E731
        model.forward = patched  # a forward already in the instance dictionary stays there
        other = KwModel()
        with self.assertRaises(ZeroDivisionError):
            with steal_forward([("m", model), ("o", other), ("m2", model)]):
                self.assertIsNot(model.__dict__["forward"], patched)
                1 / 0  # noqa: B018
        self.assertIs(model.__dict__["forward"], patched)
        self.assertNotIn("forward", other.__dict__)

    def test_restores_forward_after_exception_in_forward(self):
        class Failing(torch.nn.Module):
            def forward(self, x):
                raise ValueError("inside forward")

        model = Failing()
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "dump.onnx")

            def run():
                with steal_forward(model, dump_file=dump):
                    model(torch.ones(2))

            with self.assertRaises(ValueError):
                self.capture(run)
            self.assertNotIn("forward", model.__dict__)
            # what was stored before the failure is dumped to help debugging
            saved = create_input_tensors_from_onnx_model(dump)
            self.assertEqual(list(saved), [("", 0, "I")])

    def test_storage_limit_stops_storing_once(self):
        model = KwModel()
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "dump.onnx")

            def run():
                with steal_forward(model, dump_file=dump, storage_limit=1000) as stored:
                    for _ in range(5):
                        model(torch.ones(50))  # 200 bytes in, 200 bytes out
                return stored

            stored, out, _ = self.capture(run)
            self.assertEqual(out.count("stops storing"), 1)
            self.assertEqual(len(stored), 5)
            saved = create_input_tensors_from_onnx_model(dump)
            self.assertEqual(list(saved), list(stored))
            self.assertEqual(list(saved)[-1], ("", 2, "I"))

    def test_storage_limit_zero(self):
        model = KwModel()
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "dump.onnx")
            with self.assertRaises(ValueError) as cm:
                with steal_forward(model, dump_file=dump, storage_limit=0):
                    model(torch.ones(2))
            self.assertIn("storage_limit=0", str(cm.exception))
            self.assertIn("dump_file", str(cm.exception))
            self.assertFalse(os.path.exists(dump))
            self.assertNotIn("forward", model.__dict__)
            # without a dump, the limit does not matter
            with steal_forward(model, storage_limit=0) as stored:
                self.capture(lambda: model(torch.ones(2)))
            self.assertEqual(stored, {})

    def test_nothing_stored_nothing_written(self):
        model = KwModel()
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "dump.onnx")

            def run():
                with steal_forward(model, dump_file=dump, storage_limit=2) as stored:
                    model(torch.ones(2))
                return stored

            stored, out, err = self.capture(run)
            self.assertEqual(stored, {})
            # the message is printed once, and not logged a second time
            self.assertEqual(out.count("stops storing"), 1)
            self.assertNotIn("stops storing", err)
            self.assertIn("nothing was stored", out)
            self.assertFalse(os.path.exists(dump))

    def test_dump_folder_checked_before_running(self):
        model = KwModel()
        calls = []
        with tempfile.TemporaryDirectory() as tmp:
            missing = os.path.join(tmp, "missing", "dump.onnx")
            with self.assertRaises(FileNotFoundError) as cm:
                with steal_forward(model, dump_file=missing):
                    calls.append(1)
            self.assertIn(os.path.join(tmp, "missing"), str(cm.exception))
            self.assertIn("dump_file", str(cm.exception))
            with self.assertRaises(IsADirectoryError):
                with steal_forward(model, dump_file=tmp):
                    calls.append(1)
            with self.assertRaises(TypeError):
                with steal_forward(model, dump_file=3):
                    calls.append(1)
        self.assertEqual(calls, [])
        self.assertNotIn("forward", model.__dict__)

    def test_copies_are_independent_and_on_cpu(self):
        model = KwModel()
        x = torch.ones(3)
        with tempfile.TemporaryDirectory() as tmp:

            def run():
                with steal_forward(model, dump_file=os.path.join(tmp, "d.onnx")) as stored:
                    model(x, extra=[torch.zeros(1)])
                return stored

            stored, _, _ = self.capture(run)
        x += 1
        self.assertEqual(stored["", 0, "I"][0][0].tolist(), [1.0, 1.0, 1.0])
        self.assertIsNot(stored["", 0, "I"][0][0], x)
        self.assertEqual(stored["", 0, "I"][1]["extra"][0].device.type, "cpu")

    @unittest.skipIf(not torch.cuda.is_available(), "no CUDA device")
    def test_cuda_tensors_are_stored_on_cpu(self):
        model = KwModel().to("cuda")
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "d.onnx")

            def run():
                with steal_forward(model, dump_file=dump) as stored:
                    model(torch.ones(3, device="cuda"), scale=2.0)
                return stored

            stored, _, _ = self.capture(run)
            self.assertEqual(stored["", 0, "I"][0][0].device.type, "cpu")
            self.assertEqual(stored["", 0, "O"].device.type, "cpu")
            saved = create_input_tensors_from_onnx_model(dump, device="cuda")
        self.assertEqual(saved["", 0, "O"].device.type, "cuda")
        self.assertEqual(saved["", 0, "O"].tolist(), [2.0, 2.0, 2.0])

    def test_unsupported_object_in_dump_keeps_the_rest(self):
        from onnx_diagnostic.helpers.mini_onnx_builder import Unstored, unstored_values

        class Odd(torch.nn.Module):
            def forward(self, x):
                cyclic = [x]
                cyclic.append(cyclic)
                return x + 1, (i for i in range(2)), cyclic, {1, 2}

        model = Odd()
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "d.onnx")

            def run():
                with steal_forward(model, dump_file=dump) as stored:
                    model(torch.ones(1))
                    model(torch.ones(2))
                return stored

            stored, out, _ = self.capture(run)
            self.assertNotIn("forward", model.__dict__)
            self.assertEqual(len(stored), 4)
            saved = create_input_tensors_from_onnx_model(dump)
            self.assertEqual(list(saved), list(stored))
            for it in (0, 1):
                tensor, gen, cyclic, a_set = saved["", it, "O"]
                self.assertEqual(tensor.tolist(), [2.0] * (it + 1))
                self.assertIsInstance(gen, Unstored)
                self.assertEqual(gen.type_name, "generator")
                self.assertEqual(cyclic[0].tolist(), [1.0] * (it + 1))
                self.assertIsInstance(cyclic[1], Unstored)
                self.assertIn("contains itself", cyclic[1].reason)
                self.assertEqual(a_set, Unstored("set", a_set.reason))
                self.assertEqual(saved["", it, "I"][0][0].tolist(), [1.0] * (it + 1))
            paths = [p for p, _ in unstored_values(dump)]
            self.assertIn("obj[('', 0, 'O')][1]", paths)
            self.assertIn("obj[('', 1, 'O')][2][1]", paths)
            self.assertIn("obj[('', 0, 'O')][3]", paths)
            # each problem printed once with its path
            self.assertEqual(out.count("-- not stored: obj[('', 0, 'O')][1]"), 1)
            self.assertEqual(out.count("-- not stored: obj[('', 0, 'O')][3]"), 1)

    def test_nothing_printed_while_exporting(self):
        model = KwModel()

        def run():
            with steal_forward(model):
                return torch.export.export(model, (torch.ones(2),))

        ep, out, _ = self.capture(run)
        self.assertEqual(out, "")
        self.assertIsNotNone(ep)

    def test_generate_calls_forward_100_times(self):
        model = _tiny_llama()
        input_ids = torch.randint(3, 1000, (1, 5))
        kwargs = dict(max_new_tokens=100, min_new_tokens=100, do_sample=False)
        expected = model.generate(input_ids, **kwargs)
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "gen.onnx")

            def run():
                with steal_forward(model, dump_file=dump) as stored:
                    return model.generate(input_ids, **kwargs), dict(stored)

            (got, stored), out, _ = self.capture(run)
            self.assertEqual(expected.tolist(), got.tolist())
            self.assertIn("iteration 99", out)
            self.assertNotIn("iteration 100", out)
            self.assertEqual(len(stored), 200)
            saved = create_input_tensors_from_onnx_model(dump)
        self.assertEqual(list(saved), list(stored))
        first_kwargs = saved["", 0, "I"][1]
        self.assertEqual(first_kwargs["input_ids"].tolist(), input_ids.tolist())
        last_kwargs = saved["", 99, "I"][1]
        self.assertEqual(last_kwargs["input_ids"].shape, (1, 1))
        self.assertEqual(type(last_kwargs[CACHE]).__name__, "DynamicCache")
        self.assertEqualAny(stored["", 99, "O"], saved["", 99, "O"])

    def test_bad_arguments(self):
        with self.assertRaises(TypeError) as cm:
            with steal_forward([KwModel()]):
                pass
        self.assertIn("model_or_list[0]", str(cm.exception))
        with self.assertRaises(TypeError):
            with steal_forward("model"):
                pass
        with self.assertRaises(ValueError):
            with steal_forward(KwModel(), storage_limit=-1):
                pass


class TestDocstrings(ExtTestCase):
    def test_docstring_examples(self):
        import doctest

        from onnx_diagnostic.helpers import steal

        res = doctest.testmod(steal, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertEqual(res.failed, 0)
        self.assertGreater(res.attempted, 3)


class TestStealForwardSubmodulesDumpDrop(ExtTestCase):
    def test_submodules_names_and_restore(self):
        model, inputs = dummy_llm()
        before = {name: dict(m.__dict__) for name, m in model.named_modules()}

        def run():
            with steal_forward(model, submodules=True) as stored:
                model(*inputs)
            return stored

        _, out, _ = self.capture(run)
        self.assertIn("+-LLM -- stolen forward for class LLM -- iteration 0", out)
        self.assertIn("+decoder.attention-MultiAttentionBlock -- stolen", out)
        self.assertIn("+decoder.attention.attention.1-AttentionBlock -- stolen", out)
        for name, m in model.named_modules():
            self.assertNotIn("forward", m.__dict__, msg=name)
            self.assertEqual(set(m.__dict__), set(before[name]))

    def test_submodules_dump(self):
        model, inputs = dummy_llm("MultiAttentionBlock")
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "dump.onnx")
            self.capture(lambda: self._run(model, inputs, dump=dump, submodules=True))
            saved = create_input_tensors_from_onnx_model(dump)
        self.assertIn(("-MultiAttentionBlock", 0, "O"), saved)
        self.assertIn(("attention.0-AttentionBlock", 0, "I"), saved)
        self.assertIn(("linear-Linear", 0, "O"), saved)
        self.assertEqualArray(saved[("-MultiAttentionBlock", 0, "O")], model(*inputs))

    def _run(self, model, inputs, dump, **kwargs):
        with steal_forward(model, dump_file=dump, **kwargs):
            return model(*inputs)

    def test_submodules_needs_a_module(self):
        model = KwModel()

        def run():
            with steal_forward([("m", model)], submodules=True):
                pass

        self.assertRaise(run, TypeError, "submodules=True needs a torch.nn.Module")

        def run2():
            with steal_forward(model, submodules=1):
                pass

        self.assertRaise(run2, TypeError, "submodules must be a bool")

    def test_dump_drop(self):
        model = KwModel()
        x, extra = torch.ones(2), torch.zeros(3)
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "dump.onnx")

            def run():
                with steal_forward(model, dump_file=dump, dump_drop={"extra"}, verbose=1) as st:
                    model(x, extra=extra, scale=2.0)
                return st

            stored, out, _ = self.capture(run)
            saved = create_input_tensors_from_onnx_model(dump)
        self.assertIn("-- not stored: ['extra'] (dump_drop)", out)
        args, kwargs = saved[("", 0, "I")]
        self.assertNotIn("extra", kwargs)
        self.assertIn("scale", kwargs)
        self.assertEqual(set(stored[("", 0, "I")][1]), {"scale"})
        # the output still holds extra, only the inputs are filtered
        self.assertEqual(len(saved[("", 0, "O")]), 2)

    def test_dump_drop_without_dump_file_and_bad(self):
        model = KwModel()

        def run():
            with steal_forward(model, dump_drop=["extra"]):
                return model(torch.ones(2), extra=torch.ones(2))

        res, _, _ = self.capture(run)
        self.assertEqual(len(res), 2)

        def bad():
            with steal_forward(model, dump_drop="extra"):
                pass

        self.assertRaise(bad, TypeError, "dump_drop must be None or a set")


if __name__ == "__main__":
    unittest.main(verbosity=2)
