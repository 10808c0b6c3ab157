"""
Shrinks a configuration to get a small model of the same architecture.

Every function takes the configuration as a dictionary (``config.json`` as published, or
``config.to_dict()``) and returns the *overrides*: a dictionary with the same key names
(nested for sub-configurations such as ``text_config``), only keys already present in
the configuration. The caller merges them with :func:`merge_overrides` and builds the
configuration class from the result, so that every derived attribute is computed again.

>>> from onnx_diagnostic.tasks._reduce import reduce_decoder_config
>>> reduce_decoder_config({"num_hidden_layers": 24, "hidden_size": 2048,
...     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 1000})
{'num_hidden_layers': 2, 'hidden_size': 64, 'num_attention_heads': 4, 'num_key_value_heads': 2}
"""

from __future__ import annotations

import copy
from typing import Any

#: Sizes of a reduced model.
HIDDEN = 64
HEADS = 4
INTERMEDIATE = 128
LAYERS = 2
#: Vocabularies larger than this are reduced to ``REDUCED_VOCAB``.
MAX_VOCAB = 50000
REDUCED_VOCAB = 32000

_LAYERS = (
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "n_layers",
    "num_decoder_layers",
    "encoder_layers",
    "decoder_layers",
)
_HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
_HEADS = (
    "num_attention_heads",
    "n_head",
    "num_heads",
    "n_heads",
    "encoder_attention_heads",
    "decoder_attention_heads",
)
_KV_HEADS = ("num_key_value_heads", "num_kv_heads")
_INTERMEDIATE = (
    "intermediate_size",
    "ffn_hidden_size",
    "n_inner",
    "d_ff",
    "hidden_dim",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
)
#: Lists of values indexed by token id, filtered when the vocabulary shrinks.
_TOKEN_LISTS = ("suppress_tokens", "begin_suppress_tokens")


def as_dict(config: Any) -> dict[str, Any]:
    """Returns the configuration as a dictionary (``to_dict()`` for a config object)."""
    if isinstance(config, dict):
        return config
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"config must be a dict or a transformers configuration, not {type(config)}")


def first_key(d: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """Returns the first name of ``names`` present in ``d`` with a value which is not None."""
    for name in names:
        if d.get(name, None) is not None:
            return name
    return None


class Replace(dict):
    """An override replacing a dictionary instead of updating it (see :func:`merge_overrides`)."""

    def __repr__(self) -> str:
        return f"Replace({dict.__repr__(self)})"


def merge_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """
    Returns a copy of ``config`` updated with ``overrides``; a dictionary value updates
    a dictionary value (sub-configurations) instead of replacing it, unless it is a
    :class:`Replace`.

    >>> merge_overrides({"a": 1, "sub": {"b": 2, "c": 3}}, {"sub": {"c": 4}})
    {'a': 1, 'sub': {'b': 2, 'c': 4}}
    >>> merge_overrides({"sub": {"b": 2, "c": 3}}, {"sub": Replace({"c": 4})})
    {'sub': Replace({'c': 4})}
    """
    res = copy.deepcopy(config)
    for key, value in overrides.items():
        if isinstance(value, Replace):
            # stays a Replace: the result may be merged again as overrides
            res[key] = Replace(copy.deepcopy(dict(value)))
        elif isinstance(value, dict) and isinstance(res.get(key, None), dict):
            res[key] = merge_overrides(res[key], value)
        else:
            res[key] = copy.deepcopy(value)
    return res


def pick_layers(d: dict[str, Any], num_layers: int, target: int = LAYERS) -> list[int]:
    """
    Chooses which layers to keep: the first layer of every distinct kind (a kind combines
    the values of every per-layer list: ``layer_types``, ``no_rope_layers``...), then the
    next layers until ``target`` are kept (never more than ``target``).

    >>> pick_layers({"layer_types": ["sliding_attention"] * 5 + ["full_attention"]}, 6)
    [0, 5]
    """
    per_layer = [k for k, v in d.items() if isinstance(v, list) and len(v) == num_layers]
    signatures = [tuple(repr(d[k][i]) for k in per_layer) for i in range(num_layers)]
    kept: list[int] = []
    seen: set[tuple] = set()
    for i, sig in enumerate(signatures):
        if sig not in seen and len(kept) < target:
            seen.add(sig)
            kept.append(i)
    for i in range(num_layers):
        if len(kept) >= target:
            break
        if i not in kept:
            kept.append(i)
    return sorted(kept)


def _by_layer_index(v: Any, n: int) -> bool:
    """A dictionary keyed by layer indices (``per_layer_config`` of gemma4: ``{"05": ...}``)."""
    if not isinstance(v, dict) or not v:
        return False
    keys = [k if isinstance(k, int) else (int(k) if str(k).isdigit() else -1) for k in v]
    return all(0 <= k < n for k in keys)


def reduce_layers(d: dict[str, Any], key: str, target: int = LAYERS) -> dict[str, Any]:
    """
    Overrides reducing the number of layers stored under ``key``, every per-layer list, and
    every dictionary keyed by layer indices (the entries of the kept layers, renumbered).

    >>> reduce_layers({"num_hidden_layers": 4, "layer_types": ["s", "s", "s", "f"],
    ...                "per_layer_config": {"03": {"head_dim": 8}}}, "num_hidden_layers")
    ... # doctest: +NORMALIZE_WHITESPACE
    {'num_hidden_layers': 2, 'layer_types': ['s', 'f'],
     'per_layer_config': Replace({'1': {'head_dim': 8}})}
    """
    n = d.get(key, None)
    if not isinstance(n, int) or n <= target:
        return {}
    kept = pick_layers(d, n, target)
    over: dict[str, Any] = {key: len(kept)}
    for k, v in d.items():
        if isinstance(v, list) and len(v) == n:
            over[k] = [v[i] for i in kept]
        elif _by_layer_index(v, n):
            rank = {old: new for new, old in enumerate(kept)}
            entries = {int(i): e for i, e in v.items()}
            remapped = {
                (rank[i] if isinstance(next(iter(v)), int) else str(rank[i])): copy.deepcopy(e)
                for i, e in entries.items()
                if i in rank
            }
            over[k] = Replace(remapped)
    if isinstance(d.get("num_kv_shared_layers", None), int) and d["num_kv_shared_layers"] > 0:
        # the last layers reuse the cache of earlier ones: none left with so few layers
        over["num_kv_shared_layers"] = 0
    return over


def _resample(values: list, n: int) -> list:
    if n <= 0:
        return []
    if len(values) == n:
        return list(values)
    if n == 1:
        return [values[0]]
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)]


