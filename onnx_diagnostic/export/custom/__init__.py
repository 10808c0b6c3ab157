"""
The ``custom`` exporter of :func:`onnx_diagnostic.export.api.to_onnx`
(``to_onnx(..., exporter="custom")``): the ATen graph :func:`torch.export.export` produces
is translated straight into ONNX, without :func:`torch.onnx.export`.

* :mod:`.translator` walks the graph (:func:`translate_program`); parameters and buffers
  become initializers named after the state dict, inputs keep the names of the
  placeholders (:func:`to_onnx` renames them ``input_ids``, ``past_key_values.0.key``...),
  symbolic dimensions keep the names given in ``dynamic_shapes``;
  higher-order operators such as ``wrap_with_set_grad_enabled`` are inlined;
  a graph writing into views (``x[:, 1:] = y``) is functionalized first.
* :mod:`.aten_ops` (elementwise, symbolic integers), :mod:`.aten_shapes` (shapes,
  indexing, reductions) and :mod:`.aten_nn` (normalizations, linear algebra, convolutions,
  creation, attention) hold one translation per ATen operator, :mod:`.builder` the small
  API they use. The graph is translated at the level torch.export leaves it (``linear``,
  ``scaled_dot_product_attention``, ``layer_norm``... are not decomposed), default opset 23:
  ``scaled_dot_product_attention`` becomes one ``Attention`` node.
* :mod:`.passes` (constant folding with the kernels of :mod:`.folding`, removal of
  identities, merged Unsqueeze chains, common subexpressions, duplicated constants and dead
  nodes) and :mod:`.fusions` with :mod:`.fusions_attention` (``RMSNormalization``,
  ``RotaryEmbedding``, ``Attention``, removal of the repetition of key/value heads in front
  of a grouped-query ``Attention``) run when ``optimize=True``.

An operator without translation raises :class:`UnsupportedATenOpError` naming the
operator, the line of the model which called it and the shapes of its inputs;
``exporter="onnx-dynamo"`` remains the other route.

>>> import torch
>>> from onnx_diagnostic.export.custom import translate_program
>>> class Neuron(torch.nn.Module):
...     def forward(self, x):
...         return torch.sigmoid(x @ x.T)
>>> program = translate_program(torch.export.export(Neuron(), (torch.rand(3, 4),)))
>>> [n.op_type for n in program.model.graph]
['Transpose', 'MatMul', 'Sigmoid']
"""

from .translator import (
    DEFAULT_OPSET,
    CustomProgram,
    TranslationError,
    UnsupportedATenOpError,
    translate_program,
)

__all__ = [
    "DEFAULT_OPSET",
    "CustomProgram",
    "TranslationError",
    "UnsupportedATenOpError",
    "translate_program",
]
