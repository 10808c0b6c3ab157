"""
Runs exported LLMs with :epkg:`onnxruntime`: :func:`onnx_generate` generates tokens
with an ONNX model taking ``input_ids``, optionally ``attention_mask``, ``position_ids``,
``cache_position``, and a cache ``past_key_values.N.key`` / ``past_key_values.N.value``
(``.conv_state`` / ``.recurrent_state`` for the states of linear attention and mamba
layers, ``.cumulative_length`` for a static cache) returned as ``present.N.key``... (the
names :func:`onnx_diagnostic.export.api.to_onnx` gives).

The cache never leaves onnxruntime between two steps: the outputs of one step are
bound (:class:`onnxruntime.IOBinding`) as the inputs of the next one, on the device of the
session (CPU or CUDA). The small inputs (token, position, mask) and the logits live in
host buffers allocated once and updated in place; the next token is the argmax of the
logits of the last position (numpy, no copy).

See :func:`onnx_generate` for an example.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._ort_profile import js_profile_to_dataframe, plot_ort_profile
from .compat import CACHE_ARG_NAMES, ONNX_CACHE_INPUT

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import onnxruntime

logger = logging.getLogger(__name__)

__all__ = [
    "GenerationLayout",
    "js_profile_to_dataframe",
    "make_feeds",
    "make_session",
    "model_layout",
    "onnx_generate",
    "plot_ort_profile",
    "run_session",
]

#: ONNX element type of every onnxruntime type string.
_ORT_ELEM_TYPES = {
    "tensor(float)": 1,
    "tensor(uint8)": 2,
    "tensor(int8)": 3,
    "tensor(int32)": 6,
    "tensor(int64)": 7,
    "tensor(bool)": 9,
    "tensor(float16)": 10,
    "tensor(double)": 11,
    "tensor(bfloat16)": 16,
}
_TORCH_DTYPES = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}
# Cache inputs: past_key_values.N.key (the names to_onnx gives whatever the version of
# transformers), and the names torch gives the placeholders of the cache argument, which
# follow transformers' renames (past_key_values_key_0, cache_key_0 on transformers>=5.24).
_PAST = re.compile(
    rf"^{ONNX_CACHE_INPUT}[._](\d+)[._](?:(decoder|encoder)[._])?"
    r"(key|value|cumulative_length|conv_state|recurrent_state|indexer_key|indexer_position_ids)"
    r"(?:[._](\d+))?$"
)
#: cache inputs of a fixed size the model overwrites at every step (linear attention, mamba,
#: convolution layers): a padding token of the prompt must leave them as they were
_STATES = ("conv_state", "recurrent_state")
#: order of the cache inputs of one layer
_KIND_ORDER = {
    "key": 0,
    "value": 1,
    "cumulative_length": 2,
    "indexer_key": 3,
    "indexer_position_ids": 4,
    "conv_state": 5,
    "recurrent_state": 6,
}
_PAST_TORCH = re.compile(rf"^(?:{'|'.join(CACHE_ARG_NAMES)})_(key|value)_(\d+)$")
_FED = ("input_ids", "attention_mask", "position_ids", "cache_position")
# model metadata written by export.custom.fusions_gqa (same values, no import of the exporter)
_SHARED_BUFFER_KEY = "onnx_diagnostic.past_present_share_buffer"
_MAX_LENGTH_KEY = "onnx_diagnostic.max_length"


@dataclass
class GenerationLayout:
    """
    What :func:`onnx_generate` needs to know about a model, read from its inputs
    and outputs (see :func:`model_layout`).

    :param input_ids: name of the input receiving the tokens
    :param attention_mask: name of the attention mask input or None
    :param position_ids: name of the position ids input or None
    :param cache_position: name of the cache position input or None
    :param token_type: ONNX element type of ``input_ids``
    :param cache_inputs: names of the cache inputs
    :param cache_outputs: names of the outputs feeding them at the next step
    :param cache_shapes: ``(heads, head_dim)`` of every attention key or value, ``(0, 0)``
        for the filled length of a static layer (``past_key_values.N.cumulative_length``,
        0-d), the dimensions after the batch of any other cache input (a ``conv_state``,
        a ``recurrent_state``, an ``indexer_key``)
    :param cache_types: ONNX element type of every cache input
    :param cache_lengths: the fixed length of every cache input of a static cache (a buffer
        written at the current position), None for a cache which grows
    :param logits: name of the logits output
    :param outputs: names of all outputs, in the model order
    :param cache_kinds: what every cache input holds: ``key``, ``value``,
        ``cumulative_length``, ``conv_state``, ``recurrent_state`` (fixed-size states,
        zeros before the first token), ``indexer_key``, ``indexer_position_ids``
    :param cache_empty_shapes: the shape after the batch of every cache input before the
        first token: 0 on the dimension which grows, the whole buffer for a fixed-size
        one (a state, a static cache), ``()`` for a filled length
    :param one_token: ``input_ids`` has a static sequence length of 1 (a model exported
        for the recurrent step of its linear attention or mamba layers): the prompt is fed
        one token at a time
    :param shared_buffer: ``present.N.key`` / ``.value`` are written in the buffers of
        ``past_key_values.N.key`` / ``.value`` (``com.microsoft.GroupQueryAttention``,
        :func:`onnx_diagnostic.export.custom.fusions_gqa.fuse_group_query_attention`):
        the buffers are allocated once at the length of the generation, bound as input and
        output, and the mask gives sequence lengths, the valid tokens of a row first
    :param max_length: the longest sequence such a model processes (its rotary tables),
        None if unknown
    """

    input_ids: str
    attention_mask: str | None
    position_ids: str | None
    cache_position: str | None
    token_type: int
    mask_type: int | None
    position_type: int | None
    cache_inputs: list[str] = field(default_factory=list)
    cache_outputs: list[str] = field(default_factory=list)
    cache_shapes: list[tuple[int, int]] = field(default_factory=list)
    cache_types: list[int] = field(default_factory=list)
    cache_lengths: list[int | None] = field(default_factory=list)
    logits: str = "logits"
    outputs: list[str] = field(default_factory=list)
    cache_kinds: list[str] = field(default_factory=list)
    cache_empty_shapes: list[tuple[int, ...]] = field(default_factory=list)
    one_token: bool = False
    shared_buffer: bool = False
    max_length: int | None = None


def _elem_type(arg: Any) -> int:
    if arg.type not in _ORT_ELEM_TYPES:
        raise ValueError(f"onnx_generate: input {arg.name!r} has an unsupported type {arg.type}")
    return _ORT_ELEM_TYPES[arg.type]


def _cache_index(name: str) -> tuple[int, str, str, int | None] | None:
    """``(layer, part, kind, state)`` of a cache input (part: ``decoder``, ``encoder`` or
    empty; state: the index of a state when a layer holds several, None otherwise)."""
    m = _PAST.match(name)
    if m:
        state = None if m.group(4) is None else int(m.group(4))
        return int(m.group(1)), m.group(2) or "", m.group(3), state
    m = _PAST_TORCH.match(name)
    if m:
        return int(m.group(2)), "", m.group(1), None
    return None


def _empty_shape(name: str, kind: str, shape: Sequence[Any]) -> tuple[int, ...]:
    """The shape after the batch of a cache input before the first token: 0 on the only
    dimension which is not static (it grows), every dimension when all are static
    (a fixed-size state or a static cache, zeros)."""
    if kind == "cumulative_length":
        return ()
    rest = list(shape[1:])
    dynamic = [i for i, d in enumerate(rest) if not isinstance(d, int) or d < 0]
    if kind in ("key", "value"):
        if len(shape) != 4 or dynamic not in ([], [1]):
            raise ValueError(
                f"onnx_generate: cache input {name!r} has shape {shape}, expected "
                "(batch, heads, sequence, head_dim) with static heads and head_dim "
                "to build the empty cache of the first step"
            )
    elif kind in _STATES and dynamic:
        raise ValueError(
            f"onnx_generate: cache input {name!r} has shape {shape}, a state must have "
            "static dimensions after the batch to be initialized with zeros"
        )
    elif len(dynamic) > 1:
        raise ValueError(
            f"onnx_generate: cache input {name!r} has shape {shape}, only one dimension "
            "after the batch may grow with the sequence"
        )
    if dynamic:
        rest[dynamic[0]] = 0
    return tuple(rest)


def model_layout(session: onnxruntime.InferenceSession) -> GenerationLayout:
    """
    Discovers the inputs and outputs a generation loop feeds and reads.
    Cache inputs ``past_key_values.N.key`` are paired with outputs ``present.N.key``,
    or, if the outputs are named otherwise, with the outputs following the logits in order.

    :param session: an inference session
    :return: a :class:`GenerationLayout`
    :raises ValueError: when the model has inputs it cannot feed or a cache input
        whose number of heads or head dimension is not static

    >>> import torch
    >>> from onnx_diagnostic.export.api import to_onnx
    >>> from onnx_diagnostic.torch_export_patches import torch_export_patches
    >>> from onnx_diagnostic.torch_models.llms import get_tiny_llm
    >>> data = get_tiny_llm()
    >>> with torch_export_patches(patch_transformers=True):
    ...     onx = to_onnx(data.model, kwargs=data.inputs, dynamic_shapes=data.dynamic_shapes)
    >>> layout = model_layout(make_session(onx))
    >>> layout.cache_inputs
    ['past_key_values.0.key', 'past_key_values.0.value']
    >>> layout.cache_outputs, layout.cache_shapes
    (['present.0.key', 'present.0.value'], [(1, 96), (1, 96)])
    """
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if "input_ids" not in inputs:
        raise ValueError(
            f"onnx_generate: the model has no input named 'input_ids', its inputs are "
            f"{list(inputs)}"
        )
    cache = []
    unknown = []
    for name, arg in inputs.items():
        if name in _FED:
            continue
        idx = _cache_index(name)
        if idx is None:
            unknown.append(name)
        elif idx[1] == "encoder":
            raise ValueError(
                f"onnx_generate: input {name!r} is a cross-attention cache, "
                "encoder-decoder models are not supported"
            )
        else:
            cache.append((idx, name, arg))
    if unknown:
        raise ValueError(
            f"onnx_generate: the model has inputs it cannot feed: {unknown}; it feeds "
            f"{list(_FED)} and a cache past_key_values.N.key / .value / .conv_state / "
            ".recurrent_state / .cumulative_length / .indexer_key"
        )
    cache.sort(key=lambda x: (x[0][0], _KIND_ORDER[x[0][2]], x[0][3] or 0))
    logits = "logits" if "logits" in outputs else outputs[0]
    others = [o for o in outputs if o != logits]
    cache_outputs = []
    for (layer, part, kind, state), _name, _ in cache:
        sub = f".{part}" if part else ""
        expected = f"present.{layer}{sub}.{kind}"
        if state is not None:
            expected += f".{state}"
        cache_outputs.append(expected if expected in outputs else None)
    if any(c is None for c in cache_outputs):
        if len(others) != len(cache):
            raise ValueError(
                f"onnx_generate: cannot pair the cache inputs {[c[1] for c in cache]} "
                f"with the outputs {others}: expected outputs named present.N.key / "
                "present.N.value or as many outputs after the logits as cache inputs"
            )
        cache_outputs = others
    shapes, types, lengths, kinds, empty = [], [], [], [], []
    for (_, _, kind, _), name, arg in cache:
        shape = arg.shape
        kinds.append(kind)
        empty.append(_empty_shape(name, kind, shape))
        types.append(_elem_type(arg))
        if kind == "cumulative_length":
            # the filled length of a static layer (transformers >= 5), a 0-d integer
            shapes.append((0, 0))
            lengths.append(None)
        elif kind in ("key", "value"):
            shapes.append((shape[1], shape[3]))
            # a static cache: a buffer of fixed length (StaticCache), zeros where not written
            lengths.append(shape[2] if isinstance(shape[2], int) and shape[2] > 0 else None)
        else:
            shapes.append(tuple(shape[1:]))
            lengths.append(None)
    ids_shape = inputs["input_ids"].shape
    shared, max_length = _shared_buffer(session, inputs, kinds)
    return GenerationLayout(
        input_ids="input_ids",
        attention_mask="attention_mask" if "attention_mask" in inputs else None,
        position_ids="position_ids" if "position_ids" in inputs else None,
        cache_position="cache_position" if "cache_position" in inputs else None,
        token_type=_elem_type(inputs["input_ids"]),
        mask_type=_elem_type(inputs["attention_mask"]) if "attention_mask" in inputs else None,
        position_type=_elem_type(inputs["position_ids"]) if "position_ids" in inputs else None,
        cache_inputs=[c[1] for c in cache],
        cache_outputs=cache_outputs,
        cache_shapes=shapes,
        cache_types=types,
        cache_lengths=lengths,
        logits=logits,
        outputs=outputs,
        cache_kinds=kinds,
        cache_empty_shapes=empty,
        one_token=len(ids_shape) == 2 and ids_shape[1] == 1,
        shared_buffer=shared,
        max_length=max_length,
    )


def _shared_buffer(
    session: onnxruntime.InferenceSession, inputs: dict[str, Any], kinds: list[str]
) -> tuple[bool, int | None]:
    """Reads the metadata :func:`fuse_group_query_attention
    <onnx_diagnostic.export.custom.fusions_gqa.fuse_group_query_attention>` writes:
    whether present.N.* share the buffers of past_key_values.N.*, the longest sequence."""
    try:
        meta = session.get_modelmeta().custom_metadata_map
    except Exception:  # a session-like object without metadata
        return False, None
    if meta.get(_SHARED_BUFFER_KEY) != "1":
        return False, None
    if "attention_mask" not in inputs or any(k not in ("key", "value") for k in kinds):
        raise ValueError(
            f"onnx_generate: the model says its present.N.* share the buffers of "
            f"past_key_values.N.* ({_SHARED_BUFFER_KEY}) but it has no attention_mask or a "
            f"cache which is not only keys and values ({sorted(set(kinds))})"
        )
    length = meta.get(_MAX_LENGTH_KEY)
    return True, (int(length) if length and length.isdigit() else None)


def make_session(
    model: str | os.PathLike | onnx.ModelProto | bytes | onnxruntime.InferenceSession,
    session_options: onnxruntime.SessionOptions | None = None,
    providers: Sequence[Any] | None = None,
    caller: str = "make_session",
    argname: str = "model",
) -> onnxruntime.InferenceSession:
    """
    Creates an :class:`onnxruntime.InferenceSession` from a file name, a serialized model,
    a :class:`onnx.ModelProto` or a ``torch.onnx.ONNXProgram`` (a session is returned as it
    is), on CPU if ``providers`` is None. Without
    ``session_options``, the threads of onnxruntime do not spin between two runs
    (``session.intra_op.allow_spinning=0``): a generation loop runs python code between two
    runs and spinning threads would slow it down on a busy machine.

    >>> import torch
    >>> from onnx_diagnostic.helpers.mini_onnx_builder import (
    ...     create_onnx_model_from_input_tensors,
    ... )
    >>> sess = make_session(create_onnx_model_from_input_tensors(torch.ones(2)))
    >>> sess.get_providers()
    ['CPUExecutionProvider']
    """
    import onnxruntime

    if providers is None:
        providers = ["CPUExecutionProvider"]
    if session_options is None:
        session_options = onnxruntime.SessionOptions()
        # A generation loop works in python between two runs: threads of onnxruntime
        # spinning while they wait for the next run compete with it for the cores
        # (see _bench/bench_generate.py --variants).
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(model, onnxruntime.InferenceSession):
        return model
    # torch.onnx.ONNXProgram
    model = getattr(model, "model_proto", model)
    if isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            what = "is a folder" if os.path.isdir(model) else "does not exist"
            raise FileNotFoundError(f"{caller}: {argname}={str(model)!r} {what}")
        source: Any = str(model)
    elif isinstance(model, bytes):
        source = model
    elif hasattr(model, "SerializeToString"):
        source = model.SerializeToString()
    else:
        raise TypeError(
            f"{caller}: {argname} must be an onnxruntime.InferenceSession, a file name, "
            f"bytes, an onnx.ModelProto or an ONNXProgram, not {type(model).__name__}"
        )
    try:
        return onnxruntime.InferenceSession(
            source, sess_options=session_options, providers=list(providers)
        )
    except Exception as e:
        if "PROTOBUF" not in str(e).upper() and "ModelProto" not in str(e):
            raise
        what = repr(str(source)) if isinstance(source, str) else "the given model"
        raise ValueError(f"{caller}: {argname}: {what} is not an ONNX model: {e}") from e


def _session_device(session: Any) -> tuple[str, int]:
    providers = session.get_providers()
    if providers and providers[0] == "CUDAExecutionProvider":
        opts = session.get_provider_options().get("CUDAExecutionProvider", {})
        return "cuda", int(opts.get("device_id", 0))
    return "cpu", 0


def _ortvalue(tensor: torch.Tensor, device: tuple[str, int]) -> Any:
    """An OrtValue on ``device`` holding ``tensor`` (no copy when already there)."""
    from onnxruntime import OrtValue

    tensor = tensor.contiguous()
    if device[0] == "cpu":
        tensor = tensor.cpu()
        if tensor.dtype != torch.bfloat16:
            return OrtValue.ortvalue_from_numpy(tensor.numpy())
    else:
        tensor = tensor.to(f"cuda:{device[1]}")
    try:
        return OrtValue.from_dlpack(tensor)
    except TypeError:  # onnxruntime < 1.23 takes a capsule and a flag
        return OrtValue.from_dlpack(tensor.__dlpack__(), tensor.dtype == torch.bool)


def _to_torch(value: Any) -> torch.Tensor:
    """A torch view of an OrtValue (dlpack, no copy)."""
    return torch.from_dlpack(value)


def run_session(
    session: onnxruntime.InferenceSession, feeds: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    """
    Runs a session on torch tensors of any type (bfloat16 included) and returns torch
    tensors: inputs and outputs go through :class:`onnxruntime.OrtValue` and dlpack,
    they stay on the device of the session, nothing is copied on CPU.

    :param session: an inference session
    :param feeds: one tensor per input of the model
    :return: the outputs in the order of the model

    >>> import torch
    >>> from onnx_diagnostic.helpers.mini_onnx_builder import (
    ...     create_onnx_model_from_input_tensors,
    ... )
    >>> sess = make_session(create_onnx_model_from_input_tensors(torch.ones(2)))
    >>> run_session(sess, {})
    [tensor([1., 1.])]
    """
    expected = [i.name for i in session.get_inputs()]
    if not isinstance(feeds, dict) or set(feeds) != set(expected):
        given = list(feeds) if isinstance(feeds, dict) else type(feeds).__name__
        raise ValueError(f"run_session: feeds has keys {given}, the model expects {expected}")
    device = _session_device(session)
    for name, value in feeds.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"run_session: feeds[{name!r}] must be a torch.Tensor, not {type(value).__name__}"
            )
    ort_feeds = {name: _ortvalue(value, device) for name, value in feeds.items()}
    outputs = session.run_with_ort_values(None, ort_feeds)
    return [_to_torch(o) for o in outputs]


def _empty_cache(layout: GenerationLayout, batch: int, device: tuple[str, int]) -> list[Any]:
    """The cache of the first step: no position for a cache which grows, zeros for the
    buffers of a static cache, for fixed-size states (and a filled length of 0)."""
    from onnxruntime import OrtValue

    empty = layout.cache_empty_shapes
    if not empty:  # a layout built by hand with the fields of older versions
        lengths = layout.cache_lengths or [None] * len(layout.cache_shapes)
        empty = [
            () if (h, d) == (0, 0) else (h, 0 if n is None else n, d)
            for (h, d), n in zip(layout.cache_shapes, lengths)
        ]
    cache = []
    for shape, t in zip(empty, layout.cache_types):
        if shape == ():
            cache.append(_ortvalue(torch.zeros((), dtype=_TORCH_DTYPES[t]), device))
        elif 0 in shape:
            cache.append(
                OrtValue.ortvalue_from_shape_and_type([batch, *shape], t, device[0], device[1])
            )
        else:
            buffer = torch.zeros((batch, *shape), dtype=_TORCH_DTYPES[t])
            cache.append(_ortvalue(buffer, device))
    return cache


#: types of logits :meth:`onnxruntime.OrtValue.numpy` converts (numpy has no bfloat16)
_NUMPY_LOGITS = {"tensor(float)", "tensor(float16)", "tensor(double)"}


def _select_tokens(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Picks one token per row of ``logits`` (batch, vocab): argmax or sampling."""
    if not do_sample:
        return logits.argmax(dim=-1)
    scores = logits.float() / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p is not None and top_p < 1.0:
        sorted_scores, sorted_idx = torch.sort(scores, descending=False, dim=-1)
        cumulated = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulated <= (1 - top_p)
        remove[:, -1] = False  # keeps at least one token
        scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), -float("inf"))
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _check_generate_args(
    input_ids: Any,
    attention_mask: Any,
    eos_token_id: Any,
    pad_token_id: Any,
    max_new_tokens: Any,
    temperature: float,
    top_k: Any,
    top_p: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    if isinstance(input_ids, np.ndarray):
        input_ids = torch.from_numpy(input_ids)
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"onnx_generate: input_ids must be a torch.Tensor, not {type(input_ids).__name__}"
        )
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(
            "onnx_generate: input_ids must have a shape (batch, sequence) with batch >= 1 and "
            f"sequence >= 1, got {tuple(input_ids.shape)}"
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"onnx_generate: input_ids must be integers, not {input_ids.dtype}")
    if attention_mask is not None:
        if isinstance(attention_mask, np.ndarray):
            attention_mask = torch.from_numpy(attention_mask)
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != tuple(
            input_ids.shape
        ):
            shape = getattr(attention_mask, "shape", type(attention_mask).__name__)
            raise ValueError(
                f"onnx_generate: attention_mask must be a tensor of the shape of input_ids "
                f"{tuple(input_ids.shape)}, got {shape}"
            )
    if (
        not isinstance(max_new_tokens, int)
        or isinstance(max_new_tokens, bool)
        or max_new_tokens < 0
    ):
        raise ValueError(
            f"onnx_generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}"
        )
    if eos_token_id is None:
        eos = []
    elif isinstance(eos_token_id, (int, np.integer)):
        eos = [int(eos_token_id)]
    elif isinstance(eos_token_id, torch.Tensor) and eos_token_id.numel() >= 1:
        eos = [int(i) for i in eos_token_id.flatten().tolist()]
    elif isinstance(eos_token_id, (list, tuple)) and all(
        isinstance(i, (int, np.integer)) for i in eos_token_id
    ):
        eos = [int(i) for i in eos_token_id]
    else:
        raise TypeError(
            f"onnx_generate: eos_token_id must be None, an int or a list of ints, "
            f"got {eos_token_id!r}"
        )
    if pad_token_id is not None and not isinstance(pad_token_id, (int, np.integer)):
        raise TypeError(f"onnx_generate: pad_token_id must be None or an int, got {pad_token_id!r}")
    if not temperature > 0:
        raise ValueError(f"onnx_generate: temperature must be > 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"onnx_generate: top_k must be None or an int > 0, got {top_k!r}")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError(f"onnx_generate: top_p must be None or in (0, 1], got {top_p!r}")
    return input_ids, attention_mask, eos


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as transformers computes them from an attention mask (left padding)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def onnx_generate(
    model_or_session: str | os.PathLike | onnx.ModelProto | onnxruntime.InferenceSession,
    input_ids: torch.Tensor,
    eos_token_id: int | Sequence[int] | None = None,
    max_new_tokens: int = 100,
    return_session: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    session_options: onnxruntime.SessionOptions | None = None,
    providers: Sequence[Any] | None = None,
    attention_mask: torch.Tensor | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor | tuple[torch.Tensor, onnxruntime.InferenceSession, dict[str, torch.Tensor]]:
    """
    Generates tokens with an ONNX model and :epkg:`onnxruntime`.

    The prompt is processed once with an empty cache (``batch x heads x 0 x head_dim``, the
    dimensions and types read from the model inputs; zeros for the fixed-size states
    ``conv_state`` / ``recurrent_state`` of linear attention and mamba layers and for the
    buffers of a static cache), then one token at a time is fed with the cache the previous
    step returned, which stays in onnxruntime's memory (on the device of the session).
    A model whose ``input_ids`` take one token (exported for the recurrent step of its
    linear attention or mamba layers) receives the prompt one token at a time; a padding
    token then leaves the states of its row unchanged, as transformers does.
    It stops after ``max_new_tokens`` or when every row has produced
    one of ``eos_token_id``; a finished row then receives ``pad_token_id`` (``eos_token_id``
    if None), like :meth:`transformers.GenerationMixin.generate`, whose greedy output
    (``do_sample=False``) this function reproduces.

    :param model_or_session: a file name, an :class:`onnx.ModelProto` or an
        :class:`onnxruntime.InferenceSession` (returned by a previous call)
    :param input_ids: prompt tokens, shape ``(batch, sequence)``
    :param eos_token_id: end of sequence token(s), None to generate ``max_new_tokens`` tokens
    :param max_new_tokens: maximum number of generated tokens
    :param return_session: returns ``(tokens, session, feeds)`` instead of ``tokens``,
        ``feeds`` are the inputs of the last call to the session (the cache: torch
        tensors sharing onnxruntime's memory, on the device of the session; the other
        inputs: copies, on CPU)
    :param do_sample: samples the next token instead of taking the most probable one
    :param temperature: divides the logits before sampling
    :param top_k: samples among the ``top_k`` most probable tokens
    :param top_p: samples among the most probable tokens whose probabilities sum to ``top_p``
    :param session_options: options of the session if one is created
    :param providers: providers of the session if one is created (CPU if None)
    :param attention_mask: mask of the prompt (0 on left padding), ones if None
    :param pad_token_id: token given to finished rows, ``eos_token_id`` if None
    :param generator: random generator used when sampling
    :return: ``input_ids`` followed by the generated tokens, on the device of ``input_ids``

    >>> import torch
    >>> from onnx_diagnostic.export.api import to_onnx
    >>> from onnx_diagnostic.torch_export_patches import torch_export_patches
    >>> from onnx_diagnostic.torch_models.llms import get_tiny_llm
    >>> data = get_tiny_llm()
    >>> with torch_export_patches(patch_transformers=True):
    ...     onx = to_onnx(data.model, kwargs=data.inputs, dynamic_shapes=data.dynamic_shapes)
    >>> tokens = onnx_generate(onx, torch.tensor([[1, 2, 3]]), max_new_tokens=5)
    >>> tokens.shape
    torch.Size([1, 8])
    """
    input_ids, attention_mask, eos = _check_generate_args(
        input_ids,
        attention_mask,
        eos_token_id,
        pad_token_id,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
    )
    if hasattr(model_or_session, "run_with_iobinding"):
        session = model_or_session
    else:
        session = make_session(
            model_or_session,
            session_options,
            providers,
            caller="onnx_generate",
            argname="model_or_session",
        )
    layout = model_layout(session)
    pad = int(pad_token_id) if pad_token_id is not None else (eos[0] if eos else 0)
    sampling = _Sampling(do_sample, temperature, top_k, top_p, generator)
    result, last_feeds = _generation_loop(
        session, layout, input_ids, attention_mask, eos, pad, max_new_tokens, sampling
    )
    result = result.to(input_ids.device)
    if not return_session:
        return result
    return result, session, last_feeds


@dataclass
class _Sampling:
    do_sample: bool
    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator | None


def _generation_loop(
    session: onnxruntime.InferenceSession,
    layout: GenerationLayout,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    eos: list[int],
    pad: int,
    max_new_tokens: int,
    sampling: _Sampling,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """
    The loop of :func:`onnx_generate`. The cache stays on the device of the session, the
    output of one step bound as the input of the next one. The small inputs (the new
    token, its position, the attention mask) and the logits live in host buffers allocated
    once, updated in place and bound by pointer to one :class:`onnxruntime.IOBinding`
    (onnxruntime copies them to and from a CUDA device itself, within its stream, no
    synchronization with torch is needed). Greedy decoding takes the numpy argmax of the
    logits of the last position; sampling uses torch.
    Returns the tokens (on CPU) and the feeds of the last call.
    """
    dev_type, dev_id = _session_device(session)
    on_cpu = dev_type == "cpu"
    batch, seq = input_ids.shape
    total = seq + max_new_tokens
    static = [n for n in (layout.cache_lengths or []) if n is not None]
    if static and total - 1 > min(static):
        raise ValueError(
            f"onnx_generate: the model has a static cache of {min(static)} positions, the "
            f"prompt ({seq} tokens) and max_new_tokens={max_new_tokens} need {total - 1}: "
            f"export it with a larger max_cache_len or lower max_new_tokens"
        )
    prompt_mask = (
        torch.ones(input_ids.shape, dtype=torch.int64)
        if attention_mask is None
        else attention_mask.to("cpu", torch.int64)
    )
    # the prompt then one column per generated token
    tokens = torch.empty((batch, total), dtype=torch.int64)
    tokens[:, :seq] = input_ids.to("cpu")
    if max_new_tokens == 0:
        return tokens, {}
    shared = layout.shared_buffer
    if shared:
        # the valid tokens of every row first: the model reads sequence lengths
        fed_ids, prompt_mask, lengths = _pack_right(tokens[:, :seq], prompt_mask, pad)
        fed = fed_ids.shape[1]
        if layout.max_length is not None and fed + max_new_tokens - 1 > layout.max_length:
            raise ValueError(
                f"onnx_generate: the model processes at most {layout.max_length} positions "
                f"(its rotary tables), the prompt ({fed} tokens) and "
                f"max_new_tokens={max_new_tokens} need {fed + max_new_tokens - 1}"
            )
    else:
        fed_ids, fed, lengths = tokens[:, :seq], seq, None

    token_type = layout.token_type
    out_logits = next(o for o in session.get_outputs() if o.name == layout.logits)
    logits_elem = _ORT_ELEM_TYPES.get(out_logits.type)
    greedy_numpy = not sampling.do_sample and out_logits.type in _NUMPY_LOGITS

    # decoding buffers, updated in place and bound by pointer; numpy views of the same
    # memory: numpy's small operations cost ~1 us, torch's ~5 us
    ids_buf = torch.empty((batch, 1), dtype=_TORCH_DTYPES[token_type])
    ids_np = ids_buf.numpy()
    tokens_np = tokens.numpy()
    full_mask = None
    if layout.attention_mask:
        mask_type = layout.mask_type
        width_max = fed + max_new_tokens
        if shared:
            # a row of length L attends L + i positions at step i, the first ones
            full_mask = torch.zeros((batch, width_max), dtype=_TORCH_DTYPES[mask_type])
            full_mask[:, :fed] = prompt_mask
            mask_np = full_mask.numpy()
            rows_np = np.arange(batch)
            lengths_np = lengths.numpy()
        else:
            # every generated token is attended: the mask of step i is a prefix of this one
            full_mask = torch.ones((batch, width_max), dtype=_TORCH_DTYPES[mask_type])
            full_mask[:, :seq] = prompt_mask
        # batch > 1: the prefix of a row-major (batch, total) buffer is not contiguous
        mask_buf = torch.empty(batch * width_max, dtype=full_mask.dtype)
    pos_np = None
    if layout.position_ids:
        position_type = layout.position_type
        pos_buf = torch.empty((batch, 1), dtype=_TORCH_DTYPES[position_type])
        pos_np = pos_buf.numpy()
    cpos_np = None
    if layout.cache_position:
        cpos_buf = torch.empty((1,), dtype=torch.int64)
        cpos_np = cpos_buf.numpy()
    logits_buf = None
    logits_np = None
    if (
        logits_elem is not None
        and len(out_logits.shape) == 3
        and isinstance(out_logits.shape[2], int)
    ):
        logits_buf = torch.empty((batch, 1, out_logits.shape[2]), dtype=_TORCH_DTYPES[logits_elem])
        if greedy_numpy:
            logits_np = logits_buf.numpy()[:, -1, :]
    eos_np = np.array(eos, dtype=np.int64)
    finished_np = np.zeros(batch, dtype=bool)

    # prefill inputs: the whole prompt, or its last token when the model takes one token
    # at a time (the others are fed before, one by one)
    start = seq - 1 if layout.one_token else 0
    prompt_ids = fed_ids[:, start:].to(ids_buf.dtype).contiguous()
    prefill: dict[str, torch.Tensor] = {layout.input_ids: prompt_ids}
    if layout.attention_mask:
        prefill[layout.attention_mask] = full_mask[:, :fed].contiguous()
    if layout.position_ids:
        prefill[layout.position_ids] = _positions(prompt_mask)[:, start:].to(pos_buf.dtype)
        # the position of a new token is the number of attended tokens before it
        attended = prompt_mask.sum(dim=-1, keepdim=True).to(pos_buf.dtype).numpy()
    if layout.cache_position:
        prefill[layout.cache_position] = torch.arange(start, fed, dtype=torch.int64)
    buffers: list[torch.Tensor] = []
    if shared:
        # one buffer per key and value, the length of the generation, input and output;
        # the torch tensors own the memory (kept, returned as the last feeds)
        where = "cpu" if on_cpu else f"cuda:{dev_id}"
        buffers = [
            torch.zeros((batch, h, fed + max_new_tokens, d), dtype=_TORCH_DTYPES[t], device=where)
            for (h, d), t in zip(layout.cache_shapes, layout.cache_types)
        ]
        cache = [_ortvalue(b, (dev_type, dev_id)) for b in buffers]
    else:
        cache = _empty_cache(layout, batch, (dev_type, dev_id))
    if start > 0:
        cache = _feed_tokens(session, layout, tokens, full_mask, prompt_mask, start, cache)
    binding = session.io_binding()
    for name, value in prefill.items():
        binding.bind_ortvalue_input(name, _ortvalue(value, ("cpu", 0)))
    logits_index = layout.outputs.index(layout.logits)
    cache_index = [layout.outputs.index(name) for name in layout.cache_outputs]
    past, length = start, fed - start
    next_np: Any = None
    last_cache = cache
    # the logits of the prompt: its last position, the last valid one of every row when
    # the rows were moved to the right
    prompt_rows = None if lengths is None or bool((lengths == fed).all()) else lengths - 1
    for step in range(max_new_tokens):
        if step > 0:
            past += length
            length = 1
            # the inputs of a decoding step, in place
            ids_np[:, 0] = next_np
            if shared and layout.attention_mask:
                mask_np[rows_np, lengths_np + step - 1] = 1
            if pos_np is not None:
                if step == 1:
                    pos_np[:] = attended
                else:
                    pos_np += 1
            if cpos_np is not None:
                cpos_np[0] = past
            if step == 1 or not on_cpu:
                # a session on CPU reads the bound buffers when it runs, a session on
                # another device gets a copy of a host input when it is bound (bound once,
                # the buffers updated in place, CUDA gave wrong tokens): bound again
                binding.bind_input(
                    layout.input_ids, "cpu", 0, token_type, (batch, 1), ids_buf.data_ptr()
                )
                if layout.position_ids:
                    binding.bind_input(
                        layout.position_ids,
                        "cpu",
                        0,
                        position_type,
                        (batch, 1),
                        pos_buf.data_ptr(),
                    )
                if layout.cache_position:
                    binding.bind_input(
                        layout.cache_position, "cpu", 0, 7, (1,), cpos_buf.data_ptr()
                    )
            if layout.attention_mask:
                width = past + 1
                if batch == 1:
                    ptr = full_mask.data_ptr()
                else:
                    step_mask = mask_buf[: batch * width].view(batch, width)
                    step_mask.copy_(full_mask[:, :width])
                    ptr = step_mask.data_ptr()
                binding.bind_input(layout.attention_mask, "cpu", 0, mask_type, (batch, width), ptr)
        if not shared or step == 0:
            for name, value in zip(layout.cache_inputs, cache):
                binding.bind_ortvalue_input(name, value)
        last_cache = cache
        # outputs bound to a device are allocated by onnxruntime at every run (the cache
        # grows), bindings of the previous run would be taken as preallocated buffers;
        # shared buffers and the logits of a decoding step stay bound from step 1
        if not shared or step < 2 or not on_cpu:
            binding.clear_binding_outputs()
            for name in layout.outputs:
                if shared and name in layout.cache_outputs:
                    binding.bind_ortvalue_output(name, cache[layout.cache_outputs.index(name)])
                elif name != layout.logits:
                    binding.bind_output(name, dev_type, dev_id)
                elif step > 0 and logits_buf is not None:
                    binding.bind_output(
                        name,
                        "cpu",
                        0,
                        logits_elem,
                        tuple(logits_buf.shape),
                        logits_buf.data_ptr(),
                    )
                else:
                    binding.bind_output(name, "cpu", 0)
        try:
            session.run_with_iobinding(binding)
        except Exception as e:
            current = prompt_ids if step == 0 else ids_buf
            # which step failed and what it received: onnxruntime only names the node
            raise RuntimeError(
                f"onnx_generate: onnxruntime failed at step {step} "
                f"({'prefill' if step == 0 else 'decoding'}, input_ids {tuple(current.shape)} "
                f"with ids in [{int(current.min())}, {int(current.max())}], {past} past "
                f"positions): {e}"
            ) from e
        if not shared:
            results = binding.get_outputs()
            cache = [results[i] for i in cache_index]
        elif step == 0 or logits_buf is None:
            results = binding.get_outputs()
        if greedy_numpy and step > 0 and logits_np is not None:
            # numpy's argmax costs ~4 us where torch's costs ~60 us for a 32k vocabulary
            # (both return the first maximum)
            next_np = logits_np.argmax(axis=-1)
        elif greedy_numpy:
            next_np = _last_logits(results[logits_index], prompt_rows).numpy().argmax(axis=-1)
        else:
            if step > 0 and logits_buf is not None:
                logits = logits_buf[:, -1, :]
            else:
                logits = _last_logits(results[logits_index], prompt_rows)
            if sampling.generator is not None:
                logits = logits.to(sampling.generator.device)
            next_np = (
                _select_tokens(
                    logits,
                    sampling.do_sample,
                    sampling.temperature,
                    sampling.top_k,
                    sampling.top_p,
                    sampling.generator,
                )
                .to("cpu", torch.int64)
                .numpy()
            )
        if eos:
            next_np = np.where(finished_np, pad, next_np)
            finished_np |= np.isin(next_np, eos_np)
        tokens_np[:, seq + step] = next_np
        if eos and finished_np.all():
            break
    # The feeds of the last call: the cache lives in buffers onnxruntime allocated
    # (shared), the small inputs are copied.
    last_feeds: dict[str, torch.Tensor] = {}
    if step == 0:
        last_feeds.update({k: v.clone() for k, v in prefill.items()})
    else:
        last_feeds[layout.input_ids] = ids_buf.clone()
        if layout.attention_mask:
            last_feeds[layout.attention_mask] = full_mask[:, : past + 1].clone()
        if layout.position_ids:
            last_feeds[layout.position_ids] = pos_buf.clone()
        if layout.cache_position:
            last_feeds[layout.cache_position] = cpos_buf.clone()
    if shared:
        last_feeds.update(zip(layout.cache_inputs, buffers))
    else:
        last_feeds.update({k: _to_torch(v) for k, v in zip(layout.cache_inputs, last_cache)})
    done = seq + step + 1
    return (tokens if done == total else tokens[:, :done].contiguous()), last_feeds


def _last_logits(value: Any, rows: torch.Tensor | None) -> torch.Tensor:
    """The logits ``(batch, vocab)`` of the last position, or of position ``rows[i]`` for
    row ``i``."""
    logits = _to_torch(value)
    if rows is None:
        return logits[:, -1, :]
    if logits.shape[1] == 1:
        raise ValueError(
            "onnx_generate: the model returns the logits of the last position only "
            "(exported with logits_to_keep=1), the rows of a padded prompt end at other "
            f"positions ({(rows + 1).tolist()}): export it without logits_to_keep"
        )
    return logits[torch.arange(logits.shape[0]), rows.to(logits.device), :]


def _pack_right(
    ids: torch.Tensor, mask: torch.Tensor, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Moves the valid tokens of every row first (a model reading sequence lengths, not
    positions, expects padding on the right): returns the ids, the mask and the lengths
    of the rows, the width being the longest row. Valid tokens must be contiguous in a row
    (left or right padding).
    """
    lengths = mask.sum(dim=-1)
    if bool((lengths == 0).any()):
        raise ValueError(
            f"onnx_generate: attention_mask has rows without any token: "
            f"{torch.nonzero(lengths == 0).flatten().tolist()}"
        )
    first = mask.argmax(dim=-1)
    index = first[:, None] + torch.arange(mask.shape[1])[None, :]
    inside = torch.arange(mask.shape[1])[None, :] < lengths[:, None]
    gathered = mask.gather(1, index.clamp(max=mask.shape[1] - 1))
    if not bool(gathered[inside].all()):
        raise ValueError(
            "onnx_generate: the model reads sequence lengths (shared cache buffers), the "
            "valid tokens of every row of attention_mask must be contiguous (left or right "
            "padding), rows "
            f"{[i for i in range(mask.shape[0]) if not bool(gathered[i][inside[i]].all())]} "
            "have holes"
        )
    width = int(lengths.max())
    index = index[:, :width].clamp(max=mask.shape[1] - 1)
    packed = torch.where(inside[:, :width], ids.gather(1, index), torch.full_like(index, pad))
    return packed, inside[:, :width].to(torch.int64), lengths


def _feed_tokens(
    session: onnxruntime.InferenceSession,
    layout: GenerationLayout,
    tokens: torch.Tensor,
    full_mask: torch.Tensor | None,
    prompt_mask: torch.Tensor,
    stop: int,
    cache: list[Any],
) -> list[Any]:
    """
    Feeds the tokens ``0..stop-1`` of the prompt one at a time to a model taking one token
    per call (:attr:`GenerationLayout.one_token`) and returns the cache after them. A
    padding token (mask 0, left padding) leaves the fixed-size states (``conv_state``,
    ``recurrent_state``) of its row as they were: transformers zeroes the hidden states of
    padding positions before a linear attention or mamba layer, so that they change
    nothing (the keys and values of such a position are masked anyway).
    """
    device = _session_device(session)
    positions = _positions(prompt_mask)
    names = layout.cache_outputs
    for t in range(stop):
        feeds = {
            layout.input_ids: _ortvalue(
                tokens[:, t : t + 1].to(_TORCH_DTYPES[layout.token_type]), ("cpu", 0)
            )
        }
        if layout.attention_mask:
            feeds[layout.attention_mask] = _ortvalue(full_mask[:, : t + 1], ("cpu", 0))
        if layout.position_ids:
            pos = positions[:, t : t + 1].to(_TORCH_DTYPES[layout.position_type])
            feeds[layout.position_ids] = _ortvalue(pos, ("cpu", 0))
        if layout.cache_position:
            feeds[layout.cache_position] = _ortvalue(torch.tensor([t]), ("cpu", 0))
        feeds.update(zip(layout.cache_inputs, cache))
        try:
            new = session.run_with_ort_values(names, feeds)
        except Exception as e:
            raise RuntimeError(
                f"onnx_generate: onnxruntime failed on the token {t} of the prompt (fed one "
                f"at a time, {t} past positions): {e}"
            ) from e
        padded = prompt_mask[:, t] == 0
        if padded.any():
            keep = padded.to(device[0] if device[0] == "cpu" else f"cuda:{device[1]}")
            for i, kind in enumerate(layout.cache_kinds):
                if kind in _STATES:
                    before, after = _to_torch(cache[i]), _to_torch(new[i])
                    shape = (-1,) + (1,) * (after.dim() - 1)
                    new[i] = _ortvalue(torch.where(keep.view(shape), before, after), device)
        cache = list(new)
    return cache


def make_feeds(
    proto: onnx.ModelProto | onnxruntime.InferenceSession | Sequence[str],
    inputs: Any,
    use_numpy: bool = False,
    copy: bool = False,
) -> dict[str, Any]:
    """
    Pairs the tensors of a nested structure of inputs (flattened as
    :func:`onnx_diagnostic.helpers.helper.flatten_object` does, caches as
    ``key_0, value_0, ...``) with the input names of an ONNX model, in order.
    :func:`onnx_diagnostic.export.api.onnx_feeds` does it from a torch model's arguments,
    naming the inputs the way :func:`to_onnx <onnx_diagnostic.export.api.to_onnx>` does.

    :param proto: the model, a session, or the list of input names
    :param inputs: any nested structure of tensors (tuple, dict, caches, ModelOutput...)
    :param use_numpy: converts torch tensors into numpy arrays (bfloat16 included, bit-exact)
    :param copy: copies every tensor (when the feeds outlive the inputs or go to OrtValue)
    :return: ``{input name: tensor}``
    :raises ValueError: when the numbers of names and tensors differ (both listed)

    >>> import torch
    >>> feeds = make_feeds(["x", "y"], (torch.ones(2), dict(a=torch.zeros(1))))
    >>> {k: v.tolist() for k, v in feeds.items()}
    {'x': [1.0, 1.0], 'y': [0.0]}
    """
    from .helper import flatten_object, string_type

    if hasattr(proto, "graph"):
        names = [i.name for i in proto.graph.input]
    elif hasattr(proto, "get_inputs"):
        names = [i.name for i in proto.get_inputs()]
    elif isinstance(proto, (list, tuple)) and all(isinstance(n, str) for n in proto):
        names = list(proto)
    else:
        raise TypeError(
            "make_feeds: proto must be an onnx.ModelProto, an InferenceSession or a list of "
            f"names, not {type(proto).__name__}"
        )
    flat = flatten_object(inputs)
    if len(flat) != len(names):
        raise ValueError(
            f"make_feeds: the model has {len(names)} inputs {names} but inputs holds "
            f"{len(flat)} tensors: {string_type(inputs, with_shape=True)}"
        )
    if copy:
        flat = [t.clone() if isinstance(t, torch.Tensor) else np.array(t) for t in flat]
    if use_numpy:
        from .ort_session import torch_to_numpy

        flat = [torch_to_numpy(t) if isinstance(t, torch.Tensor) else t for t in flat]
    return dict(zip(names, flat))
