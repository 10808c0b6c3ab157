"""
Pieces shared by the task modules: reading a configuration whatever the names its
class uses, checking arguments, making random tensors and caches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: Names of the dimensions used by every task.
BATCH = "batch"
SEQ = "seq_length"
CACHE = "cache_length"
#: the past length of the sliding layers of a cache which also has full layers (they keep at
#: most ``sliding_window - 1`` positions, the full layers all of them)
SLIDING_CACHE = "sliding_cache_length"
CACHE_SEQ = "cache+seq"

_MISSING = object()


class TaskInputError(ValueError):
    """Raised when the arguments given to build inputs for a task are not valid."""


def cfg_get(config: Any, *names: str, default: Any = _MISSING) -> Any:
    """
    Returns the first attribute of ``config`` among ``names`` which exists and is not None.
    ``config`` may be a configuration object or a dictionary.
    Raises :class:`TaskInputError` if none exists and no default is given.
    """
    for name in names:
        value = config.get(name, None) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None:
            return value
    if default is _MISSING:
        raise TaskInputError(
            f"configuration {type(config).__name__} has none of the attributes {list(names)}"
        )
    return default


def text_config(config: Any) -> Any:
    """Returns the part of ``config`` describing the language model (decoder side)."""
    if config is None:
        raise TaskInputError("config must be a transformers configuration, not None")
    if hasattr(config, "get_text_config"):
        return config.get_text_config(decoder=True)
    return config


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """Checks ``value`` is an int >= ``minimum`` and returns it, the error names ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskInputError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if value < minimum:
        raise TaskInputError(f"{name} must be >= {minimum}, got {value}")
    return value


def num_key_value_heads(config: Any) -> int:
    """Number of key/value heads stored in the cache of a decoder layer."""
    if getattr(config, "multi_query", False) and not getattr(
        config, "new_decoder_architecture", False
    ):
        # falcon-7b: one head shared by every query head
        return 1
    return int(cfg_get(config, "num_key_value_heads", "num_kv_heads", "num_attention_heads"))


def head_dim(config: Any) -> int:
    """Dimension of one attention head (the last dimension of the cache tensors)."""
    value = getattr(config, "head_dim", None)
    if isinstance(value, int) and value > 0:
        return value
    return int(cfg_get(config, "hidden_size")) // int(cfg_get(config, "num_attention_heads"))


def layer_types(config: Any, num_layers: int) -> list[str] | None:
    """
    Returns the layer types (``full_attention``, ``sliding_attention``) of a decoder, None
    when all layers are full attention layers or the configuration does not say.
    """
    types = getattr(config, "layer_types", None)
    if not types:
        return None
    types = list(types)[:num_layers]
    if all(t == "full_attention" for t in types):
        return None
    return types


def float_dtype(model: Any, dtype: torch.dtype | None) -> torch.dtype:
    """Returns ``dtype`` or the dtype of the first floating weight of ``model``, float32."""
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TaskInputError(f"dtype must be a floating torch.dtype, not {dtype!r}")
        return dtype
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            if p.dtype.is_floating_point:
                return p.dtype
    return torch.float32


def random_ids(shape: Sequence[int], max_token_id: int) -> torch.Tensor:
    """Random token ids in ``[0, max_token_id]``, int64."""
    return torch.randint(0, max_token_id + 1, tuple(shape), dtype=torch.int64)


