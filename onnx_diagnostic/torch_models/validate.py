"""
:func:`validate_model`: builds the untrained model of a model id from its shipped
configuration, exports it to ONNX inside
:func:`onnx_diagnostic.torch_export_patches.torch_export_patches`, runs it with
:epkg:`onnxruntime` on two sets of inputs and measures the discrepancies with torch.
``python -m onnx_diagnostic validate -m MODEL_ID`` calls it.

Every step is timed and recorded in a flat summary (a dictionary which
:func:`summary_frame` turns into a :class:`pandas.DataFrame`); a step that raises records
``ERR_<step>`` and the validation goes on with what does not depend on it.

.. code-block:: python

    from onnx_diagnostic.torch_models.validate import summary_frame, validate_model

    summary, data = validate_model("arnir0/Tiny-LLM", exporter="onnx-dynamo", do_run=True)
    print(summary_frame(summary))  # status 'ok', disc_abs below 1e-4
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "AGG_FIRST_COLUMNS",
    "DTYPES",
    "THRESHOLDS",
    "aggregate_summaries",
    "aggregate_views",
    "check_model_kwargs",
    "export_sample_script",
    "format_summary",
    "model_config",
    "save_summary",
    "summary_frame",
    "threshold_for",
    "unit_of",
    "validate_model",
]

#: Largest absolute discrepancy accepted between torch and onnxruntime, per dtype.
THRESHOLDS: dict[torch.dtype, float] = {
    torch.float32: 1e-4,
    torch.float64: 1e-6,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
}

#: Names accepted by ``dtype=`` (and by ``validate --dtype``).
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")

#: Steps of the validation, in order.
STEPS = ("create", "run_torch", "export", "session", "run_ort")


def threshold_for(dtype: torch.dtype) -> float:
    """
    Returns the largest discrepancy accepted for a model of this dtype.

    >>> import torch
    >>> threshold_for(torch.float16)
    0.01
    """
    if dtype not in THRESHOLDS:
        raise ValueError(f"no threshold for dtype {dtype}, known: {sorted(map(str, THRESHOLDS))}")
    return THRESHOLDS[dtype]


class _Recorder:
    """
    Times the steps, stores their errors in the summary, moves a progress bar (on
    ``sys.stderr``). The bar stops at the first failure: it shows the failing step and the
    steps done, not the ones skipped after it. A failure is printed once, on ``sys.stderr``,
    when ``verbose`` is set (only its first line, the summary holds the whole error).
    """

    def __init__(self, summary: dict[str, Any], verbose: int, steps: list[str], progress: bool):
        self.summary = summary
        self.verbose = verbose
        self.failed: set[str] = set()
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(steps), desc="validate", file=sys.stderr, leave=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.bar is not None:
            self.bar.set_description(name)
        begin = time.perf_counter()
        try:
            yield
        except Exception as e:
            self.failed.add(name)
            text = f"{type(e).__name__}: {e}".strip()
            self.summary[f"ERR_{name}"] = text if len(text) < 2000 else text[:2000] + " ..."
            logger.debug("validate: step %r failed: %s", name, text)
            if self.bar is not None:
                self.bar.set_description(f"{name} FAILED")
                self.bar.close()
                self.bar = None
            if self.verbose:
                first = text.splitlines()[0] if text else type(e).__name__
                print(f"[validate] step {name!r} failed: {first}", file=sys.stderr)
        else:
            if self.bar is not None:
                self.bar.update(1)
        finally:
            self.summary[f"time_{name}"] = time.perf_counter() - begin

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _latency(fct: Callable[[], Any], repeat: int, warmup: int = 2) -> float:
    """Median duration of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fct()
    durations = []
    for _ in range(repeat):
        begin = time.perf_counter()
        fct()
        durations.append(time.perf_counter() - begin)
    return statistics.median(durations)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def check_model_kwargs(model_id: str, model_kwargs: dict[str, Any]) -> None:
    """
    Raises a :class:`ValueError` if a key of ``model_kwargs`` is not an attribute of the
    configuration of ``model_id`` (shipped id or local ``config.json``), with the closest
    names. A typo would otherwise be silently ignored by :epkg:`transformers`.

    >>> check_model_kwargs("arnir0/Tiny-LLM", {"num_hidden_layers": 1})
    >>> check_model_kwargs("arnir0/Tiny-LLM", {"num_hiden_layers": 1})
    Traceback (most recent call last):
        ...
    ValueError: model_kwargs: 'num_hiden_layers' is not a field of the configuration of \
'arnir0/Tiny-LLM' (LlamaConfig), did you mean: num_hidden_layers?
    """
    import difflib

    from .hghub import get_pretrained_config

    config = get_pretrained_config(model_id)
    known = set(config.to_dict())
    for key in model_kwargs:
        if key in known or hasattr(config, key):
            continue
        close = difflib.get_close_matches(key, sorted(known), n=3)
        hint = f"did you mean: {', '.join(close)}?" if close else f"known fields: {sorted(known)}"
        raise ValueError(
            f"model_kwargs: {key!r} is not a field of the configuration of {model_id!r} "
            f"({type(config).__name__}), {hint}"
        )


