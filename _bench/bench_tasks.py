"""
Sweep of the tasks other than ``text-generation`` the library builds inputs for
(:func:`onnx_diagnostic.tasks.supported_tasks`), each over the ``model_type`` of its
:epkg:`transformers` auto mapping (:data:`TASK_MAPPINGS`): the same stages as
``_bench/bench_architectures.py`` (one subprocess per task and architecture, with a
time limit), for a small untrained model of the class the mapping gives:

* ``build``: the model builds (:func:`task_small_configs`) and, for the tasks whose inputs
  are simple (text, images, encoder-decoder text), runs on handmade inputs of batch 1
  (no library),
* ``baseline``: plain :func:`torch.onnx.export` (``dynamo=True``) without the library on
  handmade inputs, checked with onnxruntime on a second set (``n/a`` for the tasks whose
  inputs are not simple: speech, image and text, masks),
* ``inputs``: ``random_input_kwargs(config, task)`` then
  ``fct(model, config, add_second_input=True, **kwargs)``,
* ``eager``: the model runs on both input sets,
* ``export``: :func:`torch.export.export` inside ``torch_export_patches(patch_transformers=True)``,
  the exported program matches eager on the second input set,
* ``custom`` and ``dynamo``: ``to_onnx(exporter="custom")`` and
  ``to_onnx(exporter="onnx-dynamo")``, onnxruntime on the second input set matches eager
  (max absolute difference <= 1e-3, ``DIFF: <max abs>`` otherwise).

``feature-extraction`` and ``sentence-similarity`` (a text encoder returning hidden states)
run over the ``model_type`` of ``MODEL_MAPPING_NAMES`` which are text models, the ones also
in ``MODEL_FOR_MASKED_LM_MAPPING_NAMES`` or ``MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES``
(``MODEL_MAPPING_NAMES`` holds every base model, vision and speech included, for which
the task has no meaning). Tasks of :data:`TASK_MAPPINGS` the installed library does not
support yet are left out.

The results go to ``<out>/tasks.csv`` (one row per task and architecture, written after
every architecture, ``--merge`` keeps the rows not run again), ``<out>/tasks.md`` and
``<out>/tasks.rst`` (a summary task x stage, then one table per task).

::

    python _bench/bench_tasks.py --subset --out /tmp/sweep_tasks
    python _bench/bench_tasks.py --limit 3 --out /tmp/sweep_tasks
    nice -n 10 python _bench/bench_tasks.py --tasks fill-mask --timeout 120 --out /tmp/sweep_tasks
    python _bench/bench_tasks.py --tasks fill-mask --archs bert,roberta --merge --out /tmp/s
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_architectures as ba  # noqa: E402

#: task -> name of its mapping in ``transformers.models.auto.modeling_auto``, in the order
#: the sweep runs them
TASK_MAPPINGS = {
    "fill-mask": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "text-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "text2text-generation": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "image-classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "feature-extraction": "MODEL_MAPPING_NAMES",
    "automatic-speech-recognition": "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
    "image-text-to-text": "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
    "summarization": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "object-detection": "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
    "zero-shot-image-classification": "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "mask-generation": "MODEL_FOR_MASK_GENERATION_MAPPING_NAMES",
    "sentence-similarity": "MODEL_MAPPING_NAMES",
}
#: tasks whose mapping (every base model) is restricted to the text models
TEXT_ONLY = ("feature-extraction", "sentence-similarity")
#: tasks whose model runs on ``input_ids`` alone
TEXT_TASKS = ("fill-mask", "text-classification", *TEXT_ONLY)
SEQ2SEQ_TASKS = ("text2text-generation", "summarization")
IMAGE_TASKS = ("image-classification", "object-detection")
#: the fast fixed subset (continuous integration)
SUBSET = {
    "fill-mask": ("bert",),
    "text2text-generation": ("t5",),
    "image-classification": ("vit",),
}
STAGES = ba.STAGES
COLUMNS = ("task", *ba.COLUMNS)
#: markers of the part of a documentation page :func:`update_page` replaces
BEGIN, END = ".. sweep-tasks-begin", ".. sweep-tasks-end"


def known_tasks() -> list[str]:
    """
    The tasks of :data:`TASK_MAPPINGS` the installed library supports, in the order of
    :data:`TASK_MAPPINGS`.

    >>> "fill-mask" in known_tasks(), "text-generation" in known_tasks()
    (True, False)
    """
    from onnx_diagnostic.tasks import supported_tasks

    supported = set(supported_tasks())
    return [t for t in TASK_MAPPINGS if t in supported]


def task_mapping(task: str) -> dict[str, str]:
    """
    ``{model_type: class name}`` for a task (the first class when the mapping gives
    several), restricted to the text models for :data:`TEXT_ONLY`.

    >>> task_mapping("fill-mask")["bert"]
    'BertForMaskedLM'
    >>> "vit" in task_mapping("feature-extraction"), "bert" in task_mapping("feature-extraction")
    (False, True)
    """
    import transformers.models.auto.modeling_auto as auto

    if task not in TASK_MAPPINGS:
        raise ValueError(f"task={task!r} is not one of {sorted(TASK_MAPPINGS)}")
    mapping = dict(getattr(auto, TASK_MAPPINGS[task]))
    if task in TEXT_ONLY:
        text = set(auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES)
        text |= set(auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
        mapping = {k: v for k, v in mapping.items() if k in text}
    return {k: (v if isinstance(v, str) else v[0]) for k, v in mapping.items()}


def _missing(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``extra`` (recursively) ``base`` does not set."""
    res: dict[str, Any] = {}
    for k, v in extra.items():
        if k not in base:
            res[k] = v
        elif isinstance(v, dict) and isinstance(base[k], dict):
            sub = _missing(base[k], v)
            if sub:
                res[k] = sub
    return res


