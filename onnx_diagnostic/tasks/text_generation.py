"""
Task ``text-generation``: a decoder-only language model called with a cache
(``LlamaForCausalLM``, ``Phi3ForCausalLM``, ``GPT2LMHeadModel``...).

Inputs: ``input_ids``, ``attention_mask`` (covering the cache and the new tokens),
``position_ids`` and the cache, each only if the model's ``forward`` declares it (bloom, mpt,
bart... take no ``position_ids``, openai-gpt, xlm... no cache). The cache is named as the
model's ``forward`` declares it (``cache`` from transformers 5.24, ``past_key_values``
before, see :func:`onnx_diagnostic.helpers.compat.cache_arg_name`).

Without a model, the cache is a ``DynamicCache`` built from the configuration, with sliding
layers where ``config.layer_types`` says so. With a model, the model runs once on a short
prompt (:func:`onnx_diagnostic.tasks._cache_probe.probe_cache`): when the cache it creates
differs from that one (latent attention keeping a compressed vector, layers with different
numbers of heads, linear attention or mamba states of hybrid models...), the inputs hold
the cache the model made, of the class and layers it chose.

>>> import transformers
>>> from onnx_diagnostic.tasks.text_generation import random_input_kwargs
>>> config = transformers.LlamaConfig(
...     hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...     num_attention_heads=2, num_key_value_heads=1, vocab_size=100)
>>> kwargs, fct = random_input_kwargs(config)
>>> res = fct(None, config, **kwargs)
>>> from onnx_diagnostic.helpers.compat import cache_arg_name
>>> sorted(res["inputs"]) == sorted(
...     ['attention_mask', 'input_ids', 'position_ids', cache_arg_name()])
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import _common
from ..helpers.compat import (
    CACHE_ARG_NAMES,
    OTHER_CACHE_ARG_NAMES,
    cache_alias_dict,
    cache_arg_name,
)
from ..helpers.torch_helper import torch_deepcopy
from ..torch_export_patches._legacy_caches import is_legacy_cache
from ._cache_probe import (
    causal_lm_class,
    forward_arguments,
    has_recurrent_states,
    probe_cache,
    probe_dynamic_shapes,
    same_tensors_shapes,
)
from ._common import (
    BATCH,
    CACHE,
    CACHE_SEQ,
    SEQ,
    TaskInputError,
    cache_shapes,
    cfg_get,
    check_int,
    float_dtype,
    random_ids,
    random_kv_pairs,
    text_config,
)
from ._reduce import reduce_decoder_config

logger = logging.getLogger(__name__)

__TASK__ = "text-generation"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModelForCausalLM"


def reduce_model_config(config: Any) -> dict[str, Any]:
    """
    Returns the attributes to change in ``config`` to get a small model of the same
    architecture (2 layers, hidden size 64, 4 heads...), see
    :func:`onnx_diagnostic.tasks._reduce.reduce_decoder_config`.
    """
    return reduce_decoder_config(config)


def _optional(fct: Callable, cfg: Any) -> Any:
    """``fct(cfg)``, None when the configuration does not tell (a model without attention)."""
    try:
        return fct(cfg)
    except Exception:  # transformers raises its own errors for per-layer attributes
        return None


def random_input_kwargs(config: Any) -> tuple[dict[str, Any], Callable]:
    """
    Returns the default arguments of :func:`get_inputs` for this configuration
    and :func:`get_inputs` itself. The sizes of the cache the configuration does not give
    (a state space model has no attention heads) are None: :func:`get_inputs` reads the
    cache the model makes.
    """
    cfg = text_config(config)
    num_layers = int(cfg_get(cfg, "num_hidden_layers", "n_layer", "num_layers"))
    kwargs = dict(
        batch_size=2,
        sequence_length=3,
        past_length=30,
        dummy_max_token_id=int(cfg_get(cfg, "vocab_size")) - 1,
        num_hidden_layers=num_layers,
        num_key_value_heads=_optional(_common.num_key_value_heads, cfg),
        head_dim=_optional(_common.head_dim, cfg),
        layer_types=_common.layer_types(cfg, num_layers),
        sliding_window=getattr(cfg, "sliding_window", None),
    )
    return kwargs, get_inputs


#: Layer types of ``config.layer_types`` a cache built from the configuration supports.
_WINDOW_TYPES = ("sliding_attention", "chunked_attention")
_CONFIG_TYPES = ("full_attention", *_WINDOW_TYPES)


def _sliding_layers(layer_types: Sequence[str] | None) -> list[bool]:
    """Which layers are sliding (or chunked) attention layers."""
    return [t in _WINDOW_TYPES for t in (layer_types or [])]


def _check_config_layer_types(layer_types: Sequence[str] | None) -> None:
    """A cache built from the configuration has full and sliding layers only."""
    for i, kind in enumerate(layer_types or []):
        if kind not in _CONFIG_TYPES:
            try:
                from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING

                cls = DYNAMIC_LAYER_TYPE_MAPPING.get(kind, None)
            except ImportError:  # pragma: no cover
                cls = None
            cls_name = "no layer class" if cls is None else f"layer class {cls.__name__}"
            raise TaskInputError(
                f"layer_types[{i}]={kind!r} ({cls_name} in transformers.cache_utils): a cache "
                f"built from the configuration only has layers of types {list(_CONFIG_TYPES)}, "
                "give the model to get_inputs (model=...) to use the cache it creates"
            )


def _config_cache(
    batch_size: int,
    past_length: int,
    num_hidden_layers: int,
    num_key_value_heads: int,
    head_dim: int,
    layer_types: Sequence[str] | None,
    sliding_window: int | None,
    dtype: torch.dtype,
) -> Any:
    """A random DynamicCache built from the configuration."""
    from ..cache_helpers import make_dynamic_cache

    pairs = random_kv_pairs(
        num_hidden_layers, batch_size, num_key_value_heads, past_length, head_dim, dtype
    )
    sliding = _sliding_layers(layer_types)
    if any(sliding) and not all(sliding):
        # A sliding layer holds at most sliding_window - 1 positions, a full one all of them:
        # the inputs are a state generate reaches, the two lengths get two dimensions
        held = max(min(past_length, int(sliding_window or 1) - 1), 0)
        pairs = [
            (k[:, :, past_length - held :], v[:, :, past_length - held :]) if s else (k, v)
            for (k, v), s in zip(pairs, sliding)
        ]
    return make_dynamic_cache(pairs, layer_types=layer_types, sliding_window=sliding_window)


def _make_inputs(
    batch_size: int,
    sequence_length: int,
    past_length: int,
    dummy_max_token_id: int,
    arguments: set[str] | None,
    cache_name: str | None,
    cache: Any,
) -> dict[str, Any]:
    total = past_length + sequence_length
    inputs = dict(input_ids=random_ids((batch_size, sequence_length), dummy_max_token_id))
    if arguments is None or "attention_mask" in arguments:
        inputs["attention_mask"] = torch.ones((batch_size, total), dtype=torch.int64)
    if arguments is None or "position_ids" in arguments:
        position_ids = torch.arange(past_length, total, dtype=torch.int64)
        inputs["position_ids"] = position_ids.unsqueeze(0).expand((batch_size, -1)).contiguous()
    if cache_name is not None:
        inputs[cache_name] = cache
        if is_legacy_cache(cache) and arguments is not None and "cache_position" in arguments:
            # the models of transformers 4.x keeping states (mamba...) require it with a cache
            inputs["cache_position"] = torch.arange(past_length, total, dtype=torch.int64)
    return cache_alias_dict(inputs)


def _dynamic_shapes(inputs: dict[str, Any], cache_name: str | None, cache_ds: Any) -> dict:
    ds: dict[str, Any] = dict(input_ids={0: BATCH, 1: SEQ})
    if "attention_mask" in inputs:
        ds["attention_mask"] = {0: BATCH, 1: CACHE_SEQ if cache_name else SEQ}
    if "position_ids" in inputs:
        ds["position_ids"] = {0: BATCH, 1: SEQ}
    if "cache_position" in inputs:
        ds["cache_position"] = {0: SEQ}
    if cache_name is not None:
        ds[cache_name] = cache_ds
    return ds


def get_inputs(
    model: Any,
    config: Any,
    *,
    batch_size: int = 2,
    sequence_length: int = 3,
    past_length: int = 30,
    dummy_max_token_id: int | None = None,
    num_hidden_layers: int | None = None,
    num_key_value_heads: int | None = None,
    head_dim: int | None = None,
    layer_types: Sequence[str] | None = None,
    sliding_window: int | None = None,
    dtype: torch.dtype | None = None,
    add_second_input: bool = False,
) -> dict[str, Any]:
    """
    Builds random inputs for a decoder-only model called with a cache.

    A model whose layers all slide (mistral with ``sliding_window``) gets a past shorter
    than its window (``past_length`` is lowered): a cache of sliding layers only does not
    tell how many tokens were seen, a model exported from it would be wrong past the window;
    the cache built from the configuration keeps every position.

    :param model: the model (may be None): its ``forward`` tells which arguments to give
        (the class ``config`` maps to when it is None), it makes the cache when the one
        built from the configuration differs (see the module's documentation), and
        gives the dtype of the cache if ``dtype`` is None (float32 without a model)
    :param config: its configuration, gives every value left to None
    :param batch_size: batch size
    :param sequence_length: number of new tokens
    :param past_length: number of tokens already in the cache (0 for an empty cache)
    :param dummy_max_token_id: largest token id to draw (``vocab_size - 1``)
    :param num_hidden_layers: number of layers of the cache
    :param num_key_value_heads: number of heads of the cache
    :param head_dim: last dimension of the cache
    :param layer_types: ``full_attention`` or ``sliding_attention`` for every layer,
        None for all full attention layers
    :param sliding_window: window of the sliding layers
    :param dtype: dtype of the cache
    :param add_second_input: also returns ``inputs2``, a second set of inputs with
        every dynamic dimension one larger (batch included)
    :return: ``dict(inputs=..., dynamic_shapes=...)`` (and ``inputs2``)
    :raises TaskInputError: for a bad argument, or when the cache cannot be built
        (the message names the layer type and its class, or the cache class of the model)

    >>> import transformers
    >>> from onnx_diagnostic.helpers import string_type
    >>> config = transformers.LlamaConfig(
    ...     hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...     num_attention_heads=2, num_key_value_heads=1, vocab_size=100)
    >>> res = get_inputs(None, config, past_length=5)
    >>> string_type(res["inputs"], with_shape=True)  # doctest: +ELLIPSIS
    'dict(input_ids:T7s2x3,attention_mask:T7s2x8,position_ids:T7s2x3,...:DynamicCache(...'
    """
    cfg = None if config is None else text_config(config)

    def _from_config(value: Any, name: str, fct: Callable) -> Any:
        if value is not None:
            return value
        if cfg is None:
            raise TaskInputError(f"{name} must be given when config is None")
        return fct(cfg)

    dummy_max_token_id = _from_config(
        dummy_max_token_id, "dummy_max_token_id", lambda c: int(cfg_get(c, "vocab_size")) - 1
    )
    sizes = dict(
        batch_size=check_int("batch_size", batch_size),
        sequence_length=check_int("sequence_length", sequence_length),
        past_length=check_int("past_length", past_length, minimum=0),
    )
    check_int("dummy_max_token_id", dummy_max_token_id, minimum=0)
    if dtype is not None:
        float_dtype(None, dtype)
    cls = model if model is not None else causal_lm_class(config)
    arguments = forward_arguments(model, config)
    if arguments is not None and not any(
        n in arguments for n in CACHE_ARG_NAMES + OTHER_CACHE_ARG_NAMES
    ):
        # a model without a cache (openai-gpt, xlm...): the new tokens only
        sizes["past_length"] = 0
        return _inputs_without_cache(sizes, dummy_max_token_id, arguments, add_second_input)
    cache_name = cache_arg_name(cls)
    probed, probe_error = None, None
    if isinstance(model, torch.nn.Module) and past_length > 0:
        try:
            probed = _probe(model, sizes, dummy_max_token_id)
        except TaskInputError as e:
            # the model makes a cache this library cannot flatten: the one built from the
            # configuration may still do, this error is raised if it does not
            probe_error = e
        if probed is not None and probed[0] is None:
            # the model makes no cache: the new tokens only
            sizes["past_length"] = 0
            return _inputs_without_cache(sizes, dummy_max_token_id, arguments, add_second_input)
        window = None if cfg is None else getattr(cfg, "sliding_window", None)
        if probed is not None and _capped_by_a_window(probed) and isinstance(window, int):
            # Every layer slides (mistral): a cache of sliding layers only does not tell how
            # many tokens were seen, an export from it is wrong past the window. A past
            # shorter than the window gives the cache built from the configuration, which
            # keeps every position: exact at every length, it grows past the window.
            sizes["past_length"] = min(sizes["past_length"], max(window - 3, 1))
            logger.info(
                "get_inputs: every layer of the cache slides (window %d), past_length=%d",
                window,
                sizes["past_length"],
            )
            probed = _probe(model, sizes, dummy_max_token_id)
    try:
        built = _from_configuration(
            cfg,
            sizes,
            add_second_input,
            dict(
                num_hidden_layers=num_hidden_layers,
                num_key_value_heads=num_key_value_heads,
                head_dim=head_dim,
                layer_types=layer_types,
                sliding_window=sliding_window,
                dtype=float_dtype(model, dtype),
            ),
            _from_config,
        )
    except Exception as e:
        if probe_error is not None:
            raise probe_error from e
        if probed is None:
            if isinstance(e, TaskInputError):
                raise
            raise TaskInputError(
                f"the cache cannot be built from the configuration {type(cfg).__name__}: "
                f"{type(e).__name__}: {e}; give the model to get_inputs (model=...) to use "
                "the cache it creates"
            ) from e
        built = None
    one_token = False
    if probed is not None and (built is None or not same_tensors_shapes(built[0], probed[0])):
        caches, cache_ds = probed[:2], probed[2]
        if not any(CACHE in ds.values() for ds in cache_ds):
            # a recurrent state only (mamba): nothing grows with the past, generate
            # gives no attention_mask once the prompt is processed
            arguments = (arguments or {"input_ids", "position_ids"}) - {"attention_mask"}
        # a recurrent step (mamba, linear attention layers) processes one token at a time
        one_token = has_recurrent_states(caches[0])
    else:
        if built is None:  # pragma: no cover
            raise TaskInputError("get_inputs: no cache could be built")
        caches, cache_ds = built[:2], built[2]
    second = {k: v + 1 for k, v in sizes.items()}
    if one_token:
        sizes["sequence_length"] = second["sequence_length"] = 1
    res: dict[str, Any] = dict(
        inputs=_make_inputs(
            **sizes,
            dummy_max_token_id=dummy_max_token_id,
            arguments=arguments,
            cache_name=cache_name,
            cache=caches[0],
        )
    )
    res["dynamic_shapes"] = _dynamic_shapes(res["inputs"], cache_name, cache_ds)
    if one_token:
        res["dynamic_shapes"]["input_ids"] = {0: BATCH}
        if "position_ids" in res["dynamic_shapes"]:
            res["dynamic_shapes"]["position_ids"] = {0: BATCH}
        if "cache_position" in res["dynamic_shapes"]:
            res["dynamic_shapes"]["cache_position"] = {}
    if add_second_input:
        res["inputs2"] = _make_inputs(
            **second,
            dummy_max_token_id=dummy_max_token_id,
            arguments=arguments,
            cache_name=cache_name,
            cache=caches[1],
        )
    if probe_error is not None and isinstance(model, torch.nn.Module):
        # the model makes a cache of its own class: the DynamicCache built from the
        # configuration is only right if the model takes it
        _check_model_takes(model, res["inputs"], probe_error)
    return res


def _capped_by_a_window(probed: tuple[Any, Any, Any]) -> bool:
    """The probed caches hold attention layers only, none of them grew with the past."""
    caches, cache_ds = probed[:2], probed[2]
    return (
        bool(cache_ds)
        and not any(CACHE in ds.values() for ds in cache_ds)
        and not has_recurrent_states(caches[0])
    )


def _check_model_takes(model: torch.nn.Module, inputs: dict[str, Any], error: Exception) -> None:
    """Runs ``model`` on a copy of ``inputs``, raises ``error`` (the model's own cache class
    cannot be flattened) if it fails on the cache built from the configuration."""

    try:
        with torch.no_grad():
            model(**torch_deepcopy(inputs))
    except Exception as e:
        raise TaskInputError(
            f"{error}; the DynamicCache built from the configuration does not fit it either: "
            f"{type(e).__name__}: {e}"
        ) from e


def _probe(
    model: torch.nn.Module, sizes: dict[str, int], max_token_id: int
) -> tuple[Any, Any, Any] | None:
    """
    The caches the model makes for both input sets and their dynamic shapes, None if
    the model does not run on a prompt alone, ``(None, None, None)`` if it makes no cache.

    :raises TaskInputError: when the cache cannot be flattened (a cache class of one model)
    """
    b, p = sizes["batch_size"], sizes["past_length"]
    try:
        cache1 = probe_cache(model, b, p, max_token_id)
        if cache1 is None:
            return None, None, None
        cache2 = probe_cache(model, b + 1, p + 1, max_token_id)
    except TaskInputError as e:
        logger.info("get_inputs: the cache is built from the configuration, %s", e)
        return None
    # copies: the tensors of the model's cache may be views (a transposed projection), as
    # inputs of torch.export their sizes would be tied to those of their base
    cache1, cache2 = torch_deepcopy(cache1), torch_deepcopy(cache2)
    return cache1, cache2, probe_dynamic_shapes(cache1, cache2, (b, p), (b + 1, p + 1))


def _from_configuration(
    cfg: Any,
    sizes: dict[str, int],
    second: bool,
    given: dict[str, Any],
    from_config: Callable,
) -> tuple[Any, Any, Any]:
    """The random caches built from the configuration for both sets, their dynamic shapes."""
    num_hidden_layers = from_config(
        given["num_hidden_layers"],
        "num_hidden_layers",
        lambda c: int(cfg_get(c, "num_hidden_layers", "n_layer", "num_layers")),
    )
    check_int("num_hidden_layers", num_hidden_layers)
    layer_types = given["layer_types"]
    if layer_types is None and cfg is not None:
        layer_types = _common.layer_types(cfg, num_hidden_layers)
    if layer_types is not None and len(layer_types) != num_hidden_layers:
        raise TaskInputError(
            f"layer_types has {len(layer_types)} elements but num_hidden_layers={num_hidden_layers}"
        )
    _check_config_layer_types(layer_types)
    num_key_value_heads = from_config(
        given["num_key_value_heads"], "num_key_value_heads", _common.num_key_value_heads
    )
    head_dim = from_config(given["head_dim"], "head_dim", _common.head_dim)
    check_int("num_key_value_heads", num_key_value_heads)
    check_int("head_dim", head_dim)
    sliding_window = given["sliding_window"]
    if sliding_window is None and cfg is not None and layer_types is not None:
        sliding_window = getattr(cfg, "sliding_window", None)
    sliding = _sliding_layers(layer_types)
    past_length = sizes["past_length"]
    if all(sliding) and sliding:
        # a cache made of sliding layers only tells how many positions it holds, not how many
        # tokens were seen: the inputs must not be past the window
        longest = past_length + (1 if second else 0)
        if not isinstance(sliding_window, int) or sliding_window <= longest:
            raise TaskInputError(
                f"past_length={past_length} (+1 for inputs2) must be smaller than "
                f"sliding_window={sliding_window!r}: a sliding layer keeps fewer tokens"
            )
    common = dict(
        num_hidden_layers=num_hidden_layers,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        layer_types=layer_types,
        sliding_window=sliding_window,
        dtype=given["dtype"],
    )
    cache1 = _config_cache(sizes["batch_size"], past_length, **common)
    cache2 = _config_cache(sizes["batch_size"] + 1, past_length + 1, **common) if second else None
    cache_ds = cache_shapes(
        num_hidden_layers, CACHE, sliding if any(sliding) and not all(sliding) else None
    )
    return cache1, cache2, cache_ds


def _inputs_without_cache(
    sizes: dict[str, int],
    max_token_id: int,
    arguments: set[str] | None,
    add_second_input: bool,
) -> dict[str, Any]:
    """Inputs of a model which keeps no cache: the tokens, their mask and positions."""
    common = dict(dummy_max_token_id=max_token_id, arguments=arguments, cache_name=None)
    res: dict[str, Any] = dict(inputs=_make_inputs(**sizes, **common, cache=None))
    res["dynamic_shapes"] = _dynamic_shapes(res["inputs"], None, None)
    if add_second_input:
        second = {k: (v + 1 if k != "past_length" else 0) for k, v in sizes.items()}
        res["inputs2"] = _make_inputs(**second, **common, cache=None)
    return res
