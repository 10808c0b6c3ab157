"""
:func:`to_onnx`: exports a :class:`torch.nn.Module` to ONNX in named steps
(``torch.export``, ``translation``, ``optimization``, ``save``), with the input and output
names a generation loop expects: ``input_ids``, ``attention_mask``,
``past_key_values.N.key`` / ``past_key_values.N.value`` as inputs,
``logits``, ``present.N.key`` / ``present.N.value`` as outputs.

The exporters are dispatched through the table :data:`EXPORTERS`.

>>> import torch
>>> from onnx_diagnostic.export.api import to_onnx
>>> class Neuron(torch.nn.Module):
...     def forward(self, x):
...         return torch.relu(x) * 2
>>> onx = to_onnx(Neuron(), (torch.rand(3, 4),), dynamic_shapes=({0: "batch"},))
>>> [i.name for i in onx.graph.input], [o.name for o in onx.graph.output]
(['x'], ['output_0'])
>>> onx.graph.input[0].type.tensor_type.shape.dim[0].dim_param
'batch'
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..helpers import compat
from ..helpers.helper import check_output_file
from .io_names import (
    _axes_mapping,
    _relax_capped_cache_outputs,
    _dedup,
    _input_leaf_names,
    _default_input_names,
    _default_output_names,
    _rename_io,
    _to_export_dims,
    align_cache_argument,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORTERS",
    "ExportStepError",
    "Exporter",
    "align_cache_argument",
    "onnx_feeds",
    "quiet_third_party_noise",
    "to_onnx",
]

#: Names of the steps reported by :class:`ExportStepError`.
STEPS = ("torch.export", "translation", "optimization", "save")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error_cause(text: str) -> str:
    """
    One line telling what went wrong: the first line of the error, followed by the first
    line of the section ``## Exception summary`` torch.onnx adds to its messages.
    """
    lines = [li.strip() for li in text.splitlines() if li.strip()]
    if not lines:
        return ""
    cause = lines[0]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1 :]
        if after:
            cause += f" ({after[0]})"
    return cause


class ExportStepError(RuntimeError):
    """
    Raised by :func:`to_onnx` when one step fails. ``step`` is one of
    ``"torch.export"``, ``"translation"``, ``"optimization"``, ``"save"``, ``hint`` tells
    what usually fixes it, the original exception is chained (``__cause__``).
    The message starts with one line naming the step and the cause, then the hint,
    then the original message.
    """

    def __init__(self, step: str, exporter: str, exc: BaseException, hint: str):
        self.step = step
        self.exporter = exporter
        self.hint = hint
        text = _ANSI.sub("", str(exc)).strip()
        if len(text) > 3000:
            text = text[:3000] + " ..."
        super().__init__(
            f"to_onnx(exporter={exporter!r}) failed at step {step!r}: "
            f"{type(exc).__name__}: {_error_cause(text)}\nHint: {hint}\n"
            f"{type(exc).__name__}: {text}"
        )


@dataclass(frozen=True)
class Exporter:
    """
    One entry of :data:`EXPORTERS`.

    :param name: the value of ``exporter`` selecting it
    :param translate: ``translate(exported_program, target_opset, verbose)`` returns a
        :class:`torch.onnx.ONNXProgram` (``.model`` is an :class:`onnx_ir.Model`)
    :param description: one line shown in error messages and in the documentation
    """

    name: str
    translate: Callable[[torch.export.ExportedProgram, int | None, int], Any]
    description: str


def _translate_onnx_dynamo(
    ep: torch.export.ExportedProgram, target_opset: int | None, verbose: int
) -> Any:
    return torch.onnx.export(
        ep,
        (),
        dynamo=True,
        optimize=False,
        opset_version=target_opset,
        verbose=verbose >= 2,
    )


def _translate_custom(
    ep: torch.export.ExportedProgram, target_opset: int | None, verbose: int
) -> Any:
    from .custom.translator import translate_program

    return translate_program(ep, target_opset=target_opset, verbose=verbose)


#: Available exporters, ``exporter=`` picks one of them.
EXPORTERS: dict[str, Exporter] = {
    "onnx-dynamo": Exporter(
        "onnx-dynamo",
        _translate_onnx_dynamo,
        "torch.export.export(strict=False) then torch.onnx.export(dynamo=True)",
    ),
    "custom": Exporter(
        "custom",
        _translate_custom,
        "torch.export.export(strict=False) then onnx_diagnostic's own ATen-to-ONNX "
        "translation and passes (opset 23, fused ops for onnxruntime)",
    ),
}

_HINTS = {
    "torch.export": "torch.export.export could not trace the model.",
    "genai fusions": (
        "genai_style=True could not rewrite the graph as onnxruntime-genai's builder "
        "writes it: the error names the module and what GroupQueryAttention does not "
        "compute; export without genai_style."
    ),
    "translation": (
        "torch.onnx could not translate the ExportedProgram into ONNX: an operator has no "
        "translation or its translation failed; the operator is named in the error above."
    ),
    "optimization": (
        "the ONNX optimizer failed; call to_onnx(..., optimize=False) to get the "
        "unoptimized model and investigate."
    ),
    "save": (
        "the model could not be written: check that the folder of `filename` exists and is "
        "writable and that the disk has room; weights of models over 2GB go into an "
        "external data file beside `filename` (external_data=True forces it)."
    ),
}


def _unknown_dynamic_shapes_names(model: Any, dynamic_shapes: Any) -> str | None:
    """
    Tells which top-level names of ``dynamic_shapes`` (a dict) ``model.forward`` does not
    declare, and which ones it declares, None if every name is known.
    """
    if not isinstance(dynamic_shapes, dict):
        return None
    params = compat.forward_parameters(model)
    if params is None:
        return None
    var_kw = [p.name for p in params.values() if p.kind == p.VAR_KEYWORD]
    named = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    unknown = [k for k in dynamic_shapes if k not in params]
    if not unknown:
        return None
    text = (
        f"dynamic_shapes names {unknown}, which forward does not declare (it declares "
        f"{named}{f' and **{var_kw[0]}' if var_kw else ''})."
    )
    if var_kw:
        text += (
            f" The dynamic shapes of arguments caught by **{var_kw[0]} go under "
            f"dynamic_shapes[{var_kw[0]!r}]."
        )
    return text


def _patches_hint() -> str:
    from ..torch_export_patches import active_patches

    active = active_patches()
    if active is None:
        return (
            " A transformers model with a cache usually needs the export to run inside "
            "`with torch_export_patches(patch_transformers=True):` "
            "(onnx_diagnostic.torch_export_patches); it did not."
        )
    if not active["patch_transformers"]:
        return (
            " It ran inside torch_export_patches(patch_transformers=False): "
            "patch_transformers=True applies the patches of transformers."
        )
    return (
        " It ran inside torch_export_patches(patch_transformers=True), whose patches did "
        "not cover this failure: the error above names the line of the model that failed "
        "(list_patches() shows which patches apply to the installed versions)."
    )


def _hint(
    step: str,
    exc: BaseException,
    exporter: str = "onnx-dynamo",
    model: Any = None,
    dynamic_shapes: Any = None,
) -> str:
    hint = _HINTS[step]
    if step == "translation" and exporter == "custom":
        hint = (
            "the custom exporter could not translate the ExportedProgram: the ATen operator, "
            "its source line and its input shapes are named above; exporter='onnx-dynamo' "
            "may translate it."
        )
    text = str(exc)
    if step == "torch.export":
        unknown = _unknown_dynamic_shapes_names(model, dynamic_shapes)
        if unknown:
            hint += " " + unknown
        elif "top-level keys must be the arg names" not in text:
            hint += _patches_hint()
        if any(
            s in text
            for s in ("Constraints violated", "specialized", "guard", "Dim.DYNAMIC", "Dim(")
        ):
            hint += (
                " A dimension declared dynamic was specialized: give example inputs whose "
                "dynamic dimensions are >= 2 and differ from each other, or use "
                "torch.export.Dim.DYNAMIC (use_dyn_not_str turns string names into it)."
            )
        if "pytree" in text or "Unsupported" in text:
            hint += (
                " An input type is not registered with torch.utils._pytree: import "
                "onnx_diagnostic.cache_helpers (caches) or use torch_export_patches."
            )
    return hint


def _check_arguments(
    model: Any,
    args: Any,
    kwargs: Any,
    exporter: str,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"to_onnx: model must be a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"to_onnx: args must be a tuple of positional arguments, not {type(args).__name__}"
        )
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(
            f"to_onnx: kwargs must be a dict of keyword arguments or None, "
            f"not {type(kwargs).__name__}"
        )
    if exporter not in EXPORTERS:
        raise ValueError(
            f"to_onnx: exporter={exporter!r} is unknown, available: "
            + ", ".join(f"{k!r} ({v.description})" for k, v in EXPORTERS.items())
        )
    for argname, names in (("input_names", input_names), ("output_names", output_names)):
        if names is None:
            continue
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"to_onnx: {argname} must be a list of strings, got {names!r}")
        dup = sorted({n for n in names if list(names).count(n) > 1})
        if dup:
            raise ValueError(f"to_onnx: {argname} has duplicated names {dup}")


@contextlib.contextmanager
def quiet_third_party_noise() -> Iterator[None]:
    """
    Hides, while the block runs, the messages other libraries print on every export and
    which say nothing about the model: torch.onnx's ``torchvision is not installed.
    Skipping torchvision::nms`` (logging) and torch's ``FutureWarning:
    isinstance(treespec, LeafSpec) is deprecated``. Every other warning and log record
    goes through, and the filters are restored when the block ends.

    >>> import warnings
    >>> with quiet_third_party_noise():
    ...     warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
    """
    import warnings

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.getMessage().startswith("torchvision is not installed")

    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    flt = _Filter()
    registration.addFilter(flt)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
            )
            yield
    finally:
        registration.removeFilter(flt)


def _signature_order(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[list, dict]:
    """
    Returns the names of the positional arguments and the kwargs sorted in the order of
    the forward signature (unknown names keep their order at the end).
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - builtin forward
        params = []
    positional = [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]
    arg_names = []
    for i in range(len(args)):
        arg_names.append(positional[i] if i < len(positional) else f"args_{i}")
    order = {p.name: i for i, p in enumerate(params)}
    names = sorted(kwargs, key=lambda k: (order.get(k, len(order)), list(kwargs).index(k)))
    return arg_names, {k: kwargs[k] for k in names}


