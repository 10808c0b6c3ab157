"""
.. _l-plot-find-the-layer-that-breaks:

Find the layer that breaks
==========================

An exported model gives other logits than torch. :func:`max_diff
<onnx_diagnostic.helpers.helper.max_diff>` says *that* they differ, the question is *where*.
:func:`compare_intermediates <onnx_diagnostic.investigate.compare.compare_intermediates>`
runs the exported program node by node with torch and the ONNX model with onnxruntime on
the same inputs, pairs the intermediate results (both exporters name the ONNX values after
the FX nodes), and returns a table with the first divergence, in execution order, with
the module and the line of source it comes from.

To have something to find, the example breaks the export on purpose: the translation of
``aten.linear`` of the custom exporter is replaced, for this example only, by one which
flips the sign of the result in the MLP of the second layer.

A model with two layers
+++++++++++++++++++++++
"""

from unittest import mock

import torch
from onnx_diagnostic.export.api import to_onnx
from onnx_diagnostic.export.custom.aten_ops import TRANSLATIONS
from onnx_diagnostic.export.custom.traceability import module_of, node_origin
from onnx_diagnostic.helpers import max_diff
from onnx_diagnostic.helpers.torch_helper import torch_deepcopy
from onnx_diagnostic.investigate.compare import compare_intermediates
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.llms import get_tiny_llm

data = get_tiny_llm(num_hidden_layers=2)
model, inputs, ds = data.model, data.inputs, data.dynamic_shapes

# %%
# A broken translation
# ++++++++++++++++++++
#
# The translation receives the FX node: :func:`module_of
# <onnx_diagnostic.export.custom.traceability.module_of>` tells which module called it.

original = TRANSLATIONS[torch.ops.aten.linear.default]


def broken_linear(g, node, *args, **kwargs):
    res = original(g, node, *args, **kwargs)
    if module_of(node)[0] == "model.layers.1.mlp.down_proj":
        return g.op("Neg", res)
    return res


with mock.patch.dict(TRANSLATIONS, {torch.ops.aten.linear.default: broken_linear}):
    with torch_export_patches(patch_transformers=True):
        onx = to_onnx(
            model, kwargs=torch_deepcopy(inputs), dynamic_shapes=ds, exporter="custom"
        )

# %%
# Every node of the ONNX model says where it comes from.

for node in onx.graph.node:
    if node.op_type == "Neg":
        origin = node_origin(node)
        print(node.op_type, origin.fx_nodes, origin.module, origin.module_classes)
        print(origin.sources[0])

# %%
# The outputs differ
# ++++++++++++++++++

from onnx_diagnostic.export.api import onnx_feeds  # noqa: E402
from onnx_diagnostic.helpers.rt_helper import make_session, run_session  # noqa: E402

expected = model(**torch_deepcopy(inputs))
got = run_session(make_session(onx), onnx_feeds(model, kwargs=torch_deepcopy(inputs)))
print(max_diff(expected, got))

# %%
# Where
# +++++
#
# The comparison exports the model again (the same way, under the same patches) and
# runs both sides.

with torch_export_patches(patch_transformers=True):
    res = compare_intermediates(
        model, onx, kwargs=torch_deepcopy(inputs), dynamic_shapes=ds, atol=1e-4, rtol=1e-4
    )
print(res.report())

# %%
# The first divergence.

first = res.first_divergence
print(first[["torch_node", "target", "onnx_op", "module", "module_class", "max_abs"]])
print(first["source"])

# %%
# The table has one row per aligned pair, in execution order.

print(res.table[["step", "torch_node", "onnx_op", "module", "max_abs", "status"]].tail(12))

# %%
# The largest error per module (here per layer), modules in execution order.

print(res.summary_by_module(depth=3))

# %%
# The same from the command line, on an ONNX file and the model id it comes from::
#
#   python -m onnx_diagnostic validate -m arnir0/Tiny-LLM --export custom --run \\
#       --compare-intermediates
#   python -m onnx_diagnostic sbs -m arnir0/Tiny-LLM --onnx model.onnx -o table.csv
