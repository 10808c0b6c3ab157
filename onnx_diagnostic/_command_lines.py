"""
Command lines: ``python -m onnx_diagnostic <command> ...``, one subcommand per task, each a
thin layer over a public function of the library:

* ``validate``: exports the untrained model of a model id and compares onnxruntime to torch
  (:func:`onnx_diagnostic.torch_models.validate.validate_model`);
* ``exportsample``: prints the script ``validate`` runs
  (:func:`onnx_diagnostic.torch_models.validate.export_sample_script`);
* ``config``: the configuration of a model id
  (:func:`onnx_diagnostic.torch_models.validate.model_config`);
* ``agg``: aggregates the summaries of many ``validate`` runs
  (:func:`onnx_diagnostic.torch_models.validate.aggregate_summaries`);
* ``print``, ``dot``, ``find``, ``stats``, ``lighten``, ``unlighten``, ``optimize``,
  ``partition``: look into or transform an ONNX file
  (:mod:`onnx_diagnostic.helpers.onnx_helper`);
* ``sbs``: runs torch and an ONNX file side by side, says where they start to disagree
  (:func:`onnx_diagnostic.investigate.compare.compare_intermediates`);
* ``compare``: runs two ONNX models side by side
  (:func:`onnx_diagnostic.investigate.compare_onnx.compare_onnx_models`);
* ``versions``: the installed versions and the patches that apply.

Exit codes: 0 success, 1 failure (a step failed, a file cannot be read...), 2 usage error
(an unknown option value, a missing argument...).

>>> from onnx_diagnostic._command_lines import main
>>> main(["validate", "--list"])  # doctest: +ELLIPSIS
model_id ... task
...
arnir0/Tiny-LLM ... text-generation
...
0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from ._command_sbs import add_compare_parser, add_sbs_parser, run_compare, run_sbs

__all__ = ["UsageError", "get_parser", "main"]

PROG = "python -m onnx_diagnostic"

#: Exporters accepted by ``--export`` (the keys of :data:`onnx_diagnostic.export.api.EXPORTERS`,
#: repeated here so that ``--help`` does not import torch; a test checks they agree).
EXPORTER_NAMES = ("custom", "onnx-dynamo")
#: dtypes accepted by ``--dtype`` (:data:`onnx_diagnostic.torch_models.validate.DTYPES`).
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")


class UsageError(ValueError):
    """A usage error found after parsing (exit code 2)."""


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), _parse_value(value.strip())


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device, valid values: cpu, cuda, cuda:N"
        )
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r} is not available: torch {torch.__version__} "
                f"{'was built without CUDA' if torch.version.cuda is None else 'sees no GPU'}"
                f", use --device cpu"
            )
    return text


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and examples, shows the defaults which say
    something (not None, False or an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text:
            return text
        if action.option_strings:
            text += " (default: %(default)s)"
        return text


def _add(
    sub: Any, name: str, help_: str, description: str, examples: Sequence[str]
) -> argparse.ArgumentParser:
    epilog = "example:\n" + "\n".join(f"  {PROG} {e}" for e in examples)
    text = help_[0].upper() + help_[1:] + "."
    if description:
        text += "\n\n" + textwrap.fill(description, 88)
    return sub.add_parser(
        name,
        help=help_,
        description=text,
        epilog=epilog,
        formatter_class=_Formatter,
    )


def _top_epilog() -> str:
    lines = ["COMMAND --help describes a command with an example."]
    lines.append("exit codes: 0 success, 1 failure, 2 usage error")
    lines.append(f"example: {PROG} validate -m arnir0/Tiny-LLM --export custom --run")
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    """
    Returns the parser of the command line.

    >>> args = get_parser().parse_args(["validate", "-m", "arnir0/Tiny-LLM", "--run"])
    >>> args.command, args.mid, args.run, args.export
    ('validate', 'arnir0/Tiny-LLM', True, None)
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Exports transformers models to ONNX and checks the result; "
        "looks into ONNX models.",
        epilog=_top_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _validate_parser(sub)
    _add_exportsample(sub)
    _add_config(sub)
    _add_agg(sub)
    _add_onnx_commands(sub)
    add_sbs_parser(sub, _add, _key_value, DTYPE_NAMES)
    add_compare_parser(sub, _add, _key_value)
    ver = _add(
        sub,
        "versions",
        "prints the installed versions, the tested range and the patches that apply",
        "Prints the installed versions of python, torch, transformers, onnx, onnxruntime, "
        "onnxscript (and onnxruntime-genai if installed), whether each lies in the range "
        "the tests run on, the name the installed transformers gives to the cache argument "
        "of forward and to the cache field of the outputs, and every patch of "
        "torch_export_patches with whether it applies to these versions (nothing is "
        "patched). Always exits with 0.",
        ["versions", "versions --format json"],
    )
    ver.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    return parser


