"""
.. _l-plot-intermediate-results:

Dumps intermediate results of a torch model
===========================================

Looking for discrepancies is quickly painful. Discrepancies
come from two results obtained with the same models
implemented in two different ways, :epkg:`pytorch` and :epkg:`onnx`.
Models are big so they take time to load and to run.
Discrepancies may come from one of the submodules, it helps to
store their inputs and outputs to replay them one by one.

A small LLM
+++++++++++

:func:`onnx_diagnostic.helpers.torch_helper.dummy_llm` builds an untrained
model with the structure of a decoder (such as
``codellama/CodeLlama-7b-Python-hf``): an embedding, a decoder layer made of
an attention block, a feed forward block and two normalizations.
"""

import onnx
import torch
import matplotlib.pyplot as plt
from onnx_diagnostic import doc
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.helpers.torch_helper import dummy_llm
from onnx_diagnostic.helpers.mini_onnx_builder import create_input_tensors_from_onnx_model
from onnx_diagnostic.helpers.torch_helper import steal_forward


model, inputs, ds = dummy_llm(dynamic_shapes=True)

print(f"type(model)={type(model)}")
print(f"inputs={string_type(inputs, with_shape=True)}")
print(f"ds={string_type(ds, with_shape=True)}")

# %%
# It contains the following submodules.

for name, mod in model.named_modules():
    print(f"- {name}: {type(mod)}")

# %%
# Steal and dump the output of submodules
# +++++++++++++++++++++++++++++++++++++++
#
# The following context spies on the intermediate results
# for the following module and submodules. It stores
# in one onnx file all the inputs/outputs for those.

with steal_forward(
    [
        ("model", model),
        ("model.decoder", model.decoder),
        ("model.decoder.attention", model.decoder.attention),
        ("model.decoder.feed_forward", model.decoder.feed_forward),
        ("model.decoder.norm_1", model.decoder.norm_1),
        ("model.decoder.norm_2", model.decoder.norm_2),
    ],
    dump_file="plot_dump_intermediate_results.inputs.onnx",
    verbose=1,
    storage_limit=2**28,
):
    model(*inputs)

# %%
# Restores saved inputs/outputs
# +++++++++++++++++++++++++++++
#
# All the intermediate tensors were saved in one unique onnx model,
# every tensor is stored in a constant node.
# The model can be run with any runtime to restore the inputs
# and function :func:`create_input_tensors_from_onnx_model
# <onnx_diagnostic.helpers.mini_onnx_builder.create_input_tensors_from_onnx_model>`
# can restore their names.

saved_tensors = create_input_tensors_from_onnx_model("plot_dump_intermediate_results.inputs.onnx")
for k, v in saved_tensors.items():
    print(f"{k} -- {string_type(v, with_shape=True)}")

# %%
# Let's explain the naming convention.
#
# ::
#
#    ('model.decoder.norm_2', 0, 'I') -- ((T1s2x30x16,),{})
#                |            |   |
#                |            |   +--> input, the format is args, kwargs
#                |            |
#                |            +--> iteration, 0 means the first time the execution
#                |                 went through that module
#                |                 it is possible to call multiple times,
#                |                 the model to store more
#                |
#                +--> the name given to steal forward
#
# The same goes for output except ``'I'`` is replaced by ``'O'``.
#
# ::
#
#    ('model.decoder.norm_2', 0, 'O') -- T1s2x30x16
#
# This trick can be used to compare intermediate results coming
# from pytorch to any other implementation of the same model
# as long as it is possible to map the stored inputs/outputs.

# %%
# Conversion to ONNX
# ++++++++++++++++++
#
# The difficult point is to be able to map the saved intermediate
# results to intermediate results in ONNX.
# Let's create the ONNX model.

epo = torch.onnx.export(model, inputs, dynamic_shapes=ds, dynamo=True)
epo.optimize()
epo.save("plot_dump_intermediate_results.onnx")

# %%
# It looks like the following.
# The original example used ``plot_dot`` from another package, which requires
# :epkg:`graphviz`. This page draws the graph with :epkg:`matplotlib` only:
# one box per node, the rows follow the order of the computation.


def plot_onnx_graph(onx: onnx.ModelProto):
    """Draws the main graph of an ONNX model, returns the matplotlib axes."""
    graph = onx.graph
    # Every node is placed on the row given by its depth
    # (the longest path from an input), arrows link a producer to its consumers.
    depth = {i.name: 0 for i in graph.input}
    depth.update({i.name: 0 for i in graph.initializer})
    positions, rows = [], {}
    producer = {}
    for n, node in enumerate(graph.node):
        level = 1 + max((depth.get(name, 0) for name in node.input if name), default=0)
        for name in node.output:
            depth[name] = level
            producer[name] = n
        column = rows.get(level, 0)
        rows[level] = column + 1
        positions.append((level, column))
    width = max(rows.values())
    fig, ax = plt.subplots(1, 1, figsize=(max(4, width * 1.6), max(4, len(rows) * 0.5)))
    for n, node in enumerate(graph.node):
        level, column = positions[n]
        x = (column + 0.5) / rows[level] * width
        for name in node.input:
            if name in producer:
                plevel, pcolumn = positions[producer[name]]
                px = (pcolumn + 0.5) / rows[plevel] * width
                ax.annotate(
                    "",
                    xy=(x, -level),
                    xytext=(px, -plevel),
                    arrowprops=dict(arrowstyle="->", color="gray", lw=0.6),
                )
        ax.text(
            x,
            -level,
            node.op_type,
            ha="center",
            va="center",
            fontsize=7,
            bbox=dict(boxstyle="round", facecolor="#ddeeff", edgecolor="#336699"),
        )
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(-max(rows) - 1, 0)
    ax.axis("off")
    ax.set_title(f"{len(graph.node)} nodes, inputs {[i.name for i in graph.input]}")
    fig.tight_layout()
    return ax


onx = onnx.load("plot_dump_intermediate_results.onnx")
plot_onnx_graph(onx)

# %%

doc.plot_legend("steal and dump\nintermediate\nresults", "steal_forward", "blue")
