"""
:func:`onnx_diagnostic.investigate.compare_intermediates` on every shipped text-generation
model id, with both exporters: untrained model from the shipped configuration (reduced as
``get_untrained_model_with_inputs`` does), export under ``torch_export_patches``, comparison
of every aligned intermediate result with atol = rtol = 1e-4 (float32). Prints one line per
(model id, exporter): aligned results, torch nodes, first divergence, max abs error, time.

::

    python _bench/bench_compare.py [--ids ID1,ID2] [--exporters custom,onnx-dynamo]
        [--layers N] [--csv out.csv]

Measured (2 cores, torch 2.13, transformers 5.24): see the docs page of the module
(``_doc/api/investigate.rst``).
"""

from __future__ import annotations

import argparse
import os
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from onnx_diagnostic.export.api import to_onnx  # noqa: E402
from onnx_diagnostic.helpers.torch_helper import torch_deepcopy  # noqa: E402
from onnx_diagnostic.investigate.compare import compare_intermediates  # noqa: E402
from onnx_diagnostic.torch_export_patches import torch_export_patches  # noqa: E402
from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs  # noqa: E402
from onnx_diagnostic.torch_models.hghub.hub_api import shipped_model_ids  # noqa: E402


def run_one(model_id: str, exporter: str, layers: int | None) -> dict:
    """Exports one model with one exporter and compares the intermediate results."""
    row: dict = dict(model_id=model_id, exporter=exporter)
    kw = {} if layers is None else dict(model_kwargs=dict(num_hidden_layers=layers))
    data = get_untrained_model_with_inputs(model_id, **kw)
    model, inputs, ds = data["model"], data["inputs"], data["dynamic_shapes"]
    try:
        with torch_export_patches(patch_transformers=True):
            begin = time.perf_counter()
            onx = to_onnx(
                model, kwargs=torch_deepcopy(inputs), dynamic_shapes=ds, exporter=exporter
            )
            row["export_s"] = time.perf_counter() - begin
            begin = time.perf_counter()
            res = compare_intermediates(
                model, onx, kwargs=torch_deepcopy(inputs), dynamic_shapes=ds
            )
            row["compare_s"] = time.perf_counter() - begin
    except Exception as e:  # one failing model must not stop the sweep
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        traceback.print_exc()
        return row
    first = res.first_divergence
    row.update(
        aligned=len(res.table),
        torch_nodes=res.n_torch_nodes,
        max_abs=float(res.table["max_abs"].max()) if len(res.table) else 0.0,
        diverged=len(res.diverged),
        first_divergence="" if first is None else f"{first['torch_node']} in {first['module']}",
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", default="", help="model ids, comma separated (all shipped)")
    parser.add_argument("--exporters", default="custom,onnx-dynamo")
    parser.add_argument("--layers", type=int, default=None, help="overrides num_hidden_layers")
    parser.add_argument("--csv", default="", help="writes the table there")
    args = parser.parse_args()
    ids = args.ids.split(",") if args.ids else shipped_model_ids("text-generation")
    rows = []
    for model_id in ids:
        for exporter in args.exporters.split(","):
            row = run_one(model_id, exporter, args.layers)
            print(
                " | ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )
            rows.append(row)
    df = pd.DataFrame(rows)
    print(df.to_string())
    if args.csv:
        df.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
