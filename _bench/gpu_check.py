"""
The checks run on a GPU machine when one is lent (nothing requires one): Tiny-LLM built
on CUDA, exported with both exporters from the CUDA model, the ONNX model run with
onnxruntime (CUDAExecutionProvider when the installed onnxruntime has it, CPU otherwise)
against torch on CUDA, greedy generation with onnx_generate against transformers
``generate`` on CUDA, and compare_intermediates with the model on CUDA.

::

    PYTHONPATH=. HF_HUB_OFFLINE=1 python _bench/gpu_check.py

Run on 2026-11-30 on an H200 (torch 2.11.0+cu130, transformers 5.17.0, onnxruntime 1.30.0
with no CUDA provider, so sessions ran on CPU)::

    custom: export from CUDA 3.64s, session on CPUExecutionProvider, max abs diff 8.94e-07,
        onnx_generate 50 tokens 0.031s tokens identical to generate on CUDA: True,
        compare_intermediates 42 aligned, first divergence: none, max abs 1.91e-06
    onnx-dynamo: export from CUDA 4.58s, session on CPUExecutionProvider, max abs diff
        9.24e-07, onnx_generate 50 tokens 0.032s tokens identical to generate on CUDA: True,
        compare_intermediates 88 aligned, first divergence: none, max abs 5.72e-06
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import onnxruntime  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from onnx_diagnostic.export.api import onnx_feeds, to_onnx  # noqa: E402
from onnx_diagnostic.helpers import max_diff  # noqa: E402
from onnx_diagnostic.helpers.rt_helper import make_session, onnx_generate, run_session  # noqa: E402
from onnx_diagnostic.helpers.torch_helper import to_any, torch_deepcopy  # noqa: E402
from onnx_diagnostic.investigate.compare import compare_intermediates  # noqa: E402
from onnx_diagnostic.torch_export_patches import torch_export_patches  # noqa: E402
from onnx_diagnostic.torch_models.llms import get_tiny_llm  # noqa: E402


def main() -> None:
    """Runs the checks and prints one line per check."""
    providers = onnxruntime.get_available_providers()
    print(
        f"torch {torch.__version__} cuda={torch.cuda.is_available()} "
        f"transformers {transformers.__version__} onnxruntime {onnxruntime.__version__} "
        f"providers={providers}"
    )
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    print(torch.cuda.get_device_name(0))
    ort_providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in providers
        else ["CPUExecutionProvider"]
    )
    data = get_tiny_llm()
    model = data.model.to("cuda").eval()
    inputs = to_any(data.inputs, "cuda")
    with torch.no_grad():
        expected = model(**torch_deepcopy(inputs))
    prompt = torch.randint(0, 32000, (1, 16), device="cuda")
    with torch.no_grad():
        tokens_hf = model.generate(
            prompt, max_new_tokens=50, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    for exporter in ["custom", "onnx-dynamo"]:
        try:
            begin = time.perf_counter()
            with torch_export_patches(patch_transformers=True):
                onx = to_onnx(
                    model,
                    kwargs=torch_deepcopy(inputs),
                    dynamic_shapes=data.dynamic_shapes,
                    exporter=exporter,
                )
            export_s = time.perf_counter() - begin
            sess = make_session(onx, providers=ort_providers)
            got = run_session(sess, onnx_feeds(model, kwargs=torch_deepcopy(inputs)))
            diff = max_diff(expected, got)
            begin = time.perf_counter()
            tokens = onnx_generate(sess, prompt, max_new_tokens=50)
            gen_s = time.perf_counter() - begin
            same = tokens.shape == tokens_hf.shape and bool((tokens.cpu() == tokens_hf.cpu()).all())
            with torch_export_patches(patch_transformers=True):
                res = compare_intermediates(
                    model,
                    onx,
                    kwargs=torch_deepcopy(inputs),
                    dynamic_shapes=data.dynamic_shapes,
                    providers=ort_providers,
                )
            first = res.first_divergence
            print(
                f"{exporter}: export from CUDA {export_s:.2f}s, session on "
                f"{sess.get_providers()[0]}, max abs diff {diff['abs']:.3g}, onnx_generate "
                f"50 tokens {gen_s:.3f}s tokens identical to generate on CUDA: {same}, "
                f"compare_intermediates {len(res.table)} aligned, first divergence: "
                f"{'none' if first is None else first['torch_node'] + ' ' + first['module']}, "
                f"max abs {res.table['max_abs'].max():.3g}"
            )
        except Exception as e:  # one failing exporter must not hide the other
            print(f"{exporter}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:300]}")


if __name__ == "__main__":
    main()
