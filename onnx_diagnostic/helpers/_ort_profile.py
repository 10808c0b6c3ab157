"""
Reads the JSON profile onnxruntime writes (``SessionOptions.enable_profiling = True``,
``session.end_profiling()`` returns its file name) into a :class:`pandas.DataFrame`, and
plots where the time goes. Re-exported by :mod:`onnx_diagnostic.helpers.rt_helper`.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["js_profile_to_dataframe", "plot_ort_profile"]

#: Columns of the table of events, in this order.
_COLUMNS = (
    "it==0",
    "iteration",
    "cat",
    "event_name",
    "name",
    "op_name",
    "provider",
    "node_index",
    "dur",
    "ts",
    "input_type_shape",
    "output_type_shape",
)


#: What a node event measures, the end of its name (``Add_0_kernel_time``).
_NODE_EVENTS = ("kernel_time", "fence_before", "fence_after")


def _shape_text(items: Any) -> str:
    """``[{'float': [4, 2]}, {'int64': []}]`` -> ``'float[4x2],int64[]'``."""
    if not isinstance(items, list):
        return ""
    parts = []
    for item in items:
        for dtype, shape in dict(item).items():
            parts.append(f"{dtype}[{'x'.join(map(str, shape))}]")
    return ",".join(parts)


def _load_events(filename_or_events: Any) -> list[dict[str, Any]]:
    if isinstance(filename_or_events, list):
        return filename_or_events
    if not isinstance(filename_or_events, (str, os.PathLike)):
        raise TypeError(
            "js_profile_to_dataframe: filename must be the name of an onnxruntime profile "
            f"or its list of events, not {type(filename_or_events).__name__}"
        )
    if not os.path.isfile(filename_or_events):
        raise FileNotFoundError(
            f"js_profile_to_dataframe: filename={str(filename_or_events)!r} does not exist"
        )
    with open(filename_or_events, encoding="utf-8") as f:
        try:
            events = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"js_profile_to_dataframe: {str(filename_or_events)!r} is not a JSON profile "
                f"of onnxruntime: {e}"
            ) from e
    if not isinstance(events, list):
        raise ValueError(
            f"js_profile_to_dataframe: {str(filename_or_events)!r} holds a "
            f"{type(events).__name__}, an onnxruntime profile is a list of events"
        )
    return events


def js_profile_to_dataframe(
    filename: str | os.PathLike | list[dict[str, Any]],
    as_df: bool = True,
    first_it_out: bool = False,
    agg: bool = False,
    agg_op_name: bool = True,
    with_shape: bool = False,
) -> Any:
    """
    Turns the JSON profile of :epkg:`onnxruntime` into a table, one row per event:
    ``cat`` (``Session`` or ``Node``), ``name``, ``event_name`` (``kernel_time``,
    ``fence_before``, ``model_run``...), ``op_name``, ``provider``, ``node_index``, ``dur``
    (microseconds), ``ts``, the shapes of the inputs and outputs (``float[4x2],int64[]``),
    ``iteration`` (the run the event belongs to, counted with the ``model_run`` events) and
    ``it==0`` (the first run, usually slower).

    :param filename: the file ``session.end_profiling()`` returned, or its events
    :param as_df: False returns the list of rows (dictionaries), True a DataFrame
    :param first_it_out: leaves the first run out (when ``agg`` is True)
    :param agg: aggregates the kernel times: one row per operator type (``agg_op_name``)
        or per node, with the columns ``dur`` (total), ``count`` and ``pct`` (share of the
        total), sorted by decreasing time
    :param agg_op_name: aggregates by operator type, by node name otherwise
    :param with_shape: adds the input shapes to the aggregation key
    :return: a DataFrame (or a list of dictionaries if ``as_df`` is False and ``agg`` too)

    >>> import os, numpy as np, onnx.helper as oh, onnxruntime
    >>> model = oh.make_model(
    ...     oh.make_graph([oh.make_node("Add", ["X", "X"], ["Y"])], "g",
    ...                   [oh.make_tensor_value_info("X", 1, [None])],
    ...                   [oh.make_tensor_value_info("Y", 1, [None])]),
    ...     opset_imports=[oh.make_opsetid("", 18)], ir_version=9)
    >>> opts = onnxruntime.SessionOptions()
    >>> opts.enable_profiling = True
    >>> sess = onnxruntime.InferenceSession(
    ...     model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    >>> for _ in range(3):
    ...     _ = sess.run(None, {"X": np.ones(4, dtype=np.float32)})
    >>> profile = sess.end_profiling()
    >>> df = js_profile_to_dataframe(profile, agg=True)
    >>> list(df.index), int(df["count"].iloc[0])
    (['Add'], 3)
    >>> os.remove(profile)
    """
    events = _load_events(filename)
    rows = []
    run = 0  # the events of a run come before its model_run event
    for i, event in enumerate(events):
        if not isinstance(event, dict) or "name" not in event:
            raise ValueError(f"js_profile_to_dataframe: event {i} is not a profile event: {event}")
        name, cat = event["name"], event.get("cat", "")
        args = event.get("args", {}) or {}
        suffix = next((s for s in _NODE_EVENTS if name.endswith(f"_{s}")), None)
        before_runs = cat == "Session" and name in (
            "model_loading_array",
            "model_loading_uri",
            "session_initialization",
        )
        rows.append(
            {
                "it==0": int(run == 0 and not before_runs),
                "iteration": -1 if before_runs else run,
                "cat": cat,
                "event_name": suffix if cat == "Node" and suffix else name,
                "name": name,
                "op_name": args.get("op_name", ""),
                "provider": args.get("provider", ""),
                "node_index": int(args["node_index"]) if "node_index" in args else -1,
                "dur": int(event.get("dur", 0)),
                "ts": int(event.get("ts", 0)),
                "input_type_shape": _shape_text(args.get("input_type_shape")),
                "output_type_shape": _shape_text(args.get("output_type_shape")),
            }
        )
        if cat == "Session" and name == "model_run":
            run += 1
    if agg:
        return _aggregate(rows, first_it_out, agg_op_name, with_shape, as_df)
    if not as_df:
        return rows
    import pandas

    return pandas.DataFrame(rows, columns=list(_COLUMNS))


def _aggregate(
    rows: list[dict[str, Any]],
    first_it_out: bool,
    agg_op_name: bool,
    with_shape: bool,
    as_df: bool,
) -> Any:
    kernels = [
        r
        for r in rows
        if r["cat"] == "Node"
        and r["event_name"] == "kernel_time"
        and not (first_it_out and r["iteration"] == 0)
    ]
    totals: dict[str, list[int]] = {}
    for r in kernels:
        key = r["op_name"] if agg_op_name else r["name"].rsplit("_kernel_time", 1)[0]
        if with_shape:
            key = f"{key}({r['input_type_shape']})"
        entry = totals.setdefault(key, [0, 0])
        entry[0] += r["dur"]
        entry[1] += 1
    total = sum(v[0] for v in totals.values()) or 1
    out = [
        {"key": k, "dur": v[0], "count": v[1], "pct": 100.0 * v[0] / total}
        for k, v in sorted(totals.items(), key=lambda kv: (-kv[1][0], kv[0]))
    ]
    if not as_df:
        return out
    import pandas

    return pandas.DataFrame(out, columns=["key", "dur", "count", "pct"]).set_index("key")


def plot_ort_profile(df: Any, ax0: Any = None, ax1: Any = None, title: str | None = None) -> Any:
    """
    Plots a profile read by :func:`js_profile_to_dataframe` (not aggregated): the total
    kernel time per operator type (``ax0``), and the number of calls per operator type
    (``ax1``, when given). Needs :epkg:`matplotlib`.

    :param df: the DataFrame of :func:`js_profile_to_dataframe`
    :param ax0: the axis of the times, a new figure if None
    :param ax1: the axis of the counts, not drawn if None
    :param title: title of ``ax0``
    :return: ``ax0``

    >>> import pandas
    >>> df = pandas.DataFrame(dict(cat=["Node", "Node"], event_name=["kernel_time"] * 2,
    ...     op_name=["Add", "MatMul"], dur=[3, 9], iteration=[0, 0]))
    >>> ax = plot_ort_profile(df, title="demo")  # doctest: +SKIP
    """
    for col in ("cat", "event_name", "op_name", "dur"):
        if col not in getattr(df, "columns", ()):
            raise ValueError(
                f"plot_ort_profile: df has no column {col!r}, give the table "
                "js_profile_to_dataframe returns (agg=False)"
            )
    kernels = df[(df["cat"] == "Node") & (df["event_name"] == "kernel_time")]
    if kernels.empty:
        raise ValueError("plot_ort_profile: the profile has no kernel_time event")
    grouped = kernels.groupby("op_name")["dur"].agg(["sum", "count"]).sort_values("sum")
    if ax0 is None:
        import matplotlib.pyplot as plt

        _, ax0 = plt.subplots(1, 1, figsize=(6, max(2, 0.3 * len(grouped))))
    grouped["sum"].plot.barh(ax=ax0)
    ax0.set_xlabel("total kernel time (µs)")
    ax0.set_ylabel("")
    if title:
        ax0.set_title(title)
    if ax1 is not None:
        grouped["count"].plot.barh(ax=ax1)
        ax1.set_xlabel("number of calls")
        ax1.set_ylabel("")
    return ax0