def reduce_rope(d: dict[str, Any], new_head_dim: int) -> dict[str, Any]:
    """
    Resizes the per-frequency factors of a ``longrope`` scaling (Phi-3.5, Phi-4) to the
    new rotary dimension: there is one factor per pair of rotated dimensions.
    """
    over = {}
    factor = d.get("partial_rotary_factor", None) or 1.0
    for key in ("rope_scaling", "rope_parameters"):
        rope = d.get(key, None)
        if not isinstance(rope, dict):
            continue
        lists = {k: v for k, v in rope.items() if k.endswith("_factor") and isinstance(v, list)}
        if not lists:
            continue
        if "partial_rotary_factor" in rope:
            factor = rope["partial_rotary_factor"] or 1.0
        n = int(new_head_dim * factor) // 2
        over[key] = {**rope, **{k: _resample(v, n) for k, v in lists.items()}}
    return over


def reduce_attention(d: dict[str, Any], hidden: int = HIDDEN, heads: int = HEADS) -> dict[str, Any]:
    """
    Overrides shrinking the attention of a (flat) configuration: hidden size, heads,
    key-value heads (keeping multi-head, grouped-query or multi-query attention),
    head dimension, rotary factors.
    """
    over: dict[str, Any] = {}
    k_hidden, k_heads = first_key(d, _HIDDEN), first_key(d, _HEADS)
    if k_hidden is None or k_heads is None:
        return over
    old_heads = d[k_heads]
    over[k_hidden] = hidden
    for k in _HEADS:
        if isinstance(d.get(k, None), int):
            over[k] = heads
    k_kv = first_key(d, _KV_HEADS)
    if k_kv is not None:
        old_kv = d[k_kv]
        over[k_kv] = heads if old_kv >= old_heads else (1 if old_kv == 1 else heads // 2)
    if d.get("head_dim", None) is not None:
        over["head_dim"] = hidden // heads
    if isinstance(d.get("qk_rope_head_dim", None), int):
        # multi-head latent attention (DeepSeek-V2/V3, MiniCPM3): the query/key heads are
        # the concatenation of a rotary part and a non rotary part, values have their own
        # size, keys and values come from a compressed latent vector
        half = max(hidden // heads // 2, 2)
        over.update(qk_rope_head_dim=half, qk_nope_head_dim=half, v_head_dim=hidden // heads)
        if isinstance(d.get("qk_head_dim", None), int):
            over["qk_head_dim"] = 2 * half
        for k in ("kv_lora_rank", "q_lora_rank"):
            if isinstance(d.get(k, None), int):
                over[k] = hidden // 2
        if d.get("head_dim", None) is not None:
            # head_dim is the rotary dimension in these configurations
            over["head_dim"] = half
    if d.get("d_kv", None) is not None:
        over["d_kv"] = hidden // heads
    rotary = d.get("rotary_dim", None)
    if isinstance(rotary, int) and rotary > 0:
        # partial rotary embedding (gpt-j, codegen): the same share of the new head dimension
        old_dim = d.get("head_dim", None) or d[k_hidden] // old_heads
        share = min(rotary / old_dim, 1.0) if old_dim else 1.0
        over["rotary_dim"] = max(2, int(share * (hidden // heads)) // 2 * 2)
    over.update(reduce_rope(d, hidden // heads))
    return over


def reduce_intermediate(d: dict[str, Any], size: int = INTERMEDIATE) -> dict[str, Any]:
    """Overrides shrinking the feed-forward layers."""
    over = {}
    for key in _INTERMEDIATE:
        if isinstance(d.get(key, None), int):
            over[key] = size
    return over


def _token_keys(d: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in d.items()
        if isinstance(k, str)
        and (k.endswith("token_id") or k.endswith("token_index") or k.endswith("token_ids"))
        and (isinstance(v, int) or (isinstance(v, list) and all(isinstance(i, int) for i in v)))
        and not isinstance(v, bool)
    ]


def _collect_ids(d: dict[str, Any], out: set[int]) -> None:
    for k in _token_keys(d):
        v = d[k]
        out.update(v if isinstance(v, list) else [v])
    for v in d.values():
        if isinstance(v, dict):
            _collect_ids(v, out)


def _remap(d: dict[str, Any], mapping: dict[int, int], new_vocab: int) -> dict[str, Any]:
    over: dict[str, Any] = {}
    for k in _token_keys(d):
        v = d[k]
        new = [mapping.get(i, i) for i in v] if isinstance(v, list) else mapping.get(v, v)
        if new != v:
            over[k] = new
    for k in _TOKEN_LISTS:
        v = d.get(k, None)
        if isinstance(v, list) and any(i >= new_vocab for i in v):
            over[k] = [i for i in v if i < new_vocab]
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _remap(v, mapping, new_vocab)
            if sub:
                over[k] = sub
    return over


def reduce_vocabulary(
    d: dict[str, Any],
    vocab_key_path: tuple[str, ...] = ("vocab_size",),
    max_vocab: int = MAX_VOCAB,
    reduced_vocab: int = REDUCED_VOCAB,
) -> dict[str, Any]:
    """
    Overrides shrinking a vocabulary larger than ``max_vocab`` (:data:`MAX_VOCAB`) to
    ``reduced_vocab`` (:data:`REDUCED_VOCAB`). Every token id (``bos_token_id``,
    ``image_token_index``..., sub-configurations included) falling outside the new
    vocabulary is moved to a distinct id at its end, in the same order.

    :param d: the whole configuration
    :param vocab_key_path: where the vocabulary size is (``("text_config", "vocab_size")``)
    :param max_vocab: vocabularies up to this size are kept
    :param reduced_vocab: the size of a reduced vocabulary, ``<= max_vocab``

    >>> reduce_vocabulary({"vocab_size": 5000, "eos_token_id": 4999}, max_vocab=1000,
    ...                   reduced_vocab=1000)
    {'eos_token_id': 999, 'vocab_size': 1000}
    """
    if not isinstance(reduced_vocab, int) or not isinstance(max_vocab, int):
        raise TypeError(
            f"reduce_vocabulary: max_vocab={max_vocab!r} and reduced_vocab={reduced_vocab!r} "
            "must be integers"
        )
    if not 0 < reduced_vocab <= max_vocab:
        raise ValueError(
            f"reduce_vocabulary: reduced_vocab={reduced_vocab} must be in [1, "
            f"max_vocab={max_vocab}]"
        )
    sub = d
    for k in vocab_key_path[:-1]:
        sub = sub.get(k, None) or {}
    vocab = sub.get(vocab_key_path[-1], None)
    if not isinstance(vocab, int) or vocab <= max_vocab:
        return {}
    ids: set[int] = set()
    _collect_ids(d, ids)
    large = sorted(i for i in ids if i >= reduced_vocab)
    if len(large) >= reduced_vocab:
        raise ValueError(
            f"reduce_vocabulary: {len(large)} token ids do not fit in a vocabulary of "
            f"reduced_vocab={reduced_vocab}"
        )
    start = reduced_vocab - len(large)
    mapping = {old: start + rank for rank, old in enumerate(large)}
    over = _remap(d, mapping, reduced_vocab)
    node = over
    for k in vocab_key_path[:-1]:
        node = node.setdefault(k, {})
    node[vocab_key_path[-1]] = reduced_vocab
    return over


#: Numbers of experts, of experts chosen per token, of shared experts, of groups of experts.
_EXPERTS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
_EXPERTS_PER_TOKEN = (
    "num_experts_per_tok",
    "num_experts_per_token",
    "top_k_experts",
    "moe_top_k",
    "moe_topk",
    "moe_k",
)
_SHARED_EXPERTS = ("n_shared_experts", "num_shared_experts", "moe_num_shared_experts")
_EXPERT_GROUPS = ("n_group", "topk_group")
_EXPERT_INTERMEDIATE = (
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "moe_shared_expert_intermediate_size",
    "expert_intermediate_size",
)


def reduce_experts(
    d: dict[str, Any], experts: int = 4, per_token: int = 2, intermediate: int = 32
) -> dict[str, Any]:
    """
    Overrides shrinking the mixture of experts of a (flat) configuration: at most
    ``experts`` experts, ``per_token`` of them chosen per token, one shared expert, one
    group of experts, feed-forward size ``intermediate``, the first layer dense at most
    (``first_k_dense_replace``) so that a 2-layer model keeps a sparse layer.

    >>> reduce_experts({"num_local_experts": 8, "num_experts_per_tok": 2, "n_group": 8})
    {'num_local_experts': 4, 'n_group': 1}
    """
    if not isinstance(d, dict):
        raise TypeError(f"reduce_experts: d must be a dict, not {type(d).__name__}")
    if experts < 1 or per_token < 1 or per_token > experts:
        raise ValueError(f"reduce_experts: expects 1 <= per_token={per_token} <= experts={experts}")

    def _int(k: str) -> int | None:
        v = d.get(k, None)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    over: dict[str, Any] = {}
    moe_keys = (*_EXPERTS, *_EXPERTS_PER_TOKEN, *_EXPERT_INTERMEDIATE)
    if any(_int(k) for k in moe_keys):
        # a default configuration may leave the numbers of experts to None
        for keys, value in ((_EXPERTS, experts), (_EXPERTS_PER_TOKEN, per_token)):
            for k in keys:
                if k in d and d[k] is None:
                    over[k] = value
    for keys, limit in (
        (_EXPERTS, experts),
        (_EXPERTS_PER_TOKEN, per_token),
        (_SHARED_EXPERTS, 1),
        (_EXPERT_GROUPS, 1),
        (_EXPERT_INTERMEDIATE, intermediate),
        (("first_k_dense_replace",), 1),
    ):
        for k in keys:
            v = _int(k)
            if v is not None and v > limit:
                over[k] = limit
    return over


def reduce_sizes(
    d: dict[str, Any],
    hidden: int = HIDDEN,
    heads: int = HEADS,
    intermediate: int = INTERMEDIATE,
    layers: int = LAYERS,
) -> dict[str, Any]:
    """
    Overrides shrinking the layers (every layer count: encoder, decoder...),
    the attention and the feed-forward layers of a flat configuration.
    """
    over: dict[str, Any] = {}
    layer_keys = [k for k in _LAYERS if isinstance(d.get(k, None), int)]
    if layer_keys:
        over.update(reduce_layers(d, layer_keys[0], layers))
        for k in layer_keys[1:]:
            if d[k] > layers:
                over[k] = layers
    over.update(reduce_attention(d, hidden, heads))
    over.update(reduce_intermediate(d, intermediate))
    return over


def reduce_decoder_config(config: Any) -> dict[str, Any]:
    """
    Overrides giving a small language model: 2 layers (one of every kind
    of ``layer_types`` at least), hidden size 64, 4 heads, feed-forward 128,
    vocabulary reduced to 32000 if larger than 50000.
    It works for encoders and encoder-decoders as well (BERT, T5, BART).
    """
    d = as_dict(config)
    return merge_overrides(reduce_sizes(d), reduce_vocabulary(d))


def complete_layer_overrides(d: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """
    Returns ``overrides`` completed so that the configuration stays consistent: when it
    changes a number of layers without giving the per-layer lists (``layer_types``...),
    they are reduced as :func:`reduce_layers` does or, for more layers, their pattern is
    repeated, in sub-configurations as well.

    >>> complete_layer_overrides(
    ...     {"num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"]},
    ...     {"num_hidden_layers": 1})
    {'num_hidden_layers': 1, 'layer_types': ['sliding_attention']}
    >>> complete_layer_overrides(
    ...     {"num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"]},
    ...     {"num_hidden_layers": 3})["layer_types"]
    ['sliding_attention', 'full_attention', 'sliding_attention']
    """
    res = dict(overrides)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(d.get(key, None), dict):
            res[key] = complete_layer_overrides(d[key], value)
        elif key in _LAYERS and isinstance(value, int) and isinstance(d.get(key, None), int):
            if value < d[key]:
                for k, v in reduce_layers(d, key, value).items():
                    res.setdefault(k, v)
            elif value > d[key]:
                n = d[key]
                for k, v in d.items():
                    if isinstance(v, list) and len(v) == n and n > 0:
                        res.setdefault(k, [v[i % n] for i in range(value)])
    return res
