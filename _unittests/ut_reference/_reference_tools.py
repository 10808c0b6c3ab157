"""Builds one-node models and runs them with onnxruntime, shared by the tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime


def one_node_model(
    op_type: str,
    inputs: list[np.ndarray | None],
    n_outputs: int = 1,
    domain: str = "",
    opset: int = 23,
    **attributes: Any,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A model with one node, its inputs named i0, i1... (None for a missing one), its
    outputs o0, o1..., and the feeds."""
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    feeds = {n: v for n, v in zip(names, inputs) if n}
    node = oh.make_node(
        op_type, names, [f"o{k}" for k in range(n_outputs)], domain=domain, **attributes
    )
    graph = oh.make_graph(
        [node],
        "one",
        [
            oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(v.dtype), None)
            for n, v in feeds.items()
        ],
        [oh.make_value_info(f"o{k}", onnx.TypeProto()) for k in range(n_outputs)],
    )
    opsets = [oh.make_opsetid("", opset), oh.make_opsetid("com.microsoft", 1)]
    return oh.make_model(graph, opset_imports=opsets, ir_version=10), feeds


def ort_run(model: onnx.ModelProto, feeds: dict[str, Any]) -> list[np.ndarray]:
    """Runs a model with onnxruntime on CPU."""
    sess = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return sess.run(None, feeds)


def tiny_llm_feeds(inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The feeds of the exported Tiny-LLM from the inputs get_tiny_llm returns."""
    cache = inputs.get("cache", inputs.get("past_key_values"))
    feeds = {k: inputs[k].numpy() for k in ("input_ids", "attention_mask", "position_ids")}
    for i, layer in enumerate(cache.layers):
        feeds[f"past_key_values.{i}.key"] = layer.keys.numpy()
        feeds[f"past_key_values.{i}.value"] = layer.values.numpy()
    return feeds
