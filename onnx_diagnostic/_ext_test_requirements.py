"""
Version checks and skip decorators of :mod:`onnx_diagnostic.ext_test_case`
(import them from there): ``has_*`` tell if a package is installed and recent enough,
``requires_*`` skip a test otherwise, ``skipif_ci_*`` skip it on a CI platform.
Importing it does not import :epkg:`transformers` nor :epkg:`onnxruntime`.

>>> from onnx_diagnostic.ext_test_case import has_torch, requires_torch
>>> has_torch("2.0"), requires_torch("99")(lambda self: 0).__unittest_skip__
(True, True)
"""

from __future__ import annotations

import importlib
import os
import sys
import unittest
from collections.abc import Callable
from typing import Any

import torch

from .helpers import compat

#: values of an environment variable meaning *enabled* (``LONGTEST=1``, ``DEBUG=true``...)
BOOLEAN_VALUES = (1, "1", True, "True", "true", "TRUE")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0") in BOOLEAN_VALUES


def _no_skip(f: Any) -> Any:
    return f


def _reason(text: str, msg: str) -> str:
    return f"{text}: {msg}" if msg else text


# ----------------------------------------------------------------------------------------
# platforms
# ----------------------------------------------------------------------------------------


def is_azure() -> bool:
    """
    Tells if the process runs on an Azure DevOps pipeline
    (the environment variable ``AZURE_HTTP_USER_AGENT`` is set).

    >>> isinstance(is_azure(), bool)
    True
    """
    return os.environ.get("AZURE_HTTP_USER_AGENT", "undefined") != "undefined"


def is_windows() -> bool:
    """
    Tells if the platform is Windows.

    >>> is_windows() == (__import__("sys").platform == "win32")
    True
    """
    return sys.platform == "win32"


def is_apple() -> bool:
    """
    Tells if the platform is macOS.

    >>> is_apple() == (__import__("sys").platform == "darwin")
    True
    """
    return sys.platform == "darwin"


def is_linux() -> bool:
    """
    Tells if the platform is Linux.

    >>> is_linux() == __import__("sys").platform.startswith("linux")
    True
    """
    return sys.platform.startswith("linux")


def _skipif_ci(on_platform: bool, text: str, msg: str) -> Callable:
    if on_platform and is_azure():
        return unittest.skip(_reason(text, msg))
    return _no_skip


def skipif_ci_windows(msg: str = "") -> Callable:
    """
    Skips a test when it runs on an Azure pipeline (:func:`is_azure`) on Windows.

    >>> @skipif_ci_windows("too slow there")
    ... def test_long(self): ...
    >>> callable(test_long)
    True
    """
    return _skipif_ci(is_windows(), "does not work on the Windows CI", msg)


def skipif_ci_linux(msg: str = "") -> Callable:
    """
    Skips a test when it runs on an Azure pipeline (:func:`is_azure`) on Linux.

    >>> callable(skipif_ci_linux("too slow")(lambda self: None))
    True
    """
    return _skipif_ci(is_linux(), "does not work on the Linux CI", msg)


def skipif_ci_apple(msg: str = "") -> Callable:
    """
    Skips a test when it runs on an Azure pipeline (:func:`is_azure`) on macOS.

    >>> callable(skipif_ci_apple("too slow")(lambda self: None))
    True
    """
    return _skipif_ci(is_apple(), "does not work on the macOS CI", msg)


# ----------------------------------------------------------------------------------------
# versions
# ----------------------------------------------------------------------------------------


def _installed_version(module: str) -> str | None:
    """
    Returns the version of an installed module, ``""`` if it has none (a development
    build), None if it cannot be imported.
    """
    try:
        mod = importlib.import_module(module)
    except Exception:  # ImportError, or a broken native extension (OSError...)
        return None
    return str(getattr(mod, "__version__", ""))


def _has_module(module: str, version: str = "") -> bool:
    installed = _installed_version(module)
    if installed is None:
        return False
    if not version or not installed:
        return True
    return compat.version_at_least(installed, version)


