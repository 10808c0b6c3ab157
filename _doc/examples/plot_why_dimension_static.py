"""
.. _l-plot-why-dimension-static:

Why did my dimension become static?
===================================

:func:`torch.export.export` produces a program valid for every size of the
dimensions it was told are dynamic, and only for the observed size of the others.
A dimension meant to be dynamic ends up static for a few common reasons:

1. the input sets used to guess the dynamic shapes never changed it
   (batch 1 in every call, one new token in every decoding step),
2. the example given to :func:`torch.export.export` has size 0 or 1 there,
   :epkg:`torch` specializes these two sizes,
3. the example has two equal sizes and the model code compares them,
   the exported program keeps the equality,
4. the model itself makes the dimension equal to a constant.

This page shows each case, what :class:`ModelInputs
<onnx_diagnostic.export.dynamic_shapes.ModelInputs>`,
:class:`InputObserver <onnx_diagnostic.investigate.input_observer.InputObserver>`
and its ``set_batch_dimension_for`` tell about it, and how a second set of
inputs (``inputs2``) reveals a dimension which became static.
"""

import pprint
import torch
from onnx_diagnostic import doc
from onnx_diagnostic.export import ModelInputs
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.investigate.input_observer import InputObserver
from onnx_diagnostic.tasks import check_inputs2
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str
from onnx_diagnostic.torch_models.llms import get_tiny_llm


class Model(torch.nn.Module):
    def forward(self, input_ids, attention_mask):
        # a stand-in for a decoder: one value per sequence
        return input_ids.to(torch.float32).sum(dim=1, keepdim=True) * attention_mask.to(
            torch.float32
        ).sum(dim=1, keepdim=True)


model = Model()


def placeholders(ep):
    "Returns the shapes the exported program expects, symbols are dynamic."
    return [(n.name, tuple(n.meta["val"].shape)) for n in ep.graph.nodes if n.op == "placeholder"]


# %%
# 1. The input sets never changed the dimension
# +++++++++++++++++++++++++++++++++++++++++++++
#
# A dimension is dynamic when its size differs between two input sets.
# Here are two decoding steps of a model: batch 1, one new token,
# the attention mask grows with the cache.

inputs = [
    dict(input_ids=torch.tensor([[5]]), attention_mask=torch.ones((1, 9), dtype=torch.int64)),
    dict(input_ids=torch.tensor([[7]]), attention_mask=torch.ones((1, 10), dtype=torch.int64)),
]
mi = ModelInputs(model, inputs)
ds = mi.guess_dynamic_shapes()
pprint.pprint(ds)

# %%
# Only the length of the mask is dynamic: the batch and the number of new
# tokens took equal sizes in every set. The exported program is specialized
# on them.

ep = torch.export.export(model, (), kwargs=inputs[0], dynamic_shapes=ds[1])
pprint.pprint(placeholders(ep))
assert placeholders(ep)[0][1] == (1, 1)

# %%
# Calling it with a batch of 2 fails, the error names the guard.

try:
    ep.module()(
        input_ids=torch.tensor([[5], [6]]), attention_mask=torch.ones((2, 9), dtype=torch.int64)
    )
except Exception as e:
    print(f"{type(e).__name__}: {e}")

# %%
# The fix is to give input sets where every dynamic dimension changes:
# another batch size and a prompt of several tokens (the prefill step).

inputs.append(
    dict(
        input_ids=torch.tensor([[5, 6, 7], [4, 5, 6]]),
        attention_mask=torch.ones((2, 3), dtype=torch.int64),
    )
)
ds = ModelInputs(model, inputs).guess_dynamic_shapes()
pprint.pprint(ds)

# %%
# ``set_batch_dimension_for``
# +++++++++++++++++++++++++++
#
# :class:`InputObserver <onnx_diagnostic.investigate.input_observer.InputObserver>`
# records the calls a model receives, through ``generate`` usually, where the batch
# size rarely changes. ``set_batch_dimension_for`` declares the first dimension
# of the given arguments dynamic (``True`` for all of them) even if it never changed.

observer = InputObserver()
with observer(model):
    model(input_ids=torch.tensor([[5, 6, 7]]), attention_mask=torch.ones((1, 3)))
    model(input_ids=torch.tensor([[8]]), attention_mask=torch.ones((1, 4)))
    model(input_ids=torch.tensor([[9]]), attention_mask=torch.ones((1, 5)))

print("without:", observer.infer_dynamic_shapes())
ds = observer.infer_dynamic_shapes(set_batch_dimension_for=True)
print("with   :", ds)
assert 0 in ds["input_ids"]