def _validate_parser(sub: Any) -> None:
    val = _add(
        sub,
        "validate",
        "exports the untrained model of a model id and compares onnxruntime to torch",
        "Builds the untrained model of a model id (shipped configuration, see --list, or a "
        "local config.json) with two sets of inputs, runs it with torch, exports it inside "
        "torch_export_patches(patch_transformers=True), runs it with onnxruntime and prints "
        "a summary (latency_* and time_* in seconds, *_mb in MB, latencies are medians of "
        "--repeat runs after 2 warm-up runs). A progress bar goes to stderr when it is a "
        "terminal. Exits with 1 if a step fails or if a discrepancy is above the threshold "
        "of the dtype (float32 1e-4, float16 and bfloat16 1e-2), with 2 on a usage error.",
        [
            "validate --list",
            "validate -m arnir0/Tiny-LLM --export custom --run -o summary.json",
            "validate -m path/to/config.json --export onnx-dynamo --run --mop num_hidden_layers=1",
        ],
    )
    val.add_argument("-m", "--mid", metavar="MODEL_ID", help="model id (see --list) or config.json")
    val.add_argument("--list", action="store_true", help="prints the shipped model ids")
    val.add_argument(
        "--export",
        default=None,
        choices=EXPORTER_NAMES,
        help="exporter; without it the model only runs with torch",
    )
    val.add_argument("--run", action="store_true", help="runs the ONNX model with onnxruntime")
    val.add_argument("--opt", action="store_true", help="optimizes the ONNX model")
    val.add_argument(
        "--dtype", default=None, choices=DTYPE_NAMES, help="converts the model to this dtype"
    )
    val.add_argument("--device", default="cpu", type=_device, help="cpu, cuda or cuda:N")
    val.add_argument(
        "-o", "--output", default=None, metavar="FILE", help="writes the summary (.json or .csv)"
    )
    val.add_argument(
        "--dump-folder", default=None, metavar="DIR", help="saves the ONNX model and summary.json"
    )
    val.add_argument("-v", "--verbose", type=int, default=0, help="verbosity")
    val.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, prints the status only"
    )
    val.add_argument("--repeat", type=int, default=5, help="latency = median of N runs")
    val.add_argument(
        "--mop",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="changes a field of the model configuration, --mop num_hidden_layers=1",
    )
    val.add_argument("--no-patch", action="store_true", help="exports without torch_export_patches")
    val.add_argument(
        "--compare-intermediates",
        action="store_true",
        help="compares every intermediate result of torch and onnxruntime (first divergence, "
        "five worst modules)",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--mid", required=True, metavar="MODEL_ID", help="model id or config.json")
    p.add_argument(
        "--mop", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="changes a field of the configuration",
    )  # fmt: skip


def _add_exportsample(sub: Any) -> None:
    p = _add(
        sub,
        "exportsample",
        "prints the Python script validate runs for a model id",
        "The script builds the untrained model, runs it with torch, exports it and compares "
        "onnxruntime to torch: edit it to investigate.",
        ["exportsample -m arnir0/Tiny-LLM --export custom > sample.py"],
    )
    _add_model_args(p)
    p.add_argument("--export", default="custom", choices=EXPORTER_NAMES, help="exporter")
    p.add_argument("--opt", action="store_true", help="optimizes the ONNX model")
    p.add_argument("--dtype", default=None, choices=DTYPE_NAMES, help="dtype of the model")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="writes the script there")


def _add_config(sub: Any) -> None:
    p = _add(
        sub,
        "config",
        "prints the configuration of a model id as JSON",
        "By default the reduced configuration validate builds its untrained model from; "
        "--full prints the published one.",
        ["config -m arnir0/Tiny-LLM", "config -m google/gemma-3-1b-it --full"],
    )
    _add_model_args(p)
    p.add_argument("--full", action="store_true", help="the configuration as published")


def _add_agg(sub: Any) -> None:
    p = _add(
        sub,
        "agg",
        "aggregates the summaries of many validate runs into one table",
        "Reads the .json/.csv summaries (validate -o, --dump-folder) of files or folders "
        "(searched recursively) and prints one table, or writes it as .csv, or as an Excel "
        "file with one sheet per view (runs, status, disc_abs, latency_ort...; needs openpyxl).",
        ["agg results/ -o all.xlsx", "agg a.json b.json"],
    )
    p.add_argument("inputs", nargs="+", help="summary files or folders")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help=".csv or .xlsx")


