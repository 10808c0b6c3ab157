"""
Compact descriptions of nested objects (:func:`string_type`), their flattening into the
list of tensors an ONNX model would return (:func:`flatten_object`) and the comparison
of two nested results (:func:`max_diff`).

None of them imports :epkg:`transformers`: caches and ``ModelOutput`` are detected only
if transformers was already imported (an object cannot be a cache otherwise).

>>> import torch
>>> from onnx_diagnostic.helpers.helper import string_type
>>> string_type(dict(x=torch.zeros((2, 3)), n=4), with_shape=True, with_min_max=True)
'dict(x:T1s2x3[0.0,0.0:A0.0],n:int=4)'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import compat

logger = logging.getLogger(__name__)

__all__ = ["flatten_object", "max_diff", "string_type"]

# ----------------------------------------------------------------------------------------
# element types
# ----------------------------------------------------------------------------------------

#: ONNX ``TensorProto`` element type of every torch dtype (the ones this torch has).
_TORCH_ELEM_TYPES: dict[torch.dtype, int] = {}
#: ONNX element type by numpy dtype name (ml_dtypes names included).
_NUMPY_ELEM_TYPES: dict[str, int] = {}

for _name, _elem in [
    ("float32", 1),
    ("uint8", 2),
    ("int8", 3),
    ("uint16", 4),
    ("int16", 5),
    ("int32", 6),
    ("int64", 7),
    ("bool", 9),
    ("float16", 10),
    ("float64", 11),
    ("uint32", 12),
    ("uint64", 13),
    ("complex64", 14),
    ("complex128", 15),
    ("bfloat16", 16),
    ("float8_e4m3fn", 17),
    ("float8_e4m3fnuz", 18),
    ("float8_e5m2", 19),
    ("float8_e5m2fnuz", 20),
    ("uint4", 21),
    ("int4", 22),
    ("float4_e2m1fn_x2", 23),
    ("float8_e8m0fnu", 24),
]:
    _NUMPY_ELEM_TYPES[_name] = _elem
    if hasattr(torch, _name):
        _TORCH_ELEM_TYPES[getattr(torch, _name)] = _elem
_NUMPY_ELEM_TYPES["float4_e2m1fn"] = 23
_NUMPY_ELEM_TYPES["str"] = 8
_NUMPY_ELEM_TYPES["object"] = 8
del _name, _elem


def _torch_elem_type(dtype: torch.dtype) -> int | str:
    return _TORCH_ELEM_TYPES.get(dtype, str(dtype).replace("torch.", ""))


def _numpy_elem_type(dtype: np.dtype) -> int | str:
    elem = _NUMPY_ELEM_TYPES.get(dtype.name, None)
    if elem is None and dtype.kind == "U":
        return 8
    return dtype.name if elem is None else elem


# ----------------------------------------------------------------------------------------
# string_type
# ----------------------------------------------------------------------------------------

#: A formatter receives ``(obj, with_shape, with_min_max)`` and returns a string.
Formatter = Callable[[Any, bool, bool], str]

#: type -> formatter, filled below and completed lazily for subclasses (see _formatter).
_FORMATTERS: dict[type, Formatter] = {}


def _fmt_number(value: Any) -> str:
    return str(value)


def _is_traced(t: torch.Tensor) -> bool:
    """
    True for a tensor seen while :func:`torch.export.export` or :func:`torch.compile`
    traces a model: computing statistics would add nodes and symbols to the graph.
    """
    if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
        from torch._subclasses.fake_tensor import FakeTensor
        from torch._subclasses.functional_tensor import FunctionalTensor

        if isinstance(t, (FakeTensor, FunctionalTensor)):
            return True
    return torch.compiler.is_compiling()


def _stats_torch(t: torch.Tensor) -> str:
    """``[min,max:Amean]``, computed on the values which are not NaN."""
    if t.is_complex() or t.device.type == "meta" or _is_traced(t):
        return ""
    if t.numel() == 0:
        return "[empty]"
    try:
        x = t.detach()
        if x.dtype == torch.bool:
            x = x.to(torch.int64)
        if x.is_floating_point():
            if x.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                x = x.to(torch.float32)
            isnan = torch.isnan(x)
            nnan = int(isnan.sum())
            if nnan:
                x = x[~isnan]
                if x.numel() == 0:
                    return f"[nan,nan:AnanN{nnan}nans]"
            mini, maxi = float(x.min()), float(x.max())
            mean = float(x.mean(dtype=torch.float64))
            nans = f"N{nnan}nans" if nnan else ""
            return f"[{mini},{maxi}:A{mean}{nans}]"
        mini, maxi = int(x.min()), int(x.max())
        mean = float(x.to(torch.float64).mean())
        return f"[{mini},{maxi}:A{mean}]"
    except Exception:  # FakeTensor, symbolic shapes, unsupported dtype: no statistics
        return ""


def _stats_numpy(a: np.ndarray) -> str:
    if a.size == 0:
        return "[empty]"
    kind = a.dtype.kind
    if kind in "biu":
        return f"[{int(a.min())},{int(a.max())}:A{float(a.mean(dtype=np.float64))}]"
    if kind != "f":
        try:
            a = a.astype(np.float32)  # ml_dtypes (bfloat16, float8...)
        except (TypeError, ValueError):
            return ""
    isnan = np.isnan(a)
    nnan = int(isnan.sum())
    if nnan:
        a = a[~isnan]
        if a.size == 0:
            return f"[nan,nan:AnanN{nnan}nans]"
    nans = f"N{nnan}nans" if nnan else ""
    return f"[{float(a.min())},{float(a.max())}:A{float(a.mean(dtype=np.float64))}{nans}]"


def _fmt_tensor(obj: torch.Tensor, with_shape: bool, with_min_max: bool) -> str:
    elem = _TORCH_ELEM_TYPES.get(obj.dtype) or _torch_elem_type(obj.dtype)
    if with_shape:
        text = f"T{elem}s{'x'.join(map(str, obj.shape))}"
    else:
        text = f"T{elem}r{obj.dim()}"
    if with_min_max:
        return text + _stats_torch(obj)
    return text


def _fmt_array(obj: np.ndarray, with_shape: bool, with_min_max: bool) -> str:
    elem = _numpy_elem_type(obj.dtype)
    if with_shape:
        text = f"A{elem}s{'x'.join(map(str, obj.shape))}"
    else:
        text = f"A{elem}r{obj.ndim}"
    if with_min_max:
        return text + _stats_numpy(obj)
    return text


def _fmt_tuple(obj: tuple, with_shape: bool, with_min_max: bool) -> str:
    if len(obj) == 1:
        return f"({_string_type(obj[0], with_shape, with_min_max)},)"
    return f"({','.join(_string_type(o, with_shape, with_min_max) for o in obj)})"


def _fmt_list(obj: list, with_shape: bool, with_min_max: bool) -> str:
    inside = ",".join(_string_type(o, with_shape, with_min_max) for o in obj)
    return f"#{len(obj)}[{inside}]"


def _fmt_set(obj: set | frozenset, with_shape: bool, with_min_max: bool) -> str:
    if not obj:
        return "set()"
    return "{" + ",".join(sorted(_string_type(o, with_shape, with_min_max) for o in obj)) + "}"


def _fmt_dict(obj: dict, with_shape: bool, with_min_max: bool) -> str:
    if not obj:
        return "{}"
    if all(type(k) is str for k in obj):
        inside = ",".join(
            f"{k}:{_string_type(v, with_shape, with_min_max)}" for k, v in obj.items()
        )
        return f"dict({inside})"
    inside = ",".join(f"{k!r}:{_string_type(v, with_shape, with_min_max)}" for k, v in obj.items())
    return "{" + inside + "}"


def _fmt_scalar(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    name = type(obj).__name__
    return f"{name}={obj!r}" if with_min_max else name


def _fmt_str(obj: str, with_shape: bool, with_min_max: bool) -> str:
    return "str"


def _fmt_none(obj: None, with_shape: bool, with_min_max: bool) -> str:
    return "None"


def _fmt_numpy_scalar(obj: np.generic, with_shape: bool, with_min_max: bool) -> str:
    return f"{obj.dtype.name}={obj.item()!r}" if with_min_max else obj.dtype.name


def _fmt_dtype(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    return str(obj).replace("torch.", "")


def _fmt_device(obj: torch.device, with_shape: bool, with_min_max: bool) -> str:
    return str(obj)


def _fmt_sym(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    return f"{type(obj).__name__}({obj.node})"


def _fmt_dim(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    return f"Dim({obj.__name__})"


def _fmt_dim_hint(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    kind = getattr(getattr(obj, "type", None), "name", "DimHint")
    bounds = [f"{k}={getattr(obj, k)}" for k in ("min", "max") if getattr(obj, k, None) is not None]
    return f"{kind}({','.join(bounds)})" if bounds else kind


def _fmt_class_name(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    return type(obj).__name__


def _fmt_dynamic_cache(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    """A DynamicCache (or a subclass) through the canonical flattening."""
    from ..cache_helpers import _dynamic_cache_groups
    from ..torch_export_patches.serialization import CacheSerializationError

    name = type(obj).__name__
    try:
        groups, layer_types = _dynamic_cache_groups(obj)
    except CacheSerializationError as e:
        # string_type never fails: the description says which layer cannot be read
        cls = e.layer_class.__name__ if e.layer_class is not None else "?"
        return f"{name}(unsupported layers[{e.layer_index}]:{cls})"
    fields = [
        f"{field}={_fmt_list(tensors, with_shape, with_min_max)}"
        for field, tensors in groups.items()
        if tensors or field in ("key_cache", "value_cache")
    ]
    # short names: full, sliding, indexed, linear, hybrid, hybrid_sliding, dummy
    kinds = [t.replace("_attention", "") for t in layer_types]
    if any(k != "full" for k in kinds):
        fields.append(f"layers=[{','.join(kinds)}]")
    return f"{name}({', '.join(fields)})"


def _fmt_cache(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    name = type(obj).__name__
    if hasattr(obj, "self_attention_cache") and hasattr(obj, "cross_attention_cache"):
        sa = _string_type(obj.self_attention_cache, with_shape, with_min_max)
        ca = _string_type(obj.cross_attention_cache, with_shape, with_min_max)
        return f"{name}(self_attention_cache={sa}, cross_attention_cache={ca})"
    if _is_dynamic_cache(obj):
        return _fmt_dynamic_cache(obj, with_shape, with_min_max)
    layers = getattr(obj, "layers", None)
    if layers is None:
        # Caches which are not made of layers (older MambaCache...): only the class name.
        return name
    keys, values, kinds = [], [], []
    for layer in layers:
        if not getattr(layer, "is_initialized", True) or getattr(layer, "keys", None) is None:
            continue
        keys.append(layer.keys)
        values.append(layer.values)
        kinds.append("sliding" if getattr(layer, "is_sliding", False) else "full")
    text = (
        f"{name}(key_cache={_fmt_list(keys, with_shape, with_min_max)}, "
        f"value_cache={_fmt_list(values, with_shape, with_min_max)}"
    )
    if "sliding" in kinds:
        return f"{text}, layers=[{','.join(kinds)}])"
    return text + ")"


def _fmt_model_output(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    # A ModelOutput only keeps the fields which are not None.
    inside = ",".join(
        f"{k}:{_string_type(v, with_shape, with_min_max)}" for k, v in obj.items() if v is not None
    )
    return f"{type(obj).__name__}({inside})"


_FORMATTERS.update(
    {
        torch.Tensor: _fmt_tensor,
        torch.nn.Parameter: _fmt_tensor,
        np.ndarray: _fmt_array,
        tuple: _fmt_tuple,
        list: _fmt_list,
        dict: _fmt_dict,
        set: _fmt_set,
        frozenset: _fmt_set,
        bool: _fmt_scalar,
        int: _fmt_scalar,
        float: _fmt_scalar,
        complex: _fmt_scalar,
        str: _fmt_str,
        type(None): _fmt_none,
        torch.dtype: _fmt_dtype,
        np.dtype: _fmt_dtype,
        torch.device: _fmt_device,
        torch.SymInt: _fmt_sym,
        torch.SymFloat: _fmt_sym,
        torch.SymBool: _fmt_sym,
        torch.export.Dim: _fmt_dim,
    }
)
for _cls_name in ("_DerivedDim", "_StaticDim", "_DimHint"):
    _cls = getattr(torch.export.dynamic_shapes, _cls_name, None)
    if _cls is not None:
        _FORMATTERS[_cls] = _fmt_dim_hint if _cls_name == "_DimHint" else _fmt_dim
if hasattr(np, "dtypes"):
    # numpy>=1.25: every dtype has its own class
    for _v in vars(np.dtypes).values():
        if isinstance(_v, type) and issubclass(_v, np.dtype):
            _FORMATTERS[_v] = _fmt_dtype


def _formatter(cls: type, obj: Any) -> Formatter:
    """Finds the formatter of a type not in the table and adds it to the table."""
    if compat.is_cache(obj):
        fmt = _fmt_cache
    else:
        if compat.is_model_output(obj):
            fmt = _fmt_model_output
        elif isinstance(obj, np.generic):
            fmt = _fmt_numpy_scalar
        else:
            fmt = _fmt_class_name
            for base in cls.__mro__[1:]:
                if base in _FORMATTERS:
                    fmt = _FORMATTERS[base]
                    break
    if len(_FORMATTERS) < 4096:
        # bounded: classes created on the fly (inside functions) must not make it grow forever
        _FORMATTERS[cls] = fmt
    return fmt


def _string_type(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    cls = type(obj)
    fmt = _FORMATTERS.get(cls, None)
    if fmt is None:
        fmt = _formatter(cls, obj)
    return fmt(obj, with_shape, with_min_max)


def string_type(obj: Any, with_shape: bool = False, with_min_max: bool = False) -> str:
    """
    Returns a compact description of ``obj``, made to be printed: the structure of nested
    containers and, for every tensor, its element type and its rank or its shape.

    :param obj: anything
    :param with_shape: shows shapes instead of ranks
    :param with_min_max: shows min, max and mean of every tensor and the value of scalars
    :return: a string, never an exception

    Formats:

    * torch.Tensor: ``T<onnx element type>s<dims joined by x>`` (``T7s2x30``, 0-d ``T1s``)
      with ``with_shape``, ``T<elem>r<rank>`` (``T1r2``) otherwise,
      numpy arrays use ``A`` instead of ``T``; the element types are the numbers of
      ``onnx.TensorProto`` (float32=1, int64=7, bool=9, float16=10, bfloat16=16...).
      ``with_min_max`` appends ``[min,max:Amean]`` (``T7s8[0,7:A3.5]``), integers and booleans
      as integers, the mean in float64; an empty tensor gives ``[empty]``; NaN are ignored by
      the statistics and counted at the end: ``[1.0,2.0:A1.5N2nans]``
      (``[nan,nan:AnanN3nans]`` when all values are NaN). Complex tensors, tensors on
      device meta and tensors seen while a model is traced (fake tensors, inside
      :func:`torch.export.export`) get no statistics.
    * tuple ``(a,b)``, ``(a,)``, ``()``; list ``#2[a,b]``, ``#0[]``;
      dict with str keys ``dict(a:T1r2,b:int)``, other dicts ``{0:Dim(batch)}``,
      empty dict ``{}``; set ``{a,b}`` (items sorted), empty set ``set()``
    * scalars: ``int``, ``float``, ``bool``, ``str``, ``None``, with ``with_min_max``
      the value of numbers: ``int=5``, ``float=0.5``, ``bool=True``
    * ``torch.export.Dim("batch")``: ``Dim(batch)``, derived ``Dim(2*batch)``,
      ``Dim.DYNAMIC``: ``DYNAMIC`` (``DYNAMIC(min=2,max=8)`` with bounds), ``AUTO``, ``STATIC``;
      ``torch.SymInt``: ``SymInt(s0)``, dtypes: ``float32``, devices: ``cpu``
    * transformers caches:
      ``DynamicCache(key_cache=#1[T1s2x1x30x96], value_cache=#1[T1s2x1x30x96])``,
      the same for StaticCache and other subclasses of ``Cache`` with their class name,
      ``, layers=[sliding,full]`` is added before the closing parenthesis
      when a layer is a sliding window layer,
      ``EncoderDecoderCache(self_attention_cache=..., cross_attention_cache=...)``.
      A DynamicCache is read through its canonical flattening
      (:mod:`onnx_diagnostic.torch_export_patches.serialization`): ``key_cache`` and
      ``value_cache`` hold the attention keys and values, the other tensors follow when
      there are some, ``indexer_keys=#1[...]``, ``indexer_position_ids=#1[...]``,
      ``conv_states=#2[...]``, ``recurrent_states=#2[...]``, and ``layers=[...]`` gives the
      type of every layer as soon as one is not a full attention layer
      (``full``, ``sliding``, ``indexed``, ``linear``, ``hybrid``, ``hybrid_sliding``,
      ``dummy``): ``DynamicCache(key_cache=#1[T1r4], value_cache=#1[T1r4],
      conv_states=#1[T1r3], recurrent_states=#1[T1r4], layers=[linear,full])``;
      a layer class this flattening does not know gives
      ``DynamicCache(unsupported layers[1]:MyLayer)``
    * ``ModelOutput``: class name and the fields which are not None:
      ``CausalLMOutputWithPast(logits:T1s2x3x32000,past_key_values:DynamicCache(...))``
    * anything else (``torch.nn.Module`` included): its class name

    >>> import torch
    >>> string_type((torch.zeros((2, 30), dtype=torch.int64),), with_shape=True)
    '(T7s2x30,)'
    >>> string_type([torch.arange(8), 0.5, None], with_shape=True, with_min_max=True)
    '#3[T7s8[0,7:A3.5],float=0.5,None]'
    >>> string_type({0: torch.export.Dim("batch"), 1: torch.export.Dim.DYNAMIC})
    '{0:Dim(batch),1:DYNAMIC}'
    """
    try:
        return _string_type(obj, with_shape, with_min_max)
    except Exception as e:  # never fails: a description must not break the caller
        logger.debug("string_type failed on %s: %s", type(obj).__name__, e)
        return type(obj).__name__


# ----------------------------------------------------------------------------------------
# flatten_object
# ----------------------------------------------------------------------------------------


def _is_encoder_decoder_cache(obj: Any) -> bool:
    return hasattr(obj, "self_attention_cache") and hasattr(obj, "cross_attention_cache")


def _is_dynamic_cache(obj: Any) -> bool:
    # without importing transformers: a cache exists only if cache_utils was loaded
    mod = compat.loaded_cache_module()
    return mod is not None and isinstance(obj, mod.DynamicCache)


def _cache_named_tensors(cache: Any, path: str) -> list[tuple[str, Any]]:
    """
    ``[(path.key_0, k0), (path.value_0, v0), ...]``, the canonical order: a DynamicCache
    as its pytree flattening names and orders its tensors (``conv_state_1``...).
    """
    from ..cache_helpers import _error_at, flatten_dynamic_cache, get_cache_kv

    if _is_encoder_decoder_cache(cache):
        return _cache_named_tensors(
            cache.self_attention_cache, f"{path}.self_attention_cache"
        ) + _cache_named_tensors(cache.cross_attention_cache, f"{path}.cross_attention_cache")
    if _is_dynamic_cache(cache):
        from ..torch_export_patches.serialization import CacheSerializationError

        try:
            named, _ = flatten_dynamic_cache(cache)
        except CacheSerializationError as e:
            raise _error_at(e, path) from e
        return [(f"{path}.{name}", t) for name, t in named]
    keys, values = get_cache_kv(cache)
    out = []
    for i, (k, v) in enumerate(zip(keys, values)):
        out.append((f"{path}.key_{i}", k))
        out.append((f"{path}.value_{i}", v))
    return out


def _flatten_named(
    obj: Any, path: str, out: list[tuple[str, Any]], active: frozenset[int] = frozenset()
) -> None:
    if isinstance(obj, (list, tuple, dict)):
        if id(obj) in active:
            raise TypeError(
                f"{path}: the structure contains itself (this {type(obj).__name__} is one of "
                "its own ancestors)"
            )
        active = active | {id(obj)}
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        out.append((path, obj))
    elif obj is None:
        return
    elif isinstance(obj, (bool, int, float, complex)):
        out.append((path, torch.tensor(obj)))
    elif isinstance(obj, np.generic):
        out.append((path, np.asarray(obj)))
    elif compat.is_model_output(obj):
        for k, v in obj.items():
            _flatten_named(v, f"{path}.{k}", out, active)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten_named(v, f"{path}[{i}]", out, active)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten_named(v, f"{path}[{k!r}]", out, active)
    elif compat.is_cache(obj):
        out.extend(_cache_named_tensors(obj, path))
    elif type(obj) in torch.utils._pytree.SUPPORTED_NODES:
        children, _ = torch.utils._pytree.tree_flatten(obj, is_leaf=lambda x: x is not obj)
        for i, v in enumerate(children):
            _flatten_named(v, f"{path}<{i}>", out, active)
    else:
        raise TypeError(
            f"{path}: cannot flatten an object of type {type(obj).__name__} into tensors"
        )


def flatten_object(obj: Any) -> list[Any]:
    """
    Flattens a nested structure into the list of its tensors, in the order the outputs
    of the exported ONNX model follow: tuples and lists in order, dictionaries in the order
    of their keys, a cache as ``[key_0, value_0, key_1, value_1, ...]`` (an
    ``EncoderDecoderCache`` as its self attention cache followed by its cross attention
    cache), a ``ModelOutput`` as its fields which are not None. ``None`` is skipped,
    python numbers become 0-d tensors, numpy arrays are kept as they are.
    A DynamicCache gives every tensor of its pytree flattening in the same order
    (:func:`onnx_diagnostic.cache_helpers.flatten_dynamic_cache`): conv and recurrent
    states of linear attention layers, indexer keys... included; a layer class this
    flattening does not know raises ``CacheSerializationError`` (a ``TypeError``).

    :param obj: nested structure
    :return: list of tensors (or numpy arrays)
    :raises TypeError: for an object which holds no tensor (a string...),
        the message names its place, e.g. ``obj[1]['text']``

    >>> import torch
    >>> from onnx_diagnostic.helpers.helper import flatten_object, string_type
    >>> flat = flatten_object((torch.zeros(2), dict(a=torch.ones(3), b=None)))
    >>> string_type(flat, with_shape=True)
    '#2[T1s2,T1s3]'
    """
    out: list[tuple[str, Any]] = []
    _flatten_named(obj, "obj", out)
    return [t for _, t in out]


# ----------------------------------------------------------------------------------------
# max_diff
# ----------------------------------------------------------------------------------------


class _Mismatch(Exception):
    """Stops the comparison at the first structural difference."""


class _Accumulator:
    """Discrepancies gathered over all the compared tensors."""

    def __init__(self, hist: list[float] | None, verbose: int):
        self.abs = 0.0
        self.rel = 0.0
        self.sum = 0.0
        self.n = 0
        self.dnan = 0
        self.argm: tuple[int, ...] | None = None
        self.where: str | None = None
        self.hist = hist
        self.rep = dict.fromkeys(hist, 0) if hist else None
        self.verbose = verbose
        #: ``(id(expected), id(got))`` of the containers being compared, to detect cycles
        self.active: set[tuple[int, int]] = set()

    def result(self) -> dict[str, Any]:
        res = dict(
            abs=self.abs,
            rel=self.rel,
            sum=self.sum,
            n=self.n,
            dnan=self.dnan,
            argm=self.argm,
            where=self.where,
        )
        if self.rep is not None:
            res["rep"] = {f">{t}": c for t, c in self.rep.items()}
        return res


_LEAF_TYPES = (torch.Tensor, np.ndarray, np.generic, bool, int, float, complex)


def _to_torch(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_quantized:
            # the values the quantized tensor stands for
            x = x.dequantize()
        elif x.layout != torch.strided:
            # sparse COO / CSR / CSC / BSR / BSC: the dense values
            x = x.to_dense()
        return x if x.device.type == "cpu" else x.cpu()
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.asarray(x)
        if a.dtype.kind not in "biufc":
            a = a.astype(np.float32)  # ml_dtypes (bfloat16, float8...)
        elif a.dtype.kind == "u" and a.dtype.itemsize > 1:
            a = a.astype(np.int64)
        return torch.from_numpy(np.asarray(a, order="C"))
    return torch.tensor(x)


def _abs_diff(
    te: torch.Tensor, tg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(|te - tg|, |te|, te == tg)``, the first two in float64 (complex: the modulus);
    integers are subtracted exactly first, float64 cannot tell 2**53 from 2**53 + 1."""
    if not (te.is_floating_point() or te.is_complex() or tg.is_floating_point() or tg.is_complex()):
        a, b = te.to(torch.int64), tg.to(torch.int64)
        same_sign = (a >= 0) == (b >= 0)
        # no overflow when both have the same sign; otherwise |a - b| >= 1 in float64 too
        exact = torch.where(same_sign, a - b, torch.zeros((), dtype=torch.int64)).abs()
        approx = (a.to(torch.float64) - b.to(torch.float64)).abs()
        diff = torch.where(same_sign, exact.to(torch.float64), approx)
        return diff, a.to(torch.float64).abs(), a == b
    dtype = torch.complex128 if (te.is_complex() or tg.is_complex()) else torch.float64
    te, tg = te.to(dtype), tg.to(dtype)
    return (te - tg).abs(), te.abs(), te == tg


def _compare_tensors(e: Any, g: Any, epath: str, gpath: str, acc: _Accumulator) -> None:
    try:
        te, tg = _to_torch(e), _to_torch(g)
    except Exception as exc:  # numpy strings, objects, meta tensors...
        raise _Mismatch(
            f"{_label(epath, gpath)}: cannot compare {string_type(e, with_shape=True)} "
            f"and {string_type(g, with_shape=True)} ({exc})"
        ) from exc
    if tuple(te.shape) != tuple(tg.shape):
        raise _Mismatch(f"{_label(epath, gpath)}: shape {tuple(te.shape)} vs {tuple(tg.shape)}")
    n = te.numel()
    if n == 0:
        return
    en, gn = torch.isnan(te), torch.isnan(tg)
    diff, eabs, equal = _abs_diff(te, tg)
    ignored = equal | en | gn  # inf == inf, NaN positions are counted apart
    diff = torch.where(ignored, torch.zeros((), dtype=diff.dtype), diff)
    rel = diff / (eabs + 1e-5)
    rel = torch.where(torch.isinf(diff), torch.full((), math.inf, dtype=rel.dtype), rel)
    index = int(diff.argmax())
    mabs = float(diff.reshape(-1)[index])
    mrel = float(rel.max())
    dnan = int((en ^ gn).sum())
    acc.n += n
    acc.sum += float(diff.sum())
    acc.dnan += dnan
    acc.rel = max(acc.rel, mrel)
    if acc.where is None or mabs > acc.abs:
        acc.abs = mabs
        acc.argm = tuple(int(i) for i in np.unravel_index(index, tuple(te.shape)))
        acc.where = epath
    if acc.rep is not None:
        for t in acc.rep:
            acc.rep[t] += int((diff > t).sum())
    if acc.verbose >= 2:
        print(f"[max_diff] {_label(epath, gpath)}: abs={mabs}, rel={mrel}, n={n}, dnan={dnan}")


def _label(epath: str, gpath: str) -> str:
    # Both paths start with "expected" / "got"; the second is only shown when they diverge.
    if gpath.startswith("got") and epath.startswith("expected") and epath[8:] == gpath[3:]:
        return epath
    return f"{epath} (vs {gpath})"


def _kind(obj: Any) -> str:
    if isinstance(obj, _LEAF_TYPES):
        return "leaf"
    if obj is None:
        return "none"
    if isinstance(obj, str):
        return "str"
    if compat.is_model_output(obj):
        return "output"
    if isinstance(obj, (list, tuple)):
        return "seq"
    if isinstance(obj, dict):
        return "dict"
    if compat.is_cache(obj):
        return "cache"
    return "other"


def _is_flat_sequence(obj: Any) -> bool:
    return isinstance(obj, (list, tuple)) and all(isinstance(o, _LEAF_TYPES) for o in obj)


def _flatten_or_mismatch(obj: Any, path: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    try:
        _flatten_named(obj, path, out)
    except TypeError as e:
        raise _Mismatch(str(e)) from e
    return out


def _compare_flat(e: Any, g: Any, epath: str, gpath: str, acc: _Accumulator) -> None:
    fe, fg = _flatten_or_mismatch(e, epath), _flatten_or_mismatch(g, gpath)
    if len(fe) != len(fg):
        raise _Mismatch(
            f"{_label(epath, gpath)}: {len(fe)} tensors vs {len(fg)} once flattened "
            f"({string_type([t for _, t in fe], with_shape=True)} vs "
            f"{string_type([t for _, t in fg], with_shape=True)})"
        )
    for (pe, te), (pg, tg) in zip(fe, fg):
        _compare_tensors(te, tg, pe, pg, acc)


def _compare(e: Any, g: Any, epath: str, gpath: str, acc: _Accumulator) -> None:
    ke, kg = _kind(e), _kind(g)
    pair = (id(e), id(g))
    if ke in ("seq", "dict") or kg in ("seq", "dict"):
        if pair in acc.active:
            raise _Mismatch(
                f"{_label(epath, gpath)}: the structures contain themselves (a cycle), "
                "they cannot be compared"
            )
        acc.active.add(pair)
        try:
            _compare_containers(e, g, ke, kg, epath, gpath, acc)
        finally:
            acc.active.discard(pair)
        return
    _compare_containers(e, g, ke, kg, epath, gpath, acc)


def _compare_containers(
    e: Any, g: Any, ke: str, kg: str, epath: str, gpath: str, acc: _Accumulator
) -> None:
    if ke == "leaf" and kg == "leaf":
        _compare_tensors(e, g, epath, gpath, acc)
        return
    if ke == "none" and kg == "none":
        return
    if (ke == "leaf") != (kg == "leaf") and "none" not in (ke, kg):
        raise _Mismatch(
            f"{_label(epath, gpath)}: {string_type(e, with_shape=True)} vs "
            f"{string_type(g, with_shape=True)}"
        )
    if ke in ("str", "other") or kg in ("str", "other", "none") or ke == "none":
        try:
            same = type(e) is type(g) and bool(e == g)
        except Exception:
            same = False
        if not same:
            raise _Mismatch(
                f"{_label(epath, gpath)}: {string_type(e, with_shape=True)} vs "
                f"{string_type(g, with_shape=True)}"
            )
        return
    if ke == "seq" and kg == "seq" and not (_is_flat_sequence(g) and not _is_flat_sequence(e)):
        if len(e) != len(g):
            raise _Mismatch(f"{_label(epath, gpath)}: length {len(e)} vs {len(g)}")
        for i, (a, b) in enumerate(zip(e, g)):
            _compare(a, b, f"{epath}[{i}]", f"{gpath}[{i}]", acc)
        return
    if ke in ("dict", "output") and kg in ("dict", "output"):
        de = {k: v for k, v in e.items() if v is not None or ke == "dict"}
        dg = {k: v for k, v in g.items() if v is not None or kg == "dict"}
        if set(de) != set(dg):
            raise _Mismatch(
                f"{_label(epath, gpath)}: keys {sorted(map(str, de))} vs {sorted(map(str, dg))}"
            )
        for k, v in de.items():
            suffix = f".{k}" if ke == "output" else f"[{k!r}]"
            gsuffix = f".{k}" if kg == "output" else f"[{k!r}]"
            _compare(v, dg[k], f"{epath}{suffix}", f"{gpath}{gsuffix}", acc)
        return
    if ke == "cache" and kg == "cache":
        if _is_encoder_decoder_cache(e) and _is_encoder_decoder_cache(g):
            for name in ("self_attention_cache", "cross_attention_cache"):
                _compare(
                    getattr(e, name), getattr(g, name), f"{epath}.{name}", f"{gpath}.{name}", acc
                )
            return
        if _is_encoder_decoder_cache(e) != _is_encoder_decoder_cache(g):
            raise _Mismatch(f"{_label(epath, gpath)}: {type(e).__name__} vs {type(g).__name__}")
    # Different containers (a cache and a list, a ModelOutput and a flat list of
    # ONNX Runtime outputs...): the flattened tensors are compared.
    _compare_flat(e, g, epath, gpath, acc)


def max_diff(
    expected: Any,
    got: Any,
    verbose: int = 0,
    flatten: bool = False,
    hist: list[float] | bool | None = None,
) -> dict[str, Any]:
    """
    Returns the discrepancies between two nested structures of tensors:
    tensors, numpy arrays, numbers, lists, tuples, dictionaries, transformers caches,
    ``ModelOutput``.
    When ``got`` is a flat list (the outputs of ONNX Runtime) and ``expected`` is nested,
    ``got`` is compared to ``flatten_object(expected)``. Every tensor is compared in float64
    (complex128 for complex tensors), so dtypes may differ, booleans and integers are
    compared as numbers. Two DynamicCache are compared on every tensor of their canonical
    flattening, the paths use its names (``expected.conv_state_0``,
    ``expected.sliding_key_1``...); a layer class it does not know gives an ``error``
    naming the layer.

    :param expected: expected values
    :param got: values to check
    :param verbose: 1 prints the result, 2 prints every comparison
    :param flatten: flattens both structures before comparing them
    :param hist: thresholds, adds ``rep={">t": number of differences > t}`` to the result,
        True for ``[0, 1e-4, 1e-3, 1e-2, 1e-1, 1]``
    :return: dictionary with keys ``abs`` (max absolute difference), ``rel`` (max of
        ``|e-g| / (|e|+1e-5)``), ``sum`` (sum of absolute differences), ``n`` (number
        of compared values), ``dnan`` (number of positions where only one side is NaN, these
        positions are left out of the other figures), ``argm`` (index of the maximum absolute
        difference in its tensor), ``where`` (path to that tensor);
        a structure mismatch gives ``abs=inf``, ``rel=inf`` and ``error``, a message
        naming the place where they differ, e.g.
        ``expected[1].past_key_values.key_0: shape (2, 4, 3, 7) vs (3, 4, 4, 8)``

    >>> import torch
    >>> from onnx_diagnostic.helpers import max_diff
    >>> d = max_diff((torch.tensor([1.0, 2.0]),), (torch.tensor([1.0, 2.5]),))
    >>> d["abs"], d["n"], d["argm"], d["where"]
    (0.5, 2, (1,), 'expected[0]')
    >>> max_diff([torch.zeros(2)], [torch.zeros(3)])["error"]
    'expected[0]: shape (2,) vs (3,)'
    """
    if hist is True:
        hist = [0, 1e-4, 1e-3, 1e-2, 1e-1, 1]
    if hist and (
        isinstance(hist, (str, bytes))
        or not isinstance(hist, (list, tuple))
        or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in hist)
    ):
        raise TypeError(f"max_diff: hist must be True, None or a list of numbers, got {hist!r}")
    if not isinstance(verbose, int):
        raise TypeError(f"max_diff: verbose must be an int, got {verbose!r}")
    acc = _Accumulator(list(hist) if hist else None, verbose)
    try:
        if flatten or (_is_flat_sequence(got) and not _is_flat_sequence(expected)):
            _compare_flat(expected, got, "expected", "got", acc)
        else:
            _compare(expected, got, "expected", "got", acc)
    except _Mismatch as e:
        res = acc.result()
        res.update(abs=math.inf, rel=math.inf, error=str(e))
        logger.debug("max_diff: %s", e)
        if verbose:
            print(f"[max_diff] error: {e}")
        return res
    res = acc.result()
    if verbose:
        print(
            f"[max_diff] abs={res['abs']}, rel={res['rel']}, n={res['n']}, "
            f"dnan={res['dnan']}, argm={res['argm']} in {res['where']}"
        )
    return res
