"""
Sweep of every causal language model of the installed :epkg:`transformers`: for each
``model_type`` of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``, a small untrained model built from
the defaults of its configuration class (2 layers, hidden size 64, vocabulary 1000, 4
experts, see :func:`small_configs`), then, in one subprocess per architecture with a time
limit, the stages a new user goes through:

* ``build``: the model builds and runs on ``input_ids`` (no library involved),
* ``baseline``: plain :func:`torch.onnx.export` (``dynamo=True``) without the library, on a
  cache made by a first call of the model, checked with onnxruntime on a second call,
* ``inputs``: ``onnx_diagnostic.tasks.random_input_kwargs(config, "text-generation")``
  builds two input sets and their dynamic shapes,
* ``eager``: the model runs on both,
* ``export``: :func:`torch.export.export` inside
  ``torch_export_patches(patch_transformers=True)``, the exported program matches eager on
  the second input set,
* ``custom`` and ``dynamo``: ``to_onnx(exporter="custom")`` and
  ``to_onnx(exporter="onnx-dynamo")``, onnxruntime on the second input set matches eager
  (max absolute difference <= 1e-3).

Every stage is ``ok``, ``FAIL: <first error line>``, ``DIFF: <max abs>``, ``skip`` (an earlier
stage failed) or ``timeout``. The results go to ``<out>/architectures.csv`` (written after
every architecture, ``--merge`` keeps the rows of architectures not run again) and
``<out>/architectures.md`` (stage x count, architecture x result).

::

    python _bench/bench_architectures.py --subset --out /tmp/sweep
    nice -n 10 python _bench/bench_architectures.py --timeout 180 --out /tmp/sweep
    python _bench/bench_architectures.py --archs bloom,mpt --merge --out /tmp/sweep
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import inspect
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from collections.abc import Callable

#: A fast fixed subset covering the main cases (rotary, learned positions, no position_ids,
#: sliding layers, mixture of experts), the one continuous integration runs.
SUBSET = ("llama", "bloom", "gemma2", "qwen2_moe", "deepseek_v3")
#: Stages in the order they run.
STAGES = ("build", "baseline", "inputs", "eager", "export", "custom", "dynamo")
#: What a stage means, the rows of the first table.
STAGE_TITLES = {
    "build": "model builds and runs (no library)",
    "inputs": "the library builds inputs",
    "eager": "eager runs on them",
    "export": "torch.export (exported program = eager)",
    "dynamo": "onnx-dynamo export + match",
    "custom": "**custom export + match**",
    "baseline": "plain `torch.onnx.export` without the library",
}
COLUMNS = ("arch", "model_class", "config", *STAGES, "custom_diff", "dynamo_diff", "seconds")
ATOL = 1e-3


def list_architectures() -> list[str]:
    """
    Returns every ``model_type`` of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``, sorted.

    >>> "llama" in list_architectures()
    True
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _config_dicts(d: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths of the sub-configurations (dictionaries) of a configuration, root included."""
    paths = [()]
    for k, v in d.items():
        if isinstance(v, dict) and any(isinstance(x, (int, float)) for x in v.values()):
            if any(key in v for key in ("hidden_size", "num_hidden_layers", "d_model", "dim")):
                paths.extend((k, *p) for p in _config_dicts(v))
    return paths


def _at(d: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for k in path:
        d = d[k]
    return d


def _nest(path: tuple[str, ...], over: dict[str, Any]) -> dict[str, Any]:
    for k in reversed(path):
        over = {k: over}
    return over


#: Dictionaries keyed by integers which are no per-layer values (labels of a classifier).
_NOT_PER_LAYER = ("id2label", "label2id")
#: Names of the numbers of layers, the first one present is the number of decoder layers.
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
#: The most layers a reduced model keeps to have one layer of every kind.
MOST_LAYERS = 8


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _index_list(key: str, v: Any, n: int) -> bool:
    """A list of layer indices (``hybrid_layer_ids``, ``attn_layer_indices``...)."""
    return (
        "layer" in key
        and isinstance(v, list)
        and 0 < len(v) < n
        and all(_int(i) and 0 <= i < n for i in v)
        and all(a < b for a, b in zip(v, v[1:]))
    )


def _per_layer_sequence(key: str, v: Any, n: int) -> bool:
    """A list of one value per layer, or a pattern string of one character per layer
    (``hybrid_override_pattern``), not a word which happens to have ``n`` letters."""
    if isinstance(v, str):
        return "pattern" in key and len(v) == n > 1
    return isinstance(v, list) and len(v) == n > 1


def _per_layer_values(d: dict[str, Any], n: int) -> dict[str, list[str]]:
    """
    What every layer is, one list of ``n`` values per per-layer attribute: the lists (and
    strings, ``hybrid_override_pattern``) of length ``n``, the lists of layer indices (is the
    layer in it), the dictionaries keyed by layer indices (the entry of the layer).
    """
    from onnx_diagnostic.tasks._reduce import _by_layer_index

    values: dict[str, list[str]] = {}
    for k, v in d.items():
        if k in _NOT_PER_LAYER:
            continue
        if _per_layer_sequence(k, v, n):
            values[k] = [repr(x) for x in v]
        elif _index_list(k, v, n):
            values[k] = [str(i in v) for i in range(n)]
        elif _by_layer_index(v, n):
            # the attributes a layer changes, not their values
            entries = {int(i): e for i, e in v.items()}
            values[k] = [
                repr(sorted(entries[i]) if isinstance(entries.get(i), dict) else entries.get(i))
                for i in range(n)
            ]
    return values


def cover_layers(d: dict[str, Any], n: int, least: int = 2, most: int = MOST_LAYERS) -> list[int]:
    """
    Chooses the layers a reduced model keeps: for every per-layer attribute
    (``layer_types``, ``mlp_layer_types``, a list of layer indices...), one layer of each of
    its values at least (the layer bringing the most missing values first), then the first
    layers up to ``least``, never more than ``most``.

    >>> cover_layers({"layer_types": ["linear"] * 3 + ["full"] + ["linear"] * 4,
    ...               "mlp_layer_types": ["dense"] + ["sparse"] * 7}, 8)
    [0, 3]
    """
    values = _per_layer_values(d, n)
    missing = {(k, v[i]) for k, v in values.items() for i in range(n)}
    kept: list[int] = []
    while missing and len(kept) < most:
        gains = [sum((k, v[i]) in missing for k, v in values.items()) for i in range(n)]
        best = max(range(n), key=lambda i: (gains[i], -i))
        if gains[best] == 0:
            break
        kept.append(best)
        missing -= {(k, v[best]) for k, v in values.items()}
    for i in range(n):
        if len(kept) >= min(least, n):
            break
        if i not in kept:
            kept.append(i)
    return sorted(kept)


def _layers_overrides(d: dict[str, Any], key: str, least: int = 2) -> dict[str, Any]:
    """Overrides keeping the layers :func:`cover_layers` chooses, every per-layer value with
    them (the lists of layer indices and the dictionaries keyed by layer renumbered)."""
    from onnx_diagnostic.tasks._reduce import Replace, _by_layer_index

    n = d[key]
    if not _int(n) or n <= least:
        return {}
    kept = cover_layers(d, n, least)
    rank = {old: new for new, old in enumerate(kept)}
    over: dict[str, Any] = {key: len(kept)}
    for k, v in d.items():
        if k in _NOT_PER_LAYER:
            continue
        if _per_layer_sequence(k, v, n):
            picked = [v[i] for i in kept]
            over[k] = "".join(picked) if isinstance(v, str) else picked
        elif _index_list(k, v, n):
            over[k] = [rank[i] for i in v if i in rank]
        elif _by_layer_index(v, n):
            as_int = isinstance(next(iter(v)), int)
            over[k] = Replace(
                {
                    (rank[int(i)] if as_int else str(rank[int(i)])): copy.deepcopy(e)
                    for i, e in v.items()
                    if int(i) in rank
                }
            )
        elif _int(v) and v == n and k != key and ("layer" in k or "block" in k):
            # another name of the same number (xlstm's num_blocks, gemma4 assistant's
            # num_kv_shared_layers: every layer shares its cache)
            over[k] = len(kept)
    if _int(d.get("num_kv_shared_layers", None)) and 0 < d["num_kv_shared_layers"] < n:
        # the last layers reuse the cache of earlier ones: none left with so few layers
        over["num_kv_shared_layers"] = 0
    return over


def _hidden_sizes(d: dict[str, Any], over: dict[str, Any]) -> dict[int, int]:
    """``{old hidden size: new hidden size}`` of every sub-configuration."""
    from onnx_diagnostic.tasks._reduce import _HIDDEN, first_key

    sizes: dict[int, int] = {}
    for path in _config_dicts(d):
        sub = _at(d, path)
        k = first_key(sub, _HIDDEN)
        try:
            new = _at(over, path).get(k, None) if k else None
        except (KeyError, TypeError):
            new = None
        if k and _int(sub[k]) and _int(new):
            sizes.setdefault(sub[k], new)
    return sizes


#: (number of heads, head dimension) of the state-space (mamba) layers
_MAMBA_HEADS = (
    ("mamba_n_heads", "mamba_d_head"),
    ("n_mamba_heads", "mamba_headdim"),
    ("mamba_num_heads", "mamba_head_dim"),
    ("num_heads", "head_dim"),
)


#: Words of the names of sizes which are no hidden size even when they are equal to one.
_NOT_HIDDEN = ("head", "vocab", "patch", "window", "chunk", "kernel", "batch", "position")
_NOT_HIDDEN += ("intermediate", "group", "sampl", "feature", "hop", "image", "cache")

_MAMBA_KEYS = {k for pair in _MAMBA_HEADS for k in pair}


def _consistent(
    sub: dict[str, Any], over: dict[str, Any], sizes: dict[int, int], vocab: int
) -> dict[str, Any]:
    """
    Completes the overrides of one sub-configuration so that the reduced values stay
    consistent where the default configuration is: values left to None which the model
    needs (head dimension, key-value heads, shared experts, the indexer of an
    ``indexed_attention`` layer, rotary parameters per layer kind), relations which hold
    in the default configuration (state-space heads x head dimension = expand x hidden,
    a head dimension computed from the hidden size, sizes equal to a hidden size),
    vocabularies of the hashed embeddings, one layer of full attention in a hybrid
    configuration whose layers are all linear (transformers cannot run that).
    """
    from onnx_diagnostic.tasks._reduce import _HEADS, _HIDDEN, _SHARED_EXPERTS, first_key

    over = dict(over)
    k_hidden, k_heads = first_key(sub, _HIDDEN), first_key(sub, _HEADS)
    old_hidden = sub[k_hidden] if k_hidden else None
    hidden = over.get(k_hidden, old_hidden) if k_hidden else None
    old_heads = sub[k_heads] if k_heads else None
    heads = over.get(k_heads, old_heads) if k_heads else None
    if not (_int(hidden) and _int(heads) and _int(old_hidden) and _int(old_heads)):
        return over
    # values left to None by the default configuration
    if "head_dim" in sub and sub["head_dim"] is None:
        over["head_dim"] = hidden // heads
    if "num_key_value_heads" in sub and sub["num_key_value_heads"] is None:
        over["num_key_value_heads"] = heads
    if any(_int(over.get(k, None)) for k in ("n_routed_experts", "num_experts")):
        for k in _SHARED_EXPERTS:
            if k in sub and sub[k] is None:
                over[k] = 1
    if _int(sub.get("num_dense_layers", None)) and sub["num_dense_layers"] > 1:
        # a sparse layer among the first ones
        over["num_dense_layers"] = 1
    kinds = over.get("layer_types", sub.get("layer_types", None))
    if isinstance(kinds, list) and "indexed_attention" in kinds:
        head_dim = over.get("head_dim", sub.get("head_dim", None)) or hidden // heads
        indexer = dict(
            indexer_n_heads=heads,
            indexer_kv_heads=1,
            indexer_head_dim=head_dim,
            indexer_budget=8,
            indexer_compress_ratio=4,
        )
        over.update({k: v for k, v in indexer.items() if k in sub and sub[k] is None})
    if isinstance(kinds, list) and sub.get("rope_parameters", None) == {}:
        # rotary parameters per layer kind, none given by the default configuration
        default = {"rope_type": "default", "rope_theta": 10000.0}
        over["rope_parameters"] = {k: dict(default) for k in dict.fromkeys(kinds)}
    if isinstance(kinds, list) and kinds and set(kinds) == {"linear_attention"}:
        # transformers refuses a cache with linear attention layers only
        over["layer_types"] = [*kinds[:-1], "full_attention"]
    elif "attn_layer_indices" in sub and sub["attn_layer_indices"] in (None, []):
        n = over.get("num_hidden_layers", sub.get("num_hidden_layers", 2))
        over["attn_layer_indices"] = [n - 1]
    if _int(sub.get("num_expert_group", None)) and sub["num_expert_group"] > 1:
        over["num_expert_group"] = 1
    for k, v in over.items():
        if (
            isinstance(v, dict)
            and k not in _NOT_PER_LAYER
            and all(isinstance(e, dict) for e in v.values())
        ):
            # per-layer values (per_layer_config): the reduced value of the same attribute
            for e in v.values():
                e.update({a: over[a] for a in e if a in over and not isinstance(over[a], dict)})
    # relations of the default configuration
    rope_nope = (sub.get("qk_rope_head_dim", None), sub.get("qk_nope_head_dim", None))
    per_layer = [e for v in sub.values() if isinstance(v, dict) for e in v.values()]
    nopes = {rope_nope[1]} | {e.get("qk_nope_head_dim") for e in per_layer if isinstance(e, dict)}
    if (
        _int(sub.get("head_dim", None))
        and _int(rope_nope[0])
        and any(_int(x) and x + rope_nope[0] == sub["head_dim"] for x in nopes)
    ):
        # head_dim is the size of a query head, rotary and non rotary parts together
        over["head_dim"] = over["qk_rope_head_dim"] + over["qk_nope_head_dim"]
    for k_n, k_d in _MAMBA_HEADS:
        n_heads, d_head = sub.get(k_n, None), sub.get(k_d, None)
        expand = sub.get("mamba_expand", sub.get("expand", None))
        if (
            _int(n_heads)
            and _int(d_head)
            and _int(expand)
            and n_heads * d_head == expand * old_hidden
        ):
            over[k_n] = min(n_heads, 8)
            over[k_d] = expand * hidden // over[k_n]
    if _int(sub.get("mamba_dt_rank", None)) and sub["mamba_dt_rank"] == -(-old_hidden // 16):
        over["mamba_dt_rank"] = -(-hidden // 16)
    for k, v in sub.items():
        if (
            k not in over
            and isinstance(v, (list, tuple))
            and len(v) > 1
            and all(_int(x) for x in v)
            and sum(v) == old_hidden
        ):
            # sizes adding up to the hidden size (reformer's axial position embeddings)
            scaled = [max(1, x * hidden // old_hidden) for x in v]
            scaled[-1] = hidden - sum(scaled[:-1])
            over[k] = scaled
    for k, v in sub.items():
        if k in over or not _int(v) or v <= 1:
            continue
        if "vocab" in k and v > min(vocab, 1000):
            # hashed embeddings (blt), small even when the vocabulary is kept
            over[k] = min(vocab, 1000)

        elif k.endswith("head_dim") and v * old_heads in (old_hidden, 2 * old_hidden):
            # zamba: the attention runs on the concatenation of two hidden states
            over[k] = v * old_heads // old_hidden * hidden // heads
        elif "hidden_size" in k and v == 2 * old_hidden:
            # zamba2: the attention runs on the concatenation of two hidden states
            over[k] = 2 * hidden
        elif k.endswith(("_num_heads", "_n_heads")) and v > heads and k not in _MAMBA_KEYS:
            # the heads of another kind of layer (linear attention, indexer)
            over[k] = heads
        elif k.endswith("_head_dim") and v > hidden // heads and k not in _MAMBA_KEYS:
            over[k] = hidden // heads
        elif (
            ("dim" in k or k.endswith("_size"))
            and v in sizes
            and not any(w in k for w in _NOT_HIDDEN)
        ):
            # another name of a hidden size (xlstm's embedding_dim, adapters of dots3)
            over[k] = sizes[v]
    return over


def small_overrides(d: dict[str, Any], vocab: int = 1000) -> dict[str, Any]:
    """
    Overrides making a configuration (as a dictionary) small: every sub-configuration
    (text, vision, audio...) gets hidden size 64, 4 heads, feed-forward 128, at most 4
    experts, 2 layers or the few more needed to keep one layer of every kind
    (:func:`cover_layers`), and the vocabularies larger than ``vocab`` become ``vocab``
    (the token ids are moved inside), see :mod:`onnx_diagnostic.tasks._reduce`, then
    :func:`_consistent` keeps the values consistent.

    >>> small_overrides({"vocab_size": 32000, "hidden_size": 4096, "num_attention_heads": 32,
    ...                  "num_hidden_layers": 32, "num_local_experts": 8})["num_local_experts"]
    4
    >>> over = small_overrides({"hidden_size": 2048, "num_attention_heads": 16,
    ...     "num_hidden_layers": 6, "mamba_n_heads": 64, "mamba_d_head": 64, "mamba_expand": 2,
    ...     "layer_types": ["linear_attention"] * 5 + ["full_attention"]})
    >>> over["layer_types"], over["mamba_n_heads"], over["mamba_d_head"]
    (['linear_attention', 'full_attention'], 8, 16)
    """
    from onnx_diagnostic.tasks._reduce import (
        merge_overrides,
        reduce_experts,
        reduce_sizes,
        reduce_vocabulary,
    )

    over: dict[str, Any] = {}
    for path in _config_dicts(d):
        sub = _at(d, path)
        sizes = reduce_sizes(sub)
        key = next((k for k in _LAYER_KEYS if _int(sub.get(k, None))), None)
        if key is not None:
            # the layers of every kind, not the 2 first ones
            for k in (*_NOT_PER_LAYER, "num_kv_shared_layers"):
                sizes.pop(k, None)
            sizes.update(_layers_overrides(sub, key))
        over = merge_overrides(over, _nest(path, {**sizes, **reduce_experts(sub)}))
        if sub.get("use_mamba_kernels", None):
            # the CUDA kernels of mamba (jamba of transformers 4.x raises on CPU without them)
            over = merge_overrides(over, _nest(path, {"use_mamba_kernels": False}))
        for key in ("mamba_chunk_size", "chunk_size"):
            value = sub.get(key, None)
            if _int(value) and value > 16:
                # the chunked scan of mamba2 layers builds (chunk x chunk) blocks per head: the
                # default 256 made falcon_h1 of transformers 4.x allocate 25 GB for 31 tokens
                over = merge_overrides(over, _nest(path, {key: 16}))
        if _int(sub.get("vocab_size", None)):
            over = merge_overrides(
                over,
                reduce_vocabulary(d, (*path, "vocab_size"), max_vocab=vocab, reduced_vocab=vocab),
            )
    hidden = _hidden_sizes(d, over)
    for path in _config_dicts(d):
        sub = _at(d, path)
        try:
            mine = _at(over, path)
        except KeyError:
            continue
        full = _consistent(sub, {k: v for k, v in mine.items()}, hidden, vocab)
        over = merge_overrides(over, _nest(path, full))
    return over


#: Fixes a generic rule cannot guess, applied to every candidate configuration (``init``:
#: arguments of the configuration class when its defaults do not even validate).
PER_ARCHITECTURE: dict[str, dict[str, Any]] = {
    # the model raises an error unless it is declared a decoder
    "reformer": {"is_decoder": True},
    # the adapters are chosen by a language the configuration leaves to None
    "xmod": {"default_language": "en_XX"},
    # the modeling reads attn_config.rope_theta, the attention sub-configuration has none,
    # and clamps the projections with clip_qkv, None by default
    "dbrx": {"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    # the shared transformer block is tied between the hybrid layers: two of them at least
    "zamba": {
        "num_hidden_layers": 4,
        "layers_block_type": ["linear_attention", "hybrid"] * 2,
    },
    # input_ids holds batch x num_codebooks rows: one codebook, any batch size is valid
    "musicgen": {"decoder": {"num_codebooks": 1}},
    "musicgen_melody": {"decoder": {"num_codebooks": 1}},
    # the cache rounds the query/key dimension (hidden x qk_dim_factor) up to a multiple of
    # 64, the layers do not: both agree when the hidden size is a multiple of 128
    "xlstm": {"hidden_size": 128, "embedding_dim": 128},
    # the layer kinds default to None and lfm2_moe (unlike lfm2) does not compute them
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    # num_hidden_layers counts the slots of the recurrence (layers per stack x H_cycles x
    # (L_cycles + 1)), the model holds num_layers_per_stack layers
    "hrm_text": {"num_layers_per_stack": 1, "num_hidden_layers": 8},
    # to_dict interleaves an "mlp" block after every layer and doubles every count, the
    # input, recurrent and output layers must add up to the number of layers
    "dory": {
        "num_hidden_layers": 6,
        "n_input_layers": 2,
        "n_recurrent_layers": 2,
        "n_output_layers": 2,
        "layer_types": ["sliding_attention", "mlp", "full_attention", "mlp"] * 1
        + ["sliding_attention", "mlp"],
    },
    # a draft model: its default text configuration does not validate (every layer shares
    # the cache of the main model, no per-layer inputs)
    "gemma4_assistant": {
        "init": {
            "text_config": {
                "hidden_size_per_layer_input": 0,
                "vocab_size_per_layer_input": 0,
                "enable_moe_block": False,
                "use_double_wide_mlp": False,
            }
        }
    },
}


def _causal_config(config: Any, model_type: str) -> Any:
    """The sub-configuration the causal language model expects when it is not the whole
    configuration (``Qwen3_5ForCausalLM`` takes the text configuration of ``Qwen3_5Config``,
    ``MusicgenForCausalLM`` its decoder)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, ""), None)
    expected = getattr(model_cls, "config_class", None)
    if not isinstance(expected, type) or isinstance(config, expected):
        return config
    for name in getattr(config, "sub_configs", None) or {}:
        sub = getattr(config, name, None)
        if isinstance(sub, expected):
            return sub
    return config


