"""
Models to test an export with, built untrained so that nothing is downloaded:
:func:`onnx_diagnostic.torch_models.llms.get_tiny_llm` and
:func:`onnx_diagnostic.torch_models.hghub.get_untrained_model_with_inputs`.
"""

from .model_data import ModelData, weights_size

__all__ = ["ModelData", "weights_size"]
