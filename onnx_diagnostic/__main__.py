"""
``python -m onnx_diagnostic <command>``, see :mod:`onnx_diagnostic._command_lines`.
"""

import sys

from ._command_lines import main

if __name__ == "__main__":
    sys.exit(main())
