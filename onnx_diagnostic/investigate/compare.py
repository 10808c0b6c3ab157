"""
Where torch and ONNX start to disagree: :func:`compare_intermediates` runs the exported
program node by node with torch and the ONNX model with onnxruntime, aligns the
intermediate results and tells which one diverges first, in which module, at which line.

Alignment. Both exporters name the value an FX node produces after the node (the custom
exporter since it stores its traceability metadata, the onnx-dynamo route always), so a
torch node and an ONNX value are paired by name, checked by shape, element type and, when
the ONNX node says it, by ATen target. The model outputs are paired by position (they are
renamed ``logits``, ``present.0.key``...). A fused ONNX node (``RMSNormalization``,
``Attention``...) keeps the name of the last node it fused, the nodes fused away have no
ONNX counterpart and are counted as not aligned; where the name was lost, a value whose
producer lists the FX node in its metadata (``pkg.onnx_diagnostic.fx_nodes``,
``pkg.torch.onnx.fx_node``) and has the same shape and type is taken (and dropped if its
shape at run time differs: it was a value computed on the way, not the node's result).

>>> import torch
>>> from onnx_diagnostic.export.api import to_onnx
>>> class M(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.fc = torch.nn.Linear(4, 4)
...     def forward(self, x):
...         return torch.relu(self.fc(x)) * 2
>>> model, x = M(), torch.rand(3, 4)
>>> onx = to_onnx(model, (x,), exporter="custom")
>>> res = compare_intermediates(model, onx, (x,))
>>> res.first_divergence is None, len(res.table) > 0
(True, True)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch

__all__ = ["IntermediateComparison", "compare_intermediates", "load_weights_from_onnx"]

#: columns of :attr:`IntermediateComparison.table`
COLUMNS = [
    "step",
    "torch_node",
    "target",
    "onnx_value",
    "onnx_op",
    "module",
    "module_class",
    "source",
    "shape",
    "dtype",
    "onnx_dtype",
    "max_abs",
    "max_rel",
    "status",
    "aligned_by",
]


@dataclass
class IntermediateComparison:
    """
    What :func:`compare_intermediates` returns.

    :param table: one row per aligned pair, in the execution order of the exported program
        (columns: ``step``, ``torch_node``, ``target``, ``onnx_value``, ``onnx_op``,
        ``module``, ``module_class``, ``source``, ``shape``, ``dtype``, ``onnx_dtype``,
        ``max_abs``, ``max_rel``, ``status``, ``aligned_by``); ``status`` is ``ok``,
        ``diverged`` (beyond tolerance), ``shape`` (shapes differ) or ``missing``
        (onnxruntime did not return the value)
    :param atol: absolute tolerance
    :param rtol: relative tolerance
    :param n_torch_nodes: number of FX nodes producing a tensor
    :param not_aligned: FX nodes producing a tensor which have no ONNX counterpart
    :param method: how onnxruntime ran (``outputs``: every aligned value exposed as an
        output of one session, ``nodes``: node by node)
    :param timings: seconds spent in each step (export, torch, onnxruntime, comparison)
    :param node_column: the column naming the reference result (``torch_node``, or
        ``value1`` when two ONNX models are compared, see
        :func:`onnx_diagnostic.investigate.compare_onnx.compare_onnx_models`)
    :param reference: what :attr:`n_torch_nodes` counts, for the report
    """

    table: pd.DataFrame
    atol: float
    rtol: float
    n_torch_nodes: int = 0
    not_aligned: list[str] = field(default_factory=list)
    method: str = "outputs"
    timings: dict[str, float] = field(default_factory=dict)
    node_column: str = "torch_node"
    reference: str = "torch nodes"

    @property
    def diverged(self) -> pd.DataFrame:
        """The rows beyond tolerance (status other than ``ok``), in execution order."""
        return self.table[self.table["status"] != "ok"]

    @property
    def first_divergence(self) -> pd.Series | None:
        """The earliest row beyond tolerance in execution order, None if there is none."""
        bad = self.diverged
        return None if bad.empty else bad.iloc[0]

    def summary_by_module(self, depth: int | None = None) -> pd.DataFrame:
        """
        The largest errors per module, modules in the order they first run.

        :param depth: keeps the first ``depth`` components of the module paths
            (``model.layers.1`` for 3), None for the full paths
        :return: a DataFrame indexed by module: ``first_step``, ``rows``, ``diverged``,
            ``max_abs``, ``max_rel``, ``first_diverged_node``
        """
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise ValueError(f"summary_by_module: depth must be None or an int >= 1, got {depth!r}")
        table = self.table.copy()
        if table.empty:
            return pd.DataFrame(
                columns=[
                    "first_step",
                    "rows",
                    "diverged",
                    "max_abs",
                    "max_rel",
                    "first_diverged_node",
                ]
            )
        modules = table["module"].fillna("")
        if depth is not None:
            modules = modules.map(lambda m: ".".join(m.split(".")[:depth]))
        table["module"] = modules.replace("", "<top>")
        table["is_bad"] = table["status"] != "ok"
        rows = []
        for module, group in table.groupby("module", sort=False):
            bad = group[group["is_bad"]]
            rows.append(
                dict(
                    module=module,
                    first_step=int(group["step"].min()),
                    rows=len(group),
                    diverged=int(group["is_bad"].sum()),
                    max_abs=float(group["max_abs"].max()),
                    max_rel=float(group["max_rel"].max()),
                    first_diverged_node=bad.iloc[0][self.node_column] if not bad.empty else "",
                )
            )
        return pd.DataFrame(rows).set_index("module").sort_values("first_step")

    def worst_modules(self, n: int = 5, depth: int | None = None) -> pd.DataFrame:
        """The ``n`` modules with the largest absolute error."""
        return self.summary_by_module(depth).sort_values("max_abs", ascending=False).head(n)

    def report(self, n: int = 5) -> str:
        """A few lines: counts, the first divergence and the ``n`` worst modules."""
        lines = [
            f"{len(self.table)} aligned results out of {self.n_torch_nodes} {self.reference} "
            f"({len(self.diverged)} beyond atol={self.atol:g}, rtol={self.rtol:g}; "
            f"onnxruntime ran {'node by node' if self.method == 'nodes' else 'once'})"
        ]
        first = self.first_divergence
        if first is None:
            lines.append("no divergence")
        else:
            if self.node_column == "torch_node":
                what = (
                    f"node {first['torch_node']!r} ({first['target']}) -> {first['onnx_op']} "
                    f"{first['onnx_value']!r}"
                )
            else:
                what = (
                    f"value {first['value1']!r} ({first['op1']}) -> {first['op2']} "
                    f"{first['value2']!r}"
                )
            lines.append(
                f"first divergence: step {first['step']} {what}, "
                f"module {first['module'] or '<top>'!r} ({first['module_class']}), "
                f"max_abs={first['max_abs']:.3g}, status={first['status']}"
            )
            lines.append(f"  at {first['source']}")
        if not self.table.empty:
            lines.append("worst modules (max abs error):")
            for module, row in self.worst_modules(n).iterrows():
                lines.append(
                    f"  {module}: max_abs={row['max_abs']:.3g} max_rel={row['max_rel']:.3g} "
                    f"diverged={row['diverged']}/{row['rows']}"
                )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def to_csv(self, filename: str | os.PathLike) -> None:
        """Writes :attr:`table` as CSV."""
        self.table.to_csv(filename, index=False)

    def to_excel(self, filename: str | os.PathLike) -> None:
        """Writes :attr:`table` and the summary by module into an Excel file (openpyxl)."""
        try:
            import openpyxl  # noqa: F401
        except ImportError as e:
            raise ImportError(
                f"to_excel({str(filename)!r}) needs openpyxl (pip install openpyxl), "
                "or write a CSV file with to_csv"
            ) from e
        with pd.ExcelWriter(filename) as writer:
            self.table.to_excel(writer, sheet_name="intermediates", index=False)
            self.summary_by_module().to_excel(writer, sheet_name="modules")


# ------------------------------------------------------------------------------------------
# torch side
# ------------------------------------------------------------------------------------------


def _exported_program(
    model: Any, args: tuple, kwargs: dict, dynamic_shapes: Any
) -> torch.export.ExportedProgram:
    if isinstance(model, torch.export.ExportedProgram):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            "compare_intermediates: model_or_exported_program must be a torch.nn.Module or a "
            f"torch.export.ExportedProgram, not {type(model).__name__}"
        )
    from ..export.io_names import _to_export_dims

    return torch.export.export(
        model,
        args,
        kwargs=kwargs,
        dynamic_shapes=_to_export_dims(dynamic_shapes),
        strict=False,
    )


def _custom_program(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The program the custom exporter translates (it retraces some programs)."""
    from ..export.custom.translator import _retrace_reason

    return ep.run_decompositions({}) if _retrace_reason(ep) else ep