def _add_onnx_commands(sub: Any) -> None:
    p = _add(
        sub,
        "print",
        "shows what a dump holds or summarizes an ONNX model",
        "A dump (steal_forward, create_onnx_model_from_input_tensors) is shown as nested "
        "tensors with shapes and min/max; another ONNX file by its inputs, outputs "
        "(element types by name: int64, float...) and node counts, or as text (--format "
        "pretty).",
        ["print model.onnx", "print model.onnx --format pretty", "print dump.onnx"],
    )
    p.add_argument("file", help="an ONNX file: a model or a dump")
    p.add_argument(
        "-f", "--format", choices=["summary", "pretty"], default="summary", help="output form"
    )

    p = _add(
        sub,
        "dot",
        "draws an ONNX model as a Graphviz dot graph",
        "Prints the dot text, or writes it to a .dot file, or draws a .png with the "
        "Graphviz binary 'dot' if it is installed.",
        ["dot model.onnx -o model.dot", "dot model.onnx -o model.png"],
    )
    p.add_argument("file", help="an ONNX file")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help=".dot or .png")

    p = _add(
        sub,
        "find",
        "tells which nodes produce or consume a result of an ONNX model",
        "One line per node, '>>' produces, '<<' consumes, subgraphs included.",
        ["find model.onnx -n present.0.key -n logits"],
    )
    p.add_argument("file", help="an ONNX file")
    p.add_argument("-n", "--name", action="append", required=True, help="a result name, repeatable")

    p = _add(
        sub,
        "stats",
        "counts node types, initializers and their sizes in an ONNX model",
        "",
        ["stats model.onnx --top 5", "stats model.onnx --format json"],
    )
    p.add_argument("file", help="an ONNX file")
    p.add_argument("--top", type=int, default=10, help="number of biggest initializers shown")
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")

    p = _add(
        sub,
        "lighten",
        "removes the big initializers of an ONNX model and keeps their statistics",
        "Initializers of more than 4096 elements are removed, their mean, std, min, max, "
        "shape and type go into OUTPUT.stats (JSON): share the model's structure without "
        "its weights; unlighten restores random weights with the same statistics.",
        ["lighten model.onnx -o light.onnx"],
    )
    p.add_argument("file", help="an ONNX file")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the light model")

    p = _add(
        sub,
        "unlighten",
        "restores random weights into a model made by lighten",
        "Reads FILE.stats and adds every removed initializer back with random values of the "
        "same mean and standard deviation (the model runs, it is not the original one).",
        ["unlighten light.onnx -o model_random.onnx"],
    )
    p.add_argument("file", help="a model written by lighten, FILE.stats beside it")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the restored model")

    p = _add(
        sub,
        "optimize",
        "optimizes an ONNX file",
        "'custom' runs the passes of the custom exporter (constant folding, identities, "
        "common subexpressions, unused nodes...), 'onnxscript' runs onnxscript's optimizer.",
        ["optimize model.onnx -o model.opt.onnx --method custom"],
    )
    p.add_argument("file", help="an ONNX file")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the optimized model")
    p.add_argument("--method", choices=["custom", "onnxscript"], default="custom", help="optimizer")

    p = _add(
        sub,
        "partition",
        "splits an ONNX model in two at named results",
        "HEAD computes the named results from the inputs, TAIL computes the outputs from the "
        "named results (and the inputs it still needs).",
        ["partition model.onnx -n /model/layers.0/Add -o head.onnx tail.onnx"],
    )
    p.add_argument("file", help="an ONNX file")
    p.add_argument("-n", "--name", action="append", required=True, help="a result name, repeatable")
    p.add_argument(
        "-o", "--output", nargs=2, required=True, metavar=("HEAD", "TAIL"), help="two files"
    )


# ----------------------------------------------------------------------------------------
# validate, exportsample, config, agg
# ----------------------------------------------------------------------------------------


def _cmd_list() -> int:
    from .torch_models.hghub import shipped_model_ids, task_from_id

    rows = [("model_id", "task")] + [(mid, task_from_id(mid)) for mid in shipped_model_ids()]
    width = max(len(r[0]) for r in rows)
    for mid, task in rows:
        print(f"{mid:<{width}}  {task}")
    return 0