def _requires_module(module: str, label: str, version: str, msg: str) -> Callable:
    installed = _installed_version(module)
    if installed is None:
        return unittest.skip(_reason(f"{label} not installed", msg))
    if version and installed and not compat.version_at_least(installed, version):
        return unittest.skip(_reason(f"{label} {installed} < {version}", msg))
    return _no_skip


def has_transformers(version: str = "") -> bool:
    """
    Tells if the installed :epkg:`transformers` is at least ``version``
    (installed at all if ``version`` is empty).

    >>> has_transformers("4.0")
    True
    """
    installed = compat.transformers_version()
    return installed != "0" and (not version or compat.version_at_least(installed, version))


def has_torch(version: str = "") -> bool:
    """
    Tells if the installed :epkg:`torch` is at least ``version`` (``"2.9"``).

    >>> has_torch("100.0")
    False
    """
    return not version or compat.version_at_least(compat.torch_version(), version)


def has_onnxruntime(version: str = "") -> bool:
    """
    Tells if :epkg:`onnxruntime` is installed and at least ``version``.

    >>> isinstance(has_onnxruntime("1.0"), bool)
    True
    """
    return _has_module("onnxruntime", version)


def has_onnxscript(version: str = "") -> bool:
    """
    Tells if :epkg:`onnxscript` is installed and at least ``version``
    (a development build without ``__version__`` is recent enough).

    >>> has_onnxscript("999.0")
    False
    """
    return _has_module("onnxscript", version)


def has_onnx_ir(version: str = "") -> bool:
    """
    Tells if ``onnx-ir`` is installed and at least ``version``.

    >>> has_onnx_ir("999.0")
    False
    """
    return _has_module("onnx_ir", version)


def has_sklearn(version: str = "") -> bool:
    """
    Tells if ``scikit-learn`` is installed and at least ``version``.

    >>> has_sklearn("999.0")
    False
    """
    return _has_module("sklearn", version)


def has_onnxruntime_training(push_back_batch: bool = False) -> bool:
    """
    Tells if :epkg:`onnxruntime` is a training build (``onnxruntime.training``),
    with ``OrtValueVector.push_back_batch`` if ``push_back_batch`` is True.

    >>> isinstance(has_onnxruntime_training(), bool)
    True
    """
    try:
        from onnxruntime import training  # noqa: F401
    except (ImportError, AttributeError):
        return False
    if push_back_batch:
        try:
            from onnxruntime.capi.onnxruntime_pybind11_state import OrtValueVector
        except ImportError:
            return False
        return hasattr(OrtValueVector, "push_back_batch")
    return True


def has_onnxruntime_genai() -> bool:
    """
    Tells if ``onnxruntime-genai`` can be imported.

    >>> isinstance(has_onnxruntime_genai(), bool)
    True
    """
    return _installed_version("onnxruntime_genai") is not None


def has_cuda() -> bool:
    """
    Tells if torch sees at least one CUDA device (``torch.cuda.device_count() > 0``).

    >>> isinstance(has_cuda(), bool)
    True
    """
    return torch.cuda.device_count() > 0


def unit_test_going() -> bool:
    """
    Tells if the environment variable ``UNITTEST_GOING`` is set to ``1``:
    examples and scripts then switch to a faster scenario.

    >>> import os
    >>> unit_test_going() == (os.environ.get("UNITTEST_GOING", "0") == "1")
    True
    """
    return os.environ.get("UNITTEST_GOING", "0").strip() == "1"


# ----------------------------------------------------------------------------------------
# decorators
# ----------------------------------------------------------------------------------------


def requires_transformers(
    version: str, msg: str = "", or_older_than: str | None = None
) -> Callable:
    """
    Skips a test (or a test class) if :epkg:`transformers` is older than ``version``,
    or, if ``or_older_than`` is given, more recent than ``or_older_than``.

    .. code-block:: python

        @requires_transformers("4.57", "DynamicSlidingWindowLayer is needed")
        def test_sliding(self): ...

    >>> requires_transformers("4.0", or_older_than="4.1")(lambda self: 0).__unittest_skip__
    True
    """
    installed = compat.transformers_version()
    if not has_transformers(version):
        return unittest.skip(_reason(f"transformers {installed} < {version}", msg))
    if or_older_than and compat._parse(installed) > compat._parse(or_older_than):
        return unittest.skip(_reason(f"transformers {installed} > {or_older_than}", msg))
    return _no_skip


