"""
The bytes of tensors and numpy arrays in ONNX: :func:`tensor_to_proto` and
:func:`proto_to_tensor` (bit-exact, bfloat16 and float8 included), and the numpy arrays of
the dumps (ml_dtypes types through the torch dtype with the same bits, or through
:mod:`onnx.numpy_helper` for int4, uint4, float4 which torch does not have). Used by
:mod:`onnx_diagnostic.helpers.mini_onnx_builder`, which re-exports the public names.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import torch

__all__ = ["proto_to_tensor", "tensor_to_proto"]

_TORCH_TO_ONNX: dict[torch.dtype, int] = {
    torch.float32: onnx.TensorProto.FLOAT,
    torch.uint8: onnx.TensorProto.UINT8,
    torch.int8: onnx.TensorProto.INT8,
    torch.uint16: onnx.TensorProto.UINT16,
    torch.int16: onnx.TensorProto.INT16,
    torch.int32: onnx.TensorProto.INT32,
    torch.int64: onnx.TensorProto.INT64,
    torch.bool: onnx.TensorProto.BOOL,
    torch.float16: onnx.TensorProto.FLOAT16,
    torch.float64: onnx.TensorProto.DOUBLE,
    torch.uint32: onnx.TensorProto.UINT32,
    torch.uint64: onnx.TensorProto.UINT64,
    torch.complex64: onnx.TensorProto.COMPLEX64,
    torch.complex128: onnx.TensorProto.COMPLEX128,
    torch.bfloat16: onnx.TensorProto.BFLOAT16,
}
for _name, _onnx_name in (
    ("float8_e4m3fn", "FLOAT8E4M3FN"),
    ("float8_e4m3fnuz", "FLOAT8E4M3FNUZ"),
    ("float8_e5m2", "FLOAT8E5M2"),
    ("float8_e5m2fnuz", "FLOAT8E5M2FNUZ"),
):
    if hasattr(torch, _name):
        _TORCH_TO_ONNX[getattr(torch, _name)] = getattr(onnx.TensorProto, _onnx_name)
_ONNX_TO_TORCH = {v: k for k, v in _TORCH_TO_ONNX.items()}
# Integer type of the same size, used to move bytes in and out of numpy.
_UINT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


# tensor <-> TensorProto: the only place where tensors become bytes and bytes tensors.


def tensor_to_proto(
    tensor: torch.Tensor,
    name: str,
    switch_low_high: bool | None = None,
    out: onnx.TensorProto | None = None,
) -> onnx.TensorProto:
    """
    Converts a tensor into a :class:`onnx.TensorProto` holding its bytes (``raw_data``).
    It works for every dtype ONNX and torch share, bfloat16 and float8 included,
    without any conversion.

    :param tensor: the tensor, on any device
    :param name: name of the proto
    :param switch_low_high: ONNX stores little-endian bytes; None swaps the bytes only
        on a big-endian machine, True always swaps them, False never does
    :param out: an empty TensorProto to fill (one already inside a model avoids copying
        the data again when it is added to the model)
    :return: the TensorProto (``out`` if given)

    >>> import torch
    >>> p = tensor_to_proto(torch.tensor([1.5], dtype=torch.bfloat16), "t")
    >>> p.data_type, p.raw_data
    (16, b'\\xc0?')
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, not {type(tensor).__name__}")
    if tensor.dtype not in _TORCH_TO_ONNX:
        raise TypeError(f"dtype {tensor.dtype} has no ONNX equivalent")
    if tensor.layout != torch.strided:
        raise TypeError(f"only dense tensors can be stored, not layout {tensor.layout}")
    if tensor.device.type == "meta":
        raise TypeError("a tensor on device 'meta' holds no data to store")
    t = tensor.detach().cpu().contiguous()
    proto = onnx.TensorProto() if out is None else out
    proto.name = name
    proto.data_type = _TORCH_TO_ONNX[t.dtype]
    proto.dims.extend(t.shape)
    if t.numel() == 0:
        proto.raw_data = b""
        return proto
    itemsize = t.element_size()
    if t.is_complex():
        # each component of a complex number is swapped separately
        itemsize //= 2
    flat = t.reshape(-1).view(torch.uint8).numpy()
    if switch_low_high is None:
        switch_low_high = sys.byteorder == "big"
    if switch_low_high and itemsize > 1:
        flat = flat.view(f"u{itemsize}").byteswap()
    proto.raw_data = flat.tobytes()
    return proto


