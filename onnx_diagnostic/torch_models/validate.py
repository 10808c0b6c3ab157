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
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["THRESHOLDS", "validate_model", "summary_frame", "threshold_for"]

#: Largest absolute discrepancy accepted between torch and onnxruntime, per dtype.
THRESHOLDS: dict[torch.dtype, float] = {
    torch.float32: 1e-4,
    torch.float64: 1e-6,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
}

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
    """Times the steps, stores their errors in the summary, moves a progress bar."""

    def __init__(self, summary: dict[str, Any], verbose: int, steps: list[str]):
        self.summary = summary
        self.verbose = verbose
        self.failed: set[str] = set()
        self.bar = None
        if verbose:
            from tqdm import tqdm

            self.bar = tqdm(total=len(steps), desc="validate", leave=False)

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
            logger.warning("validate: step %r failed: %s", name, text.split("\n")[0])
            if self.verbose:
                print(f"[validate] step {name!r} failed: {text.splitlines()[0]}")
        finally:
            self.summary[f"time_{name}"] = time.perf_counter() - begin
            if self.bar is not None:
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Validates the export of a model id.

    Steps: ``create`` (untrained model and two input sets from the shipped configuration,
    see :func:`onnx_diagnostic.torch_models.hghub.get_untrained_model_with_inputs`),
    ``run_torch`` (outputs and latency), ``export``
    (:func:`onnx_diagnostic.export.api.to_onnx` inside ``torch_export_patches``),
    then, if ``do_run``, ``session`` and ``run_ort`` (outputs, discrepancies on both input
    sets, latency).

    :param model_id: a shipped model id (``python -m onnx_diagnostic validate --list``)
    :param exporter: exporter given to :func:`to_onnx`, None skips the export
    :param do_run: runs the exported model with onnxruntime
    :param optimize: optimizes the exported model
    :param dtype: converts the model and its inputs to this dtype (``"float16"``...)
    :param device: ``"cpu"`` or ``"cuda"``
    :param dump_folder: saves the ONNX model and ``summary.json`` there
    :param verbose: prints the steps and a progress bar if > 0
    :param repeat: number of runs the latencies are the median of
    :param model_kwargs: changes the configuration (``{"num_hidden_layers": 1}``)
    :param patch: exports inside ``torch_export_patches(patch_transformers=True)``
    :return: ``(summary, data)``: ``summary`` is a flat dictionary (``status`` is ``"ok"`` or
        lists the failures, ``ERR_<step>`` holds the error of a failing step,
        ``disc_abs`` / ``disc_rel`` and ``disc2_abs`` / ``disc2_rel`` the discrepancies on
        ``inputs`` and ``inputs2``, ``time_*`` the durations, ``latency_*`` the median
        durations of one forward); ``data`` holds the model, the inputs, the outputs,
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
    steps = ["create", "run_torch"]
    if exporter:
        steps.append("export")
        if do_run:
            steps.extend(["session", "run_ort"])
    summary: dict[str, Any] = dict(
        model_id=model_id,
        exporter=exporter or "",
        optimize=optimize,
        device=device,
        dtype=str(dtype or ""),
    )
    data: dict[str, Any] = {}
    rec = _Recorder(summary, verbose, steps)
    try:
        with rec.step("create"):
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
    with context:
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


def summary_frame(summary: dict[str, Any]) -> Any:
    """
    Returns the summary as a two-column :class:`pandas.DataFrame` (``key``, ``value``),
    errors last.

    >>> print(summary_frame({"model_id": "m", "ERR_export": "boom", "disc_abs": 1e-5}))
              key  value
    0    model_id      m
    1    disc_abs  1e-05
    2  ERR_export   boom
    """
    import pandas

    keys = [k for k in summary if not k.startswith("ERR_")] + [
        k for k in summary if k.startswith("ERR_")
    ]
    rows = []
    for k in keys:
        v = summary[k]
        if isinstance(v, float):
            v = f"{v:.3g}"
        elif isinstance(v, str) and k.startswith("ERR_"):
            v = v.splitlines()[0] if v else v
        rows.append((k, v))
    return pandas.DataFrame(rows, columns=["key", "value"])
