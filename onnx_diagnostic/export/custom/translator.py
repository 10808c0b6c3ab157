"""
Translation of a :class:`torch.export.ExportedProgram` into an :class:`onnx_ir.Model`:
one walk over the ATen graph, each node translated by the function :mod:`.aten_ops`
registers for its target. Parameters, buffers and constants become initializers (named
after the state dict), user inputs graph inputs (named after the placeholders, the
symbolic dimensions after torch's symbols, renamed later with :meth:`CustomProgram.rename_axes`).

>>> import torch
>>> from onnx_diagnostic.export.custom.translator import translate_program
>>> class M(torch.nn.Module):
...     def forward(self, x):
...         return torch.relu(x) + 1
>>> ep = torch.export.export(M(), (torch.rand(3, 4),))
>>> program = translate_program(ep)
>>> [n.op_type for n in program.model.graph]
['Relu', 'Add']
"""

from __future__ import annotations

import logging
import operator
import os
import re
from collections.abc import Callable
from typing import Any

import onnx_ir as ir
import torch
from torch.export.graph_signature import InputKind, OutputKind

from .builder import GraphBuilder
from .traceability import fx_node_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_OPSET",
    "CustomProgram",
    "UnsupportedATenOpError",
    "TranslationError",
    "translate_program",
]

#: Opset used when ``target_opset`` is None (Attention and RotaryEmbedding need 23).
DEFAULT_OPSET = 23

_SKIPPED_FRAMES = ("torch/", "torch\\", "onnx_diagnostic/", "onnx_diagnostic\\")


def source_line(node: torch.fx.Node) -> str:
    """
    The line of the user's code (or of transformers) that produced ``node``:
    the last frame of its stack trace which is not torch's nor ours.
    """
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', trace)
    if not frames:
        return "<unknown source>"
    chosen = frames[-1]
    for f in reversed(frames):
        if not any(s in f[0] for s in _SKIPPED_FRAMES):
            chosen = f
            break
    return f"{chosen[0]}:{chosen[1]} in {chosen[2]}: {chosen[3].strip()}"


def _describe_arg(a: Any) -> str:
    if isinstance(a, torch.fx.Node):
        val = a.meta.get("val")
        if isinstance(val, torch.Tensor):
            shape = "x".join(str(d) for d in val.shape)
            return f"{a.name}:{str(val.dtype).replace('torch.', '')}[{shape}]"
        return f"{a.name}:{val!r}" if val is not None else a.name
    if isinstance(a, (list, tuple)):
        return "[" + ", ".join(_describe_arg(x) for x in a) + "]"
    return repr(a)


def node_description(node: torch.fx.Node) -> str:
    """``aten.op(arg shapes...)`` and the source line, used in error messages."""
    args = ", ".join(_describe_arg(a) for a in node.args)
    if node.kwargs:
        args += ", " + ", ".join(f"{k}={_describe_arg(v)}" for k, v in node.kwargs.items())
    return f"{node.target}({args}) at {source_line(node)}"


class TranslationError(RuntimeError):
    """
    Raised when the translation of one node fails; names the ATen op, the arguments with
    their shapes and the line of source which produced it.
    """

    def __init__(self, node: torch.fx.Node, reason: str):
        self.node_name = node.name
        self.target = str(node.target)
        self.source = source_line(node)
        super().__init__(f"{reason}: node {node.name!r}, {node_description(node)}")


class UnsupportedATenOpError(TranslationError, NotImplementedError):
    """Raised when no translation is registered for an ATen op."""

    def __init__(self, node: torch.fx.Node):
        super().__init__(
            node,
            f"the custom exporter has no translation for {node.target} "
            "(export with exporter='onnx-dynamo' meanwhile)",
        )


