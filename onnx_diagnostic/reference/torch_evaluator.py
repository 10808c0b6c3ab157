"""
:class:`TorchOnnxEvaluator`: runs an ONNX model with torch kernels, torch tensors in and
out (:func:`get_kernels` lists the operators it knows).

>>> import torch
>>> import onnx.helper as oh
>>> from onnx import TensorProto
>>> from onnx_diagnostic.reference import TorchOnnxEvaluator
>>> model = oh.make_model(
...     oh.make_graph(
...         [oh.make_node("Sigmoid", ["X"], ["s"]), oh.make_node("Mul", ["X", "s"], ["Y"])],
...         "g",
...         [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["n"])],
...         [oh.make_tensor_value_info("Y", TensorProto.FLOAT, ["n"])],
...     ),
...     opset_imports=[oh.make_opsetid("", 18)],
... )
>>> TorchOnnxEvaluator(model).run(None, {"X": torch.tensor([0.0, 2.0])})
[tensor([0.0000, 1.7616])]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import torch

from . import _torch_nn_kernels  # noqa: F401  (registers the kernels)
from ._torch_kernels import KERNELS, Kernel, KernelNode, register
from .ort_evaluator import outer_scope_names, to_torch

__all__ = ["TorchOnnxEvaluator", "get_kernels"]

logger = logging.getLogger(__name__)


def get_kernels() -> dict[tuple[str, str], Kernel]:
    """
    Returns the kernels :class:`TorchOnnxEvaluator` knows, keyed by ``(domain, op_type)``.

    >>> ("", "MatMul") in get_kernels()
    True
    """
    return dict(KERNELS)


@register("If")
def _if(node: KernelNode, cond: torch.Tensor, *, context: dict[str, Any]) -> tuple[Any, ...]:
    branch = node.attr("then_branch") if bool(cond.reshape(-1)[0]) else node.attr("else_branch")
    parent: TorchOnnxEvaluator = node.parent
    sub = parent._subgraph(branch)
    return tuple(sub.run(None, {}, context=context))


_NEEDS_CONTEXT = {("", "If")}


class TorchOnnxEvaluator:
    """
    Runs an ONNX model with torch: every node is executed by a torch function found in a
    table ``(domain, op_type) -> kernel`` (:func:`get_kernels`). The inputs and outputs
    are torch tensors (numpy arrays are accepted and then returned as numpy arrays).
    Results are freed as soon as no remaining node needs them. ``If`` runs its branches
    with the same kernels, local functions run as nested evaluators. An operator without
    kernel is refused when the evaluator is built, naming the node.

    :param proto: a model, a graph (``opsets`` needed), a function or a file name
    :param providers: ``("CPUExecutionProvider",)`` or with ``"CUDAExecutionProvider"``,
        to run on the GPU: the weights are moved there
    :param opsets: the opsets when ``proto`` is a graph
    :param local_functions: more functions, keyed by ``(domain, name)``
    :param verbose: prints every node (1) and its results (2)

    >>> import torch
    >>> import onnx.helper as oh
    >>> from onnx import TensorProto
    >>> model = oh.make_model(
    ...     oh.make_graph(
    ...         [oh.make_node("RMSNormalization", ["X", "W"], ["Y"], epsilon=0.0)],
    ...         "g",
    ...         [oh.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2]),
    ...          oh.make_tensor_value_info("W", TensorProto.FLOAT, [2])],
    ...         [oh.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
    ...     ),
    ...     opset_imports=[oh.make_opsetid("", 23)],
    ... )
    >>> ev = TorchOnnxEvaluator(model)
    >>> ev.run(None, {"X": torch.tensor([[3.0, 4.0]]), "W": torch.ones(2)})[0].round(decimals=4)
    tensor([[0.8485, 1.1314]])
    """

    def __init__(
        self,
        proto: onnx.ModelProto | onnx.GraphProto | onnx.FunctionProto | str | os.PathLike,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        opsets: dict[str, int] | None = None,
        local_functions: dict[tuple[str, str], onnx.FunctionProto] | None = None,
        verbose: int = 0,
    ):
        if isinstance(proto, (str, os.PathLike)):
            from ..helpers.onnx_helper import load_onnx  # noqa: PLC0415

            proto = load_onnx(proto)
        self.providers = tuple(providers)
        self.verbose = verbose
        self.default_device = torch.device(
            "cuda"
            if any(
                (p[0] if isinstance(p, tuple) else p) == "CUDAExecutionProvider"
                for p in self.providers
            )
            else "cpu"
        )
        self.functions: dict[tuple[str, str], onnx.FunctionProto] = dict(local_functions or {})
        graph: Any
        if isinstance(proto, onnx.ModelProto):
            self.opsets = {d.domain: d.version for d in proto.opset_import}
            for f in proto.functions:
                self.functions[f.domain, f.name] = f
            graph = proto.graph
        elif isinstance(proto, onnx.GraphProto):
            if not opsets:
                raise ValueError("opsets must be given when proto is a GraphProto")
            self.opsets = dict(opsets)
            graph = proto
        elif isinstance(proto, onnx.FunctionProto):
            self.opsets = {d.domain: d.version for d in proto.opset_import}
            graph = proto
        else:
            raise TypeError(f"unexpected type {type(proto).__name__} for proto")
        self.proto = proto
        if isinstance(graph, onnx.FunctionProto):
            self.input_names, self.output_names = list(graph.input), list(graph.output)
            inits: list[onnx.TensorProto] = []
        else:
            if graph.sparse_initializer:
                raise NotImplementedError("sparse initializers are not supported")
            self.input_names = [i.name for i in graph.input]
            self.output_names = [o.name for o in graph.output]
            inits = list(graph.initializer)
        self.constants: dict[str, torch.Tensor] = {
            i.name: to_torch(onnx.numpy_helper.to_array(i)).to(self.default_device) for i in inits
        }
        self.nodes = list(graph.node)
        self.kernels = [self._kernel(n) for n in self.nodes]
        self.last_used = self._last_used()

    # -- build -----------------------------------------------------------------------------

    def _kernel(self, node: onnx.NodeProto) -> tuple[KernelNode, Kernel]:
        key = (node.domain, node.op_type)
        if key in self.functions:
            return KernelNode(node, 1, self), self._function_kernel(self.functions[key])
        if node.domain not in self.opsets:
            raise ValueError(f"{node.op_type} node {node.name!r}: domain {node.domain!r} unknown")
        domain = "" if node.domain == "ai.onnx" else node.domain
        if (domain, node.op_type) not in KERNELS:
            raise NotImplementedError(
                f"TorchOnnxEvaluator has no kernel for {node.op_type!r} (domain "
                f"{node.domain!r}), node {node.name!r}"
            )
        return KernelNode(node, self.opsets[node.domain], self), KERNELS[domain, node.op_type]

    def _function_kernel(self, fct: onnx.FunctionProto) -> Kernel:
        sub = TorchOnnxEvaluator(fct, self.providers, local_functions=self.functions)

        def run_function(node: KernelNode, *inputs: torch.Tensor) -> tuple[Any, ...]:
            feeds = {n: v for n, v in zip(fct.input, inputs) if v is not None}
            return tuple(sub.run(None, feeds))

        return run_function

    def _subgraph(self, graph: onnx.GraphProto) -> TorchOnnxEvaluator:
        key = id(graph)
        cache = self.__dict__.setdefault("_subgraphs", {})
        if key not in cache:
            cache[key] = (
                graph,
                TorchOnnxEvaluator(graph, self.providers, self.opsets, self.functions),
            )
        return cache[key][1]

    def _last_used(self) -> list[list[str]]:
        """For every node, the results no later node needs."""
        last: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            names = list(node.input)
            if node.op_type in {"If", "Loop", "Scan"}:
                names += outer_scope_names(node)
            for n in names:
                last[n] = i
        keep = set(self.output_names)
        res: list[list[str]] = [[] for _ in self.nodes]
        for name, i in last.items():
            if name and name not in keep and name not in self.constants:
                res[i].append(name)
        return res

    # -- run -------------------------------------------------------------------------------

    def run(
        self,
        outputs: Sequence[str] | None,
        feeds: dict[str, torch.Tensor] | dict[str, np.ndarray],
        context: dict[str, Any] | None = None,
    ) -> list[Any]:
        """
        Runs the model.

        :param outputs: names of the outputs to return, ``None`` for all
        :param feeds: the inputs, torch tensors (or numpy arrays, then the outputs are
            numpy arrays too)
        :param context: results of an enclosing graph a subgraph may read
        :return: the outputs
        """
        if not isinstance(feeds, dict):
            raise TypeError(f"feeds must be a dictionary, not {type(feeds)}")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"missing inputs {missing}, the model expects {self.input_names}")
        use_numpy = any(isinstance(v, np.ndarray) for v in feeds.values())
        results: dict[str, Any] = dict(context or {})
        results.update(self.constants)
        for k, v in feeds.items():
            if isinstance(v, (np.ndarray, np.generic)):
                v = to_torch(v)
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"feeds[{k!r}] must be a torch tensor, not {type(v).__name__}")
            results[k] = v.to(self.default_device) if self.default_device.type != "cpu" else v
        for i, (knode, kernel) in enumerate(self.kernels):
            self._run_node(knode, kernel, results)
            for name in self.last_used[i]:
                if name not in self.input_names and (context is None or name not in context):
                    results.pop(name, None)
        names = list(outputs) if outputs is not None else self.output_names
        unknown = [n for n in names if n not in results]
        if unknown:
            raise ValueError(f"unknown outputs {unknown}, the model has {self.output_names}")
        got = [results[n] for n in names]
        if use_numpy:
            from ..helpers.ort_session import torch_to_numpy  # noqa: PLC0415

            return [torch_to_numpy(t) if isinstance(t, torch.Tensor) else t for t in got]
        return got

    def _run_node(self, knode: KernelNode, kernel: Kernel, results: dict[str, Any]) -> None:
        inputs = []
        for name in knode.inputs:
            if name and name not in results:
                raise RuntimeError(f"{knode}: input {name!r} is unknown or not computed yet")
            inputs.append(results[name] if name else None)
        while inputs and inputs[-1] is None:
            inputs.pop()
        if self.verbose:
            print(f"{knode}({', '.join(knode.inputs)}) -> {', '.join(knode.outputs)}")
        try:
            if (knode.domain, knode.op_type) in _NEEDS_CONTEXT:
                res = kernel(knode, *inputs, context=results)
            else:
                res = kernel(knode, *inputs)
        except NotImplementedError:
            raise
        except Exception as e:
            shapes = ", ".join(
                f"{n}: {tuple(v.shape)} {v.dtype}" if isinstance(v, torch.Tensor) else n
                for n, v in zip(knode.inputs, inputs)
            )
            raise RuntimeError(f"{knode} failed with inputs {shapes}: {e}") from e
        if not isinstance(res, tuple):
            res = (res,)
        for name, value in zip(knode.outputs, res):
            if name:
                results[name] = value
                if self.verbose > 1:
                    print(f"  + {name}: {tuple(value.shape)} {value.dtype}")
        logger.debug("%s done", knode)
