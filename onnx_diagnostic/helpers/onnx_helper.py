"""
Helpers to look into ONNX models: print them (:func:`pretty_onnx`), find where a result is
produced and consumed (:func:`onnx_find`), remove the weights to share a model's structure
and restore random weights with the same statistics (:func:`onnx_lighten`,
:func:`onnx_unlighten`), name element types (:func:`onnx_dtype_name`), build tensors
of any dtype (:func:`from_array_extended`), count what a model holds (:func:`onnx_stats`),
draw it (:func:`to_dot`) and split it (:func:`onnx_partition`). The subcommands of
``python -m onnx_diagnostic`` (``print``, ``find``, ``lighten``, ``stats``, ``dot``,
``partition``...) are thin layers over these functions.

>>> import onnx.parser
>>> from onnx_diagnostic.helpers.onnx_helper import onnx_find, onnx_dtype_name
>>> model = onnx.parser.parse_model('''
...     <ir_version: 10, opset_import: ["" : 18]>
...     g (float[N] x) => (float[N] y) { t = Neg(x)  y = Abs(t) }''')
>>> [n.op_type for n in onnx_find(model, "t")]
['Neg', 'Abs']
>>> onnx_dtype_name(7)
'INT64'
"""

from __future__ import annotations

import collections
import functools
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper as onh
from onnx import GraphProto, ModelProto, NodeProto, TensorProto

__all__ = [
    "OnnxLoadError",
    "from_array_extended",
    "get_onnx_signature",
    "load_onnx",
    "onnx_dtype_name",
    "describe_value_info",
    "onnx_find",
    "onnx_lighten",
    "onnx_partition",
    "onnx_stats",
    "onnx_unlighten",
    "optimize_onnx",
    "pretty_onnx",
    "to_dot",
    "type_info",
]

#: Initializers with more elements than this are removed by :func:`onnx_lighten`.
LIGHTEN_THRESHOLD = 2**12


class OnnxLoadError(ValueError):
    """Raised by :func:`load_onnx` when a file is missing or is not an ONNX model."""


def load_onnx(filename: str | os.PathLike, load_external_data: bool = True) -> ModelProto:
    """
    Loads an ONNX model, raises :class:`OnnxLoadError` with a readable message when the
    file does not exist or is not an ONNX model (a text file, a truncated file...)
    instead of protobuf's ``Wire format was corrupt``.

    >>> load_onnx("does_not_exist.onnx")
    Traceback (most recent call last):
        ...
    onnx_diagnostic.helpers.onnx_helper.OnnxLoadError: file 'does_not_exist.onnx' does not exist
    """
    filename = os.fspath(filename)
    if not os.path.exists(filename):
        raise OnnxLoadError(f"file {filename!r} does not exist")
    if os.path.isdir(filename):
        raise OnnxLoadError(f"{filename!r} is a folder, not an ONNX file")
    try:
        model = onnx.load(filename, load_external_data=load_external_data)
    except Exception as e:
        raise OnnxLoadError(
            f"{filename!r} is not an ONNX model (protobuf cannot parse it: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not model.graph.node and not model.graph.input and not model.graph.output:
        # protobuf parses many small files as an empty message
        raise OnnxLoadError(f"{filename!r} is not an ONNX model (no graph found)")
    return model


@functools.cache
def onnx_dtype_name(itype: int, exc: bool = True) -> str:
    """
    Returns the name of an ONNX element type, as :class:`onnx.TensorProto` spells it.

    :param itype: element type (``onnx.TensorProto.FLOAT``...)
    :param exc: raises a :class:`ValueError` for an unknown type if True, returns
        ``"UNDEFINED"`` (0) or ``"UNEXPECTED"`` otherwise

    >>> import onnx
    >>> onnx_dtype_name(onnx.TensorProto.BFLOAT16), onnx_dtype_name(7)
    ('BFLOAT16', 'INT64')
    """
    for name, value in TensorProto.DataType.items():
        if value == itype and name != "UNDEFINED":
            return name
    if exc:
        raise ValueError(
            f"onnx_dtype_name: itype={itype!r} is not an ONNX element type, known: "
            f"{sorted(v for v in TensorProto.DataType.values() if v)}"
        )
    return "UNDEFINED" if itype == 0 else "UNEXPECTED"


def type_info(itype: int, att: str) -> int | float:
    """
    Returns a property of an ONNX element type: ``"min"`` or ``"max"`` (the extreme
    finite values), ``"bits"`` (the size of one element in bits).

    >>> import onnx
    >>> type_info(onnx.TensorProto.INT8, "min"), type_info(onnx.TensorProto.FLOAT16, "max")
    (-128, 65504.0)
    >>> type_info(onnx.TensorProto.BFLOAT16, "bits")
    16
    """
    if att not in ("min", "max", "bits"):
        raise ValueError(f"type_info: att must be 'min', 'max' or 'bits', got {att!r}")
    if itype == TensorProto.BOOL:
        return dict(min=0, max=1, bits=8)[att]
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(itype))
    if att == "bits":
        four_bits = {TensorProto.INT4, TensorProto.UINT4, TensorProto.FLOAT4E2M1}
        return 4 if itype in four_bits else dtype.itemsize * 8
    if np.issubdtype(dtype, np.integer):
        info: Any = np.iinfo(dtype)
        return int(getattr(info, att))
    import ml_dtypes

    info = ml_dtypes.finfo(dtype)
    return float(getattr(info, att))


