"""
Stores a nested structure of tensors in an ONNX model and reads it back, bit-exact.

:func:`create_onnx_model_from_input_tensors` turns every tensor of a nested structure
(tuples, lists, dicts, None, Python scalars and strings, :epkg:`transformers` caches and
ModelOutputs) into a constant output of an ONNX model: an initializer followed by an
``Identity`` node. Any runtime can run that model to get the tensors back, and
:func:`create_input_tensors_from_onnx_model` rebuilds the original structure from it
without running anything: it reads the stored bytes.

The name of every output encodes the place of its value in the structure,
steps separated by ``/``, each step being ``<container>[<meta>]:<key>`` and the last one the
kind of leaf::

    dict:"past_key_values"/DynamicCache[full,full]:3/tensor
    dict:["model",0,"I"]/tuple:1/empty:dict
    tuple:2/int

- containers: ``tuple``, ``list``, ``dict`` (keys written in JSON: ``"x"``, ``0``,
  ``["model",0,"I"]`` for a tuple), ``DynamicCache[<layer kinds>]`` (``full`` or
  ``sliding=<window>`` per layer, children are ``key_0, value_0, key_1, ...``),
  ``StaticCache[<max_cache_len>;<lengths>]``, ``EncoderDecoderCache`` (``0`` self attention,
  ``1`` cross attention), ``ModelOutput[<class name>]`` (keys are field names);
- leaves: ``tensor``, ``array`` (numpy, ml_dtypes types included), ``npscalar`` (numpy
  scalar), ``none``, ``int``, ``float``, ``bool``, ``str``
  and ``empty:<container>`` for an empty container, ``unstored`` for a value that could not be
  stored (``errors="mark"``, read back as an :class:`Unstored`).

In keys and metadata, ``%`` and ``/`` are percent-encoded.
The model carries the metadata ``onnx_diagnostic.dump`` so that a file that is not such a
dump is rejected with a clear message.

>>> import torch
>>> from onnx_diagnostic.helpers.mini_onnx_builder import (
...     create_onnx_model_from_input_tensors, create_input_tensors_from_onnx_model)
>>> data = dict(x=torch.arange(3), y=(None, 1.5, [torch.ones(2, dtype=torch.bfloat16)]))
>>> proto = create_onnx_model_from_input_tensors(data)
>>> [o.name for o in proto.graph.output][:2]
['dict:"x"/tensor', 'dict:"y"/tuple:0/none']
>>> back = create_input_tensors_from_onnx_model(proto)
>>> back["x"].tolist(), back["y"][0], back["y"][1], back["y"][2][0].dtype
([0, 1, 2], None, 1.5, torch.bfloat16)
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch

from . import compat
from ._tensor_proto import (  # the bytes of tensors and numpy arrays, re-exported here
    _ONNX_TO_TORCH,
    _array_to_leaf,
    _leaf_to_array,
    _numpy_to_torch,
    proto_to_tensor,
    tensor_to_proto,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DUMP_METADATA_KEY",
    "DumpFormatError",
    "MiniOnnxBuilder",
    "proto_from_array",
    "UNSTORED_METADATA_KEY",
    "Unstored",
    "unstored_values",
    "create_input_tensors_from_onnx_model",
    "create_onnx_model_from_input_tensors",
    "proto_to_tensor",
    "save_onnx_dump",
    "tensor_to_proto",
]

#: Metadata key marking a model created by :func:`create_onnx_model_from_input_tensors`.
DUMP_METADATA_KEY = "onnx_diagnostic.dump"
#: Metadata key listing ``[path, reason]`` of the values replaced by :class:`Unstored`.
UNSTORED_METADATA_KEY = "onnx_diagnostic.unstored"
_DUMP_VERSION = "1"
_OPSET = 18
_IR_VERSION = 9
#: A serialized protobuf message cannot exceed 2 GiB; keep a margin for the graph.
PROTOBUF_LIMIT = 2**31 - 2**24


class DumpFormatError(ValueError):
    """Raised when a model is not a dump made by :func:`create_onnx_model_from_input_tensors`."""


@dataclass(frozen=True)
class Unstored:
    """
    What a dump holds in place of a value it could not store
    (``create_onnx_model_from_input_tensors(..., errors="mark")``): the type of the value
    and the reason. The rest of the structure is stored as usual.

    >>> from onnx_diagnostic.helpers.mini_onnx_builder import (
    ...     create_onnx_model_from_input_tensors, create_input_tensors_from_onnx_model)
    >>> proto = create_onnx_model_from_input_tensors((1, {2, 3}), errors="mark")
    >>> create_input_tensors_from_onnx_model(proto)[1].type_name
    'set'
    """

    type_name: str
    reason: str


# Encoding of the structure into output names.


def _quote(text: str) -> str:
    return text.replace("%", "%25").replace("/", "%2F")


def _unquote(text: str) -> str:
    return text.replace("%2F", "/").replace("%25", "%")


def _encode_key(key: Any, where: str) -> str:
    def _check(k: Any) -> Any:
        if isinstance(k, tuple):
            return [_check(v) for v in k]
        if k is None or isinstance(k, (str, int, float, bool)):
            return k
        raise TypeError(
            f"{where}: dictionary key {k!r} of type {type(k).__name__} cannot be stored, "
            "keys must be str, int, float, bool, None or tuples of them"
        )

    return _quote(json.dumps(_check(key), separators=(",", ":")))


def _decode_key(text: str) -> Any:
    def _untuple(v: Any) -> Any:
        return tuple(_untuple(x) for x in v) if isinstance(v, list) else v

    return _untuple(json.loads(_unquote(text)))


def _path_item(key: Any) -> str:
    return f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"


@dataclass
class _Leaf:
    """One output of the dump: its name, and the tensor it holds."""

    name: str
    tensor: torch.Tensor | np.ndarray  # an array only for dtypes torch does not have


@dataclass
class _Encoder:
    switch_low_high: bool | None
    errors: str = "raise"
    leaves: list[_Leaf] = field(default_factory=list)
    #: ``(path, reason)`` of every value replaced by :class:`Unstored` (errors="mark")
    unstored: list[tuple[str, str]] = field(default_factory=list)
    # ids of the containers on the path being encoded, to detect a structure containing itself
    _active: set[int] = field(default_factory=set)

    def add(self, steps: list[str], leaf: str, tensor: torch.Tensor | np.ndarray) -> None:
        self.leaves.append(_Leaf("/".join([*steps, leaf]), tensor))

    def encode(self, obj: Any, steps: list[str], where: str) -> None:
        n_leaves = len(self.leaves)
        container = isinstance(obj, (list, tuple, dict))
        try:
            if container and id(obj) in self._active:
                raise TypeError(
                    f"{where}: the structure contains itself (this {type(obj).__name__} is "
                    "one of its own ancestors), it cannot be stored"
                )
            if container:
                self._active.add(id(obj))
            try:
                self._encode(obj, steps, where)
            finally:
                if container:
                    self._active.discard(id(obj))
        except (TypeError, OverflowError, ValueError) as e:
            if self.errors != "mark":
                raise
            # what was added for the failing value is replaced by one marked leaf; the error
            # message starts with the path of the value that failed, the deepest one
            del self.leaves[n_leaves:]
            reason = str(e).split(": ", 1)[1] if str(e).startswith(where) else str(e)
            self._add_unstored(steps, where, Unstored(type(obj).__name__, reason))

    def _add_unstored(self, steps: list[str], where: str, value: Unstored) -> None:
        """One ``unstored`` leaf (type and reason in JSON) and its path in ``unstored``."""
        self.unstored.append((where, value.reason))
        text = json.dumps([value.type_name, value.reason])
        self.add(steps, "unstored", torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8))

    def _encode(self, obj: Any, steps: list[str], where: str) -> None:
        if isinstance(obj, Unstored):
            # a value already known as not stored (steal_forward could not copy it)
            self._add_unstored(steps, where, obj)
            return
        if obj is None:
            self.add(steps, "none", torch.empty((0,), dtype=torch.float32))
            return
        if isinstance(obj, torch.Tensor):
            self.add(steps, "tensor", obj)
            return
        if isinstance(obj, np.ndarray):
            self.add(steps, "array", _array_to_leaf(obj, where))
            return
        if isinstance(obj, np.generic):
            # a numpy scalar (np.float32(1), ml_dtypes.bfloat16(1)...): a 0-d array
            self.add(steps, "npscalar", _array_to_leaf(np.asarray(obj), where))
            return
        if isinstance(obj, bool):
            self.add(steps, "bool", torch.tensor(obj, dtype=torch.bool))
            return
        if isinstance(obj, int):
            if not -(2**63) <= obj < 2**63:
                raise OverflowError(f"{where}: integer {obj} does not fit in int64")
            self.add(steps, "int", torch.tensor(obj, dtype=torch.int64))
            return
        if isinstance(obj, float):
            self.add(steps, "float", torch.tensor(obj, dtype=torch.float64))
            return
        if isinstance(obj, str):
            self.add(steps, "str", torch.tensor(list(obj.encode("utf-8")), dtype=torch.uint8))
            return
        if isinstance(obj, (tuple, list)) and type(obj) in (tuple, list):
            kind = type(obj).__name__
            self._children(kind, [(str(i), f"[{i}]", v) for i, v in enumerate(obj)], steps, where)
            return
        if isinstance(obj, dict) and type(obj) is dict:
            items = [(_encode_key(k, where), f"[{k!r}]", v) for k, v in obj.items()]
            self._children("dict", items, steps, where)
            return
        cls_name = type(obj).__name__
        if compat.is_model_output(obj):
            items = [(_encode_key(k, where), _path_item(k), v) for k, v in obj.items()]
            self._children(f"ModelOutput[{_quote(cls_name)}]", items, steps, where)
            return
        if compat.is_cache(obj):
            kind, items = _cache_children(obj, where)
            self._children(kind, items, steps, where)
            return
        raise TypeError(
            f"{where}: type {cls_name} cannot be stored, supported: tensors, numpy arrays, "
            "tuple, list, dict, None, int, float, bool, str, DynamicCache, StaticCache, "
            "EncoderDecoderCache, ModelOutput"
        )

    def _children(
        self, kind: str, items: list[tuple[str, str, Any]], steps: list[str], where: str
    ) -> None:
        if not items:
            self.add(steps, f"empty:{kind}", torch.empty((0,), dtype=torch.float32))
            return
        for key, suffix, value in items:
            self.encode(value, [*steps, f"{kind}:{key}"], f"{where}{suffix}")


def _cache_children(cache: Any, where: str) -> tuple[str, list[tuple[str, str, Any]]]:
    from ..cache_helpers import get_cache_kv

    name = type(cache).__name__
    if name == "EncoderDecoderCache":
        return name, [
            ("0", ".self_attention_cache", cache.self_attention_cache),
            ("1", ".cross_attention_cache", cache.cross_attention_cache),
        ]
    keys, values = get_cache_kv(cache)
    layers = [
        la
        for la in cache.layers
        if getattr(la, "is_initialized", True) and getattr(la, "keys", None) is not None
    ]
    if name == "DynamicCache":
        kinds = [
            f"sliding={int(la.sliding_window)}" if getattr(la, "is_sliding", False) else "full"
            for la in layers
        ]
        kind = f"DynamicCache[{','.join(kinds)}]"
    elif name == "StaticCache":
        lengths = [int(getattr(la, "cumulative_length", la.keys.shape[2])) for la in layers]
        max_len = int(keys[0].shape[2]) if keys else int(getattr(cache, "max_cache_len", 0) or 0)
        kind = f"StaticCache[{max_len};{','.join(map(str, lengths))}]"
    else:
        raise TypeError(
            f"{where}: cache type {name} cannot be stored, "
            "supported: DynamicCache, StaticCache, EncoderDecoderCache"
        )
    items = []
    for i, (k, v) in enumerate(zip(keys, values)):
        items.append((str(2 * i), f".key_{i}", k))
        items.append((str(2 * i + 1), f".value_{i}", v))
    return kind, items


def create_onnx_model_from_input_tensors(
    obj: Any, switch_low_high: bool | None = None, errors: str = "raise"
) -> onnx.ModelProto:
    """
    Creates an ONNX model whose outputs are every tensor of a nested structure,
    the output names encoding the structure (see the module documentation).

    :param obj: a tensor, None, a scalar, a string, or tuples, lists, dicts (keys str, int or
        tuples of them), DynamicCache (sliding layers kept), StaticCache, EncoderDecoderCache,
        ModelOutput nesting them
    :param switch_low_high: byte order, see :func:`tensor_to_proto`
    :param errors: what happens to a value that cannot be stored (a ``set``, a numpy array
        of strings, a structure containing itself...): ``"raise"`` raises a TypeError naming
        its path (``obj[1]['x']``), ``"mark"`` stores an :class:`Unstored` in its place (type
        and reason, read back as such) so that the rest is kept, and lists the paths in the
        model's metadata (:func:`unstored_values`)
    :return: the model, save it with :func:`save_onnx_dump` (it handles dumps above 2 GiB)

    >>> import torch
    >>> proto = create_onnx_model_from_input_tensors(((torch.ones(2),), {}))
    >>> [o.name for o in proto.graph.output]
    ['tuple:0/tuple:0/tensor', 'tuple:1/empty:dict']
    """
    if errors not in ("raise", "mark"):
        raise ValueError(f"errors={errors!r} must be 'raise' or 'mark'")
    encoder = _Encoder(switch_low_high, errors)
    encoder.encode(obj, [], "obj")

    # The model is filled in place: onnx.helper.make_graph / make_model copy every
    # initializer, twice the size of the dump.
    model = onnx.ModelProto()
    model.ir_version = _IR_VERSION
    model.producer_name = "onnx_diagnostic.mini_onnx_builder"
    model.opset_import.append(onnx.helper.make_opsetid("", _OPSET))
    props = {DUMP_METADATA_KEY: _DUMP_VERSION}
    if encoder.unstored:
        props[UNSTORED_METADATA_KEY] = json.dumps(encoder.unstored)
    onnx.helper.set_model_props(model, props)
    graph = model.graph
    graph.name = "dump"
    for i, leaf in enumerate(encoder.leaves):
        if isinstance(leaf.tensor, np.ndarray):
            # int4, float4...: onnx packs them as the standard says
            proto = graph.initializer.add()
            proto.CopyFrom(onnx.numpy_helper.from_array(leaf.tensor, f"c{i}"))
        else:
            proto = tensor_to_proto(
                leaf.tensor, f"c{i}", switch_low_high=switch_low_high, out=graph.initializer.add()
            )
        graph.node.append(onnx.helper.make_node("Identity", [proto.name], [leaf.name]))
        graph.output.append(
            onnx.helper.make_tensor_value_info(leaf.name, proto.data_type, list(proto.dims))
        )
    return model


def unstored_values(path_or_proto: str | os.PathLike | onnx.ModelProto) -> list[tuple[str, str]]:
    """
    Returns ``(path, reason)`` for every value a dump could not store (replaced by an
    :class:`Unstored`, see ``errors="mark"`` in :func:`create_onnx_model_from_input_tensors`),
    an empty list when everything was stored.

    >>> proto = create_onnx_model_from_input_tensors([1, {2}], errors="mark")
    >>> [path for path, reason in unstored_values(proto)]
    ['obj[1]']
    """
    model = _load(path_or_proto)
    props = {p.key: p.value for p in model.metadata_props}
    return [tuple(item) for item in json.loads(props.get(UNSTORED_METADATA_KEY, "[]"))]


def save_onnx_dump(
    model: onnx.ModelProto, filename: str, external_data_threshold: int = PROTOBUF_LIMIT
) -> bool:
    """
    Saves a model built by :func:`create_onnx_model_from_input_tensors`.
    When its tensors weigh ``external_data_threshold`` bytes or more (by default just under
    the 2 GiB protobuf limit), they go to ``<filename>.data`` following the ONNX external
    data format: :func:`onnx.load` and :func:`create_input_tensors_from_onnx_model` read it
    back. The given model is not modified.

    :param model: the model
    :param filename: file to write
    :param external_data_threshold: size in bytes from which the tensors are saved as
        external data
    :return: True if external data was used

    >>> import os, tempfile, torch
    >>> proto = create_onnx_model_from_input_tensors([torch.zeros(4)])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_onnx_dump(proto, os.path.join(tmp, "dump.onnx"), external_data_threshold=8)
    True
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto, not {type(model).__name__}")
    size = sum(init.ByteSize() for init in model.graph.initializer)
    location = os.path.basename(filename) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(filename)), location)
    if size < external_data_threshold:
        onnx.save(model, filename)
        return False
    logger.info("saves %d bytes of tensors in %r", size, data_path)
    light = onnx.ModelProto()
    for name in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, name, getattr(model, name))
    light.opset_import.extend(model.opset_import)
    light.metadata_props.extend(model.metadata_props)
    graph = model.graph
    light.graph.name = graph.name
    light.graph.node.extend(graph.node)
    light.graph.input.extend(graph.input)
    light.graph.output.extend(graph.output)
    offset = 0
    with open(data_path, "wb") as f:
        for init in graph.initializer:
            ext = light.graph.initializer.add()
            ext.name, ext.data_type = init.name, init.data_type
            ext.dims.extend(init.dims)
            if not init.HasField("raw_data"):
                ext.CopyFrom(init)
                continue
            raw = init.raw_data
            f.write(raw)
            ext.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", offset), ("length", len(raw))):
                entry = ext.external_data.add()
                entry.key, entry.value = k, str(v)
            offset += len(raw)
    onnx.save(light, filename)
    return True


