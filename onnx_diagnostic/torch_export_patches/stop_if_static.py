"""
``torch_export_patches(stop_if_static=1)``: the export stops with
:class:`DynamicDimensionSpecializedError` at the line of the model which turns a dimension
declared dynamic into a constant (``if x.shape[1] == 4``...), where
:func:`torch.export.export` would silently specialize it (``Dim.AUTO``) or only complain
at the end without saying where (``Dim.DYNAMIC``, ``Dim("name")``).

torch records a specialization in ``ShapeEnv._set_replacement(symbol, expression)``;
while the context is active that method is wrapped: an integer replacing a symbol of an
input dimension raises, and with ``stop_if_static >= 2`` an expression of other symbols
does too (two dimensions declared independent found equal). Leaving the context, normally
or through an exception, restores the original method (the same object).

>>> import torch
>>> class M(torch.nn.Module):
...     def forward(self, x):
...         return x + 1 if x.shape[0] == 8 else x - 1
>>> ds = ({0: torch.export.Dim.DYNAMIC},)
>>> try:
...     with stop_if_static_context(1):
...         torch.export.export(M(), (torch.rand(8, 3),), dynamic_shapes=ds)
... except DynamicDimensionSpecializedError as e:
...     print(e.sources, e.value)
["L['x'].size()[0]"] 8
"""

from __future__ import annotations

import contextlib
import re
import traceback
from collections.abc import Iterator
from typing import Any

__all__ = ["DynamicDimensionSpecializedError", "stop_if_static_context"]

_SKIPPED = (
    "/torch/",
    "\\torch\\",
    "/onnx_diagnostic/",
    "\\onnx_diagnostic\\",
    "/sympy/",
    "<frozen",
)


class DynamicDimensionSpecializedError(RuntimeError):
    """
    Raised inside :func:`torch_export_patches(stop_if_static=1)
    <onnx_diagnostic.torch_export_patches.torch_export_patches>` where a dynamic dimension
    becomes static.

    :param symbol: the symbol of the dimension (``s0``)
    :param sources: what it is (``L['x'].size()[0]``)
    :param value: what it became (``4``, ``s1``)
    :param line: the line of the model which did it (``file:line in function: code``)
    """

    def __init__(self, symbol: str, sources: list[str], value: str, line: str):
        self.symbol = symbol
        self.sources = sources
        self.value = value
        self.line = line
        what = " or ".join(sources) if sources else symbol
        super().__init__(
            f"the dynamic dimension {what} ({symbol}) becomes {value} at {line} "
            f"(torch_export_patches(stop_if_static=...) stops the export there; without it "
            f"torch.export would specialize the dimension)"
        )


def _user_line() -> str:
    """The innermost frame of the stack outside torch, sympy and this package."""
    for frame in reversed(traceback.extract_stack()):
        filename = frame.filename.replace("\\", "/")
        if not any(s.replace("\\", "/") in filename for s in _SKIPPED):
            return f"{frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
    return "<unknown line>"


def _sources(shape_env: Any, symbol: Any) -> list[str]:
    names = []
    for source in getattr(shape_env, "var_to_sources", {}).get(symbol, []):
        name = getattr(source, "name", None)
        name = name() if callable(name) else name  # a method in older versions of torch
        names.append(name if isinstance(name, str) else str(source))
    return names


def _is_input_dimension(shape_env: Any, symbol: Any) -> bool:
    """A backed symbol (``s0``...) with a source: an input dimension, not an unbacked
    ``u0`` nor a size created during the trace."""
    return bool(re.fullmatch(r"s\d+", str(symbol))) and bool(_sources(shape_env, symbol))


@contextlib.contextmanager
def stop_if_static_context(level: int = 1) -> Iterator[None]:
    """
    Raises :class:`DynamicDimensionSpecializedError` where a dynamic dimension becomes
    static while the context is active (see the module's documentation).

    :param level: 0 does nothing; 1 stops when a dimension becomes an integer; 2 also when
        it becomes an expression of other dimensions
    """
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        raise ValueError(f"stop_if_static must be an int >= 0, got {level!r}")
    if level == 0:
        yield
        return
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    had = "_set_replacement" in ShapeEnv.__dict__
    original = ShapeEnv.__dict__.get("_set_replacement")
    if original is None:
        raise RuntimeError(
            "stop_if_static: torch.fx.experimental.symbolic_shapes.ShapeEnv has no method "
            "_set_replacement in this version of torch, the option cannot work"
        )

    def _set_replacement(self: Any, a: Any, tgt: Any, msg: str) -> None:
        if tgt != self.replacements.get(a, None) and _is_input_dimension(self, a):
            constant = getattr(tgt, "is_number", False)
            other = (
                level >= 2
                and not constant
                and bool(getattr(tgt, "free_symbols", set()))
                and a not in tgt.free_symbols
            )
            if constant or other:
                raise DynamicDimensionSpecializedError(
                    str(a), _sources(self, a), str(tgt), _user_line()
                )
        return original(self, a, tgt, msg)

    ShapeEnv._set_replacement = _set_replacement
    try:
        yield
    finally:
        if had:
            ShapeEnv._set_replacement = original
        else:  # pragma: no cover (the method is defined on ShapeEnv)
            del ShapeEnv._set_replacement
