"""
The causal-LM sweep ``_bench/bench_architectures.py``: its pieces, and its fixed fast subset
(the run continuous integration makes), which fails when an architecture regresses.
"""

import csv
import importlib.util
import os
import sys
import tempfile
import unittest

import pytest

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers.compat import cache_class

_BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "_bench", "bench_architectures.py")


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_architectures", _BENCH)
    # one module object under its name: bench_tasks imports bench_architectures, doctest
    # looks the module up in sys.modules by name
    if "bench_architectures" in sys.modules:
        return sys.modules["bench_architectures"]
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_architectures"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

#: stages every architecture of the subset passed when the sweep was measured
#: (transformers 5.24, torch 2.13): one that fails now is a regression
EXPECTED_OK = {
    "llama": ("build", "inputs", "eager", "export", "custom", "dynamo"),
    "bloom": ("build", "inputs", "eager", "export", "custom", "dynamo"),
    "gemma2": ("build", "inputs", "eager", "export", "custom", "dynamo"),
    "qwen2_moe": ("build", "inputs", "eager", "export", "custom", "dynamo"),
    "deepseek_v3": ("build", "inputs", "eager", "export", "custom", "dynamo"),
}


def _record(**kwargs):
    record = {k: "skip" for k in bench.STAGES}
    record.update(arch="a", model_class="", config="", custom_diff="", dynamo_diff="")
    record.update(kwargs)
    return record


class TestBenchPieces(ExtTestCase):
    def test_subset_is_expected(self):
        self.assertEqual(set(bench.SUBSET), set(EXPECTED_OK))

    def test_small_configs(self):
        how, config = bench.small_configs("mixtral")[0]
        self.assertEqual(how, "small")
        self.assertEqual(config.hidden_size, 64)
        self.assertEqual(config.num_hidden_layers, 2)
        self.assertEqual(config.vocab_size, 1000)
        self.assertEqual(config.num_local_experts, 4)
        self.assertEqual(config.num_experts_per_tok, 2)
        self.assertRaise(lambda: bench.small_configs("no-such-model"), ValueError, "no-such")

    def test_small_overrides_reduce_sub_configurations(self):
        d = {
            "vocab_size": 5000,
            "text_config": {"hidden_size": 1024, "num_attention_heads": 8, "vocab_size": 900},
            "vision_config": {"hidden_size": 768, "num_hidden_layers": 12, "num_heads": 12},
        }
        over = bench.small_overrides(d)
        self.assertEqual(over["vocab_size"], 1000)
        self.assertEqual(over["text_config"]["hidden_size"], 64)
        self.assertEqual(over["vision_config"]["num_hidden_layers"], 2)
        self.assertNotIn("vocab_size", over["text_config"])

    def test_error_line_and_diff(self):
        try:
            try:
                raise KeyError("inner")
            except KeyError as e:
                raise RuntimeError("outer\nsecond line") from e
        except RuntimeError as e:
            self.assertEqual(bench._error(e), "FAIL: RuntimeError <- KeyError: 'inner'")
        from onnx_diagnostic.tasks import TaskInputError

        try:
            try:
                raise KeyError("inner")
            except KeyError as e:
                raise TaskInputError("the library's message") from e
        except TaskInputError as e:
            self.assertEqual(bench._error(e), "FAIL: TaskInputError: the library's message")
        self.assertEqual(bench._diff_status({"abs": 1e-6})[0], "ok")
        self.assertEqual(bench._diff_status({"abs": 0.5})[0], "DIFF: 0.5")
        self.assertTrue(bench._diff_status({"abs": 0.0, "error": "x"})[0].startswith("FAIL"))
        self.assertEqual(bench._diff_status({"abs": float("nan")})[0], "DIFF: nan")

    def test_markdown_and_csv(self):
        records = {
            "a": _record(arch="a", build="ok", inputs="ok", eager="ok", export="ok", custom="ok"),
            "b": _record(arch="b", build="ok", inputs="FAIL: TaskInputError: bad | pipe"),
        }
        text = bench.markdown(records, "transformers x")
        self.assertIn("| the library builds inputs | 1 |", text)
        self.assertIn("| architectures | 2 |", text)
        self.assertIn("transformers x", text)
        self.assertIn("| b | ok | FAIL | skip |", text)
        self.assertIn("inputs: FAIL: TaskInputError: bad / pipe", text)
        self.assertEqual(bench.first_error(records["a"]), "")
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "r.csv")
            bench.write_csv(records, name)
            back = bench.read_csv(name)
            self.assertEqual(sorted(back), ["a", "b"])
            self.assertEqual(back["b"]["inputs"], records["b"]["inputs"])
            self.assertEqual(bench.read_csv(os.path.join(tmp, "none.csv")), {})

    @unittest.skipIf(
        cache_class("LinearAttentionLayer") is None,
        "the examples use architectures of transformers >= 5 (qwen3_5)",
    )
    def test_doctest(self):
        import doctest

        res = doctest.testmod(bench, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertEqual(res.failed, 0)
        self.assertGreater(res.attempted, 4)

    def test_rst_and_page(self):
        records = {
            "a": _record(arch="a", build="ok", inputs="ok", eager="ok", export="ok", custom="ok"),
            "b": _record(arch="b", build="FAIL: E: `x` | *y*"),
        }
        text = bench.rst(records)
        self.assertIn("    * - the library builds inputs\n      - 1", text)
        self.assertIn("build: FAIL: E: 'x' / y", text)
        with tempfile.TemporaryDirectory() as tmp:
            page = os.path.join(tmp, "page.rst")
            with open(page, "w") as f:
                f.write(f"Title\n=====\n\n{bench.BEGIN}\n\nold\n\n{bench.END}\n\nend\n")
            bench.update_page(page, records, "transformers 9")
            with open(page) as f:
                new = f.read()
            self.assertNotIn("old", new)
            self.assertIn("Measured on transformers 9.", new)
            self.assertTrue(new.endswith(f"{bench.END}\n\nend\n"))
            with open(page, "w") as f:
                f.write("no markers")
            self.assertRaise(
                lambda: bench.update_page(page, records, "v"), ValueError, "sweep-begin"
            )
            # --report-only rewrites the tables of a previous run
            bench.write_csv(records, os.path.join(tmp, "architectures.csv"))
            self.assertEqual(bench.main(["--report-only", "--merge", "--out", tmp]), 0)
            with open(os.path.join(tmp, "architectures.md")) as f:
                self.assertIn("| architectures | 2 |", f.read())

    def test_bad_arguments(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.assertRaise(
                lambda: bench.main(["--archs", "no-such-model", "--out", tmp]), SystemExit
            )
            self.assertRaise(
                lambda: bench.main(["--subset", "--stages", "build,nope", "--out", tmp]),
                SystemExit,
            )


@pytest.mark.slow
@unittest.skipIf(
    cache_class("LinearAttentionLayer") is None, "figures measured on transformers >= 5"
)
class TestBenchSubset(ExtTestCase):
    def test_subset_does_not_regress(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(bench.main(["--subset", "--timeout", "170", "--out", tmp]), 0)
            with open(os.path.join(tmp, "architectures.csv"), newline="") as f:
                rows = {row["arch"]: row for row in csv.DictReader(f)}
            with open(os.path.join(tmp, "architectures.md")) as f:
                self.assertIn("| architecture |", f.read())
        regressions = [
            f"{arch}.{stage}: {rows[arch][stage]}"
            for arch, stages in EXPECTED_OK.items()
            for stage in stages
            if rows[arch][stage] != "ok"
        ]
        self.assertEqual(regressions, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
