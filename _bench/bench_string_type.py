"""
Measures :func:`onnx_diagnostic.helpers.string_type` on transformers caches and compares
it with ``repr(cache)`` (which only names the layer classes) and with the obvious way
of printing every dtype and shape, all measured in the same run.

::

    python _bench/bench_string_type.py [--layers 32] [--repeat 200]
"""

from __future__ import annotations

import argparse
import timeit

import torch

from onnx_diagnostic.cache_helpers import make_dynamic_cache
from onnx_diagnostic.helpers import string_type


def _time(fct, repeat: int) -> float:
    """Best time of 5 series of ``repeat`` calls, in seconds per call."""
    return min(timeit.repeat(fct, number=repeat, repeat=5)) / repeat


def main(layers: int = 32, repeat: int = 200) -> list[dict]:
    cache = make_dynamic_cache(
        [(torch.rand(2, 8, 30, 64), torch.rand(2, 8, 30, 64)) for _ in range(layers)]
    )
    inputs = dict(
        input_ids=torch.randint(0, 1000, (2, 3)),
        attention_mask=torch.ones((2, 33), dtype=torch.int64),
        past_key_values=cache,
    )
    t_repr = _time(lambda: repr(cache), repeat)
    # repr(cache) only prints the layer classes; the obvious way to print the shapes:
    keys, values = cache.key_cache, cache.value_cache
    t_naive = _time(
        lambda: str(
            [(t.dtype, tuple(t.shape)) for t in keys] + [(t.dtype, tuple(t.shape)) for t in values]
        ),
        repeat,
    )
    cases = [
        ("string_type(cache)", lambda: string_type(cache)),
        ("string_type(cache, with_shape=True)", lambda: string_type(cache, with_shape=True)),
        (
            "string_type(inputs, with_shape=True)",
            lambda: string_type(inputs, with_shape=True),
        ),
        (
            "string_type(cache, with_shape=True, with_min_max=True)",
            lambda: string_type(cache, with_shape=True, with_min_max=True),
        ),
    ]
    print(f"DynamicCache with {layers} layers of shape (2, 8, 30, 64), {repeat} calls x 5")
    print(f"{'repr(cache)':60s} {t_repr * 1e6:10.1f} us/call   ratio 1.00")
    rows = [dict(name="repr(cache)", us=t_repr * 1e6, ratio=1.0)]
    name = "str([(dtype, shape) for every tensor])"
    print(f"{name:60s} {t_naive * 1e6:10.1f} us/call   ratio {t_naive / t_repr:.3f}")
    rows.append(dict(name=name, us=t_naive * 1e6, ratio=t_naive / t_repr))
    for name, fct in cases:
        t = _time(fct, repeat if "min_max" not in name else max(repeat // 10, 1))
        print(f"{name:60s} {t * 1e6:10.1f} us/call   ratio {t / t_repr:.3f}")
        rows.append(dict(name=name, us=t * 1e6, ratio=t / t_repr))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    main(args.layers, args.repeat)
