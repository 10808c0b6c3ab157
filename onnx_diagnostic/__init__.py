"""
onnx_diagnostic: export PyTorch and transformers models (LLMs above all) to ONNX
and check the result.

Every piece is a small tool a script composes: record the inputs
(:func:`onnx_diagnostic.helpers.torch_helper.steal_forward`,
:class:`onnx_diagnostic.investigate.input_observer.InputObserver`), infer the dynamic shapes
(:class:`onnx_diagnostic.export.ModelInputs`), build caches
(:mod:`onnx_diagnostic.cache_helpers`), make export work
(:func:`onnx_diagnostic.torch_export_patches.torch_export_patches`), build test models without
downloading anything (:mod:`onnx_diagnostic.torch_models`, :mod:`onnx_diagnostic.tasks`),
export (:func:`onnx_diagnostic.export.api.to_onnx`), run and compare
(:func:`onnx_diagnostic.helpers.rt_helper.onnx_generate`,
:func:`onnx_diagnostic.helpers.max_diff`).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
