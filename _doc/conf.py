"""
Configuration of the documentation::

    python -m sphinx -b html _doc dist/html -W

The gallery (``_doc/examples``) is executed during the build, on its fast path
(``UNITTEST_GOING=1``, set below unless already set: ``UNITTEST_GOING=0`` builds the
full pages) and offline (``HF_HUB_OFFLINE=1``).
"""

import os
import sys

from docutils import nodes

os.environ.setdefault("UNITTEST_GOING", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# matplotlib without a display
os.environ.setdefault("MPLBACKEND", "Agg")

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import onnx_diagnostic  # noqa: E402

project = "onnx_diagnostic"
copyright = "onnx_diagnostic developers, MIT License"
author = "onnx_diagnostic developers"
version = onnx_diagnostic.__version__
release = onnx_diagnostic.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

templates_path: list[str] = []
# versions_table.rst is written by _bench/version_matrix.py and included by versions.rst
exclude_patterns = [
    "_build",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "versions_table.rst",
]
source_suffix = {".rst": "restructuredtext"}
master_doc = "index"
language = "en"

html_theme = "furo"
html_title = f"onnx_diagnostic {version}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": False}

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    # every script of the gallery is executed
    "filename_pattern": r"plot_",
    "within_subsection_order": "FileNameSortKey",
    # a failing example stops the build
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
}

# Role :epkg:`name`: a link to a package or a model page.
epkg_dictionary = {
    "arnir0/Tiny-LLM": "https://huggingface.co/arnir0/Tiny-LLM",
    "graphviz": "https://graphviz.org/",
    "HuggingFace": "https://huggingface.co/",
    "matplotlib": "https://matplotlib.org/",
    "microsoft/Phi-1.5": "https://huggingface.co/microsoft/phi-1_5",
    "onnx": "https://onnx.ai/",
    "onnxruntime": "https://onnxruntime.ai/",
    "onnxscript": "https://github.com/microsoft/onnxscript",
    "pandas": "https://pandas.pydata.org/",
    "pytorch": "https://pytorch.org/",
    "sphinx-gallery": "https://sphinx-gallery.github.io/",
    "torch": "https://pytorch.org/",
    "tqdm": "https://tqdm.github.io/",
    "transformers": "https://huggingface.co/docs/transformers/index",
}


def epkg_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """Replaces :epkg:`name` by a link, an unknown name is an error."""
    url = epkg_dictionary.get(text)
    if url is None:
        msg = inliner.reporter.error(
            f"epkg: unknown name {text!r}, add it to epkg_dictionary in _doc/conf.py",
            line=lineno,
        )
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    return [nodes.reference(rawtext, text, refuri=url)], []


def setup(app):
    app.add_role("epkg", epkg_role)
