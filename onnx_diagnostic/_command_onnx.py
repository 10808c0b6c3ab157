"""
The subcommands of ``python -m onnx_diagnostic`` working on ONNX files: ``print``, ``dot``,
``find``, ``stats``, ``lighten``, ``unlighten``, ``optimize``, ``partition``; each one a thin
layer over :mod:`onnx_diagnostic.helpers.onnx_helper` (the parser is in
:mod:`onnx_diagnostic._command_lines`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from typing import Any


def _print_model(model: Any) -> None:
    from .helpers.onnx_helper import onnx_stats

    st = onnx_stats(model)
    opsets = ", ".join(f"{k}:{v}" for k, v in st["opsets"].items())
    print(f"ONNX model, ir_version={model.ir_version}, opsets: {opsets}")
    for kind in ("input", "output"):
        for text in st[f"{kind}s"]:
            print(f"  {kind} {text}")
    size = st["initializers_size"] / 2**20
    print(f"  {st['n_nodes']} nodes, {st['n_initializers']} initializers ({size:.3g} MB)")
    for op, n in st["op_types"].items():
        print(f"    {op}: {n}")


def _cmd_print(args: argparse.Namespace) -> int:
    from .helpers import string_type
    from .helpers.mini_onnx_builder import DUMP_METADATA_KEY, create_input_tensors_from_onnx_model
    from .helpers.onnx_helper import load_onnx, pretty_onnx

    model = load_onnx(args.file)
    if DUMP_METADATA_KEY not in {p.key for p in model.metadata_props}:
        if args.format == "pretty":
            print(pretty_onnx(model))
        else:
            _print_model(model)
        return 0
    obj = create_input_tensors_from_onnx_model(model)
    if isinstance(obj, dict):
        print(f"dump with {len(obj)} entries")
        for key, value in obj.items():
            print(f"{key}: {string_type(value, with_shape=True, with_min_max=True)}")
    else:
        print(string_type(obj, with_shape=True, with_min_max=True))
    return 0


def _cmd_dot(args: argparse.Namespace) -> int:
    from .helpers.onnx_helper import load_onnx, to_dot

    out = args.output
    from ._command_lines import UsageError

    ext = os.path.splitext(out)[-1].lower() if out else ""
    if out and ext not in (".dot", ".png"):
        raise UsageError(f"-o {out!r}: the graph is written as .dot or .png")
    binary = shutil.which("dot")
    if ext == ".png" and binary is None:
        print(
            "dot: drawing a .png needs the Graphviz binary 'dot' (not found in PATH); "
            "write a .dot file instead: -o model.dot",
            file=sys.stderr,
        )
        return 1
    text = to_dot(load_onnx(args.file, load_external_data=False))
    if not out:
        print(text)
        return 0
    if ext == ".dot":
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        subprocess.run([binary, "-Tpng", "-o", out], input=text.encode(), check=True)  # type: ignore[list-item]
    print(f"wrote {out!r}")
    return 0


def _cmd_find(args: argparse.Namespace) -> int:
    from .helpers.onnx_helper import load_onnx, onnx_find

    model = load_onnx(args.file, load_external_data=False)
    nodes = onnx_find(model, args.name, verbose=1)
    graph_io = {i.name: "input" for i in model.graph.input}
    graph_io.update({i.name: "initializer" for i in model.graph.initializer})
    graph_io.update({o.name: "output" for o in model.graph.output})
    for name in args.name:
        if name in graph_io:
            print(f"{name} is a graph {graph_io[name]}")
    missing = [
        n for n in args.name if n not in graph_io and not any(n in nd.output for nd in nodes)
    ]
    if missing:
        print(f"find: no node produces {', '.join(map(repr, missing))}", file=sys.stderr)
        return 1
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from .helpers.onnx_helper import load_onnx, onnx_stats

    st = onnx_stats(load_onnx(args.file))
    if args.format == "json":
        print(json.dumps(st, indent=2))
        return 0
    print(f"{st['n_nodes']} nodes, {len(st['op_types'])} node types")
    width = max((len(k) for k in st["op_types"]), default=0)
    for op, n in st["op_types"].items():
        print(f"  {op:<{width}}  {n}")
    total = st["initializers_size"] / 2**20
    print(f"{st['n_initializers']} initializers, {total:.3f} MB")
    top = st["initializers"][: args.top]
    width = max((len(r["name"]) for r in top), default=0)
    for r in top:
        shape = "x".join(map(str, r["shape"])) or "scalar"
        print(f"  {r['name']:<{width}}  {r['bytes'] / 2**20:9.3f} MB  {r['dtype']}  {shape}")
    if len(st["initializers"]) > len(top):
        print(f"  ... {len(st['initializers']) - len(top)} more (--top N)")
    return 0


def _save(model: Any, filename: str) -> None:
    import onnx

    folder = os.path.dirname(filename)
    if folder:
        os.makedirs(folder, exist_ok=True)
    onnx.save(model, filename)


def _cmd_lighten(args: argparse.Namespace) -> int:
    from .helpers.onnx_helper import load_onnx, onnx_lighten

    light, stats = onnx_lighten(load_onnx(args.file))
    _save(light, args.output)
    with open(f"{args.output}.stats", "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    print(f"removed {len(stats)} initializers, wrote {args.output!r} and {args.output}.stats")
    return 0


def _cmd_unlighten(args: argparse.Namespace) -> int:
    from .helpers.onnx_helper import load_onnx, onnx_unlighten

    load_onnx(args.file, load_external_data=False)  # a clear error if not ONNX
    model = onnx_unlighten(args.file)
    _save(model, args.output)
    print(f"wrote {args.output!r}")
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from .helpers.onnx_helper import load_onnx, optimize_onnx

    model, counts = optimize_onnx(load_onnx(args.file), method=args.method)
    _save(model, args.output)
    for name, n in counts.items():
        print(f"  {name}: {n}")
    print(f"wrote {args.output!r} ({len(model.graph.node)} nodes)")
    return 0


def _cmd_partition(args: argparse.Namespace) -> int:
    from .helpers.onnx_helper import load_onnx, onnx_partition

    try:
        head, tail = onnx_partition(load_onnx(args.file), args.name)
    except ValueError as e:
        print(f"partition: {e}", file=sys.stderr)
        return 1
    _save(head, args.output[0])
    _save(tail, args.output[1])
    print(
        f"wrote {args.output[0]!r} ({len(head.graph.node)} nodes) and "
        f"{args.output[1]!r} ({len(tail.graph.node)} nodes)"
    )
    return 0
