"""
Comparison of two nested results (:func:`max_diff`), re-exported by
:mod:`onnx_diagnostic.helpers.helper` where it is documented.

>>> import torch
>>> from onnx_diagnostic.helpers.helper import max_diff
>>> max_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))["abs"]
0.5
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from . import compat
from .helper import (
    _flatten_named,
    _is_encoder_decoder_cache,
    string_type,
)

logger = logging.getLogger("onnx_diagnostic.helpers.helper")


class _Mismatch(Exception):
    """Stops the comparison at the first structural difference."""


class _Accumulator:
    """Discrepancies gathered over all the compared tensors."""

    def __init__(self, hist: list[float] | None, verbose: int):
        self.abs = 0.0
        self.rel = 0.0
        self.sum = 0.0
        self.n = 0
        self.dnan = 0
        self.argm: tuple[int, ...] | None = None
        self.where: str | None = None
        self.hist = hist
        self.rep = dict.fromkeys(hist, 0) if hist else None
        self.verbose = verbose
        #: ``(id(expected), id(got))`` of the containers being compared, to detect cycles
        self.active: set[tuple[int, int]] = set()

    def result(self) -> dict[str, Any]:
        res = dict(
            abs=self.abs,
            rel=self.rel,
            sum=self.sum,
            n=self.n,
            dnan=self.dnan,
            argm=self.argm,
            where=self.where,
        )
        if self.rep is not None:
            res["rep"] = {f">{t}": c for t, c in self.rep.items()}
        return res


_LEAF_TYPES = (torch.Tensor, np.ndarray, np.generic, bool, int, float, complex)


def _to_torch(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_quantized:
            # the values the quantized tensor stands for
            x = x.dequantize()
        elif x.layout != torch.strided:
            # sparse COO / CSR / CSC / BSR / BSC: the dense values
            x = x.to_dense()
        return x if x.device.type == "cpu" else x.cpu()
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.asarray(x)
        if a.dtype.kind not in "biufc":
            a = a.astype(np.float32)  # ml_dtypes (bfloat16, float8...)
        elif a.dtype.kind == "u" and a.dtype.itemsize > 1:
            a = a.astype(np.int64)
        return torch.from_numpy(np.asarray(a, order="C"))
    return torch.tensor(x)


def _abs_diff(
    te: torch.Tensor, tg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(|te - tg|, |te|, te == tg)``, the first two in float64 (complex: the modulus);
    integers are subtracted exactly first, float64 cannot tell 2**53 from 2**53 + 1."""
    if not (te.is_floating_point() or te.is_complex() or tg.is_floating_point() or tg.is_complex()):
        a, b = te.to(torch.int64), tg.to(torch.int64)
        same_sign = (a >= 0) == (b >= 0)
        # no overflow when both have the same sign; otherwise |a - b| >= 1 in float64 too
        exact = torch.where(same_sign, a - b, torch.zeros((), dtype=torch.int64)).abs()
        approx = (a.to(torch.float64) - b.to(torch.float64)).abs()
        diff = torch.where(same_sign, exact.to(torch.float64), approx)
        return diff, a.to(torch.float64).abs(), a == b
    dtype = torch.complex128 if (te.is_complex() or tg.is_complex()) else torch.float64
    te, tg = te.to(dtype), tg.to(dtype)
    return (te - tg).abs(), te.abs(), te == tg