def randomize_zero_routers(model: Any, std: float = 0.02) -> list[str]:
    """
    Draws random values for the weights of routers initialized at zero (afmoe,
    longcat_flash): an untrained router then gives every expert the same score, the choice
    among equal scores is left to the implementation of top-k, and torch and onnxruntime
    pick different experts, a difference a trained model never shows. Returns the names
    of the weights changed.

    >>> import torch
    >>> m = torch.nn.Module()
    >>> m.router = torch.nn.Linear(4, 2, bias=False)
    >>> _ = torch.nn.init.zeros_(m.router.weight)
    >>> randomize_zero_routers(m)
    ['router.weight']
    """
    import torch

    changed = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "router" not in name or param.dim() != 2 or param.numel() == 0:
                continue
            if bool((param == 0).all()):
                param.normal_(0.0, std)
                changed.append(name)
    return changed


def small_configs(model_type: str) -> list[tuple[str, Any]]:
    """
    Returns the candidate small configurations of ``model_type``, built from the defaults
    of its configuration class and :func:`small_overrides`, the best first: ``small``
    (``from_dict`` of the reduced dictionary, every derived attribute computed again),
    ``small-set`` (the same values set on the default configuration, for the classes which
    do not survive ``to_dict`` / ``from_dict``), ``small-no-vocab`` (vocabulary kept),
    ``layers-only`` (only the number of layers reduced). A candidate whose class
    refuses the values is replaced by its error (a string). The fixes of
    :data:`PER_ARCHITECTURE` are applied to every candidate. When the causal language
    model takes a sub-configuration (the text configuration of a multimodal model), the
    candidate is that sub-configuration.

    >>> how, config = small_configs("llama")[0]
    >>> config.hidden_size, config.num_hidden_layers, config.vocab_size, how
    (64, 2, 1000, 'small')
    >>> how, config = small_configs("qwen3_5")[0]
    >>> type(config).__name__, config.layer_types
    ('Qwen3_5TextConfig', ['linear_attention', 'full_attention'])
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from onnx_diagnostic.helpers.config_helper import update_config
    from onnx_diagnostic.tasks._reduce import merge_overrides

    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"model_type={model_type!r} is unknown to the installed transformers")
    cls = CONFIG_MAPPING[model_type]
    fix = dict(PER_ARCHITECTURE.get(model_type, {}))
    init = fix.pop("init", {})
    d = cls(**copy.deepcopy(init)).to_dict()
    small = merge_overrides(small_overrides(d), fix)
    layers: dict[str, Any] = {}
    for path in _config_dicts(d):
        sub = _at(d, path)
        key = next((k for k in _LAYER_KEYS if _int(sub.get(k, None))), None)
        if key is not None:
            layers = merge_overrides(layers, _nest(path, _layers_overrides(sub, key)))
    layers = merge_overrides(layers, fix)

    def _set(over: dict[str, Any]) -> Any:
        config = cls(**copy.deepcopy(init))
        update_config(config, over)
        return config

    candidates: list[tuple[str, Any]] = []
    for how, over, make in (
        ("small", small, lambda o: cls.from_dict(merge_overrides(d, o))),
        ("small-set", small, _set),
        (
            "small-no-vocab",
            merge_overrides(small_overrides(d, 10**9), fix),
            lambda o: cls.from_dict(merge_overrides(d, o)),
        ),
        ("layers-only", layers, lambda o: cls.from_dict(merge_overrides(d, o))),
    ):
        try:
            config = make(over)
        except Exception as e:
            candidates.append((how, f"{type(e).__name__}: {_first_line(e)}"))
            continue
        config = _keep_layer_kinds(cls, d, over, config, init)
        candidates.append((how, _causal_config(config, model_type)))
    return candidates


def _layer_kinds(config: Any) -> list[str] | None:
    """The kind of every decoder layer when the configuration computes it."""
    try:
        cfg = config.get_text_config(decoder=True)
    except Exception:
        cfg = config
    for name in ("layer_types", "layers_block_type", "block_types", "hybrid_override_pattern"):
        try:
            kinds = getattr(cfg, name, None)
        except Exception:
            continue
        if isinstance(kinds, (list, tuple, str)) and len(kinds) > 0:
            return [str(k) for k in kinds]
    return None


def _keep_layer_kinds(
    cls: type, d: dict, over: dict, config: Any, init: dict | None = None, most: int = MOST_LAYERS
) -> Any:
    """
    With 2 layers, a hybrid model whose layer kinds are computed from a pattern (an
    attention layer every 8 layers...) may lose a kind: takes the smallest number of
    layers, up to ``most``, which keeps every kind of the default configuration.
    """
    from onnx_diagnostic.tasks._reduce import merge_overrides

    default = _layer_kinds(cls(**copy.deepcopy(init or {})))
    small = _layer_kinds(config)
    if not default or not small or set(default) <= set(small):
        return config
    wanted = set(default)
    n = next((i for i in range(2, most + 1) if set(default[:i]) == wanted), None)
    key = next((k for k in _LAYER_KEYS if k in d), None)
    if n is None or key is None:
        return config
    try:
        return cls.from_dict(merge_overrides(d, {**over, key: n}))
    except Exception:
        return config


#: A candidate configuration whose main weights exceed this number is not built.
MAX_PARAMETERS = 5 * 10**7


def _too_large(config: Any) -> bool:
    """
    Tells if the text model of a configuration has more than :data:`MAX_PARAMETERS`
    weights, a rough count: embeddings, attention and feed-forward of every layer, True
    when the configuration does not tell its hidden size and number of layers.

    >>> import transformers
    >>> _too_large(transformers.LlamaConfig()), _too_large(small_configs("llama")[0][1])
    (True, False)
    """
    try:
        cfg = config.get_text_config(decoder=True)
    except Exception:
        cfg = config
    hidden = getattr(cfg, "hidden_size", None)
    layers = getattr(cfg, "num_hidden_layers", None)
    if not (_int(hidden) and _int(layers)):
        # no way to tell (blt has no number of layers at its top level)
        return True
    vocab = getattr(cfg, "vocab_size", None)
    inter = getattr(cfg, "intermediate_size", None)
    per_layer = 4 * hidden * hidden + 3 * hidden * (inter if _int(inter) else 4 * hidden)
    size = layers * per_layer + 2 * hidden * (vocab if _int(vocab) else 0)
    return size > MAX_PARAMETERS


def _first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    line = text.splitlines()[0] if text else ""
    return " ".join(line.split())[:240]


def _error(e: BaseException) -> str:
    """``FAIL: <type>: <first line>``, the deepest cause when the error wraps another one
    (``torch.onnx.export`` wraps the error of ``torch.export``), unless the error comes
    from this library (its message already tells the cause)."""
    names = [type(e).__name__]
    # the errors of this library already tell their cause
    while (
        e.__cause__ is not None
        and len(names) < 5
        and not type(e).__module__.startswith("onnx_diagnostic")
    ):
        e = e.__cause__
        names.append(type(e).__name__)
    return f"FAIL: {' <- '.join(names)}: {_first_line(e)}"


def _diff_status(diff: dict[str, Any]) -> tuple[str, float]:
    value = float(diff.get("abs", float("nan")))
    if "error" in diff:
        return f"FAIL: outputs differ in structure: {diff['error']}"[:260], value
    if not value <= ATOL:
        return f"DIFF: {value:.3g}", value
    return "ok", value


class _Worker:
    """Runs the stages of one architecture, writes the record after each of them."""

    def __init__(self, arch: str, result_file: str, stages: tuple[str, ...]):
        self.arch = arch
        self.result_file = result_file
        self.stages = stages
        self.record: dict[str, Any] = {k: "skip" for k in STAGES}
        self.record.update(arch=arch, model_class="", config="", custom_diff="", dynamo_diff="")
        self.begin = time.perf_counter()

    def save(self) -> None:
        self.record["seconds"] = f"{time.perf_counter() - self.begin:.1f}"
        with open(self.result_file, "w") as f:
            json.dump(self.record, f)

    def start(self, stage: str) -> None:
        # a timeout kills the process: the stage it was in tells where
        self.record[stage] = "timeout"
        self.save()

    def run(self) -> None:
        import torch
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        torch.manual_seed(0)
        self.start("build")
        self.record["model_class"] = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[self.arch]
        errors = []
        try:
            candidates = small_configs(self.arch)
        except BaseException as e:
            candidates = []
            errors.append(_error(e))
        for how, config in candidates:
            if isinstance(config, str):
                errors.append(f"FAIL: {config}")
                continue
            if how == "layers-only" and _too_large(config):
                # the default sizes may take minutes, or all the memory
                errors.append(f"FAIL: candidate {how!r} too large (> {MAX_PARAMETERS} weights)")
                continue
            try:
                cls = getattr(transformers, self.record["model_class"])
                torch.manual_seed(0)
                model = cls(config).eval()
                randomize_zero_routers(model)
                vocab = int(config.get_text_config(decoder=True).vocab_size)
                with torch.no_grad():
                    model(input_ids=torch.randint(0, vocab, (2, 5)))
            except BaseException as e:
                errors.append(_error(e))
                continue
            self.record["config"] = how
            self.record["build"] = "ok"
            break
        else:
            self.record["build"] = errors[0] if errors else "FAIL: no configuration"
            self.save()
            return
        self.save()
        if "baseline" in self.stages:
            # before anything of the library which registers the caches is imported
            self.start("baseline")
            self.record["baseline"] = _baseline(model, vocab)
            self.save()
        self._library(model, config)

    def _library(self, model: Any, config: Any) -> None:
        import torch

        from onnx_diagnostic.helpers import max_diff
        from onnx_diagnostic.helpers.torch_helper import torch_deepcopy
        from onnx_diagnostic.tasks import random_input_kwargs

        self.start("inputs")
        try:
            kwargs, fct = random_input_kwargs(config, "text-generation")
            data = fct(model, config, add_second_input=True, **kwargs)
            self.record["inputs"] = "ok"
        except BaseException as e:
            self.record["inputs"] = _error(e)
            self.save()
            return
        self.start("eager")
        try:
            with torch.no_grad():
                model(**torch_deepcopy(data["inputs"]))
                expected = model(**torch_deepcopy(data["inputs2"]))
            self.record["eager"] = "ok"
        except BaseException as e:
            self.record["eager"] = _error(e)
            self.save()
            return
        self.start("export")
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str

        try:
            with torch_export_patches(patch_transformers=True):
                ep = torch.export.export(
                    model,
                    (),
                    kwargs=torch_deepcopy(data["inputs"]),
                    dynamic_shapes=use_dyn_not_str(data["dynamic_shapes"]),
                    strict=False,
                )
                got = ep.module()(**torch_deepcopy(data["inputs2"]))
            self.record["export"] = _diff_status(max_diff(expected, got))[0]
        except BaseException as e:
            self.record["export"] = _error(e)
            self.save()
            return
        self.save()
        for stage, exporter in (("custom", "custom"), ("dynamo", "onnx-dynamo")):
            if stage in self.stages:
                self.start(stage)
                self.record[stage], diff = _to_onnx(model, data, expected, exporter)
                self.record[f"{stage}_diff"] = "" if diff is None else f"{diff:.3g}"
                self.save()


def _baseline(model: Any, vocab: int) -> str:
    """Plain torch.onnx.export of a call with a cache, no help from the library."""
    import torch

    from onnx_diagnostic.helpers import max_diff

    def _call_inputs(batch: int, past: int, seq: int) -> dict[str, Any]:
        ids = torch.randint(0, vocab, (batch, past))
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True)
        cache = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
        res = dict(
            input_ids=torch.randint(0, vocab, (batch, seq)),
            attention_mask=torch.ones((batch, past + seq), dtype=torch.int64),
        )
        if cache is not None:
            res[name] = cache
        return res

    params = inspect.signature(model.forward).parameters
    name = "cache" if "cache" in params else "past_key_values"

    try:
        inputs, inputs2 = _call_inputs(2, 30, 3), _call_inputs(3, 31, 4)
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq_length")
        past = torch.export.Dim("cache_length")
        ds: dict[str, Any] = dict(input_ids={0: batch, 1: seq}, attention_mask={0: batch})
        if name in inputs:
            # what one would write: the cache as the list of its tensors, key then value
            ds[name] = [{0: batch, 2: past}] * (2 * len(inputs[name]))
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                model, (), kwargs=copy.deepcopy(inputs), dynamic_shapes=ds, dynamo=True
            )
        with torch.no_grad():
            expected = model(**copy.deepcopy(inputs2))
        got = program(**copy.deepcopy(inputs2))
        return _diff_status(max_diff(expected, got))[0]
    except BaseException as e:
        return _error(e)


def _to_onnx(
    model: Any, data: dict[str, Any], expected: Any, exporter: str
) -> tuple[str, float | None]:
    from onnx_diagnostic.export.api import onnx_feeds, quiet_third_party_noise, to_onnx
    from onnx_diagnostic.helpers import max_diff
    from onnx_diagnostic.helpers.rt_helper import make_session, run_session
    from onnx_diagnostic.helpers.torch_helper import torch_deepcopy
    from onnx_diagnostic.torch_export_patches import torch_export_patches

    try:
        with torch_export_patches(patch_transformers=True), quiet_third_party_noise():
            onx = to_onnx(
                model,
                (),
                kwargs=torch_deepcopy(data["inputs"]),
                dynamic_shapes=data["dynamic_shapes"],
                exporter=exporter,
            )
        session = make_session(onx)
        got = run_session(session, onnx_feeds(model, kwargs=torch_deepcopy(data["inputs2"])))
        return _diff_status(max_diff(expected, got))
    except BaseException as e:
        return _error(e), None


def run_architecture(
    arch: str, timeout: float, stages: tuple[str, ...] = STAGES, python: str | None = None
) -> dict[str, Any]:
    """
    Runs the stages of one architecture in a subprocess killed after ``timeout`` seconds,
    returns its record (one value per column of :data:`COLUMNS`).
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        cmd = [python or sys.executable, os.path.abspath(__file__), "--worker", arch]
        cmd += ["--result", result, "--stages", ",".join(stages)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        begin = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            tail = [f"timeout after {timeout}s"]
        record = {k: "skip" for k in STAGES}
        record.update(arch=arch, model_class="", config="", custom_diff="", dynamo_diff="")
        if os.path.exists(result):
            with open(result) as f:
                record.update(json.load(f))
        else:
            record["build"] = f"FAIL: the process died: {tail[0][:200] if tail else '?'}"
        record["seconds"] = f"{time.perf_counter() - begin:.1f}"
        return record


def read_csv(filename: str) -> dict[str, dict[str, Any]]:
    """Reads the records of a previous run, ``{arch: record}``."""
    if not os.path.exists(filename):
        return {}
    with open(filename, newline="") as f:
        return {row["arch"]: row for row in csv.DictReader(f)}


def write_csv(records: dict[str, dict[str, Any]], filename: str) -> None:
    """Writes the records, sorted by architecture."""
    with open(filename, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for arch in sorted(records):
            writer.writerow(records[arch])


def _short(value: str) -> str:
    if value == "ok":
        return "ok"
    if value.startswith("DIFF"):
        return value
    if value.startswith("FAIL"):
        return "FAIL"
    return value


def first_error(record: dict[str, Any]) -> str:
    """The first failing stage of the library's route and its error line."""
    for stage in ("build", "inputs", "eager", "export", "custom", "dynamo"):
        value = record.get(stage, "skip")
        if value not in ("ok", "skip"):
            return f"{stage}: {value.replace('|', '/')}"
    return ""


def markdown(records: dict[str, dict[str, Any]], versions: str = "") -> str:
    """
    Two markdown tables: the number of architectures passing every stage, then one row
    per architecture.

    >>> print(markdown({"a": dict(arch="a", build="ok", baseline="FAIL: x", inputs="ok",
    ...     eager="ok", export="ok", custom="ok", dynamo="ok")}).splitlines()[2])
    | model builds and runs (no library) | 1 |
    """
    lines = ["| stage | ok |", "|---|---|"]
    for stage in ("build", "inputs", "eager", "export", "dynamo", "custom", "baseline"):
        n = sum(1 for r in records.values() if r.get(stage, "") == "ok")
        lines.append(f"| {STAGE_TITLES[stage]} | {n} |")
    lines.append(f"| architectures | {len(records)} |")
    if versions:
        lines.extend(["", versions])
    lines.extend(
        [
            "",
            "| architecture | build | inputs | eager | torch.export | custom | onnx-dynamo "
            "| baseline | first error |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    )
    for arch in sorted(records):
        r = records[arch]
        cells = [_short(r.get(s, "skip")) for s in STAGES if s != "baseline"]
        cells.append(_short(r.get("baseline", "skip")))
        lines.append(f"| {arch} | {' | '.join(cells)} | {first_error(r)[:160]} |")
    return "\n".join(lines) + "\n"


def _rst_cell(text: str) -> str:
    return text.replace("`", "'").replace("*", "").replace("|", "/").replace("\\", "/") or "-"


def rst(records: dict[str, dict[str, Any]]) -> str:
    """
    The two tables of :func:`markdown` as reStructuredText list tables.

    >>> print(rst({"a": dict(arch="a", build="ok")}).splitlines()[0])
    .. list-table:: Architectures passing every stage
    """
    lines = [
        ".. list-table:: Architectures passing every stage",
        "    :header-rows: 1",
        "",
        "    * - stage",
        "      - ok",
    ]
    for stage in ("build", "inputs", "eager", "export", "dynamo", "custom", "baseline"):
        n = sum(1 for r in records.values() if r.get(stage, "") == "ok")
        lines.extend([f"    * - {_rst_cell(STAGE_TITLES[stage])}", f"      - {n}"])
    lines.extend(["    * - architectures measured", f"      - {len(records)}", ""])
    titles = ["architecture", "build", "inputs", "eager", "torch.export", "custom"]
    titles += ["onnx-dynamo", "baseline", "first error"]
    lines.extend(
        [
            ".. list-table:: Result of every architecture",
            "    :header-rows: 1",
            "    :widths: 10 4 4 4 4 4 4 4 40",
            "",
        ]
    )
    lines.append(f"    * - {titles[0]}")
    lines.extend(f"      - {t}" for t in titles[1:])
    for arch in sorted(records):
        r = records[arch]
        cells = [_short(r.get(s, "skip")) for s in STAGES if s != "baseline"]
        cells.append(_short(r.get("baseline", "skip")))
        cells.append(first_error(r)[:200])
        lines.append(f"    * - {_rst_cell(arch)}")
        lines.extend(f"      - {_rst_cell(c)}" for c in cells)
    return "\n".join(lines) + "\n"


#: markers of the part of a documentation page :func:`update_page` replaces
BEGIN, END = ".. sweep-begin", ".. sweep-end"


def update_page(page: str, records: dict[str, dict[str, Any]], versions: str) -> None:
    """
    Replaces the text between the lines ``.. sweep-begin`` and ``.. sweep-end`` of a
    reStructuredText page with the versions and the tables of :func:`rst`.

    :raises ValueError: if the page has not both markers, in this order
    """
    with open(page) as f:
        text = f.read()
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise ValueError(f"update_page: {page!r} must hold the lines {BEGIN!r} then {END!r}")
    body = f"{BEGIN}\n\nMeasured on {versions}.\n\n{rst(records)}\n"
    with open(page, "w") as f:
        f.write(text[:begin] + body + text[end:])


def versions_line() -> str:
    """The versions the sweep runs on."""
    import onnxruntime
    import torch
    import transformers

    return (
        f"transformers {transformers.__version__}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def add_sweep_arguments(parser: Any, out: str, timeout: float, begin: str, end: str) -> None:
    """The options every sweep shares (``bench_architectures``, ``bench_tasks``)."""
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per architecture")
    parser.add_argument("--jobs", type=int, default=1, help="architectures run in parallel")
    parser.add_argument("--out", default=out, help="output folder")
    parser.add_argument("--merge", action="store_true", help="keeps the rows of a previous run")
    parser.add_argument("--stages", default=",".join(STAGES), help="stages to run")
    parser.add_argument(
        "--doc", default="", help=f"a page whose part between {begin!r} and {end!r} gets the tables"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="runs nothing, rewrites the tables (--merge)"
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)


def parse_stages(parser: Any, text: str) -> tuple[str, ...]:
    """The stages of ``--stages``, an error of the parser for an unknown one."""
    stages = tuple(s for s in text.split(",") if s)
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"--stages: unknown stages {sorted(unknown)}, expected {STAGES}")
    return stages


def quiet_worker() -> None:
    """A worker prints its result only: warnings and logs of transformers are silenced."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)


def run_sweep(
    items: list[Any],
    run: Callable[[Any], dict[str, Any]],
    records: dict[Any, dict[str, Any]],
    csv_file: str,
    write: Callable[[dict[Any, dict[str, Any]], str], None],
    label: Callable[[Any], str],
    jobs: int,
) -> None:
    """
    Runs ``run(item)`` for every item, ``jobs`` at a time, stores every record in
    ``records`` (key: the item) and writes the CSV after each one, so that an interrupted
    sweep keeps what it measured; prints one line per item.
    """
    lock = threading.Lock()

    def _one(item: Any) -> None:
        record = run(item)
        with lock:
            records[item] = record
            write(records, csv_file)
        print(f"{label(item)}: {first_error(record) or 'ok'} ({record['seconds']}s)", flush=True)

    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        list(pool.map(_one, items))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", action="store_true", help=f"only {', '.join(SUBSET)}")
    parser.add_argument("--archs", default="", help="comma separated model types")
    add_sweep_arguments(parser, "bench_architectures", 180, BEGIN, END)
    args = parser.parse_args(argv)
    stages = parse_stages(parser, args.stages)
    if args.worker:
        quiet_worker()
        _Worker(args.worker, args.result, stages).run()
        return 0
    known = list_architectures()
    if args.archs:
        archs = [a.strip() for a in args.archs.split(",") if a.strip()]
        bad = [a for a in archs if a not in known]
        if bad:
            parser.error(f"--archs: {bad} are not causal language models of this transformers")
    else:
        archs = list(SUBSET) if args.subset else known
    os.makedirs(args.out, exist_ok=True)
    csv_file = os.path.join(args.out, "architectures.csv")
    records = read_csv(csv_file) if args.merge else {}
    versions = versions_line()
    if not args.report_only:
        run_sweep(
            archs,
            lambda arch: run_architecture(arch, args.timeout, stages),
            records,
            csv_file,
            write_csv,
            str,
            args.jobs,
        )
    with open(os.path.join(args.out, "architectures.md"), "w") as f:
        f.write(markdown(records, versions))
    with open(os.path.join(args.out, "architectures.rst"), "w") as f:
        f.write(rst(records))
    if args.doc:
        update_page(args.doc, records, versions)
    print(markdown(records, versions).split("\n\n")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
