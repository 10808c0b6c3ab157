"""
Task ``summarization``: a sequence-to-sequence language model (``BartForConditionalGeneration``,
``T5ForConditionalGeneration``, ``PegasusForConditionalGeneration``, ``MarianMTModel``)
called with a cache. The model and its inputs are those of ``text2text-generation``,
see :mod:`onnx_diagnostic.tasks.text2text_generation`, this module delegates to it.

>>> import transformers
>>> from onnx_diagnostic.tasks.summarization import random_input_kwargs
>>> config = transformers.BartConfig(d_model=32, encoder_layers=1, decoder_layers=1,
...     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
...     decoder_ffn_dim=64, vocab_size=100)
>>> kwargs, fct = random_input_kwargs(config)
>>> fct(None, config, **kwargs)["dynamic_shapes"]["input_ids"]
{0: 'batch', 1: 'encoder_length'}
"""

from __future__ import annotations

from .text2text_generation import (
    AUTO_CLASS,
    get_inputs,
    random_input_kwargs,
    reduce_model_config,
)

__TASK__ = "summarization"

__all__ = ["AUTO_CLASS", "get_inputs", "random_input_kwargs", "reduce_model_config"]
