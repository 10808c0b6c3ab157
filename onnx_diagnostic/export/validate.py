"""
Checks an exported program gives the results of the model it comes from:
:func:`compare_modules` on one input set, :func:`validate_ep` on the given inputs and on
inputs whose dynamic dimensions take other sizes.

>>> import torch
>>> from onnx_diagnostic.export import CoupleInputsDynamicShapes, validate_ep
>>> class Model(torch.nn.Module):
...     def forward(self, x, y):
...         return x + y
>>> x, y = torch.randn(5, 6), torch.randn(1, 6)
>>> ds = ({0: "a", 1: "b"}, {1: "b"})
>>> export_ds = CoupleInputsDynamicShapes((x, y), {}, ds).replace_string_by()
>>> ep = torch.export.export(Model(), (x, y), dynamic_shapes=export_ds)
>>> res = validate_ep(ep, Model(), args=(x, y), dynamic_shapes=ds,
...                   values_to_try={"a": [2, 7], "b": [3]})
>>> [r["args"][0].shape[0] for r in res], max(r["diff"]["abs"] for r in res)
([5, 2, 7], 0.0)
"""

from __future__ import annotations

import inspect
import itertools
import time
from typing import Any

import torch

from ..helpers.helper import max_diff, string_type
from ..helpers.torch_helper import torch_deepcopy
from .couple_inputs import CoupleInputsDynamicShapes

__all__ = ["compare_modules", "validate_ep"]


def _diff_text(diff: dict[str, Any]) -> str:
    text = f"abs={diff['abs']}, rel={diff['rel']}, n={diff.get('n')}"
    if diff.get("where"):
        text += f" at {diff['where']}"
    if "error" in diff:
        text += f", {diff['error']}"
    return text


