"""
Generation speed, batch 1, greedy decoding, float32: tokens per second of
:func:`onnx_diagnostic.helpers.rt_helper.onnx_generate` (the exported model run by
onnxruntime, the cache kept in onnxruntime between steps), of onnxruntime-genai when it is
installed, of transformers ``generate`` and of the plain torch loop of the gallery
(seed 003), all in the same run, on untrained models: Tiny-LLM at its real sizes and a
larger shipped causal LM (SmolLM2-135M) reduced to 4 layers, its other sizes kept.
Every method must produce the same tokens (the eos token is ignored: every method makes
``--new`` tokens). Figures are medians of ``--repeat`` runs after a warm-up run, the
methods taking turns. Nothing is downloaded.

::

    python _bench/bench_generate.py [--models tiny,smollm2] [--prompt 16] [--new 100]
        [--repeat 5] [--exporters custom,custom-last-fused,custom-gqa,onnx-dynamo]
        [--device cpu|cuda]
        [--no-genai] [--variants] [--lm-head]

Methods:

* ``onnx_generate [custom]``, ``[onnx-dynamo]``: :func:`to_onnx
  <onnx_diagnostic.export.api.to_onnx>` with that exporter; ``[custom-last]``: the custom
  exporter given ``logits_to_keep=1`` (the lm_head of the prefill runs on the last row
  only); a suffix ``-fused``: :func:`apply_genai_fusions
  <onnx_diagnostic.export.custom.fusions_genai.apply_genai_fusions>` applied to the export
  (QKV and gate/up MatMuls fused, SkipSimplifiedLayerNormalization); a suffix ``-gqa``:
  ``to_onnx(..., genai_style=True)`` (the same fusions, GroupQueryAttention with the rotary
  inside, key and value buffers shared by past and present, see
  :mod:`onnx_diagnostic.export.custom.fusions_gqa`);
  ``[genai graph]``: the model written by onnxruntime-genai's builder run by onnx_generate
  (its head dimension made static).
* ``onnxruntime-genai``: the untrained weights saved with ``save_pretrained``, a
  word-level tokenizer made offline with ``tokenizers`` (one token per id), then
  ``python -m onnxruntime_genai.models.builder -i FOLDER -o OUT -p fp32 -e cpu|cuda``
  (offline), greedy search on the same prompt; ``onnxruntime-genai [custom export]``:
  the custom export with the ``genai_config.json`` of ``to_onnx(..., genai_config=True)``.
  A Generator is created for every generation, as a user does for every prompt: it costs
  about 14 ms on Tiny-LLM (measured apart, loaded machine), part of the figures.
* ``--device cuda``: transformers on the GPU, onnx_generate with CUDAExecutionProvider
  (the cache stays on the GPU), genai built with ``-e cuda`` (package
  ``onnxruntime-genai-cuda``). A method whose requirement is missing (no GPU, no
  CUDAExecutionProvider, genai without CUDA, a builder or a model genai fails to load)
  is printed as ``SKIPPED`` with the reason, the others run.

CPU, quiet machine, one run (``--repeat 7 --exporters
custom,custom-last-fused,custom-gqa,custom-last-gqa,onnx-dynamo``, 16-token prompt, 100 new
tokens; development machine, 2 cores, nothing else running: load average 1.2 to 1.4 with
the benchmark itself; torch 2.13, transformers 5.24, onnxruntime 1.32,
onnxruntime-genai 0.18):

=======================================  ============  ==========  ============  =======
method                                   Tiny-LLM      x genai     SmolLM2 (4L)  x genai
=======================================  ============  ==========  ============  =======
transformers generate                    404 tok/s     0.28        81.4 tok/s    0.38
torch loop (seed 003)                    436 tok/s     0.30        82.6 tok/s    0.39
onnxruntime-genai (its builder's model)  1448 tok/s    1           212 tok/s     1
onnxruntime-genai [custom export]        1460 tok/s    1.01        204 tok/s     0.96
onnx_generate [custom]                   2434 tok/s    1.68        245 tok/s     1.15
onnx_generate [custom-last-fused]        2470 tok/s    1.71        264 tok/s     1.24
onnx_generate [custom-gqa]               2783 tok/s    1.92        278 tok/s     1.31
onnx_generate [custom-last-gqa]          2894 tok/s    2.00        264 tok/s     1.25
onnx_generate [onnx-dynamo]              2076 tok/s    1.43        230 tok/s     1.09
onnx_generate [genai graph]              2664 tok/s    1.84        259 tok/s     1.22
=======================================  ============  ==========  ============  =======

Tokens identical for every method. On a quiet machine onnx_generate is faster than
onnxruntime-genai on both models whatever the export, and the most with ``genai_style=True``
(``-gqa``: GroupQueryAttention with the rotary inside, the cache in buffers shared by past
and present, fused projections, 21 nodes for Tiny-LLM against 22 in genai's builder's
graph): x1.92 on Tiny-LLM, x1.31 on SmolLM2. Two runs of the same day without that option
gave x1.54 / x1.58 (Tiny-LLM, custom) and x1.22 / x1.33 (SmolLM2, custom), genai x1 in
each; with it x1.94 (Tiny-LLM) and x1.34 (SmolLM2). A Generator of onnxruntime-genai is
created for every generation (about 14 ms on Tiny-LLM, measured apart on a loaded machine),
as a user does for every prompt.

Earlier runs on the same machine heavily loaded by other sessions (load average 5.7 to 8
on 2 cores, a token of ``generate`` cost 18 ms instead of 3 ms) gave any ranking of
onnx_generate and genai from x0.79 to x1.83: onnxruntime's threads spin between two runs
in onnxruntime-genai (its configuration has no option to stop it), not in onnx_generate,
and a load hurts them differently; such runs do not settle the comparison.
A run with ``--variants --exporters custom`` (load average 2.2 to 4.2, ``--repeat 5``),
ratio to genai, Tiny-LLM / SmolLM2: onnx_generate default 1.06 / 0.93, one thread
(``intra_op_num_threads=1``) 1.13 / 1.06, one thread without spinning 1.18 / 0.99, two
threads without spinning 1.13 / 1.06, two threads spinning 0.51 / 0.59, basic graph
optimizations 0.49 / 0.67; genai on the custom export 1.00 / 1.03; two methods with the
same options differed by 30% in that run. On 2 shared cores, the threads of onnxruntime
weigh more than the loop or the graph; the defaults of :func:`make_session
<onnx_diagnostic.helpers.rt_helper.make_session>` are not changed for that machine.

GPU, one run (``--device cuda``; NVIDIA H200, 16 cores, torch 2.11 cu130, transformers 5.17,
onnxruntime-gpu 1.31.1, onnxruntime-genai-cuda 0.18; Tiny-LLM: ``--repeat 3 --new 50``,
SmolLM2: ``--repeat 5 --new 100 --exporters custom``). The builder's CUDA model did not load
in onnxruntime-gpu 1.31.1 (``Graph output (present.0.key) does not exist in the graph``, the
builder ran with onnx-ir 1.0.0): the genai reference is genai on the custom export:

===================================  ============  ==========  ============  =======
method                               Tiny-LLM      x genai     SmolLM2 (4L)  x genai
===================================  ============  ==========  ============  =======
transformers generate                536 tok/s     0.23        276 tok/s     0.24
torch loop (seed 003)                786 tok/s     0.33        314 tok/s     0.27
onnxruntime-genai [custom export]    2380 tok/s    1           1153 tok/s    1
onnx_generate [custom]               1900 tok/s    0.80        956 tok/s     0.83
onnx_generate [onnx-dynamo]          1367 tok/s    0.57
===================================  ============  ==========  ============  =======

Tokens identical for every method. On the GPU a decoding step of the graph is short and
the Python loop weighs: genai's C++ loop is 1.2 times faster on the same graph.

The loop of onnx_generate (``helpers/rt_helper.py``), levers measured one by one:

* one :class:`onnxruntime.IOBinding`, the token, position, mask and logits in host buffers
  allocated once, updated in place with numpy and bound by pointer, the numpy argmax of
  the logits buffer (no copy), the tokens written in one preallocated tensor: x1.11 on
  Tiny-LLM and x1.02 on SmolLM2 (CPU, same run, old loop against new loop, load 3.9); on
  a trivial 4-layer graph, where only the loop costs, 107 us per step before, 62 us after;
  on the H200 (Tiny-LLM, 100 tokens, same run) 59.3 ms before, 51.0 ms with buffers on
  the GPU updated by torch; the final version (host buffers, the cache alone on the GPU)
  was not compared with them in one run (the GPU time was spent).
* host inputs on a CUDA session are bound again at every step: onnxruntime copies a host
  input to the device when it is bound, not when it runs.
* ``logits_to_keep=1`` at export (``custom-last``) saves the lm_head of the prompt's other
  rows: a few ms per generation on Tiny-LLM's 32000 x 192 lm_head with a 16-token prompt,
  within the noise of the loaded runs above.
* the genai fusions (``-fused``, 69 -> 66 nodes on Tiny-LLM, 154 -> 142 on SmolLM2): on the
  quiet machine x1.01 (Tiny-LLM) and x1.08 (SmolLM2) against ``custom`` in the run of the
  table (with ``logits_to_keep=1``).
* ``genai_style=True`` (``-gqa``, 69 -> 21 nodes on Tiny-LLM): GroupQueryAttention with the
  rotary inside (no Cos/Sin per step), the key and value buffers allocated once at the
  length of the generation and written in place (no Concat copying the cache at every
  step), the mask read as sequence lengths, outputs bound once: x1.14 (Tiny-LLM) and x1.13
  (SmolLM2) against ``custom`` in the run of the table; ``logits_to_keep=1`` on top of it
  (``-last-gqa``) saves the lm_head of the prompt's other rows, within the noise.

Earlier measurements (before this issue, onnxruntime 1.31, without genai): on a quiet
machine onnx_generate was x4.0-4.2 faster than ``generate`` on Tiny-LLM and x2.1 on
SmolLM2; ``--lm-head`` measures the lm_head of one decoding step alone (onnxruntime's MatMul
374 us, torch's ``linear`` 1963 us on the quiet machine). With onnxruntime's default
options (threads spinning between two runs) onnx_generate was 2 to 3 times slower on a busy
machine: :func:`make_session <onnx_diagnostic.helpers.rt_helper.make_session>` disables
spinning unless it is given session options (``--variants`` measures a few).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

#: model name -> (model id, configuration changes); None keeps the shipped sizes.
MODELS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "tiny": ("arnir0/Tiny-LLM", None),
    "smollm2": ("HuggingFaceTB/SmolLM2-135M", {"num_hidden_layers": 4}),
    "qwen2.5": ("Qwen/Qwen2.5-0.5B-Instruct", {"num_hidden_layers": 4}),
}


def _build(name: str) -> Any:
    from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs
    from onnx_diagnostic.torch_models.llms import get_tiny_llm

    model_id, changes = MODELS[name]
    if changes is None:
        return get_tiny_llm()
    return get_untrained_model_with_inputs(model_id, same_as_trained=True, model_kwargs=changes)


def _export(data: Any, filename: str, exporter: str) -> float:
    """
    Exports with :func:`to_onnx`; ``custom-last`` is the custom exporter with
    ``logits_to_keep=1`` given to the model (transformers computes the logits of the last
    position only: the lm_head of the prefill runs on one row instead of the prompt's);
    a suffix ``-fused`` applies
    :func:`onnx_diagnostic.export.custom.fusions_genai.apply_genai_fusions` (fused QKV and
    gate/up MatMuls, SkipSimplifiedLayerNormalization); a suffix ``-gqa`` exports with
    ``to_onnx(..., genai_style=True)``: the same fusions and GroupQueryAttention with the
    rotary inside, a cache buffer shared by past and present, the mask read as sequence
    lengths.
    """
    from onnx_diagnostic.export.api import to_onnx
    from onnx_diagnostic.torch_export_patches import torch_export_patches

    kwargs, dynamic_shapes = data.inputs, data.dynamic_shapes
    fused = exporter.endswith("-fused")
    if fused:
        exporter = exporter[: -len("-fused")]
    gqa = exporter.endswith("-gqa")
    if gqa:
        exporter = exporter[: -len("-gqa")]
    if exporter.endswith("-last"):
        exporter = exporter[: -len("-last")]
        kwargs = {**kwargs, "logits_to_keep": 1}
        dynamic_shapes = {**dynamic_shapes, "logits_to_keep": None}
    begin = time.perf_counter()
    with torch_export_patches(patch_transformers=True):
        proto = to_onnx(
            data.model,
            (),
            kwargs=kwargs,
            dynamic_shapes=dynamic_shapes,
            filename=None if fused else filename,
            optimize=True,
            exporter=exporter,
            **({"genai_style": True} if gqa else {}),
        )
    if fused:
        import onnx

        from onnx_diagnostic.export.custom.fusions_genai import apply_genai_fusions

        onnx.save(apply_genai_fusions(proto)[0], filename)
    return time.perf_counter() - begin


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).strip().split("\n") if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def _has_genai() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_genai") is not None


def _genai_cuda() -> bool:
    import onnxruntime_genai as og

    return bool(og.is_cuda_available())


def _cuda_message() -> str | None:
    """None if onnx_generate can run on CUDA, else why it cannot."""
    import onnxruntime

    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return (
            f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider "
            f"(providers {onnxruntime.get_available_providers()}, install onnxruntime-gpu)"
        )
    return None


def _write_tokenizer(folder: str, config: Any) -> None:
    """
    A word-level tokenizer made offline with :epkg:`tokenizers`, one token per id of the
    vocabulary (``t0``, ``t1``, ...): onnxruntime-genai's builder copies a tokenizer beside
    the model and refuses a folder without one. The benchmark feeds token ids, the
    tokenizer never encodes anything.
    """
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = config.vocab_size
    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(os.path.join(folder, "tokenizer.json"))

    def _tok(token_id: Any, default: int) -> str:
        if isinstance(token_id, list):
            token_id = token_id[0] if token_id else None
        return f"t{default if token_id is None else token_id}"

    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "unk_token": "t0",
                "bos_token": _tok(config.bos_token_id, 1),
                "eos_token": _tok(config.eos_token_id, 2),
                "model_max_length": config.max_position_embeddings,
            },
            f,
        )


def _genai_build(model: torch.nn.Module, folder: str, device: str) -> tuple[str, float]:
    """
    Saves the untrained weights with ``save_pretrained``, adds a tokenizer, runs the model
    builder of onnxruntime-genai (``-p fp32``, ``-e cpu`` or ``cuda``), offline. Returns the
    folder of the built model and the time the builder took.
    """
    import subprocess
    import sys

    hf_folder = os.path.join(folder, "hf")
    out = os.path.join(folder, "genai")
    model.save_pretrained(hf_folder)
    _write_tokenizer(hf_folder, model.config)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf_folder]
    cmd += ["-o", out, "-p", "fp32", "-e", device]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    begin = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    duration = time.perf_counter() - begin
    if proc.returncode != 0:
        raise RuntimeError(
            f"the builder of onnxruntime-genai failed ({' '.join(cmd)}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return out, duration


def _genai_graph(folder: str, head_dim: int) -> str:
    """
    The graph of genai's builder with a static head dimension on the cache inputs
    (the builder names it ``kv_cache_dim``, onnx_generate needs it to build the empty
    cache of the first step), saved beside it (``model.static.onnx``, same weights file).
    """
    import onnx

    proto = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)
    for inp in proto.graph.input:
        if inp.name.startswith("past_key_values."):
            inp.type.tensor_type.shape.dim[3].dim_value = head_dim
    filename = os.path.join(folder, "model.static.onnx")
    onnx.save(proto, filename)
    return filename


def _genai_method(
    folder: str, input_ids: torch.Tensor, new: int, device: str
) -> Callable[[], torch.Tensor]:
    """Greedy generation of ``new`` tokens with onnxruntime-genai (eos ignored)."""
    import onnxruntime_genai as og

    from onnx_diagnostic.export.genai import genai_generate

    config = og.Config(folder)
    config.clear_providers()
    if device == "cuda":
        config.append_provider("cuda")
    og_model = og.Model(config)
    prompt = input_ids.cpu()

    def _run() -> torch.Tensor:
        # no early stop on the eos token, every method makes `new` tokens
        return genai_generate(og_model, prompt, new)

    return _run


def torch_loop(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int) -> Any:
    """The loop of seed 003 (simple_generate_with_cache) without eos; the cache goes by
    the name the installed transformers gives it (``cache`` from 5.24)."""
    from onnx_diagnostic.helpers.compat import declared_cache_arg_name, output_cache_field

    arg, field_ = declared_cache_arg_name(model) or "past_key_values", output_cache_field()
    outputs = model(input_ids, use_cache=True)
    for _ in range(max_new_tokens - 1):
        next_token_id = torch.argmax(outputs.logits[:, -1, :], dim=-1, keepdim=True)
        input_ids = torch.cat([input_ids, next_token_id], dim=-1)
        cache = getattr(outputs, field_)
        outputs = model(next_token_id, use_cache=True, **{arg: cache})
    next_token_id = torch.argmax(outputs.logits[:, -1, :], dim=-1, keepdim=True)
    return torch.cat([input_ids, next_token_id], dim=-1)


def _measure(
    fcts: dict[str, Callable[[], torch.Tensor]], repeat: int
) -> dict[str, tuple[float, torch.Tensor]]:
    """
    Median duration of every function and the tokens it returns. The functions run
    in turns (one run of each, ``repeat`` times) after one warm-up run each, so that a
    change of the load of the machine affects all of them alike.
    """
    tokens = {name: fct() for name, fct in fcts.items()}
    durations: dict[str, list[float]] = {name: [] for name in fcts}
    for _ in range(repeat):
        for name, fct in fcts.items():
            begin = time.perf_counter()
            fct()
            durations[name].append(time.perf_counter() - begin)
    return {name: (statistics.median(durations[name]), tokens[name]) for name in fcts}


def _session_variants() -> dict[str, Any]:
    import onnxruntime

    variants: dict[str, Any] = {"default": None}
    for threads in (1, 2):
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        variants[f"intra_op={threads}"] = opts
    for threads in (0, 1, 2):
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        variants[f"intra_op={threads or 'default'}, no spinning"] = opts
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    variants["graph opt basic"] = opts
    return variants


def bench_model(
    name: str,
    prompt: int,
    new: int,
    repeat: int,
    variants: bool,
    folder: str,
    exporters: tuple[str, ...] = ("custom", "custom-last-fused", "custom-gqa", "onnx-dynamo"),
    device: str = "cpu",
    genai: bool = True,
) -> list[dict[str, Any]]:
    """
    Measures every method on one model (see the module docstring) and prints the figures.
    ``device="cuda"`` runs transformers on the GPU, onnx_generate with
    CUDAExecutionProvider (the cache stays on the GPU) and onnxruntime-genai built with
    ``-e cuda``; a method whose requirements are missing is skipped with a message.
    ``genai=False`` leaves out onnxruntime-genai even if it is installed.
    """
    from onnx_diagnostic.helpers.rt_helper import make_session, onnx_generate

    torch.manual_seed(0)
    data = _build(name)
    model = data.model
    # generate must not stop on the eos of the configuration: every method makes `new` tokens
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    vocab = model.config.vocab_size
    filenames = {e: os.path.join(folder, f"{name}.{e}", "model.onnx") for e in exporters}
    for filename in filenames.values():
        os.makedirs(os.path.dirname(filename), exist_ok=True)
    export_times = {e: _export(data, f, e) for e, f in filenames.items()}
    skipped: list[str] = []
    genai_folder = None
    if genai and not _has_genai():
        skipped.append("onnxruntime-genai: not installed (pip install onnxruntime-genai)")
    elif genai and device == "cuda" and not _genai_cuda():
        skipped.append(
            "onnxruntime-genai: this package has no CUDA support (pip install "
            "onnxruntime-genai-cuda)"
        )
    elif genai:
        try:
            genai_folder, export_times["genai builder"] = _genai_build(
                model, os.path.join(folder, f"{name}.genai"), device
            )
        except Exception as e:  # the builder does not support every model or version
            skipped.append(f"onnxruntime-genai's builder: {_first_line(e)}")
    input_ids = torch.randint(3, vocab, (1, prompt), generator=torch.Generator().manual_seed(1))
    providers = None
    if device == "cuda":
        model.to("cuda")
        input_ids = input_ids.to("cuda")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    mask = torch.ones_like(input_ids)

    def _generate() -> torch.Tensor:
        return model.generate(input_ids, attention_mask=mask, max_new_tokens=new, do_sample=False)

    fcts: dict[str, Callable[[], torch.Tensor]] = {
        "transformers generate": _generate,
        "torch loop (seed 003)": lambda: torch_loop(model, input_ids, new),
    }
    if genai_folder is not None:
        try:
            fcts["onnxruntime-genai"] = _genai_method(genai_folder, input_ids, new, device)
        except Exception as e:
            skipped.append(f"onnxruntime-genai on its builder's model: {_first_line(e)}")
            genai_folder = None
    if genai and _has_genai() and "custom" in filenames and (device == "cpu" or _genai_cuda()):
        # onnxruntime-genai's loop on the custom export (to_onnx(genai_config=True))
        from onnx_diagnostic.export.genai import write_genai_config

        write_genai_config(model.config, filenames["custom"], provider=device)
        try:
            fcts["onnxruntime-genai [custom export]"] = _genai_method(
                os.path.dirname(filenames["custom"]), input_ids, new, device
            )
        except Exception as e:
            skipped.append(f"onnxruntime-genai on the custom export: {_first_line(e)}")
    onnx_files = dict(filenames)
    if genai_folder is not None:
        # the graph of genai's builder run by onnx_generate: the loops compared on one graph
        head_dim = getattr(model.config, "head_dim", None) or (
            model.config.hidden_size // model.config.num_attention_heads
        )
        onnx_files["genai graph"] = _genai_graph(genai_folder, head_dim)
    cuda_missing = _cuda_message() if device == "cuda" else None
    if cuda_missing:
        skipped.append(f"onnx_generate on CUDA: {cuda_missing}")
        onnx_files = {}
    for exporter, filename in onnx_files.items():
        for label, opts in (_session_variants() if variants else {"default": None}).items():
            session = make_session(filename, session_options=opts, providers=providers)
            if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
                skipped.append(
                    f"onnx_generate [{exporter}] on CUDA: onnxruntime could not create a "
                    f"CUDA session (providers {session.get_providers()})"
                )
                continue
            method = f"onnx_generate [{exporter}]"
            if label != "default":
                method = f"onnx_generate [{exporter}, {label}]"
            fcts[method] = lambda session=session: onnx_generate(
                session, input_ids, max_new_tokens=new
            )
    with torch.no_grad():
        measures = _measure(fcts, repeat)
    t_generate, ref = measures["transformers generate"]
    # the reference: genai on its builder's model, else genai on the custom export
    genai_ref = next((k for k in measures if k.startswith("onnxruntime-genai")), None)
    t_genai = measures[genai_ref][0] if genai_ref else None
    rows = []
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"\n{name}: {data.model_id} {type(model).__name__}, {model.config.num_hidden_layers} "
        f"layers, {n_params / 1e6:.1f}M parameters, vocabulary {vocab}, device {device}, "
        "export " + ", ".join(f"{e} {t:.1f}s" for e, t in export_times.items())
    )
    for message in skipped:
        print(f"  SKIPPED {message}")
    print(f"  prompt {prompt} tokens, {new} new tokens, batch 1, median of {repeat} runs")
    if genai_ref:
        print(f"  x genai: ratio to {genai_ref!r}")
    header = "x genai" if t_genai else ""
    print(f"  {'method':48s} {'ms':>9s}    {'tokens/s':>9s} x generate {header} same tokens")
    for method, (duration, tokens) in measures.items():
        same = torch.equal(tokens.cpu(), ref.cpu())
        row = dict(
            model=name,
            device=device,
            method=method,
            seconds=duration,
            tokens_per_s=new / duration,
            speedup=t_generate / duration,
            vs_genai=t_genai / duration if t_genai else None,
            same_tokens=same,
        )
        rows.append(row)
        vs_genai = f"  x{t_genai / duration:5.2f}" if t_genai else ""
        print(
            f"  {method:48s} {duration * 1000:9.1f} ms {new / duration:9.1f} "
            f"x{t_generate / duration:9.2f}{vs_genai}  {same}"
        )
    if not all(r["same_tokens"] for r in rows):
        print("  WARNING: the methods do not produce the same tokens")
    return rows


def bench_lm_head(vocab: int = 32000, hidden: int = 192, runs: int = 300) -> dict[str, float]:
    """
    The cost of the lm_head of one decode step alone (one row times a ``vocab x hidden``
    float32 matrix): onnxruntime's MatMul in a one-node model (two threads, no spinning, as
    :func:`make_session <onnx_diagnostic.helpers.rt_helper.make_session>` builds sessions)
    against torch's ``linear``, microseconds, medians over ``runs`` taken in turns after a
    warm-up (:func:`_measure`).
    """
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    weight = torch.randn(vocab, hidden)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "w"], ["y"])],
        "lm_head",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, hidden])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, vocab])],
        [nh.from_array(weight.t().contiguous().numpy(), "w")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = onnxruntime.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    x = torch.randn(1, 1, hidden)
    feeds = {"x": x.numpy()}

    with torch.no_grad():
        measures = _measure(
            {
                "onnxruntime": lambda: sess.run(None, feeds)[0],
                "torch": lambda: torch.nn.functional.linear(x, weight),
            },
            runs,
        )
    t_ort, t_torch = measures["onnxruntime"][0] * 1e6, measures["torch"][0] * 1e6
    diff = float(np.abs(measures["onnxruntime"][1] - measures["torch"][1].numpy()).max())
    print(
        f"\nlm_head alone ({vocab} x {hidden} float32, one row): onnxruntime MatMul "
        f"{t_ort:.0f} us, torch linear {t_torch:.0f} us, ratio x{t_torch / t_ort:.2f}, "
        f"max abs diff {diff:.2g}"
    )
    return dict(onnxruntime_us=t_ort, torch_us=t_torch)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2", help=f"among {sorted(MODELS)}")
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--variants", action="store_true", help="onnxruntime session options")
    parser.add_argument(
        "--exporters",
        default="custom,custom-last-fused,custom-gqa,onnx-dynamo",
        help="exporters of to_onnx to compare, custom-last: custom with logits_to_keep=1, "
        "a suffix -fused applies the genai fusions (fusions_genai.py), -gqa exports with "
        "genai_style=True (GroupQueryAttention, shared cache buffers, fusions_gqa.py)",
    )
    parser.add_argument(
        "--lm-head", action="store_true", help="also measures the lm_head of Tiny-LLM alone"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--no-genai", action="store_true", help="leaves out onnxruntime-genai if installed"
    )
    args = parser.parse_args(argv)
    import onnxruntime
    import transformers

    genai = "not installed"
    if _has_genai():
        import onnxruntime_genai

        genai = onnxruntime_genai.__version__
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"onnxruntime-genai {genai}, {os.cpu_count()} cores, device {args.device}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available (torch.cuda.is_available() is False): nothing to measure")
        return []
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            rows.extend(
                bench_model(
                    name.strip(),
                    args.prompt,
                    args.new,
                    args.repeat,
                    args.variants,
                    folder,
                    tuple(e.strip() for e in args.exporters.split(",")),
                    device=args.device,
                    genai=not args.no_genai,
                )
            )
    if args.lm_head:
        bench_lm_head()
    return rows


if __name__ == "__main__":
    main()