def _reorder_dynamic_shapes(dynamic_shapes: Any, kwargs: dict, arg_names: list[str]) -> Any:
    """Orders a dict of dynamic shapes like the arguments (positional names first)."""
    if not isinstance(dynamic_shapes, dict):
        return dynamic_shapes
    keys = [*arg_names, *kwargs]
    if not set(dynamic_shapes) <= set(keys):
        return dynamic_shapes
    return {k: dynamic_shapes[k] for k in keys if k in dynamic_shapes}


def onnx_feeds(
    model: torch.nn.Module, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """
    Returns the tensors of ``(args, kwargs)`` named and ordered as the inputs of the
    model :func:`to_onnx` exports with these arguments (kwargs follow the forward signature,
    caches are flattened into ``past_key_values.N.key``... values which are not tensors,
    None or integers, are left out as the export turns them into constants).

    :param model: the model, its forward signature orders the kwargs
    :param args: positional arguments
    :param kwargs: keyword arguments
    :return: ordered dictionary ``{onnx input name: tensor}``

    >>> import torch
    >>> from onnx_diagnostic.cache_helpers import make_dynamic_cache
    >>> class M(torch.nn.Module):
    ...     def forward(self, input_ids, past_key_values=None):
    ...         return input_ids
    >>> cache = make_dynamic_cache([(torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
    >>> list(onnx_feeds(M(), kwargs=dict(past_key_values=cache, input_ids=torch.ones(1, 2))))
    ['input_ids', 'past_key_values.0.key', 'past_key_values.0.value']
    """
    kwargs = {} if kwargs is None else kwargs
    _check_arguments(model, args, kwargs, "onnx-dynamo", None, None)
    kwargs, _ = align_cache_argument(model, kwargs)
    args = tuple(args)
    arg_names, kwargs = _signature_order(model, args, kwargs)
    named: list[tuple[str, Any]] = []
    for name, value in [*zip(arg_names, args), *kwargs.items()]:
        named.extend(_input_leaf_names(value, name))
    names = _dedup([n for n, _ in named])
    return {n: t for n, (_, t) in zip(names, named) if isinstance(t, torch.Tensor)}


class _Steps:
    """Runs the steps, times them, prints them if verbose, wraps their failures."""

    def __init__(self, exporter: str, verbose: int, model: Any = None, dynamic_shapes: Any = None):
        self.exporter = exporter
        self.verbose = verbose
        self.model = model
        self.dynamic_shapes = dynamic_shapes
        self.durations: dict[str, float] = {}

    def run(self, step: str, fct: Callable[[], Any]) -> Any:
        if self.verbose:
            print(f"[to_onnx] {step}...")
        logger.debug("to_onnx: starts step %r", step)
        begin = time.perf_counter()
        try:
            res = fct()
        except Exception as e:
            if self.verbose:
                print(f"[to_onnx] {step} failed: {type(e).__name__}")
            hint = _hint(step, e, self.exporter, self.model, self.dynamic_shapes)
            raise ExportStepError(step, self.exporter, e, hint) from e
        self.durations[step] = time.perf_counter() - begin
        if self.verbose:
            print(f"[to_onnx] {step} done in {self.durations[step]:.3g}s")
        return res


def to_onnx(
    model: torch.nn.Module,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    dynamic_shapes: Any = None,
    filename: str | os.PathLike | None = None,
    verbose: int = 0,
    exporter: str = "onnx-dynamo",
    optimize: bool = True,
    output_names: Sequence[str] | None = None,
    target_opset: int | None = None,
    input_names: Sequence[str] | None = None,
    external_data: bool | None = None,
    genai_config: bool = False,
    genai_style: bool = False,
) -> onnx.ModelProto:
    """
    Exports a model to ONNX.

    Steps: ``torch.export`` (:func:`torch.export.export` with ``strict=False``),
    ``translation`` (the exporter picked in :data:`EXPORTERS`), renaming,
    ``optimization`` (if ``optimize``), ``save`` (if ``filename``). A failing step raises
    :class:`ExportStepError` naming the step with a hint.

    Inputs are ordered as the forward signature orders them (``kwargs`` are sorted that way)
    and named after the arguments, nested values joined with dots, caches
    ``past_key_values.N.key`` / ``past_key_values.N.value`` (``.N.decoder.key`` /
    ``.N.encoder.key`` for an encoder-decoder cache), the states of a linear attention, mamba
    or convolution layer ``past_key_values.N.conv_state`` /
    ``past_key_values.N.recurrent_state``, the filled length of a static layer
    ``past_key_values.N.cumulative_length``, N being the index of the layer in the model.
    Outputs of a ``ModelOutput`` are named after its fields, its cache ``present.N.key``,
    ``present.N.value``, ``present.N.conv_state``...; a tensor or a
    tuple gives ``output_0``, ``output_1``... Dimensions named in ``dynamic_shapes``
    (strings or ``torch.export.Dim("name")``) keep their names in the ONNX model.

    :param model: the model
    :param args: positional arguments
    :param kwargs: keyword arguments
    :param dynamic_shapes: dynamic shapes as :func:`torch.export.export` takes them, strings
        (``{0: "batch"}``) are accepted and converted to ``Dim.DYNAMIC``
    :param filename: saves the model there if not None
    :param verbose: prints the steps and their durations if > 0
    :param exporter: one of :data:`EXPORTERS` (``"onnx-dynamo"``)
    :param optimize: runs the optimizer of the exporter
    :param output_names: overrides the output names (as many as outputs)
    :param target_opset: ONNX opset, None for the default of the exporter
    :param input_names: overrides the input names (as many as tensor inputs)
    :param external_data: saves the weights in ``<filename>.data``;
        None does it only for models over 2GB
    :param genai_config: also writes ``genai_config.json`` beside ``filename``
        (:func:`onnx_diagnostic.export.genai.write_genai_config`, built from
        ``model.config`` and the names of the graph): onnxruntime-genai then runs
        the folder (``onnxruntime_genai.Model(folder)``); needs ``filename`` and a model
        with a ``config`` (a transformers LLM)
    :param genai_style: with ``exporter="custom"`` and a transformers causal LM, writes the
        graph onnxruntime-genai's builder writes (:func:`apply_genai_fusions
        <onnx_diagnostic.export.custom.fusions_genai.apply_genai_fusions>`):
        ``GroupQueryAttention`` with the rotary inside (tables up to
        ``config.max_position_embeddings``), cache buffers shared by past and present, the
        mask read as sequence lengths (``position_ids`` and ``cache_position`` are no longer
        inputs), fused q/k/v and gate/up projections, ``SkipSimplifiedLayerNormalization``;
        :func:`onnx_generate <onnx_diagnostic.helpers.rt_helper.onnx_generate>` and
        onnxruntime-genai (``genai_config=True``) run it
    :return: the ONNX model

    >>> import torch
    >>> from onnx_diagnostic.helpers.torch_helper import dummy_llm
    >>> model, inputs = dummy_llm()
    >>> onx = to_onnx(model, inputs)
    >>> [o.name for o in onx.graph.output]
    ['output_0']
    """
    kwargs = {} if kwargs is None else kwargs
    _check_arguments(model, args, kwargs, exporter, input_names, output_names)
    if genai_config:
        _check_genai_config(model, filename)
    if genai_style:
        _check_genai_style(model, exporter)
    if filename is not None:
        # writable before a long export starts, not found missing at the end
        check_output_file(filename, "filename", "to_onnx", "nothing was exported")
    kwargs, dynamic_shapes = align_cache_argument(model, kwargs, dynamic_shapes)
    args = tuple(args)
    arg_names, kwargs = _signature_order(model, args, kwargs)
    dynamic_shapes = _reorder_dynamic_shapes(dynamic_shapes, kwargs, arg_names)
    with quiet_third_party_noise():
        proto = _to_onnx(
            model,
            args,
            kwargs,
            dynamic_shapes,
            arg_names,
            filename,
            verbose,
            exporter,
            optimize,
            target_opset,
            input_names,
            output_names,
            external_data,
            model if genai_style else None,
        )
    if genai_config:
        from .genai import write_genai_config

        written = write_genai_config(model.config, filename)
        if verbose:
            print(f"[to_onnx] saved {written!r}")
    return proto


def _check_genai_config(model: torch.nn.Module, filename: Any) -> None:
    """genai_config=True needs a file to write beside and a configuration to read."""
    if filename is None:
        raise ValueError(
            "to_onnx: genai_config=True writes genai_config.json beside the model, "
            "filename must be given"
        )
    if getattr(model, "config", None) is None:
        raise ValueError(
            f"to_onnx: genai_config=True reads model.config, {type(model).__name__} has none "
            "(a transformers LLM is expected)"
        )


def _check_genai_style(model: torch.nn.Module, exporter: str) -> None:
    """genai_style=True rewrites the custom exporter's graph with the model's configuration."""
    if exporter != "custom":
        raise ValueError(
            f"to_onnx: genai_style=True rewrites the graph of the custom exporter, "
            f"exporter={exporter!r} is not supported (use exporter='custom')"
        )
    if getattr(model, "config", None) is None:
        raise ValueError(
            f"to_onnx: genai_style=True reads model.config, {type(model).__name__} has none "
            "(a transformers causal LM is expected)"
        )


def _plain_buffers(ep: torch.export.ExportedProgram) -> None:
    """
    Replaces the buffers registered as :class:`torch.nn.Parameter` (``register_buffer(name,
    nn.Parameter(...))``, the ``b_c_rms`` of falcon_mamba in transformers 4.x) by plain tensors
    in the exported program: ``run_decompositions`` fails on them with
    ``KeyError: "attribute 'b_c_rms' already exists"``. The model is not modified.
    """
    buffers = set(ep.graph_signature.buffers)
    for store in (ep.state_dict, ep.constants):
        for name, value in list(store.items()):
            if name in buffers and isinstance(value, torch.nn.Parameter):
                store[name] = value.detach()


def _to_onnx(
    model: torch.nn.Module,
    args: tuple,
    kwargs: dict,
    dynamic_shapes: Any,
    arg_names: list,
    filename: Any,
    verbose: int,
    exporter: str,
    optimize: bool,
    target_opset: int | None,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    external_data: bool | None,
    genai_llm: torch.nn.Module | None = None,
) -> Any:
    """The steps of :func:`to_onnx` once its arguments are checked; ``genai_llm``: the
    model whose graph is rewritten as onnxruntime-genai's builder writes it."""
    steps = _Steps(exporter, verbose, model, dynamic_shapes)
    export_ds = _to_export_dims(dynamic_shapes)

    ep = steps.run(
        "torch.export",
        lambda: torch.export.export(
            model, args, kwargs=kwargs, dynamic_shapes=export_ds, strict=False
        ),
    )
    _plain_buffers(ep)
    translator = EXPORTERS[exporter]
    program = steps.run("translation", lambda: translator.translate(ep, target_opset, verbose))
    input_map = _default_input_names(ep, arg_names, args, kwargs)
    _rename_io(program.model, input_map, _default_output_names(ep), input_names, output_names)
    axes = _axes_mapping(program.model, dynamic_shapes, arg_names, args, kwargs)
    if axes:
        program.rename_axes(axes)
    _relax_capped_cache_outputs(program.model)
    if optimize:
        steps.run("optimization", program.optimize)
    if genai_llm is not None:
        steps.run("genai fusions", lambda: program.apply_genai_fusions(genai_llm))
    if filename is not None:
        steps.run("save", lambda: program.save(filename, external_data=external_data))
        if verbose:
            print(f"[to_onnx] saved {str(filename)!r}")
    return program.model_proto