def _compare_tensors(e: Any, g: Any, epath: str, gpath: str, acc: _Accumulator) -> None:
    try:
        te, tg = _to_torch(e), _to_torch(g)
    except Exception as exc:  # numpy strings, objects, meta tensors...
        raise _Mismatch(
            f"{_label(epath, gpath)}: cannot compare {string_type(e, with_shape=True)} "
            f"and {string_type(g, with_shape=True)} ({exc})"
        ) from exc
    if tuple(te.shape) != tuple(tg.shape):
        raise _Mismatch(f"{_label(epath, gpath)}: shape {tuple(te.shape)} vs {tuple(tg.shape)}")
    n = te.numel()
    if n == 0:
        return
    en, gn = torch.isnan(te), torch.isnan(tg)
    diff, eabs, equal = _abs_diff(te, tg)
    ignored = equal | en | gn  # inf == inf, NaN positions are counted apart
    diff = torch.where(ignored, torch.zeros((), dtype=diff.dtype), diff)
    rel = diff / (eabs + 1e-5)
    rel = torch.where(torch.isinf(diff), torch.full((), math.inf, dtype=rel.dtype), rel)
    index = int(diff.argmax())
    mabs = float(diff.reshape(-1)[index])
    mrel = float(rel.max())
    dnan = int((en ^ gn).sum())
    acc.n += n
    acc.sum += float(diff.sum())
    acc.dnan += dnan
    acc.rel = max(acc.rel, mrel)
    if acc.where is None or mabs > acc.abs:
        acc.abs = mabs
        acc.argm = tuple(int(i) for i in np.unravel_index(index, tuple(te.shape)))
        acc.where = epath
    if acc.rep is not None:
        for t in acc.rep:
            acc.rep[t] += int((diff > t).sum())
    if acc.verbose >= 2:
        print(f"[max_diff] {_label(epath, gpath)}: abs={mabs}, rel={mrel}, n={n}, dnan={dnan}")


def _label(epath: str, gpath: str) -> str:
    # Both paths start with "expected" / "got"; the second is only shown when they diverge.
    if gpath.startswith("got") and epath.startswith("expected") and epath[8:] == gpath[3:]:
        return epath
    return f"{epath} (vs {gpath})"


def _kind(obj: Any) -> str:
    if isinstance(obj, _LEAF_TYPES):
        return "leaf"
    if obj is None:
        return "none"
    if isinstance(obj, str):
        return "str"
    if compat.is_model_output(obj):
        return "output"
    if isinstance(obj, (list, tuple)):
        return "seq"
    if isinstance(obj, dict):
        return "dict"
    if compat.is_cache(obj):
        return "cache"
    return "other"


def _is_flat_sequence(obj: Any) -> bool:
    return isinstance(obj, (list, tuple)) and all(isinstance(o, _LEAF_TYPES) for o in obj)