def from_array_extended(array: Any, name: str | None = None) -> TensorProto:
    """
    Converts an array to a :class:`onnx.TensorProto`: a :class:`numpy.ndarray` of any
    dtype (:epkg:`ml_dtypes`' bfloat16 and float8 included) or a :class:`torch.Tensor`
    (bfloat16 and float8 included, moved to CPU if needed).

    >>> import torch
    >>> t = from_array_extended(torch.tensor([1.5, 2.0], dtype=torch.bfloat16), name="w")
    >>> t.name, onnx_dtype_name(t.data_type), list(t.dims)
    ('w', 'BFLOAT16', [2])
    """
    if hasattr(array, "detach") and hasattr(array, "dtype") and type(array).__module__ == "torch":
        array = _torch_to_numpy(array)
    if not isinstance(array, np.ndarray):
        if np.isscalar(array):
            array = np.array(array)
        else:
            raise TypeError(
                f"from_array_extended: array must be a numpy array or a torch tensor, "
                f"got {type(array).__name__}"
            )
    return onh.from_array(array, name=name)


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    import ml_dtypes
    import torch

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    special = {
        torch.bfloat16: (torch.int16, ml_dtypes.bfloat16),
        torch.float8_e4m3fn: (torch.uint8, ml_dtypes.float8_e4m3fn),
        torch.float8_e4m3fnuz: (torch.uint8, ml_dtypes.float8_e4m3fnuz),
        torch.float8_e5m2: (torch.uint8, ml_dtypes.float8_e5m2),
        torch.float8_e5m2fnuz: (torch.uint8, ml_dtypes.float8_e5m2fnuz),
    }
    if t.dtype in special:
        as_int, np_dtype = special[t.dtype]
        return t.contiguous().view(as_int).numpy().view(np_dtype)
    return t.contiguous().numpy()


def _model_of(onx: ModelProto | str | os.PathLike) -> ModelProto:
    if isinstance(onx, (str, os.PathLike)):
        return load_onnx(onx)
    if not isinstance(onx, ModelProto):
        raise TypeError(f"expected an onnx.ModelProto or a file name, got {type(onx).__name__}")
    return onx


