"""
The subcommand ``sbs`` (side by side) of :mod:`onnx_diagnostic._command_lines`: an ONNX file
and the model id it was exported from, every intermediate result of torch and onnxruntime
compared (:func:`onnx_diagnostic.investigate.compare.compare_intermediates`), the full table
written as CSV or Excel.
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
        "worst modules. -o writes the whole table (.csv, or .xlsx with a sheet per module). "
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
    if not os.path.exists(args.onnx):
        raise FileNotFoundError(f"--onnx {args.onnx!r} does not exist")
    if args.top < 0:
        raise usage_error(f"--top must be >= 0, got {args.top}")
    model_kwargs = check(args.mid, args.mop)

    from .export.api import quiet_third_party_noise
    from .helpers.torch_helper import to_any, torch_deepcopy
    from .investigate.compare import compare_intermediates, load_weights_from_onnx
    from .torch_export_patches import torch_export_patches
    from .torch_models.hghub import get_untrained_model_with_inputs
    from .torch_models.validate import _is_terminal

    steps = ["model", "weights", "compare", "write"]
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
    bar.set_description("write")
    if args.output:
        if args.output.lower().endswith(".xlsx"):
            res.to_excel(args.output)
        else:
            res.to_csv(args.output)
    bar.update(1)
    bar.close()
    print(f"weights copied from the ONNX file: {len(loaded)}, not found: {len(missing)}")
    print(res.report(args.top))
    times = ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items())
    print(f"time: {times}")
    if args.output:
        print(f"table written to {args.output!r} ({len(res.table)} rows)")
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
