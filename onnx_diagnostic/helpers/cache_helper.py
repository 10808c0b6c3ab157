"""
Alias of :mod:`onnx_diagnostic.cache_helpers` (the path older scripts import).

>>> from onnx_diagnostic.helpers.cache_helper import make_dynamic_cache
>>> make_dynamic_cache([]).__class__.__name__
'DynamicCache'
"""

from ..cache_helpers import *  # noqa: F403
from ..cache_helpers import __all__  # noqa: F401