def pretty_onnx(onx: ModelProto | GraphProto | NodeProto | onnx.FunctionProto | str) -> str:
    """
    Returns the text form of a model, a graph, a function or a node (ONNX's textual syntax,
    :func:`onnx.printer.to_text`). Initializers of more than 16 elements are not printed:
    a first line per initializer gives its type and shape. A string is the name of a file.

    >>> import onnx.helper as oh
    >>> print(pretty_onnx(oh.make_node("Add", ["x", "y"], ["z"])))
    z = Add (x, y)
    """
    if isinstance(onx, (str, os.PathLike)):
        onx = load_onnx(onx, load_external_data=False)
    header: list[str] = []
    if isinstance(onx, ModelProto):
        m = ModelProto()
        m.CopyFrom(onx)
        header = _strip_graph(m.graph)
        onx = m
    elif isinstance(onx, GraphProto):
        g = GraphProto()
        g.CopyFrom(onx)
        header = _strip_graph(g)
        onx = g
    elif not isinstance(onx, (NodeProto, onnx.FunctionProto)):
        raise TypeError(f"pretty_onnx: cannot print an object of type {type(onx).__name__}")
    text = onnx.printer.to_text(onx).strip("\n")
    if isinstance(onx, NodeProto):
        text = text.strip()
    return "\n".join([*header, text])


def _strip_graph(graph: GraphProto) -> list[str]:
    """Removes the initializers over 16 elements, returns one line describing each."""
    keep, lines = [], []
    for init in graph.initializer:
        if _n_elements(init) > 16 or init.external_data:
            dtype = onnx_dtype_name(init.data_type, exc=False).lower()
            lines.append(f"# initializer {init.name}: {dtype}[{', '.join(map(str, init.dims))}]")
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return lines


def _n_elements(init: TensorProto) -> int:
    return int(np.prod(init.dims)) if init.dims else 1


def _iter_nodes(graph: GraphProto, path: str = "") -> Iterator[tuple[str, NodeProto]]:
    """Every node of a graph and of its subgraphs, with the path of the subgraph."""
    for node in graph.node:
        yield path, node
        for att in node.attribute:
            subs = [att.g] if att.type == onnx.AttributeProto.GRAPH else list(att.graphs)
            for sub in subs:
                yield from _iter_nodes(sub, f"{path}{node.name or node.op_type}/{att.name}/")


def onnx_find(
    onnx_model: ModelProto | str, name_or_names: str | Sequence[str], verbose: int = 0
) -> list[NodeProto]:
    """
    Returns the nodes producing or consuming any of the results ``name_or_names``,
    subgraphs included, in the order of the graph. With ``verbose``, prints one line per
    node telling whether it produces (``>>``) or consumes (``<<``) the result.

    >>> import onnx.parser
    >>> model = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 18]>
    ...     g (float[N] x) => (float[N] y) { t = Neg(x)  y = Abs(t) }''')
    >>> _ = onnx_find(model, "t", verbose=1)
    >> t: Neg(x) -> t
    << t: Abs(t) -> y
    """
    model = _model_of(onnx_model)
    names = {name_or_names} if isinstance(name_or_names, str) else set(name_or_names)
    found = []
    for path, node in _iter_nodes(model.graph):
        produced = names & set(node.output)
        consumed = names & set(node.input)
        if not produced and not consumed:
            continue
        found.append(node)
        if verbose:
            text = f"{node.op_type}({', '.join(node.input)}) -> {', '.join(node.output)}"
            where = f" [{path}{node.name}]" if path or verbose > 1 else ""
            for n in sorted(produced):
                print(f">> {n}: {text}{where}")
            for n in sorted(consumed):
                print(f"<< {n}: {text}{where}")
    return found


def _stat(init: TensorProto) -> dict[str, Any]:
    arr = onh.to_array(init).astype(np.float64)
    return dict(
        mean=float(arr.mean()),
        std=float(arr.std()),
        min=float(arr.min()),
        max=float(arr.max()),
        shape=[int(d) for d in init.dims],
        itype=int(init.data_type),
    )


