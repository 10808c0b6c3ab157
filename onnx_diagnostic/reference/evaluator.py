"""
:class:`ExtendedReferenceEvaluator`: :class:`onnx.reference.ReferenceEvaluator` which also
runs the contrib operators of :epkg:`onnxruntime` the exported models may contain.

>>> import numpy as np
>>> import onnx.helper as oh
>>> from onnx import TensorProto
>>> from onnx_diagnostic.reference import ExtendedReferenceEvaluator
>>> model = oh.make_model(
...     oh.make_graph(
...         [oh.make_node("QuickGelu", ["X"], ["Y"], domain="com.microsoft", alpha=1.0)],
...         "g",
...         [oh.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
...         [oh.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
...     ),
...     opset_imports=[oh.make_opsetid("", 18), oh.make_opsetid("com.microsoft", 1)],
... )
>>> ExtendedReferenceEvaluator(model).run(None, {"X": np.array([0.0, 1.0], np.float32)})
[array([0.       , 0.7310586], dtype=float32)]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from ._contrib_ops import CONTRIB_KERNELS, OPSET23_FALLBACKS

__all__ = ["ExtendedReferenceEvaluator", "onnx_has_kernel"]

logger = logging.getLogger(__name__)


def onnx_has_kernel(op_type: str, domain: str = "") -> bool:
    """
    Tells if the installed :epkg:`onnx` reference runtime implements ``op_type``.

    >>> onnx_has_kernel("Add")
    True
    >>> onnx_has_kernel("SimplifiedLayerNormalization")
    False
    """
    if domain != "":
        return False
    from onnx.reference import ops  # noqa: PLC0415

    try:
        ops.load_op(domain, op_type, onnx.defs.onnx_opset_version())
    except Exception:  # noqa: BLE001  (onnx raises several types)
        return False
    return True


def _named(cls: type[OpRun]) -> type[OpRun]:
    """onnx keys a kernel by ``(op_domain, class name)``: ``AttentionMS`` becomes a
    subclass named ``Attention``."""
    name = cls.__name__
    if cls.op_domain == "com.microsoft" and name.endswith("MS"):
        return type(name[:-2], (cls,), {"__doc__": cls.__doc__, "__module__": cls.__module__})
    return cls


def _default_ops() -> list[type[OpRun]]:
    fallbacks = [c for c in OPSET23_FALLBACKS if not onnx_has_kernel(c.__name__)]
    return [_named(c) for c in CONTRIB_KERNELS + fallbacks]


class ExtendedReferenceEvaluator(ReferenceEvaluator):
    """
    :class:`onnx.reference.ReferenceEvaluator` with kernels for the contrib operators of
    :epkg:`onnxruntime` (``com.microsoft``: ``Attention``, ``MultiHeadAttention``,
    ``GroupQueryAttention``, ``RotaryEmbedding``, ``SkipSimplifiedLayerNormalization``,
    ``SkipLayerNormalization``, ``FusedMatMul``, ``QuickGelu``, ``Gelu``, ``FastGelu``,
    ``BiasGelu``; ``SimplifiedLayerNormalization`` in the main domain) and, when the
    installed :epkg:`onnx` does not implement them, the opset-23 operators ``Attention``,
    ``RMSNormalization`` and ``RotaryEmbedding``. :attr:`default_ops` lists them.

    :param proto: a model, a function, a graph or a file name, as for
        :class:`onnx.reference.ReferenceEvaluator`
    :param opsets: the opsets when ``proto`` is a graph or a node
    :param functions: local functions
    :param verbose: prints the executed nodes (1) and the results (2 and more)
    :param new_ops: more kernels (classes deriving from
        :class:`onnx.reference.op_run.OpRun` with an ``op_domain``), they take precedence
        over the default ones
    :param kwargs: given to :class:`onnx.reference.ReferenceEvaluator`

    ``run(None, feeds)`` returns the outputs as a list; a list of arrays instead of a
    dictionary is matched with the input names (``run([x, y])``);
    ``run(None, feeds, intermediate=True)`` returns every result by name (the onnx
    reference runtime does that for a model).

    >>> import numpy as np
    >>> import onnx.helper as oh
    >>> from onnx import TensorProto
    >>> model = oh.make_model(
    ...     oh.make_graph(
    ...         [oh.make_node("SimplifiedLayerNormalization", ["X", "W"], ["Y"], epsilon=0.0)],
    ...         "g",
    ...         [oh.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2]),
    ...          oh.make_tensor_value_info("W", TensorProto.FLOAT, [2])],
    ...         [oh.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
    ...     ),
    ...     opset_imports=[oh.make_opsetid("", 18)],
    ... )
    >>> ref = ExtendedReferenceEvaluator(model)
    >>> feeds = {"X": np.array([[3.0, 4.0]], np.float32), "W": np.ones(2, np.float32)}
    >>> ref.run(None, feeds)[0].round(4)
    array([[0.8485, 1.1314]], dtype=float32)
    """

    #: the kernels added to the ones of :epkg:`onnx`
    default_ops: list[type[OpRun]] = _default_ops()

    def __init__(
        self,
        proto: Any,
        opsets: dict[str, int] | None = None,
        functions: Sequence[ReferenceEvaluator | onnx.FunctionProto] | None = None,
        verbose: int = 0,
        new_ops: Sequence[type[OpRun]] | None = None,
        **kwargs: Any,
    ):
        ops = list(new_ops or [])
        for cl in ops:
            if not (isinstance(cl, type) and issubclass(cl, OpRun)):
                raise TypeError(f"new_ops must hold subclasses of OpRun, not {cl!r}")
            if not hasattr(cl, "op_domain"):
                raise TypeError(f"new_ops: class {cl.__name__} must define 'op_domain'")
        # the first class registered for a (domain, name) wins: user kernels first
        ops.extend(self.default_ops)
        super().__init__(
            proto,
            opsets=opsets,
            functions=list(functions) if functions else None,
            verbose=verbose,
            new_ops=ops,
            **kwargs,
        )

    def run(  # type: ignore[override]
        self,
        output_names: Sequence[str] | list[Any] | None,
        feed_inputs: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        intermediate: bool = False,
    ) -> Any:
        """
        Runs the model; ``run([x, y])`` feeds the inputs in order. See
        :meth:`onnx.reference.ReferenceEvaluator.run` for the other arguments.

        >>> import numpy as np, onnx.helper as oh
        >>> from onnx import TensorProto
        >>> model = oh.make_model(oh.make_graph(
        ...     [oh.make_node("Add", ["X", "Y"], ["Z"])], "g",
        ...     [oh.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "XY"],
        ...     [oh.make_tensor_value_info("Z", TensorProto.FLOAT, [1])]))
        >>> ExtendedReferenceEvaluator(model).run([np.ones(1, np.float32)] * 2)
        [array([2.], dtype=float32)]
        """
        if feed_inputs is None and isinstance(output_names, list):
            if len(output_names) != len(self.input_names):
                raise ValueError(
                    f"{len(output_names)} inputs given, the model expects "
                    f"{len(self.input_names)}: {self.input_names}"
                )
            return self.run(None, dict(zip(self.input_names, output_names)))
        if not isinstance(feed_inputs, dict):
            raise TypeError(f"feed_inputs must be a dictionary, not {type(feed_inputs)}")
        missing = [n for n in self.input_names if n not in feed_inputs]
        if missing and isinstance(self.proto_, onnx.ModelProto):
            raise ValueError(f"missing inputs {missing}, the model expects {self.input_names}")
        logger.debug("run %d inputs, intermediate=%s", len(feed_inputs), intermediate)
        return super().run(output_names, feed_inputs, attributes, intermediate=intermediate)