def _dynamo_program(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """
    The program :func:`torch.onnx.export` translates: decomposed with the operators its
    registry implements, type promotions made explicit. Its nodes are named as the ONNX
    values are, the original program's names would pair unrelated results (the
    decomposition renumbers them). Uses private functions of torch.onnx: if they change, the
    original program is compared (names then checked by target, type and static shape).
    """
    try:
        from torch.onnx._internal.exporter import _core, _registration

        registry = _registration.ONNXRegistry.from_torchlib()
        return _core._prepare_exported_program_for_export(ep, registry=registry)
    except (ImportError, AttributeError, TypeError) as e:
        import warnings

        warnings.warn(
            f"compare_intermediates: cannot reproduce torch.onnx.export's decomposition ({e}), "
            "compares the original exported program",
            UserWarning,
            stacklevel=3,
        )
        return ep


class _Recorder(torch.fx.Interpreter):
    """Runs a graph module and keeps the tensors produced by the nodes in ``keep``."""

    def __init__(self, gm: torch.fx.GraphModule, keep: set[str]):
        super().__init__(gm, garbage_collect_values=True)
        self.keep = keep
        self.results: dict[str, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        res = super().run_node(n)
        if n.name in self.keep and isinstance(res, torch.Tensor):
            self.results[n.name] = res.detach().clone()
        return res


def _flat_inputs(ep: torch.export.ExportedProgram, args: tuple, kwargs: dict) -> list[Any]:
    try:
        return list(ep._graph_module_flat_inputs(args, kwargs))
    except Exception as e:
        raise ValueError(
            f"compare_intermediates: args/kwargs do not match the exported program's signature: {e}"
        ) from e


def _tensor_nodes(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    return [
        n
        for n in ep.graph.nodes
        if n.op == "call_function" and isinstance(n.meta.get("val"), torch.Tensor)
    ]


# ------------------------------------------------------------------------------------------
# ONNX side
# ------------------------------------------------------------------------------------------


def _load(onnx_model: Any) -> onnx.ModelProto:
    if hasattr(onnx_model, "model_proto"):  # torch.onnx.ONNXProgram
        onnx_model = onnx_model.model_proto
    if isinstance(onnx_model, (str, os.PathLike)):
        if not os.path.exists(onnx_model):
            raise FileNotFoundError(
                f"compare_intermediates: onnx_model {str(onnx_model)!r} does not exist"
            )
        return onnx.load(onnx_model)
    if isinstance(onnx_model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(onnx_model)
        return copy
    raise TypeError(
        "compare_intermediates: onnx_model must be a file name, an onnx.ModelProto or a "
        f"torch.onnx.ONNXProgram, not {type(onnx_model).__name__}"
    )


_TORCH_TO_ONNX = {
    torch.float32: onnx.TensorProto.FLOAT,
    torch.float16: onnx.TensorProto.FLOAT16,
    torch.bfloat16: onnx.TensorProto.BFLOAT16,
    torch.float64: onnx.TensorProto.DOUBLE,
    torch.int64: onnx.TensorProto.INT64,
    torch.int32: onnx.TensorProto.INT32,
    torch.int16: onnx.TensorProto.INT16,
    torch.int8: onnx.TensorProto.INT8,
    torch.uint8: onnx.TensorProto.UINT8,
    torch.bool: onnx.TensorProto.BOOL,
}


@dataclass
class _OnnxValue:
    name: str
    op: str
    elem_type: int
    dims: list[int | None] | None  # static dimensions, None for a symbolic one
    fx_nodes: list[str]
    targets: list[str]
    position: int  # index of the producer in the graph


def _with_types(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Runs onnx's shape inference when some results of the main graph have no type (a value
    must have one to be exposed as an output); keeps the model as it is if it fails."""
    typed = {vi.name for vi in [*proto.graph.value_info, *proto.graph.output]}
    if all(o in typed for n in proto.graph.node for o in n.output if o):
        return proto
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except (onnx.shape_inference.InferenceError, ValueError):
        return proto


def _onnx_values(proto: onnx.ModelProto) -> dict[str, _OnnxValue]:
    """Every value produced by a node of the main graph, with its type when known."""
    from ..export.custom.traceability import node_origin

    types: dict[str, tuple[int, list[int | None] | None]] = {}
    for vi in [*proto.graph.value_info, *proto.graph.output]:
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.elem_type:
            dims = (
                [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
                if t.HasField("shape")
                else None
            )
            types[vi.name] = (t.elem_type, dims)
    values: dict[str, _OnnxValue] = {}
    for i, node in enumerate(proto.graph.node):
        origin = node_origin(node)
        for name in node.output:
            if not name:
                continue
            elem, dims = types.get(name, (0, None))
            values[name] = _OnnxValue(
                name, node.op_type, elem, dims, origin.fx_nodes, origin.targets, i
            )
    return values


def _align(
    ep: torch.export.ExportedProgram,
    proto: onnx.ModelProto,
    values: dict[str, _OnnxValue],
    nodes: list[torch.fx.Node],
) -> tuple[list[tuple[torch.fx.Node, _OnnxValue, str]], list[str]]:
    """Pairs (torch node, ONNX value, how) in execution order, and the names not aligned."""
    by_fx: dict[str, list[_OnnxValue]] = {}
    for v in values.values():
        for fx in v.fx_nodes:
            by_fx.setdefault(fx, []).append(v)
    # graph outputs by position
    out_node = ep.graph.output_node()
    outputs = {}
    flat_out = [a for a in torch.utils._pytree.tree_leaves(out_node.args[0])]
    onnx_outputs = [o.name for o in proto.graph.output]
    if len(flat_out) == len(onnx_outputs):
        for a, name in zip(flat_out, onnx_outputs):
            if isinstance(a, torch.fx.Node) and name in values:
                outputs.setdefault(a.name, values[name])

    def compatible(node: torch.fx.Node, v: _OnnxValue) -> bool:
        val = node.meta["val"]
        expected = _TORCH_TO_ONNX.get(val.dtype)
        if v.elem_type and expected is not None and v.elem_type != expected:
            return False
        if v.dims is not None:
            if len(v.dims) != val.dim():
                return False
            for d, t in zip(v.dims, val.shape):
                if d is not None and isinstance(t, int) and d != t:
                    return False
        target = str(node.target)
        return not v.targets or any(target.startswith(t) or t.startswith(target) for t in v.targets)

    torch_names = {n.name for n in nodes}
    pairs: list[tuple[torch.fx.Node, _OnnxValue, str]] = []
    used: set[str] = set()
    missing: list[str] = []
    for node in nodes:
        found, how = None, ""
        v = values.get(node.name)
        if v is not None and v.name not in used and compatible(node, v):
            found, how = v, "name"
        elif node.name in outputs and outputs[node.name].name not in used:
            found, how = outputs[node.name], "output"
        else:
            candidates = [
                c
                for c in by_fx.get(node.name, [])
                # a value named after another fx node is that node's result
                if c.name not in used
                and c.name not in torch_names
                and c.elem_type
                and c.dims is not None
                and compatible(node, c)
            ]
            if candidates:
                found, how = max(candidates, key=lambda c: c.position), "origin"
        if found is None:
            missing.append(node.name)
            continue
        used.add(found.name)
        pairs.append((node, found, how))
    return pairs, missing


def _expose(proto: onnx.ModelProto, names: Sequence[str], values: dict[str, _OnnxValue]) -> None:
    """Adds ``names`` to the outputs of ``proto`` (in place)."""
    existing = {o.name for o in proto.graph.output}
    for name in names:
        if name in existing:
            continue
        elem = values[name].elem_type
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))


def _feeds(
    proto: onnx.ModelProto,
    ep: torch.export.ExportedProgram,
    flat: list[Any],
    model: Any,
    args: tuple,
    kwargs: dict,
) -> dict:
    """The inputs of the ONNX model: named as :func:`to_onnx` names them when the model is
    known (the forward signature orders them, which may not be the order of ``kwargs``),
    otherwise the user inputs of the exported program in order."""
    from ..export.api import onnx_feeds
    from ..helpers.rt_helper import make_feeds

    names = [
        i.name for i in proto.graph.input if i.name not in {x.name for x in proto.graph.initializer}
    ]
    if isinstance(model, torch.nn.Module):
        try:
            named = onnx_feeds(model, args, kwargs)
        except (TypeError, ValueError):
            named = {}
        if names and all(n in named for n in names):
            return {n: named[n] for n in names}
    n_user = len(ep.graph_signature.user_inputs)
    user = [x for x in flat[len(flat) - n_user :] if isinstance(x, torch.Tensor)]
    return make_feeds(proto, user)


def _run_onnx(
    proto: onnx.ModelProto,
    feeds: dict[str, torch.Tensor],
    names: list[str],
    values: dict[str, _OnnxValue],
    providers: Any,
    method: str,
) -> dict[str, torch.Tensor]:
    from ..helpers.rt_helper import make_session, run_session

    if method == "nodes":
        from ..reference.ort_evaluator import OnnxruntimeEvaluator

        ev = OnnxruntimeEvaluator(proto, providers=providers, torch_or_numpy=True)
        results = ev.run(None, feeds, intermediate=True)
        return {k: results[k] for k in names if k in results}
    known = [n for n in names if values[n].elem_type]
    _expose(proto, known, values)
    # a value of unknown type cannot be declared as an output: the node-by-node run sees it
    sess = make_session(proto, providers=providers, caller="compare_intermediates")
    out_names = [o.name for o in sess.get_outputs()]
    got = run_session(sess, feeds)
    return dict(zip(out_names, got))


# ------------------------------------------------------------------------------------------
# comparison
# ------------------------------------------------------------------------------------------


def _errors(
    expected: torch.Tensor, got: torch.Tensor, atol: float, rtol: float
) -> tuple[float, float, bool]:
    """max abs, max rel (to |expected|), and whether some element is beyond tolerance."""
    if expected.numel() == 0:
        return 0.0, 0.0, False
    e = expected.detach().cpu().to(torch.float64)
    g = got.detach().cpu().to(torch.float64)
    same = (e == g) | (torch.isnan(e) & torch.isnan(g))
    d = torch.where(same, torch.zeros_like(e), (e - g).abs())
    d = torch.nan_to_num(d, nan=float("inf"))
    max_abs = float(d.max())
    rel = d / e.abs().clamp_min(1e-12)
    max_rel = float(torch.where(d == 0, torch.zeros_like(rel), rel).max())
    exact = not (expected.is_floating_point() or expected.is_complex())
    if exact:
        return max_abs, max_rel, bool(max_abs > 0)
    bound = atol + rtol * torch.nan_to_num(e.abs(), nan=0.0, posinf=0.0)
    return max_abs, max_rel, bool((d > bound).any())


def _fill_row(
    row: dict[str, Any], expected: torch.Tensor, got: torch.Tensor, atol: float, rtol: float
) -> None:
    """Sets ``status``, ``max_abs``, ``max_rel`` (and ``shape`` when they differ)."""
    if tuple(got.shape) != tuple(expected.shape):
        row["status"] = "shape"
        row["shape"] = f"{tuple(expected.shape)} vs {tuple(got.shape)}"
        return
    max_abs, max_rel, bad = _errors(expected, got, atol, rtol)
    row.update(max_abs=max_abs, max_rel=max_rel, status="diverged" if bad else "ok")


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"compare_intermediates: {name} must be a number >= 0, got {value!r}")
    return float(value)


def compare_intermediates(
    model_or_exported_program: torch.nn.Module | torch.export.ExportedProgram,
    onnx_model: str | os.PathLike | onnx.ModelProto | Any,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    providers: Sequence[Any] | None = None,
    verbose: int = 0,
    dynamic_shapes: Any = None,
    exporter: str | None = None,
    method: str = "auto",
) -> IntermediateComparison:
    """
    Runs torch and onnxruntime side by side on the same inputs and compares every
    intermediate result they share (see the module's documentation for the alignment).

    :param model_or_exported_program: the model (exported here with
        :func:`torch.export.export`, ``strict=False``, under the patches the caller
        entered, the way :func:`to_onnx <onnx_diagnostic.export.api.to_onnx>` exports it)
        or the exported program the ONNX model was translated from
    :param onnx_model: the ONNX model (file name, :class:`onnx.ModelProto`,
        :class:`torch.onnx.ONNXProgram`); exported by either exporter
    :param args: positional inputs (the same structure as for the model)
    :param kwargs: keyword inputs
    :param atol: absolute tolerance: an element diverges when
        ``|onnx - torch| > atol + rtol * |torch|`` (integers and booleans must be equal)
    :param rtol: relative tolerance
    :param providers: onnxruntime providers (CPU if None)
    :param verbose: prints the steps and the report
    :param dynamic_shapes: dynamic shapes used when the model is exported here (the
        graph may depend on them)
    :param exporter: ``"custom"`` or ``"onnx-dynamo"``, read from the model's producer when
        None; the custom exporter retraces some programs before translating them, the
        comparison runs the retraced one
    :param method: ``"outputs"`` (one onnxruntime session exposing every aligned value),
        ``"nodes"`` (node by node, each node in its own session: for graphs too big for
        the first way, and to see each kernel alone), ``"auto"`` (``outputs`` below 20,000
        nodes)
    :return: an :class:`IntermediateComparison`

    The default session optimizations of onnxruntime stay on; exposing a value as an output
    keeps the node producing it, so the fusions onnxruntime applies to the plain model
    may not apply here.

    >>> import torch
    >>> from onnx_diagnostic.export.api import to_onnx
    >>> class M(torch.nn.Module):
    ...     def forward(self, x):
    ...         return (x * 2).exp()
    >>> x = torch.rand(2, 3)
    >>> onx = to_onnx(M(), (x,), exporter="custom")
    >>> res = compare_intermediates(M(), onx, (x,))
    >>> res.table[["torch_node", "onnx_op", "status"]].values.tolist()
    [['mul', 'Mul', 'ok'], ['exp', 'Exp', 'ok']]
    """
    atol = _check_number("atol", atol)
    rtol = _check_number("rtol", rtol)
    if method not in ("auto", "outputs", "nodes"):
        raise ValueError(
            f"compare_intermediates: method must be 'auto', 'outputs' or 'nodes', got {method!r}"
        )
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"compare_intermediates: args must be a tuple, not {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(
            f"compare_intermediates: kwargs must be a dict or None, not {type(kwargs).__name__}"
        )
    args, kwargs = tuple(args), dict(kwargs or {})
    timings: dict[str, float] = {}
    proto = _with_types(_load(onnx_model))
    if exporter is None:
        exporter = "custom" if proto.producer_name == "onnx_diagnostic" else "onnx-dynamo"
    if exporter not in ("custom", "onnx-dynamo"):
        raise ValueError(
            f"compare_intermediates: exporter must be 'custom', 'onnx-dynamo' or None, "
            f"got {exporter!r}"
        )

    begin = time.perf_counter()
    if isinstance(model_or_exported_program, torch.nn.Module):
        from ..export.io_names import align_cache_argument

        kwargs, dynamic_shapes = align_cache_argument(
            model_or_exported_program, kwargs, dynamic_shapes
        )
    ep = _exported_program(model_or_exported_program, args, kwargs, dynamic_shapes)
    ep = _custom_program(ep) if exporter == "custom" else _dynamo_program(ep)
    timings["export"] = time.perf_counter() - begin
    if verbose:
        print(f"[compare_intermediates] exported program ready ({timings['export']:.2f}s)")

    # the ONNX results and the torch nodes producing tensors, read once
    values = _onnx_values(proto)
    tensor_nodes = _tensor_nodes(ep)
    pairs, not_aligned = _align(ep, proto, values, tensor_nodes)
    begin = time.perf_counter()
    flat = _flat_inputs(ep, args, kwargs)
    recorder = _Recorder(ep.graph_module, {n.name for n, _, _ in pairs})
    with torch.no_grad():
        recorder.run(*flat)
    timings["torch"] = time.perf_counter() - begin

    begin = time.perf_counter()
    if method == "auto":
        method = "outputs" if len(proto.graph.node) < 20000 else "nodes"
    feeds = _feeds(proto, ep, flat, model_or_exported_program, args, kwargs)
    got = _run_onnx(proto, feeds, [v.name for _, v, _ in pairs], values, providers, method)
    timings["onnxruntime"] = time.perf_counter() - begin
    if verbose:
        print(
            f"[compare_intermediates] {len(pairs)} aligned results, torch "
            f"{timings['torch']:.2f}s, onnxruntime {timings['onnxruntime']:.2f}s ({method})"
        )

    begin = time.perf_counter()
    from ..export.custom.traceability import module_of
    from ..export.custom.translator import source_line

    order = {n.name: i for i, n in enumerate(ep.graph.nodes)}
    rows = []
    for node, value, how in pairs:
        expected = recorder.results.get(node.name)
        if expected is None:
            continue  # not a tensor at run time
        module, cls = module_of(node)
        row = dict(
            step=order[node.name],
            torch_node=node.name,
            target=str(node.target),
            onnx_value=value.name,
            onnx_op=value.op,
            module=module,
            module_class=cls,
            source=source_line(node),
            shape=tuple(expected.shape),
            dtype=str(expected.dtype).replace("torch.", ""),
            onnx_dtype="",
            max_abs=np.nan,
            max_rel=np.nan,
            status="missing",
            aligned_by=how,
        )
        g = got.get(value.name)
        if g is not None:
            row["onnx_dtype"] = str(g.dtype).replace("torch.", "")
            if tuple(g.shape) != tuple(expected.shape) and how == "origin":
                # a value the translation of the node produced on the way, not its result
                not_aligned.append(node.name)
                continue
            _fill_row(row, expected, g, atol, rtol)
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    timings["comparison"] = time.perf_counter() - begin
    res = IntermediateComparison(
        table=table,
        atol=atol,
        rtol=rtol,
        n_torch_nodes=len(tensor_nodes),
        not_aligned=not_aligned,
        method=method,
        timings=timings,
    )
    if verbose:
        print(res.report())
    return res


def load_weights_from_onnx(
    model: torch.nn.Module, onnx_model: str | os.PathLike | onnx.ModelProto
) -> tuple[list[str], list[str]]:
    """
    Copies into ``model`` the weights an ONNX model exported from a model of the same
    architecture holds (initializers named after the state dict, ``NAME_T`` for the
    transposed copy the custom exporter makes of a linear weight), so that a model rebuilt
    untrained (random weights) computes what the ONNX file computes. Values are cast to
    the type of the parameter.

    :param model: the model, modified in place
    :param onnx_model: the ONNX model or its file name
    :return: ``(loaded, missing)``: the names of the state dict copied, and the ones the
        ONNX model does not hold (a tied weight, a buffer folded into a constant...)

    >>> import torch
    >>> from onnx_diagnostic.export.api import to_onnx
    >>> a, b = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    >>> loaded, missing = load_weights_from_onnx(b, to_onnx(a, (torch.rand(1, 2),)))
    >>> sorted(loaded), missing, bool((a.weight == b.weight).all())
    (['bias', 'weight'], [], True)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"load_weights_from_onnx: model must be a torch.nn.Module, not {type(model).__name__}"
        )
    proto = _load(onnx_model)
    inits = {i.name: i for i in proto.graph.initializer}
    loaded: list[str] = []
    missing: list[str] = []
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, param in state.items():
            shape = tuple(param.shape)
            init, transposed = inits.get(name), False
            if init is None or tuple(init.dims) != shape:
                init = inits.get(f"{name}_T")
                transposed = True
                if init is None or len(shape) != 2 or tuple(init.dims) != shape[::-1]:
                    missing.append(name)
                    continue
            array = onnx.numpy_helper.to_array(init)
            value = torch.from_numpy(np.array(array))
            if transposed:
                value = value.T
            param.copy_(value.to(param.dtype))
            loaded.append(name)
    return loaded, missing
