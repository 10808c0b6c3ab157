"""
:class:`GraphBuilder`: the small API the ATen translations of :mod:`.aten_ops` use to add
nodes, constants and shape tensors to an :class:`onnx_ir.Graph`.

Conventions:

* a tensor is an :class:`onnx_ir.Value`;
* a symbolic integer (``SymInt``: a dimension, ``s0 + s1``...) is a 0-d ``int64`` value,
  a static one stays a Python ``int``;
* constants are initializers (``value.const_value`` is set), small ones are shared.

>>> import onnx_ir as ir
>>> from onnx_diagnostic.export.custom.builder import GraphBuilder
>>> g = GraphBuilder(opset=23)
>>> x = g.add_input("x", ir.DataType.FLOAT, ["batch", 4])
>>> y = g.op("Add", x, g.const(1.0, ir.DataType.FLOAT))
>>> g.graph.outputs.append(y)
>>> [n.op_type for n in g.graph]
['Add']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from onnx_ir import tensor_adapters

__all__ = ["GraphBuilder", "ir_dtype", "torch_dtype"]

_DOMAIN_VERSIONS = {"com.microsoft": 1}

#: operators whose outputs have the element type of their first input
_SAME_TYPE_AS_FIRST = set(
    "Abs Add Attention BatchNormalization Ceil Clip Concat Conv Cos CumSum Div Erf Exp Expand "
    "Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool Identity "
    "LayerNormalization Log LogSoftmax MatMul Max MaxPool AveragePool Min Mod Mul Neg Pow "
    "RMSNormalization Range Reciprocal ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum "
    "Relu Reshape RotaryEmbedding Sigmoid Sign Sin Slice Softmax Split Sqrt Squeeze Sub Tan "
    "Tanh Atan Tile Transpose Trilu Unsqueeze BitwiseAnd BitwiseOr BitwiseXor BitwiseNot".split()
)
_BOOL_RESULT = set("And Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Not Or Xor".split())
_INT64_RESULT = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero"}


def ir_dtype(dtype: torch.dtype | ir.DataType) -> ir.DataType:
    """
    Converts a torch dtype into an ONNX one.

    >>> import torch
    >>> ir_dtype(torch.float16).name
    'FLOAT16'
    """
    if isinstance(dtype, ir.DataType):
        return dtype
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"ir_dtype: dtype must be a torch.dtype, not {type(dtype).__name__}")
    return tensor_adapters.from_torch_dtype(dtype)


def torch_dtype(dtype: ir.DataType | torch.dtype) -> torch.dtype:
    """
    Converts an ONNX dtype into a torch one.

    >>> import onnx_ir as ir
    >>> torch_dtype(ir.DataType.INT64)
    torch.int64
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    return tensor_adapters.to_torch_dtype(dtype)


def dim_of(d: Any) -> int | str:
    """Returns an int for a static dimension, the sympy expression as a string otherwise."""
    if isinstance(d, int):
        return d
    if isinstance(d, torch.SymInt):
        expr = d.node.expr
        if expr.is_number:
            return int(expr)
        return str(expr)
    return str(d)


