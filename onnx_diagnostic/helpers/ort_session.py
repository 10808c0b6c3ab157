"""
:epkg:`onnxruntime` sessions fed with numpy arrays (:class:`InferenceSessionForNumpy`) or
torch tensors (:class:`InferenceSessionForTorch`), returning the same kind, whatever the
element type: ``bfloat16`` and ``float8`` go through :class:`onnxruntime.OrtValue`
(DLPack for torch, ``ml_dtypes`` arrays for numpy) instead of failing in
``InferenceSession.run``.

>>> import torch
>>> from onnx_diagnostic.helpers.mini_onnx_builder import create_onnx_model_from_input_tensors
>>> from onnx_diagnostic.helpers.ort_session import InferenceSessionForTorch
>>> sess = InferenceSessionForTorch(create_onnx_model_from_input_tensors(torch.ones(2)))
>>> sess.run(None, {})
(tensor([1., 1.]),)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime
import torch

__all__ = [
    "InferenceSessionForNumpy",
    "InferenceSessionForTorch",
    "numpy_to_torch",
    "onnx_type_of_numpy",
    "torch_to_numpy",
]

# torch dtypes numpy has no type for: (ml_dtypes type, integer type of the same size)
_BIT_VIEWS: dict[torch.dtype, tuple[Any, torch.dtype]] = {
    torch.bfloat16: (ml_dtypes.bfloat16, torch.int16),
    torch.float8_e4m3fn: (ml_dtypes.float8_e4m3fn, torch.uint8),
    torch.float8_e4m3fnuz: (ml_dtypes.float8_e4m3fnuz, torch.uint8),
    torch.float8_e5m2: (ml_dtypes.float8_e5m2, torch.uint8),
    torch.float8_e5m2fnuz: (ml_dtypes.float8_e5m2fnuz, torch.uint8),
}
_NUMPY_TO_TORCH = {np.dtype(ml): (pt, bits) for pt, (ml, bits) in _BIT_VIEWS.items()}
_INT_OF_SIZE = {1: np.uint8, 2: np.int16}


def torch_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """
    Converts a torch tensor into a numpy array (copied to CPU if needed, detached);
    ``bfloat16`` and ``float8`` tensors become arrays of the matching ``ml_dtypes`` type
    with the same bits.

    >>> import torch
    >>> torch_to_numpy(torch.tensor([1.5], dtype=torch.bfloat16))
    array([1.5], dtype=bfloat16)
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"torch_to_numpy: tensor must be a torch.Tensor, not {type(tensor)}")
    t = tensor.detach().cpu().contiguous()
    if t.dtype in _BIT_VIEWS:
        ml_type, bits = _BIT_VIEWS[t.dtype]
        return t.view(bits).numpy().view(ml_type)
    return t.numpy()


def numpy_to_torch(array: np.ndarray) -> torch.Tensor:
    """
    Converts a numpy array into a torch tensor (sharing memory when the array is
    contiguous); arrays of ``ml_dtypes`` ``bfloat16`` and ``float8`` types become tensors
    of the matching torch type with the same bits.

    >>> import ml_dtypes, numpy as np
    >>> numpy_to_torch(np.array([1.5], dtype=ml_dtypes.bfloat16))
    tensor([1.5000], dtype=torch.bfloat16)
    """
    if not isinstance(array, (np.ndarray, np.generic)):
        raise TypeError(f"numpy_to_torch: array must be a numpy array, not {type(array)}")
    a = np.asarray(array, order="C")  # ascontiguousarray makes a 0-d array 1-d
    if a.dtype in _NUMPY_TO_TORCH:
        pt, _bits = _NUMPY_TO_TORCH[a.dtype]
        return torch.from_numpy(a.view(_INT_OF_SIZE[a.dtype.itemsize])).view(pt)
    try:
        return torch.from_numpy(a)
    except TypeError as e:
        raise TypeError(f"numpy_to_torch: torch has no type for numpy dtype {a.dtype}") from e


def onnx_type_of_numpy(dtype: Any) -> int:
    """
    Returns the ONNX element type (``onnx.TensorProto.FLOAT``...) of a numpy dtype,
    ``ml_dtypes`` types included.

    >>> import ml_dtypes
    >>> onnx_type_of_numpy(ml_dtypes.bfloat16) == onnx.TensorProto.BFLOAT16
    True
    """
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (KeyError, TypeError, ValueError) as e:
        raise TypeError(f"onnx_type_of_numpy: no ONNX type for numpy dtype {dtype!r}") from e