def _check_model_id(mid: str) -> None:
    from .torch_models.hghub.hub_api import UnknownModelIdError, load_config_dict

    try:
        load_config_dict(mid)
    except UnknownModelIdError:
        raise UsageError(
            f"model id {mid!r} is neither shipped with onnx_diagnostic nor a local "
            f"config.json (nothing is downloaded). '{PROG} validate --list' prints the "
            f"shipped ids; '-m path/to/config.json' (or a folder holding one) uses a local "
            f"configuration."
        ) from None


def _check_mop(mid: str, mop: list[tuple[str, Any]]) -> dict[str, Any] | None:
    if not mop:
        return None
    from .torch_models.validate import check_model_kwargs

    kwargs = dict(mop)
    try:
        check_model_kwargs(mid, kwargs)
    except ValueError as e:
        raise UsageError(f"--mop: {str(e).replace('model_kwargs: ', '')}") from None
    return kwargs


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.list:
        return _cmd_list()
    if not args.mid:
        raise UsageError("-m MODEL_ID is required (--list prints the shipped ones)")
    if args.run and not args.export:
        raise UsageError(
            "--run needs --export custom or --export onnx-dynamo: without an export "
            "nothing runs with onnxruntime"
        )
    if args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1, got {args.repeat}")
    if args.compare_intermediates and not args.export:
        raise UsageError("--compare-intermediates needs --export custom or --export onnx-dynamo")
    if args.output and os.path.splitext(args.output)[-1].lower() not in (".json", ".csv"):
        raise UsageError(
            f"-o {args.output!r}: the summary is written as .json or .csv; "
            f"--dump-folder DIR saves the ONNX model"
        )
    _check_model_id(args.mid)
    model_kwargs = _check_mop(args.mid, args.mop)
    from .torch_models.validate import format_summary, save_summary, validate_model

    summary, _ = validate_model(
        args.mid,
        exporter=args.export,
        do_run=args.run,
        optimize=args.opt,
        dtype=args.dtype,
        device=args.device,
        dump_folder=args.dump_folder,
        verbose=args.verbose,
        repeat=args.repeat,
        model_kwargs=model_kwargs,
        patch=not args.no_patch,
        progress=False if args.quiet else None,
        compare_intermediates=args.compare_intermediates,
    )
    if args.output:
        save_summary(summary, args.output)
    if args.quiet:
        print(f"status: {summary['status']}")
    else:
        print(format_summary(summary))
    return 0 if summary["status"] == "ok" else 1


def _cmd_exportsample(args: argparse.Namespace) -> int:
    _check_model_id(args.mid)
    from .torch_models.validate import export_sample_script

    script = export_sample_script(
        args.mid,
        exporter=args.export,
        optimize=args.opt,
        dtype=args.dtype,
        model_kwargs=_check_mop(args.mid, args.mop),
    )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(script)
        print(f"wrote {args.output!r}")
    else:
        print(script)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    _check_model_id(args.mid)
    from .torch_models.validate import model_config

    config = model_config(
        args.mid, reduced=not args.full, model_kwargs=_check_mop(args.mid, args.mop)
    )
    print(json.dumps(config, indent=2, sort_keys=True, default=str))
    return 0


def _cmd_agg(args: argparse.Namespace) -> int:
    from .torch_models.validate import aggregate_summaries, aggregate_views

    out = args.output
    ext = os.path.splitext(out)[-1].lower() if out else ""
    if out and ext not in (".csv", ".xlsx"):
        raise UsageError(f"-o {out!r}: the table is written as .csv or .xlsx")
    if ext == ".xlsx":
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            print(
                "agg: writing .xlsx needs openpyxl (pip install openpyxl); use -o FILE.csv instead",
                file=sys.stderr,
            )
            return 1
    try:
        df = aggregate_summaries(args.inputs)
    except ValueError as e:
        print(f"agg: {e}", file=sys.stderr)
        return 1
    if not out:
        import pandas

        from .torch_models.validate import AGG_FIRST_COLUMNS

        shown = [*AGG_FIRST_COLUMNS, "disc_abs", "latency_ort", "speedup", "onnx_size_mb"]
        with pandas.option_context("display.precision", 3):
            print(df[[c for c in shown if c in df.columns]].to_string(index=False))
        print(f"{len(df)} runs, {len(df.columns)} columns, -o FILE.csv|.xlsx writes them all")
        return 0
    if ext == ".csv":
        df.to_csv(out, index=False)
    else:
        import pandas

        with pandas.ExcelWriter(out) as writer:
            for name, view in aggregate_views(df).items():
                view.to_excel(writer, sheet_name=name, index=name != "runs")
    print(f"wrote {len(df)} runs into {out!r}")
    return 0


# ----------------------------------------------------------------------------------------
# versions
# ----------------------------------------------------------------------------------------


