"""
.. _l-plot-generate-benchmark:

Generation speed: onnx_generate against transformers
====================================================

Page :ref:`l-plot-generate` compares three ways to generate tokens once.
The benchmark ``_bench/bench_generate.py`` of the repository measures them properly:
batch 1, greedy decoding, CPU, untrained models (nothing is downloaded), the exported
model run by :func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>`
(the cache stays in :epkg:`onnxruntime` between two steps), :epkg:`transformers`'
``generate`` and the plain torch loop of :ref:`l-plot-generate`.
The methods take turns after one warm-up run each, the figures are medians,
and every method must produce the same tokens.

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

doc.plot_legend("generate\nbenchmark", "onnx_generate", "green")