def _normalize_providers(providers: str | Sequence[Any] | None) -> list[Any]:
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        key = providers.lower()
        if key == "cpu":
            return ["CPUExecutionProvider"]
        if key == "cuda":
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        raise ValueError(f"providers={providers!r}: expected 'cpu', 'cuda' or a list")
    return list(providers)


class _OrtSession:
    """Creates the session and holds what both wrappers share."""

    def __init__(
        self,
        sess: onnx.ModelProto | str | os.PathLike | bytes | onnxruntime.InferenceSession,
        session_options: onnxruntime.SessionOptions | None = None,
        providers: str | Sequence[Any] | None = None,
        nvtx: bool = False,
        enable_profiling: bool = False,
        graph_optimization_level: onnxruntime.GraphOptimizationLevel | bool | None = None,
        log_severity_level: int | None = None,
        log_verbosity_level: int | None = None,
        optimized_model_filepath: str | None = None,
        disable_aot_function_inlining: bool | None = None,
        use_training_api: bool | None = None,
    ):
        options = dict(
            providers=providers,
            enable_profiling=enable_profiling or None,
            graph_optimization_level=graph_optimization_level,
            log_severity_level=log_severity_level,
            log_verbosity_level=log_verbosity_level,
            optimized_model_filepath=optimized_model_filepath,
            disable_aot_function_inlining=disable_aot_function_inlining,
        )
        given = sorted(k for k, v in options.items() if v is not None)
        if isinstance(sess, onnxruntime.InferenceSession):
            if given or session_options is not None:
                raise ValueError(
                    f"sess is already an InferenceSession, {given or ['session_options']} "
                    "cannot change it"
                )
        else:
            if session_options is not None and given:
                raise ValueError(
                    f"session_options is given, {given} cannot be given too: "
                    "set them on session_options"
                )
            sess = onnxruntime.InferenceSession(
                _model_source(sess),
                session_options or self._make_options(**options),
                providers=_normalize_providers(providers),
            )
        self.sess = sess
        self.input_names = [i.name for i in sess.get_inputs()]
        self.output_names = [o.name for o in sess.get_outputs()]
        self.input_types = [i.type for i in sess.get_inputs()]
        self.output_types = [o.type for o in sess.get_outputs()]
        self.input_shapes = [i.shape for i in sess.get_inputs()]
        self.output_shapes = [o.shape for o in sess.get_outputs()]
        self.nvtx = nvtx
        # kept for compatibility: the OrtValue path needs no onnxruntime-training build
        self.use_training_api = bool(use_training_api)
        self.run_options = onnxruntime.RunOptions()
        if log_severity_level is not None:
            self.run_options.log_severity_level = log_severity_level
        if log_verbosity_level is not None:
            self.run_options.log_verbosity_level = log_verbosity_level
        self.device = _session_device(sess)

    @staticmethod
    def _make_options(
        providers: Any = None,
        enable_profiling: bool | None = None,
        graph_optimization_level: Any = None,
        log_severity_level: int | None = None,
        log_verbosity_level: int | None = None,
        optimized_model_filepath: str | None = None,
        disable_aot_function_inlining: bool | None = None,
    ) -> onnxruntime.SessionOptions:
        opts = onnxruntime.SessionOptions()
        if enable_profiling:
            opts.enable_profiling = True
        if optimized_model_filepath:
            opts.optimized_model_filepath = optimized_model_filepath
        if log_severity_level is not None:
            opts.log_severity_level = log_severity_level
        if log_verbosity_level is not None:
            opts.log_verbosity_level = log_verbosity_level
        if isinstance(graph_optimization_level, bool):
            opts.graph_optimization_level = (
                onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                if graph_optimization_level
                else onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
            )
        elif graph_optimization_level is not None:
            opts.graph_optimization_level = graph_optimization_level
        if disable_aot_function_inlining:
            opts.add_session_config_entry("session.disable_aot_function_inlining", "1")
        return opts

    def _check_feeds(self, feeds: Any) -> dict[str, Any]:
        if not isinstance(feeds, dict):
            raise TypeError(f"feeds must be a dictionary name -> tensor, not {type(feeds)}")
        feeds = {k: v for k, v in feeds.items() if k}
        missing = [n for n in self.input_names if n not in feeds]
        unexpected = [n for n in feeds if n not in self.input_names]
        if missing or unexpected:
            raise ValueError(
                f"feeds: missing inputs {missing}, unexpected inputs {unexpected}, "
                f"the model expects {self.input_names}"
            )
        return feeds

    def _run(self, output_names: Sequence[str] | None, ort_feeds: dict[str, Any]) -> list[Any]:
        names = list(output_names) if output_names else self.output_names
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise ValueError(
                f"output_names: unknown outputs {unknown}, the model has {self.output_names}"
            )
        use_nvtx = self.nvtx and torch.cuda.is_available()
        if use_nvtx:
            torch.cuda.nvtx.range_push("run_with_ort_values")
        try:
            return self.sess.run_with_ort_values(names, ort_feeds, self.run_options)
        finally:
            if use_nvtx:
                torch.cuda.nvtx.range_pop()


