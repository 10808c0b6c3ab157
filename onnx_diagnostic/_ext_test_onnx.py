"""
The assertions of :class:`onnx_diagnostic.ext_test_case.ExtTestCase` that run an ONNX model
(a mixin, kept apart so that ext_test_case.py stays small).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._ext_test_compare import _array_mismatch
from .helpers.helper import string_type


class _OnnxAssertions:
    """Methods of ExtTestCase comparing an ONNX model run by onnxruntime with torch."""

    def assert_conversion_with_ort_on_cpu(
        self,
        onx: Any,
        expected: Any,
        inputs: Sequence[Any],
        atol: float = 0,
        rtol: float = 0,
        msg: str | Callable[[], str] | None = None,
        use_python: bool = False,
    ) -> None:
        """
        Runs ``onx`` on CPU with :epkg:`onnxruntime` (or with
        :class:`onnx_diagnostic.reference.ExtendedReferenceEvaluator` if ``use_python``) on
        ``inputs`` (tensors in the order of the model inputs) and checks every output against
        ``expected`` with ``|expected - got| <= atol + rtol * |expected|``.

        :param onx: the ONNX model
        :param expected: a tensor or a tuple of tensors, one per output
        :param inputs: the inputs, in the order of the model inputs
        :param atol: absolute tolerance
        :param rtol: relative tolerance
        :param msg: added to the failure message (or a function returning it)
        :param use_python: runs the reference evaluator instead of onnxruntime
        """
        from .helpers.ort_session import torch_to_numpy

        feeds_values = [torch_to_numpy(x) if isinstance(x, torch.Tensor) else x for x in inputs]
        if use_python:
            from .reference import ExtendedReferenceEvaluator

            sess: Any = ExtendedReferenceEvaluator(onx)
            names = list(sess.input_names)
        else:
            from .helpers.rt_helper import make_session

            sess = make_session(onx, caller="assert_conversion_with_ort_on_cpu", argname="onx")
            names = [i.name for i in sess.get_inputs()]
        if len(names) != len(feeds_values):
            raise AssertionError(
                f"the model has {len(names)} inputs {names}, {len(feeds_values)} were given"
            )
        got = sess.run(None, dict(zip(names, feeds_values)))
        exp = list(expected) if isinstance(expected, (tuple, list)) else [expected]
        if len(exp) != len(got):
            raise AssertionError(f"{len(got)} outputs, {len(exp)} expected")
        for i, (e, g) in enumerate(zip(exp, got)):
            problem = _array_mismatch(e, g, atol, rtol)
            if problem:
                text = msg() if callable(msg) else (msg or "")
                raise AssertionError(f"output {i}: {problem}{f' ({text})' if text else ''}")

    def assert_onnx_disc(
        self,
        test_name: str,
        proto: Any,
        model: torch.nn.Module,
        inputs: tuple | dict[str, Any],
        verbose: int = 0,
        atol: float = 1e-5,
        rtol: float = 1e-3,
        copy_inputs: bool = True,
        expected: Any = None,
        use_ort: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """
        Runs the ONNX model ``proto`` with onnxruntime on ``inputs`` and checks its outputs
        are the ones of ``model`` (or ``expected``): the max absolute difference must be
        ``<= atol`` and the max relative difference ``<= rtol``
        (:func:`onnx_diagnostic.helpers.max_diff`). Returns the differences.

        :param test_name: if not empty, the model is saved as ``dump_test/<test_name>.onnx``
        :param proto: the ONNX model (``ModelProto``, file name or bytes)
        :param model: the torch model
        :param inputs: a tuple of positional arguments or a dictionary of named arguments,
            flattened (:func:`onnx_diagnostic.helpers.helper.flatten_object`, caches
            included) into the inputs of the ONNX model; a dictionary whose keys are
            the names of the ONNX inputs is used as it is
        :param verbose: prints the steps
        :param atol: absolute tolerance
        :param rtol: relative tolerance
        :param copy_inputs: the model runs on a deep copy of the inputs (it may modify them)
        :param expected: the expected outputs, the model is not run if given
        :param use_ort: feeds onnxruntime with numpy arrays
            (:class:`onnx_diagnostic.helpers.ort_session.InferenceSessionForNumpy`) instead
            of torch tensors (:class:`InferenceSessionForTorch`)
        :param kwargs: options of the session (``providers``...)

        .. code-block:: python

            self.assert_onnx_disc("test_export", onx, model, (x,), atol=1e-4)
        """
        from .helpers.helper import flatten_object, max_diff
        from .helpers.ort_session import InferenceSessionForNumpy, InferenceSessionForTorch
        from .helpers.torch_helper import torch_deepcopy

        if not isinstance(inputs, (tuple, dict)):
            raise TypeError(
                f"assert_onnx_disc: inputs must be a tuple or a dict, not {type(inputs)}"
            )
        name = test_name or "assert_onnx_disc"
        if test_name:
            path = self.dump_onnx(f"{test_name}.onnx", proto)
            if verbose:
                print(f"[{name}] saved {path!r}")
        cls = InferenceSessionForNumpy if use_ort else InferenceSessionForTorch
        sess = cls(proto, **kwargs)
        if isinstance(inputs, dict) and set(inputs) == set(sess.input_names):
            feeds = dict(inputs)
        else:
            flat = [t for t in flatten_object(inputs) if t is not None]
            if len(flat) != len(sess.input_names):
                raise AssertionError(
                    f"{name}: inputs flatten into {len(flat)} tensors, the ONNX model "
                    f"has {len(sess.input_names)} inputs {sess.input_names}"
                )
            feeds = dict(zip(sess.input_names, flat))
        if verbose:
            print(f"[{name}] feeds {string_type(feeds, with_shape=True)}")
        got = sess.run(None, feeds)
        if expected is None:
            args = torch_deepcopy(inputs) if copy_inputs else inputs
            expected = model(*args) if isinstance(args, tuple) else model(**args)
        diff = max_diff(expected, list(got), flatten=True)
        if verbose:
            print(f"[{name}] expected {string_type(expected, with_shape=True)}")
            print(f"[{name}] got {string_type(list(got), with_shape=True)}")
            print(f"[{name}] abs={diff['abs']}, rel={diff['rel']}")
        if "error" in diff or not (diff["abs"] <= atol and diff["rel"] <= rtol):
            raise AssertionError(
                f"discrepancies in {name!r}: abs={diff['abs']} (atol={atol}), "
                f"rel={diff['rel']} (rtol={rtol}) at {diff.get('where')}"
                + (f", {diff['error']}" if "error" in diff else "")
            )
        return diff
