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

import transformers

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
    """
    d = load_config_dict(TINY_LLM)
    if dynamic_rope:
        d["rope_scaling"] = {"rope_type": "dynamic", "factor": 10.0}
    reference = transformers.LlamaConfig()
    for key in config_overrides:
        if not hasattr(reference, key) and key not in d:
            raise TypeError(f"get_tiny_llm: {key!r} is not an attribute of LlamaConfig")
    d.update(config_overrides)
    config = config_from_dict(d)
    model = transformers.LlamaForCausalLM(config)
    model.eval()
    res = text_generation.get_inputs(
        model,
        config,
        batch_size=batch_size,
        sequence_length=sequence_length,
        past_length=past_length,
        add_second_input=add_second_input,
    )
    size, n_weights = weights_size(model)
    return ModelData(
        model=model,
        inputs=res["inputs"],
        dynamic_shapes=res["dynamic_shapes"],
        configuration=config,
        task=text_generation.__TASK__,
        model_id=TINY_LLM,
        size=size,
        n_weights=n_weights,
        inputs2=res.get("inputs2", None),
    )


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
    size, n_weights = weights_size(model)
    return ModelData(
        model=model,
        inputs=res["inputs"],
        dynamic_shapes=res["dynamic_shapes"],
        configuration=config,
        task=text_generation.__TASK__,
        model_id=PHI2,
        size=size,
        n_weights=n_weights,
        inputs2=res.get("inputs2", None),
    )