def _model_source(sess: Any) -> str | bytes:
    if isinstance(sess, onnx.ModelProto):
        return sess.SerializeToString()
    if isinstance(sess, (str, os.PathLike)):
        path = os.fspath(sess)
        if not os.path.exists(path):
            raise FileNotFoundError(f"sess={path!r}: no such ONNX file")
        return path
    if isinstance(sess, bytes):
        return sess
    raise TypeError(
        "sess must be an onnx.ModelProto, a file name, bytes or an "
        f"onnxruntime.InferenceSession, not {type(sess).__name__}"
    )


def _session_device(sess: onnxruntime.InferenceSession) -> torch.device:
    providers = sess.get_providers()
    if providers and providers[0] == "CUDAExecutionProvider":
        opts = sess.get_provider_options().get("CUDAExecutionProvider", {})
        return torch.device("cuda", int(opts.get("device_id", 0)))
    return torch.device("cpu")


def _ortvalue_from_torch(tensor: torch.Tensor, device: torch.device) -> Any:
    t = tensor.detach()
    if t.device != device:
        t = t.to(device)
    t = t.contiguous()
    try:
        return onnxruntime.OrtValue.from_dlpack(t)
    except TypeError:  # onnxruntime < 1.23 takes a capsule and a flag
        return onnxruntime.OrtValue.from_dlpack(t.__dlpack__(), t.dtype == torch.bool)


def _ortvalue_from_numpy(array: np.ndarray) -> Any:
    a = np.asarray(array, order="C")  # ascontiguousarray makes a 0-d array 1-d
    if a.dtype in _NUMPY_TO_TORCH:
        return onnxruntime.OrtValue.ortvalue_from_numpy_with_onnx_type(
            a, onnx_type_of_numpy(a.dtype)
        )
    return onnxruntime.OrtValue.ortvalue_from_numpy(a)