def _opname(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return getattr(target, "__name__", str(target))


#: higher-order operators whose subgraph is inlined
_INLINED_HOPS = ("wrap_with_set_grad_enabled", "wrap_with_autocast")


def _translation(target: Any) -> Callable | None:
    """
    The translation registered for an fx target (an overload falls back on its packet,
    then on its name: the operators of other libraries, such as
    ``transformers.grouped_mm_fallback.default``, exist only once the library registered them).
    """
    from .aten_ops import TRANSLATIONS

    fct = TRANSLATIONS.get(target)
    if fct is None and isinstance(target, torch._ops.OpOverload):
        fct = TRANSLATIONS.get(target.overloadpacket)
        if fct is None:
            fct = TRANSLATIONS.get(str(target)) or TRANSLATIONS.get(str(target.overloadpacket))
    return fct


class _Translator:
    def __init__(self, ep: torch.export.ExportedProgram, opset: int, verbose: int):
        self.ep = ep
        self.g = GraphBuilder(opset)
        self.verbose = verbose

    # values of the arguments

    def arg(self, env: dict, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            if a not in env:  # pragma: no cover - fx graphs are topologically sorted
                raise KeyError(f"node {a.name!r} used before being computed")
            return env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(env, x) for x in a) if not hasattr(a, "_fields") else a
        if isinstance(a, dict):
            return {k: self.arg(env, v) for k, v in a.items()}
        return a

    # placeholders

    def _state_tensor(self, spec: Any) -> torch.Tensor:
        target = spec.target
        if target in self.ep.state_dict:
            return self.ep.state_dict[target]
        if target in self.ep.constants:
            return self.ep.constants[target]
        raise KeyError(f"no tensor for {spec.kind.name.lower()} {target!r}")

    def placeholders(self, env: dict) -> None:
        g = self.g
        nodes = [n for n in self.ep.graph.nodes if n.op == "placeholder"]
        specs = self.ep.graph_signature.input_specs
        if len(nodes) != len(specs):  # pragma: no cover - torch invariant
            raise RuntimeError("placeholders and input specs disagree")
        for node, spec in zip(nodes, specs):
            val = node.meta.get("val")
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                tensor = self._state_tensor(spec)
                if not isinstance(tensor, torch.Tensor):
                    raise TranslationError(
                        node, f"{spec.kind.name.lower()} {spec.target!r} is not a tensor"
                    )
                env[node] = g.add_initializer(spec.target, tensor)
            elif spec.kind == InputKind.USER_INPUT:
                if isinstance(val, torch.Tensor):
                    env[node] = g.add_input(node.name, val.dtype, val.shape)
                else:
                    # an int, a float, None... torch.export specialized it
                    env[node] = val
            elif spec.kind == InputKind.TOKEN:  # pragma: no cover - effects tokens
                env[node] = None
            else:
                raise TranslationError(node, f"input kind {spec.kind.name} is not supported")

    # nodes

    def run_graph(self, gm: torch.fx.GraphModule, env: dict) -> list[Any]:
        outputs: list[Any] = []
        for node in gm.graph.nodes:
            if node.op in ("placeholder",):
                continue
            if node.op == "get_attr":
                obj = getattr(gm, node.target)
                if isinstance(obj, torch.Tensor):
                    env[node] = self.g.add_initializer(node.target, obj)
                else:
                    env[node] = obj
                continue
            if node.op == "output":
                outputs = list(self.arg(env, node.args[0]))
                continue
            if node.op != "call_function":
                raise TranslationError(node, f"unexpected fx node kind {node.op!r}")
            env[node] = self.call(node, env)
        return outputs

    def call(self, node: torch.fx.Node, env: dict) -> Any:
        target = node.target
        if target is operator.getitem:
            container, index = self.arg(env, node.args[0]), node.args[1]
            return container[index]
        if isinstance(target, torch._ops.HigherOrderOperator):
            return self.higher_order(node, env)
        fct = _translation(target)
        if fct is None:
            if not node.users and not isinstance(target, torch._ops.OpOverload):
                # a Python call torch.export kept for its side effect on the tracer
                # (transformers 4.57 leaves torch._functorch's lazy_load_decompositions())
                logger.debug("ignores the call to %s, its result is unused", _opname(target))
                return None
            raise UnsupportedATenOpError(node)
        self.g.start_node(node.name, fx_node_metadata(node))
        args = self.arg(env, node.args)
        kwargs = self.arg(env, node.kwargs)
        try:
            res = fct(self.g, node, *args, **kwargs)
        except TranslationError:
            raise
        except Exception as e:
            raise TranslationError(node, f"translation of {_opname(target)} failed ({e})") from e
        val = node.meta.get("val")
        if isinstance(res, ir.Value) and val is not None:
            if not res.is_graph_input() and res.const_value is None:
                self.g.set_type(res, val)
        elif isinstance(res, tuple) and isinstance(val, (tuple, list)):
            for r, v in zip(res, val):
                if isinstance(r, ir.Value) and not r.is_graph_input() and r.const_value is None:
                    self.g.set_type(r, v)
        if isinstance(res, ir.Value):
            self._name_result(node, res)
        # in-place ops: later users of the mutated input read the new value
        if _is_inplace(node):
            first = node.args[0]
            if isinstance(first, torch.fx.Node) and isinstance(res, ir.Value):
                env[first] = res
        return res

    def _drop_duplicated_mutations(
        self, outputs: list[Any], out_nodes: list[Any]
    ) -> tuple[list[Any], list[Any]]:
        """
        An input the model modifies in place (the buffers of a StaticCache in transformers
        < 5) becomes an extra output of the exported program; when the model also returns
        the modified tensor, the extra output is the same value twice and is dropped, the
        model's own outputs keep their names (``present.0.key``).
        """
        specs = self.ep.graph_signature.output_specs
        if len(specs) != len(outputs):
            return outputs, out_nodes
        mutation = (OutputKind.USER_INPUT_MUTATION, OutputKind.BUFFER_MUTATION)
        user = {
            id(o) for o, spec in zip(outputs, specs) if spec.kind == OutputKind.USER_OUTPUT
        }
        keep = [
            i
            for i, (o, spec) in enumerate(zip(outputs, specs))
            if not (spec.kind in mutation and id(o) in user)
        ]
        return [outputs[i] for i in keep], [out_nodes[i] for i in keep]

    def _name_result(self, node: torch.fx.Node, res: ir.Value) -> None:
        """
        The value an fx node produces takes the node's name (the first value created by
        its translation got it), so that intermediate results of torch and onnxruntime can
        be aligned by name (:mod:`onnx_diagnostic.investigate.compare`).
        """
        if res.name == node.name or res.producer() is None or res.const_value is not None:
            return
        if not any(v is res for v in self.g.created):
            return  # a value translated earlier (a view returning its input)
        holder = next((v for v in self.g.created if v.name == node.name), None)
        if holder is None:
            return  # the name was taken before this node (an input, an initializer)
        holder.name = self.g.unique_name(f"{node.name}.t", sep=".")
        res.name = node.name

    def higher_order(self, node: torch.fx.Node, env: dict) -> Any:
        name = getattr(node.target, "_name", str(node.target))
        if name == "wrap_with_set_grad_enabled":
            sub, args = node.args[1], node.args[2:]
        elif name == "wrap_with_autocast":
            sub, args = node.args[4], node.args[5:]
        else:
            raise UnsupportedATenOpError(node)
        gm = getattr(self.ep.graph_module, sub.target) if isinstance(sub, torch.fx.Node) else sub
        return tuple(self.inline(gm, [self.arg(env, a) for a in args]))

    def inline(self, gm: torch.fx.GraphModule, args: list[Any]) -> list[Any]:
        env: dict = {}
        phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
        for ph, a in zip(phs, args):
            env[ph] = a
        return self.run_graph(gm, env)

    def translate(self) -> ir.Model:
        env: dict = {}
        self.placeholders(env)
        outputs = self.run_graph(self.ep.graph_module, env)
        g = self.g
        g.start_node("output")
        out_nodes = list(self.ep.graph.output_node().args[0])
        outputs, out_nodes = self._drop_duplicated_mutations(outputs, out_nodes)
        for o, onode in zip(outputs, out_nodes):
            if not isinstance(o, ir.Value):
                # a constant output (an int, a None...), ONNX outputs are tensors
                if o is None:
                    continue
                o = g.const(o, torch.int64 if isinstance(o, int) else torch.float32)
            if isinstance(onode, torch.fx.Node) and o.name != onode.name and o.producer():
                if onode.name not in g._names:
                    g._names.add(onode.name)
                    o.name = onode.name
            g.graph.outputs.append(o)
        # a weight tied to another use keeps one copy, its transposed copy becomes a node
        g.untie_transposed()
        # weights replaced by a transposed copy (linear) are no longer used
        outs = {id(v) for v in g.graph.outputs}
        for name, v in list(g.graph.initializers.items()):
            if not v.uses() and id(v) not in outs:
                del g.graph.initializers[name]
        return ir.Model(g.graph, ir_version=10, producer_name="onnx_diagnostic")


_VIEW_OPS = {
    "slice",
    "select",
    "view",
    "reshape",
    "_unsafe_view",
    "transpose",
    "permute",
    "unsqueeze",
    "squeeze",
    "expand",
    "t",
    "narrow",
    "diagonal",
    "as_strided",
    "alias",
    "split",
    "chunk",
    "unbind",
    "unfold",
    "view_as",
    "expand_as",
    "detach",
}


def _is_inplace(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and schema.arguments and schema.arguments[0].is_write)


def _is_view(node: Any) -> bool:
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    packet = getattr(node.target, "overloadpacket", None)
    return packet is not None and packet.__name__ in _VIEW_OPS


def needs_functionalization(gm: torch.fx.GraphModule) -> bool:
    """
    Tells if an in-place operator writes into a view or into a tensor another view
    shares: rebinding the mutated value (what the translator does) would then be wrong,
    the graph must be functionalized first.
    """
    for node in gm.graph.nodes:
        if node.op != "call_function" or not _is_inplace(node) or not node.args:
            continue
        target = node.args[0]
        if not isinstance(target, torch.fx.Node):
            continue
        if _is_view(target) or any(_is_view(u) for u in target.users if u is not node):
            return True
    return False


def _translatable(node: torch.fx.Node) -> bool:
    target = node.target
    if target is operator.getitem or _translation(target) is not None:
        return True
    if isinstance(target, torch._ops.HigherOrderOperator):
        return getattr(target, "_name", "") in _INLINED_HOPS
    # a Python call whose result is unused is skipped
    return not node.users and not isinstance(target, torch._ops.OpOverload)


def _retrace_reason(ep: torch.export.ExportedProgram) -> str:
    """
    Tells why the graph must be retraced before its translation (an empty string if it
    must not): writes into views, or calls the translator does not know which the
    retracing removes (functorch's vmap in transformers 4.57 masks...).
    """
    for gm in ep.graph_module.modules():
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        if needs_functionalization(gm):
            return "in-place writes into views"
        for node in gm.graph.nodes:
            if node.op == "call_function" and not _translatable(node):
                return f"{_opname(node.target)} has no translation"
    return ""


def rename_dimensions(model: ir.Model, mapping: dict[str, str]) -> int:
    """
    Renames the symbolic dimensions of every value (``s35`` -> ``batch``, also inside
    expressions such as ``s35 + s42``). Returns the number of dimensions renamed.
    """
    if not mapping:
        return 0
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in mapping) + r")\b")
    count = 0

    def fix(v: ir.Value) -> None:
        nonlocal count
        if v.shape is None:
            return
        dims = []
        changed = False
        for d in v.shape:
            if isinstance(d, ir.SymbolicDim) and d.value is not None:
                new = pattern.sub(lambda m: mapping[m.group(1)], d.value)
                if new != d.value:
                    changed = True
                    count += 1
                dims.append(new)
            else:
                dims.append(d)
        if changed:
            v.shape = ir.Shape(dims)

    for v in model.graph.inputs:
        fix(v)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for v in node.outputs:
            fix(v)
    return count