def onnx_lighten(
    onnx_model: ModelProto | str, verbose: int = 0
) -> tuple[ModelProto, dict[str, dict[str, Any]]]:
    """
    Removes the initializers with more than 4096 elements (:data:`LIGHTEN_THRESHOLD`) and
    returns ``(light model, statistics)``: for each removed initializer its mean, std, min,
    max, shape and element type. The light model keeps the structure, it can be shared
    and put back to a runnable state with random weights by :func:`onnx_unlighten`.
    The given model is not modified. ``python -m onnx_diagnostic lighten`` saves the
    statistics into a side file ``<model>.stats``.

    >>> import numpy as np, onnx.helper as oh
    >>> from onnx import TensorProto
    >>> w = from_array_extended(np.ones((100, 100), dtype=np.float32), name="w")
    >>> model = oh.make_model(oh.make_graph(
    ...     [oh.make_node("MatMul", ["x", "w"], ["y"])], "g",
    ...     [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 100])],
    ...     [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100])], [w]))
    >>> light, stats = onnx_lighten(model)
    >>> len(light.graph.initializer), stats["w"]["shape"], stats["w"]["mean"]
    (0, [100, 100], 1.0)
    """
    model = ModelProto()
    model.CopyFrom(_model_of(onnx_model))
    keep, stats = [], {}
    for init in model.graph.initializer:
        if _n_elements(init) > LIGHTEN_THRESHOLD and init.data_type != TensorProto.STRING:
            stats[init.name] = _stat(init)
            if verbose:
                print(f"[onnx_lighten] removes {init.name!r}: {stats[init.name]}")
        else:
            keep.append(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model, stats


def onnx_unlighten(
    onnx_model: ModelProto | str,
    stats: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    verbose: int = 0,
) -> ModelProto:
    """
    Restores the initializers removed by :func:`onnx_lighten` with random values following
    a normal law of the same mean and standard deviation, clipped to ``[min, max]``
    (the original values are lost: the model runs, it does not compute the same thing).
    When ``stats`` is None, ``onnx_model`` must be a file name and the statistics are read
    from the side file ``<onnx_model>.stats`` (JSON).

    >>> import numpy as np, onnx.helper as oh
    >>> from onnx import TensorProto
    >>> w = from_array_extended(np.full((100, 100), 2, dtype=np.float32), name="w")
    >>> model = oh.make_model(oh.make_graph(
    ...     [oh.make_node("MatMul", ["x", "w"], ["y"])], "g",
    ...     [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 100])],
    ...     [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100])], [w]))
    >>> restored = onnx_unlighten(*onnx_lighten(model))
    >>> onh.to_array(restored.graph.initializer[0]).mean()
    np.float32(2.0)
    """
    if stats is None:
        if not isinstance(onnx_model, (str, os.PathLike)):
            raise TypeError(
                "onnx_unlighten: stats must be given when onnx_model is not a file name"
            )
        side = f"{os.fspath(onnx_model)}.stats"
        if not os.path.exists(side):
            raise FileNotFoundError(
                f"onnx_unlighten: no statistics file {side!r} beside the model "
                f"(python -m onnx_diagnostic lighten writes it)"
            )
        with open(side, encoding="utf-8") as f:
            stats = json.load(f)
    model = ModelProto()
    model.CopyFrom(_model_of(onnx_model))
    present = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    for name, st in stats.items():
        if name in present:
            continue
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(int(st["itype"]))
        values = rng.normal(st["mean"], st["std"], size=tuple(st["shape"]))
        values = np.clip(values, st["min"], st["max"])
        if np.issubdtype(np.dtype(np_dtype), np.integer):
            values = np.round(values)
        model.graph.initializer.append(from_array_extended(values.astype(np_dtype), name=name))
        if verbose:
            print(f"[onnx_unlighten] restores {name!r} with shape {tuple(st['shape'])}")
    return model


def _shape_of(vi: onnx.ValueInfoProto) -> tuple[int | str, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim)


def get_onnx_signature(model: ModelProto | str) -> tuple[tuple[str, int, Any], ...]:
    """
    Returns the signature of the inputs of a model: one ``(name, element type, shape)``
    per input, a dynamic dimension by its name, None for an unknown shape.

    >>> import onnx.parser
    >>> model = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 18]>
    ...     g (float[N, 4] x, int64[2] s) => (float[N, 4] y) { y = Neg(x) }''')
    >>> get_onnx_signature(model)
    (('x', 1, ('N', 4)), ('s', 7, (2,)))
    """
    model = _model_of(model)
    return tuple(
        (i.name, int(i.type.tensor_type.elem_type), _shape_of(i)) for i in model.graph.input
    )


def describe_value_info(vi: onnx.ValueInfoProto) -> str:
    """
    ``int64[batch, 3]``: the element type by name (lower case) and the shape.

    >>> import onnx.helper as oh
    >>> describe_value_info(oh.make_tensor_value_info("x", 7, ["batch", 3]))
    'int64[batch, 3]'
    """
    t = vi.type.tensor_type
    dtype = onnx_dtype_name(t.elem_type, exc=False).lower() if t.elem_type else "?"
    shape = _shape_of(vi)
    return dtype if shape is None else f"{dtype}[{', '.join(map(str, shape))}]"


def onnx_stats(onnx_model: ModelProto | str) -> dict[str, Any]:
    """
    Counts what a model holds: ``n_nodes`` (subgraphs included), ``op_types``
    (``{"domain.op": count}`` sorted by decreasing count), ``n_initializers``,
    ``initializers_size`` (bytes), ``initializers`` (name, dtype, shape, bytes; biggest
    first), ``inputs`` and ``outputs`` (``name: int64[batch, 3]``), ``opsets``.

    >>> import onnx.parser
    >>> model = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 18]>
    ...     g (float[N] x) => (float[N] y) { t = Neg(x)  y = Neg(t) }''')
    >>> st = onnx_stats(model)
    >>> st["n_nodes"], st["op_types"], st["inputs"]
    (2, {'Neg': 2}, ['x: float[N]'])
    """
    model = _model_of(onnx_model)
    counts: collections.Counter = collections.Counter(
        (f"{n.domain}." if n.domain else "") + n.op_type for _, n in _iter_nodes(model.graph)
    )
    inits = []
    for init in model.graph.initializer:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        n_bytes = _n_elements(init) * np.dtype(np_dtype).itemsize
        inits.append(
            dict(
                name=init.name,
                dtype=onnx_dtype_name(init.data_type, exc=False).lower(),
                shape=[int(d) for d in init.dims],
                bytes=int(n_bytes),
            )
        )
    inits.sort(key=lambda r: (-r["bytes"], r["name"]))
    return dict(
        n_nodes=sum(counts.values()),
        op_types=dict(sorted(counts.items(), key=lambda x: (-x[1], x[0]))),
        n_initializers=len(inits),
        initializers_size=sum(r["bytes"] for r in inits),
        initializers=inits,
        inputs=[f"{i.name}: {describe_value_info(i)}" for i in model.graph.input],
        outputs=[f"{o.name}: {describe_value_info(o)}" for o in model.graph.output],
        opsets={o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
    )


def _dot_id(name: str) -> str:
    """Quotes a name or a label for dot, a newline becomes dot's ``\\n``."""
    text = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def to_dot(onnx_model: ModelProto | str) -> str:
    r"""
    Returns the main graph of a model in :epkg:`Graphviz`'s dot language: one box per
    node (its op type, and its name when it has one), inputs and outputs as ellipses,
    initializers as notes with their shape, one edge per result (labelled by its name).
    ``dot -Tpng model.dot -o model.png`` draws it.

    >>> import onnx.parser
    >>> model = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 18]>
    ...     g (float[N] x) => (float[N] y) { y = Neg(x) }''')
    >>> print(to_dot(model))
    digraph {
      rankdir=TB;
      node [fontsize=10];
      "in:x" [label="x\nfloat[N]", shape=ellipse, style=filled, fillcolor="#aaeeaa"];
      "out:y" [label="y\nfloat[N]", shape=ellipse, style=filled, fillcolor="#aaaaee"];
      "node:0" [label="Neg", shape=box];
      "in:x" -> "node:0" [label="x"];
      "node:0" -> "out:y" [label="y"];
    }
    """
    model = _model_of(onnx_model)
    graph = model.graph
    lines = ["digraph {", "  rankdir=TB;", "  node [fontsize=10];"]
    producer: dict[str, str] = {}
    for i in graph.input:
        label = f"{i.name}\n{describe_value_info(i)}"
        lines.append(
            f"  {_dot_id('in:' + i.name)} [label={_dot_id(label)}, shape=ellipse, "
            f'style=filled, fillcolor="#aaeeaa"];'
        )
        producer[i.name] = "in:" + i.name
    for init in graph.initializer:
        if init.name in producer:
            continue
        label = f"{init.name}\n{onnx_dtype_name(init.data_type, exc=False).lower()}"
        label += f"[{', '.join(map(str, init.dims))}]"
        lines.append(f"  {_dot_id('init:' + init.name)} [label={_dot_id(label)}, shape=note];")
        producer[init.name] = "init:" + init.name
    for o in graph.output:
        label = f"{o.name}\n{describe_value_info(o)}"
        lines.append(
            f"  {_dot_id('out:' + o.name)} [label={_dot_id(label)}, shape=ellipse, "
            f'style=filled, fillcolor="#aaaaee"];'
        )
    edges = []
    for k, node in enumerate(graph.node):
        nid = f"node:{k}"
        label = node.op_type if not node.name else f"{node.op_type}\n{node.name}"
        if node.domain:
            label = f"{node.domain}.{label}"
        lines.append(f"  {_dot_id(nid)} [label={_dot_id(label)}, shape=box];")
        for name in node.input:
            if name and name in producer:
                edges.append(
                    f"  {_dot_id(producer[name])} -> {_dot_id(nid)} [label={_dot_id(name)}];"
                )
        for name in node.output:
            if name:
                producer[name] = nid
    for o in graph.output:
        if o.name in producer:
            edges.append(
                f"  {_dot_id(producer[o.name])} -> {_dot_id('out:' + o.name)} "
                f"[label={_dot_id(o.name)}];"
            )
    return "\n".join([*lines, *edges, "}"])


def _subgraph_inputs(node: NodeProto) -> set[str]:
    """Names a node reads from the outer scope through its subgraphs."""
    names: set[str] = set()
    for att in node.attribute:
        subs = [att.g] if att.type == onnx.AttributeProto.GRAPH else list(att.graphs)
        for sub in subs:
            known = {i.name for i in sub.input} | {i.name for i in sub.initializer}
            for n in sub.node:
                names |= {x for x in n.input if x and x not in known}
                names |= _subgraph_inputs(n) - known
                known |= set(n.output)
    return names


def _extract(
    model: ModelProto, inputs: list[str], outputs: list[str], types: dict[str, Any]
) -> ModelProto:
    graph = model.graph
    available = set(inputs)
    producers = {o: n for n in graph.node for o in n.output}
    needed, kept, stack = set(), [], list(outputs)
    inits = {i.name: i for i in graph.initializer}
    while stack:
        name = stack.pop()
        if name in needed or name in available or not name:
            continue
        needed.add(name)
        if name in inits:
            continue
        if name not in producers:
            raise ValueError(f"onnx_partition: result {name!r} is produced by no node")
        node = producers[name]
        if id(node) not in {id(k) for k in kept}:
            kept.append(node)
            stack.extend(node.input)
            stack.extend(_subgraph_inputs(node))
    order = {id(n): i for i, n in enumerate(graph.node)}
    kept.sort(key=lambda n: order[id(n)])
    used = {x for n in kept for x in [*n.input, *_subgraph_inputs(n)]} | set(outputs)
    new_inputs = [types[i] for i in inputs if i in used]
    new_graph = onnx.helper.make_graph(
        kept,
        f"{graph.name}_part",
        new_inputs,
        [types[o] for o in outputs],
        [inits[n] for n in inits if n in used and n not in available],
    )
    res = onnx.helper.make_model(
        new_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version
    )
    res.functions.extend(model.functions)
    return res


def onnx_partition(
    onnx_model: ModelProto | str, names: str | Sequence[str]
) -> tuple[ModelProto, ModelProto]:
    """
    Splits a model at the results ``names``: the first part computes ``names`` from the
    inputs of the model, the second part computes the outputs of the model from ``names``
    (and from the original inputs it still needs). Running one after the other gives the
    outputs of the whole model. Types come from :func:`onnx.shape_inference.infer_shapes`.

    >>> import onnx.parser
    >>> model = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 18]>
    ...     g (float[N] x) => (float[N] y) { t = Neg(x)  y = Abs(t) }''')
    >>> head, tail = onnx_partition(model, ["t"])
    >>> [o.name for o in head.graph.output], [i.name for i in tail.graph.input]
    (['t'], ['t'])
    """
    model = _model_of(onnx_model)
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("onnx_partition: names must hold at least one result name")
    produced = {o for _, n in _iter_nodes(model.graph) for o in n.output}
    top = {o for n in model.graph.node for o in n.output}
    for name in names:
        if name not in top:
            where = "inside a subgraph" if name in produced else "in the model"
            raise ValueError(
                f"onnx_partition: {name!r} is not a result of the main graph ({where}); "
                f"use `python -m onnx_diagnostic find` to look for it"
            )
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    types: dict[str, Any] = {}
    for vi in [*inferred.graph.value_info, *model.graph.input, *model.graph.output]:
        types[vi.name] = vi
    for name in names:
        if name not in types:
            types[name] = onnx.helper.make_empty_tensor_value_info(name)
    graph_inputs = [i.name for i in model.graph.input]
    head = _extract(model, graph_inputs, names, types)
    outputs = [o.name for o in model.graph.output]
    tail = _extract(model, names + [i for i in graph_inputs if i not in names], outputs, types)
    return head, tail


def optimize_onnx(
    onnx_model: ModelProto | str, method: str = "custom"
) -> tuple[ModelProto, dict[str, int]]:
    """
    Optimizes a model and returns ``(optimized model, counts)``: ``method="custom"`` runs
    the passes of the custom exporter
    (:func:`onnx_diagnostic.export.custom.passes.run_passes`: constant folding, identities,
    common subexpressions, duplicated constants, unused nodes; ``counts`` holds the rewrites
    per pass), ``method="onnxscript"`` runs :func:`onnxscript.optimizer.optimize`
    (``counts`` holds the number of nodes before and after). The given model is not modified.

    >>> import onnx.parser
    >>> model = onnx.parser.parse_model('''
    ...     <ir_version: 10, opset_import: ["" : 23]>
    ...     g (float[N] x) => (float[N] y) { unused = Neg(x)  y = Abs(x) }''')
    >>> opt, counts = optimize_onnx(model)
    >>> [n.op_type for n in opt.graph.node], counts["remove_unused"]
    (['Abs'], 1)
    """
    import onnx_ir as ir

    if method not in ("custom", "onnxscript"):
        raise ValueError(f"optimize_onnx: method must be 'custom' or 'onnxscript', got {method!r}")
    model = _model_of(onnx_model)
    before = sum(1 for _ in _iter_nodes(model.graph))
    irm = ir.serde.deserialize_model(model)
    if method == "custom":
        from ..export.custom.passes import run_passes

        counts = run_passes(irm)
    else:
        import onnxscript.optimizer

        onnxscript.optimizer.optimize(irm)
        counts = {}
    res = ir.serde.serialize_model(irm)
    if method == "onnxscript":
        counts = dict(nodes_before=before, nodes_after=sum(1 for _ in _iter_nodes(res.graph)))
    return res, counts
