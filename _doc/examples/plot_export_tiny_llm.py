"""
.. _l-plot-tiny-llm-export:

Steal method forward to guess inputs and dynamic shapes (with Tiny-LLM)
=======================================================================

Inputs are always dynamic with LLMs, that is why dynamic shapes
need to be specified when a LLM is exported with :func:`torch.export.export`.
Most of the examples on :epkg:`HuggingFace` use method
:meth:`transformers.GenerationMixin.generate` but we only want to
export the model and its method ``forward``.

This example shows how to guess the inputs of this method even though the model
is executed through method ``generate``.

We focus on the model :epkg:`arnir0/Tiny-LLM`.
To avoid downloading any weights, we use a function creating a
random model based on the same architecture.

.. note::

    This page runs offline. The original example downloaded the trained model
    and its tokenizer from the hub. Here the "true" model is an untrained
    ``LlamaForCausalLM`` built from the configuration of :epkg:`arnir0/Tiny-LLM`
    shipped with the package
    (:func:`onnx_diagnostic.torch_models.llms.get_tiny_llm`), and since no tokenizer
    can be downloaded, the prompt is given as token ids directly. The answers
    are random tokens but every shape, type and call is the same as with the trained model.

Steal the forward method
++++++++++++++++++++++++

The first step is to guess the dummy inputs.
Let's use the "true" model for that, built untrained from its configuration.
"""

import copy
import pprint
import torch
from onnx_diagnostic import doc
from onnx_diagnostic.ext_test_case import unit_test_going
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.helpers.torch_helper import steal_forward
from onnx_diagnostic.torch_models.llms import get_tiny_llm
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str

MODEL_NAME = "arnir0/Tiny-LLM"
torch.manual_seed(0)
model = get_tiny_llm()["model"]
# The example generates fewer tokens when it runs as a unit test.
MAX_LENGTH = 12 if unit_test_going() else 50

# %%
# We rewrite the forward method to print the cache dimension.


def _forward_(*args, _f=None, **kwargs):
    assert _f is not None
    if not hasattr(torch.compiler, "is_exporting") or not torch.compiler.is_exporting():
        # torch.compiler.is_exporting requires torch>=2.7
        print("<-", string_type((args, kwargs), with_shape=True, with_min_max=True))
    res = _f(*args, **kwargs)
    if not hasattr(torch.compiler, "is_exporting") or not torch.compiler.is_exporting():
        print("->", string_type(res, with_shape=True, with_min_max=True))
    return res


keep_model_forward = model.forward
model.forward = lambda *args, _f=keep_model_forward, **kwargs: _forward_(*args, _f=_f, **kwargs)

# %%
# Let's run the model. The prompt ``"Continue: it rains..."`` is replaced by
# eight token ids (``1`` is the token starting a sequence for this vocabulary),
# the tokenizer is not available offline.

prompt = "Continue: it rains..."
inputs = torch.tensor([[1, 2866, 14150, 29901, 372, 1153, 1144, 856]], dtype=torch.int64)

outputs = model.generate(
    inputs, max_length=MAX_LENGTH, temperature=1, top_k=50, top_p=0.95, do_sample=True
)

print("-- prompt", prompt, "->", inputs.tolist())
print("-- answer (token ids)", outputs[0].tolist())

# %%
# Let's restore the forward as it was.

model.forward = keep_model_forward

# %%
# Another syntax with :func:`onnx_diagnostic.helpers.torch_helper.steal_forward
# <onnx_diagnostic.helpers.steal.steal_forward>`.

with steal_forward(model):
    model.generate(
        inputs, max_length=MAX_LENGTH, temperature=1, top_k=50, top_p=0.95, do_sample=True
    )

# %%
# Untrained model
# +++++++++++++++
#
# This part can be skipped if you are only interested in exporting
# the original model. It is useful to create a unit test to ensure
# a specific architecture can be exported despite the many changes
# brought to :epkg:`torch` or :epkg:`transformers`.
#
# Let's create an untrained model using the config file provided
# `config.json <https://huggingface.co/arnir0/Tiny-LLM/blob/main/config.json>`_
# (a copy ships with the package) to create an untrained model:
# :func:`onnx_diagnostic.torch_models.llms.get_tiny_llm`.
# Then let's use it.

experiment = get_tiny_llm()
untrained_model, inputs, dynamic_shapes = (
    experiment["model"],
    experiment["inputs"],
    experiment["dynamic_shapes"],
)

# %%
# Before we run it, we make a copy of the inputs as the cache
# gets modified by the execution. Then it is no longer valid
# associated with the previous input_ids and mask.

cloned_inputs = copy.deepcopy(inputs)

# %%

print("input type before", string_type(inputs, with_shape=True))

expected_output = untrained_model(**inputs)

print("input type after-", string_type(inputs, with_shape=True))

# %%
# The outputs

print("result type", string_type(expected_output, with_shape=True))

# %%
# It works.
#
# ExportedProgram
# +++++++++++++++
#
# The original example called :func:`torch.export.export` directly and printed
# ``It failed``: :epkg:`transformers` needs a few changes to be exportable with dynamic
# shapes. :func:`onnx_diagnostic.torch_export_patches.torch_export_patches` applies them
# (and restores everything on exit), so the export runs inside it.
# :func:`onnx_diagnostic.torch_export_patches.patch_inputs.use_dyn_not_str` replaces the
# dimension names by ``torch.export.Dim.DYNAMIC``.

with torch_export_patches(patch_transformers=True):
    ep = torch.export.export(
        untrained_model,
        (),
        kwargs=cloned_inputs,
        dynamic_shapes=use_dyn_not_str(dynamic_shapes),
        strict=False,
    )
print("It worked:")
print(ep)

# %%
# Back to the original model
# ++++++++++++++++++++++++++
#
# Let's use the same dummy inputs with the model used to generate
# (here also untrained, see the note at the top of the page).
# Dummy inputs and dynamic shapes are created by function
# :func:`onnx_diagnostic.torch_models.llms.get_tiny_llm`.

data = get_tiny_llm()
inputs, dynamic_shapes = data["inputs"], data["dynamic_shapes"]

# %%
# Let's print the inputs.

print(string_type(inputs, with_shape=True))

# %%
# The cache follows the flat layout ``[key_0, value_0, key_1, value_1, ...]``
# (the original example showed an older nested form).

pprint.pprint(dynamic_shapes)

# %%
# And let's finally export.

with torch_export_patches(patch_transformers=True):
    ep = torch.export.export(
        model,
        (),
        kwargs=cloned_inputs,
        dynamic_shapes=use_dyn_not_str(dynamic_shapes),
        strict=False,
    )
print("It worked:")
print(ep)

# %%
# Without :func:`torch_export_patches
# <onnx_diagnostic.torch_export_patches.torch_export_patches>`, the export may fail
# depending on the installed versions, page :ref:`l-plot-patches-applied`
# lists the patches and the reason for each of them.

doc.plot_legend("Tiny-LLM\nforward inputs\nbehind generate", "torch.export.export", "tomato")
