"""
.. _l-plot-generate-benchmark:

Generation speed: onnx_generate against transformers and onnxruntime-genai
==========================================================================

Page :ref:`l-plot-generate` compares three ways to generate tokens once.
The benchmark ``_bench/bench_generate.py`` of the repository measures them properly:
batch 1, greedy decoding, float32, untrained models (nothing is downloaded), the exported
model run by :func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>`
(the cache stays in :epkg:`onnxruntime` between two steps), :epkg:`transformers`'
``generate``, the plain torch loop of :ref:`l-plot-generate` and, when the package
``onnxruntime-genai`` is installed (``pip install onnx-diagnostic[genai]``), onnxruntime-genai
on the model its builder writes from the same weights and on the custom export
(``to_onnx(..., genai_config=True)`` writes the ``genai_config.json`` it reads).
The methods take turns after one warm-up run each, the figures are medians,
and every method must produce the same tokens. ``--device cuda`` runs the same
comparison on a GPU.

One run of the benchmark (its docstring gives the details), tokens per second and ratio to
onnxruntime-genai, 16-token prompt, 100 new tokens (50 for Tiny-LLM on the GPU).
CPU: 2 cores, quiet machine (nothing else running), medians of 7, torch 2.13,
transformers 5.24, onnxruntime 1.32, onnxruntime-genai 0.18;
GPU (an earlier version, without ``genai_style``): NVIDIA H200, genai's builder model did
not load in onnxruntime-gpu 1.31.1, the reference there is genai on the custom export:

=====================================  ==============  ==============  =============  =============
method                                 CPU Tiny-LLM    CPU SmolLM2 4L  H200 Tiny-LLM  H200 SmolLM2
=====================================  ==============  ==============  =============  =============
transformers generate                  404 (x0.28)     81.4 (x0.38)    536 (x0.23)    276 (x0.24)
onnxruntime-genai (builder's model)    1448 (x1)       212 (x1)
onnxruntime-genai [custom export]      1460 (x1.01)    204 (x0.96)     2380 (x1)      1153 (x1)
onnx_generate [custom]                 2434 (x1.68)    245 (x1.15)     1900 (x0.80)   956 (x0.83)
onnx_generate [custom-gqa]             2783 (x1.92)    278 (x1.31)
onnx_generate [onnx-dynamo]            2076 (x1.43)    230 (x1.09)     1367 (x0.57)
=====================================  ==============  ==============  =============  =============

``custom-gqa`` is ``to_onnx(..., exporter="custom", genai_style=True)``: the graph
onnxruntime-genai's builder writes (GroupQueryAttention with the rotary inside, key and
value buffers shared by past and present, fused projections), which
:func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>` runs with buffers
allocated once. On the quiet CPU, onnx_generate is faster than onnxruntime-genai on both
models with identical tokens. On a CPU loaded by other work the ranking changed from one
run to the next (onnxruntime's threads spin between two runs in genai, not in
onnx_generate). On the GPU a decoding step is short and genai's C++ loop was 1.2 times
faster than onnx_generate's Python loop on the same graph (before ``genai_style``).

This page runs it and draws the figures. When it runs as a unit test
(``UNITTEST_GOING=1``), it measures only Tiny-LLM, with 10 new tokens and one run:
the figures are then only indicative.
The benchmark is not part of the installed package, the page needs a clone of
the repository (``pip install -e .``).
"""

import os
import sys
import tempfile
import pandas
import onnx_diagnostic
from onnx_diagnostic import doc
from onnx_diagnostic.ext_test_case import unit_test_going

bench_folder = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(onnx_diagnostic.__file__))), "_bench"
)
if not os.path.exists(os.path.join(bench_folder, "bench_generate.py")):
    print(f"The benchmark is not available in {bench_folder!r}, the page stops here.")
    sys.exit(0)
sys.path.insert(0, bench_folder)
from bench_generate import bench_model  # noqa: E402

# %%
# Measures
# ++++++++

if unit_test_going():
    models, new_tokens, repeat = ["tiny"], 10, 1
else:
    models, new_tokens, repeat = ["tiny", "smollm2"], 100, 5

rows = []
with tempfile.TemporaryDirectory() as folder:
    for name in models:
        rows.extend(
            bench_model(
                name, prompt=16, new=new_tokens, repeat=repeat, variants=False, folder=folder
            )
        )
df = pandas.DataFrame(rows)
print(df)

# %%
# Every method produced the same tokens.

assert df["same_tokens"].all(), df

# %%
# Figures
# +++++++
#
# Tokens per second (higher is better) and speedup against ``generate``.

pivot = df.pivot(index="model", columns="method", values="tokens_per_s")
ax = pivot.plot(
    kind="bar", title=f"tokens per second, batch 1, {new_tokens} new tokens, CPU", rot=0
)
ax.set_ylabel("tokens / s")
ax.figure.tight_layout()

# %%

print(df.pivot(index="model", columns="method", values="speedup"))

# %%
# Ratio to onnxruntime-genai (on the model its builder writes), when it is installed.

if df["vs_genai"].notna().any():
    print(df.pivot(index="model", columns="method", values="vs_genai"))

# %%

doc.plot_legend("generate\nbenchmark", "onnx_generate", "green")
