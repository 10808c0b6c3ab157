"""
.. _l-plot-patches-applied:

Which patches were applied and why
==================================

:func:`torch_export_patches <onnx_diagnostic.torch_export_patches.torch_export_patches>`
makes :epkg:`transformers` models exportable: while the context is active,
it registers the pytree flattening of the caches and replaces a few functions
of :epkg:`transformers` which :func:`torch.export.export` cannot trace.
On exit, normally or through an exception, it restores every original object.
Every patch is declared once, with the reason why it exists, the error it fixes
and the versions it applies to.

The declared patches
++++++++++++++++++++

:func:`list_patches <onnx_diagnostic.torch_export_patches.list_patches>` describes them
for the installed versions. Column ``applies`` tells if a patch is needed with them,
``targets`` lists the functions it replaces (some classes are only known when
the patches are applied, such as the rotary embedding of every loaded architecture).
"""

import pprint
import textwrap
import pandas
import torch
import transformers
from onnx_diagnostic import doc
from onnx_diagnostic.torch_export_patches import list_patches, torch_export_patches
from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str
from onnx_diagnostic.torch_models.llms import get_tiny_llm

print("torch", torch.__version__, "transformers", transformers.__version__)
rows = list_patches()
df = pandas.DataFrame(rows)
print(df[["name", "applies", "versions"]].to_string())

# %%
# The reasons, and the errors users see without the patches.

for row in rows:
    print(f"-- {row['name']} ({row['versions']})")
    print(textwrap.indent(textwrap.fill("reason: " + row["reason"], 90), "   "))
    print(textwrap.indent(textwrap.fill("fixes: " + row["fixes"], 90), "   "))
    print(f"   targets: {row['targets']}")

# %%
# What the context does
# +++++++++++++++++++++
#
# With ``verbose=1``, the context prints what it registers, patches and restores.
# The patches are applied to the classes :epkg:`transformers` has loaded:
# we build the model first.
# Tiny-LLM with a dynamic rotary embedding (``rope_type="dynamic"``, the one of many
# models with a long context) needs both patches.

data = get_tiny_llm(dynamic_rope=True)
rotary_class = type(data.model.model.rotary_emb)
original_forward = rotary_class.forward

# %%
# The rotary embedding of Llama is now loaded, the second patch knows its target.

print([row["targets"] for row in list_patches()])

# %%

with torch_export_patches(patch_transformers=True, verbose=1):
    print("-- inside, forward is patched:", rotary_class.forward is not original_forward)
    ep = torch.export.export(
        data.model,
        (),
        kwargs=data.inputs,
        dynamic_shapes=use_dyn_not_str(data.dynamic_shapes),
        strict=False,
    )
print("-- outside, forward is restored:", rotary_class.forward is original_forward)
assert rotary_class.forward is original_forward

# %%
# The exported program takes every input with dynamic dimensions.

pprint.pprint([(n.name, n.meta["val"].shape) for n in ep.graph.nodes if n.op == "placeholder"][-5:])

# %%
# Without the patches
# +++++++++++++++++++
#
# ``patch_transformers=False`` still registers the caches but leaves
# :epkg:`transformers` unchanged. The dynamic rotary embedding compares
# the largest position with a threshold in Python, a value :func:`torch.export.export`
# does not know while tracing. Only the first lines of the error are printed.

try:
    with torch_export_patches(patch_transformers=False, verbose=1):
        torch.export.export(
            data.model,
            (),
            kwargs=data.inputs,
            dynamic_shapes=use_dyn_not_str(data.dynamic_shapes),
            strict=False,
        )
    print("The export worked without the patches with these versions.")
except Exception as e:
    print(f"{type(e).__name__}:")
    print("\n".join(str(e).split("\n")[:3]))

# %%

doc.plot_legend("patches\napplied", "torch_export_patches", "green")