def requires_torch(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if :epkg:`torch` is older than ``version``.

    >>> @requires_torch("99.0", "needs a future version")
    ... def test_future(self): ...
    >>> test_future.__unittest_skip__
    True
    """
    installed = compat.torch_version()
    if not has_torch(version):
        return unittest.skip(_reason(f"torch {installed} < {version}", msg))
    return _no_skip


def requires_onnxruntime(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if :epkg:`onnxruntime` is missing or older than ``version``.

    >>> @requires_onnxruntime("1.0")
    ... def test_ort(self): ...
    >>> getattr(test_ort, "__unittest_skip__", False)
    False
    """
    return _requires_module("onnxruntime", "onnxruntime", version, msg)


def requires_onnxscript(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if :epkg:`onnxscript` is missing or older than ``version``.

    >>> requires_onnxscript("999.0")(lambda self: 0).__unittest_skip__
    True
    """
    return _requires_module("onnxscript", "onnxscript", version, msg)


def requires_onnx(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if :epkg:`onnx` is missing or older than ``version``.

    >>> requires_onnx("999.0")(lambda self: 0).__unittest_skip__
    True
    """
    return _requires_module("onnx", "onnx", version, msg)


def requires_onnx_ir(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if ``onnx-ir`` is missing or older than ``version``.

    >>> requires_onnx_ir("999.0")(lambda self: 0).__unittest_skip__
    True
    """
    return _requires_module("onnx_ir", "onnx-ir", version, msg)


def requires_onnx_array_api(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if ``onnx-array-api`` is missing or older than ``version``.

    >>> requires_onnx_array_api("999.0")(lambda self: 0).__unittest_skip__
    True
    """
    return _requires_module("onnx_array_api", "onnx-array-api", version, msg)


def requires_numpy(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if ``numpy`` is older than ``version``.

    >>> requires_numpy("999.0")(lambda self: 0).__unittest_skip__
    True
    """
    return _requires_module("numpy", "numpy", version, msg)


def requires_sklearn(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if ``scikit-learn`` is missing or older than ``version``.

    >>> requires_sklearn("999.0")(lambda self: 0).__unittest_skip__
    True
    """
    return _requires_module("sklearn", "scikit-learn", version, msg)


def requires_diffusers(
    version: str = "", msg: str = "", or_older_than: str | None = None
) -> Callable:
    """
    Skips a test if ``diffusers`` is missing, older than ``version`` or, if
    ``or_older_than`` is given, more recent than ``or_older_than``.

    >>> requires_diffusers("999.0")(lambda self: 0).__unittest_skip__
    True
    """
    skip = _requires_module("diffusers", "diffusers", version, msg)
    if skip is not _no_skip:
        return skip
    installed = _installed_version("diffusers") or ""
    if or_older_than and installed and compat._parse(installed) > compat._parse(or_older_than):
        return unittest.skip(_reason(f"diffusers {installed} > {or_older_than}", msg))
    return _no_skip


def requires_experimental(version: str = "", msg: str = "") -> Callable:
    """
    Skips a test if ``experimental-experiment`` is missing or older than ``version``.

    >>> requires_experimental("999.0")(lambda self: 0).__unittest_skip__
    True
    """
    return _requires_module("experimental_experiment", "experimental-experiment", version, msg)


#: other name of :func:`requires_experimental`
requires_experimental_experiment = requires_experimental


def requires_onnxruntime_training(
    push_back_batch: bool = False, ortmodule: bool = False, msg: str = ""
) -> Callable:
    """
    Skips a test unless :epkg:`onnxruntime` is a training build
    (see :func:`has_onnxruntime_training`), with ``onnxruntime.training.ortmodule``
    if ``ortmodule`` is True.

    >>> callable(requires_onnxruntime_training()(lambda self: 0))
    True
    """
    if not has_onnxruntime_training(push_back_batch=push_back_batch):
        return unittest.skip(msg or "onnxruntime-training is not installed")
    if ortmodule:
        try:
            import onnxruntime.training.ortmodule  # noqa: F401
        except (AttributeError, ImportError):
            return unittest.skip(msg or "ortmodule is missing in onnxruntime-training")
    return _no_skip


def requires_onnxruntime_genai(msg: str = "") -> Callable:
    """
    Skips a test if ``onnxruntime-genai`` cannot be imported.

    >>> callable(requires_onnxruntime_genai()(lambda self: 0))
    True
    """
    if not has_onnxruntime_genai():
        return unittest.skip(msg or "onnxruntime-genai is not installed")
    return _no_skip


def requires_python(version: tuple[int, ...], msg: str = "") -> Callable:
    """
    Skips a test if python is older than ``version``, a tuple such as ``(3, 12)``.

    >>> requires_python((99,))(lambda self: 0).__unittest_skip__
    True
    """
    if not isinstance(version, tuple):
        raise TypeError(
            f"requires_python: version must be a tuple such as (3, 12), not {version!r}"
        )
    if sys.version_info[: len(version)] < version:
        return unittest.skip(msg or f"python {sys.version_info[:3]} < {version}")
    return _no_skip


def requires_cuda(msg: str = "", version: str = "", memory: int = 0) -> Callable:
    """
    Skips a test if torch sees no CUDA device, if the CUDA version torch was built with
    is older than ``version`` or if the first device has less than ``memory`` GB.

    >>> requires_cuda()(lambda self: 0).__dict__.get("__unittest_skip__", False) == (
    ...     not has_cuda())
    True
    """
    if not has_cuda():
        return unittest.skip(msg or "CUDA is not available")
    cuda = torch.version.cuda or "0"
    if version and not compat.version_at_least(cuda, version):
        return unittest.skip(msg or f"CUDA {cuda} < {version}")
    if memory:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        if total < memory:
            return unittest.skip(msg or f"GPU memory {total:.1f} GB < {memory} GB")
    return _no_skip


def requires_zoo(msg: str = "") -> Callable:
    """
    Skips a test unless the environment variable ``ZOO`` is set to ``1``
    (tests downloading models from a zoo).

    >>> callable(requires_zoo()(lambda self: 0))
    True
    """
    if not _env_flag("ZOO"):
        return unittest.skip(_reason("ZOO is not set to 1", msg))
    return _no_skip


def long_test(msg: str = "") -> Callable:
    """
    Skips a long test unless the environment variable ``LONGTEST`` is set to ``1``.

    >>> callable(long_test("several minutes")(lambda self: 0))
    True
    """
    if not _env_flag("LONGTEST"):
        return unittest.skip(_reason("set LONGTEST=1 to run it", msg))
    return _no_skip


def never_test(msg: str = "") -> Callable:
    """
    Skips a test unless the environment variable ``NEVERTEST`` is set to ``1``
    (tests kept for manual investigations).

    >>> callable(never_test()(lambda self: 0))
    True
    """
    if not _env_flag("NEVERTEST"):
        return unittest.skip(_reason("set NEVERTEST=1 to run it", msg))
    return _no_skip


def requires_cache_classes(*names: str) -> Callable:
    """
    Skips a test when the installed :epkg:`transformers` lacks one of the classes
    ``transformers.cache_utils.<name>`` (feature detection rather than a version number:
    ``LinearAttentionLayer`` appeared in 5.23).

    >>> @requires_cache_classes("DynamicCache", "NoSuchLayer")
    ... def test_layer(self): ...
    >>> test_layer.__unittest_skip_why__.endswith("has no NoSuchLayer")
    True
    """
    missing = [n for n in names if compat.cache_class(n) is None]
    return unittest.skipIf(
        bool(missing),
        f"transformers {compat.transformers_version()} has no {', '.join(missing)}",
    )
