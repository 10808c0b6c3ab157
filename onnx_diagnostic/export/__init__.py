"""
Export helpers: :class:`ModelInputs` (dynamic shapes guessed from several input sets)
and :func:`to_onnx`.

Both are loaded on first access, so that ``from onnx_diagnostic.export import ModelInputs``
does not import :epkg:`onnx`.

>>> from onnx_diagnostic.export import ModelInputs
>>> ModelInputs.__name__
'ModelInputs'
"""

from typing import Any

__all__ = ["ModelInputs", "to_onnx"]


def __getattr__(name: str) -> Any:
    if name == "ModelInputs":
        from .dynamic_shapes import ModelInputs

        return ModelInputs
    if name == "to_onnx":
        from .api import to_onnx

        return to_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
