"""
Export benchmark of the two exporters of :func:`onnx_diagnostic.export.api.to_onnx`:
``exporter="custom"`` (onnx_diagnostic's own ATen translation and fusions) against
``exporter="onnx-dynamo"`` (``torch.onnx.export(dynamo=True)`` and its optimizer), both with
``optimize=True``, inside ``torch_export_patches(patch_transformers=True)``, on untrained
reduced models (``get_untrained_model_with_inputs(model_id, same_as_trained=False)``, the
shipped configuration reduced to small sizes, then set to 4 layers, the per-layer lists such as
``layer_types`` following).

For every model and exporter it measures:

* ``export_s``: the whole ``to_onnx`` call (torch.export.export included, both routes pay it),
  median of ``--repeat`` exports, each from a fresh deep copy of the inputs, the exporters
  taking turns;
* ``convert_s``: the translation and optimization steps alone (``to_onnx`` prints the duration
  of every step with ``verbose=1``, the output is captured and parsed), median as well;
* ``nodes``: number of nodes of the main graph;
* ``prefill_ms``: onnxruntime latency of a prefill, batch 1, 32 tokens, empty cache
  (``batch x heads x 0 x head_dim`` as :func:`onnx_generate
  <onnx_diagnostic.helpers.rt_helper.onnx_generate>` builds it);
* ``decode_ms``: onnxruntime latency of one decode step, 1 token with the 32-token cache the
  prefill returned;
* both latencies are medians over ``--runs`` runs after one warm-up run, the two exporters
  taking turns, with the same :class:`onnxruntime.SessionOptions`; two settings are printed:
  onnxruntime's default (``intra_op_num_threads=0``: one thread per core, spinning) and
  ``intra_op_num_threads=1`` (no thread pool: on a small model the thread pool costs more than
  it brings, and the figure depends less on the other processes of the machine);
* ``abs_prefill`` / ``abs_decode``: maximum absolute difference of the outputs (logits and
  present cache) with eager on the same two steps.

Then the ratios per model: ``export speed-up = onnx-dynamo seconds / custom seconds``
(higher is better for custom), ``latency ratio = custom / onnx-dynamo`` (lower is better for
custom).

::

    python _bench/bench_export.py [--models tiny,qwen2.5,...] [--repeat 3] [--runs 30]
        [--quick]

``--quick`` measures Tiny-LLM only with one export and 5 runs (a smoke test).

Measured on the development machine (2 cores shared with other sessions, load average 2-3,
torch 2.13 CPU, transformers 5.23, onnxruntime 1.31), reduced models with 4 layers, hidden
size 64, vocabulary 32000; both exporters match eager within 5e-7 on both steps:

========  =======  =========  =========  ======  =======  ==========  =========  ======
model     nodes    export s   convert s  export  convert  prefill 1t  decode 1t  decode
========  =======  =========  =========  ======  =======  ==========  =========  ======
tiny      153/370  3.22/12.7  0.14/9.9   x3.9    x74      0.92        0.76       0.82
qwen2.5   165/383  3.26/12.7  0.08/9.7   x3.9    x120     0.89        0.71       0.81
llama3.2  153/371  3.37/13.2  0.08/10.0  x3.9    x126     0.87        0.69       0.87
phi3.5    182/339  3.05/12.4  0.07/9.6   x4.1    x130     0.94        0.83       0.85
gemma2    251/405  4.33/16.6  0.11/12.8  x3.8    x118     0.94        0.81       0.99
smollm3   149/343  2.75/11.7  0.07/7.7   x4.2    x105     0.92        0.75       0.80
========  =======  =========  =========  ======  =======  ==========  =========  ======

(nodes, export s, convert s: custom/onnx-dynamo; export, convert: speed-up onnx-dynamo /
custom; the last three columns: latency ratios custom / onnx-dynamo, ``1t`` with one thread,
``decode`` with the default thread pool.)
The custom route exports about 4 times faster: torch.export.export takes about 3 s in both,
the translation and passes of the custom exporter take 0.1 s where torch.onnx's translation
and its optimizer take about 10 s. Its graphs have 40-60 % of
the nodes (fused Attention, RotaryEmbedding, RMSNormalization); one decode step is 15-30 %
faster with one thread, a 32-token prefill 6-13 % faster. gemma2 uses eager attention (its
logits are soft-capped), the Attention fusion does not apply and the gain is the smallest.
With onnxruntime's default thread pool the prefill figures vary from 2 to 10 ms from one model
to the next on this busy machine (threads spinning against the other sessions), the one-thread
figures are the ones to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

#: short name -> model id
MODELS: dict[str, str] = {
    "tiny": "arnir0/Tiny-LLM",
    "qwen2.5": "Qwen/Qwen2.5-0.5B-Instruct",
    "llama3.2": "meta-llama/Llama-3.2-1B",
    "phi3.5": "microsoft/Phi-3.5-mini-instruct",
    "gemma2": "google/gemma-2-2b",
    "smollm3": "HuggingFaceTB/SmolLM3-3B",
}

EXPORTERS = ("custom", "onnx-dynamo")
PROMPT = 32
N_LAYERS = 4

_STEP = re.compile(r"^\[to_onnx\] (\S+) done in ([0-9.eE+-]+)s$", re.M)


def build(model_id: str, n_layers: int = N_LAYERS) -> Any:
    """
    The reduced untrained model of ``model_id`` with ``n_layers`` layers (the per-layer lists
    such as ``layer_types`` or ``no_rope_layers`` follow, their pattern repeated).
    """
    from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs

    return get_untrained_model_with_inputs(model_id, model_kwargs={"num_hidden_layers": n_layers})


def export(data: Any, exporter: str) -> tuple[Any, float, float]:
    """Exports once, returns ``(onnx model, total seconds, translation+optimization seconds)``."""
    from onnx_diagnostic.export.api import to_onnx
    from onnx_diagnostic.torch_export_patches import torch_export_patches

    buffer = io.StringIO()
    with torch_export_patches(patch_transformers=True), contextlib.redirect_stdout(buffer):
        begin = time.perf_counter()
        onx = to_onnx(
            data.model,
            (),
            kwargs=copy.deepcopy(data.inputs),
            dynamic_shapes=data.dynamic_shapes,
            exporter=exporter,
            optimize=True,
            verbose=1,
        )
        total = time.perf_counter() - begin
    steps = {name: float(t) for name, t in _STEP.findall(buffer.getvalue())}
    missing = {"torch.export", "translation", "optimization"} - set(steps)
    if missing:
        raise RuntimeError(f"to_onnx printed no duration for {sorted(missing)}")
    return onx, total, steps["translation"] + steps["optimization"]


def _session(onx: Any, threads: int) -> Any:
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        onx.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )


def _step_feeds(
    session: Any, input_ids: np.ndarray, past: list[np.ndarray], past_length: int
) -> dict[str, np.ndarray]:
    """Feeds of one step: tokens, mask over cache and tokens, positions, the cache."""
    from onnx_diagnostic.helpers.rt_helper import model_layout

    layout = model_layout(session)
    batch, seq = input_ids.shape
    feeds = {layout.input_ids: input_ids}
    if layout.attention_mask:
        feeds[layout.attention_mask] = np.ones((batch, past_length + seq), dtype=np.int64)
    if layout.position_ids:
        positions = np.arange(past_length, past_length + seq, dtype=np.int64)
        feeds[layout.position_ids] = np.tile(positions, (batch, 1))
    if layout.cache_position:
        feeds[layout.cache_position] = np.arange(past_length, past_length + seq, dtype=np.int64)
    feeds.update(dict(zip(layout.cache_inputs, past)))
    return feeds


def step_inputs(session: Any, vocab: int) -> tuple[dict, dict]:
    """Feeds of the prefill (``PROMPT`` tokens, empty cache) and of the decode step."""
    from onnx_diagnostic.helpers.rt_helper import model_layout

    layout = model_layout(session)
    gen = np.random.default_rng(0)
    prompt = gen.integers(3, vocab, size=(1, PROMPT), dtype=np.int64)
    empty = [np.zeros((1, h, 0, d), dtype=np.float32) for h, d in layout.cache_shapes]
    prefill = _step_feeds(session, prompt, empty, 0)
    outputs = dict(zip(layout.outputs, session.run(None, prefill)))
    token = np.argmax(outputs[layout.logits][:, -1:, :], axis=-1).astype(np.int64)
    decode = _step_feeds(session, token, [outputs[n] for n in layout.cache_outputs], PROMPT)
    return prefill, decode


def eager_discrepancy(data: Any, session: Any, prefill: dict, decode: dict) -> tuple[float, float]:
    """Max abs difference with eager on the prefill and on the decode step."""
    from onnx_diagnostic.helpers import max_diff
    from onnx_diagnostic.helpers.rt_helper import model_layout

    layout = model_layout(session)

    def kwargs(feeds: dict, cache: Any) -> dict:
        res = {"input_ids": torch.from_numpy(feeds[layout.input_ids])}
        if layout.attention_mask:
            res["attention_mask"] = torch.from_numpy(feeds[layout.attention_mask])
        if layout.position_ids:
            res["position_ids"] = torch.from_numpy(feeds[layout.position_ids])
        return dict(res, past_key_values=cache, use_cache=True)

    with torch.no_grad():
        first = data.model(**kwargs(prefill, None))
        cache = copy.deepcopy(first.past_key_values)
        second = data.model(**kwargs(decode, cache))
    d1 = max_diff(first, session.run(None, prefill))
    d2 = max_diff(second, session.run(None, decode))
    return d1["abs"], d2["abs"]


def _median_runs(fcts: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    """Median duration of every function, one warm-up each, the functions taking turns."""
    for fct in fcts.values():
        fct()
    durations: dict[str, list[float]] = {k: [] for k in fcts}
    for _ in range(runs):
        for name, fct in fcts.items():
            begin = time.perf_counter()
            fct()
            durations[name].append(time.perf_counter() - begin)
    return {k: statistics.median(v) for k, v in durations.items()}


def bench_model(name: str, repeat: int, runs: int) -> list[dict[str, Any]]:
    """Measures both exporters on one model, returns one row per exporter."""
    torch.manual_seed(0)
    model_id = MODELS[name]
    data = build(model_id)
    config = data.configuration
    totals: dict[str, list[float]] = {e: [] for e in EXPORTERS}
    converts: dict[str, list[float]] = {e: [] for e in EXPORTERS}
    models: dict[str, Any] = {}
    for _ in range(repeat):
        for exporter in EXPORTERS:
            onx, total, convert = export(data, exporter)
            totals[exporter].append(total)
            converts[exporter].append(convert)
            models[exporter] = onx
    rows = {
        e: dict(
            model=name,
            exporter=e,
            nodes=len(models[e].graph.node),
            export_s=statistics.median(totals[e]),
            convert_s=statistics.median(converts[e]),
        )
        for e in EXPORTERS
    }
    for threads, suffix in ((0, ""), (1, "_1t")):
        sessions = {e: _session(models[e], threads) for e in EXPORTERS}
        feeds = {e: step_inputs(sessions[e], config.vocab_size) for e in EXPORTERS}
        fcts: dict[str, Callable[[], Any]] = {}
        for e in EXPORTERS:
            for i, step in enumerate(("prefill", "decode")):
                fcts[f"{e}|{step}"] = lambda s=sessions[e], f=feeds[e][i]: s.run(None, f)
        for key, value in _median_runs(fcts, runs).items():
            e, step = key.split("|")
            rows[e][f"{step}_ms{suffix}"] = value * 1000
        if threads == 0:
            for e in EXPORTERS:
                d1, d2 = eager_discrepancy(data, sessions[e], *feeds[e])
                rows[e]["abs_prefill"] = d1
                rows[e]["abs_decode"] = d2
    print(
        f"{name}: {model_id} {type(data.model).__name__}, {config.num_hidden_layers} layers, "
        f"hidden {config.hidden_size}, vocabulary {config.vocab_size}, "
        f"{data.n_weights / 1e6:.1f}M weights, attention {config._attn_implementation}"
    )
    return list(rows.values())


def ratios(df: Any) -> Any:
    """One row per model: export speed-ups (dynamo / custom), latency ratios (custom / dynamo)."""
    import pandas

    out = []
    for name, group in df.groupby("model", sort=False):
        c = group[group.exporter == "custom"].iloc[0]
        d = group[group.exporter == "onnx-dynamo"].iloc[0]
        row = dict(
            model=name,
            export_speedup=d.export_s / c.export_s,
            convert_speedup=d.convert_s / c.convert_s,
            nodes_ratio=c.nodes / d.nodes,
        )
        for col in ("prefill_ms", "decode_ms", "prefill_ms_1t", "decode_ms_1t"):
            row[col.replace("_ms", "_ratio")] = c[col] / d[col]
        out.append(row)
    return pandas.DataFrame(out)


def main(argv: list[str] | None = None) -> tuple[Any, Any] | tuple[None, None]:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"among {list(MODELS)}")
    parser.add_argument("--repeat", type=int, default=3, help="exports per exporter")
    parser.add_argument("--runs", type=int, default=30, help="onnxruntime runs per latency")
    parser.add_argument("--quick", action="store_true", help="tiny only, 1 export, 5 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.repeat, args.runs = "tiny", 1, 5
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}, available {list(MODELS)}")
    if args.repeat < 1 or args.runs < 1:
        parser.error("--repeat and --runs must be >= 1")

    import onnxruntime
    import pandas
    import transformers

    from onnx_diagnostic.export.api import ExportStepError

    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{os.cpu_count()} cores, export median of {args.repeat}, latency median of "
        f"{args.runs} runs, prefill {PROMPT} tokens, decode 1 token after {PROMPT}"
    )
    rows = []
    for name in names:
        try:
            rows.extend(bench_model(name, args.repeat, args.runs))
        except ExportStepError as e:
            # one exporter fails on this model: no comparison, the others go on
            print(f"{name}: not measured, {str(e).splitlines()[0]}")
    if not rows:
        print("nothing measured")
        return None, None
    df = pandas.DataFrame(rows)
    rat = ratios(df)
    with pandas.option_context("display.width", 200, "display.max_columns", 30):
        print()
        print(df.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        print()
        print("export speed-up = onnx-dynamo / custom (> 1: custom faster);")
        print("latency ratio = custom / onnx-dynamo (< 1: custom faster); _1t: one thread")
        print(rat.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    return df, rat


if __name__ == "__main__":
    main()