def _file_size(filename: str) -> int:
    """Size of an ONNX file and of the external data files beside it."""
    size = os.path.getsize(filename)
    data = filename + ".data"
    if os.path.exists(data):
        size += os.path.getsize(data)
    return size


def _providers(device: str) -> list[str]:
    if device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _torch_run(model: torch.nn.Module, inputs: dict[str, Any]) -> Any:
    from ..helpers.torch_helper import torch_deepcopy

    with torch.no_grad():
        # a forward updates the cache it receives: every call gets a copy
        return model(**torch_deepcopy(inputs))


def validate_model(
    model_id: str,
    exporter: str | None = "onnx-dynamo",
    do_run: bool = False,
    optimize: bool = False,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    dump_folder: str | None = None,
    verbose: int = 0,
    repeat: int = 5,
    model_kwargs: dict[str, Any] | None = None,
    patch: bool = True,
    progress: bool | None = None,
    compare_intermediates: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Validates the export of a model id.

    Steps: ``create`` (untrained model and two input sets from the shipped configuration,
    see :func:`onnx_diagnostic.torch_models.hghub.get_untrained_model_with_inputs`),
    ``run_torch`` (outputs and latency), ``export``
    (:func:`onnx_diagnostic.export.api.to_onnx` inside ``torch_export_patches``),
    then, if ``do_run``, ``session`` and ``run_ort`` (outputs, discrepancies on both input
    sets, latency), and if ``compare_intermediates``, ``compare``
    (:func:`onnx_diagnostic.investigate.compare.compare_intermediates` on the first input
    set, tolerance the threshold of the dtype).

    :param model_id: a shipped model id (``python -m onnx_diagnostic validate --list``)
    :param exporter: exporter given to :func:`to_onnx`, None skips the export
    :param do_run: runs the exported model with onnxruntime
    :param optimize: optimizes the exported model
    :param dtype: converts the model and its inputs to this dtype (``"float16"``...)
    :param device: ``"cpu"`` or ``"cuda"``
    :param dump_folder: saves the ONNX model and ``summary.json`` there
    :param verbose: prints the first line of a failing step's error on stderr if > 0
    :param repeat: number of runs the latencies are the median of (after two warm-up runs)
    :param model_kwargs: changes the configuration (``{"num_hidden_layers": 1}``), every key
        must be an attribute of the configuration (see :func:`check_model_kwargs`)
    :param patch: exports inside ``torch_export_patches(patch_transformers=True)``
    :param progress: shows a progress bar on stderr, by default when stderr is a terminal
    :param compare_intermediates: compares every intermediate result of torch and
        onnxruntime: ``cmp_aligned``, ``cmp_diverged``, ``cmp_first_divergence`` and
        ``cmp_worst_modules`` (the five largest errors) go into the summary, the
        :class:`IntermediateComparison <onnx_diagnostic.investigate.compare.IntermediateComparison>`
        into ``data["comparison"]``
    :return: ``(summary, data)``: ``summary`` is a flat dictionary (``status`` is ``"ok"`` or
        lists the failures, ``ERR_<step>`` holds the error of a failing step,
        ``disc_abs`` / ``disc_rel`` and ``disc2_abs`` / ``disc2_rel`` the discrepancies on
        ``inputs`` and ``inputs2``, ``time_*`` the durations, ``latency_*`` the median
        durations of one forward in seconds, ``*_mb`` sizes in MB, see :func:`unit_of`);
        ``data`` holds the model, the inputs, the outputs,
        the ONNX model and the session

    >>> summary, data = validate_model("arnir0/Tiny-LLM", exporter=None)
    >>> summary["status"], summary["model_class"]
    ('ok', 'LlamaForCausalLM')
    """
    from ..helpers.torch_helper import get_weight_type, to_any
    from .hghub import get_untrained_model_with_inputs
    from .model_data import weights_size

    if not isinstance(model_id, str) or not model_id:
        raise TypeError(f"validate_model: model_id must be a non empty string, got {model_id!r}")
    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"validate_model: repeat must be an int >= 1, got {repeat!r}")
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(
            f"validate_model: dtype={dtype!r} is not supported, valid values: {', '.join(DTYPES)}"
        )
    if exporter:
        from ..export.api import EXPORTERS

        if exporter not in EXPORTERS:
            raise ValueError(
                f"validate_model: exporter={exporter!r} is unknown, valid values: "
                f"{', '.join(EXPORTERS)}"
            )
    if progress is None:
        progress = _is_terminal(sys.stderr)
    steps = ["create", "run_torch"]
    if exporter:
        steps.append("export")
        if do_run:
            steps.extend(["session", "run_ort"])
        if compare_intermediates:
            steps.append("compare")
    summary: dict[str, Any] = dict(
        model_id=model_id,
        exporter=exporter or "",
        optimize=optimize,
        device=device,
        dtype=str(dtype or ""),
    )
    data: dict[str, Any] = {}
    rec = _Recorder(summary, verbose, steps, progress)
    try:
        with rec.step("create"):
            if model_kwargs:
                check_model_kwargs(model_id, model_kwargs)
            md = get_untrained_model_with_inputs(
                model_id, add_second_input=True, model_kwargs=model_kwargs
            )
            model, inputs, inputs2 = md.model, md.inputs, md.get("inputs2", None)
            if dtype:
                model = to_any(model, dtype)
                inputs, inputs2 = to_any(inputs, dtype), to_any(inputs2, dtype)
            if device != "cpu":
                model = to_any(model, device)
                inputs, inputs2 = to_any(inputs, device), to_any(inputs2, device)
            weight_type = get_weight_type(model)
            size, n_weights = weights_size(model)
            summary.update(
                task=md.task,
                model_class=type(model).__name__,
                n_weights=n_weights,
                size_mb=size / 2**20,
                dtype=str(weight_type).replace("torch.", ""),
                threshold=threshold_for(weight_type),
            )
            data.update(
                model=model,
                inputs=inputs,
                inputs2=inputs2,
                dynamic_shapes=md.dynamic_shapes,
                configuration=md.configuration,
            )
        if "create" in rec.failed:
            return _finish(summary, data, rec, dump_folder)

        with rec.step("run_torch"):
            data["expected"] = _torch_run(model, inputs)
            if inputs2 is not None:
                data["expected2"] = _torch_run(model, inputs2)
            summary["latency_torch"] = _latency(lambda: _torch_run(model, inputs), repeat)

        if not exporter:
            return _finish(summary, data, rec, dump_folder)
        with tempfile.TemporaryDirectory() as tmp:
            folder = dump_folder or tmp
            if dump_folder:
                os.makedirs(dump_folder, exist_ok=True)
            suffix = ".opt" if optimize else ""
            filename = os.path.join(folder, f"{model_id.replace('/', '_')}.{exporter}{suffix}.onnx")
            with rec.step("export"):
                data["onnx"] = _export(
                    model, inputs, md.dynamic_shapes, filename, exporter, optimize, verbose, patch
                )
                summary["onnx_size_mb"] = _file_size(filename) / 2**20
                summary["onnx_n_nodes"] = len(data["onnx"].graph.node)
                if dump_folder:
                    data["filename"] = filename
            if "export" not in rec.failed and do_run:
                _run_onnxruntime(model, filename, device, data, summary, rec, repeat)
            if "export" not in rec.failed and compare_intermediates:
                with rec.step("compare"):
                    _compare(model, inputs, md.dynamic_shapes, filename, data, summary, patch)
    finally:
        rec.close()
    return _finish(summary, data, rec, dump_folder)


def _export(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    dynamic_shapes: Any,
    filename: str,
    exporter: str,
    optimize: bool,
    verbose: int,
    patch: bool,
) -> Any:
    import contextlib

    from ..export.api import to_onnx
    from ..helpers.torch_helper import torch_deepcopy

    if patch:
        from ..torch_export_patches import torch_export_patches

        context: Any = torch_export_patches(patch_transformers=True)
    else:
        context = contextlib.nullcontext()
    from ..export.api import quiet_third_party_noise

    with context, quiet_third_party_noise():
        return to_onnx(
            model,
            (),
            kwargs=torch_deepcopy(inputs),
            dynamic_shapes=dynamic_shapes,
            filename=filename,
            exporter=exporter,
            optimize=optimize,
            verbose=max(verbose - 1, 0),
        )


def _compare(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    dynamic_shapes: Any,
    filename: str,
    data: dict[str, Any],
    summary: dict[str, Any],
    patch: bool,
) -> None:
    import contextlib

    from ..export.api import quiet_third_party_noise
    from ..helpers.torch_helper import torch_deepcopy
    from ..investigate.compare import compare_intermediates

    context: Any = contextlib.nullcontext()
    if patch:
        from ..torch_export_patches import torch_export_patches

        context = torch_export_patches(patch_transformers=True)
    tol = summary.get("threshold", 1e-4)
    with context, quiet_third_party_noise():
        res = compare_intermediates(
            model,
            filename,
            kwargs=torch_deepcopy(inputs),
            dynamic_shapes=dynamic_shapes,
            atol=tol,
            rtol=tol,
            providers=_providers(summary.get("device", "cpu")),
            exporter=summary.get("exporter") or None,
        )
    data["comparison"] = res
    summary["cmp_aligned"] = len(res.table)
    summary["cmp_diverged"] = len(res.diverged)
    first = res.first_divergence
    summary["cmp_first_divergence"] = (
        "none"
        if first is None
        else f"{first['torch_node']} ({first['target']}) in {first['module'] or '<top>'} "
        f"max_abs={first['max_abs']:.3g} at {first['source']}"
    )
    summary["cmp_worst_modules"] = "; ".join(
        f"{module}={row['max_abs']:.3g}" for module, row in res.worst_modules(5).iterrows()
    )


def _run_onnxruntime(
    model: torch.nn.Module,
    filename: str,
    device: str,
    data: dict[str, Any],
    summary: dict[str, Any],
    rec: _Recorder,
    repeat: int,
) -> None:
    from ..export.api import onnx_feeds
    from ..helpers import max_diff
    from ..helpers.rt_helper import make_session, run_session

    with rec.step("session"):
        data["session"] = make_session(filename, providers=_providers(device))
    if "session" in rec.failed:
        return
    session = data["session"]
    with rec.step("run_ort"):
        for key, suffix in (("inputs", ""), ("inputs2", "2")):
            inputs = data.get(key, None)
            if inputs is None:
                continue
            feeds = onnx_feeds(model, kwargs=inputs)
            got = run_session(session, feeds)
            data[f"got{suffix}"] = got
            if f"expected{suffix}" in data:
                diff = max_diff(data[f"expected{suffix}"], got)
                summary[f"disc{suffix}_abs"] = diff["abs"]
                summary[f"disc{suffix}_rel"] = diff["rel"]
                if "error" in diff:
                    summary[f"ERR_disc{suffix}"] = diff["error"]
        feeds = onnx_feeds(model, kwargs=data["inputs"])
        summary["latency_ort"] = _latency(lambda: run_session(session, feeds), repeat)
        if summary.get("latency_torch"):
            summary["speedup"] = summary["latency_torch"] / summary["latency_ort"]


def _finish(
    summary: dict[str, Any], data: dict[str, Any], rec: _Recorder, dump_folder: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    failures = [k[4:] for k in summary if k.startswith("ERR_")]
    threshold = summary.get("threshold", None)
    for key in ("disc_abs", "disc2_abs"):
        value = summary.get(key, None)
        if value is not None and threshold is not None and not value <= threshold:
            failures.append(f"{key}={value:.3g}>{threshold:g}")
    summary["status"] = "ok" if not failures else "FAILED: " + ", ".join(failures)
    if dump_folder:
        os.makedirs(dump_folder, exist_ok=True)
        with open(os.path.join(dump_folder, "summary.json"), "w", encoding="utf-8") as f:
            json.dump({k: _jsonable(v) for k, v in summary.items()}, f, indent=2)
    return summary, data


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def unit_of(key: str) -> str:
    """
    The unit of a key of the summary: ``s`` for durations (``time_*``, ``latency_*``),
    ``MB`` for sizes (``*_mb``), ``x`` for ``speedup``, an empty string otherwise.

    >>> unit_of("latency_ort"), unit_of("onnx_size_mb"), unit_of("disc_abs")
    ('s', 'MB', '')
    """
    if key.startswith(("time_", "latency_")):
        return "s"
    if key.endswith("_mb"):
        return "MB"
    if key == "speedup":
        return "x"
    return ""


def _rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    keys = [k for k in summary if not k.startswith("ERR_")] + [
        k for k in summary if k.startswith("ERR_")
    ]
    rows = []
    for k in keys:
        v = summary[k]
        text = f"{v:.3g}" if isinstance(v, float) else str(v)
        rows.append((k, text, unit_of(k)))
    return rows


def summary_frame(summary: dict[str, Any]) -> Any:
    """
    Returns the summary as a :class:`pandas.DataFrame` with three columns (``key``,
    ``value``, ``unit``), errors last, floats with three significant digits and errors
    reduced to their first line.

    >>> summary_frame({"model_id": "m", "ERR_export": "boom", "latency_ort": 1e-5}).values.tolist()
    [['model_id', 'm', ''], ['latency_ort', '1e-05', 's'], ['ERR_export', 'boom', '']]
    """
    import pandas

    rows = [
        (k, v.splitlines()[0] if k.startswith("ERR_") and v else v, u) for k, v, u in _rows(summary)
    ]
    return pandas.DataFrame(rows, columns=["key", "value", "unit"])


def format_summary(summary: dict[str, Any], width: int | None = None) -> str:
    """
    Formats the summary as a left-aligned table ``key  value unit`` no wider than ``width``
    characters (the terminal width by default, at least 40): a long value (an error) is
    wrapped on the next lines, never cut, errors come last.

    >>> print(format_summary({"model_id": "m", "latency_ort": 0.00123, "status": "ok"}))
    model_id     m
    latency_ort  0.00123 s
    status       ok
    """
    import shutil
    import textwrap

    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    width = max(int(width), 40)
    rows = _rows(summary)
    kw = min(max((len(k) for k, _, _ in rows), default=0), width // 3)
    lines = []
    room = width - kw - 2
    for k, v, u in rows:
        text = f"{v} {u}" if u else v
        chunks: list[str] = []
        for paragraph in text.splitlines() or [""]:
            chunks.extend(
                textwrap.wrap(paragraph, room, break_long_words=True, replace_whitespace=False)
                or [""]
            )
        if len(k) > kw:
            lines.append(k[:width])
            first, rest = chunks[0], chunks[1:]
            lines.append(" " * (kw + 2) + first)
        else:
            first, rest = chunks[0], chunks[1:]
            lines.append(f"{k:<{kw}}  {first}".rstrip())
        lines.extend((" " * (kw + 2) + c).rstrip() for c in rest)
    return "\n".join(lines)


def save_summary(summary: dict[str, Any], filename: str) -> None:
    """
    Saves the summary of :func:`validate_model` as JSON (``.json``, one object) or CSV
    (``.csv``, one header line and one row), the files ``python -m onnx_diagnostic agg``
    aggregates. Other extensions raise a :class:`ValueError`.

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_summary({"model_id": "m", "status": "ok"}, os.path.join(tmp, "s.csv"))
    ...     print(open(os.path.join(tmp, "s.csv")).read().strip())
    model_id,status
    m,ok
    """
    import csv

    ext = os.path.splitext(filename)[-1].lower()
    if ext not in (".json", ".csv"):
        raise ValueError(f"save_summary: filename must end with .json or .csv, got {filename!r}")
    folder = os.path.dirname(filename)
    if folder:
        os.makedirs(folder, exist_ok=True)
    clean = {k: _jsonable(v) for k, v in summary.items()}
    with open(filename, "w", encoding="utf-8", newline="") as f:
        if ext == ".json":
            json.dump(clean, f, indent=2)
        else:
            writer = csv.DictWriter(f, fieldnames=list(clean))
            writer.writeheader()
            writer.writerow(clean)


_SAMPLE = """\
# generated by: python -m onnx_diagnostic exportsample -m {model_id}{args}
# what `python -m onnx_diagnostic validate` runs for this model id, written out to edit it
import torch

from onnx_diagnostic.export.api import onnx_feeds, to_onnx
from onnx_diagnostic.helpers import max_diff, string_type
from onnx_diagnostic.helpers.rt_helper import make_session, run_session
from onnx_diagnostic.helpers.torch_helper import to_any, torch_deepcopy
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs

# 1. the untrained model and two sets of inputs, from the configuration shipped with the
#    package (or a local config.json)
data = get_untrained_model_with_inputs(
    {model_id!r}, add_second_input=True, model_kwargs={model_kwargs!r}
)
model, inputs, inputs2 = data.model, data.inputs, data.inputs2
dynamic_shapes = data.dynamic_shapes{dtype_code}
print("inputs:", string_type(inputs, with_shape=True))
print("dynamic_shapes:", dynamic_shapes)

# 2. torch
with torch.no_grad():
    expected = model(**torch_deepcopy(inputs))
    expected2 = model(**torch_deepcopy(inputs2)) if inputs2 is not None else None

# 3. the export
filename = {filename!r}
with torch_export_patches(patch_transformers=True):
    to_onnx(
        model,
        (),
        kwargs=torch_deepcopy(inputs),
        dynamic_shapes=dynamic_shapes,
        filename=filename,
        exporter={exporter!r},
        optimize={optimize!r},
    )

# 4. onnxruntime and the discrepancies
session = make_session(filename, providers=["CPUExecutionProvider"])
for name, feeds_inputs, ref in (("inputs", inputs, expected), ("inputs2", inputs2, expected2)):
    if feeds_inputs is None:
        continue
    got = run_session(session, onnx_feeds(model, kwargs=feeds_inputs))
    print(name, "discrepancies:", max_diff(ref, got))
"""


def export_sample_script(
    model_id: str,
    exporter: str = "custom",
    optimize: bool = False,
    dtype: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> str:
    """
    Returns the Python script doing what :func:`validate_model` does for ``model_id``
    (build, run with torch, export inside ``torch_export_patches``, run with onnxruntime,
    compare), for a user to edit. ``python -m onnx_diagnostic exportsample`` prints it.

    >>> script = export_sample_script("arnir0/Tiny-LLM", exporter="onnx-dynamo")
    >>> "exporter='onnx-dynamo'" in script, "get_untrained_model_with_inputs(" in script
    (True, True)
    >>> compile(script, "sample.py", "exec") is not None
    True
    """
    from ..export.api import EXPORTERS

    if not isinstance(model_id, str) or not model_id:
        raise TypeError(
            f"export_sample_script: model_id must be a non empty string, got {model_id!r}"
        )
    if exporter not in EXPORTERS:
        raise ValueError(
            f"export_sample_script: exporter={exporter!r} is unknown, valid values: "
            f"{', '.join(EXPORTERS)}"
        )
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(
            f"export_sample_script: dtype={dtype!r} is not supported, valid values: "
            f"{', '.join(DTYPES)}"
        )
    args = f" --export {exporter}" + (" --opt" if optimize else "")
    args += f" --dtype {dtype}" if dtype else ""
    args += "".join(f" --mop {k}={v}" for k, v in (model_kwargs or {}).items())
    dtype_code = ""
    if dtype:
        dtype_code = (
            f"\nmodel = to_any(model, {dtype!r})"
            f"\ninputs, inputs2 = to_any(inputs, {dtype!r}), to_any(inputs2, {dtype!r})"
        )
    suffix = ".opt" if optimize else ""
    return _SAMPLE.format(
        model_id=model_id,
        args=args,
        model_kwargs=model_kwargs or None,
        dtype_code=dtype_code,
        filename=f"{model_id.replace('/', '_')}.{exporter}{suffix}.onnx",
        exporter=exporter,
        optimize=optimize,
    )


def model_config(
    model_id: str, reduced: bool = True, model_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """
    Returns the configuration of a model id (shipped with the package, or a local
    ``config.json`` / folder holding one) as a dictionary: as published if not ``reduced``,
    otherwise the small one :func:`validate_model` builds its untrained model from
    (a few layers, small sizes), with ``model_kwargs`` applied last.
    ``python -m onnx_diagnostic config`` prints it.

    >>> full = model_config("arnir0/Tiny-LLM", reduced=False)
    >>> small = model_config("arnir0/Tiny-LLM", model_kwargs={"num_hidden_layers": 1})
    >>> full["model_type"], small["num_hidden_layers"]
    ('llama', 1)
    """
    from ..tasks import reduce_model_config
    from ..tasks._reduce import complete_layer_overrides, merge_overrides
    from .hghub.hub_api import load_config_dict, task_from_id

    config = load_config_dict(model_id)
    if model_kwargs:
        check_model_kwargs(model_id, model_kwargs)
    if reduced:
        config = merge_overrides(config, reduce_model_config(config, task_from_id(model_id)))
    if model_kwargs:
        config = merge_overrides(config, complete_layer_overrides(config, model_kwargs))
    return config


#: First columns of :func:`aggregate_summaries`, when present.
AGG_FIRST_COLUMNS = ("model_id", "exporter", "optimize", "dtype", "device", "status")


def _summary_files(path: str) -> list[str]:
    if os.path.isdir(path):
        found = []
        for root, _, files in os.walk(path):
            found.extend(os.path.join(root, f) for f in files if f.endswith((".json", ".csv")))
        return sorted(found)
    if not os.path.exists(path):
        raise FileNotFoundError(f"aggregate_summaries: {path!r} does not exist")
    return [path]


def aggregate_summaries(paths: str | list[str]) -> Any:
    """
    Reads the summaries :func:`validate_model` writes (``summary.json`` of a dump folder,
    ``validate -o FILE.json|FILE.csv``) from files or folders (searched recursively) and
    returns one :class:`pandas.DataFrame`, one row per run, the columns
    :data:`AGG_FIRST_COLUMNS` first, then the others sorted, and ``source`` (the file).
    A JSON file not holding a summary (no ``model_id``) is skipped; a CSV may hold many rows.

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_summary({"model_id": "a", "status": "ok", "latency_ort": 0.5},
    ...                  os.path.join(tmp, "a.json"))
    ...     save_summary({"model_id": "b", "status": "FAILED: export"},
    ...                  os.path.join(tmp, "b.csv"))
    ...     df = aggregate_summaries(tmp)
    >>> df[["model_id", "status", "latency_ort"]].values.tolist()
    [['a', 'ok', 0.5], ['b', 'FAILED: export', nan]]
    """
    import pandas

    if isinstance(paths, str):
        paths = [paths]
    frames = []
    for path in paths:
        for name in _summary_files(path):
            if name.endswith(".csv"):
                df = pandas.read_csv(name)
            else:
                with open(name, encoding="utf-8") as f:
                    try:
                        data = json.load(f)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"aggregate_summaries: {name!r} is not JSON: {e}") from e
                if not isinstance(data, dict):
                    continue
                df = pandas.DataFrame([data])
            if "model_id" not in df.columns:
                continue
            df["source"] = name
            frames.append(df)
    if not frames:
        raise ValueError(
            f"aggregate_summaries: no summary found in {paths} "
            f"(validate -o FILE.json or --dump-folder writes them)"
        )
    df = pandas.concat(frames, ignore_index=True)
    first = [c for c in AGG_FIRST_COLUMNS if c in df.columns]
    others = sorted(c for c in df.columns if c not in first and c != "source")
    return df[[*first, *others, "source"]]


def aggregate_views(df: Any) -> dict[str, Any]:
    """
    Views of an aggregated table (:func:`aggregate_summaries`), one sheet each in the Excel
    file ``python -m onnx_diagnostic agg`` writes: ``runs`` (everything), and for each of
    ``status``, ``disc_abs``, ``latency_ort``, ``speedup``, ``onnx_size_mb`` present in
    the table, a pivot with one row per model id and one column per exporter.

    >>> import pandas
    >>> df = pandas.DataFrame(dict(model_id=["m", "m"], exporter=["custom", "onnx-dynamo"],
    ...                            status=["ok", "FAILED: export"]))
    >>> aggregate_views(df)["status"].values.tolist()
    [['ok', 'FAILED: export']]
    """
    views = {"runs": df}
    if "model_id" not in df.columns or "exporter" not in df.columns:
        return views
    for col in ("status", "disc_abs", "latency_ort", "speedup", "onnx_size_mb"):
        if col in df.columns:
            views[col] = df.pivot_table(
                index="model_id", columns="exporter", values=col, aggfunc="last"
            )
    return views
