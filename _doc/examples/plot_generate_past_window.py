"""
.. _l-plot-generate-past-window:

Generate past the sliding window with an exported Gemma-3
=========================================================

Gemma-2, Gemma-3, Cohere-2 or gpt-oss mix *sliding* attention layers, which only look at
the last ``sliding_window`` positions, with *full* attention layers. transformers keeps
``window - 1`` positions in the cache of a sliding layer and a growing cache in the full
layers. A model exported naively keeps whatever shapes the example inputs had: once the
text reaches the window, onnxruntime fails (``Shape mismatch attempting to re-use buffer``,
``GatherND ... invalid index``) or, worse, computes something else.

The inputs this library builds for such a model already hold a cache at the size of the
window for the sliding layers (with its own dynamic dimension), the patches of
``torch_export_patches`` make the mask of each layer type exportable without branches, and
:func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>` feeds each layer
the cache the previous step returned, whatever its length. The example exports an
untrained Gemma-3 whose window is reduced to 8 and generates three windows of text with
onnxruntime, next to ``generate``.

An untrained Gemma-3 with a small window
++++++++++++++++++++++++++++++++++++++++
"""

import os
import tempfile

import torch
from onnx_diagnostic.export.api import to_onnx
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.helpers.rt_helper import onnx_generate
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs

WINDOW = 8
torch.manual_seed(0)
data = get_untrained_model_with_inputs(
    "google/gemma-3-1b-it", model_kwargs=dict(sliding_window=WINDOW)
)
model, inputs, ds = data["model"], data["inputs"], data["dynamic_shapes"]
print("layer types:", data["configuration"].layer_types)
print("inputs:", string_type(inputs, with_shape=True))

# %%
# The sliding layers of the cache hold ``window - 1`` positions, the full layers more;
# the dynamic shapes give each kind its own dimension.

print("dynamic shapes:", ds)

# %%
# Export
# ++++++

folder = tempfile.mkdtemp()
filename = os.path.join(folder, "gemma3.onnx")
with torch_export_patches(patch_transformers=True):
    to_onnx(model, kwargs=inputs, dynamic_shapes=ds, filename=filename, exporter="custom")

# %%
# Generate three windows
# ++++++++++++++++++++++
#
# The prompt is five tokens long, 24 tokens are generated: the sliding layers' cache
# stops growing at ``window - 1`` after the third step, the full layers' goes on.

prompt = torch.randint(3, model.config.vocab_size, (1, 5))
n_new = 3 * WINDOW
got = onnx_generate(filename, prompt, eos_token_id=None, max_new_tokens=n_new)
with torch.no_grad():
    expected = model.generate(
        prompt,
        max_new_tokens=n_new,
        min_new_tokens=n_new,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
print("onnx_generate:", got[0, 5:].tolist())
print("generate     :", expected[0, 5:].tolist())
print("identical tokens:", bool((got == expected).all()), "-", got.shape[1] - 5, "new tokens")

# %%
# What the last step received: the sliding layers' cache is ``window - 1`` long, the
# full layers' holds the whole text.

_, _, feeds = onnx_generate(
    filename, prompt, eos_token_id=None, max_new_tokens=n_new, return_session=True
)
print({k: tuple(v.shape) for k, v in feeds.items() if k.startswith("past_key_values.")})