def proto_to_tensor(proto: onnx.TensorProto, device: str | torch.device = "cpu") -> torch.Tensor:
    """
    Converts a :class:`onnx.TensorProto` into a tensor, bit-exact (bfloat16 included).
    The bytes are read directly, little-endian as ONNX specifies.

    :param proto: the TensorProto (with ``raw_data`` or typed fields, external data must
        have been loaded, :func:`onnx.load` does it)
    :param device: device of the returned tensor
    :return: the tensor

    >>> import torch
    >>> t = torch.tensor([[1, 2]], dtype=torch.int8)
    >>> proto_to_tensor(tensor_to_proto(t, "t")).tolist()
    [[1, 2]]
    """
    if proto.data_type not in _ONNX_TO_TORCH:
        raise TypeError(
            f"tensor {proto.name!r} has ONNX element type {proto.data_type} "
            f"({onnx.TensorProto.DataType.Name(proto.data_type)}) which torch does not support"
        )
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        raise ValueError(
            f"tensor {proto.name!r} is stored outside the model and was not loaded "
            "(use onnx.load(filename) or give the file name)"
        )
    dtype = _ONNX_TO_TORCH[proto.data_type]
    shape = tuple(proto.dims)
    if proto.HasField("raw_data") or int(np.prod(shape, dtype=np.int64)) == 0:
        raw = proto.raw_data
        if len(raw) == 0:
            return torch.empty(shape, dtype=dtype, device=device)
        buffer = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if sys.byteorder == "big" and itemsize > 1:
            comp = itemsize // 2 if dtype.is_complex else itemsize
            swapped = buffer.numpy().view(f"u{comp}").byteswap().view(np.uint8)
            buffer = torch.from_numpy(swapped.copy())
        t = buffer.view(dtype).reshape(shape)
    else:
        # typed fields (float_data, int32_data...), written by other tools
        t = _numpy_to_torch(onnx.numpy_helper.to_array(proto), dtype)
    return t.to(device) if str(device) != "cpu" else t


def _numpy_to_torch(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Converts an array into a tensor of ``dtype`` through its bytes when numpy
    has no such type (ml_dtypes' bfloat16, float8)."""
    array = np.asarray(array, order="C")
    try:
        t = torch.from_numpy(array.copy())
    except TypeError:
        t = None
    if t is not None and t.dtype == dtype:
        return t
    size = torch.empty((), dtype=dtype).element_size()
    uint = array.view(f"u{size}").copy()
    return torch.from_numpy(uint).view(_UINT_OF_SIZE[size]).view(dtype)


# numpy arrays: stored through torch when torch has their dtype (bfloat16 and float8 of
# ml_dtypes included, bit-exact), through onnx.numpy_helper otherwise (int4, uint4,
# float4_e2m1fn... which ONNX has and torch does not).

#: numpy dtype kinds that are not numbers: strings, bytes, dates, durations, objects, records.
_NOT_NUMERIC_KINDS = {
    "U": "str",
    "S": "bytes",
    "M": "datetime64",
    "m": "timedelta64",
    "O": "object",
    "V": "void/structured",
}


def _ml_dtypes_of_torch(dtype: torch.dtype) -> np.dtype | None:
    """The numpy dtype (from ml_dtypes) holding the same bits as ``dtype``, None if none."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - onnx depends on ml_dtypes
        return None
    name = str(dtype).replace("torch.", "")
    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else None


def _array_to_leaf(array: np.ndarray, where: str) -> torch.Tensor | np.ndarray:
    """The value stored for a numpy array: a tensor when torch has the dtype, the array
    itself when only ONNX has it (:func:`onnx.numpy_helper.from_array` stores it)."""
    kind = array.dtype.kind
    if kind in _NOT_NUMERIC_KINDS and kind != "V":
        raise TypeError(
            f"{where}: numpy arrays of dtype {array.dtype} ({_NOT_NUMERIC_KINDS[kind]}) cannot "
            "be stored, only numbers and booleans (ml_dtypes types included) can"
        )
    array = np.asarray(array, order="C")  # ascontiguousarray would make 0-d arrays 1-d
    try:
        return torch.from_numpy(array.copy())
    except TypeError:
        # ml_dtypes types (bfloat16 is a numpy 'V' dtype, as structured arrays are)
        pass
    try:
        itype = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    except (KeyError, ValueError, TypeError) as e:
        raise TypeError(
            f"{where}: numpy arrays of dtype {array.dtype} cannot be stored, only numbers and "
            "booleans (ml_dtypes types included) can"
        ) from e
    if itype in _ONNX_TO_TORCH:
        # bfloat16, float8: the same bits in the torch dtype
        return _numpy_to_torch(array, _ONNX_TO_TORCH[itype])
    return array


def _leaf_to_array(value: torch.Tensor | np.ndarray) -> np.ndarray:
    """The numpy array of an ``array`` leaf (ml_dtypes type for bfloat16, float8)."""
    if isinstance(value, np.ndarray):
        return value
    t = value.detach().cpu()
    # None for the dtypes numpy has itself (ml_dtypes defines none of them)
    np_dtype = _ml_dtypes_of_torch(t.dtype)
    if np_dtype is None:
        return t.numpy()
    size = t.element_size()
    return t.contiguous().view(_UINT_OF_SIZE[size]).numpy().view(np_dtype)