class GraphBuilder:
    """
    Builds an :class:`onnx_ir.Graph` node after node.

    :param opset: opset of the default domain
    :param name: graph name
    """

    def __init__(self, opset: int, name: str = "main_graph"):
        if not isinstance(opset, int) or opset < 18:
            raise ValueError(f"GraphBuilder: opset must be an integer >= 18, got {opset!r}")
        self.opset = opset
        self.graph = ir.Graph([], [], nodes=[], opset_imports={"": opset}, name=name)
        self._names: set[str] = set()
        self._consts: dict[tuple, ir.Value] = {}
        self._scalar_as_1d: dict[int, ir.Value] = {}
        self._sizes: dict[tuple[int, int], ir.Value] = {}
        #: id(constant) -> (constant, its transposed copy), see transpose_2d
        self._transposed: dict[int, tuple[ir.Value, ir.Value]] = {}
        #: prefix of the names given to new values (the fx node being translated)
        self.prefix = "n"
        #: metadata_props given to every new node (where the fx node being translated
        #: comes from, see :mod:`.traceability`)
        self.metadata: dict[str, str] = {}
        #: values created since the last call to :meth:`start_node`
        self.created: list[ir.Value] = []

    # names

    def start_node(self, prefix: str, metadata: dict[str, str] | None = None) -> None:
        """Names and metadata of the nodes added next (one fx node is being translated)."""
        self.prefix = prefix
        self.metadata = dict(metadata or {})
        self.created = []

    def unique_name(self, base: str, sep: str = "_") -> str:
        """Returns ``base`` or ``base{sep}N``, never returned before."""
        name = base
        i = 0
        while name in self._names:
            i += 1
            name = f"{base}{sep}{i}"
        self._names.add(name)
        return name

    # inputs, initializers, constants

    def add_input(
        self, name: str, dtype: ir.DataType | torch.dtype, shape: Sequence[Any]
    ) -> ir.Value:
        """Adds a graph input."""
        v = ir.Value(
            name=self.unique_name(name),
            type=ir.TensorType(ir_dtype(dtype)),
            shape=ir.Shape([dim_of(d) for d in shape]),
        )
        self.graph.inputs.append(v)
        return v

    def add_initializer(self, name: str, tensor: torch.Tensor | np.ndarray) -> ir.Value:
        """Adds an initializer holding ``tensor`` (no copy for a contiguous torch tensor)."""
        name = self.unique_name(name)
        if isinstance(tensor, torch.Tensor):
            t = tensor.detach()
            if not t.is_contiguous():
                t = t.contiguous()
            if t.device.type != "cpu":
                t = t.cpu()
            ir_tensor = tensor_adapters.TorchTensor(t, name=name)
        else:
            # np.ascontiguousarray would turn a 0-d array into a 1-D one
            arr = tensor if tensor.flags.c_contiguous else tensor.copy()
            ir_tensor = ir.tensor(arr, name=name)
        v = ir.Value(
            name=name,
            type=ir.TensorType(ir_tensor.dtype),
            shape=ir.Shape(list(ir_tensor.shape)),
            const_value=ir_tensor,
        )
        self.graph.register_initializer(v)
        return v

    def const(self, value: Any, dtype: ir.DataType | torch.dtype) -> ir.Value:
        """
        A constant of type ``dtype``: a Python scalar gives a 0-d tensor, a list a 1-D one.
        Small constants are shared.
        """
        dt = ir_dtype(dtype)
        np_dtype = dt.numpy()
        arr = np.asarray(value).astype(np_dtype)
        key = None
        if arr.size <= 64:
            key = (dt, arr.shape, arr.tobytes())
            if key in self._consts:
                return self._consts[key]
        if dt == ir.DataType.BFLOAT16:
            v = self.add_initializer("c", torch.tensor(np.asarray(value), dtype=torch.bfloat16))
        else:
            v = self.add_initializer("c", arr)
        if key is not None:
            self._consts[key] = v
        return v

    def ints(self, values: Sequence[int]) -> ir.Value:
        """A 1-D int64 constant."""
        return self.const(np.array(list(values), dtype=np.int64).reshape((-1,)), ir.DataType.INT64)

    # nodes

    def op(
        self,
        op_type: str,
        *inputs: ir.Value | None,
        domain: str = "",
        outputs: int = 1,
        **attributes: Any,
    ) -> ir.Value | tuple[ir.Value, ...]:
        """
        Appends a node, returns its output (or a tuple of them if ``outputs > 1``).
        Attributes whose value is None are left out.
        """
        for i, x in enumerate(inputs):
            if x is not None and not isinstance(x, ir.Value):
                raise TypeError(
                    f"GraphBuilder.op({op_type!r}): input {i} must be an onnx_ir.Value or None, "
                    f"got {type(x).__name__}: {x!r}"
                )
        if domain and domain not in self.graph.opset_imports:
            self.graph.opset_imports[domain] = _DOMAIN_VERSIONS.get(domain, 1)
        # trailing missing inputs are left out (onnxruntime 1.31 crashes on
        # LayerNormalization(x, w, "") instead of ignoring the empty name)
        inputs = tuple(inputs)
        while inputs and inputs[-1] is None:
            inputs = inputs[:-1]
        attrs = {k: v for k, v in attributes.items() if v is not None}
        node = ir.node(
            op_type,
            list(inputs),
            attrs,
            domain=domain,
            num_outputs=outputs,
            name=self.unique_name(f"{self.prefix}_{op_type}"),
        )
        if self.metadata:
            node.metadata_props.update(self.metadata)
        self.created.extend(node.outputs)
        dtype = self._infer_dtype(op_type, inputs, attrs) if not domain else None
        for o in node.outputs:
            # 'linear_3', then 'linear_3.1'...: the values created on the way never take
            # the name of another fx node ('linear_3_1' could be one)
            o.name = self.unique_name(self.prefix, sep=".")
            if dtype is not None:
                o.type = ir.TensorType(dtype)
        if op_type == "Shape" and inputs[0].shape is not None:
            # the shape of a shape: passes and fusions read the lengths of shape pieces
            rank = len(inputs[0].shape)
            start, end = attrs.get("start", 0), attrs.get("end", rank)
            start, end = (v + rank if v < 0 else v for v in (start, end))
            node.outputs[0].shape = ir.Shape([max(0, min(end, rank) - max(start, 0))])
        self.graph.append(node)
        return node.outputs[0] if outputs == 1 else tuple(node.outputs)

    # types

    @staticmethod
    def _infer_dtype(
        op_type: str, inputs: Sequence[ir.Value | None], attrs: dict[str, Any]
    ) -> ir.DataType | None:
        """The element type of the outputs when the operator makes it obvious."""
        if op_type in _BOOL_RESULT:
            return ir.DataType.BOOL
        if op_type in _INT64_RESULT:
            return ir.DataType.INT64
        if op_type == "Cast":
            return ir.DataType(attrs["to"])
        if op_type == "ConstantOfShape":
            value = attrs.get("value")
            return value.dtype if value is not None else ir.DataType.FLOAT
        first = inputs[1] if op_type == "Where" else (inputs[0] if inputs else None)
        if op_type in _SAME_TYPE_AS_FIRST or op_type == "Where":
            if first is not None and first.type is not None:
                return first.dtype
        return None

    @staticmethod
    def dtype_of(v: ir.Value) -> ir.DataType | None:
        """The element type of a value if known."""
        return v.dtype if v.type is not None else None

    def cast(self, v: ir.Value, dtype: ir.DataType | torch.dtype) -> ir.Value:
        """Casts ``v`` unless it already has the type."""
        dt = ir_dtype(dtype)
        if self.dtype_of(v) == dt:
            return v
        out = self.op("Cast", v, to=dt)
        out.type = ir.TensorType(dt)
        if v.shape is not None:
            out.shape = v.shape
        return out

    def set_type(self, v: ir.Value, fake: Any) -> None:
        """Sets type and shape of ``v`` from a FakeTensor."""
        if isinstance(fake, torch.Tensor):
            v.type = ir.TensorType(ir_dtype(fake.dtype))
            v.shape = ir.Shape([dim_of(d) for d in fake.shape])
        elif isinstance(fake, (torch.SymInt, int)) and not isinstance(fake, bool):
            v.type = ir.TensorType(ir.DataType.INT64)
            v.shape = ir.Shape([])
        elif isinstance(fake, (torch.SymBool, bool)):
            v.type = ir.TensorType(ir.DataType.BOOL)
            v.shape = ir.Shape([])
        elif isinstance(fake, (torch.SymFloat, float)):
            v.type = ir.TensorType(ir.DataType.FLOAT)
            v.shape = ir.Shape([])

    # symbolic integers and shapes

    def scalar(self, x: int | float | bool | ir.Value, dtype: ir.DataType = ir.DataType.INT64):
        """A 0-d value for ``x`` (a Python number becomes a constant)."""
        if isinstance(x, ir.Value):
            return x
        return self.const(x, dtype)

    def as_1d(self, x: int | ir.Value) -> ir.Value:
        """A 1-D value of one element for an integer or a 0-d int64 value."""
        if not isinstance(x, ir.Value):
            return self.ints([int(x)])
        if x.shape is not None and len(x.shape) == 1:
            return x
        key = id(x)
        if key not in self._scalar_as_1d:
            out = self.op("Unsqueeze", x, self.ints([0]))
            out.type = ir.TensorType(ir.DataType.INT64)
            out.shape = ir.Shape([1])
            self._scalar_as_1d[key] = out
        return self._scalar_as_1d[key]

    def shape_tensor(self, dims: Sequence[int | ir.Value]) -> ir.Value:
        """
        A 1-D int64 value holding ``dims`` (integers and 0-d int64 values):
        a constant when every dimension is an integer, a Concat otherwise.
        """
        if all(not isinstance(d, ir.Value) for d in dims):
            return self.ints([int(d) for d in dims])
        pieces: list[ir.Value] = []
        static: list[int] = []
        for d in dims:
            if isinstance(d, ir.Value):
                if static:
                    pieces.append(self.ints(static))
                    static = []
                pieces.append(self.as_1d(d))
            else:
                static.append(int(d))
        if static:
            pieces.append(self.ints(static))
        if len(pieces) == 1:
            return pieces[0]
        out = self.op("Concat", *pieces, axis=0)
        out.type = ir.TensorType(ir.DataType.INT64)
        out.shape = ir.Shape([len(dims)])
        return out

    def size(self, x: ir.Value, axis: int) -> int | ir.Value:
        """
        Dimension ``axis`` of ``x``: an int if static, a 0-d int64 value otherwise
        (computed once per value and axis).
        """
        if x.shape is not None and axis < len(x.shape):
            d = x.shape[axis]
            if isinstance(d, int):
                return d
        key = (id(x), axis)
        if key not in self._sizes:
            shape = self.op("Shape", x, start=axis, end=axis + 1 if axis != -1 else None)
            out = self.op("Squeeze", shape, self.ints([0]))
            out.type = ir.TensorType(ir.DataType.INT64)
            out.shape = ir.Shape([])
            self._sizes[key] = out
        return self._sizes[key]

    def transpose_2d(self, w: ir.Value) -> ir.Value:
        """
        ``w`` transposed (a 2-D value): a new initializer, created once, when ``w`` is a
        constant, a Transpose node otherwise. :meth:`untie_transposed` turns the new
        initializer into a Transpose node if ``w`` stays used by another node (tied weights).
        """
        if w.const_value is None:
            return self.op("Transpose", w, perm=[1, 0])
        if id(w) not in self._transposed:
            t = w.const_value
            arr = t.raw if isinstance(getattr(t, "raw", None), torch.Tensor) else None
            if arr is None:
                arr = torch.from_numpy(np.array(t.numpy()))
            self._transposed[id(w)] = (w, self.add_initializer(f"{w.name}_T", arr.t().contiguous()))
        return self._transposed[id(w)][1]

    def untie_transposed(self) -> int:
        """
        Called once the graph is complete: a constant transposed by :meth:`transpose_2d` and
        still used elsewhere (a weight tied between an embedding and a linear layer, bert's
        ``cls.predictions.decoder.weight``) would be stored twice, once transposed. Its
        transposed copy is replaced by a ``Transpose`` node placed first in the graph.
        Returns the number of copies replaced.
        """
        count = 0
        for w, wt in self._transposed.values():
            if not w.uses() and not w.is_graph_output():
                continue
            if wt.name not in self.graph.initializers or not wt.uses():
                continue
            node = ir.node("Transpose", [w], {"perm": [1, 0]})
            out = node.outputs[0]
            out.name = self.unique_name(f"{w.name}_T_node")
            out.type = wt.type
            out.shape = wt.shape
            ir.convenience.replace_all_uses_with(wt, out)
            del self.graph.initializers[wt.name]
            nodes = list(self.graph)
            if nodes:
                self.graph.insert_before(nodes[0], node)
            else:
                self.graph.append(node)
            count += 1
        return count
