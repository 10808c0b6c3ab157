"""
Two ONNX models of the same computation side by side (two exporters, before and after an
optimization, float32 and float16...): :func:`compare_onnx_models` runs both with
onnxruntime on the same inputs, every intermediate result exposed, pairs the results
(same name first, with the same shape and the same module when the nodes say it, then,
for floating point results, in execution order, the next unpaired result of the second
model produced by the same operator with the same shape and type) and reports the first
one that differs. The result is an
:class:`IntermediateComparison <onnx_diagnostic.investigate.compare.IntermediateComparison>`.

>>> import torch
>>> from onnx_diagnostic.export.api import to_onnx
>>> class M(torch.nn.Module):
...     def forward(self, x):
...         return (x * 2).exp()
>>> x = torch.rand(2, 3)
>>> a = to_onnx(M(), (x,), exporter="custom")
>>> b = to_onnx(M(), (x,), exporter="onnx-dynamo")
>>> res = compare_onnx_models(a, b, {"x": x})
>>> res.first_divergence is None
True
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch

from .compare import (
    IntermediateComparison,
    _check_number,
    _fill_row,
    _load,
    _onnx_values,
    _run_onnx,
    _with_types,
)

__all__ = ["compare_onnx_models", "random_feeds"]

COLUMNS = [
    "step",
    "value1",
    "op1",
    "value2",
    "op2",
    "module",
    "module_class",
    "source",
    "shape",
    "dtype",
    "dtype2",
    "max_abs",
    "max_rel",
    "status",
    "aligned_by",
]

_NP_TYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.BOOL: torch.bool,
}


def random_feeds(
    model: str | os.PathLike | onnx.ModelProto,
    dims: dict[str, int] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """
    Random inputs for an ONNX model from its input types: floats in [0, 1), integers in
    [0, 10), booleans true; a symbolic dimension takes ``dims[name]`` (2 by default). An LLM
    whose attention mask must be as long as the cache plus the new tokens needs ``dims``
    consistent with that, or inputs built from its model id.

    :param model: the ONNX model
    :param dims: values of the symbolic dimensions
    :param seed: seed of the random generator
    :return: ``{input name: tensor}``

    >>> import onnx.helper as oh
    >>> from onnx import TensorProto
    >>> model = oh.make_model(oh.make_graph(
    ...     [oh.make_node("Relu", ["X"], ["Y"])], "g",
    ...     [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3])],
    ...     [oh.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])]))
    >>> random_feeds(model, {"batch": 5})["X"].shape
    torch.Size([5, 3])
    """
    proto = _load(model)
    dims = dict(dims or {})
    for k, v in dims.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"random_feeds: dims[{k!r}] must be an int >= 0, got {v!r}")
    gen = torch.Generator().manual_seed(seed)
    inits = {i.name for i in proto.graph.initializer}
    feeds = {}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        dtype = _NP_TYPES.get(t.elem_type)
        if dtype is None:
            raise ValueError(
                f"random_feeds: input {inp.name!r} has element type "
                f"{onnx.TensorProto.DataType.Name(t.elem_type)}, not supported"
            )
        shape = [
            d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 2)
            for d in t.shape.dim
        ]
        if dtype == torch.bool:
            feeds[inp.name] = torch.ones(shape, dtype=torch.bool)
        elif dtype.is_floating_point:
            feeds[inp.name] = torch.rand(shape, generator=gen).to(dtype)
        else:
            feeds[inp.name] = torch.randint(0, 10, shape, generator=gen, dtype=dtype)
    return feeds


def _same_result(a: Any, b: Any, node1: Any, node2: Any) -> bool:
    """Whether two results named alike are the same result: same shape and type, and the
    same module when both nodes say it (two exporters may give one name to two results,
    FX nodes being numbered in two different programs)."""
    from ..export.custom.traceability import node_origin

    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    if tuple(a.shape) != tuple(b.shape) or a.dtype.is_floating_point != b.dtype.is_floating_point:
        return False
    m1, m2 = node_origin(node1).module, node_origin(node2).module
    return not m1 or not m2 or m1 == m2


def compare_onnx_models(
    model1: str | os.PathLike | onnx.ModelProto,
    model2: str | os.PathLike | onnx.ModelProto,
    feeds: dict[str, Any] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    providers: Sequence[Any] | None = None,
    method: str = "outputs",
    verbose: int = 0,
) -> IntermediateComparison:
    """
    Runs two ONNX models on the same inputs and compares their intermediate results
    (see the module's documentation for the alignment). The first model is the reference:
    the rows follow its execution order, module and source line come from its nodes'
    metadata (custom exporter or onnx-dynamo).

    :param model1: the reference model (file name or :class:`onnx.ModelProto`)
    :param model2: the other model
    :param feeds: the inputs (torch tensors or numpy arrays) by name, given to both models
        (each receives the names it declares), :func:`random_feeds` of ``model1`` if None
    :param atol: absolute tolerance (see
        :func:`compare_intermediates <onnx_diagnostic.investigate.compare.compare_intermediates>`)
    :param rtol: relative tolerance
    :param providers: onnxruntime providers (CPU if None)
    :param method: ``"outputs"`` (one session per model exposing every result) or
        ``"nodes"`` (node by node)
    :param verbose: prints the report
    :return: an :class:`IntermediateComparison
        <onnx_diagnostic.investigate.compare.IntermediateComparison>` whose table has the
        columns ``step``, ``value1``, ``op1``, ``value2``, ``op2``, ``module``,
        ``module_class``, ``source``, ``shape``, ``dtype``, ``dtype2``, ``max_abs``,
        ``max_rel``, ``status``, ``aligned_by`` (``name`` or ``sequence``)
    """
    from ..export.custom.traceability import node_origin

    atol, rtol = _check_number("atol", atol), _check_number("rtol", rtol)
    if method not in ("outputs", "nodes"):
        raise ValueError(
            f"compare_onnx_models: method must be 'outputs' or 'nodes', got {method!r}"
        )
    timings: dict[str, float] = {}
    protos = [_with_types(_load(model1)), _with_types(_load(model2))]
    if feeds is None:
        feeds = random_feeds(protos[0])
    if not isinstance(feeds, dict):
        raise TypeError(f"compare_onnx_models: feeds must be a dict, not {type(feeds).__name__}")
    feeds = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in feeds.items()}
    results = []
    for i, proto in enumerate(protos):
        inits = {x.name for x in proto.graph.initializer}
        names = [x.name for x in proto.graph.input if x.name not in inits]
        missing = [n for n in names if n not in feeds]
        if missing:
            raise ValueError(
                f"compare_onnx_models: model{i + 1} expects inputs {names}, feeds has no "
                f"{missing} (it has {list(feeds)})"
            )
        begin = time.perf_counter()
        values = _onnx_values(proto)
        got = _run_onnx(
            proto, {n: feeds[n] for n in names}, list(values), values, providers, method
        )
        timings[f"model{i + 1}"] = time.perf_counter() - begin
        results.append((values, got))
    (values1, got1), (values2, got2) = results

    begin = time.perf_counter()
    order1 = [v for v in sorted(values1.values(), key=lambda v: v.position) if v.name in got1]
    order2 = [v for v in sorted(values2.values(), key=lambda v: v.position) if v.name in got2]
    pairs: dict[str, tuple[str, str]] = {}
    used2: set[str] = set()
    nodes1, nodes2 = list(protos[0].graph.node), list(protos[1].graph.node)
    for v in order1:
        if v.name in got2 and _same_result(
            got1[v.name], got2[v.name], nodes1[v.position], nodes2[values2[v.name].position]
        ):
            pairs[v.name] = (v.name, "name")
            used2.add(v.name)
    # the other floating point results, in execution order: the next unused result of
    # model2 after the last pair, computed by the same operator, with the same shape and
    # type (shapes and indices are too alike to be paired that way)
    cursor = 0
    pos2 = {v.name: i for i, v in enumerate(order2)}
    for v in order1:
        if v.name in pairs:
            cursor = max(cursor, pos2.get(pairs[v.name][0], cursor - 1) + 1)
            continue
        a = got1[v.name]
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            continue
        for j in range(cursor, len(order2)):
            w = order2[j]
            b = got2[w.name]
            if (
                w.name not in used2
                and w.op == v.op
                and isinstance(b, torch.Tensor)
                and b.dtype == a.dtype
                and tuple(b.shape) == tuple(a.shape)
            ):
                pairs[v.name] = (w.name, "sequence")
                used2.add(w.name)
                cursor = j + 1
                break
    rows = []
    not_aligned = []
    for v in order1:
        if v.name not in pairs:
            not_aligned.append(v.name)
            continue
        name2, how = pairs[v.name]
        a, b = got1[v.name], got2[name2]
        origin = node_origin(nodes1[v.position])
        row = dict(
            step=v.position,
            value1=v.name,
            op1=v.op,
            value2=name2,
            op2=values2[name2].op,
            module=origin.module,
            module_class="|".join(origin.module_classes),
            source=origin.sources[0] if origin.sources else "",
            shape=tuple(a.shape),
            dtype=str(a.dtype).replace("torch.", ""),
            dtype2=str(b.dtype).replace("torch.", ""),
            max_abs=np.nan,
            max_rel=np.nan,
            status="missing",
            aligned_by=how,
        )
        _fill_row(row, a, b, atol, rtol)
        rows.append(row)
    timings["comparison"] = time.perf_counter() - begin
    res = IntermediateComparison(
        table=pd.DataFrame(rows, columns=COLUMNS),
        atol=atol,
        rtol=rtol,
        n_torch_nodes=len(order1),
        not_aligned=not_aligned,
        method=method,
        timings=timings,
        node_column="value1",
        reference="results of model1",
    )
    if verbose:
        print(res.report())
    return res