class CustomProgram:
    """
    What the ``custom`` translation returns: the interface :func:`to_onnx` expects
    from an exporter (the same as :class:`torch.onnx.ONNXProgram` for the parts it uses).

    :param model: the ONNX model
    :param verbose: verbosity of :meth:`optimize`
    """

    def __init__(self, model: ir.Model, verbose: int = 0):
        self.model = model
        self.verbose = verbose
        #: number of rewrites of each pass, filled by :meth:`optimize`
        self.pass_counts: dict[str, int] = {}

    def rename_axes(self, mapping: dict[str, str]) -> None:
        """Renames symbolic dimensions (``{"s35": "batch"}``)."""
        rename_dimensions(self.model, mapping)

    def optimize(self) -> None:
        """Runs the clean-up and fusion passes."""
        from .fusions import FUSIONS
        from .passes import deduplicate_constants, fold_constants, remove_identities, remove_unused
        from .passes import eliminate_common_subexpressions, merge_unsqueeze, run_passes

        cse = eliminate_common_subexpressions
        passes = [fold_constants, remove_identities, merge_unsqueeze, cse, *FUSIONS]
        passes += [deduplicate_constants, cse, remove_unused]
        self.pass_counts = run_passes(self.model, passes, verbose=self.verbose)

    def apply_genai_fusions(self, llm: torch.nn.Module) -> None:
        """Rewrites the graph as onnxruntime-genai's builder writes it
        (:func:`onnx_diagnostic.export.custom.fusions_genai.apply_genai_fusions`), the
        counts added to :attr:`pass_counts`."""
        from .fusions_genai import _genai_fusions

        self.pass_counts.update(_genai_fusions(self.model, llm))

    def save(self, filename: str | os.PathLike, external_data: bool | None = None) -> None:
        """
        Saves the model, the weights in ``<filename>.data`` if ``external_data`` is True
        or, when it is None, if they exceed what a protobuf holds.
        """
        if external_data is None:
            total = sum(
                v.const_value.nbytes
                for v in self.model.graph.initializers.values()
                if v.const_value is not None
            )
            external_data = total > 2**31 - 2**26
        if external_data:
            ir.save(self.model, filename, external_data=os.path.basename(filename) + ".data")
        else:
            ir.save(self.model, filename)

    @property
    def model_proto(self) -> Any:
        """The model as an :class:`onnx.ModelProto`."""
        return ir.serde.serialize_model(self.model)


