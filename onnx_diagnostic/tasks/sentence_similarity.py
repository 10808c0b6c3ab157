"""
Task ``sentence-similarity``: a sentence embedding model (``BertModel`` of sentence-transformers).

Inputs: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the model
takes them), dynamic in batch and sequence, see
:func:`onnx_diagnostic.tasks._text_encoder.get_encoder_inputs`.

>>> import transformers
>>> from onnx_diagnostic.tasks.sentence_similarity import random_input_kwargs
>>> config = transformers.BertConfig(
...     hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...     num_attention_heads=2, vocab_size=100)
>>> kwargs, fct = random_input_kwargs(config)
>>> res = fct(None, config, add_second_input=True, **kwargs)
>>> sorted(res["inputs"]), tuple(res["inputs2"]["input_ids"].shape)
(['attention_mask', 'input_ids', 'token_type_ids'], (3, 9))
"""

from __future__ import annotations

from ._text_encoder import get_encoder_inputs as get_inputs
from ._text_encoder import random_encoder_input_kwargs as random_input_kwargs
from ._text_encoder import reduce_encoder_config as reduce_model_config

__all__ = ["get_inputs", "random_input_kwargs", "reduce_model_config"]

__TASK__ = "sentence-similarity"
#: Class used when the architecture is unknown to the installed transformers.
AUTO_CLASS = "AutoModel"