def compare_modules(
    modep: torch.nn.Module | Any,
    mod: torch.nn.Module | None = None,
    args: tuple | None = None,
    kwargs: dict[str, Any] | None = None,
    copy: bool = False,
    exc: bool = True,
    verbose: int = 0,
    atol: float = 1e-2,
    rtol: float = 1e-1,
) -> dict[str, Any]:
    """
    Runs ``modep`` (usually ``ep.module()``) and, if given, ``mod`` (the model producing the
    expected values) on the same inputs and compares their outputs with
    :func:`onnx_diagnostic.helpers.max_diff`.

    :param modep: the module to check (an :class:`torch.export.ExportedProgram` is turned
        into its module)
    :param mod: the reference module, None to only run ``modep``
    :param args: positional arguments
    :param kwargs: named arguments
    :param copy: each module runs on a deep copy of the inputs (they may modify them)
    :param exc: raises an ``AssertionError`` if the differences exceed ``atol`` or ``rtol``
    :param verbose: prints what it runs and the differences
    :param atol: absolute tolerance
    :param rtol: relative tolerance
    :return: ``dict(args=, kwargs=, got=)`` plus ``expected=`` and ``diff=`` if ``mod``
        is given

    >>> import torch
    >>> m = torch.nn.Linear(2, 2)
    >>> compare_modules(m, m, args=(torch.ones(1, 2),))["diff"]["abs"]
    0.0
    """
    if isinstance(modep, torch.export.ExportedProgram):
        modep = modep.module()
    if not callable(modep):
        raise TypeError(f"modep must be a module or an ExportedProgram, not {type(modep)}")
    if mod is not None and not callable(mod):
        raise TypeError(f"mod must be a module, not {type(mod)}")
    args = () if args is None else args
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple, not {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")

    def _inputs() -> tuple[tuple, dict]:
        return (torch_deepcopy(args), torch_deepcopy(kwargs)) if copy else (args, kwargs)

    begin = time.perf_counter()
    if verbose:
        print(
            f"[compare_modules] run with args={string_type(args, with_shape=True)}, "
            f"kwargs={string_type(kwargs, with_shape=True)}"
        )
    a, kw = _inputs()
    got = modep(*a, **kw)
    if verbose:
        print(
            f"[compare_modules] done in {time.perf_counter() - begin:.3f}s, "
            f"got={string_type(got, with_shape=True)}"
        )
    if mod is None:
        return dict(args=args, kwargs=kwargs, got=got)
    a, kw = _inputs()
    expected = mod(*a, **kw)
    diff = max_diff(expected, got)
    if verbose:
        print(f"[compare_modules] expected={string_type(expected, with_shape=True)}")
        print(f"[compare_modules] discrepancies {_diff_text(diff)}")
    if exc and ("error" in diff or not (diff["abs"] <= atol and diff["rel"] <= rtol)):
        raise AssertionError(
            f"discrepancies higher than expected (atol={atol}, rtol={rtol}): "
            f"{_diff_text(diff)}, inputs args={string_type(args, with_shape=True)}, "
            f"kwargs={string_type(kwargs, with_shape=True)}"
        )
    return dict(args=args, kwargs=kwargs, expected=expected, got=got, diff=diff)


def validate_ep(
    ep: torch.export.ExportedProgram | torch.nn.Module,
    mod: torch.nn.Module | None = None,
    args: tuple | None = None,
    kwargs: dict[str, Any] | None = None,
    copy: bool = False,
    dynamic_shapes: Any = None,
    values_to_try: dict[str, list[int]] | None = None,
    exc: bool = True,
    verbose: int = 0,
    atol: float = 1e-2,
    rtol: float = 1e-1,
) -> list[dict[str, Any]]:
    """
    Validates an exported program: compares it to ``mod`` on the given inputs
    (:func:`compare_modules`), then, if ``dynamic_shapes`` and ``values_to_try`` are given,
    on every combination of the sizes ``values_to_try`` gives to the named dynamic
    dimensions, the other dynamic dimensions taking their size + 1 (inputs built by
    :meth:`CoupleInputsDynamicShapes.change_dynamic_dimensions`, which repeats the
    existing values): a dimension torch.export made static fails there.

    :param ep: the exported program (or its module)
    :param mod: the reference model
    :param args: positional arguments
    :param kwargs: named arguments
    :param copy: runs on deep copies of the inputs
    :param dynamic_shapes: the dynamic shapes, dimensions named by strings or
        :class:`torch.export.Dim`
    :param values_to_try: ``{name: [size, ...]}`` for the named dynamic dimensions
    :param exc: raises ``AssertionError`` when the differences are too high
    :param verbose: verbosity
    :param atol: absolute tolerance
    :param rtol: relative tolerance
    :return: the list of the results of :func:`compare_modules`, the given inputs first
    """
    if (dynamic_shapes is None) != (not values_to_try):
        raise ValueError(
            "validate_ep: dynamic_shapes and values_to_try go together, give both or none"
        )
    modep = ep.module() if isinstance(ep, torch.export.ExportedProgram) else ep
    results = [
        compare_modules(
            modep, mod, args, kwargs, copy=copy, exc=exc, verbose=verbose, atol=atol, rtol=rtol
        )
    ]
    if not values_to_try:
        return results
    for name, values in values_to_try.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"values_to_try[{name!r}] must be a non empty list of sizes")
    names = None
    if args and kwargs:
        forward = mod.forward if isinstance(mod, torch.nn.Module) else modep.forward
        names = list(inspect.signature(forward).parameters)
    cpl = CoupleInputsDynamicShapes(args, kwargs, dynamic_shapes, args_names=names)
    keys = list(values_to_try)
    combinations = list(itertools.product(*(values_to_try[k] for k in keys)))
    for i, sizes in enumerate(combinations):
        desired = dict(zip(keys, sizes))
        if verbose:
            print(f"[validate_ep] try {i + 1}/{len(combinations)}: {desired}")
        new_args, new_kwargs = cpl.change_dynamic_dimensions(desired, args_kwargs=True)
        results.append(
            compare_modules(
                modep,
                mod,
                new_args,
                new_kwargs,
                copy=copy,
                exc=exc,
                verbose=max(verbose - 1, 0),
                atol=atol,
                rtol=rtol,
            )
        )
    return results
