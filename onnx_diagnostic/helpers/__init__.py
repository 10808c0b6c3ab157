"""
Helpers that need neither transformers nor onnx at import time.

>>> import torch
>>> from onnx_diagnostic.helpers import string_type
>>> string_type((torch.zeros((2, 30), dtype=torch.int64),), with_shape=True)
'(T7s2x30,)'
"""

from .helper import flatten_object, max_diff, size_type, string_diff, string_type

__all__ = ["flatten_object", "max_diff", "size_type", "string_diff", "string_type"]
