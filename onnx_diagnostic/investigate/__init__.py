"""
Tools to look into what a model receives and how an exported model behaves.

>>> from onnx_diagnostic.investigate import InputObserver
>>> InputObserver().num_obs()
0
"""

from .compare import IntermediateComparison, compare_intermediates
from .input_observer import InputObserver

__all__ = ["InputObserver", "IntermediateComparison", "compare_intermediates"]