# %%
# 2. The example has size 1
# +++++++++++++++++++++++++
#
# :func:`torch.export.export` specializes the dimensions of size 0 or 1,
# even if they are declared dynamic. Exporting with the recorded arguments
# (batch 1) fails and says why.

kwargs = observer.infer_arguments()
print(string_type(kwargs, with_shape=True))
try:
    torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=ds)
except Exception as e:
    print(f"{type(e).__name__}: {e}")

# %%
# ``infer_arguments(for_export=True)`` grows the dynamic dimensions of size 1
# to 2 (and the dimensions bound to them, such as the mask length
# which adds the cache length and the number of new tokens).

kwargs = observer.infer_arguments(for_export=True, set_batch_dimension_for=True)
print(string_type(kwargs, with_shape=True))
ep = torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=ds)
pprint.pprint(placeholders(ep))

# %%
# 3. Two sizes are equal in the example
# +++++++++++++++++++++++++++++++++++++
#
# In the first call (the prefill step), the prompt and the attention mask have
# the same length since the cache is empty. A model slicing the mask with the
# number of new tokens, as the masking functions of :epkg:`transformers` do,
# makes :func:`torch.export.export` compare both sizes: the exported program
# keeps the result of the comparison as a guard.


class SlicingModel(torch.nn.Module):
    def forward(self, input_ids, attention_mask):
        return input_ids.to(torch.float32) * attention_mask[:, -input_ids.shape[1] :]


slicing_model = SlicingModel()
kwargs = observer.infer_arguments(index=0, for_export=True, set_batch_dimension_for=True)
print("prefill:", string_type(kwargs, with_shape=True))
ep = torch.export.export(slicing_model, (), kwargs=kwargs, dynamic_shapes=ds)
pprint.pprint(placeholders(ep))

# %%
# Both inputs share the same symbol for their second dimension:
# a decoding step (one new token, a longer mask) is rejected.

try:
    ep.module()(**observer.infer_arguments(index=1))
except Exception as e:
    print(f"{type(e).__name__}: {e}")

# %%
# Exporting with a decoding step avoids it (with a real LLM, the decoding steps
# are the default choice of ``infer_arguments``: they hold the cache,
# the prefill step does not).

kwargs = observer.infer_arguments(index=1, for_export=True, set_batch_dimension_for=True)
print("decoding:", string_type(kwargs, with_shape=True))
ep = torch.export.export(slicing_model, (), kwargs=kwargs, dynamic_shapes=ds)
pprint.pprint(placeholders(ep))
ep.module()(**observer.infer_arguments(index=2))

# %%
# 4. The model makes it static
# ++++++++++++++++++++++++++++
#
# A dimension combined with a weight of a fixed size cannot be dynamic.
# The export fails and names the dimension, the fix is to leave it out
# of the dynamic shapes.


class ModelWithBias(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(8))

    def forward(self, x):
        return x + self.bias


try:
    torch.export.export(
        ModelWithBias(),
        (torch.randn(3, 8),),
        dynamic_shapes=({0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC},),
    )
except Exception as e:
    print(f"{type(e).__name__}: {e}")

# %%
# A second set of inputs reveals static dimensions
# ++++++++++++++++++++++++++++++++++++++++++++++++
#
# The functions building test models in this package return a second set of
# inputs when asked (``add_second_input=True``): every dynamic dimension is different
# from the first set. :func:`check_inputs2 <onnx_diagnostic.tasks.check_inputs2>`
# verifies it: no problem is reported.

data = get_tiny_llm(add_second_input=True)
print("inputs :", string_type(data.inputs, with_shape=True))
print("inputs2:", string_type(data.inputs2, with_shape=True))
print("problems:", check_inputs2(data.inputs, data.inputs2, data.dynamic_shapes))

# %%
# Let's forget the batch dimension in the dynamic shapes: the export works
# but the exported program is only valid for a batch of 2.

forgotten = {
    k: (
        [{a: n for a, n in d.items() if n != "batch"} for d in v]
        if isinstance(v, list)
        else {a: n for a, n in v.items() if n != "batch"}
    )
    for k, v in data.dynamic_shapes.items()
}
pprint.pprint(forgotten)

with torch_export_patches(patch_transformers=True):
    ep = torch.export.export(
        data.model,
        (),
        kwargs=data.inputs,
        dynamic_shapes=use_dyn_not_str(forgotten),
        strict=False,
    )

# %%
# The first set of inputs does not see anything, ``inputs2`` does.

ep.module()(**data.inputs)
print("inputs: ok")
try:
    ep.module()(**data.inputs2)
except Exception as e:
    print(f"inputs2: {type(e).__name__}: {e}")

# %%

doc.plot_legend("why is my\ndimension\nstatic?", "torch.export.export", "tomato")
