"""
Evaluators of ONNX models, for debugging: :class:`ExtendedReferenceEvaluator` (the onnx
reference runtime and the contrib operators of onnxruntime), :class:`OnnxruntimeEvaluator`
(node by node with onnxruntime, every intermediate result available),
:class:`TorchOnnxEvaluator` (torch kernels, torch tensors in and out).

>>> from onnx_diagnostic.reference import ExtendedReferenceEvaluator
>>> ExtendedReferenceEvaluator.__name__
'ExtendedReferenceEvaluator'
"""

from .evaluator import ExtendedReferenceEvaluator
from .ort_evaluator import OnnxruntimeEvaluator
from .torch_evaluator import TorchOnnxEvaluator

__all__ = ["ExtendedReferenceEvaluator", "OnnxruntimeEvaluator", "TorchOnnxEvaluator"]