def _flatten_or_mismatch(obj: Any, path: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    try:
        _flatten_named(obj, path, out)
    except TypeError as e:
        raise _Mismatch(str(e)) from e
    return out


def _compare_flat(e: Any, g: Any, epath: str, gpath: str, acc: _Accumulator) -> None:
    fe, fg = _flatten_or_mismatch(e, epath), _flatten_or_mismatch(g, gpath)
    if len(fe) != len(fg):
        raise _Mismatch(
            f"{_label(epath, gpath)}: {len(fe)} tensors vs {len(fg)} once flattened "
            f"({string_type([t for _, t in fe], with_shape=True)} vs "
            f"{string_type([t for _, t in fg], with_shape=True)})"
        )
    for (pe, te), (pg, tg) in zip(fe, fg):
        _compare_tensors(te, tg, pe, pg, acc)


def _compare(e: Any, g: Any, epath: str, gpath: str, acc: _Accumulator) -> None:
    ke, kg = _kind(e), _kind(g)
    pair = (id(e), id(g))
    if ke in ("seq", "dict") or kg in ("seq", "dict"):
        if pair in acc.active:
            raise _Mismatch(
                f"{_label(epath, gpath)}: the structures contain themselves (a cycle), "
                "they cannot be compared"
            )
        acc.active.add(pair)
        try:
            _compare_containers(e, g, ke, kg, epath, gpath, acc)
        finally:
            acc.active.discard(pair)
        return
    _compare_containers(e, g, ke, kg, epath, gpath, acc)


def _compare_containers(
    e: Any, g: Any, ke: str, kg: str, epath: str, gpath: str, acc: _Accumulator
) -> None:
    if ke == "leaf" and kg == "leaf":
        _compare_tensors(e, g, epath, gpath, acc)
        return
    if ke == "none" and kg == "none":
        return
    if (ke == "leaf") != (kg == "leaf") and "none" not in (ke, kg):
        raise _Mismatch(
            f"{_label(epath, gpath)}: {string_type(e, with_shape=True)} vs "
            f"{string_type(g, with_shape=True)}"
        )
    if ke in ("str", "other") or kg in ("str", "other", "none") or ke == "none":
        try:
            same = type(e) is type(g) and bool(e == g)
        except Exception:
            same = False
        if not same:
            raise _Mismatch(
                f"{_label(epath, gpath)}: {string_type(e, with_shape=True)} vs "
                f"{string_type(g, with_shape=True)}"
            )
        return
    if ke == "seq" and kg == "seq" and not (_is_flat_sequence(g) and not _is_flat_sequence(e)):
        if len(e) != len(g):
            raise _Mismatch(f"{_label(epath, gpath)}: length {len(e)} vs {len(g)}")
        for i, (a, b) in enumerate(zip(e, g)):
            _compare(a, b, f"{epath}[{i}]", f"{gpath}[{i}]", acc)
        return
    if ke in ("dict", "output") and kg in ("dict", "output"):
        de = {k: v for k, v in e.items() if v is not None or ke == "dict"}
        dg = {k: v for k, v in g.items() if v is not None or kg == "dict"}
        if set(de) != set(dg):
            raise _Mismatch(
                f"{_label(epath, gpath)}: keys {sorted(map(str, de))} vs {sorted(map(str, dg))}"
            )
        for k, v in de.items():
            suffix = f".{k}" if ke == "output" else f"[{k!r}]"
            gsuffix = f".{k}" if kg == "output" else f"[{k!r}]"
            _compare(v, dg[k], f"{epath}{suffix}", f"{gpath}{gsuffix}", acc)
        return
    if ke == "cache" and kg == "cache":
        if _is_encoder_decoder_cache(e) and _is_encoder_decoder_cache(g):
            for name in ("self_attention_cache", "cross_attention_cache"):
                _compare(
                    getattr(e, name), getattr(g, name), f"{epath}.{name}", f"{gpath}.{name}", acc
                )
            return
        if _is_encoder_decoder_cache(e) != _is_encoder_decoder_cache(g):
            raise _Mismatch(f"{_label(epath, gpath)}: {type(e).__name__} vs {type(g).__name__}")
    # Different containers (a cache and a list, a ModelOutput and a flat list of
    # ONNX Runtime outputs...): the flattened tensors are compared.
    _compare_flat(e, g, epath, gpath, acc)


def max_diff(
    expected: Any,
    got: Any,
    verbose: int = 0,
    flatten: bool = False,
    hist: list[float] | bool | None = None,
) -> dict[str, Any]:
    """
    Returns the discrepancies between two nested structures of tensors:
    tensors, numpy arrays, numbers, lists, tuples, dictionaries, transformers caches,
    ``ModelOutput``.
    When ``got`` is a flat list (the outputs of ONNX Runtime) and ``expected`` is nested,
    ``got`` is compared to ``flatten_object(expected)``. Every tensor is compared in float64
    (complex128 for complex tensors), so dtypes may differ, booleans and integers are
    compared as numbers. Two DynamicCache are compared on every tensor of their canonical
    flattening, the paths use its names (``expected.conv_state_0``,
    ``expected.sliding_key_1``...); a layer class it does not know gives an ``error``
    naming the layer.

    :param expected: expected values
    :param got: values to check
    :param verbose: 1 prints the result, 2 prints every comparison
    :param flatten: flattens both structures before comparing them
    :param hist: thresholds, adds ``rep={">t": number of differences > t}`` to the result,
        True for ``[0, 1e-4, 1e-3, 1e-2, 1e-1, 1]``
    :return: dictionary with keys ``abs`` (max absolute difference), ``rel`` (max of
        ``|e-g| / (|e|+1e-5)``), ``sum`` (sum of absolute differences), ``n`` (number
        of compared values), ``dnan`` (number of positions where only one side is NaN, these
        positions are left out of the other figures), ``argm`` (index of the maximum absolute
        difference in its tensor), ``where`` (path to that tensor);
        a structure mismatch gives ``abs=inf``, ``rel=inf`` and ``error``, a message
        naming the place where they differ, e.g.
        ``expected[1].past_key_values.key_0: shape (2, 4, 3, 7) vs (3, 4, 4, 8)``

    >>> import torch
    >>> from onnx_diagnostic.helpers import max_diff
    >>> d = max_diff((torch.tensor([1.0, 2.0]),), (torch.tensor([1.0, 2.5]),))
    >>> d["abs"], d["n"], d["argm"], d["where"]
    (0.5, 2, (1,), 'expected[0]')
    >>> max_diff([torch.zeros(2)], [torch.zeros(3)])["error"]
    'expected[0]: shape (2,) vs (3,)'
    """
    if hist is True:
        hist = [0, 1e-4, 1e-3, 1e-2, 1e-1, 1]
    if hist and (
        isinstance(hist, (str, bytes))
        or not isinstance(hist, (list, tuple))
        or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in hist)
    ):
        raise TypeError(f"max_diff: hist must be True, None or a list of numbers, got {hist!r}")
    if not isinstance(verbose, int):
        raise TypeError(f"max_diff: verbose must be an int, got {verbose!r}")
    acc = _Accumulator(list(hist) if hist else None, verbose)
    try:
        if flatten or (_is_flat_sequence(got) and not _is_flat_sequence(expected)):
            _compare_flat(expected, got, "expected", "got", acc)
        else:
            _compare(expected, got, "expected", "got", acc)
    except _Mismatch as e:
        res = acc.result()
        res.update(abs=math.inf, rel=math.inf, error=str(e))
        logger.debug("max_diff: %s", e)
        if verbose:
            print(f"[max_diff] error: {e}")
        return res
    res = acc.result()
    if verbose:
        print(
            f"[max_diff] abs={res['abs']}, rel={res['rel']}, n={res['n']}, "
            f"dnan={res['dnan']}, argm={res['argm']} in {res['where']}"
        )
    return res