def random_kv_pairs(
    num_layers: int, batch: int, heads: int, length: int, dim: int, dtype: torch.dtype
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One pair ``(key, value)`` of shape ``(batch, heads, length, dim)`` per layer."""
    return [
        (
            torch.randn((batch, heads, length, dim), dtype=dtype),
            torch.randn((batch, heads, length, dim), dtype=dtype),
        )
        for _ in range(num_layers)
    ]


def cache_shapes(
    num_layers: int, length_dim: str | None, sliding: Sequence[bool] | None = None
) -> list[dict[int, str]]:
    """Dynamic shapes of a DynamicCache in the canonical flat layout; the layers flagged in
    ``sliding`` get :data:`SLIDING_CACHE` as their length."""
    ds = {0: BATCH} if length_dim is None else {0: BATCH, 2: length_dim}
    out = []
    for i in range(num_layers):
        layer = dict(ds)
        if sliding is not None and sliding[i] and length_dim is not None:
            layer[2] = SLIDING_CACHE
        out.extend([layer, dict(layer)])
    return out


def second_sizes(**sizes: int) -> dict[str, int]:
    """Sizes for ``inputs2``: every size plus one, so that every dynamic dimension differs."""
    return {k: v + 1 for k, v in sizes.items()}


def _is_shape_leaf(x: Any) -> bool:
    return x is None or (isinstance(x, dict) and all(isinstance(k, int) for k in x))


def _flat_with_shapes(value: Any, ds: Any, path: str) -> list[tuple[str, Any, Any]]:
    import torch.utils._pytree as pytree

    from ..cache_helpers import is_cache  # registers the caches as pytree nodes

    if isinstance(value, torch.Tensor):
        return [(path, value, ds)]
    if value is None or isinstance(value, (int, float, bool)):
        return []
    leaves, _ = pytree.tree_flatten(value)
    shapes, _ = pytree.tree_flatten(ds, is_leaf=_is_shape_leaf)
    if len(leaves) != len(shapes):
        kind = "cache" if is_cache(value) else type(value).__name__
        raise TaskInputError(
            f"{path} ({kind}) flattens into {len(leaves)} tensors but its dynamic shapes "
            f"into {len(shapes)}"
        )
    return [(f"{path}[{i}]", t, s) for i, (t, s) in enumerate(zip(leaves, shapes))]


def check_inputs2(
    inputs: dict[str, Any], inputs2: dict[str, Any], dynamic_shapes: dict[str, Any]
) -> list[str]:
    """
    Checks that ``inputs2`` is a good second set of inputs: within each set, a dimension
    name has the same size everywhere, and every dynamic dimension of ``inputs2`` differs
    from the same dimension of ``inputs`` (so that an export which made it static fails).

    :return: the problems found (an empty list when there is none), each naming the place
        (``inputs['past_key_values'][0] dim 2 'cache_length'``)

    >>> import torch
    >>> check_inputs2({"x": torch.zeros(2, 3)}, {"x": torch.zeros(2, 4)}, {"x": {0: "batch"}})
    ["inputs['x'] dim 0 'batch': same size 2 in both sets"]
    """
    problems = []
    if set(inputs) != set(inputs2) or set(inputs) != set(dynamic_shapes):
        return [
            f"keys differ: inputs {sorted(inputs)}, inputs2 {sorted(inputs2)}, "
            f"dynamic_shapes {sorted(dynamic_shapes)}"
        ]
    sizes: list[dict[str, tuple[str, int]]] = [{}, {}]
    for key in inputs:
        flat1 = _flat_with_shapes(inputs[key], dynamic_shapes[key], f"inputs[{key!r}]")
        flat2 = _flat_with_shapes(inputs2[key], dynamic_shapes[key], f"inputs[{key!r}]")
        if len(flat1) != len(flat2):
            problems.append(f"inputs[{key!r}]: {len(flat1)} tensors vs {len(flat2)} in inputs2")
            continue
        for (path, t1, ds), (_, t2, _) in zip(flat1, flat2):
            if t1.dim() != t2.dim():
                problems.append(f"{path}: rank {t1.dim()} vs {t2.dim()} in inputs2")
                continue
            for axis, name in (ds or {}).items():
                place = f"{path} dim {axis} {name!r}"
                s1, s2 = t1.shape[axis], t2.shape[axis]
                if s1 == s2:
                    problems.append(f"{place}: same size {s1} in both sets")
                for i, s in enumerate((s1, s2)):
                    if name in sizes[i] and sizes[i][name][1] != s:
                        problems.append(
                            f"{place}: size {s} but {sizes[i][name][0]} has "
                            f"{sizes[i][name][1]} in {'inputs2' if i else 'inputs'}"
                        )
                    sizes[i].setdefault(name, (place, s))
    return problems


def decoder_geometry(config: Any) -> tuple[int, int, int]:
    """
    Returns ``(layers, heads, head_dim)`` of the decoder of an encoder-decoder
    configuration (T5, BART, Whisper).
    """
    layers = int(
        cfg_get(config, "num_decoder_layers", "decoder_layers", "num_layers", "num_hidden_layers")
    )
    heads = int(cfg_get(config, "decoder_attention_heads", "num_heads", "num_attention_heads"))
    dim = getattr(config, "d_kv", None) or int(cfg_get(config, "d_model", "hidden_size")) // heads
    return layers, heads, int(dim)


def make_encoder_decoder_cache(
    num_layers: int,
    batch: int,
    heads: int,
    self_length: int,
    cross_length: int,
    dim: int,
    dtype: torch.dtype,
) -> Any:
    """An EncoderDecoderCache filled with random tensors."""
    from ..cache_helpers import make_dynamic_cache, make_encoder_decoder_cache

    return make_encoder_decoder_cache(
        make_dynamic_cache(random_kv_pairs(num_layers, batch, heads, self_length, dim, dtype)),
        make_dynamic_cache(random_kv_pairs(num_layers, batch, heads, cross_length, dim, dtype)),
    )