# Decoding.

_STEP = re.compile(r"^(?P<kind>[A-Za-z]+)(?:\[(?P<meta>[^\]]*)\])?:(?P<key>.+)$")
_EMPTY = re.compile(r"^empty:(?P<kind>[A-Za-z]+)(?:\[(?P<meta>[^\]]*)\])?$")
_CONTAINERS = {"tuple", "list", "dict", "DynamicCache", "StaticCache", "EncoderDecoderCache"}


@dataclass
class _Node:
    kind: str
    meta: str | None
    children: dict[Any, Any] = field(default_factory=dict)


def _new_node(kind: str, meta: str | None, name: str) -> _Node:
    if kind not in _CONTAINERS and kind != "ModelOutput":
        raise DumpFormatError(f"output {name!r}: unknown container {kind!r}")
    return _Node(kind, None if meta is None else _unquote(meta))


def _decode_leaf(leaf: str, tensor: torch.Tensor | np.ndarray, name: str) -> Any:
    if leaf == "tensor":
        return tensor
    if leaf == "array":
        return _leaf_to_array(tensor)
    if leaf == "npscalar":
        return _leaf_to_array(tensor)[()]
    if leaf == "none":
        return None
    if leaf in ("int", "float", "bool"):
        return {"int": int, "float": float, "bool": bool}[leaf](tensor.item())
    if leaf == "str":
        return bytes(tensor.cpu().numpy().tobytes()).decode("utf-8")
    if leaf == "unstored":
        try:
            type_name, reason = json.loads(bytes(tensor.cpu().numpy().tobytes()).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise DumpFormatError(f"output {name!r}: unreadable 'unstored' leaf: {e}") from e
        return Unstored(type_name, reason)
    m = _EMPTY.match(leaf)
    if m:
        return _new_node(m["kind"], m["meta"], name)
    raise DumpFormatError(f"output {name!r}: unknown leaf {leaf!r}")


def _finalize(node: Any, where: str) -> Any:
    if not isinstance(node, _Node):
        return node
    values = {k: _finalize(v, f"{where}[{k!r}]") for k, v in node.children.items()}
    if node.kind in ("tuple", "list") or node.kind.endswith("Cache"):
        if list(values) != list(range(len(values))):
            raise DumpFormatError(f"{where}: missing elements, indices are {list(values)}")
        items = list(values.values())
        if node.kind == "tuple":
            return tuple(items)
        if node.kind == "list":
            return items
        return _build_cache(node.kind, node.meta, items, where)
    if node.kind == "dict":
        return values
    return _build_model_output(node.meta or "", values)


def _build_cache(kind: str, meta: str | None, items: list, where: str) -> Any:
    from .. import cache_helpers as ch

    if kind == "EncoderDecoderCache":
        if len(items) != 2:
            raise DumpFormatError(f"{where}: an EncoderDecoderCache needs 2 caches")
        return ch.make_encoder_decoder_cache(items[0], items[1])
    pairs = [(items[2 * i], items[2 * i + 1]) for i in range(len(items) // 2)]
    if kind == "DynamicCache":
        kinds = [k for k in (meta or "").split(",") if k]
        windows = {int(k.split("=")[1]) for k in kinds if k.startswith("sliding=")}
        layer_types = [ch.SLIDING_ATTENTION if k != "full" else ch.FULL_ATTENTION for k in kinds]
        if len(layer_types) != len(pairs):
            raise DumpFormatError(
                f"{where}: {len(layer_types)} layer types for {len(pairs)} layers"
            )
        if len(windows) > 1:
            logger.warning("%s: several sliding windows %s, only one is kept", where, windows)
        return ch.make_dynamic_cache(
            pairs, layer_types=layer_types, sliding_window=max(windows) if windows else None
        )
    max_len_text, _, lengths_text = (meta or "").partition(";")
    cache = ch.make_static_cache(pairs, int(max_len_text))
    lengths = [int(x) for x in lengths_text.split(",") if x]
    for layer, length in zip(cache.layers, lengths):
        if not hasattr(layer, "cumulative_length"):
            # transformers<5 infers the length from the non-zero positions
            continue
        if isinstance(layer.cumulative_length, torch.Tensor):
            layer.cumulative_length = torch.tensor(length, dtype=layer.cumulative_length.dtype)
        else:
            layer.cumulative_length = length
    return cache


def _find_model_output_class(class_name: str) -> type | None:
    cls = compat.transformers_class("modeling_outputs", class_name)
    if cls is not None:
        return cls
    base = compat.loaded_model_output_class()
    # model specific outputs (Gemma3CausalLMOutputWithPast...) live in modules already loaded
    for mod_name, mod in list(sys.modules.items()):
        if base is None or not mod_name.startswith("transformers.") or mod is None:
            continue
        cand = getattr(mod, class_name, None)
        if isinstance(cand, type) and issubclass(cand, base):
            return cand
    return None


def _build_model_output(class_name: str, values: dict) -> Any:
    cls = _find_model_output_class(class_name)
    if cls is None:
        logger.warning("ModelOutput class %r not found, a dict is returned", class_name)
        return values
    return cls(**values)


def _load(path_or_proto: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto
    if isinstance(path_or_proto, bytes):
        try:
            return onnx.load_from_string(path_or_proto)
        except Exception as e:
            raise DumpFormatError(f"the given bytes are not an ONNX model: {e}") from e
    if not isinstance(path_or_proto, (str, os.PathLike)):
        raise TypeError(
            "path_or_proto must be a file name or an onnx.ModelProto, "
            f"not {type(path_or_proto).__name__}"
        )
    if not os.path.exists(path_or_proto):
        raise FileNotFoundError(f"path_or_proto: file {str(path_or_proto)!r} does not exist")
    if os.path.isdir(path_or_proto):
        raise DumpFormatError(f"path_or_proto: {str(path_or_proto)!r} is a folder, not a file")
    if os.path.getsize(path_or_proto) == 0:
        raise DumpFormatError(
            f"file {str(path_or_proto)!r} is empty (0 bytes): the dump was not written, "
            "or its writing was interrupted"
        )
    try:
        return onnx.load(path_or_proto)
    except Exception as e:
        raise DumpFormatError(f"file {str(path_or_proto)!r} is not an ONNX model: {e}") from e


def _output_tensors_onnx(model: onnx.ModelProto, device: str) -> list[torch.Tensor | np.ndarray]:
    inits = {i.name: i for i in model.graph.initializer}
    producers: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for o in node.output:
            producers[o] = node
    tensors = []
    for out in model.graph.output:
        node = producers.get(out.name)
        if node is None and out.name in inits:
            proto = inits[out.name]
        elif node is not None and node.op_type == "Identity" and node.input[0] in inits:
            proto = inits[node.input[0]]
        elif node is not None and node.op_type == "Constant":
            attr = [a for a in node.attribute if a.name == "value"]
            if not attr:
                raise DumpFormatError(f"output {out.name!r}: Constant node without 'value'")
            proto = attr[0].t
        else:
            raise DumpFormatError(
                f"output {out.name!r} is not a constant (produced by "
                f"{node.op_type if node is not None else 'nothing'})"
            )
        leaf = out.name.rsplit("/", 1)[-1]
        if proto.data_type not in _ONNX_TO_TORCH and leaf in ("array", "npscalar"):
            # a numpy array of a type torch does not have (int4...)
            tensors.append(onnx.numpy_helper.to_array(proto))
        else:
            tensors.append(proto_to_tensor(proto, device=device))
    return tensors


def _output_tensors_reference(
    model: onnx.ModelProto, device: str
) -> list[torch.Tensor | np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    results = ReferenceEvaluator(model).run(None, {})
    tensors = []
    for out, value in zip(model.graph.output, results):
        if out.type.tensor_type.elem_type not in _ONNX_TO_TORCH:
            # int4...: only numpy (ml_dtypes) holds them
            tensors.append(np.asarray(value))
            continue
        dtype = _ONNX_TO_TORCH[out.type.tensor_type.elem_type]
        shape = tuple(d.dim_value for d in out.type.tensor_type.shape.dim)
        # the evaluator may return shape (1,) for a 0-d constant
        t = _numpy_to_torch(np.asarray(value), dtype).reshape(shape)
        tensors.append(t.to(device) if str(device) != "cpu" else t)
    return tensors


_ENGINES: dict[str, Callable[[onnx.ModelProto, str], list[torch.Tensor | np.ndarray]]] = {
    "onnx": _output_tensors_onnx,
    "reference": _output_tensors_reference,
}


def create_input_tensors_from_onnx_model(
    path_or_proto: str | os.PathLike | onnx.ModelProto,
    device: str | torch.device = "cpu",
    engine: str = "onnx",
) -> Any:
    """
    Rebuilds the structure stored by :func:`create_onnx_model_from_input_tensors`.

    :param path_or_proto: file name (external data next to it is loaded) or ModelProto
    :param device: device of the returned tensors
    :param engine: ``"onnx"`` reads the stored bytes (fast, bit-exact),
        ``"reference"`` runs the model with :class:`onnx.reference.ReferenceEvaluator`
        (slower, shows that any runtime replays the dump)
    :return: the structure

    >>> import torch
    >>> proto = create_onnx_model_from_input_tensors({("a", 0): torch.tensor(1.0)})
    >>> create_input_tensors_from_onnx_model(proto)
    {('a', 0): tensor(1.)}
    """
    if engine not in _ENGINES:
        raise ValueError(f"engine={engine!r} is not supported, expected one of {sorted(_ENGINES)}")
    model = _load(path_or_proto)
    props = {p.key: p.value for p in model.metadata_props}
    if DUMP_METADATA_KEY not in props:
        raise DumpFormatError(
            f"path_or_proto is not a dump made by create_onnx_model_from_input_tensors "
            f"(metadata {DUMP_METADATA_KEY!r} is missing, producer is "
            f"{model.producer_name!r}, {len(model.graph.node)} nodes)"
        )
    if props[DUMP_METADATA_KEY] != _DUMP_VERSION:
        raise DumpFormatError(
            f"dump format version {props[DUMP_METADATA_KEY]!r} is not supported "
            f"(expected {_DUMP_VERSION!r})"
        )
    if not model.graph.output:
        raise DumpFormatError("path_or_proto: the dump has no output")
    tensors = _ENGINES[engine](model, str(device))
    root: Any = None
    for out, tensor in zip(model.graph.output, tensors):
        name = out.name
        *steps, leaf = name.split("/")
        value = _decode_leaf(leaf, tensor, name)
        if not steps:
            if len(model.graph.output) != 1:
                raise DumpFormatError(f"output {name!r} is a root but there are other outputs")
            root = value
            break
        parsed = []
        for step in steps:
            m = _STEP.match(step)
            if m is None:
                raise DumpFormatError(f"output {name!r}: cannot parse step {step!r}")
            parsed.append(m)
        if root is None:
            root = _new_node(parsed[0]["kind"], parsed[0]["meta"], name)
        node = root
        for i, m in enumerate(parsed):
            meta = None if m["meta"] is None else _unquote(m["meta"])
            if not isinstance(node, _Node) or node.kind != m["kind"] or node.meta != meta:
                raise DumpFormatError(f"output {name!r}: step {m.string!r} contradicts others")
            key = _decode_key(m["key"]) if m["kind"] in ("dict", "ModelOutput") else int(m["key"])
            if i == len(parsed) - 1:
                if key in node.children:
                    raise DumpFormatError(f"output {name!r}: duplicated position")
                node.children[key] = value
            else:
                if key not in node.children:
                    nxt = parsed[i + 1]
                    node.children[key] = _new_node(nxt["kind"], nxt["meta"], name)
                node = node.children[key]
    return _finalize(root, "obj")


# onnx-diagnostic's lower level builder, in its own module (this one would pass 950 lines)
from ._mini_builder import MiniOnnxBuilder, proto_from_array  # noqa: E402
