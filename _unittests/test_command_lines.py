import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import torch

from onnx_diagnostic._command_lines import get_parser, main
from onnx_diagnostic.ext_test_case import ExtTestCase


class TestCommandLines(ExtTestCase):
    def test_docstring_examples(self):
        import doctest

        from onnx_diagnostic import _command_lines

        res = self.capture(
            lambda: doctest.testmod(_command_lines, optionflags=doctest.ELLIPSIS, verbose=False)
        )[0]
        self.assertGreater(res.attempted, 2)
        self.assertEqual(0, res.failed)

    def test_validate_tiny_llm_exits_0(self):
        with tempfile.TemporaryDirectory() as tmp:
            rc, out, err = self.capture(
                lambda: main(
                    ["validate", "-m", "arnir0/Tiny-LLM", "--export", "onnx-dynamo", "--run",
                     "--dump-folder", tmp, "-o", os.path.join(tmp, "s.csv"), "--repeat", "2"]
                )
            )  # fmt: skip
            self.assertEqual(0, rc, msg=out)
            with open(os.path.join(tmp, "summary.json")) as f:
                summary = json.load(f)
            self.assertExists(os.path.join(tmp, "arnir0_Tiny-LLM.onnx-dynamo.onnx"))
            import pandas

            csv = pandas.read_csv(os.path.join(tmp, "s.csv"))
        self.assertEqual("ok", summary["status"])
        self.assertEqual(["ok"], list(csv["status"]))
        for key in ("disc_abs", "disc2_abs"):
            self.assertLess(summary[key], 1e-4)
        for key in ("time_export", "onnx_size_mb", "onnx_n_nodes", "latency_torch", "latency_ort"):
            self.assertGreater(summary[key], 0, msg=key)
            self.assertIn(key, out)
        lines = {li.split()[0]: li for li in out.splitlines()}
        self.assertTrue(lines["latency_ort"].endswith(" s"), msg=out)
        self.assertTrue(lines["time_export"].endswith(" s"), msg=out)
        self.assertTrue(lines["onnx_size_mb"].endswith(" MB"), msg=out)
        self.assertNotIn("ERR_", out)
        # no third-party noise, no progress bar: stderr is not a terminal
        self.assertNotIn("torchvision", err)
        self.assertNotIn("LeafSpec", err)
        self.assertEqual("", err.strip(), msg=err)

    def test_validate_compare_intermediates(self):
        rc, out, err = self.capture(
            lambda: main(
                ["validate", "-m", "arnir0/Tiny-LLM", "--export", "custom", "--run",
                 "--compare-intermediates", "--repeat", "1"]
            )
        )  # fmt: skip
        self.assertEqual(0, rc, msg=out + err)
        lines = {li.split()[0]: li for li in out.splitlines() if li.strip()}
        self.assertIn("none", lines["cmp_first_divergence"])
        self.assertGreater(int(lines["cmp_aligned"].split()[1]), 40)
        self.assertIn("lm_head=", out)
        rc, _, err = self.capture(
            lambda: main(["validate", "-m", "arnir0/Tiny-LLM", "--compare-intermediates"])
        )
        self.assertEqual(2, rc)
        self.assertIn("--compare-intermediates needs --export", err)

    def test_sbs(self):
        with tempfile.TemporaryDirectory() as tmp:
            rc, out, err = self.capture(
                lambda: main(
                    ["validate", "-m", "arnir0/Tiny-LLM", "--export", "custom",
                     "--dump-folder", tmp, "-q"]
                )
            )  # fmt: skip
            self.assertEqual(0, rc, msg=out + err)
            onnx_file = os.path.join(tmp, "arnir0_Tiny-LLM.custom.onnx")
            table = os.path.join(tmp, "table.csv")
            rc, out, err = self.capture(
                lambda: main(["sbs", "-m", "arnir0/Tiny-LLM", "--onnx", onnx_file, "-o", table])
            )
            self.assertEqual(0, rc, msg=out + err)
            self.assertIn("no divergence", out)
            self.assertIn("weights copied from the ONNX file: 12, not found: 0", out)
            import pandas

            df = pandas.read_csv(table)
            self.assertGreater(len(df), 40)
            self.assertEqual({"ok"}, set(df["status"]))
            # another architecture: its weights are not in the file
            rc, out, err = self.capture(
                lambda: main(["sbs", "-m", "openai-community/gpt2", "--onnx", onnx_file])
            )
            self.assertEqual(1, rc)
            self.assertIn("was it exported from this model id", err)
            # usage errors
            rc, _, err = self.capture(
                lambda: main(["sbs", "-m", "arnir0/Tiny-LLM", "--onnx", onnx_file, "-o", "t.txt"])
            )
            self.assertEqual(2, rc)
            self.assertIn(".csv or .xlsx", err)
            rc, _, err = self.capture(
                lambda: main(["sbs", "-m", "arnir0/Tiny-LLM", "--onnx", "missing.onnx"])
            )
            self.assertEqual(1, rc)
            self.assertIn("does not exist", err)

    def test_compare(self):
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for exporter in ["custom", "onnx-dynamo"]:
                rc, out, err = self.capture(
                    lambda: main(  # noqa: B023
                        ["validate", "-m", "arnir0/Tiny-LLM", "--export", exporter,  # noqa: B023
                         "--dump-folder", tmp, "-q"]
                    )
                )  # fmt: skip
                self.assertEqual(0, rc, msg=out + err)
                files[exporter] = os.path.join(tmp, f"arnir0_Tiny-LLM.{exporter}.onnx")
            table = os.path.join(tmp, "t.csv")
            rc, out, err = self.capture(
                lambda: main(
                    ["compare", "-m1", files["custom"], "-m2", files["onnx-dynamo"],
                     "-m", "arnir0/Tiny-LLM", "-o", table]
                )
            )  # fmt: skip
            # each validate run built its own random weights: the two files differ
            self.assertEqual(1, rc, msg=out + err)
            self.assertIn("first divergence", out)
            self.assertExists(table)
            rc, out, err = self.capture(
                lambda: main(
                    ["compare", "-m1", files["custom"], "-m2", files["custom"],
                     "-m", "arnir0/Tiny-LLM"]
                )
            )  # fmt: skip
            self.assertEqual(0, rc, msg=out + err)
            self.assertIn("no divergence", out)
            rc, _, err = self.capture(
                lambda: main(
                    ["compare", "-m1", files["custom"], "-m2", files["custom"],
                     "--dim", "batch=x"]
                )
            )  # fmt: skip
            self.assertEqual(2, rc)
            self.assertIn("integer", err)
            rc, _, err = self.capture(
                lambda: main(["compare", "-m1", files["custom"], "-m2", "missing.onnx"])
            )
            self.assertEqual(1, rc)
            self.assertIn("does not exist", err)

    def test_broken_forward_exits_1_with_a_narrow_table(self):
        import transformers

        forward = transformers.LlamaForCausalLM.forward
        long_error = "this forward is broken on purpose " + " ".join(["details"] * 60)

        def _broken(self, *args, **kwargs):
            raise RuntimeError(long_error)

        with mock.patch.object(transformers.LlamaForCausalLM, "forward", _broken):
            with mock.patch.dict(os.environ, {"COLUMNS": "80"}):
                rc, out, err = self.capture(
                    lambda: main(
                        ["validate", "-m", "arnir0/Tiny-LLM", "--export", "onnx-dynamo", "--run",
                         "-v", "1"]
                    )
                )  # fmt: skip
        self.assertIs(forward, transformers.LlamaForCausalLM.forward)
        self.assertEqual(1, rc)
        self.assertIn("FAILED: run_torch, export", out)
        self.assertLessEqual(max(len(li) for li in out.splitlines()), 80, msg=out)
        err_lines = out[out.index("ERR_run_torch") :].split("ERR_export")[0]
        self.assertIn("RuntimeError: " + long_error, " ".join(err_lines.split()))
        # verbose prints the failure once on stderr, the table holds the whole error
        self.assertEqual(1, err.count("step 'run_torch' failed"), msg=err)

    def test_discrepancy_above_threshold_exits_1(self):
        from onnx_diagnostic.helpers import rt_helper

        run_session = rt_helper.run_session

        def _shifted(session, feeds):
            return [t + 1 if t.is_floating_point() else t for t in run_session(session, feeds)]

        with mock.patch.object(rt_helper, "run_session", _shifted):
            rc, out, _ = self.capture(
                lambda: main(
                    ["validate", "-m", "arnir0/Tiny-LLM", "--export", "custom", "--run", "-q"]
                )
            )
        self.assertIs(run_session, rt_helper.run_session)
        self.assertEqual(1, rc)
        self.assertEqual("status: FAILED: disc_abs=1>0.0001, disc2_abs=1>0.0001", out.strip())

    def test_validate_without_export_runs_torch_only(self):
        rc, out, _ = self.capture(lambda: main(["validate", "-m", "arnir0/Tiny-LLM"]))
        self.assertEqual(0, rc)
        self.assertIn("latency_torch", out)
        self.assertNotIn("time_export", out)

    def _usage_error(self, argv):
        from onnx_diagnostic.torch_models import hghub

        def _no_build(*args, **kwargs):
            raise AssertionError("a usage error must be found before building the model")

        with mock.patch.object(hghub, "get_untrained_model_with_inputs", _no_build):
            rc, out, err = self.capture(lambda: main(argv))
        self.assertEqual(2, rc, msg=err)
        self.assertEqual("", out)
        return err

    def test_bad_option_values_exit_2_listing_the_valid_ones(self):
        err = self._usage_error(["validate", "-m", "arnir0/Tiny-LLM", "--dtype", "float17"])
        self.assertIn(
            "argument --dtype: invalid choice: 'float17' (choose from 'float32', 'float16', "
            "'bfloat16', 'float64')",
            err,
        )
        err = self._usage_error(["validate", "-m", "arnir0/Tiny-LLM", "--export", "foo"])
        self.assertIn("invalid choice: 'foo' (choose from 'custom', 'onnx-dynamo')", err)
        err = self._usage_error(["validate", "-m", "arnir0/Tiny-LLM", "--device", "gpu"])
        self.assertIn("'gpu' is not a device, valid values: cpu, cuda, cuda:N", err)
        if not torch.cuda.is_available():
            err = self._usage_error(["validate", "-m", "arnir0/Tiny-LLM", "--device", "cuda"])
            self.assertIn("argument --device: 'cuda' is not available", err)
            self.assertIn("use --device cpu", err)
        err = self._usage_error(["validate", "-m", "arnir0/Tiny-LLM", "-o", "folder"])
        self.assertIn("-o 'folder': the summary is written as .json or .csv", err)

    def test_mop_unknown_field_exits_2(self):
        err = self._usage_error(
            ["validate", "-m", "arnir0/Tiny-LLM", "--mop", "num_hiden_layers=1"]
        )
        self.assertIn(
            "--mop: 'num_hiden_layers' is not a field of the configuration of "
            "'arnir0/Tiny-LLM' (LlamaConfig), did you mean: num_hidden_layers?",
            err,
        )

    def test_run_without_export_exits_2(self):
        err = self._usage_error(["validate", "-m", "arnir0/Tiny-LLM", "--run"])
        self.assertIn("--run needs --export custom or --export onnx-dynamo", err)

    def test_unknown_model_id_exits_2_and_says_what_to_do(self):
        err = self._usage_error(["validate", "-m", "unknown/model-id"])
        self.assertIn("model id 'unknown/model-id' is neither shipped", err)
        self.assertIn("python -m onnx_diagnostic validate --list", err)
        self.assertIn("-m path/to/config.json", err)
        self.assertNotIn("use_hub", err)
        self.assertNotIn("AutoConfig", err)

    def test_local_config_json(self):
        from onnx_diagnostic.torch_models.validate import model_config

        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "config.json")
            with open(name, "w") as f:
                json.dump(model_config("arnir0/Tiny-LLM", reduced=False), f)
            rc, out, _ = self.capture(lambda: main(["validate", "-m", name, "--repeat", "1"]))
        self.assertEqual(0, rc, msg=out)
        self.assertIn("LlamaForCausalLM", out)

    def test_no_command_exits_2_listing_the_commands(self):
        rc, out, err = self.capture(lambda: main([]))
        self.assertEqual(2, rc)
        self.assertEqual("", out)
        self.assertIn("error: a command is required, one of: validate, exportsample, config", err)
        self.assertNotIn("the following arguments are required", err)

    def test_validate_help(self):
        rc, out, _ = self.capture(lambda: main(["validate", "--help"]))
        self.assertEqual(0, rc)
        self.assertIn("--export {custom,onnx-dynamo}", out)
        self.assertIn("--dtype {float32,float16,bfloat16,float64}", out)
        self.assertIn("(default: cpu)", out)
        self.assertIn("(default: 5)", out)
        self.assertIn("example:\n  python -m onnx_diagnostic validate --list", out)
        self.assertIn("latency_* and time_* in seconds", out)

    def test_every_command_has_a_description_and_an_example(self):
        from onnx_diagnostic._command_lines import _COMMANDS

        for command in _COMMANDS:
            with self.subTest(command=command):
                rc, out, _ = self.capture(lambda: main([command, "--help"]))  # noqa: B023
                self.assertEqual(0, rc)
                self.assertIn(f"example:\n  python -m onnx_diagnostic {command}", out)
                description = out.split("\n\n")[1]
                self.assertTrue(description.endswith("."), msg=description)
        rc, out, _ = self.capture(lambda: main(["--help"]))
        self.assertEqual(0, rc)
        for command in _COMMANDS:
            self.assertIn(command, out)
        self.assertNotIn("not yet", out)
        # every command known to onnx-diagnostic users exists
        for command in ["validate", "print", "dot", "find", "config", "stats", "agg", "sbs",
                        "compare", "optimize", "lighten", "unlighten", "partition",
                        "exportsample"]:  # fmt: skip
            self.assertIn(command, _COMMANDS)

    def test_list(self):
        rc, out, _ = self.capture(lambda: main(["validate", "--list"]))
        self.assertEqual(0, rc)
        line = [li for li in out.splitlines() if "arnir0/Tiny-LLM" in li]
        self.assertEqual(1, len(line), msg=out)
        self.assertIn("text-generation", line[0])

    def test_validate_needs_a_model_id(self):
        rc, _, err = self.capture(lambda: main(["validate"]))
        self.assertEqual(2, rc)
        self.assertIn("-m MODEL_ID is required", err)

    def test_parser_model_kwargs(self):
        args = get_parser().parse_args(
            ["validate", "-m", "x", "--mop", "num_hidden_layers=2", "--mop", "name=a"]
        )
        self.assertEqual([("num_hidden_layers", 2), ("name", "a")], args.mop)
        rc, _, err = self.capture(lambda: main(["validate", "--mop", "novalue"]))
        self.assertEqual(2, rc)
        self.assertIn("expected KEY=VALUE, got 'novalue'", err)

    def test_print_dump(self):
        from onnx_diagnostic.helpers.mini_onnx_builder import (
            create_onnx_model_from_input_tensors,
        )

        dump = {("model", 0): (torch.ones((2, 3)),), ("model", 1): dict(x=torch.tensor(2))}
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "dump.onnx")
            with open(name, "wb") as f:
                f.write(create_onnx_model_from_input_tensors(dump).SerializeToString())
            rc, out, _ = self.capture(lambda: main(["print", name]))
        self.assertEqual(0, rc)
        self.assertIn("dump with 2 entries", out)
        self.assertIn("('model', 0): (T1s2x3[1.0,1.0:A1.0],)", out)
        self.assertIn("('model', 1): dict(x:T7s[2,2:A2.0])", out)

    def test_print_onnx_model_names_the_types(self):
        from onnx_diagnostic.export.api import to_onnx

        class M(torch.nn.Module):
            def forward(self, x, ids):
                return x * 2, ids + 1

        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "m.onnx")
            to_onnx(M(), (torch.rand(2, 3), torch.tensor([1, 2])), filename=name)
            rc, out, _ = self.capture(lambda: main(["print", name]))
            rc2, pretty, _ = self.capture(lambda: main(["print", name, "--format", "pretty"]))
        self.assertEqual((0, 0), (rc, rc2))
        self.assertIn("input x: float[2, 3]", out)
        self.assertIn("input ids: int64[2]", out)
        self.assertNotIn("elem_type", out)
        self.assertIn("Mul: 1", out)
        self.assertIn("= Mul (x", pretty)

    def test_print_missing_or_bad_file(self):
        rc, _, err = self.capture(lambda: main(["print", "does_not_exist.onnx"]))
        self.assertEqual(1, rc)
        self.assertIn("file 'does_not_exist.onnx' does not exist", err)
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "bad.onnx")
            with open(name, "w") as f:
                f.write("not an onnx file\n" * 5)
            rc, _, err = self.capture(lambda: main(["print", name]))
        self.assertEqual(1, rc)
        self.assertIn("bad.onnx' is not an ONNX model", err)
        self.assertEqual(1, len(err.strip().splitlines()), msg=err)

    def test_print_help(self):
        rc, out, _ = self.capture(lambda: main(["print", "--help"]))
        self.assertEqual(0, rc)
        self.assertIn("Shows what a dump holds or summarizes an ONNX model.", out)
        self.assertIn("an ONNX file: a model or a dump", out)

    def test_python_dash_m(self):
        res = subprocess.run(
            [sys.executable, "-m", "onnx_diagnostic", "validate", "--list"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.assertEqual(0, res.returncode, msg=res.stderr)
        self.assertIn("arnir0/Tiny-LLM", res.stdout)


def _small_model():
    """x (float[N, 100]) -> MatMul(w 100x100) -> Add(b) -> Relu -> y, Shape(x) -> s."""
    import numpy as np
    import onnx.helper as oh
    from onnx import TensorProto

    from onnx_diagnostic.helpers.onnx_helper import from_array_extended

    w = np.random.default_rng(0).normal(size=(100, 100)).astype(np.float32)
    return oh.make_model(
        oh.make_graph(
            [
                oh.make_node("MatMul", ["x", "w"], ["t"]),
                oh.make_node("Add", ["t", "b"], ["u"]),
                oh.make_node("Relu", ["u"], ["y"]),
                oh.make_node("Shape", ["x"], ["s"]),
            ],
            "g",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 100])],
            [
                oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 100]),
                oh.make_tensor_value_info("s", TensorProto.INT64, [2]),
            ],
            [from_array_extended(w, "w"), from_array_extended(np.ones(100, np.float32), "b")],
        ),
        opset_imports=[oh.make_opsetid("", 18)],
        ir_version=10,
    )