class InferenceSessionForNumpy(_OrtSession):
    """
    An :class:`onnxruntime.InferenceSession` whose :meth:`run` takes and returns numpy
    arrays of any element type, ``ml_dtypes`` ``bfloat16`` and ``float8`` included.

    :param sess: an ``onnx.ModelProto``, a file name, the serialized model or an
        :class:`onnxruntime.InferenceSession` (no other option can be given then)
    :param session_options: options, exclusive with the following options
    :param providers: None or ``"cpu"`` (CPU), ``"cuda"`` (CUDA then CPU) or a list
    :param nvtx: surrounds every run with an NVTX range (on CUDA only)
    :param enable_profiling: see :class:`onnxruntime.SessionOptions`
    :param graph_optimization_level: a :class:`onnxruntime.GraphOptimizationLevel` or a
        boolean (True for all optimizations, False for none)
    :param log_severity_level: see :class:`onnxruntime.SessionOptions`
    :param log_verbosity_level: see :class:`onnxruntime.SessionOptions`
    :param optimized_model_filepath: where onnxruntime saves the optimized model
    :param disable_aot_function_inlining: see :class:`onnxruntime.SessionOptions`
    :param use_training_api: accepted for compatibility with onnx-diagnostic, unused:
        the inputs go through :class:`onnxruntime.OrtValue` on any build

    >>> import ml_dtypes, numpy as np, onnx.helper as oh
    >>> TP = oh.TensorProto
    >>> model = oh.make_model(oh.make_graph(
    ...     [oh.make_node("Identity", ["X"], ["Y"])], "g",
    ...     [oh.make_tensor_value_info("X", TP.BFLOAT16, [None])],
    ...     [oh.make_tensor_value_info("Y", TP.BFLOAT16, [None])]),
    ...     opset_imports=[oh.make_opsetid("", 18)], ir_version=9)
    >>> sess = InferenceSessionForNumpy(model)
    >>> sess.run(None, {"X": np.array([1.5, 2], dtype=ml_dtypes.bfloat16)})
    [array([1.5, 2], dtype=bfloat16)]
    """

    def run(
        self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]
    ) -> list[np.ndarray | None]:
        """
        Runs the model: ``feeds`` maps every input name to a numpy array (a torch tensor is
        converted), returns the outputs ``output_names`` (all if None) as numpy arrays,
        None for an optional output without value.
        """
        return list(self.run_dlpack(output_names, feeds))

    def run_dlpack(
        self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]
    ) -> tuple[np.ndarray | None, ...]:
        """Same as :meth:`run`, returns a tuple (the name onnx-diagnostic uses)."""
        feeds = self._check_feeds(feeds)
        ort_feeds = {}
        for name, value in feeds.items():
            if isinstance(value, torch.Tensor):
                value = torch_to_numpy(value)
            elif isinstance(value, (np.generic, int, float, bool)):
                value = np.asarray(value)
            if not isinstance(value, np.ndarray):
                raise TypeError(f"feeds[{name!r}] must be a numpy array, not {type(value)}")
            ort_feeds[name] = _ortvalue_from_numpy(value)
        return tuple(_ortvalue_to_numpy(o) for o in self._run(output_names, ort_feeds))


def _ortvalue_to_numpy(value: Any) -> np.ndarray | None:
    if not value.has_value():
        return None
    kind = value.data_type()  # "tensor(bfloat16)"
    if value.is_tensor() and ("bfloat16" in kind or "float8" in kind):
        return torch_to_numpy(torch.from_dlpack(value))
    return value.numpy()


class InferenceSessionForTorch(_OrtSession):
    """
    An :class:`onnxruntime.InferenceSession` whose :meth:`run` takes and returns torch
    tensors of any element type (``bfloat16`` included): inputs and outputs go through
    :class:`onnxruntime.OrtValue` and DLPack, without copy when the tensors already are on
    the device of the session (CPU, or the CUDA device of ``CUDAExecutionProvider``).
    The parameters are the ones of :class:`InferenceSessionForNumpy`.

    >>> import torch, onnx.helper as oh
    >>> TP = oh.TensorProto
    >>> model = oh.make_model(oh.make_graph(
    ...     [oh.make_node("Identity", ["X"], ["Y"])], "g",
    ...     [oh.make_tensor_value_info("X", TP.BFLOAT16, [None])],
    ...     [oh.make_tensor_value_info("Y", TP.BFLOAT16, [None])]),
    ...     opset_imports=[oh.make_opsetid("", 18)], ir_version=9)
    >>> InferenceSessionForTorch(model).run(None, {"X": torch.ones(2, dtype=torch.bfloat16)})
    (tensor([1., 1.], dtype=torch.bfloat16),)
    """

    def run(
        self, output_names: Sequence[str] | None, feeds: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, ...]:
        """
        Runs the model: ``feeds`` maps every input name to a torch tensor (a numpy array is
        converted), returns the outputs ``output_names`` (all if None) as torch tensors on
        the device of the session, None for an optional output without value.
        """
        feeds = self._check_feeds(feeds)
        ort_feeds, keep = {}, []
        for name, value in feeds.items():
            if isinstance(value, (np.ndarray, np.generic)):
                value = numpy_to_torch(np.asarray(value))
            elif isinstance(value, (int, float, bool)):
                value = torch.tensor(value)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"feeds[{name!r}] must be a torch.Tensor, not {type(value)}")
            keep.append(value)  # DLPack shares the memory: it must live until the run ends
            ort_feeds[name] = _ortvalue_from_torch(value, self.device)
        outputs = self._run(output_names, ort_feeds)
        return tuple(torch.from_dlpack(o) if o.has_value() else None for o in outputs)

    def run_dlpack(
        self, output_names: Sequence[str] | None, feeds: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, ...]:
        """Same as :meth:`run` (the name onnx-diagnostic uses)."""
        return self.run(output_names, feeds)
