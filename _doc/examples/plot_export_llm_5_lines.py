"""
.. _l-plot-export-llm-5-lines:

Export an LLM with its cache in 5 lines
=======================================

The difficult part of exporting an LLM is to find the arguments and the dynamic
shapes of method ``forward``: users call ``generate``, ``generate`` calls ``forward``
with a cache whose class and size change from one call to the next.
:class:`InputObserver <onnx_diagnostic.investigate.input_observer.InputObserver>`
records these calls, infers the arguments and the dynamic shapes from them,
and checks the exported model on every recorded call.

The five lines
++++++++++++++

.. code-block:: python

    observer = InputObserver()
    with observer(model):
        model.generate(input_ids, max_new_tokens=3, do_sample=False)
    kwargs = observer.infer_arguments(for_export=True, set_batch_dimension_for=True)
    ds = observer.infer_dynamic_shapes(set_batch_dimension_for=True)
    with torch_export_patches(patch_transformers=True):
        onx = to_onnx(model, (), kwargs=kwargs, dynamic_shapes=ds)
    observer.check_discrepancies(onx)

The rest of the page runs them on an untrained :epkg:`arnir0/Tiny-LLM`
built from its configuration (nothing is downloaded), and explains each of them.
"""

import pandas
import torch
from onnx_diagnostic import doc
from onnx_diagnostic.export.api import to_onnx
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.investigate.input_observer import InputObserver
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.llms import get_tiny_llm

torch.manual_seed(0)
model = get_tiny_llm()["model"]
input_ids = torch.randint(3, model.config.vocab_size, (1, 8))

# %%
# 1. Record the calls
# +++++++++++++++++++
#
# The observer replaces ``model.forward`` while the context is active,
# it stores the first three calls (``store_n_calls=3``):
# the prefill step (the prompt, an empty cache) and two decoding steps
# (one new token, a cache growing by one token each time).

observer = InputObserver()
with observer(model):
    model.generate(input_ids, max_new_tokens=3, do_sample=False)
print("number of recorded calls:", observer.num_obs())

# %%
# 2. The arguments to export with
# +++++++++++++++++++++++++++++++
#
# ``infer_arguments`` picks one call holding every argument (a decoding step).
# With ``for_export=True``, it grows the dynamic dimensions of size 1 (the batch,
# the number of new tokens) to 2: :func:`torch.export.export` would consider
# them as constant otherwise (see :ref:`l-plot-why-dimension-static`).

kwargs = observer.infer_arguments(for_export=True, set_batch_dimension_for=True)
print(string_type(kwargs, with_shape=True))

# %%
# 3. The dynamic shapes
# +++++++++++++++++++++
#
# A dimension is dynamic when it changed between the recorded calls,
# ``set_batch_dimension_for=True`` adds the first dimension of every input
# (the batch is 1 in every call). The cache follows the flat layout
# ``[key_0, value_0, ...]``.

ds = observer.infer_dynamic_shapes(set_batch_dimension_for=True)
print(ds)

# %%
# 4. The export
# +++++++++++++
#
# :func:`torch_export_patches <onnx_diagnostic.torch_export_patches.torch_export_patches>`
# makes :epkg:`transformers` exportable and restores everything on exit,
# :func:`to_onnx <onnx_diagnostic.export.api.to_onnx>` exports with
# :func:`torch.export.export` and :func:`torch.onnx.export`.

with torch_export_patches(patch_transformers=True):
    onx = to_onnx(model, (), kwargs=kwargs, dynamic_shapes=ds, verbose=1)
print("inputs:", [i.name for i in onx.graph.input])
print("outputs:", [o.name for o in onx.graph.output])

# %%
# 5. The check
# ++++++++++++
#
# ``check_discrepancies`` runs the ONNX model with :epkg:`onnxruntime` on every
# recorded call, the prefill step included (its empty cache becomes tensors
# with a dimension of size 0, column ``n_empty``) and compares the outputs with the
# ones the model returned during ``generate``.

df = pandas.DataFrame(observer.check_discrepancies(onx, atol=1e-4))
print(df[["index", "SUCCESS", "abs", "rel", "n_inputs", "n_empty"]])
assert df["SUCCESS"].all(), df

# %%

doc.plot_legend("LLM\nin 5 lines", "InputObserver\nto_onnx", "green")
