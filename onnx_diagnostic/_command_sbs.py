"""
The subcommands ``sbs`` (side by side) and ``compare`` of
:mod:`onnx_diagnostic._command_lines`: ``sbs`` takes an ONNX file and the model id it was
exported from, every intermediate result of torch and onnxruntime compared
(:func:`onnx_diagnostic.investigate.compare.compare_intermediates`); ``compare`` takes two
ONNX files (:func:`onnx_diagnostic.investigate.compare_onnx.compare_onnx_models`). Both
write the full table as CSV or Excel.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_sbs_parser(sub: Any, add: Any, key_value: Any, dtype_names: Any) -> None:
    """Declares ``sbs`` (``add`` is :func:`_command_lines._add`)."""
    p = add(
        sub,
        "sbs",
        "runs torch and an ONNX file side by side and says where they start to disagree",
        "Builds the untrained model of a model id (as validate does), copies into it the "
        "weights the ONNX file holds (initializers named after the state dict), exports it "
        "again with torch.export inside torch_export_patches(patch_transformers=True), runs "
        "the exported program node by node and the ONNX model with onnxruntime on the same "
        "inputs, aligns the intermediate results and prints the first divergence and the "
        "worst modules. -o writes the whole table (.csv, or .xlsx with a second sheet "
        "summarizing by module). "
        "Exits with 1 if a result diverges.",
        [
            "sbs -m arnir0/Tiny-LLM --onnx model.onnx -o table.csv",
            "validate -m arnir0/Tiny-LLM --export custom --dump-folder dump && "
            "python -m onnx_diagnostic sbs -m arnir0/Tiny-LLM "
            "--onnx dump/arnir0_Tiny-LLM.custom.onnx",
        ],
    )
    p.add_argument("-m", "--mid", required=True, metavar="MODEL_ID", help="model id or config.json")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance")
    p.add_argument("--dtype", default=None, choices=dtype_names, help="dtype of the model")
    p.add_argument(
        "--method",
        choices=["auto", "outputs", "nodes"],
        default="auto",
        help="outputs: one onnxruntime session exposing every result; nodes: node by node",
    )
    p.add_argument(
        "--mop",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="changes a field of the model configuration (as for the export)",
    )
    p.add_argument("-o", "--output", default=None, metavar="FILE", help=".csv or .xlsx")
    p.add_argument("--top", type=int, default=5, help="number of worst modules printed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run_sbs(args: argparse.Namespace, usage_error: type[Exception], check: Any) -> int:
    """Runs ``sbs``; ``check(mid, mop)`` validates the model id and returns model_kwargs."""
    _check_output(args, usage_error)
    if not os.path.exists(args.onnx):
        raise FileNotFoundError(f"--onnx {args.onnx!r} does not exist")
    model_kwargs = check(args.mid, args.mop)

    from .export.api import quiet_third_party_noise
    from .helpers.torch_helper import to_any, torch_deepcopy
    from .investigate.compare import compare_intermediates, load_weights_from_onnx
    from .torch_export_patches import torch_export_patches
    from .torch_models.hghub import get_untrained_model_with_inputs
    from .torch_models.validate import _is_terminal

    steps = ["model", "weights", "compare"]
    bar = _progress(steps, not args.quiet and _is_terminal(sys.stderr))
    bar.set_description("model")
    md = get_untrained_model_with_inputs(args.mid, model_kwargs=model_kwargs)
    model, inputs = md.model, md.inputs
    if args.dtype:
        model, inputs = to_any(model, args.dtype), to_any(inputs, args.dtype)
    bar.update(1)
    bar.set_description("weights")
    loaded, missing = load_weights_from_onnx(model, args.onnx)
    if len(loaded) < len(missing):
        bar.close()
        print(
            f"sbs: {len(missing)} of the {len(loaded) + len(missing)} weights of the model of "
            f"{args.mid!r} are not in {args.onnx!r} (first: {', '.join(missing[:3])}): was it "
            f"exported from this model id (and the same --mop)?",
            file=sys.stderr,
        )
        return 1
    bar.update(1)
    bar.set_description("compare")
    try:
        with torch_export_patches(patch_transformers=True), quiet_third_party_noise():
            res = compare_intermediates(
                model,
                args.onnx,
                kwargs=torch_deepcopy(inputs),
                dynamic_shapes=md.dynamic_shapes,
                atol=args.atol,
                rtol=args.rtol,
                method=args.method,
            )
    except ValueError as e:  # the file does not take the inputs of this model
        bar.close()
        print(f"sbs: {args.onnx!r} and the model of {args.mid!r} differ: {e}", file=sys.stderr)
        return 1
    bar.update(1)
    bar.close()
    print(f"weights copied from the ONNX file: {len(loaded)}, not found: {len(missing)}")
    print(res.report(args.top))
    times = ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items())
    print(f"time: {times}")
    _write(res, args.output)
    return 0 if res.first_divergence is None else 1


class _NoBar:
    def set_description(self, text: str) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(steps: list[str], show: bool) -> Any:
    if not show:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=len(steps), file=sys.stderr, leave=False)


def add_compare_parser(sub: Any, add: Any, key_value: Any) -> None:
    """Declares ``compare``."""
    p = add(
        sub,
        "compare",
        "runs two ONNX models side by side and says where they start to disagree",
        "Runs two ONNX models of the same computation (two exporters, before and after an "
        "optimization...) with onnxruntime on the same inputs, every intermediate result "
        "exposed, pairs the results (same name, else the next result of the same operator, "
        "shape and type in execution order) and prints the first divergence and the worst "
        "modules (from the first model's metadata). The inputs come from the model id given "
        "with -m (the input set validate uses), or are random (symbolic dimensions from "
        "--dim, 2 by default). Exits with 1 if a result diverges.",
        [
            "compare -m1 model.custom.onnx -m2 model.onnx-dynamo.onnx -m arnir0/Tiny-LLM",
            "compare -m1 a.onnx -m2 b.onnx --dim batch=2 -o table.csv",
        ],
    )
    p.add_argument("-m1", "--model1", required=True, metavar="FILE", help="the reference model")
    p.add_argument("-m2", "--model2", required=True, metavar="FILE", help="the other model")
    p.add_argument(
        "-m", "--mid", default=None, metavar="MODEL_ID", help="takes the inputs of this model id"
    )
    p.add_argument(
        "--dim",
        type=key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of a symbolic dimension for random inputs, --dim batch=2",
    )
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance")
    p.add_argument(
        "--method", choices=["outputs", "nodes"], default="outputs", help="how onnxruntime runs"
    )
    p.add_argument("-o", "--output", default=None, metavar="FILE", help=".csv or .xlsx")
    p.add_argument("--top", type=int, default=5, help="number of worst modules printed")


def _check_output(args: argparse.Namespace, usage_error: type[Exception]) -> None:
    if args.output and os.path.splitext(args.output)[-1].lower() not in (".csv", ".xlsx"):
        raise usage_error(f"-o {args.output!r}: the table is written as .csv or .xlsx")
    if args.output and args.output.lower().endswith(".xlsx"):
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise usage_error(
                f"-o {args.output!r}: writing .xlsx needs openpyxl (pip install openpyxl), "
                "a .csv file does not"
            ) from None
    if args.top < 0:
        raise usage_error(f"--top must be >= 0, got {args.top}")


def _write(res: Any, output: str | None) -> None:
    if not output:
        return
    if output.lower().endswith(".xlsx"):
        res.to_excel(output)
    else:
        res.to_csv(output)
    print(f"table written to {output!r} ({len(res.table)} rows)")


def run_compare(args: argparse.Namespace, usage_error: type[Exception], check: Any) -> int:
    """Runs ``compare``; ``check(mid, [])`` validates the model id."""
    _check_output(args, usage_error)
    for name in (args.model1, args.model2):
        if not os.path.exists(name):
            raise FileNotFoundError(f"{name!r} does not exist")
    dims = dict(args.dim)
    for k, v in dims.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise usage_error(f"--dim {k}={v!r}: the value must be an integer >= 0")
    if args.mid and dims:
        raise usage_error("--dim gives random inputs, -m takes the inputs of a model id: not both")
    from .investigate.compare_onnx import compare_onnx_models, random_feeds

    if args.mid:
        check(args.mid, [])
        from .export.api import onnx_feeds
        from .torch_models.hghub import get_untrained_model_with_inputs

        md = get_untrained_model_with_inputs(args.mid)
        feeds = onnx_feeds(md.model, kwargs=md.inputs)
    else:
        feeds = random_feeds(args.model1, dims)
    try:
        res = compare_onnx_models(
            args.model1, args.model2, feeds, atol=args.atol, rtol=args.rtol, method=args.method
        )
    except ValueError as e:  # the inputs do not fit one of the models
        print(f"compare: {e}", file=sys.stderr)
        return 1
    print(res.report(args.top))
    times = ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items())
    print(f"time: {times}")
    _write(res, args.output)
    return 0 if res.first_divergence is None else 1
