"""
:class:`OnnxruntimeEvaluator`: runs an ONNX model node by node, each node in its own small
:epkg:`onnxruntime` session (cached), so that every intermediate result can be looked at.

>>> import numpy as np
>>> import onnx.helper as oh
>>> from onnx import TensorProto
>>> from onnx_diagnostic.reference import OnnxruntimeEvaluator
>>> model = oh.make_model(
...     oh.make_graph(
...         [oh.make_node("Add", ["X", "X"], ["T"]), oh.make_node("Neg", ["T"], ["Y"])],
...         "g",
...         [oh.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
...         [oh.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
...     ),
...     opset_imports=[oh.make_opsetid("", 18)],
... )
>>> ev = OnnxruntimeEvaluator(model)
>>> sorted(ev.run(None, {"X": np.array([1, 2], dtype=np.float32)}, intermediate=True))
['T', 'X', 'Y']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime
import torch

from ..helpers.onnx_helper import load_onnx
from ..helpers.ort_session import (
    InferenceSessionForTorch,
    numpy_to_torch,
    onnx_type_of_numpy,
    torch_to_numpy,
)

__all__ = ["OnnxruntimeEvaluator"]

logger = logging.getLogger(__name__)

Proto = Union[onnx.ModelProto, onnx.GraphProto, onnx.FunctionProto, onnx.NodeProto]
_CONTROL_FLOW = {"If", "Loop", "Scan"}


def to_torch(value: Any) -> torch.Tensor:
    """
    Converts a numpy array (``ml_dtypes`` types included) into a torch tensor, keeping
    the shape of a 0-d array.

    >>> import numpy as np
    >>> to_torch(np.array(3.0, dtype=np.float32))
    tensor(3.)
    """
    if isinstance(value, torch.Tensor):
        return value
    a = np.asarray(value)
    if not a.flags.writeable:
        a = a.copy()
    if a.ndim == 0:
        return numpy_to_torch(a.reshape((1,))).reshape(())
    return numpy_to_torch(a)


def _torch_onnx_type(dtype: torch.dtype) -> int:
    from onnx_diagnostic.helpers.onnx_helper import from_array_extended  # noqa: PLC0415

    return from_array_extended(torch.empty((0,), dtype=dtype)).data_type


def _elem_type(value: Any, name: str) -> int:
    if isinstance(value, torch.Tensor):
        return _torch_onnx_type(value.dtype)
    if isinstance(value, (np.ndarray, np.generic)):
        return onnx_type_of_numpy(value.dtype)
    raise TypeError(
        f"result {name!r} is a {type(value).__name__}: only numpy arrays and torch tensors "
        f"are supported (no sequence or optional values)"
    )


def _describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{str(value.dtype).replace('torch.', '')}{tuple(value.shape)}"
    return type(value).__name__


def outer_scope_names(node: onnx.NodeProto) -> list[str]:
    """
    Names a node's subgraphs read from the enclosing graph (used but neither defined nor
    inputs inside them), in order of first use.

    >>> import onnx.helper as oh
    >>> from onnx import TensorProto
    >>> then = oh.make_graph([oh.make_node("Identity", ["A"], ["r"])], "t", [],
    ...                      [oh.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    >>> other = oh.make_graph([oh.make_node("Neg", ["B"], ["r"])], "e", [],
    ...                       [oh.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    >>> node = oh.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)
    >>> sorted(outer_scope_names(node))
    ['A', 'B']
    """
    names: list[str] = []

    def visit(graph: onnx.GraphProto, known: set[str]) -> None:
        known = known | {i.name for i in graph.input} | {i.name for i in graph.initializer}
        for n in graph.node:
            for i in n.input:
                if i and i not in known and i not in names:
                    names.append(i)
            for att in n.attribute:
                for g in ([att.g] if att.type == onnx.AttributeProto.GRAPH else []) + list(
                    att.graphs
                ):
                    visit(g, known)
            known |= set(n.output)

    for att in node.attribute:
        graphs = [att.g] if att.type == onnx.AttributeProto.GRAPH else list(att.graphs)
        for g in graphs:
            visit(g, set())
    return names


class OnnxruntimeEvaluator:
    """
    Runs an ONNX model node by node with :epkg:`onnxruntime`: every node becomes a small
    model run by its own session, created the first time the node runs with given input
    types and cached. A node with subgraphs (``If``, ``Loop``, ``Scan``) runs as one
    session holding the node and its subgraphs, the names the subgraphs take from the
    enclosing graph becoming inputs of that model. Local functions go with every small
    model, onnxruntime inlines them.

    :param proto: a model, a graph (``opsets`` needed), a function, a node, a file name or
        another :class:`OnnxruntimeEvaluator` (its proto is used)
    :param session_options: :class:`onnxruntime.SessionOptions` for every session
    :param providers: ``None`` (CPU), ``"CPU"``, ``"CUDA"`` or a list of providers
    :param graph_optimization_level: see :class:`onnxruntime.SessionOptions` (a bool
        means all or nothing)
    :param log_severity_level: see :class:`onnxruntime.SessionOptions`
    :param verbose: prints every node (1) and its results (2)
    :param ir_version: the IR version of the small models when ``proto`` is not a model
    :param opsets: the opsets when ``proto`` is a graph or a node, an int for the main domain
    :param whole: runs the whole model in one session instead (no intermediate results)
    :param torch_or_numpy: results as torch tensors (True), numpy arrays (False), or
        (None) as the inputs given to :meth:`run`
    :param local_functions: more functions (:class:`onnx.FunctionProto`, a list or a
        dictionary keyed by ``(domain, name)``) the nodes may call

    The sessions are in :attr:`sessions`, keyed by ``(node index, input types)``.

    >>> import numpy as np
    >>> import onnx.helper as oh
    >>> from onnx import TensorProto
    >>> model = oh.make_model(
    ...     oh.make_graph(
    ...         [oh.make_node("Mul", ["X", "X"], ["sq"]), oh.make_node("Sqrt", ["sq"], ["Y"])],
    ...         "g",
    ...         [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["n"])],
    ...         [oh.make_tensor_value_info("Y", TensorProto.FLOAT, ["n"])],
    ...     ),
    ...     opset_imports=[oh.make_opsetid("", 18)],
    ... )
    >>> ev = OnnxruntimeEvaluator(model)
    >>> results = ev.run(None, {"X": np.array([-3.0, 4.0], dtype=np.float32)}, intermediate=True)
    >>> results["sq"], results["Y"]
    (array([ 9., 16.], dtype=float32), array([3., 4.], dtype=float32))
    """

    def __init__(
        self,
        proto: str | os.PathLike | Proto | OnnxruntimeEvaluator,
        session_options: onnxruntime.SessionOptions | None = None,
        providers: str | Sequence[Any] | None = None,
        graph_optimization_level: onnxruntime.GraphOptimizationLevel | bool | None = None,
        log_severity_level: int | None = None,
        verbose: int = 0,
        ir_version: int = 10,
        opsets: int | dict[str, int] | None = None,
        whole: bool = False,
        torch_or_numpy: bool | None = None,
        local_functions: Sequence[onnx.FunctionProto]
        | dict[tuple[str, str], onnx.FunctionProto]
        | None = None,
    ):
        if isinstance(proto, OnnxruntimeEvaluator):
            proto = proto.proto
        elif isinstance(proto, (str, os.PathLike)):
            proto = load_onnx(proto)
        if not isinstance(
            proto, (onnx.ModelProto, onnx.GraphProto, onnx.FunctionProto, onnx.NodeProto)
        ):
            raise TypeError(
                f"proto must be a ModelProto, GraphProto, FunctionProto, NodeProto or a file "
                f"name, not {type(proto).__name__}"
            )
        self.proto: Proto = proto
        self.verbose = verbose
        self.whole = whole
        self.torch_or_numpy = torch_or_numpy
        self.session_kwargs: dict[str, Any] = dict(
            session_options=session_options,
            providers=providers,
            graph_optimization_level=graph_optimization_level,
            log_severity_level=log_severity_level,
        )
        self.ir_version = getattr(proto, "ir_version", 0) or ir_version
        self.opsets = self._opsets(proto, opsets)
        if isinstance(local_functions, dict):
            local_functions = list(local_functions.values())
        self.functions = list(getattr(proto, "functions", [])) + list(local_functions or [])
        self.nodes, self.inputs, self.outputs, inits = self._structure(proto)
        self.initializers: dict[str, np.ndarray] = {
            i.name: onnx.numpy_helper.to_array(i) for i in inits
        }
        self.sessions: dict[tuple[Any, ...], InferenceSessionForTorch] = {}

    # -- structure -------------------------------------------------------------------------

    @staticmethod
    def _opsets(proto: Proto, opsets: int | dict[str, int] | None) -> dict[str, int]:
        if isinstance(proto, (onnx.ModelProto, onnx.FunctionProto)):
            return {d.domain: d.version for d in proto.opset_import}
        if opsets is None:
            raise ValueError(f"opsets must be given when proto is a {type(proto).__name__}")
        if isinstance(opsets, int):
            return {"": opsets, "com.microsoft": 1}
        return dict(opsets)

    @staticmethod
    def _structure(
        proto: Proto,
    ) -> tuple[list[onnx.NodeProto], list[str], list[str], list[onnx.TensorProto]]:
        if isinstance(proto, onnx.ModelProto):
            proto = proto.graph
        if isinstance(proto, onnx.GraphProto):
            if proto.sparse_initializer:
                raise NotImplementedError("sparse initializers are not supported")
            return (
                list(proto.node),
                [i.name for i in proto.input],
                [o.name for o in proto.output],
                list(proto.initializer),
            )
        if isinstance(proto, onnx.FunctionProto):
            return list(proto.node), list(proto.input), list(proto.output), []
        return [proto], [i for i in proto.input if i], [o for o in proto.output if o], []

    @property
    def input_names(self) -> list[str]:
        """The input names."""
        return list(self.inputs)

    @property
    def output_names(self) -> list[str]:
        """The output names."""
        return list(self.outputs)

    # -- sessions --------------------------------------------------------------------------

    def _make_model(
        self, nodes: list[onnx.NodeProto], inputs: list[tuple[str, int]], outputs: list[str]
    ) -> onnx.ModelProto:
        graph = oh.make_graph(
            nodes,
            "node",
            [oh.make_tensor_value_info(n, t, None) for n, t in inputs],
            [oh.make_value_info(n, onnx.TypeProto()) for n in outputs],
        )
        return oh.make_model(
            graph,
            opset_imports=[oh.make_opsetid(d, v) for d, v in self.opsets.items()],
            ir_version=self.ir_version,
            functions=self.functions,
        )

    def _session(
        self, key: tuple[Any, ...], model: onnx.ModelProto, what: str
    ) -> InferenceSessionForTorch:
        if key not in self.sessions:
            try:
                self.sessions[key] = InferenceSessionForTorch(model, **self.session_kwargs)
            except Exception as e:
                raise RuntimeError(f"onnxruntime cannot create a session for {what}: {e}") from e
        return self.sessions[key]

    # -- run -------------------------------------------------------------------------------

    def _use_torch(self, feeds: dict[str, Any]) -> bool:
        if self.torch_or_numpy is not None:
            return bool(self.torch_or_numpy)
        return any(isinstance(v, torch.Tensor) for v in feeds.values())

    def run(
        self,
        outputs: Sequence[str] | None,
        feed_inputs: dict[str, Any],
        intermediate: bool = False,
    ) -> list[Any] | dict[str, Any]:
        """
        Runs the model node by node.

        :param outputs: the names of the results to return, ``None`` for the outputs of
            the model; any intermediate result can be named
        :param feed_inputs: the inputs, numpy arrays or torch tensors
        :param intermediate: returns a dictionary with every result (initializers and
            inputs included) instead of a list
        :return: a list of results, or a dictionary with ``intermediate=True``
        """
        if not isinstance(feed_inputs, dict):
            raise TypeError(f"feed_inputs must be a dictionary, not {type(feed_inputs)}")
        missing = [n for n in self.inputs if n not in feed_inputs]
        if missing:
            raise ValueError(f"missing inputs {missing}, the model expects {self.inputs}")
        use_torch = self._use_torch(feed_inputs)
        if self.whole:
            if intermediate:
                raise ValueError("intermediate=True cannot be used with whole=True")
            return self._run_whole(outputs, feed_inputs, use_torch)
        # the sessions take and return torch tensors (0-d and bfloat16 values survive)
        results: dict[str, Any] = {k: to_torch(v) for k, v in self.initializers.items()}
        for k, v in feed_inputs.items():
            results[k] = to_torch(v)
        for index, node in enumerate(self.nodes):
            self._run_node(index, node, results)
        convert = (lambda v: v) if use_torch else self._to_numpy
        if intermediate:
            return {k: convert(v) for k, v in results.items()}
        names = list(outputs) if outputs is not None else self.outputs
        unknown = [n for n in names if n not in results]
        if unknown:
            raise ValueError(f"unknown results {unknown}, the model outputs are {self.outputs}")
        return [convert(results[n]) for n in names]

    @staticmethod
    def _to_numpy(value: Any) -> Any:
        return torch_to_numpy(value) if isinstance(value, torch.Tensor) else value

    def _run_whole(
        self, outputs: Sequence[str] | None, feeds: dict[str, Any], use_torch: bool
    ) -> list[Any]:
        if isinstance(self.proto, onnx.ModelProto):
            model = self.proto
        else:
            types = [(n, _elem_type(feeds[n], n)) for n in self.inputs]
            model = self._make_model(self.nodes, types, self.outputs)
        sess = self._session(("whole",), model, "the whole model")
        got = sess.run(outputs, {k: to_torch(v) for k, v in feeds.items()})
        return list(got) if use_torch else [self._to_numpy(v) for v in got]

    def _run_node(self, index: int, node: onnx.NodeProto, results: dict[str, Any]) -> None:
        what = f"node {index} {node.op_type}({node.domain!r}) {node.name!r}"
        names = [i for i in node.input if i]
        if node.op_type in _CONTROL_FLOW and node.domain == "":
            names += [n for n in outer_scope_names(node) if n not in names]
        for n in names:
            if n not in results:
                raise RuntimeError(f"{what}: input {n!r} is not computed yet or unknown")
        names = list(dict.fromkeys(names))
        types = [(n, _elem_type(results[n], n)) for n in names]
        key = (index, tuple(t for _, t in types))
        out_names = [o for o in node.output if o]
        if key not in self.sessions:
            model = self._make_model([node], types, out_names)
        else:
            model = None  # type: ignore[assignment]
        sess = self._session(key, model, what)  # type: ignore[arg-type]
        if self.verbose:
            print(f"{node.op_type}({', '.join(node.input)}) -> {', '.join(node.output)}")
        try:
            got = sess.run(None, {n: results[n] for n in names})
        except Exception as e:
            shapes = ", ".join(f"{n}: {_describe(results[n])}" for n in names)
            raise RuntimeError(f"{what} failed with inputs {shapes}: {e}") from e
        for name, value in zip(out_names, got):
            results[name] = value
            if self.verbose > 1:
                print(f"  + {name}: {_describe(value)}")
        logger.debug("%s -> %s", what, out_names)