def translate_program(
    ep: torch.export.ExportedProgram, target_opset: int | None = None, verbose: int = 0
) -> CustomProgram:
    """
    Translates an exported program into ONNX, without optimization
    (:meth:`CustomProgram.optimize` runs the passes).

    :param ep: the exported program (from :func:`torch.export.export`)
    :param target_opset: opset of the default domain (>= 18), :data:`DEFAULT_OPSET` if None
    :param verbose: verbosity
    :return: a :class:`CustomProgram`

    >>> import torch
    >>> class M(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x.t() @ x
    >>> ep = torch.export.export(M(), (torch.rand(3, 4),))
    >>> translate_program(ep).model.graph.outputs[0].shape
    Shape([4, 4])
    """
    if not isinstance(ep, torch.export.ExportedProgram):
        raise TypeError(
            f"translate_program: ep must be a torch.export.ExportedProgram, not {type(ep).__name__}"
        )
    opset = DEFAULT_OPSET if target_opset is None else target_opset
    if not isinstance(opset, int) or opset < 18:
        raise ValueError(f"translate_program: target_opset must be >= 18, got {target_opset!r}")
    reason = _retrace_reason(ep)
    if reason:
        # torch retraces the graph with an empty decomposition table: the operators stay
        # (linear, scaled_dot_product_attention...), mutations become slice_scatter...,
        # vmap disappears; it costs a second trace.
        if verbose:
            print(f"[translate_program] {reason}, retraces the graph (run_decompositions)")
        logger.info("translate_program: %s, retraces the graph", reason)
        ep = ep.run_decompositions({})
    model = _Translator(ep, opset, verbose).translate()
    if verbose:
        print(f"[translate_program] {len(model.graph)} nodes, opset {opset}")
    return CustomProgram(model, verbose=verbose)
