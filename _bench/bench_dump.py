"""
Round-trip throughput of the ONNX dumps of
:mod:`onnx_diagnostic.helpers.mini_onnx_builder` (build the model, ``onnx.save``, read it
back with :func:`create_input_tensors_from_onnx_model`) against ``torch.save`` /
``torch.load`` of the same structure, measured in the same run.

::

    python _bench/bench_dump.py [--mb 200] [--repeat 3]

The structure looks like what :func:`steal_forward` stores for an LLM: input ids, a mask,
a DynamicCache in float32, logits in float16 and bfloat16 tensors.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import onnx
import torch

from onnx_diagnostic.cache_helpers import get_cache_kv, make_dynamic_cache
from onnx_diagnostic.helpers.mini_onnx_builder import (
    create_input_tensors_from_onnx_model,
    create_onnx_model_from_input_tensors,
    save_onnx_dump,
)


def make_data(mb: int) -> dict:
    """About ``mb`` megabytes of tensors: 80% in a cache, the rest in other dtypes."""
    n_layers, batch, heads, dim = 8, 2, 8, 64
    per_layer = int(mb * 0.8 * 2**20) // n_layers
    seq = max(1, per_layer // (2 * batch * heads * dim * 4))
    cache = make_dynamic_cache(
        [
            (torch.randn(batch, heads, seq, dim), torch.randn(batch, heads, seq, dim))
            for _ in range(n_layers)
        ]
    )
    rest = int(mb * 0.2 * 2**20) // 2
    vocab = 32000
    tokens = max(1, rest // (batch * vocab * 2))
    return {
        ("model", 0, "I"): (
            (),
            dict(
                input_ids=torch.randint(0, vocab, (batch, tokens)),
                attention_mask=torch.ones((batch, seq + tokens), dtype=torch.int64),
                past_key_values=cache,
            ),
        ),
        ("model", 0, "O"): dict(
            logits=torch.randn(batch, tokens, vocab).to(torch.float16),
            hidden=torch.randn(batch, tokens, vocab).to(torch.bfloat16),
        ),
    }


def nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(nbytes(o) for o in obj.values())
    if type(obj).__name__ == "DynamicCache":
        keys, values = get_cache_kv(obj)
        return nbytes(keys) + nbytes(values)
    return 0


def same(a, b) -> bool:
    """Bit-exact comparison of two structures."""
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1), b.view(-1))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a).__name__ == "DynamicCache":
        return same(list(get_cache_kv(a)), list(get_cache_kv(b)))
    return a == b


def onnx_round_trip(data, path: str):
    begin = time.perf_counter()
    proto = create_onnx_model_from_input_tensors(data)
    built = time.perf_counter()
    save_onnx_dump(proto, path)
    saved = time.perf_counter()
    del proto
    back = create_input_tensors_from_onnx_model(path)
    end = time.perf_counter()
    return back, dict(build=built - begin, save=saved - built, load=end - saved)


def torch_round_trip(data, path: str):
    begin = time.perf_counter()
    torch.save(data, path)
    saved = time.perf_counter()
    back = torch.load(path, weights_only=False)
    end = time.perf_counter()
    return back, dict(save=saved - begin, load=end - saved)


def main(mb: int = 200, repeat: int = 3) -> dict:
    data = make_data(mb)
    size = nbytes(data)
    print(
        f"-- {size / 2**20:.1f} MB of tensors, onnx {onnx.__version__}, torch {torch.__version__}"
    )
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            for name, fct, path in [
                ("onnx", onnx_round_trip, os.path.join(tmp, "dump.onnx")),
                ("torch", torch_round_trip, os.path.join(tmp, "dump.pt")),
            ]:
                begin = time.perf_counter()
                back, detail = fct(data, path)
                total = time.perf_counter() - begin
                if not same(data, back):
                    raise AssertionError(f"{name} round trip is not bit-exact")
                if total < best.get(name, float("inf")):
                    best[name] = total
                    best[f"{name}_detail"] = detail  # type: ignore[assignment]
                    best[f"{name}_file_mb"] = os.path.getsize(path) / 2**20
                del back
    for name in ("onnx", "torch"):
        detail = ", ".join(f"{k}={v:.3f}s" for k, v in best[f"{name}_detail"].items())  # type: ignore[union-attr]
        print(
            f"{name:5s}: {best[name]:.3f}s, {size / 2**20 / best[name]:.0f} MB/s "
            f"(file {best[f'{name}_file_mb']:.1f} MB; {detail})"
        )
    ratio = best["onnx"] / best["torch"]
    print(f"ratio onnx / torch time: {ratio:.2f} (> 1 means the ONNX dump is slower)")
    return dict(
        mb=size / 2**20,
        onnx_mb_s=size / 2**20 / best["onnx"],
        torch_mb_s=size / 2**20 / best["torch"],
        ratio=ratio,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="megabytes of tensors")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    main(args.mb, args.repeat)