def task_small_configs(model_type: str, task: str) -> list[tuple[str, Any]]:
    """
    The candidate small configurations of ``model_type`` for ``task``, the best first:
    ``small+task`` (:func:`bench_architectures.small_overrides` completed with what the
    task's ``reduce_model_config`` reduces beyond the sizes: image size, number of encoded
    frames, convolution stages, image tokens...), when it adds something, then the
    candidates of :func:`bench_architectures.small_configs`, then ``task`` (the task's
    ``reduce_model_config`` alone). A candidate whose class refuses the values is
    replaced by its error (a string).

    >>> [how for how, _ in task_small_configs("vit", "image-classification")][:2]
    ['small+task', 'small']
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from onnx_diagnostic.tasks import reduce_model_config
    from onnx_diagnostic.tasks._reduce import merge_overrides

    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"model_type={model_type!r} is unknown to the installed transformers")
    cls = CONFIG_MAPPING[model_type]
    d = cls().to_dict()
    small = ba.small_overrides(d)
    try:
        task_over = reduce_model_config(copy.deepcopy(d), task)
    except Exception as e:
        task_over = None
        task_error = f"{type(e).__name__}: {ba._first_line(e)}"

    def _make(over: dict[str, Any]) -> Any:
        config = cls.from_dict(merge_overrides(d, over))
        return ba._keep_layer_kinds(cls, d, over, config)

    candidates: list[tuple[str, Any]] = []
    extra = _missing(small, task_over) if task_over else {}
    if extra:
        try:
            candidates.append(("small+task", _make(merge_overrides(small, extra))))
        except Exception as e:
            candidates.append(("small+task", f"{type(e).__name__}: {ba._first_line(e)}"))
    candidates.extend(ba.small_configs(model_type))
    if task_over is None:
        candidates.append(("task", task_error))
    else:
        try:
            candidates.append(("task", _make(task_over)))
        except Exception as e:
            candidates.append(("task", f"{type(e).__name__}: {ba._first_line(e)}"))
    return candidates


def _vocab(config: Any) -> int:
    for cfg in (config, getattr(config, "text_config", None)):
        v = getattr(cfg, "vocab_size", None)
        if isinstance(v, int):
            return v
    return int(config.get_text_config().vocab_size)


def _image_shape(config: Any, batch: int) -> tuple[int, ...]:
    cfg = getattr(config, "vision_config", None) or config
    size = getattr(cfg, "image_size", None) or 224
    if isinstance(size, dict):
        size = size.get("height", None) or next(iter(size.values()))
    if isinstance(size, (list, tuple)):
        h, w = int(size[0]), int(size[-1])
    else:
        h = w = int(size)
    return (batch, int(getattr(cfg, "num_channels", None) or 3), h, w)


def handmade_inputs(config: Any, task: str, batch: int, seq: int) -> dict[str, Any] | None:
    """
    The inputs a user would write for ``task`` without the library, None for the tasks
    whose inputs are not simple.
    """
    import torch

    if task in TEXT_TASKS or task in SEQ2SEQ_TASKS or task == "zero-shot-image-classification":
        vocab = _vocab(config)
        res = dict(
            input_ids=torch.randint(0, vocab, (batch, seq)),
            attention_mask=torch.ones((batch, seq), dtype=torch.int64),
        )
        if task in SEQ2SEQ_TASKS:
            res["decoder_input_ids"] = torch.randint(0, vocab, (batch, seq - 1))
        if task == "zero-shot-image-classification":
            res["pixel_values"] = torch.randn(_image_shape(config, batch))
        return res
    if task in IMAGE_TASKS:
        return dict(pixel_values=torch.randn(_image_shape(config, batch)))
    if task == "automatic-speech-recognition":
        mel = getattr(config, "num_mel_bins", None)
        frames = getattr(config, "max_source_positions", None)
        if isinstance(mel, int) and isinstance(frames, int):
            return dict(
                input_features=torch.randn((batch, mel, 2 * frames)),
                decoder_input_ids=torch.randint(0, _vocab(config), (batch, seq)),
            )
    return None


def _handmade_dynamic_shapes(inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq_length")
    ds: dict[str, Any] = {}
    for k in inputs:
        if k in ("input_ids", "attention_mask"):
            ds[k] = {0: batch, 1: seq}
        elif k == "decoder_input_ids":
            ds[k] = {0: batch, 1: torch.export.Dim("decoder_length")}
        else:
            ds[k] = {0: batch}
    return ds


def baseline(model: Any, config: Any, task: str) -> str:
    """Plain torch.onnx.export on handmade inputs, no help from the library."""
    import torch

    from onnx_diagnostic.helpers import max_diff

    inputs = handmade_inputs(config, task, 2, 5)
    if inputs is None:
        return "n/a"
    try:
        inputs2 = handmade_inputs(config, task, 3, 6)
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                model,
                (),
                kwargs=copy.deepcopy(inputs),
                dynamic_shapes=_handmade_dynamic_shapes(inputs),
                dynamo=True,
            )
        with torch.no_grad():
            expected = model(**copy.deepcopy(inputs2))
        got = program(**copy.deepcopy(inputs2))
        return ba._diff_status(max_diff(expected, got))[0]
    except BaseException as e:
        return ba._error(e)


def _new_record(task: str, arch: str) -> dict[str, Any]:
    record: dict[str, Any] = {k: "skip" for k in STAGES}
    record.update(task=task, arch=arch, model_class="", config="", custom_diff="", dynamo_diff="")
    return record


class _TaskWorker:
    """Runs the stages of one task and architecture, writes the record after each of them."""

    def __init__(self, task: str, arch: str, result_file: str, stages: tuple[str, ...]):
        self.task = task
        self.arch = arch
        self.result_file = result_file
        self.stages = stages
        self.record = _new_record(task, arch)
        self.begin = time.perf_counter()

    def save(self) -> None:
        self.record["seconds"] = f"{time.perf_counter() - self.begin:.1f}"
        with open(self.result_file, "w") as f:
            json.dump(self.record, f)

    def start(self, stage: str) -> None:
        # a timeout kills the process: the stage it was in tells where
        self.record[stage] = "timeout"
        self.save()

    def build(self) -> tuple[Any, Any] | None:
        import torch
        import transformers

        self.start("build")
        self.record["model_class"] = task_mapping(self.task)[self.arch]
        errors = []
        try:
            candidates = task_small_configs(self.arch, self.task)
        except BaseException as e:
            candidates = []
            errors.append(ba._error(e))
        for how, config in candidates:
            if isinstance(config, str):
                errors.append(f"FAIL: {config}")
                continue
            try:
                cls = getattr(transformers, self.record["model_class"])
                if (
                    self.task == "text-classification"
                    and getattr(config, "pad_token_id", 0) is None
                ):
                    # a decoder classifying sequences finds the last token of every row with
                    # the padding token, a batch > 1 needs one (a trained model has one)
                    config.pad_token_id = 0
                torch.manual_seed(0)
                model = cls(config).eval()
                ba.randomize_zero_routers(model)
                # batch 1: the build stage checks the model alone
                inputs = handmade_inputs(config, self.task, 1, 5)
                if inputs is not None:
                    with torch.no_grad():
                        model(**inputs)
            except BaseException as e:
                errors.append(ba._error(e))
                continue
            self.record["config"] = how
            self.record["build"] = "ok"
            self.save()
            return model, config
        self.record["build"] = errors[0] if errors else "FAIL: no configuration"
        self.save()
        return None

    def run(self) -> None:
        import torch

        torch.manual_seed(0)
        built = self.build()
        if built is None:
            return
        model, config = built
        if "baseline" in self.stages:
            self.start("baseline")
            self.record["baseline"] = baseline(model, config, self.task)
            self.save()
        self.library(model, config)

    def library(self, model: Any, config: Any) -> None:
        import torch

        from onnx_diagnostic.helpers import max_diff
        from onnx_diagnostic.helpers.torch_helper import torch_deepcopy
        from onnx_diagnostic.tasks import random_input_kwargs
        from onnx_diagnostic.torch_export_patches import torch_export_patches
        from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str

        self.start("inputs")
        try:
            kwargs, fct = random_input_kwargs(config, self.task)
            data = fct(model, config, add_second_input=True, **kwargs)
            self.record["inputs"] = "ok"
        except BaseException as e:
            self.record["inputs"] = ba._error(e)
            self.save()
            return
        self.start("eager")
        try:
            with torch.no_grad():
                model(**torch_deepcopy(data["inputs"]))
                expected = model(**torch_deepcopy(data["inputs2"]))
            self.record["eager"] = "ok"
        except BaseException as e:
            self.record["eager"] = ba._error(e)
            self.save()
            return
        if "export" in self.stages:
            self.start("export")
            try:
                with torch_export_patches(patch_transformers=True):
                    ep = torch.export.export(
                        model,
                        (),
                        kwargs=torch_deepcopy(data["inputs"]),
                        dynamic_shapes=use_dyn_not_str(data["dynamic_shapes"]),
                        strict=False,
                    )
                    got = ep.module()(**torch_deepcopy(data["inputs2"]))
                self.record["export"] = ba._diff_status(max_diff(expected, got))[0]
            except BaseException as e:
                self.record["export"] = ba._error(e)
                self.save()
                return
            self.save()
        for stage, exporter in (("custom", "custom"), ("dynamo", "onnx-dynamo")):
            if stage in self.stages:
                self.start(stage)
                self.record[stage], diff = ba._to_onnx(model, data, expected, exporter)
                self.record[f"{stage}_diff"] = "" if diff is None else f"{diff:.3g}"
                self.save()


def run_one(
    task: str,
    arch: str,
    timeout: float,
    stages: tuple[str, ...] = STAGES,
    python: str | None = None,
) -> dict[str, Any]:
    """
    Runs the stages of one task and architecture in a subprocess killed after ``timeout``
    seconds, returns its record (one value per column of :data:`COLUMNS`).
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        cmd = [python or sys.executable, os.path.abspath(__file__), "--worker", arch]
        cmd += ["--task", task, "--result", result, "--stages", ",".join(stages)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        begin = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            tail = [f"timeout after {timeout}s"]
        record = _new_record(task, arch)
        if os.path.exists(result):
            with open(result) as f:
                record.update(json.load(f))
        else:
            record["build"] = f"FAIL: the process died: {tail[0][:200] if tail else '?'}"
        record["seconds"] = f"{time.perf_counter() - begin:.1f}"
        return record


Records = dict[tuple[str, str], dict[str, Any]]


def read_csv(filename: str) -> Records:
    """Reads the records of a previous run, ``{(task, arch): record}``."""
    if not os.path.exists(filename):
        return {}
    with open(filename, newline="") as f:
        return {(row["task"], row["arch"]): row for row in csv.DictReader(f)}


def _task_order(task: str) -> int:
    order = list(TASK_MAPPINGS)
    return order.index(task) if task in order else len(order)


def write_csv(records: Records, filename: str) -> None:
    """Writes the records, sorted by task (order of :data:`TASK_MAPPINGS`) and architecture."""
    with open(filename, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for key in sorted(records, key=lambda k: (_task_order(k[0]), k)):
            writer.writerow(records[key])


def by_task(records: Records) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {arch: record}}``, tasks in the order of :data:`TASK_MAPPINGS`."""
    res: dict[str, dict[str, dict[str, Any]]] = {}
    for task, arch in sorted(records, key=lambda k: (_task_order(k[0]), k)):
        res.setdefault(task, {})[arch] = records[task, arch]
    return res


#: columns of the summary, in the order of the library's route
SUMMARY_STAGES = ("build", "inputs", "eager", "export", "custom", "dynamo", "baseline")


def summary_rows(records: Records) -> list[list[str]]:
    """
    One row per task: the number of architectures passing every stage, then the number of
    architectures measured.

    >>> summary_rows({("fill-mask", "a"): dict(build="ok", inputs="ok", custom="DIFF: 1")})
    [['fill-mask', '1', '1', '0', '0', '0', '0', '0', '1']]
    """
    rows = []
    for task, recs in by_task(records).items():
        counts = [sum(1 for r in recs.values() if r.get(s, "") == "ok") for s in SUMMARY_STAGES]
        rows.append([task, *map(str, counts), str(len(recs))])
    return rows


def markdown(records: Records, versions: str = "") -> str:
    """The summary table (task x stage) then the tables of every task."""
    titles = ["task", *SUMMARY_STAGES, "architectures"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines.extend("| " + " | ".join(row) + " |" for row in summary_rows(records))
    if versions:
        lines.extend(["", versions])
    for task, recs in by_task(records).items():
        lines.extend(["", f"## {task}", "", ba.markdown(recs).rstrip("\n")])
    return "\n".join(lines) + "\n"


def rst(records: Records) -> str:
    """The tables of :func:`markdown` as reStructuredText list tables."""
    titles = ["task", *SUMMARY_STAGES, "architectures"]
    lines = [
        ".. list-table:: Architectures passing every stage, by task",
        "    :header-rows: 1",
        "",
    ]
    for row in [titles, *summary_rows(records)]:
        lines.append(f"    * - {row[0]}")
        lines.extend(f"      - {c}" for c in row[1:])
    for task, recs in by_task(records).items():
        lines.extend(["", f".. rubric:: {task}", "", ba.rst(recs).rstrip("\n")])
    return "\n".join(lines) + "\n"


def update_page(page: str, records: Records, versions: str) -> None:
    """
    Replaces the text between the lines ``.. sweep-tasks-begin`` and ``.. sweep-tasks-end``
    of a reStructuredText page with the versions and the tables of :func:`rst`.

    :raises ValueError: if the page has not both markers, in this order
    """
    with open(page) as f:
        text = f.read()
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise ValueError(f"update_page: {page!r} must hold the lines {BEGIN!r} then {END!r}")
    body = f"{BEGIN}\n\nMeasured on {versions}.\n\n{rst(records)}\n"
    with open(page, "w") as f:
        f.write(text[:begin] + body + text[end:])


def select(tasks: list[str], archs: list[str], limit: int, subset: bool) -> list[tuple[str, str]]:
    """
    The pairs (task, architecture) to run: every architecture of every task (``archs`` when
    given, those the task maps), the first ``limit`` of every task (alphabetically) when
    ``limit > 0``, only :data:`SUBSET` with ``subset``.

    >>> select(["fill-mask", "image-classification"], ["bert", "vit"], 0, False)
    [('fill-mask', 'bert'), ('image-classification', 'vit')]
    """
    pairs = []
    for task in tasks:
        mapping = task_mapping(task)
        if subset:
            names = [a for a in SUBSET.get(task, ()) if a in mapping]
        elif archs:
            names = [a for a in archs if a in mapping]
        else:
            names = sorted(mapping)
        if limit > 0:
            names = sorted(names)[:limit]
        pairs.extend((task, a) for a in names)
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="", help="comma separated tasks (default: all)")
    parser.add_argument("--archs", default="", help="comma separated model types")
    parser.add_argument("--subset", action="store_true", help=f"only {SUBSET}")
    parser.add_argument("--limit", type=int, default=0, help="the first N architectures per task")
    ba.add_sweep_arguments(parser, "bench_tasks", 120, BEGIN, END)
    parser.add_argument("--task", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stages = ba.parse_stages(parser, args.stages)
    if args.worker:
        ba.quiet_worker()
        _TaskWorker(args.task, args.worker, args.result, stages).run()
        return 0
    known = known_tasks()
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        bad = [t for t in tasks if t not in known]
        if bad:
            parser.error(f"--tasks: {bad} are not supported, expected some of {known}")
    else:
        tasks = known
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if archs:
        mapped = set().union(*(task_mapping(t) for t in tasks))
        bad = [a for a in archs if a not in mapped]
        if bad:
            parser.error(f"--archs: {bad} are mapped by none of the tasks {tasks}")
    pairs = select(tasks, archs, args.limit, args.subset)
    os.makedirs(args.out, exist_ok=True)
    csv_file = os.path.join(args.out, "tasks.csv")
    records = read_csv(csv_file) if args.merge else {}
    versions = ba.versions_line()
    if not args.report_only:
        ba.run_sweep(
            pairs,
            lambda pair: run_one(*pair, args.timeout, stages),
            records,
            csv_file,
            write_csv,
            " ".join,
            args.jobs,
        )
    with open(os.path.join(args.out, "tasks.md"), "w") as f:
        f.write(markdown(records, versions))
    with open(os.path.join(args.out, "tasks.rst"), "w") as f:
        f.write(rst(records))
    if args.doc:
        update_page(args.doc, records, versions)
    print(markdown(records, versions).split("\n\n")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
