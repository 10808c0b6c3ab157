"""
Runs every script of the gallery (``_doc/examples/plot_*.py``) in a subprocess, on its fast
path (``UNITTEST_GOING=1``), offline, in a temporary folder: one test method per script,
generated, so that a failing script does not hide the others.
Also checks that every public module has its page in ``_doc/api``.
"""

import os
import subprocess
import sys
import tempfile
import time
import unittest

from onnx_diagnostic.ext_test_case import ExtTestCase

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(ROOT, "_doc", "examples")
API = os.path.join(ROOT, "_doc", "api")
PACKAGE = os.path.join(ROOT, "onnx_diagnostic")

#: A script running longer is stopped and the test fails.
TIMEOUT = 600


def gallery_scripts() -> list[str]:
    """Returns the file names of the gallery scripts, sorted."""
    if not os.path.isdir(EXAMPLES):
        return []
    return sorted(f for f in os.listdir(EXAMPLES) if f.startswith("plot_") and f.endswith(".py"))


def public_modules() -> list[str]:
    """Returns the dotted names of the modules and packages without a private part."""
    names = []
    for folder, _, files in os.walk(PACKAGE):
        rel = os.path.relpath(folder, ROOT).replace(os.sep, ".")
        if any(part.startswith("_") for part in rel.split(".")):
            continue
        for f in files:
            if not f.endswith(".py") or f == "__main__.py":
                continue
            if f == "__init__.py":
                names.append(rel)
            elif not f.startswith("_"):
                names.append(f"{rel}.{f[:-3]}")
    return sorted(names)


class TestDocumentationExamples(ExtTestCase):
    def run_script(self, name: str) -> None:
        env = os.environ.copy()
        env.update(UNITTEST_GOING="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env["MPLBACKEND"] = "Agg"
        with tempfile.TemporaryDirectory() as tmp:
            begin = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, os.path.join(EXAMPLES, name)],
                    cwd=tmp,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT,
                )
            except subprocess.TimeoutExpired as e:
                raise AssertionError(f"{name} did not end after {TIMEOUT}s") from e
            duration = time.perf_counter() - begin
        if proc.returncode != 0:
            raise AssertionError(
                f"{name} failed with exit code {proc.returncode} after {duration:.1f}s\n"
                f"--- stdout (end)\n{proc.stdout[-3000:]}\n"
                f"--- stderr (end)\n{proc.stderr[-6000:]}"
            )

    @classmethod
    def add_test_methods(cls) -> None:
        for name in gallery_scripts():

            def _test(self, name=name):
                self.run_script(name)

            method = f"test_{os.path.splitext(name)[0]}"
            _test.__name__ = method
            _test.__doc__ = f"Runs _doc/examples/{name} with UNITTEST_GOING=1."
            setattr(cls, method, _test)

    def test_gallery_is_not_empty(self):
        names = gallery_scripts()
        self.assertIn("plot_export_tiny_llm.py", names)
        for name in names:
            self.assertTrue(hasattr(self, f"test_{name[:-3]}"), msg=name)

    def test_every_public_module_has_an_api_page(self):
        modules = public_modules()
        self.assertIn("onnx_diagnostic.investigate.input_observer", modules)
        self.assertNotIn("onnx_diagnostic.tasks._common", modules)
        with open(os.path.join(API, "index.rst")) as f:
            index = f.read().split()
        missing = [m for m in modules if not os.path.exists(os.path.join(API, f"{m}.rst"))]
        self.assertEqual(missing, [], msg="modules without a page in _doc/api")
        unlisted = [m for m in modules if m not in index]
        self.assertEqual(unlisted, [], msg="pages missing in the toctree of _doc/api/index.rst")
        stale = [
            f[:-4]
            for f in os.listdir(API)
            if f.endswith(".rst") and f != "index.rst" and f[:-4] not in modules
        ]
        self.assertEqual(stale, [], msg="pages of modules which no longer exist")


TestDocumentationExamples.add_test_methods()


if __name__ == "__main__":
    unittest.main(verbosity=2)
