"""
Command lines: ``python -m onnx_diagnostic <command> ...``.

* ``validate -m MODEL_ID [--export custom|onnx-dynamo] [--run] [--opt] [--dtype float16]
  [--device cpu] [-o DUMP_FOLDER] [-v 1]``: exports the untrained model of a shipped model id
  and checks onnxruntime agrees with torch
  (:func:`onnx_diagnostic.torch_models.validate.validate_model`); exits with 1 when a step
  fails or a discrepancy is above the threshold of the dtype; ``validate --list`` prints the
  shipped model ids and their task.
* ``print FILE``: shows what a dump (:func:`onnx_diagnostic.helpers.torch_helper.steal_forward`,
  :func:`onnx_diagnostic.helpers.mini_onnx_builder.create_onnx_model_from_input_tensors`)
  holds, or summarizes an ONNX model.
* ``versions [--format text|json]``: prints the installed versions of python, torch,
  transformers, onnx, onnxruntime, onnxscript (onnxruntime-genai if installed) and whether
  each lies in the tested range (:data:`onnx_diagnostic.helpers.compat.TESTED_VERSIONS`),
  the name transformers gives to the cache argument and output field, and which patches of
  :func:`onnx_diagnostic.torch_export_patches.torch_export_patches` apply to these versions.

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
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["get_parser", "main"]


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


def get_parser() -> argparse.ArgumentParser:
    """
    Returns the parser of the command line.

    >>> args = get_parser().parse_args(["validate", "-m", "arnir0/Tiny-LLM", "--run"])
    >>> args.command, args.mid, args.run, args.export
    ('validate', 'arnir0/Tiny-LLM', True, None)
    """
    parser = argparse.ArgumentParser(
        prog="python -m onnx_diagnostic",
        description="Exports transformers models to ONNX and checks the result.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    val = sub.add_parser(
        "validate",
        help="exports the untrained model of a model id and compares onnxruntime to torch",
        description=(
            "Builds the untrained model of a shipped model id with two sets of inputs, "
            "exports it inside torch_export_patches(patch_transformers=True), runs it with "
            "onnxruntime and prints a summary. Exits with 1 if a step fails or if a "
            "discrepancy is above the threshold of the dtype (float32 1e-4, float16 and "
            "bfloat16 1e-2)."
        ),
    )
    val.add_argument("-m", "--mid", help="model id, see --list")
    val.add_argument("--list", action="store_true", help="prints the shipped model ids")
    val.add_argument(
        "--export",
        default=None,
        help="exporter, 'custom' or 'onnx-dynamo'; without it, the model only runs with torch",
    )
    val.add_argument("--run", action="store_true", help="runs the ONNX model with onnxruntime")
    val.add_argument("--opt", action="store_true", help="optimizes the ONNX model")
    val.add_argument("--dtype", default=None, help="float16, bfloat16, float32...")
    val.add_argument("--device", default="cpu", help="cpu or cuda")
    val.add_argument("-o", "--dump-folder", default=None, help="saves the model and summary")
    val.add_argument("-v", "--verbose", type=int, default=0, help="verbosity")
    val.add_argument("--repeat", type=int, default=5, help="latency = median of N runs")
    val.add_argument(
        "--mop",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="changes the model configuration, --mop num_hidden_layers=1",
    )
    val.add_argument("--no-patch", action="store_true", help="exports without torch_export_patches")

    prt = sub.add_parser(
        "print",
        help="shows what a dump from steal_forward holds or summarizes an ONNX model",
    )
    prt.add_argument("file", help="an ONNX file")

    ver = sub.add_parser(
        "versions",
        help="prints the installed versions, the tested range and the patches that apply",
        description=(
            "Prints the installed versions of python, torch, transformers, onnx, onnxruntime, "
            "onnxscript (and onnxruntime-genai if installed), whether each lies in the range "
            "the tests run on, the name the installed transformers gives to the cache argument "
            "of forward and to the cache field of the outputs, and every patch of "
            "torch_export_patches with whether it applies to these versions (nothing is "
            "patched). Always exits with 0."
        ),
    )
    ver.add_argument(
        "--format", choices=["text", "json"], default="text", help="output format, text or json"
    )
    return parser


def _cmd_list() -> int:
    from .torch_models.hghub import shipped_model_ids, task_from_id

    rows = [("model_id", "task")] + [(mid, task_from_id(mid)) for mid in shipped_model_ids()]
    width = max(len(r[0]) for r in rows)
    for mid, task in rows:
        print(f"{mid:<{width}}  {task}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.list:
        return _cmd_list()
    if not args.mid:
        print("validate: -m MODEL_ID is required (--list prints the shipped ones)", file=sys.stderr)
        return 2
    from .torch_models.validate import summary_frame, validate_model

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
        model_kwargs=dict(args.mop) or None,
        patch=not args.no_patch,
    )
    print(summary_frame(summary).to_string(index=False, max_colwidth=200))
    return 0 if summary["status"] == "ok" else 1


def _print_model(model: Any) -> None:
    import collections

    def _type(vi: Any) -> str:
        t = vi.type.tensor_type
        dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
        return f"elem_type={t.elem_type} shape=[{', '.join(dims)}]"

    opsets = ", ".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in model.opset_import)
    print(f"ONNX model, ir_version={model.ir_version}, opsets: {opsets}")
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            print(f"  {kind} {vi.name}: {_type(vi)}")
    counts = collections.Counter(
        (n.domain + "." if n.domain else "") + n.op_type for n in model.graph.node
    )
    print(f"  {len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers")
    for op, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])):
        print(f"    {op}: {n}")


def _cmd_print(args: argparse.Namespace) -> int:
    import onnx

    from .helpers import string_type
    from .helpers.mini_onnx_builder import DumpFormatError, create_input_tensors_from_onnx_model

    if not os.path.exists(args.file):
        print(f"print: file {args.file!r} does not exist", file=sys.stderr)
        return 1
    try:
        obj = create_input_tensors_from_onnx_model(args.file)
    except DumpFormatError as e:
        try:
            model = onnx.load(args.file, load_external_data=False)
        except Exception:
            print(f"print: cannot read {args.file!r}: {e}", file=sys.stderr)
            return 1
        _print_model(model)
        return 0
    except Exception as e:
        print(f"print: cannot read {args.file!r}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if isinstance(obj, dict):
        print(f"dump with {len(obj)} entries")
        for key, value in obj.items():
            print(f"{key}: {string_type(value, with_shape=True, with_min_max=True)}")
    else:
        print(string_type(obj, with_shape=True, with_min_max=True))
    return 0


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
    import json

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


def main(argv: Sequence[str] | None = None) -> int:
    """
    Runs a command line and returns its exit code.

    :param argv: arguments, ``sys.argv[1:]`` if None
    :return: 0 on success
    """
    args = get_parser().parse_args(argv)
    if args.command == "validate":
        return _cmd_validate(args)
    if args.command == "versions":
        return _cmd_versions(args)
    return _cmd_print(args)