def string_diff(diff: dict[str, Any]) -> str:
    """
    Renders the result of :func:`max_diff` as one short line:
    ``abs=..., rel=...`` followed by ``n=...`` when there is a difference, ``dnan=...``
    when NaN differ, ``rep`` counts (``>0.001:3``) when ``hist`` was given and the
    ``error`` of a structure mismatch.

    :param diff: a dictionary returned by :func:`max_diff` (``abs`` and ``rel`` at least)
    :return: a string
    :raises TypeError: if ``diff`` is not a dictionary with keys ``abs`` and ``rel``

    >>> import torch
    >>> from onnx_diagnostic.helpers import max_diff, string_diff
    >>> string_diff(max_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5])))
    'abs=0.5, rel=0.24999875000624996, n=2'
    """
    if not isinstance(diff, dict) or "abs" not in diff or "rel" not in diff:
        raise TypeError(
            f"string_diff: diff must be the dictionary max_diff returns (keys abs, rel), "
            f"got {string_type(diff)}"
        )
    parts = [f"abs={diff['abs']}", f"rel={diff['rel']}"]
    if diff["abs"] != 0 and diff["rel"] != 0 and "n" in diff:
        parts.append(f"n={diff['n']}")
    if diff.get("dnan"):
        parts.append(f"dnan={diff['dnan']}")
    rep = diff.get("rep")
    if rep:
        parts.append("rep=" + ",".join(f"{k}:{v}" for k, v in rep.items() if v))
    if diff.get("error"):
        parts.append(f"error={diff['error']}")
    return ", ".join(parts)
