"""
What onnxruntime-genai needs to run an exported LLM: a ``genai_config.json``
beside the ONNX model. :func:`make_genai_config` builds it from the :epkg:`transformers`
configuration of the model and the input and output names of the ONNX graph,
:func:`write_genai_config` saves it.
:func:`to_onnx(..., genai_config=True) <onnx_diagnostic.export.api.to_onnx>` calls it.

The graphs :func:`to_onnx <onnx_diagnostic.export.api.to_onnx>` produces take
``input_ids``, ``attention_mask``, ``position_ids`` and
``past_key_values.N.key`` / ``past_key_values.N.value`` and return ``logits`` and
``present.N.key`` / ``present.N.value``, every present being the past concatenated with
the new positions: the configuration says so (``past_present_share_buffer`` is false,
onnxruntime-genai then feeds each step the presents of the previous one). A model exported
with ``to_onnx(..., genai_style=True)`` (``GroupQueryAttention``, present written in the
buffer of past) gets ``past_present_share_buffer`` true and a ``max_length`` bounded by its
rotary tables. The fields follow what the model builder of onnxruntime-genai writes for the
same model.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Any

from ..helpers.rt_helper import _MAX_LENGTH_KEY, _SHARED_BUFFER_KEY

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["GENAI_CONFIG", "genai_generate", "make_genai_config", "write_genai_config"]

#: the file onnxruntime-genai reads in the folder of the model
GENAI_CONFIG = "genai_config.json"

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_PRESENT = re.compile(r"^present\.(\d+)\.(key|value)$")
_OPTIONAL_INPUTS = ("attention_mask", "position_ids")


def _graph_io(model: Any) -> tuple[list[str], list[str], dict[str, list[Any]], dict[str, str]]:
    """Input names, output names, the shapes of the inputs and the metadata of an ONNX
    model."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"make_genai_config: model={str(model)!r} does not exist")
        model = onnx.load(str(model), load_external_data=False)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(
            "make_genai_config: model must be an onnx.ModelProto or a file name, "
            f"not {type(model).__name__}"
        )
    shapes = {}
    for i in model.graph.input:
        dims = i.type.tensor_type.shape.dim
        shapes[i.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    meta = {p.key: p.value for p in model.metadata_props}
    return (
        [i.name for i in model.graph.input],
        [o.name for o in model.graph.output],
        shapes,
        meta,
    )


def _config_value(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def _first(token_id: Any) -> Any:
    """onnxruntime-genai takes an int or a list of ints, transformers may give either."""
    if isinstance(token_id, (list, tuple)) and len(token_id) == 1:
        return token_id[0]
    return token_id


def make_genai_config(
    config: Any,
    model: str | os.PathLike | onnx.ModelProto,
    filename: str = "model.onnx",
    max_length: int | None = None,
    provider: str = "cpu",
    model_type: str | None = None,
) -> dict[str, Any]:
    """
    Builds the content of ``genai_config.json`` for an ONNX model exported by
    :func:`to_onnx <onnx_diagnostic.export.api.to_onnx>`, greedy search by default.

    :param config: the configuration of the model (``model.config``, a
        :class:`transformers.PretrainedConfig` or a dictionary with the same keys)
    :param model: the ONNX model or its file name (only its inputs and outputs are read)
    :param filename: the file name of the model, relative to the folder of the
        configuration
    :param max_length: maximum number of tokens (prompt included) onnxruntime-genai
        generates, ``max_position_embeddings`` if None
    :param provider: ``"cpu"`` or ``"cuda"``
    :param model_type: the model type onnxruntime-genai knows (``llama``, ``qwen2``,
        ``phi3``...), ``config.model_type`` if None
    :return: a dictionary to save as json
    :raises ValueError: when the model has not the inputs and outputs onnxruntime-genai
        can feed, or the configuration misses a field

    >>> from transformers import LlamaConfig
    >>> from onnx import TensorProto, helper as oh
    >>> config = LlamaConfig(
    ...     hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
    ...     num_hidden_layers=1, vocab_size=50, max_position_embeddings=128,
    ... )
    >>> names = ["input_ids", "attention_mask", "position_ids"]
    >>> names += ["past_key_values.0.key", "past_key_values.0.value"]
    >>> outputs = ["logits", "present.0.key", "present.0.value"]
    >>> graph = oh.make_graph(
    ...     [], "g",
    ...     [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
    ...     [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
    ... )
    >>> cfg = make_genai_config(config, oh.make_model(graph))
    >>> cfg["model"]["decoder"]["inputs"]["past_key_names"]
    'past_key_values.%d.key'
    >>> cfg["model"]["decoder"]["head_size"], cfg["search"]["max_length"]
    (8, 128)
    """
    if config is None or isinstance(config, (str, bytes, int, float)):
        raise TypeError(
            "make_genai_config: config must be a transformers configuration or a dict, "
            f"not {type(config).__name__}"
        )
    if provider not in ("cpu", "cuda"):
        raise ValueError(f"make_genai_config: provider must be 'cpu' or 'cuda', got {provider!r}")
    if not isinstance(filename, str) or not filename:
        raise ValueError(f"make_genai_config: filename must be a file name, got {filename!r}")
    inputs, outputs, shapes, meta = _graph_io(model)
    if "input_ids" not in inputs:
        raise ValueError(
            f"make_genai_config: model has no input 'input_ids', its inputs are {inputs}"
        )
    if "logits" not in outputs:
        raise ValueError(
            f"make_genai_config: model has no output 'logits', its outputs are {outputs}"
        )
    past = sorted((int(m.group(1)), m.group(2)) for m in map(_PAST.match, inputs) if m)
    present = sorted((int(m.group(1)), m.group(2)) for m in map(_PRESENT.match, outputs) if m)
    layers = len(past) // 2
    expected = [(i, kind) for i in range(layers) for kind in ("key", "value")]
    if not past or past != expected or present != expected:
        raise ValueError(
            "make_genai_config: model must take past_key_values.N.key / .value for N = 0.."
            "layers-1 and return present.N.key / .value, its inputs are "
            f"{inputs} and its outputs {outputs}"
        )
    unknown = [
        n for n in inputs if n != "input_ids" and n not in _OPTIONAL_INPUTS and not _PAST.match(n)
    ]
    if unknown:
        raise ValueError(
            f"make_genai_config: onnxruntime-genai cannot feed the inputs {unknown} of model, "
            f"it feeds input_ids, {', '.join(_OPTIONAL_INPUTS)} and the cache"
        )
    missing = [
        k
        for k in ("hidden_size", "num_attention_heads", "vocab_size")
        if _config_value(config, k) is None
    ]
    if missing:
        raise ValueError(f"make_genai_config: config has no {missing}")
    hidden = _config_value(config, "hidden_size")
    heads = _config_value(config, "num_attention_heads")
    kv_heads = _config_value(config, "num_key_value_heads") or heads
    head_size = _config_value(config, "head_dim") or hidden // heads
    # the graph says more than the configuration when its cache shapes are static
    key_shape = shapes["past_key_values.0.key"]
    if len(key_shape) == 4 and isinstance(key_shape[1], int) and key_shape[1] > 0:
        kv_heads = key_shape[1]
    if len(key_shape) == 4 and isinstance(key_shape[3], int) and key_shape[3] > 0:
        head_size = key_shape[3]
    context = _config_value(config, "max_position_embeddings") or max_length
    # a model with GroupQueryAttention (to_onnx(..., genai_style=True)): its rotary tables
    # bound the length, present.N.* may be written in the buffers of past_key_values.N.*
    shared = meta.get(_SHARED_BUFFER_KEY) == "1"
    limit = meta.get(_MAX_LENGTH_KEY, "")
    if shared and limit.isdigit():
        context = min(context or int(limit), int(limit))
        if max_length is not None and max_length > int(limit):
            raise ValueError(
                f"make_genai_config: max_length={max_length} exceeds the {limit} positions "
                "of the model's rotary tables"
            )
    if max_length is None:
        max_length = context
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0:
        raise ValueError(
            f"make_genai_config: max_length must be an int > 0 (or config must have "
            f"max_position_embeddings), got {max_length!r}"
        )
    model_type = model_type or _config_value(config, "model_type")
    if not model_type:
        raise ValueError("make_genai_config: config has no model_type, give model_type")
    eos = _first(_config_value(config, "eos_token_id"))
    pad = _first(_config_value(config, "pad_token_id"))
    decoder_inputs = {"input_ids": "input_ids"}
    decoder_inputs.update({n: n for n in _OPTIONAL_INPUTS if n in inputs})
    decoder_inputs["past_key_names"] = "past_key_values.%d.key"
    decoder_inputs["past_value_names"] = "past_key_values.%d.value"
    provider_options = [] if provider == "cpu" else [{"cuda": {}}]
    return {
        "model": {
            "bos_token_id": _first(_config_value(config, "bos_token_id")),
            "context_length": max(context, max_length),
            "decoder": {
                "session_options": {
                    "log_id": "onnxruntime-genai",
                    "provider_options": provider_options,
                },
                "filename": filename,
                "head_size": head_size,
                "hidden_size": hidden,
                "inputs": decoder_inputs,
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": heads,
                "num_hidden_layers": layers,
                "num_key_value_heads": kv_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": eos if pad is None else pad,
            "type": model_type,
            "vocab_size": _config_value(config, "vocab_size"),
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": max_length,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            # present = Concat(past, new): a new buffer every step, not a shared one,
            # unless the attention writes the new positions in the buffer of the past
            "past_present_share_buffer": shared,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def write_genai_config(
    config: Any,
    model_file: str | os.PathLike,
    max_length: int | None = None,
    provider: str = "cpu",
    model_type: str | None = None,
    overwrite: bool = True,
) -> str:
    """
    Writes ``genai_config.json`` (:func:`make_genai_config`) in the folder of
    ``model_file``: onnxruntime-genai then loads the folder
    (``onnxruntime_genai.Model(folder)``).

    :param config: the configuration of the model (``model.config``)
    :param model_file: the saved ONNX model
    :param max_length: see :func:`make_genai_config`
    :param provider: see :func:`make_genai_config`
    :param model_type: see :func:`make_genai_config`
    :param overwrite: replaces an existing ``genai_config.json``, else raises
        :class:`FileExistsError`
    :return: the name of the written file

    >>> import os, tempfile
    >>> from transformers import LlamaConfig
    >>> from onnx import TensorProto, helper as oh, save
    >>> names = ["input_ids", "past_key_values.0.key", "past_key_values.0.value"]
    >>> outputs = ["logits", "present.0.key", "present.0.value"]
    >>> graph = oh.make_graph(
    ...     [], "g",
    ...     [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
    ...     [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
    ... )
    >>> config = LlamaConfig(hidden_size=16, num_attention_heads=2, vocab_size=50)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save(oh.make_model(graph), os.path.join(folder, "llm.onnx"))
    ...     written = write_genai_config(config, os.path.join(folder, "llm.onnx"))
    ...     print(os.path.basename(written))
    genai_config.json
    """
    if not isinstance(model_file, (str, os.PathLike)):
        raise TypeError(
            "write_genai_config: model_file must be the file name of a saved ONNX model, "
            f"not {type(model_file).__name__}"
        )
    model_file = str(model_file)
    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"write_genai_config: model_file={model_file!r} does not exist")
    content = make_genai_config(
        config,
        model_file,
        filename=os.path.basename(model_file),
        max_length=max_length,
        provider=provider,
        model_type=model_type,
    )
    target = os.path.join(os.path.dirname(os.path.abspath(model_file)), GENAI_CONFIG)
    if not overwrite and os.path.exists(target):
        raise FileExistsError(f"write_genai_config: {target!r} exists and overwrite is False")
    with open(target, "w") as f:
        json.dump(content, f, indent=4)
    return target


def genai_generate(model: Any, input_ids: Any, max_new_tokens: int) -> Any:
    """
    Greedy generation with :epkg:`onnxruntime-genai` of exactly ``max_new_tokens`` tokens
    (an eos token does not stop it), to compare its tokens with
    :func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>` or
    ``generate``. A generator is created at every call, as for every prompt.

    :param model: a folder holding ``genai_config.json`` and the model
        (``to_onnx(..., genai_config=True)``, onnxruntime-genai's builder) or an
        ``onnxruntime_genai.Model``
    :param input_ids: the prompt, shape ``(batch, sequence)``, no padding
    :param max_new_tokens: the number of tokens to generate, >= 1
    :return: the prompt followed by the generated tokens, a ``torch.int64`` tensor
    :raises ImportError: when onnxruntime-genai is not installed
    :raises ValueError: when ``input_ids`` or ``max_new_tokens`` are not as described

    >>> import os, tempfile, torch
    >>> from onnx_diagnostic.export.api import to_onnx
    >>> from onnx_diagnostic.torch_export_patches import torch_export_patches
    >>> from onnx_diagnostic.torch_models.llms import get_tiny_llm
    >>> data = get_tiny_llm()
    >>> folder = tempfile.mkdtemp()
    >>> with torch_export_patches(patch_transformers=True):
    ...     _ = to_onnx(data.model, kwargs=data.inputs, dynamic_shapes=data.dynamic_shapes,
    ...                 exporter="custom", filename=os.path.join(folder, "model.onnx"),
    ...                 genai_config=True)
    >>> genai_generate(folder, torch.tensor([[1, 2, 3]]), 4).shape  # doctest: +SKIP
    torch.Size([1, 7])
    """
    import numpy as np
    import torch

    try:
        import onnxruntime_genai as og
    except ImportError as e:
        raise ImportError(
            "genai_generate: onnxruntime-genai is not installed "
            "(pip install onnx-diagnostic[genai])"
        ) from e
    if isinstance(input_ids, np.ndarray):
        input_ids = torch.from_numpy(input_ids)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or 0 in input_ids.shape:
        raise ValueError(
            "genai_generate: input_ids must be a tensor of shape (batch, sequence), got "
            f"{getattr(input_ids, 'shape', type(input_ids).__name__)}"
        )
    if (
        not isinstance(max_new_tokens, int)
        or isinstance(max_new_tokens, bool)
        or max_new_tokens < 1
    ):
        raise ValueError(
            f"genai_generate: max_new_tokens must be an int >= 1, got {max_new_tokens!r}"
        )
    if isinstance(model, (str, os.PathLike)):
        model = og.Model(str(model))
    prompt = input_ids.cpu().numpy().astype(np.int64)
    length = prompt.shape[1] + max_new_tokens
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=length, min_length=length, do_sample=False, batch_size=prompt.shape[0]
    )
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    while not generator.is_done():
        generator.generate_next_token()
    rows = [np.array(generator.get_sequence(i), dtype=np.int64) for i in range(prompt.shape[0])]
    return torch.from_numpy(np.stack(rows))
