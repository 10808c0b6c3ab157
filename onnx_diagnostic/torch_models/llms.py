"""
Untrained language models to test an export without downloading anything.

>>> from onnx_diagnostic.torch_models.llms import get_tiny_llm
>>> data = get_tiny_llm()
>>> type(data["model"]).__name__, list(data["inputs"])[:3]
('LlamaForCausalLM', ['input_ids', 'attention_mask', 'position_ids'])

The fourth input is the cache, named as ``forward`` declares it: ``cache`` from
transformers 5.24, ``past_key_values`` before
(:func:`onnx_diagnostic.helpers.compat.cache_arg_name`).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers

from ..helpers.compat import cache_alias_dict, cache_arg_name, forward_parameters
from ..tasks import text_generation
from .hghub.hub_api import config_from_dict, load_config_dict
from .model_data import ModelData, weights_size

__all__ = ["get_phi2", "get_tiny_llm"]

TINY_LLM = "arnir0/Tiny-LLM"
PHI2 = "microsoft/phi-2"


def get_tiny_llm(
    batch_size: int = 2,
    sequence_length: int = 3,
    past_length: int = 30,
    dynamic_rope: bool = False,
    add_second_input: bool = False,
    use_static_cache: bool = False,
    **config_overrides: Any,
) -> ModelData:
    """
    Returns an untrained ``LlamaForCausalLM`` with the architecture of
    :epkg:`arnir0/Tiny-LLM` (vocabulary 32000, hidden size 192, one layer, two heads,
    one key-value head of dimension 96), inputs to call it with a cache and their
    dynamic shapes.

    :param batch_size: batch size
    :param sequence_length: number of new tokens (``input_ids.shape[1]``)
    :param past_length: number of tokens in the cache
    :param dynamic_rope: uses a dynamic rotary embedding (``rope_type="dynamic"``,
        factor 10)
    :param add_second_input: also builds ``inputs2``, every dynamic dimension one larger
    :param use_static_cache: the cache is a :class:`transformers.StaticCache` of
        ``max_cache_len = past_length + sequence_length + 1`` positions (room for the new
        tokens of ``inputs`` and of ``inputs2``), its first ``past_length`` positions
        filled, and the configuration gets ``cache_implementation="static"``; see below
    :param config_overrides: attributes of the configuration to change
        (``num_hidden_layers=2``...)
    :return: a :class:`onnx_diagnostic.torch_models.model_data.ModelData`, it behaves
        like ``dict(model=, inputs=, dynamic_shapes=, configuration=)``

    The inputs are ``input_ids`` (batch, sequence), ``attention_mask``
    (batch, past + sequence), ``position_ids`` (``past_length`` to
    ``past_length + sequence_length - 1``) and the cache, a ``DynamicCache``, named as
    the model's ``forward`` declares it (``cache`` from transformers 5.24,
    ``past_key_values`` before).

    >>> import pprint
    >>> from onnx_diagnostic.helpers import string_type
    >>> data = get_tiny_llm()
    >>> string_type(data["inputs"], with_shape=True)  # doctest: +ELLIPSIS
    'dict(input_ids:T7s2x3,attention_mask:T7s2x33,position_ids:T7s2x3,...:DynamicCache(...'
    >>> pprint.pprint(data["dynamic_shapes"], sort_dicts=False, width=90)  # doctest: +ELLIPSIS
    {'input_ids': {0: 'batch', 1: 'seq_length'},
     'attention_mask': {0: 'batch', 1: 'cache+seq'},
     'position_ids': {0: 'batch', 1: 'seq_length'},
     ...: [{0: 'batch', 2: 'cache_length'}, {0: 'batch', 2: 'cache_length'}]}

    With ``use_static_cache=True``, the cache tensors keep ``max_cache_len`` positions
    whatever the number of tokens: only their batch dimension is dynamic. The other inputs
    are the same (``attention_mask`` covers the ``past_length + sequence_length`` tokens
    seen, transformers pads it to ``max_cache_len``), plus ``cache_position`` on the
    versions of transformers whose ``forward`` declares it (before 5). On transformers 5 the
    cache also flattens into the number of filled positions of every layer (0-d tensors),
    their dynamic shapes are ``{}``.

    >>> data = get_tiny_llm(use_static_cache=True)
    >>> type(data.inputs[cache_arg_name(data.model)]).__name__
    'StaticCache'
    >>> data.dynamic_shapes[cache_arg_name(data.model)][:2]
    [{0: 'batch'}, {0: 'batch'}]
    """
    d = load_config_dict(TINY_LLM)
    if dynamic_rope:
        d["rope_scaling"] = {"rope_type": "dynamic", "factor": 10.0}
    reference = transformers.LlamaConfig()
    for key in config_overrides:
        if not hasattr(reference, key) and key not in d:
            raise TypeError(f"get_tiny_llm: {key!r} is not an attribute of LlamaConfig")
    if not isinstance(use_static_cache, bool):
        raise TypeError(
            f"get_tiny_llm: use_static_cache must be a bool, not {type(use_static_cache).__name__}"
        )
    d.update(config_overrides)
    if use_static_cache:
        d["cache_implementation"] = "static"
    config = config_from_dict(d)
    model = transformers.LlamaForCausalLM(config)
    model.eval()
    if use_static_cache:
        res = _static_cache_inputs(
            model,
            config,
            batch_size=batch_size,
            sequence_length=sequence_length,
            past_length=past_length,
            add_second_input=add_second_input,
        )
    else:
        res = text_generation.get_inputs(
            model,
            config,
            batch_size=batch_size,
            sequence_length=sequence_length,
            past_length=past_length,
            add_second_input=add_second_input,
        )
    return _model_data(model, config, res, TINY_LLM)


def _static_cache_inputs(
    model: Any,
    config: Any,
    batch_size: int,
    sequence_length: int,
    past_length: int,
    add_second_input: bool,
) -> dict[str, Any]:
    """Inputs of a decoder called with a ``StaticCache``, see :func:`get_tiny_llm`."""
    from ..cache_helpers import make_static_cache

    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("sequence_length", sequence_length, 1),
        ("past_length", past_length, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"get_tiny_llm: {name} must be an int >= {low}, not {value!r}")
    n_layers = int(config.num_hidden_layers)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )
    dtype = next(model.parameters()).dtype
    cache_name = cache_arg_name(model)
    with_cache_position = "cache_position" in (forward_parameters(model) or {})
    max_cache_len = past_length + sequence_length + 1

    def make(batch: int, seq: int) -> dict[str, Any]:
        shape = (batch, kv_heads, past_length, head_dim)
        pairs = [
            (torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype))
            for _ in range(n_layers)
        ]
        positions = torch.arange(past_length, past_length + seq, dtype=torch.int64)
        inputs: dict[str, Any] = dict(
            input_ids=torch.randint(0, config.vocab_size - 1, (batch, seq), dtype=torch.int64),
            attention_mask=torch.ones((batch, past_length + seq), dtype=torch.int64),
            position_ids=positions.unsqueeze(0).expand((batch, -1)).contiguous(),
        )
        inputs[cache_name] = make_static_cache(pairs, max_cache_len=max_cache_len)
        if with_cache_position:
            inputs["cache_position"] = positions
        return cache_alias_dict(inputs)

    inputs = make(batch_size, sequence_length)
    n_leaves = len(torch.utils._pytree.tree_leaves(inputs[cache_name]))
    # keys and values keep max_cache_len positions, only the batch is dynamic; the filled
    # lengths of transformers 5 (0-d tensors) come after them
    cache_ds: list[dict[int, str]] = [{0: "batch"} for _ in range(2 * n_layers)]
    cache_ds.extend({} for _ in range(n_leaves - 2 * n_layers))
    ds: dict[str, Any] = dict(
        input_ids={0: "batch", 1: "seq_length"},
        attention_mask={0: "batch", 1: "cache+seq"},
        position_ids={0: "batch", 1: "seq_length"},
    )
    ds[cache_name] = cache_ds
    if with_cache_position:
        ds["cache_position"] = {0: "seq_length"}
    res: dict[str, Any] = dict(inputs=inputs, dynamic_shapes=ds)
    if add_second_input:
        res["inputs2"] = make(batch_size + 1, sequence_length + 1)
    return res


def get_phi2(
    batch_size: int = 1,
    sequence_length: int = 30,
    sequence_length2: int = 3,
    dynamic_rope: bool = False,
    add_second_input: bool = False,
    **config_overrides: Any,
) -> ModelData:
    """
    Returns an untrained ``PhiForCausalLM`` built from the configuration of
    ``microsoft/phi-2`` shipped with the package (no download), inputs with a cache and
    their dynamic shapes, as :func:`get_tiny_llm` does. The full configuration has
    2.7 billion parameters (about 11 GB in float32): reduce it with ``config_overrides``
    (``num_hidden_layers=1, hidden_size=64...``, ``num_key_value_heads`` with
    ``num_attention_heads``) for a test.

    :param batch_size: batch size
    :param sequence_length: number of tokens in the cache (onnx-diagnostic's name)
    :param sequence_length2: number of new tokens
    :param dynamic_rope: uses a dynamic rotary embedding (``rope_type="dynamic"``)
    :param add_second_input: also builds ``inputs2``, every dynamic dimension one larger
    :param config_overrides: attributes of the configuration to change
    :return: a :class:`onnx_diagnostic.torch_models.model_data.ModelData`

    >>> from onnx_diagnostic.helpers import string_type
    >>> data = get_phi2(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
    ...                 num_key_value_heads=2, intermediate_size=64, vocab_size=100,
    ...                 bos_token_id=0, eos_token_id=0)
    >>> type(data["model"]).__name__, string_type(data["inputs"]["input_ids"], with_shape=True)
    ('PhiForCausalLM', 'T7s1x3')
    """
    d = load_config_dict(PHI2)
    if dynamic_rope:
        d["rope_scaling"] = {"rope_type": "dynamic", "factor": 10.0}
    reference = transformers.PhiConfig()
    for key in config_overrides:
        if not hasattr(reference, key) and key not in d:
            raise TypeError(f"get_phi2: {key!r} is not an attribute of PhiConfig")
    d.update(config_overrides)
    config = config_from_dict(d)
    model = transformers.PhiForCausalLM(config)
    model.eval()
    res = text_generation.get_inputs(
        model,
        config,
        batch_size=batch_size,
        sequence_length=sequence_length2,
        past_length=sequence_length,
        add_second_input=add_second_input,
    )
    return _model_data(model, config, res, PHI2)


def _model_data(model: Any, config: Any, res: dict[str, Any], model_id: str) -> ModelData:
    """The ModelData of a text-generation model and the inputs get_inputs built for it."""
    size, n_weights = weights_size(model)
    return ModelData(
        model=model,
        inputs=res["inputs"],
        dynamic_shapes=res["dynamic_shapes"],
        configuration=config,
        task=text_generation.__TASK__,
        model_id=model_id,
        size=size,
        n_weights=n_weights,
        inputs2=res.get("inputs2", None),
    )
