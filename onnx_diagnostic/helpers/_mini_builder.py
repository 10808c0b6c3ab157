"""
:class:`MiniOnnxBuilder` and :func:`proto_from_array`, the small graph builder of
onnx-diagnostic, re-exported by :mod:`onnx_diagnostic.helpers.mini_onnx_builder` where
they are documented. Tensors become protos through
:func:`tensor_to_proto <onnx_diagnostic.helpers.mini_onnx_builder.tensor_to_proto>`
(torch, bit-exact) and :func:`onnx.numpy_helper.from_array` (numpy, ml_dtypes included).

>>> import numpy as np, torch
>>> from onnx_diagnostic.helpers.mini_onnx_builder import MiniOnnxBuilder
>>> builder = MiniOnnxBuilder()
>>> builder.append_output_initializer("x", torch.arange(3))
>>> builder.append_output_dict("d", dict(a=np.ones(2, dtype=np.float32)))
>>> [o.name for o in builder.to_onnx().graph.output]
['x', 'd___keys', 'd___values']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx.helper as oh
import torch

__all__ = ["MiniOnnxBuilder", "proto_from_array"]


def proto_from_array(
    arr: torch.Tensor | np.ndarray, name: str | None = None, verbose: int = 0
) -> onnx.TensorProto:
    """
    Converts a torch tensor or a numpy array into a :class:`onnx.TensorProto`, bit-exact
    (bfloat16 and float8 included, torch tensors never go through numpy).

    :param arr: the tensor (any device) or the array (ml_dtypes types and strings
        included)
    :param name: name of the proto (empty if None)
    :param verbose: prints the type and shape if > 1
    :return: the TensorProto
    :raises TypeError: for anything else, a sparse tensor or a dtype ONNX does not have

    >>> import torch
    >>> p = proto_from_array(torch.tensor([1.5], dtype=torch.bfloat16), name="w")
    >>> p.name, p.data_type, list(p.dims)
    ('w', 16, [1])
    """
    from ._tensor_proto import tensor_to_proto

    if name is not None and not isinstance(name, str):
        raise TypeError(f"proto_from_array: name must be a string or None, not {name!r}")
    if isinstance(arr, torch.Tensor):
        proto = tensor_to_proto(arr, name or "")
    elif isinstance(arr, (np.ndarray, np.generic)):
        proto = onnx.numpy_helper.from_array(np.asarray(arr), name=name or "")
    else:
        raise TypeError(
            f"proto_from_array: arr must be a torch.Tensor or a numpy array, "
            f"not {type(arr).__name__}"
        )
    if verbose > 1:
        print(f"[proto_from_array] {name!r}: {proto.data_type}{list(proto.dims)}")
    return proto


def _elem_type(value: torch.Tensor | np.ndarray) -> int:
    if isinstance(value, torch.Tensor):
        from ._tensor_proto import _TORCH_TO_ONNX

        if value.dtype not in _TORCH_TO_ONNX:
            raise TypeError(f"dtype {value.dtype} has no ONNX equivalent")
        return _TORCH_TO_ONNX[value.dtype]
    if value.dtype.kind in "UO":
        return onnx.TensorProto.STRING
    return oh.np_dtype_to_tensor_dtype(value.dtype)


class MiniOnnxBuilder:
    """
    Builds an ONNX model without input whose outputs are constants: every tensor added
    becomes an initializer followed by a node returning it (``Identity``,
    ``SequenceConstruct``). Running the model gives the tensors back; it is how
    onnx-diagnostic stored tensors in a file. The main entry points of this package
    for that are :func:`create_onnx_model_from_input_tensors
    <onnx_diagnostic.helpers.mini_onnx_builder.create_onnx_model_from_input_tensors>`
    and :func:`create_input_tensors_from_onnx_model
    <onnx_diagnostic.helpers.mini_onnx_builder.create_input_tensors_from_onnx_model>`,
    which keep the nested structure; this class is the lower level.

    :param target_opset: opset of the main domain
    :param ir_version: IR version of the model
    :param sep: separator between the name of a dictionary and ``keys`` / ``values``

    >>> import torch
    >>> import onnxruntime
    >>> builder = MiniOnnxBuilder()
    >>> builder.append_output_initializer("w", torch.ones((2, 3)))
    >>> builder.append_output_sequence("s", [torch.zeros(1), torch.zeros(2)])
    >>> sess = onnxruntime.InferenceSession(
    ...     builder.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    >>> w, s = sess.run(None, {})
    >>> w.shape, [t.shape for t in s]
    ((2, 3), [(1,), (2,)])
    """

    def __init__(self, target_opset: int = 18, ir_version: int = 10, sep: str = "___"):
        if not isinstance(sep, str) or not sep:
            raise ValueError(f"MiniOnnxBuilder: sep must be a non-empty string, got {sep!r}")
        self.initializers_dict: dict[str, torch.Tensor | np.ndarray] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.opsets = {"": target_opset}
        self.ir_version = ir_version
        self.sep = sep

    def _check_name(self, name: Any, what: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{what}: name must be a non-empty string, got {name!r}")
        if any(o.name == name for o in self.outputs):
            raise ValueError(f"{what}: output {name!r} already exists")

    @staticmethod
    def _check_tensor(tensor: Any, what: str) -> torch.Tensor | np.ndarray:
        if isinstance(tensor, np.generic):
            return np.asarray(tensor)
        if not isinstance(tensor, (torch.Tensor, np.ndarray)):
            raise TypeError(f"{what} must be a torch.Tensor or a numpy array, not {type(tensor)}")
        return tensor

    def append_output_initializer(
        self, name: str, tensor: torch.Tensor | np.ndarray, randomize: bool = False
    ) -> None:
        """
        Adds an output ``name`` returning ``tensor`` (stored as the initializer
        ``t_<name>``).

        :param name: output name
        :param tensor: torch tensor or numpy array
        :param randomize: a float tensor is not stored: the model draws random values of
            the same shape, mean and standard deviation (``RandomNormal``, seed 0) to save
            space; other tensors are stored
        """
        self._check_name(name, "append_output_initializer")
        tensor = self._check_tensor(tensor, f"append_output_initializer({name!r}): tensor")
        elem = _elem_type(tensor)
        shape = [int(d) for d in tensor.shape]
        if randomize and elem in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.BFLOAT16,
        ):
            t = torch.as_tensor(np.asarray(tensor)) if isinstance(tensor, np.ndarray) else tensor
            t = t.detach().to(torch.float64)
            mean = float(t.mean()) if t.numel() else 0.0
            std = float(t.std()) if t.numel() > 1 else 0.0
            self.nodes.append(
                oh.make_node(
                    "RandomNormal", [], [name], dtype=elem, shape=shape, mean=mean, scale=std,
                    seed=0.0,
                )
            )  # fmt: skip
        else:
            init_name = f"t_{name}"
            self.initializers_dict[init_name] = tensor
            self.nodes.append(oh.make_node("Identity", [init_name], [name]))
        self.outputs.append(oh.make_tensor_value_info(name, elem, shape))

    def append_output_sequence(self, name: str, tensors: list[torch.Tensor | np.ndarray]) -> None:
        """
        Adds an output ``name`` returning a sequence of tensors (stored as the initializers
        ``seq_<name>_<i>``); an empty list gives an empty sequence of float tensors.

        :param name: output name
        :param tensors: tensors of the same element type (no nested sequence)
        """
        self._check_name(name, "append_output_sequence")
        if not isinstance(tensors, (list, tuple)):
            raise TypeError(
                f"append_output_sequence({name!r}): tensors must be a list, not {type(tensors)}"
            )
        if not tensors:
            elem = onnx.TensorProto.FLOAT
            self.nodes.append(oh.make_node("SequenceEmpty", [], [name], dtype=elem))
        else:
            checked = [
                self._check_tensor(t, f"append_output_sequence({name!r}): tensors[{i}]")
                for i, t in enumerate(tensors)
            ]
            elems = {_elem_type(t) for t in checked}
            if len(elems) > 1:
                raise TypeError(
                    f"append_output_sequence({name!r}): a sequence holds one element type, "
                    f"got {sorted(elems)}"
                )
            elem = elems.pop()
            names = []
            for i, t in enumerate(checked):
                init_name = f"seq_{name}_{i}"
                self.initializers_dict[init_name] = t
                names.append(init_name)
            self.nodes.append(oh.make_node("SequenceConstruct", names, [name]))
        seq_type = oh.make_sequence_type_proto(oh.make_tensor_type_proto(elem, shape=None))
        self.outputs.append(oh.make_value_info(name, seq_type))

    def append_output_dict(self, name: str, tensors: dict[str, torch.Tensor | np.ndarray]) -> None:
        """
        Adds two outputs: ``<name><sep>keys`` (a string tensor of the keys) and
        ``<name><sep>values`` (the sequence of the values, in the same order).

        :param name: prefix of the two outputs
        :param tensors: dictionary with string keys
        """
        if not isinstance(tensors, dict):
            raise TypeError(f"append_output_dict({name!r}): tensors must be a dict")
        bad = [k for k in tensors if not isinstance(k, str)]
        if bad:
            raise TypeError(f"append_output_dict({name!r}): keys must be strings, got {bad!r}")
        self.append_output_initializer(
            f"{name}{self.sep}keys", np.array(list(tensors), dtype=np.str_)
        )
        self.append_output_sequence(f"{name}{self.sep}values", list(tensors.values()))

    def _build_initializers(self) -> list[onnx.TensorProto]:
        res = []
        for k, v in self.initializers_dict.items():
            if isinstance(v, np.ndarray) and v.dtype.kind in "UO":
                res.append(onnx.numpy_helper.from_array(v.astype(object), name=k))
            else:
                res.append(proto_from_array(v, name=k))
        return res

    def to_onnx(self) -> onnx.ModelProto:
        """
        Returns the model (it can be called several times, each call builds a new one).

        :return: a :class:`onnx.ModelProto` without input
        """
        graph = oh.make_graph(
            self.nodes,
            "mini_model",
            self.inputs,
            self.outputs,
            initializer=self._build_initializers(),
        )
        return oh.make_model(
            graph,
            opset_imports=[oh.make_opsetid(d, v) for d, v in self.opsets.items()],
            ir_version=self.ir_version,
        )
