"""
The task sweep ``_bench/bench_tasks.py``: its pieces, and its fixed fast subset (one
architecture for three tasks), which fails when a stage passing today fails.
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

_BENCH_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "_bench")


def _load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_tasks", os.path.join(_BENCH_DIR, "bench_tasks.py")
    )
    # one module object under its name: bench_tasks imports bench_architectures, doctest
    # looks the module up in sys.modules by name
    if "bench_tasks" in sys.modules:
        return sys.modules["bench_tasks"]
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tasks"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

#: stages every pair of the subset passed when the sweep was measured
#: (transformers 5.24, torch 2.13): one that fails now is a regression
EXPECTED_OK = {
    ("fill-mask", "bert"): ("build", "inputs", "eager", "export", "custom", "dynamo"),
    # dynamo: ConversionError (Cannot view a tensor...) in the decomposition
    ("text2text-generation", "t5"): ("build", "inputs", "eager", "export", "custom"),
    ("image-classification", "vit"): ("build", "inputs", "eager", "export", "custom", "dynamo"),
}
#: the baseline (torch.onnx.export without the library) is left out to keep the test short
TEST_STAGES = "build,inputs,eager,export,custom,dynamo"


def _record(task, arch, **kwargs):
    record = bench._new_record(task, arch)
    record.update(kwargs)
    return record


class TestBenchTasksPieces(ExtTestCase):
    def test_subset_is_expected(self):
        self.assertEqual(
            {(t, a) for t, archs in bench.SUBSET.items() for a in archs}, set(EXPECTED_OK)
        )

    def test_mappings(self):
        self.assertIn("fill-mask", bench.known_tasks())
        self.assertNotIn("text-generation", bench.known_tasks())
        self.assertEqual(bench.task_mapping("fill-mask")["bert"], "BertForMaskedLM")
        fe = bench.task_mapping("feature-extraction")
        self.assertEqual(fe["bert"], "BertModel")
        self.assertNotIn("vit", fe)
        self.assertNotIn("whisper", fe)
        self.assertEqual(
            bench.task_mapping("image-classification")["deit"], "DeiTForImageClassification"
        )
        self.assertRaise(lambda: bench.task_mapping("text-generation"), ValueError)

    def test_select(self):
        pairs = bench.select(["fill-mask", "image-classification"], [], 2, False)
        self.assertEqual([p[0] for p in pairs], ["fill-mask"] * 2 + ["image-classification"] * 2)
        self.assertEqual(pairs[:2], sorted(pairs[:2]))
        self.assertEqual(
            bench.select(list(bench.SUBSET), [], 0, True),
            sorted(EXPECTED_OK, key=lambda p: list(bench.SUBSET).index(p[0])),
        )

    def test_task_small_configs(self):
        candidates = dict(bench.task_small_configs("vit", "image-classification"))
        config = candidates["small+task"]
        self.assertEqual(config.hidden_size, 64)
        self.assertEqual(config.num_hidden_layers, 2)
        self.assertEqual(config.image_size, 32)
        self.assertIn("small", candidates)
        self.assertIn("task", candidates)
        self.assertRaise(lambda: bench.task_small_configs("no-such-model", "fill-mask"), ValueError)

    def test_handmade_inputs(self):
        import transformers

        config = transformers.BertConfig(vocab_size=100)
        inputs = bench.handmade_inputs(config, "fill-mask", 2, 5)
        self.assertEqual(sorted(inputs), ["attention_mask", "input_ids"])
        self.assertEqual(tuple(inputs["input_ids"].shape), (2, 5))
        config = transformers.ViTConfig(image_size=32)
        inputs = bench.handmade_inputs(config, "image-classification", 3, 5)
        self.assertEqual(tuple(inputs["pixel_values"].shape), (3, 3, 32, 32))
        self.assertIsNone(bench.handmade_inputs(config, "image-text-to-text", 3, 5))

    def test_tables_csv_page(self):
        records = {
            ("fill-mask", "a"): _record(
                "fill-mask", "a", build="ok", inputs="ok", eager="ok", export="ok", custom="ok"
            ),
            ("fill-mask", "b"): _record("fill-mask", "b", build="FAIL: E: `x` | *y*"),
            ("image-classification", "a"): _record("image-classification", "a", build="ok"),
        }
        text = bench.markdown(records, "transformers x")
        self.assertIn("| fill-mask | 1 | 1 | 1 | 1 | 1 | 0 | 0 | 2 |", text)
        self.assertIn("| image-classification | 1 | 0 | 0 | 0 | 0 | 0 | 0 | 1 |", text)
        self.assertIn("## image-classification", text)
        self.assertLess(text.index("## fill-mask"), text.index("## image-classification"))
        text = bench.rst(records)
        self.assertIn(".. rubric:: fill-mask", text)
        self.assertIn("build: FAIL: E: 'x' / y", text)
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "tasks.csv")
            bench.write_csv(records, name)
            back = bench.read_csv(name)
            self.assertEqual(sorted(back), sorted(records))
            self.assertEqual(back["fill-mask", "b"]["build"], records["fill-mask", "b"]["build"])
            self.assertEqual(bench.read_csv(os.path.join(tmp, "none.csv")), {})
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
                lambda: bench.update_page(page, records, "v"), ValueError, "sweep-tasks-begin"
            )
            # --report-only rewrites the tables of a previous run
            self.assertEqual(bench.main(["--report-only", "--merge", "--out", tmp]), 0)
            with open(os.path.join(tmp, "tasks.md")) as f:
                self.assertIn("| fill-mask | 1 | 1 |", f.read())

    def test_bad_arguments(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.assertRaise(
                lambda: bench.main(["--tasks", "no-such-task", "--out", tmp]), SystemExit
            )
            self.assertRaise(
                lambda: bench.main(["--tasks", "fill-mask", "--archs", "vit", "--out", tmp]),
                SystemExit,
            )
            self.assertRaise(lambda: bench.main(["--stages", "nope", "--out", tmp]), SystemExit)

    def test_doctest(self):
        import doctest

        res = doctest.testmod(bench, optionflags=doctest.ELLIPSIS, verbose=False)
        self.assertEqual(res.failed, 0)
        self.assertGreater(res.attempted, 4)


@pytest.mark.slow
@unittest.skipIf(
    cache_class("LinearAttentionLayer") is None, "figures measured on transformers >= 5"
)
class TestBenchTasksSubset(ExtTestCase):
    def test_subset_does_not_regress(self):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["--subset", "--stages", TEST_STAGES, "--timeout", "170", "--jobs", "2"]
            args += ["--out", tmp]
            self.assertEqual(bench.main(args), 0)
            with open(os.path.join(tmp, "tasks.csv"), newline="") as f:
                rows = {(row["task"], row["arch"]): row for row in csv.DictReader(f)}
        regressions = [
            f"{task}.{arch}.{stage}: {rows[task, arch][stage]}"
            for (task, arch), stages in EXPECTED_OK.items()
            for stage in stages
            if rows[task, arch][stage] != "ok"
        ]
        self.assertEqual(regressions, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
