"""
Conversions of dynamic shapes and inputs before an export.

>>> import torch
>>> from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str
>>> use_dyn_not_str({"x": {0: "batch"}})["x"][0] is torch.export.Dim.DYNAMIC
True
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..helpers.compat import CACHE_ARG_NAMES

__all__ = [
    "convert_dynamic_axes_into_dynamic_shapes",
    "convert_legacy_caches",
    "use_dyn_not_str",
]


def use_dyn_not_str(dynamic_shapes: Any, default_value: Any = None) -> Any:
    """
    Replaces every string naming a dimension (``{0: "batch"}``) with
    ``torch.export.Dim.DYNAMIC``, through nested tuples, lists and dicts. Other values
    (``torch.export.Dim``, ints, None) are kept. The structure is copied, not modified.

    :param dynamic_shapes: dynamic shapes as tasks and :func:`get_tiny_llm` return them
    :param default_value: replacement of the strings, ``torch.export.Dim.DYNAMIC`` if None
    :return: the same structure with the strings replaced

    >>> use_dyn_not_str([{0: "batch", 2: "cache_length"}, None])
    [{0: DimHint(DYNAMIC), 2: DimHint(DYNAMIC)}, None]
    """
    value = torch.export.Dim.DYNAMIC if default_value is None else default_value
    return _replace_str(dynamic_shapes, value, "dynamic_shapes")


def _replace_str(ds: Any, value: Any, path: str) -> Any:
    if isinstance(ds, str):
        return value
    if isinstance(ds, dict):
        return {k: _replace_str(v, value, f"{path}[{k!r}]") for k, v in ds.items()}
    if isinstance(ds, tuple):
        return tuple(_replace_str(v, value, f"{path}[{i}]") for i, v in enumerate(ds))
    if isinstance(ds, list):
        return [_replace_str(v, value, f"{path}[{i}]") for i, v in enumerate(ds)]
    if ds is None or isinstance(ds, (int, torch.export.Dim)) or _is_dim_hint(ds):
        return ds
    raise TypeError(
        f"{path}: unexpected {type(ds).__name__} in dynamic shapes, expected a dict, a "
        "tuple, a list, a str, an int, None or a torch.export.Dim"
    )


def _is_dim_hint(obj: Any) -> bool:
    return type(obj).__name__ in {"_DimHint", "DimHint", "_Dim", "_DerivedDim", "Dim"}


def convert_legacy_caches(inputs: Any) -> Any:
    """
    Returns ``inputs`` where a cache (``past_key_values``, or ``cache`` as transformers 5.24
    names it) given in the legacy format (a tuple of ``(key, value)`` pairs, which
    transformers>=4.56 no longer accepts) becomes a DynamicCache. The argument keeps the
    name the user gave it (:func:`onnx_diagnostic.export.api.to_onnx` maps it to the name
    the model declares). Returns ``inputs`` itself (same object) when there is nothing to
    convert.

    >>> x = {"input_ids": None}
    >>> convert_legacy_caches(x) is x
    True
    """
    if isinstance(inputs, dict):
        new = None
        for name in CACHE_ARG_NAMES:
            pkv = inputs.get(name, None)
            if not _is_legacy_cache(pkv):
                continue
            from ..cache_helpers import CacheInputError, make_dynamic_cache

            new = dict(inputs) if new is None else new
            try:
                new[name] = make_dynamic_cache([tuple(p) for p in pkv])
            except CacheInputError as e:
                # Names the user's argument, not the internal one.
                raise CacheInputError(str(e).replace("key_value_pairs", name)) from e
        return inputs if new is None else new
    if isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], dict):
        converted = convert_legacy_caches(inputs[1])
        return inputs if converted is inputs[1] else (inputs[0], converted)
    return inputs


def _is_legacy_cache(obj: Any) -> bool:
    return (
        isinstance(obj, (tuple, list))
        and len(obj) > 0
        and all(
            isinstance(p, (tuple, list))
            and len(p) == 2
            and all(isinstance(t, torch.Tensor) for t in p)
            for p in obj
        )
    )


_AXIS_NAME = re.compile(r"^(?P<prefix>[^.]+)\.(?P<layer>\d+)\.(?P<kind>key|value)$")


def convert_dynamic_axes_into_dynamic_shapes(
    model: Any,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    dynamic_axes: dict[str, dict[int, str] | list[int]] | None = None,
    prefix_mapping: dict[str, str] | None = None,
    verbose: int = 0,
) -> tuple[tuple[()], dict[str, Any], dict[str, Any]]:
    """
    Converts the ``dynamic_axes`` of :func:`torch.onnx.export` (the former exporter, one
    entry per ONNX input name) into the ``dynamic_shapes`` of :func:`torch.export.export`:
    positional arguments become named ones (names taken from ``model.forward``), a legacy
    cache (a list of ``(key, value)`` pairs) becomes a DynamicCache, and the axes of
    ``past_key_values.<i>.key`` / ``.value`` become the dynamic shapes of that cache in the
    canonical flat order ``[key_0, value_0, key_1, ...]``. Axes of names which are not
    inputs (outputs such as ``logits`` or ``present.0.key``) are dropped.

    :param model: the model (or a function), its signature names the positional arguments
    :param args: positional arguments
    :param kwargs: named arguments
    :param dynamic_axes: ``{input name: {axis: dim name}}`` or ``{input name: [axis, ...]}``
    :param prefix_mapping: ONNX prefix -> argument name (``{"past_key_values": "cache"}``);
        ``past_key_values`` and ``cache`` are always mapped to the cache argument the model
        declares
    :param verbose: prints what is moved, converted or dropped
    :return: ``((), kwargs, dynamic_shapes)``
    :raises TypeError, ValueError: naming the argument or the axis which cannot be converted

    >>> import torch
    >>> class Model(torch.nn.Module):
    ...     def forward(self, input_ids, attention_mask=None):
    ...         return input_ids
    >>> _, kw, ds = convert_dynamic_axes_into_dynamic_shapes(
    ...     Model(), (torch.zeros(2, 3),), dynamic_axes={"input_ids": {0: "batch"}, "logits": [0]})
    >>> list(kw), ds
    (['input_ids'], {'input_ids': {0: 'batch'}})
    """
    import inspect

    from ..cache_helpers import make_dynamic_cache
    from ..helpers.compat import cache_arg_name

    if dynamic_axes is None:
        dynamic_axes = {}
    if not isinstance(dynamic_axes, dict):
        raise TypeError(f"dynamic_axes must be a dict, not {type(dynamic_axes).__name__}")
    forward = model.forward if isinstance(model, torch.nn.Module) else model
    new_kwargs: dict[str, Any] = {}
    if args:
        try:
            params = [
                p
                for p in inspect.signature(forward).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError) as e:
            raise TypeError(f"model: cannot read the signature of {forward!r}") from e
        if len(args) > len(params):
            raise ValueError(
                f"args has {len(args)} elements but the signature has {len(params)} "
                f"positional parameters ({[p.name for p in params]})"
            )
        for p, value in zip(params, args):
            if verbose:
                print(f"[convert_dynamic_axes_into_dynamic_shapes] args -> {p.name!r}")
            new_kwargs[p.name] = value
    for k, v in (kwargs or {}).items():
        if k in new_kwargs:
            raise ValueError(f"argument {k!r} is given in args and in kwargs")
        new_kwargs[k] = v
    cache_name = cache_arg_name(model)
    mapping = {name: cache_name for name in CACHE_ARG_NAMES}
    mapping.update(prefix_mapping or {})
    for k in list(new_kwargs):
        v = new_kwargs[k]
        if _is_legacy_cache(v) or (
            isinstance(v, list) and v and all(isinstance(p, (tuple, list)) for p in v)
        ):
            new_kwargs[k] = make_dynamic_cache([tuple(p) for p in v])
            if verbose:
                print(f"[convert_dynamic_axes_into_dynamic_shapes] {k!r} -> DynamicCache")
    dynamic_shapes: dict[str, Any] = {}
    for name, axes in dynamic_axes.items():
        if isinstance(axes, (list, tuple)):
            axes = {int(a): f"{name.replace('.', '_')}_{a}" for a in axes}
        if not isinstance(axes, dict):
            raise TypeError(f"dynamic_axes[{name!r}] must be a dict or a list of axes")
        if name in new_kwargs:
            dynamic_shapes[name] = dict(axes)
            continue
        match = _AXIS_NAME.match(name)
        target = mapping.get(match.group("prefix"), match.group("prefix")) if match else None
        if target is None or target not in new_kwargs:
            if verbose:
                print(f"[convert_dynamic_axes_into_dynamic_shapes] drops {name!r} (no input)")
            continue
        n_tensors = len(torch.utils._pytree.tree_flatten(new_kwargs[target])[0])
        index = 2 * int(match.group("layer")) + (match.group("kind") == "value")
        if index >= n_tensors:
            raise ValueError(
                f"dynamic_axes[{name!r}]: {target!r} holds {n_tensors // 2} layers only"
            )
        flat = dynamic_shapes.setdefault(target, [None] * n_tensors)
        flat[index] = dict(axes)
    for name, flat in dynamic_shapes.items():
        if isinstance(flat, list):
            # tensors without axes are static
            dynamic_shapes[name] = [{} if a is None else a for a in flat]
    return (), new_kwargs, dynamic_shapes
