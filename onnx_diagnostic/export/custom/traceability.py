"""
Traceability of the ONNX nodes: where each node of an exported model comes from.

The custom exporter stores on every node (``metadata_props``) the FX node(s) it was
translated from, the ATen target, the path and class of the ``nn.Module`` which called it
(``model.layers.1.mlp``, ``LlamaMLP``) and the line of source. A fusion keeps the union of
what it fused. :func:`node_origin` reads these keys, and the ones the onnx-dynamo route
(:func:`torch.onnx.export`) writes, into one :class:`NodeOrigin`.

>>> import onnx_ir as ir
>>> a = ir.node("Relu", [ir.Value(name="x")], metadata_props={FX_NODES: "relu"})
>>> b = ir.node("Neg", [a.outputs[0]], metadata_props={FX_NODES: "neg", MODULE: "mlp"})
>>> fused = ir.node("Abs", [ir.Value(name="x")])
>>> merge_metadata(fused, [a, b])
>>> fused.metadata_props[FX_NODES]
'relu,neg'
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FX_NODES",
    "MODULE",
    "MODULE_CLASS",
    "SOURCE",
    "TARGET",
    "NodeOrigin",
    "fx_node_metadata",
    "merge_metadata",
    "module_of",
    "node_origin",
]

#: names of the FX nodes a node comes from, comma separated
FX_NODES = "pkg.onnx_diagnostic.fx_nodes"
#: ATen targets of these FX nodes, comma separated
TARGET = "pkg.onnx_diagnostic.targets"
#: path of the innermost ``nn.Module`` (``model.layers.1.mlp``), ``|`` separated after a fusion
MODULE = "pkg.onnx_diagnostic.module"
#: class name of that module (``LlamaMLP``)
MODULE_CLASS = "pkg.onnx_diagnostic.module_class"
#: ``file:line in function: code``, ``|`` separated after a fusion
SOURCE = "pkg.onnx_diagnostic.source"

#: separator of each key when a fusion merges several nodes
_SEPARATORS = {FX_NODES: ",", TARGET: ",", MODULE: "|", MODULE_CLASS: "|", SOURCE: "|"}

# keys written by torch.onnx.export (dynamo=True)
_DYNAMO_FX = "pkg.torch.onnx.fx_node"
_DYNAMO_SCOPES = "pkg.torch.onnx.name_scopes"
_DYNAMO_CLASSES = "pkg.torch.onnx.class_hierarchy"
_DYNAMO_TRACE = "pkg.torch.onnx.stack_trace"


def _clean_path(path: str) -> str:
    """``L['self'].model.layers[1]`` or ``L__self__.model`` -> ``model.layers.1``."""
    if path.startswith("_empty_nn_module_stack"):
        return ""  # a placeholder torch puts on nodes created outside any module
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"^L__self__\.?", "", path)
    path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path)
    return path.strip(".")


def module_of(node: Any) -> tuple[str, str]:
    """
    The path and the class name of the innermost ``nn.Module`` which produced an FX node
    (``("", "")`` outside any submodule).

    >>> import torch
    >>> class M(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = torch.nn.Linear(2, 2)
    ...     def forward(self, x):
    ...         return self.fc(x)
    >>> ep = torch.export.export(M(), (torch.rand(1, 2),))
    >>> [module_of(n) for n in ep.graph.nodes if n.op == "call_function"]
    [('fc', 'Linear')]
    """
    stack = getattr(node, "meta", {}).get("nn_module_stack") or {}
    for value in reversed(list(stack.values())):
        path, cls = _clean_path(str(value[0])), value[1]
        if path:
            name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
            return path, name
    return "", ""


def fx_node_metadata(node: Any) -> dict[str, str]:
    """
    The metadata the custom exporter stores on the ONNX nodes translated from ``node``.

    >>> import torch
    >>> class M(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x.abs()
    >>> ep = torch.export.export(M(), (torch.rand(2),))
    >>> node = [n for n in ep.graph.nodes if n.op == "call_function"][0]
    >>> fx_node_metadata(node)[FX_NODES]
    'abs_1'
    """
    from .translator import source_line

    path, cls = module_of(node)
    meta = {FX_NODES: node.name, TARGET: str(node.target)}
    if path:
        meta[MODULE] = path
        meta[MODULE_CLASS] = cls
    src = source_line(node)
    if src != "<unknown source>":
        meta[SOURCE] = src
    return meta


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item and item not in seen:
            seen[item] = None
    return list(seen)


def merge_metadata(new_node: Any, replaced: Sequence[Any]) -> None:
    """
    Gives ``new_node`` (a fused node) the union of the traceability metadata of the
    nodes it replaces, in their order, each value once. Other keys of ``new_node`` are kept.

    :param new_node: an :class:`onnx_ir.Node`
    :param replaced: the nodes it replaces
    """
    for key, sep in _SEPARATORS.items():
        values = [new_node.metadata_props.get(key, "")]
        values.extend(n.metadata_props.get(key, "") for n in replaced)
        parts = _unique(p for v in values for p in v.split(sep))
        if parts:
            new_node.metadata_props[key] = sep.join(parts)


@dataclass
class NodeOrigin:
    """
    Where an ONNX node comes from, whatever the exporter.

    :param fx_nodes: names of the FX nodes
    :param targets: ATen targets
    :param modules: module paths (one unless a fusion merged several modules)
    :param module_classes: their classes
    :param sources: source lines
    """

    fx_nodes: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    module_classes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def module(self) -> str:
        """The innermost module, the common prefix when several."""
        if not self.modules:
            return ""
        if len(self.modules) == 1:
            return self.modules[0]
        parts = [m.split(".") for m in self.modules]
        common = []
        for items in zip(*parts):
            if len(set(items)) != 1:
                break
            common.append(items[0])
        return ".".join(common)


def _props(node: Any) -> dict[str, str]:
    props = node.metadata_props
    if isinstance(props, dict):
        return props
    return {p.key: p.value for p in props}  # onnx.NodeProto


def _literal_list(text: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def node_origin(node: Any) -> NodeOrigin:
    """
    Reads the origin of an ONNX node (:class:`onnx.NodeProto` or :class:`onnx_ir.Node`)
    exported by the custom exporter or by :func:`torch.onnx.export`.

    >>> import onnx
    >>> node = onnx.helper.make_node("Relu", ["x"], ["y"])
    >>> node_origin(node).fx_nodes
    []
    """
    props = _props(node)
    if FX_NODES in props:
        split = {key: props.get(key, "").split(sep) for key, sep in _SEPARATORS.items()}
        return NodeOrigin(
            fx_nodes=_unique(split[FX_NODES]),
            targets=_unique(split[TARGET]),
            modules=_unique(split[MODULE]),
            module_classes=_unique(split[MODULE_CLASS]),
            sources=_unique(split[SOURCE]),
        )
    if _DYNAMO_FX in props:
        fx = props[_DYNAMO_FX]
        name = re.match(r"%(\S+)\s*:", fx)
        target = re.search(r"target=torch\.ops\.([\w.]+)", fx)
        scopes = _literal_list(props.get(_DYNAMO_SCOPES, "[]"))
        classes = _literal_list(props.get(_DYNAMO_CLASSES, "[]"))
        # the last scope is the fx node itself, the ones before are modules
        modules = [s for s in scopes[:-1] if s]
        frames = re.findall(
            r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', props.get(_DYNAMO_TRACE, "")
        )
        sources = [f"{f[0]}:{f[1]} in {f[2]}: {f[3].strip()}" for f in frames[-1:]]
        return NodeOrigin(
            fx_nodes=[name.group(1)] if name else [],
            targets=[target.group(1)] if target else [],
            modules=modules[-1:],
            module_classes=[c.rsplit(".", 1)[-1] for c in classes[-2:-1]] if modules else [],
            sources=sources,
        )
    return NodeOrigin()
