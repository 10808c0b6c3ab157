"""
Tests the pure-Python helpers of ``_bench/version_matrix.py`` (imported by path): parsing
``pip index versions``, picking the latest patch of every minor release, parsing the closing
line of pytest, formatting the tables. Nothing is installed, no virtual environment created.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.helpers import compat

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(ROOT, "_bench", "version_matrix.py")


def load_script():
    spec = importlib.util.spec_from_file_location("version_matrix", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vm = load_script()

PIP_INDEX = """transformers (5.24.0)
Available versions: 5.24.0, 5.23.0, 5.22.2, 5.22.1, 5.22.0, 5.1.0, 5.0.0, 5.0.0rc3, \
4.57.6, 4.57.5, 4.57.1, 4.56.2, 4.56.1, 4.9.2
  INSTALLED: 5.24.0
  LATEST:    5.24.0
"""


def result(transformers="5.23.0", torch="2.13.0", **kwargs):
    res = dict(transformers=transformers, torch=torch, status="ok", passed=10, failed=0)
    res.update(errors=0, skipped=0, failures=[], n_failures=0, log="x.log")
    res.update(kwargs)
    return res


class TestVersionMatrixVersions(ExtTestCase):
    def test_parse_pip_index_versions(self):
        versions = vm.parse_pip_index_versions(PIP_INDEX)
        self.assertEqual("5.24.0", versions[0])
        self.assertEqual("4.9.2", versions[-1])
        self.assertIn("5.0.0rc3", versions)
        self.assertEqual(14, len(versions))

    def test_parse_pip_index_versions_without_list(self):
        with self.assertRaises(ValueError) as cm:
            vm.parse_pip_index_versions("ERROR: No matching distribution found for nothing")
        self.assertIn("Available versions", str(cm.exception))

    def test_release_tuple(self):
        self.assertEqual((5, 23, 0), vm.release_tuple("5.23.0"))
        self.assertEqual((4, 57), vm.release_tuple("4.57"))
        self.assertIsNone(vm.release_tuple("5.0.0rc3"))
        self.assertIsNone(vm.release_tuple("2.13.0+cpu"))
        self.assertIsNone(vm.release_tuple("5.25.0.dev0"))

    def test_latest_patch_per_minor(self):
        versions = vm.parse_pip_index_versions(PIP_INDEX)
        self.assertEqual(
            ["4.57.6", "5.0.0", "5.1.0", "5.22.2", "5.23.0", "5.24.0"],
            vm.latest_patch_per_minor(versions, "4.57"),
        )
        self.assertEqual(["5.22.2", "5.23.0", "5.24.0"], vm.latest_patch_per_minor(versions, "5.2"))
        self.assertEqual(["5.24.0"], vm.latest_patch_per_minor(versions, "5.24"))
        # numeric order, not the order pip printed nor the alphabetical one
        self.assertEqual(
            ["4.57.10", "5.9.0", "5.10.1"],
            vm.latest_patch_per_minor(["5.10.1", "4.57.2", "5.9.0", "4.57.10", "5.10.0"]),
        )
        # a release numbered x.y (no patch number) counts as x.y.0
        self.assertEqual(["5.1.1"], vm.latest_patch_per_minor(["5.1", "5.1.1"], "5"))
        with self.assertRaises(ValueError):
            vm.latest_patch_per_minor(versions, "latest")

    def test_split_list(self):
        self.assertEqual(["4.57.6", "5.23.0"], vm.split_list(" 4.57.6, 5.23.0,"))
        self.assertEqual([], vm.split_list(None))
        self.assertEqual([], vm.split_list(""))

    def test_tested_since_reads_compat(self):
        # the single source of truth: the script reads TESTED_VERSIONS without importing it
        self.assertEqual(compat.TESTED_VERSIONS["transformers"][0], vm.tested_since(ROOT))
        with tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(vm.FALLBACK_SINCE, vm.tested_since(tmp))

    def test_compat_tests_exist(self):
        for name in vm.COMPAT_TESTS:
            self.assertExists(os.path.join(ROOT, name))


class TestVersionMatrixPytest(ExtTestCase):
    def test_parse_pytest_summary_quiet(self):
        text = "....F.\nFAILED a.py::T::test_x - AssertionError\n3 failed, 120 passed in 12.34s\n"
        res = vm.parse_pytest_summary(text)
        self.assertEqual(3, res["failed"])
        self.assertEqual(120, res["passed"])
        self.assertEqual(0, res["errors"])
        self.assertEqual(12.34, res["duration"])

    def test_parse_pytest_summary_verbose_line(self):
        line = (
            "==== 1 failed, 118 passed, 2 skipped, 1 xfailed, 7 warnings, 2 errors "
            "in 321.05s (0:05:21) ===="
        )
        res = vm.parse_pytest_summary("collected 124 items\n" + line)
        self.assertEqual(
            dict(failed=1, passed=118, skipped=2, xfailed=1, warnings=7, errors=2),
            {k: v for k, v in res.items() if v and k != "duration"},
        )
        self.assertEqual(321.05, res["duration"])
        res = vm.parse_pytest_summary("== 1 error, 1 warning in 0.50s ==")
        self.assertEqual((1, 1, 0), (res["errors"], res["warnings"], res["passed"]))

    def test_parse_pytest_summary_subtests(self):
        # pytest>=9: subtests have their own counts, the tests are counted as usual
        res = vm.parse_pytest_summary("2 failed, 2 passed, 1 error, 2 subtests passed in 0.44s")
        self.assertEqual((2, 2, 1), (res["failed"], res["passed"], res["errors"]))

    def test_parse_pytest_summary_last_line_wins(self):
        # a test printing something that looks like a summary does not fool the parser
        text = "captured: 5 passed in 1.0s\n.....\n2 passed in 3.00s\n"
        self.assertEqual(2, vm.parse_pytest_summary(text)["passed"])

    def test_parse_pytest_summary_no_tests_or_none(self):
        res = vm.parse_pytest_summary("no tests ran in 0.01s\n")
        self.assertEqual(0, res["passed"])
        self.assertEqual(0.01, res["duration"])
        self.assertIsNone(vm.parse_pytest_summary("Traceback (most recent call last):\n"))
        self.assertIsNone(vm.parse_pytest_summary(""))

    def test_parse_failures(self):
        text = (
            "=========================== short test summary info ===========================\n"
            "FAILED _unittests/a.py::TestA::test_1 - AssertionError: 1 != 2\n"
            "FAILED _unittests/a.py::TestA::test_2[x - y]\n"
            "ERROR _unittests/b.py - ImportError: no module\n"
            "SUBFAILED(i='2') _unittests/a.py::TestA::test_3 - AssertionE...\n"
            "SUBFAILED(i=3) _unittests/a.py::TestA::test_3 - AssertionE...\n"
            "FAILED _unittests/a.py::TestA::test_1 - AssertionError: 1 != 2\n"
            "1 error, 3 failed, 2 subtests passed in 1.00s\n"
        )
        self.assertEqual(
            [
                "_unittests/a.py::TestA::test_1",
                "_unittests/a.py::TestA::test_2[x - y]",
                "_unittests/b.py",
                "_unittests/a.py::TestA::test_3",
            ],
            vm.parse_failures(text),
        )
        self.assertEqual([], vm.parse_failures("3 passed in 1.0s"))

    def test_pytest_command(self):
        cmd = vm.pytest_command("/v", ["a.py", "b.py"], 2)
        self.assertEqual(["a.py", "b.py", "-q", "-rfE"], cmd[3:7])
        self.assertEqual(["-n", "2"], cmd[-2:])
        self.assertNotIn("-n", vm.pytest_command("/v", ["a.py"], 1))


class TestVersionMatrixTables(ExtTestCase):
    def test_format_cell(self):
        self.assertEqual("✓ 123 passed", vm.format_cell(result(passed=123)))
        self.assertEqual("✓ 12 passed, 3 skipped", vm.format_cell(result(passed=12, skipped=3)))
        self.assertEqual("✗ 3 failed / 120 passed", vm.format_cell(result(passed=120, failed=3)))
        self.assertEqual(
            "✗ 2 errors, 1 failed / 5 passed", vm.format_cell(result(passed=5, failed=1, errors=2))
        )
        self.assertEqual("✗ 1 error / 0 passed", vm.format_cell(result(passed=0, errors=1)))
        self.assertEqual("✗ install failed", vm.format_cell(result(status="install-failed")))
        self.assertEqual("✗ timeout", vm.format_cell(result(status="timeout")))
        self.assertEqual("✗ no test passed", vm.format_cell(result(status="no-tests", passed=0)))
        self.assertEqual(
            "✗ exit code 3 / 4 passed",
            vm.format_cell(result(status="failed", returncode=3, passed=4)),
        )
        self.assertEqual("not run", vm.format_cell(None))

    def results(self):
        return [
            result("4.57.6", "2.13.0", passed=100),
            result(
                "5.23.0",
                "2.13.0",
                status="failed",
                passed=98,
                failed=2,
                failures=["a.py::test_1", "a.py::test_2"],
                n_failures=7,
            ),
            result("5.23.0", "2.14.1", passed=100),
            result("5.10.4", "2.13.0", status="install-failed", message="pip exited with 1"),
        ]

    def test_markdown_table(self):
        text = vm.markdown_table(self.results())
        lines = text.splitlines()
        self.assertEqual("| transformers | torch 2.13.0 | torch 2.14.1 |", lines[0])
        self.assertEqual("|---|---|---|", lines[1])
        # newest transformers first, numeric order (5.10.4 between 5.23.0 and 4.57.6)
        self.assertEqual("| 5.23.0 | ✗ 2 failed / 98 passed [^1] | ✓ 100 passed |", lines[2])
        self.assertEqual("| 5.10.4 | ✗ install failed [^2] | not run |", lines[3])
        self.assertEqual("| 4.57.6 | ✓ 100 passed | not run |", lines[4])
        self.assertIn(
            "[^1]: transformers 5.23.0, torch 2.13.0: a.py::test_1, a.py::test_2 (+5 more)", text
        )
        self.assertIn("[^2]: transformers 5.10.4, torch 2.13.0: pip exited with 1", text)

    def test_rst_table(self):
        text = vm.rst_table(self.results())
        self.assertTrue(text.startswith(".. list-table::\n    :header-rows: 1\n"))
        self.assertIn("    * - 5.23.0\n      - ✗ 2 failed / 98 passed [#vm1]_\n", text)
        self.assertIn(
            ".. [#vm1] transformers 5.23.0, torch 2.13.0: ``a.py::test_1, a.py::test_2 (+5 more)``",
            text,
        )
        self.assertNotIn("[#vm3]", text)

    def test_rst_table_is_valid_rst(self):
        try:
            import docutils.core
            import docutils.nodes
        except ImportError:
            raise unittest.SkipTest("docutils is not installed") from None
        text = vm.rst_table(self.results())
        # halt_level=2: a warning (a broken table, a missing footnote) raises
        tree = docutils.core.publish_doctree(
            text, settings_overrides=dict(report_level=5, halt_level=2)
        )
        self.assertEqual(1, len(list(tree.findall(docutils.nodes.table))))
        self.assertEqual(2, len(list(tree.findall(docutils.nodes.footnote))))
        self.assertIn("a.py::test_2 (+5 more)", tree.astext())

    def test_write_outputs(self):
        meta = dict(date="2026-01-01 00:00", python="3.11.7", platform="Linux", tests=["a.py"])
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "sub", "versions_table.md")
            vm.write_outputs(out, self.results(), meta)
            with open(out, encoding="utf-8") as f:
                md = f.read()
            with open(os.path.join(tmp, "sub", "versions_table.rst"), encoding="utf-8") as f:
                rst = f.read()
            with open(os.path.join(tmp, "sub", "versions_table.json"), encoding="utf-8") as f:
                raw = json.load(f)
        self.assertIn("Generated by `_bench/version_matrix.py` on 2026-01-01 00:00", md)
        self.assertIn("| 4.57.6 | ✓ 100 passed | not run |", md)
        self.assertIn("Generated by ``_bench/version_matrix.py``", rst)
        self.assertEqual(4, len(raw["results"]))
        self.assertEqual(meta, raw["meta"])


class TestVersionMatrixCommandLine(ExtTestCase):
    def test_venv_matches(self):
        installed = dict(
            torch="2.13.0+cpu",
            transformers="5.23.0",
            pytest="9.0",
            xdist="3.8",
            origin=os.path.join(ROOT, "onnx_diagnostic", "__init__.py"),
        )
        self.assertTrue(vm.venv_matches(installed, "5.23.0", "2.13.0", ROOT, 2))
        self.assertFalse(vm.venv_matches(installed, "5.24.0", "2.13.0", ROOT, 2))
        self.assertFalse(vm.venv_matches(installed, "5.23.0", "2.14.1", ROOT, 2))
        self.assertFalse(vm.venv_matches(installed, "5.23.0", "2.13.0", "/elsewhere", 2))
        self.assertFalse(vm.venv_matches(dict(installed, xdist=None), "5.23.0", "2.13.0", ROOT, 2))
        self.assertTrue(vm.venv_matches(dict(installed, xdist=None), "5.23.0", "2.13.0", ROOT, 1))
        self.assertFalse(vm.venv_matches(None, "5.23.0", "2.13.0", ROOT, 2))

    def test_install_commands_torch_first(self):
        cmds = vm.install_commands("/w/v", "5.23.0", "2.14.1", ROOT, "python3")
        self.assertEqual(["python3", "-m", "venv", "--clear", "/w/v"], cmds[0])
        self.assertEqual("torch==2.14.1", cmds[1][-1])
        self.assertEqual(
            ["-e", f"{ROOT}[dev]", "transformers==5.23.0", "torch==2.14.1"], cmds[2][-4:]
        )

    def test_dry_run(self):
        res = subprocess.run(
            [
                sys.executable,
                SCRIPT,
                "--dry-run",
                "--transformers",
                "4.57.6,5.23.0",
                "--torch",
                "2.13.0,2.14.1",
                "--work",
                "/nowhere",
                "--jobs",
                "1",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        self.assertEqual(0, res.returncode, msg=res.stderr)
        out = res.stdout
        self.assertIn("transformers: 4.57.6, 5.23.0", out)
        self.assertIn("torch: 2.13.0, 2.14.1", out)
        self.assertIn("4 virtual environments in /nowhere", out)
        self.assertIn(
            "/nowhere/tr5.23.0-torch2.14.1/bin/python -m pip install -q torch==2.14.1", out
        )
        self.assertIn("_unittests/ut_export/test_custom_parity.py", out)
        self.assertFalse(os.path.exists("/nowhere"))

    def test_script_imports_nothing_heavy(self):
        code = (
            "import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('vm', {SCRIPT!r})\n"
            "m = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(m)\n"
            "names = ('torch', 'transformers', 'onnx_diagnostic')\n"
            "print(sorted(k for k in names if k in sys.modules))\n"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        self.assertEqual("[]", res.stdout.strip())


if __name__ == "__main__":
    unittest.main(verbosity=2)
