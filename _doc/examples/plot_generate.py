"""
.. _l-plot-generate:

=================================
From a LLM to processing a prompt
=================================

Method ``generate`` generates the model answer for a given prompt.
Let's implement our own to understand better how it works and
then apply it to an ONNX model.

Example with Phi 1.5
====================

:epkg:`microsoft/Phi-1.5` is a small LLM. The example given on its model page
asks it to write a function printing prime numbers.

.. note::

    This page runs offline. The original example downloaded the trained
    model and its tokenizer. Here the model is built untrained from the
    configuration shipped with the package: the full size Phi 1.5 with
    :func:`get_pretrained_config <onnx_diagnostic.torch_models.hghub.hub_api.get_pretrained_config>`
    and :epkg:`transformers`' ``from_config``, or, when the example runs as a unit test
    (``UNITTEST_GOING=1``), a small :epkg:`arnir0/Tiny-LLM` from
    :func:`get_untrained_model_with_inputs
    <onnx_diagnostic.torch_models.hghub.get_untrained_model_with_inputs>`.
    No tokenizer can be downloaded either: the prompt is given as token ids and the
    answers are printed as token ids. An untrained model produces random tokens,
    but the three ways to generate below must produce the same ones.
"""

import os
import sys
import time
import pandas
from tqdm import tqdm
import torch
from transformers import AutoModelForCausalLM
from onnx_diagnostic.ext_test_case import unit_test_going
from onnx_diagnostic.helpers import string_type
from onnx_diagnostic.helpers.torch_helper import to_any, get_weight_type
from onnx_diagnostic.helpers.rt_helper import onnx_generate
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs
from onnx_diagnostic.torch_models.hghub.hub_api import get_pretrained_config, task_from_id
from onnx_diagnostic.tasks import random_input_kwargs
from onnx_diagnostic.export.api import to_onnx


device = "cuda" if torch.cuda.is_available() else "cpu"
data = []
torch.manual_seed(0)

print("-- load the model...")
if unit_test_going():
    # unit_test_going() returns True if UNITTEST_GOING is 1
    # The example switches to a faster scenario.
    model_id = "arnir0/Tiny-LLM"
    data_export = get_untrained_model_with_inputs(model_id)
    model = data_export["model"]
    export_inputs = data_export["inputs"]
    export_shapes = data_export["dynamic_shapes"]
    max_new_tokens = 10
else:
    model_id = "microsoft/phi-1_5"
    config = get_pretrained_config(model_id)
    # untrained, float16 on GPU as the trained weights, float32 on CPU
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.float16 if device == "cuda" else torch.float32
    )
    task = task_from_id(model_id)
    kwargs, fct = random_input_kwargs(config, task)
    res = fct(model, config, add_second_input=False, **kwargs)
    export_inputs = res["inputs"]
    export_shapes = res["dynamic_shapes"]
    max_new_tokens = 100
model = model.eval().to(device)
print("-- done.")

# %%
# The prompt of the original example was the beginning of a python function.
# Without a tokenizer, it is replaced by token ids standing for it
# (any id below the vocabulary size is valid).

prompt = '''def print_prime(n):
   """
   Print all primes between 1 and n
   """'''
input_ids = torch.tensor(
    [[4299, 3601, 62, 35505, 7, 77, 2599, 198, 220, 220, 220, 37227, 198, 220, 220, 220]],
    dtype=torch.int64,
)
input_ids = (input_ids % model.config.vocab_size).to(device)

print("-- compute the answer...")
begin = time.perf_counter()
outputs = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False)
duration = time.perf_counter() - begin
print(f"-- done in {duration}")
data.append(dict(name="generate", duration=duration))
print("output shape:", string_type(outputs, with_shape=True, with_min_max=True))
print("tokens:", outputs[0].tolist())
expected_tokens = outputs

# %%
# eos_token_id?
# =============
#
# This token means the end of the answer. The tokenizer knows it,
# the configuration of the model often too.

eos_token_id = model.generation_config.eos_token_id
print("eos_token_id=", eos_token_id)

# %%
# Custom method generate
# ======================
#
# Let's implement a simple function replicating what method
# ``generate`` does.


