"""
Untrained models of popular :epkg:`HuggingFace` model ids, built from configurations
shipped with the package (nothing is downloaded).
"""

__all__: list[str] = []