def _cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnx_diagnostic", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


class TestSubcommands(ExtTestCase):
    """Every subcommand through ``python -m onnx_diagnostic`` on a small model."""

    def test_onnx_file_subcommands(self):
        import numpy as np
        import onnx
        import onnxruntime

        with tempfile.TemporaryDirectory() as tmp:
            model = os.path.join(tmp, "model.onnx")
            onnx.save(_small_model(), model)

            res = _cli("print", model)
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertIn("output s: int64[2]", res.stdout)

            res = _cli("dot", model)
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertTrue(res.stdout.startswith("digraph {"))
            res = _cli("dot", model, "-o", os.path.join(tmp, "model.dot"))
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertExists(os.path.join(tmp, "model.dot"))
            res = _cli("dot", model, "-o", os.path.join(tmp, "model.png"))
            if shutil.which("dot"):
                self.assertEqual(0, res.returncode, msg=res.stderr)
                self.assertExists(os.path.join(tmp, "model.png"))
            else:
                self.assertEqual(1, res.returncode)
                self.assertIn("needs the Graphviz binary 'dot'", res.stderr)
            self.assertEqual(2, _cli("dot", model, "-o", "model.svg").returncode)

            res = _cli("find", model, "-n", "u")
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertEqual([">> u: Add(t, b) -> u", "<< u: Relu(u) -> y"],
                             res.stdout.splitlines())  # fmt: skip
            res = _cli("find", model, "-n", "nope")
            self.assertEqual(1, res.returncode)
            self.assertIn("no node produces 'nope'", res.stderr)

            res = _cli("stats", model, "--top", "1")
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertIn("4 nodes, 4 node types", res.stdout)
            self.assertIn("2 initializers, 0.039 MB", res.stdout)
            self.assertIn("... 1 more (--top N)", res.stdout)
            res = _cli("stats", model, "--format", "json")
            self.assertEqual(40000, json.loads(res.stdout)["initializers"][0]["bytes"])

            light = os.path.join(tmp, "light.onnx")
            res = _cli("lighten", model, "-o", light)
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertIn("removed 1 initializers", res.stdout)
            self.assertExists(light + ".stats")
            self.assertLess(os.path.getsize(light), os.path.getsize(model) / 10)
            restored = os.path.join(tmp, "restored.onnx")
            res = _cli("unlighten", light, "-o", restored)
            self.assertEqual(0, res.returncode, msg=res.stderr)
            x = np.ones((2, 100), dtype=np.float32)
            sess = onnxruntime.InferenceSession(restored, providers=["CPUExecutionProvider"])
            self.assertEqual((2, 100), sess.run(None, {"x": x})[0].shape)
            res = _cli("unlighten", model, "-o", restored)
            self.assertEqual(1, res.returncode)
            self.assertIn("model.onnx.stats", res.stderr)

            for method in ("custom", "onnxscript"):
                opt = os.path.join(tmp, f"opt.{method}.onnx")
                res = _cli("optimize", model, "-o", opt, "--method", method)
                self.assertEqual(0, res.returncode, msg=res.stderr)
                self.assertExists(opt)

            head, tail = os.path.join(tmp, "head.onnx"), os.path.join(tmp, "tail.onnx")
            res = _cli("partition", model, "-n", "u", "-o", head, tail)
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertIn("(2 nodes) and", res.stdout)
            res = _cli("partition", model, "-n", "nope", "-o", head, tail)
            self.assertEqual(1, res.returncode)
            self.assertIn("'nope' is not a result of the main graph", res.stderr)

            text = os.path.join(tmp, "text.onnx")
            with open(text, "w") as f:
                f.write("hello\n" * 20)
            for command in ("print", "dot", "stats", "lighten -o x.onnx"):
                res = _cli(*command.split(" ")[:1], text, *command.split(" ")[1:], cwd=tmp)
                self.assertEqual(1, res.returncode, msg=command)
                self.assertIn("is not an ONNX model", res.stderr)
                self.assertNotIn("Traceback", res.stderr)

    def test_model_subcommands(self):
        res = _cli("config", "-m", "arnir0/Tiny-LLM")
        self.assertEqual(0, res.returncode, msg=res.stderr)
        reduced = json.loads(res.stdout)
        res = _cli("config", "-m", "arnir0/Tiny-LLM", "--full", "--mop", "vocab_size=10")
        full = json.loads(res.stdout)
        self.assertEqual("llama", full["model_type"])
        self.assertEqual(10, full["vocab_size"])
        self.assertLessEqual(reduced["num_hidden_layers"], full["num_hidden_layers"])
        res = _cli("config", "-m", "not/shipped")
        self.assertEqual(2, res.returncode)
        self.assertIn("validate --list", res.stderr)

        res = _cli("exportsample", "-m", "arnir0/Tiny-LLM", "--export", "onnx-dynamo")
        self.assertEqual(0, res.returncode, msg=res.stderr)
        self.assertIn("exporter='onnx-dynamo'", res.stdout)
        compile(res.stdout, "sample.py", "exec")

        with tempfile.TemporaryDirectory() as tmp:
            for i, ext in enumerate(["json", "csv"]):
                res = _cli("validate", "-m", "arnir0/Tiny-LLM", "--repeat", "1", "-q",
                           "--mop", f"num_hidden_layers={i + 1}", "-o",
                           os.path.join(tmp, "runs", f"run{i}.{ext}"))  # fmt: skip
                self.assertEqual(0, res.returncode, msg=res.stderr)
                self.assertEqual("status: ok", res.stdout.strip())
            res = _cli("agg", os.path.join(tmp, "runs"))
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertEqual(4, len(res.stdout.strip().splitlines()), msg=res.stdout)
            self.assertIn("2 runs, ", res.stdout)
            self.assertNotIn("time_create", res.stdout)
            self.assertTrue(res.stdout.split()[:2] == ["model_id", "exporter"], msg=res.stdout)
            out = os.path.join(tmp, "all.csv")
            res = _cli("agg", os.path.join(tmp, "runs"), "-o", out)
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertIn("wrote 2 runs", res.stdout)
            res = _cli("agg", os.path.join(tmp, "runs"), "-o", os.path.join(tmp, "all.xlsx"))
            try:
                import openpyxl  # noqa: F401

                self.assertEqual(0, res.returncode, msg=res.stderr)
            except ImportError:
                self.assertEqual(1, res.returncode)
                self.assertIn("writing .xlsx needs openpyxl", res.stderr)
            res = _cli("agg", os.path.join(tmp, "missing"))
            self.assertEqual(1, res.returncode)
            self.assertIn("does not exist", res.stderr)

    def test_sbs_and_compare_subcommands(self):
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            # compare: two ONNX files, random inputs
            model = os.path.join(tmp, "model.onnx")
            onnx.save(_small_model(), model)
            res = _cli("compare", "-m1", model, "-m2", model, "--dim", "N=3")
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertIn("no divergence", res.stdout)
            self.assertIn("results of model1", res.stdout)
            # sbs: an exported model id next to torch
            res = _cli("validate", "-m", "arnir0/Tiny-LLM", "--export", "custom",
                       "--dump-folder", tmp, "-q")  # fmt: skip
            self.assertEqual(0, res.returncode, msg=res.stderr)
            table = os.path.join(tmp, "t.csv")
            res = _cli("sbs", "-m", "arnir0/Tiny-LLM", "--onnx",
                       os.path.join(tmp, "arnir0_Tiny-LLM.custom.onnx"), "-o", table)  # fmt: skip
            self.assertEqual(0, res.returncode, msg=res.stderr)
            self.assertIn("no divergence", res.stdout)
            self.assertExists(table)
            self.assertNotIn("torchvision", res.stderr)


