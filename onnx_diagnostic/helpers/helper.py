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
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import compat

logger = logging.getLogger(__name__)

__all__ = ["flatten_object", "max_diff", "size_type", "string_diff", "string_type"]

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


#: bytes per element of every ONNX element type with a whole number of bytes
_ONNX_ELEM_SIZES: dict[int, int] = {
    1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
    14: 8, 15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 23: 1, 24: 1,
}  # fmt: skip


def size_type(dtype: Any) -> int:
    """
    Returns the number of bytes of one element of a type: an ONNX element type
    (``onnx.TensorProto.FLOAT`` = 1...), a torch dtype, a numpy dtype or scalar type
    (``ml_dtypes`` types included).

    :param dtype: the type
    :return: bytes per element (``float4_e2m1fn_x2``, two values packed, counts 1)
    :raises ValueError: for a type without a whole number of bytes per element
        (``int4``, ``uint4``, strings)
    :raises TypeError: for something which is not a type

    >>> import numpy as np, torch
    >>> size_type(1), size_type(torch.bfloat16), size_type(np.int64)
    (4, 2, 8)
    """
    if isinstance(dtype, bool):
        raise TypeError(f"size_type: dtype must be a type, not {dtype!r}")
    if isinstance(dtype, int):
        if dtype not in _ONNX_ELEM_SIZES:
            raise ValueError(
                f"size_type: ONNX element type {dtype} has no whole number of bytes per "
                "element (or does not exist)"
            )
        return _ONNX_ELEM_SIZES[dtype]
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(
            f"size_type: dtype must be an ONNX element type, a torch or numpy dtype, not {dtype!r}"
        ) from e
    if np_dtype.kind in "OUS" or np_dtype.itemsize == 0 or np_dtype.name in ("int4", "uint4"):
        raise ValueError(f"size_type: {np_dtype} has no fixed number of bytes per element")
    return np_dtype.itemsize


# ----------------------------------------------------------------------------------------
# string_type
# ----------------------------------------------------------------------------------------

#: A formatter receives ``(obj, with_shape, with_min_max)`` and returns a string.
Formatter = Callable[[Any, bool, bool], str]

#: type -> formatter, filled below and completed lazily for subclasses (see _formatter).
_FORMATTERS: dict[type, Formatter] = {}


class _Options:
    """Options of the running :func:`string_type` call the formatters do not receive."""

    __slots__ = ("limit", "verbose", "with_device")

    def __init__(self, limit: int = 20, verbose: int = 0, with_device: bool = False):
        self.limit = limit
        self.verbose = verbose
        self.with_device = with_device


_OPTIONS = _Options()


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


def _device_prefix(obj: torch.Tensor) -> str:
    if not _OPTIONS.with_device:
        return ""
    return "C" if obj.device.type in ("cpu", "meta") else "G"


def _fmt_tensor(obj: torch.Tensor, with_shape: bool, with_min_max: bool) -> str:
    elem = _TORCH_ELEM_TYPES.get(obj.dtype) or _torch_elem_type(obj.dtype)
    if with_shape:
        text = f"{_device_prefix(obj)}T{elem}s{'x'.join(map(str, obj.shape))}"
    else:
        text = f"{_device_prefix(obj)}T{elem}r{obj.dim()}"
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


def _numbers_stats(obj: list | tuple) -> str | None:
    """``min,max:mean`` of a sequence of python numbers, None for anything else."""
    if not all(isinstance(o, (int, float, bool)) for o in obj):
        return None
    return f"{min(obj)},{max(obj)}:{sum(float(o) for o in obj) / len(obj)}"


def _fmt_tuple(obj: tuple, with_shape: bool, with_min_max: bool) -> str:
    if len(obj) == 1:
        return f"({_string_type(obj[0], with_shape, with_min_max)},)"
    if len(obj) >= _OPTIONS.limit:
        # long sequences: the first element only, as onnx-diagnostic does
        text = f"#{len(obj)}({_string_type(obj[0], with_shape, with_min_max)},...)"
        stats = _numbers_stats(obj) if with_min_max else None
        return text if stats is None else f"{text}[{stats}]"
    return f"({','.join(_string_type(o, with_shape, with_min_max) for o in obj)})"


