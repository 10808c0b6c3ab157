"""
Which causal LMs of the installed :epkg:`transformers` ``to_onnx(..., exporter="custom",
genai_style=True)`` rewrites as onnxruntime-genai's builder does (``GroupQueryAttention``
with the rotary inside, cache buffers shared by past and present, see
:mod:`onnx_diagnostic.export.custom.fusions_gqa`), and whether
:func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>` then gives the
tokens of ``generate``: for each architecture, the small untrained model of
``_bench/bench_architectures.py`` (:func:`small_configs`, 2 layers, hidden size 64,
vocabulary 1000), exported with ``genai_style=True``, then 16 greedy tokens of a batch of 2
prompts, the second one with 3 tokens of left padding, compared with ``generate``.
Every architecture is ``ok``, ``DIFF`` (other tokens: never expected, a bug),
``refused: <reason>`` (the rewrite says what GroupQueryAttention does not compute) or
``FAIL: <error>`` (an earlier stage failed: the model does not build or export).
Nothing is downloaded.

::

    python _bench/bench_genai_style.py [--archs llama,qwen2,...] [--new 16]

One run (transformers 5.24, torch 2.13, onnxruntime 1.32, 2 cores), 30 architectures:
see the table in ``_doc/exported_caches.rst``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

#: the architectures measured by default: decoder-only families users export most
ARCHS = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "phi",
    "granite",
    "olmo",
    "olmo2",
    "cohere",
    "stablelm",
    "smollm3",
    "glm",
    "helium",
    "starcoder2",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "gpt_oss",
    "ernie4_5",
    "arcee",
    "exaone4",
    "seed_oss",
    "hunyuan_v1_dense",
    "apertus",
    "nemotron",
    "deepseek_v3",
)


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().split("\n") if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:160]


def run_architecture(arch: str, new: int = 16) -> dict[str, Any]:
    """Builds, exports with ``genai_style=True`` and generates; returns the record."""
    import torch
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from onnx_diagnostic.export.api import quiet_third_party_noise, to_onnx
    from onnx_diagnostic.helpers.rt_helper import onnx_generate
    from onnx_diagnostic.helpers.torch_helper import torch_deepcopy
    from onnx_diagnostic.tasks import random_input_kwargs
    from onnx_diagnostic.torch_export_patches import torch_export_patches

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_architectures import randomize_zero_routers, small_configs

    record: dict[str, Any] = {"arch": arch, "status": "", "nodes": ""}
    try:
        cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[arch])
        config = next(c for _, c in small_configs(arch) if not isinstance(c, str))
        torch.manual_seed(0)
        model = cls(config).eval()
        randomize_zero_routers(model)
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        kwargs, fct = random_input_kwargs(config, "text-generation")
        data = fct(model, config, **kwargs)
    except BaseException as e:
        record["status"] = f"FAIL: build: {_first_line(e)}"
        return record
    try:
        with torch_export_patches(patch_transformers=True), quiet_third_party_noise():
            onx = to_onnx(
                model,
                (),
                kwargs=torch_deepcopy(data["inputs"]),
                dynamic_shapes=data["dynamic_shapes"],
                exporter="custom",
                genai_style=True,
            )
    except BaseException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ValueError) and "fuse_group_query_attention" in str(cause):
            record["status"] = "refused: " + str(cause).split(": ", 1)[1].split("\n")[0][:140]
        else:
            record["status"] = f"FAIL: export: {_first_line(cause)}"
        return record
    record["nodes"] = str(len(onx.graph.node))
    vocab = int(config.vocab_size)
    ids = torch.randint(3, vocab, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, :3] = 0
    mask[1, :3] = 0
    try:
        with torch.no_grad():
            expected = model.generate(
                ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False
            )
        got = onnx_generate(onx, ids, attention_mask=mask, max_new_tokens=new)
    except BaseException as e:
        record["status"] = f"FAIL: generation: {_first_line(e)}"
        return record
    same = got.shape == expected.shape and bool((got == expected).all())
    record["status"] = "ok" if same else "DIFF"
    return record


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--new", type=int, default=16)
    args = parser.parse_args(argv)
    records = []
    for arch in args.archs.split(","):
        record = run_architecture(arch, args.new)
        records.append(record)
        print(f"{arch:20s} {record['nodes']:>5s}  {record['status']}", flush=True)
    ok = sum(r["status"] == "ok" for r in records)
    refused = sum(r["status"].startswith("refused") for r in records)
    print(f"{ok} ok, {refused} refused, {len(records) - ok - refused} other, of {len(records)}")
    return records


if __name__ == "__main__":
    main()
