"""
Untrained models of popular :epkg:`HuggingFace` model ids, built from configurations
shipped with the package (nothing is downloaded).

>>> from onnx_diagnostic.torch_models.hghub import get_untrained_model_with_inputs
>>> data = get_untrained_model_with_inputs("arnir0/Tiny-LLM")
>>> type(data["model"]).__name__
'LlamaForCausalLM'
"""

from .hub_api import get_pretrained_config, shipped_model_ids, task_from_id
from .model_inputs import get_untrained_model_with_inputs

__all__ = [
    "get_pretrained_config",
    "get_untrained_model_with_inputs",
    "shipped_model_ids",
    "task_from_id",
]