def _fmt_list(obj: list, with_shape: bool, with_min_max: bool) -> str:
    if len(obj) >= _OPTIONS.limit:
        text = f"#{len(obj)}[{_string_type(obj[0], with_shape, with_min_max)},...]"
        stats = _numbers_stats(obj) if with_min_max else None
        return text if stats is None else f"{text}[{stats}]"
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
    from ..torch_export_patches import _legacy_caches

    if _legacy_caches.is_legacy_cache(obj):
        # the cache classes of transformers 4.x models (MambaCache...): their tensors, named
        # as their flattening names them
        items = [
            f"{n}:{_string_type(t, with_shape, with_min_max)}"
            for n, t in _legacy_caches.named_tensors(obj)
        ]
        return f"{name}({', '.join(items)})"
    layers = getattr(obj, "layers", None)
    if layers is None:
        # another cache which is not made of layers: only the class name.
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


def _fmt_ort_value(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    """An onnxruntime ``OrtValue``: ``OV<onnx element type>r<rank>`` or ``s<shape>``."""
    if not obj.has_value():
        return "OV(<novalue>)"
    if not obj.is_tensor():
        return "OV(NOTENSOR)"
    dev = ("C" if obj.device_name().lower() == "cpu" else "G") if _OPTIONS.with_device else ""
    if with_min_max:
        from .ort_session import _ortvalue_to_numpy

        return f"{dev}OV({_string_type(_ortvalue_to_numpy(obj), with_shape, with_min_max)})"
    shape = obj.shape()
    if with_shape:
        return f"{dev}OV{obj.element_type()}s{'x'.join(map(str, shape))}"
    return f"{dev}OV{obj.element_type()}r{len(shape)}"


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
        elif cls.__name__ == "OrtValue" and hasattr(obj, "element_type"):
            fmt = _fmt_ort_value  # onnxruntime is not imported to recognize it
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
    if _OPTIONS.verbose:
        print(f"[string_type] {fmt.__name__}:{cls.__name__}")
    return fmt(obj, with_shape, with_min_max)


def string_type(
    obj: Any,
    with_shape: bool = False,
    with_min_max: bool = False,
    with_device: bool = False,
    ignore: bool = False,
    limit: int = 20,
    verbose: int = 0,
) -> str:
    """
    Returns a compact description of ``obj``, made to be printed: the structure of nested
    containers and, for every tensor, its element type and its rank or its shape.

    :param obj: anything
    :param with_shape: shows shapes instead of ranks
    :param with_min_max: shows min, max and mean of every tensor and the value of scalars
    :param with_device: prefixes every tensor with ``C`` (cpu) or ``G`` (an accelerator):
        ``CT1s2``
    :param ignore: accepted for onnx-diagnostic's signature; unknown types are always
        described by their class name here, ``string_type`` never raises
    :param limit: a list or a tuple of ``limit`` elements or more is shortened to its
        length and its first element, ``#100[int,...]``, ``#30(T1r2,...)``, followed by
        ``[min,max:mean]`` with ``with_min_max`` when all elements are python numbers
    :param verbose: prints the formatter chosen for every object (``[string_type]
        _fmt_list:list``)
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
    * onnxruntime ``OrtValue``: ``OV1r2`` (``OV1s2x3`` with shapes, ``OV(T1s2x3[...])``
      with ``with_min_max``, through numpy), ``OV(<novalue>)``, ``OV(NOTENSOR)``
    * anything else (``torch.nn.Module`` included): its class name

    >>> import torch
    >>> string_type((torch.zeros((2, 30), dtype=torch.int64),), with_shape=True)
    '(T7s2x30,)'
    >>> string_type([torch.arange(8), 0.5, None], with_shape=True, with_min_max=True)
    '#3[T7s8[0,7:A3.5],float=0.5,None]'
    >>> string_type({0: torch.export.Dim("batch"), 1: torch.export.Dim.DYNAMIC})
    '{0:Dim(batch),1:DYNAMIC}'
    >>> string_type(list(range(100)), with_min_max=True)
    '#100[int=0,...][0,99:49.5]'
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 2:
        raise ValueError(f"string_type: limit must be an integer >= 2, got {limit!r}")
    global _OPTIONS
    previous = _OPTIONS
    _OPTIONS = _Options(limit, verbose, with_device)
    try:
        return _string_type(obj, with_shape, with_min_max)
    except Exception as e:  # never fails: a description must not break the caller
        logger.debug("string_type failed on %s: %s", type(obj).__name__, e)
        return type(obj).__name__
    finally:
        _OPTIONS = previous


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
    from ..torch_export_patches import _legacy_caches

    if _legacy_caches.is_legacy_cache(cache):
        # a cache class of a transformers 4.x model (MambaCache...): its flattening names
        return [(f"{path}.{name}", t) for name, t in _legacy_caches.named_tensors(cache)]
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
    from ..torch_export_patches.serialization import _static_lengths

    # a StaticCache of transformers >= 5 also flattens the filled length of every layer
    lengths = _static_lengths(cache) if hasattr(cache, "layers") else None
    for i, t in enumerate(lengths or []):
        out.append((f"{path}.cumulative_length_{i}", t))
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


def flatten_object(obj: Any, drop_keys: bool = False) -> list[Any]:
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
    :param drop_keys: accepted for onnx-diagnostic's signature; the keys of dictionaries
        are never part of the result here (onnx-diagnostic inserted them when False):
        the result is the list of the ONNX outputs, both values give the same list
    :return: list of tensors (or numpy arrays)
    :raises TypeError: for an object which holds no tensor (a string...),
        the message names its place, e.g. ``obj[1]['text']``

    >>> import torch
    >>> from onnx_diagnostic.helpers.helper import flatten_object, string_type
    >>> flat = flatten_object((torch.zeros(2), dict(a=torch.ones(3), b=None)))
    >>> string_type(flat, with_shape=True)
    '#2[T1s2,T1s3]'
    """
    if not isinstance(drop_keys, bool):
        raise TypeError(f"flatten_object: drop_keys must be a bool, got {drop_keys!r}")
    out: list[tuple[str, Any]] = []
    _flatten_named(obj, "obj", out)
    return [t for _, t in out]


# max_diff lives in its own module (helper.py would pass 800 lines), re-exported here
from ._max_diff import _to_torch, max_diff, string_diff  # noqa: E402, F401


def check_output_file(filename: Any, argname: str, caller: str = "", nothing: str = "") -> None:
    """
    Checks that ``filename`` can be written before a long computation starts: a file name
    (not a folder) whose folder exists and is writable. The errors name the argument (and
    ``caller``) and say that ``nothing`` happened.

    :param filename: the file name to check
    :param argname: the name of the argument holding it, used in the messages
    :param caller: prefix of the messages (``"to_onnx"``)
    :param nothing: what was not done, said when the folder is missing (``"nothing ran"``)
    :raises TypeError: not a str or PathLike
    :raises IsADirectoryError: a folder
    :raises FileNotFoundError: its folder does not exist
    :raises PermissionError: its folder is not writable

    >>> check_output_file("model.onnx", "filename")
    >>> check_output_file("missing/model.onnx", "filename", "to_onnx", "nothing was exported")
    Traceback (most recent call last):
        ...
    FileNotFoundError: to_onnx: filename='missing/model.onnx': folder '...missing' does not \
exist, create it first (nothing was exported)
    """
    prefix = f"{caller}: " if caller else ""
    if not isinstance(filename, (str, os.PathLike)):
        raise TypeError(f"{prefix}{argname} must be a file name, not {type(filename).__name__}")
    if os.path.isdir(filename):
        raise IsADirectoryError(f"{prefix}{argname}={str(filename)!r} is a folder, not a file name")
    folder = os.path.dirname(os.path.abspath(filename))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{prefix}{argname}={str(filename)!r}: folder {folder!r} does not exist, create it "
            f"first{f' ({nothing})' if nothing else ''}"
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"{prefix}{argname}={str(filename)!r}: folder {folder!r} is not writable"
        )
