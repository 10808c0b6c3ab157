"""
Export helpers: :class:`ModelInputs` (dynamic shapes guessed from several input sets),
:func:`to_onnx`, :class:`CoupleInputsDynamicShapes` (inputs and dynamic shapes walked
together), :func:`validate_ep` and :func:`compare_modules` (an exported program against its
model).

Everything is loaded on first access, so that ``from onnx_diagnostic.export import
ModelInputs`` does not import :epkg:`onnx`.

>>> from onnx_diagnostic.export import ModelInputs, validate_ep
>>> ModelInputs.__name__, validate_ep.__name__
('ModelInputs', 'validate_ep')
"""

import importlib
from typing import Any

__all__ = [
    "CoupleInputsDynamicShapes",
    "ModelInputs",
    "compare_modules",
    "to_onnx",
    "validate_ep",
]

_WHERE = {
    "CoupleInputsDynamicShapes": ".couple_inputs",
    "ModelInputs": ".dynamic_shapes",
    "compare_modules": ".validate",
    "to_onnx": ".api",
    "validate_ep": ".validate",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