def simple_generate_with_cache(
    model, input_ids: torch.Tensor, eos_token_id: int, max_new_tokens: int = 100
):
    # First call: prefill
    outputs = model(input_ids, use_cache=True)

    # Next calls: decode
    for _ in tqdm(list(range(max_new_tokens))):
        next_token_logits = outputs.logits[:, -1, :]
        past_key_values = outputs.past_key_values

        # The most probable next token is chosen.
        next_token_id = torch.argmax(next_token_logits, dim=-1, keepdim=True)
        # But we could select it using a multinomial law
        # <<< probs = torch.softmax(next_token_logits / temperature, dim=-1)
        # <<< top_probs, top_indices = torch.topk(probs, top_k)
        # <<< next_token_id = top_indices[torch.multinomial(top_probs, 1)]

        if next_token_id.item() == eos_token_id:
            break
        input_ids = torch.cat([input_ids, next_token_id], dim=-1)

        # Feed only the new token, but with the cache
        outputs = model(next_token_id, use_cache=True, past_key_values=past_key_values)

    return input_ids


print("-- compute the answer with custom generate...")
begin = time.perf_counter()
with torch.no_grad():
    outputs = simple_generate_with_cache(
        model, input_ids, eos_token_id=eos_token_id, max_new_tokens=max_new_tokens
    )
duration = time.perf_counter() - begin
print(f"-- done in {duration}")
data.append(dict(name="custom", duration=duration))

print("-- done.")
print("output shape:", string_type(outputs, with_shape=True, with_min_max=True))
print("tokens:", outputs[0].tolist())
print("same tokens as generate:", outputs.tolist() == expected_tokens.tolist())

# %%
# Method generate for onnx models
# ===============================
#
# We first need to export the model into ONNX.
#
# ONNX Conversion
# +++++++++++++++
#
# :func:`onnx_diagnostic.export.api.to_onnx` offers two exporters:
# ``exporter="custom"`` translates the ATen graph of :func:`torch.export.export` itself
# and fuses attention, rotary embedding and RMS normalization into onnxruntime's operators
# (:mod:`onnx_diagnostic.export.custom`), ``exporter="onnx-dynamo"`` uses
# :func:`torch.onnx.export`. The example uses the first one unless ``dynamo`` is given
# on the command line. The export runs inside :func:`torch_export_patches
# <onnx_diagnostic.torch_export_patches.torch_export_patches>`.

if "position_ids" in export_inputs:
    del export_inputs["position_ids"]
    del export_shapes["position_ids"]
dtype = get_weight_type(model)
print("-- model dtype:", dtype)
export_inputs["past_key_values"] = to_any(export_inputs["past_key_values"], dtype)
exporter = "onnx-dynamo" if "dynamo" in sys.argv else "custom"
model_name = f"model_{model_id.replace('/', '-')}.{exporter}.onnx"
if unit_test_going() or not os.path.exists(model_name):
    # This step is slow so let's skip it if it was already done.
    # The weights of an untrained model depend on the seed and the installed
    # versions, the fast path always exports.
    print("-- conversion to ONNX.")
    begin = time.perf_counter()
    with torch_export_patches(patch_transformers=True):
        to_onnx(
            model,
            (),
            kwargs=to_any(export_inputs, device),
            dynamic_shapes=export_shapes,
            filename=model_name,
            verbose=1,
            exporter=exporter,
        )
    duration = time.perf_counter() - begin
    print(f"-- done in {duration}")

# %%
# onnx_generate
# +++++++++++++
#
# Then we can call method generate for two tokens.
# This function is part of :mod:`onnx_diagnostic` but follows the implementation
# seen earlier for a torch model.
# Let's ask first the function to return the session to avoid creating on the second call.

_res, session, _feeds = onnx_generate(
    model_name, input_ids, 2, max_new_tokens=2, return_session=True
)

# And now the full answer.
print("-- compute the answer with custom generate...")
begin = time.perf_counter()
outputs = onnx_generate(
    session, input_ids, eos_token_id=eos_token_id, max_new_tokens=max_new_tokens
)
duration = time.perf_counter() - begin
print(f"-- done in {duration}")
data.append(dict(name="onnx", duration=duration))

print("-- done.")
print("output shape:", string_type(outputs, with_shape=True, with_min_max=True))
print("tokens:", outputs[0].tolist())
print("same tokens as generate:", outputs.tolist() == expected_tokens.tolist())

# %%
# Plots
# =====

df = pandas.DataFrame(data).set_index("name")
print(df)

# %%

ax = df.plot(kind="bar", title="Time (s) comparison to generate a prompt.", rot=45)
ax.figure.tight_layout()

# %%
# Page :ref:`l-plot-generate-benchmark` measures these durations properly.