class TestCommandLineVersions(ExtTestCase):
    def test_versions_text(self):
        from onnx_diagnostic.helpers import compat

        rc, out, _ = self.capture(lambda: main(["versions"]))
        self.assertEqual(0, rc)
        lines = out.splitlines()
        self.assertEqual(["package", "version", "tested", "status"], lines[0].split())
        for package in ("python", "torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
            row = [li for li in lines if li.split()[:1] == [package]]
            self.assertEqual(1, len(row), msg=f"{package}\n{out}")
        row = next(li for li in lines if li.startswith("transformers "))
        self.assertIn(compat.transformers_version(), row)
        self.assertIn(" .. ".join(compat.TESTED_VERSIONS["transformers"]), row)
        self.assertIn(f"cache argument of forward: {compat.default_cache_arg_name()}", out)
        self.assertIn(f"cache field of the outputs: {compat.output_cache_field()}", out)
        self.assertIn("patches of torch_export_patches:", out)
        self.assertIn("transformers:DynamicLayer.lazy_initialization", out)

    def test_versions_json(self):
        from onnx_diagnostic.helpers import compat
        from onnx_diagnostic.torch_export_patches import list_patches

        rc, out, _ = self.capture(lambda: main(["versions", "--format", "json"]))
        self.assertEqual(0, rc)
        data = json.loads(out)
        self.assertEqual(
            ["cache_arg_name", "output_cache_field", "packages", "patches"], sorted(data)
        )
        self.assertIn(data["cache_arg_name"], compat.CACHE_ARG_NAMES)
        rows = {r["package"]: r for r in data["packages"]}
        self.assertEqual(compat.transformers_version(), rows["transformers"]["version"])
        self.assertEqual(
            list(compat.TESTED_VERSIONS["torch"]), rows["torch"]["tested"], msg=str(rows)
        )
        self.assertEqual([p["name"] for p in list_patches()], [p["name"] for p in data["patches"]])
        for p in data["patches"]:
            self.assertIn(p["status"], ("applies", "skipped"))

    def test_versions_does_not_patch(self):
        import transformers.cache_utils

        before = transformers.cache_utils.DynamicLayer.__dict__["lazy_initialization"]
        self.capture(lambda: main(["versions"]))
        after = transformers.cache_utils.DynamicLayer.__dict__["lazy_initialization"]
        self.assertIs(before, after)

    def test_versions_patch_skipped_and_why(self):
        from onnx_diagnostic import _command_lines

        rows = [
            dict(
                name="transformers:A.f",
                library="transformers",
                applies=False,
                versions="transformers<4.50",
                targets=[],
            ),
            dict(
                name="transformers:B.g",
                library="transformers",
                applies=True,
                versions="any",
                targets=["transformers.B.g"],
            ),
        ]
        with mock.patch(
            "onnx_diagnostic.torch_export_patches.patches.list_patches", return_value=rows
        ):
            rc, out, _ = self.capture(lambda: _command_lines.main(["versions"]))
        self.assertEqual(0, rc)
        line_a = next(li for li in out.splitlines() if "transformers:A.f" in li)
        self.assertIn("skipped", line_a)
        self.assertIn(
            "not needed with the installed versions (needed for transformers<4.50)", line_a
        )
        line_b = next(li for li in out.splitlines() if "transformers:B.g" in li)
        self.assertIn("applies", line_b)
        self.assertIn("transformers.B.g", line_b)

    def test_versions_outside_tested_range(self):
        from onnx_diagnostic.helpers import compat

        rows = [
            dict(package="transformers", version="4.40.0", tested=("4.57", "5.24"), in_range=False),
            dict(package="onnxscript", version=None, tested=("0.7", "0.7"), in_range=None),
            dict(package="onnxruntime-genai", version="0.9.0", tested=None, in_range=None),
        ]
        with mock.patch.object(compat, "version_report", return_value=rows):
            rc, out, _ = self.capture(lambda: main(["versions"]))
        self.assertEqual(0, rc)
        lines = out.splitlines()
        self.assertIn("OUTSIDE the tested range", next(li for li in lines if "4.40.0" in li))
        self.assertIn("not installed", next(li for li in lines if li.startswith("onnxscript")))
        genai = next(li for li in lines if li.startswith("onnxruntime-genai"))
        self.assertIn("untested", genai)
        self.assertIn("no tested range", genai)

    def test_version_report_and_range(self):
        from onnx_diagnostic.helpers import compat

        self.assertTrue(
            compat.in_tested_range("transformers", compat.TESTED_VERSIONS["transformers"][1] + ".9")
        )
        self.assertFalse(compat.in_tested_range("torch", "2.12.1"))
        self.assertFalse(compat.in_tested_range("torch", "2.99.0"))
        self.assertTrue(compat.in_tested_range("torch", "2.13.0+cpu"))
        self.assertFalse(compat.in_tested_range("onnxruntime-genai", "0.9.0"))
        self.assertTrue(compat.in_tested_range("onnxruntime-genai", "0.18.0"))
        self.assertIsNone(compat.in_tested_range("unknown-package", "1.0"))
        rows = compat.version_report()
        self.assertEqual(
            ["python", "torch", "transformers", "onnx", "onnxruntime", "onnxscript"],
            [r["package"] for r in rows][:6],
        )
        self.assertEqual(compat.transformers_version(), rows[2]["version"])
        # the metadata of a CUDA wheel says 2.15.0 where torch.__version__ says 2.15.0+cu132
        self.assertEqual(torch.__version__.split("+")[0], rows[1]["version"].split("+")[0])

    def test_python_dash_m_versions(self):
        res = subprocess.run(
            [sys.executable, "-m", "onnx_diagnostic", "versions", "--format", "json"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.assertEqual(0, res.returncode, msg=res.stderr)
        self.assertIn("transformers", [r["package"] for r in json.loads(res.stdout)["packages"]])


if __name__ == "__main__":
    unittest.main(verbosity=2)