def _patch_status(row: dict[str, Any]) -> tuple[str, str]:
    """Returns ``(status, why)`` of a row of :func:`list_patches`."""
    if not row["applies"]:
        return "skipped", f"not needed with the installed versions (needed for {row['versions']})"
    if not row["targets"]:
        return "applies", "targets looked up when the patches are entered, none loaded now"
    return "applies", ", ".join(row["targets"])


def versions_summary() -> dict[str, Any]:
    """
    Returns what ``python -m onnx_diagnostic versions`` prints: ``packages``
    (:func:`version_report <onnx_diagnostic.helpers.compat.version_report>`),
    ``cache_arg_name``, ``output_cache_field`` and ``patches`` (name, library, status,
    why, versions).

    >>> summary = versions_summary()
    >>> sorted(summary)
    ['cache_arg_name', 'output_cache_field', 'packages', 'patches']
    >>> summary["patches"][0]["status"] in ("applies", "skipped")
    True
    """
    from .helpers import compat
    from .torch_export_patches.patches import list_patches

    patches = []
    for row in list_patches():
        status, why = _patch_status(row)
        patches.append(
            dict(
                name=row["name"],
                library=row["library"],
                status=status,
                why=why,
                versions=row["versions"],
            )
        )
    return dict(
        packages=compat.version_report(),
        cache_arg_name=compat.default_cache_arg_name(),
        output_cache_field=compat.output_cache_field(),
        patches=patches,
    )


def _cmd_versions(args: argparse.Namespace) -> int:
    summary = versions_summary()
    if args.format == "json":
        print(json.dumps(summary, indent=2))
        return 0
    rows = [("package", "version", "tested", "status")]
    for row in summary["packages"]:
        tested = "untested" if row["tested"] is None else " .. ".join(row["tested"])
        if row["version"] is None:
            status = "not installed"
        elif row["in_range"] is None:
            status = "no tested range"
        else:
            status = "tested" if row["in_range"] else "OUTSIDE the tested range"
        rows.append((row["package"], row["version"] or "-", tested, status))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths)) + "  " + row[3])
    print()
    print(f"cache argument of forward: {summary['cache_arg_name']}")
    print(f"cache field of the outputs: {summary['output_cache_field']}")
    print()
    print("patches of torch_export_patches:")
    width = max((len(p["name"]) for p in summary["patches"]), default=0)
    for p in summary["patches"]:
        print(f"  {p['name']:<{width}}  {p['status']:<7}  {p['why']}")
    return 0


def _cmd_sbs(args: argparse.Namespace) -> int:
    def check(mid: str, mop: list[tuple[str, Any]]) -> dict[str, Any] | None:
        _check_model_id(mid)
        return _check_mop(mid, mop)

    return run_sbs(args, UsageError, check)


def _cmd_compare(args: argparse.Namespace) -> int:
    return run_compare(args, UsageError, lambda mid, mop: _check_model_id(mid))


from ._command_onnx import (  # noqa: E402  (the subcommands working on ONNX files)
    _cmd_dot,
    _cmd_find,
    _cmd_lighten,
    _cmd_optimize,
    _cmd_partition,
    _cmd_print,
    _cmd_stats,
    _cmd_unlighten,
)

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": _cmd_validate,
    "exportsample": _cmd_exportsample,
    "config": _cmd_config,
    "agg": _cmd_agg,
    "print": _cmd_print,
    "dot": _cmd_dot,
    "find": _cmd_find,
    "stats": _cmd_stats,
    "lighten": _cmd_lighten,
    "unlighten": _cmd_unlighten,
    "optimize": _cmd_optimize,
    "partition": _cmd_partition,
    "versions": _cmd_versions,
    "sbs": _cmd_sbs,
    "compare": _cmd_compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    """
    Runs a command line and returns its exit code: 0 on success, 1 on a failure,
    2 on a usage error (argparse's errors included, ``--help`` returns 0).

    :param argv: arguments, ``sys.argv[1:]`` if None
    :return: the exit code

    >>> main(["validate", "--dtype", "float17"])  # doctest: +SKIP
    2
    """
    parser = get_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        parser.print_usage(sys.stderr)
        commands = ", ".join(_COMMANDS)
        print(
            f"{PROG}: error: a command is required, one of: {commands} "
            f"(see '{PROG} COMMAND --help')",
            file=sys.stderr,
        )
        return 2
    from .helpers.onnx_helper import OnnxLoadError

    try:
        return _COMMANDS[args.command](args)
    except UsageError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (OnnxLoadError, FileNotFoundError) as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 1
