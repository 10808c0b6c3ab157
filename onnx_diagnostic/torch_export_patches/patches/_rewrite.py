"""
Patches made by rewriting an expression in the source of a method of :epkg:`transformers`
(the same expression repeated in the modules of many models of one version), used by
:mod:`onnx_diagnostic.torch_export_patches.patches.patch_transformers_states` and
:mod:`onnx_diagnostic.torch_export_patches.patches.patch_transformers_moe`.
The method is recompiled in the globals of its module, with the functions the new expressions
call; its line numbers stay those of the original file (tracebacks point at the model's code).

>>> import re
>>> rw = Rewrites("demo", ((re.compile(r"x \\+ 1"), "x + 2"),), {})
>>> rw.matches("return x + 1"), rw.matches("return x")
(True, False)
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ...helpers import compat


def transformers_4() -> bool:
    """
    Tells if the installed :epkg:`transformers` is a 4.x, whose model modules the
    rewriting patches target.

    >>> isinstance(transformers_4(), bool)
    True
    """
    return not compat.version_at_least(compat.transformers_version(), "5")


def source_of(fct: Any) -> str | None:
    """The dedented source of a function, None when it cannot be read."""
    try:
        return textwrap.dedent(inspect.getsource(fct))
    except (OSError, TypeError):
        return None


@dataclass(frozen=True)
class Rewrites:
    """
    Expressions to replace in the source of methods.

    :param name: name of the set, for messages
    :param rewrites: ``(compiled pattern, replacement)`` applied in order
    :param helpers: the functions the replacements call, by the name they use
    """

    name: str
    rewrites: tuple[tuple[re.Pattern, str], ...]
    helpers: dict[str, Callable]

    def matches(self, source: str | None) -> bool:
        """Tells if one of the patterns occurs in ``source``."""
        return bool(source) and any(p.search(source) for p, _ in self.rewrites)

    def targets(self, modules: Iterable[Any]) -> list[tuple[Any, str]]:
        """The methods of the classes defined in ``modules`` whose source matches."""
        found = []
        for mod in modules:
            for cls in vars(mod).values():
                if not isinstance(cls, type) or cls.__module__ != mod.__name__:
                    continue
                for name, fct in vars(cls).items():
                    if inspect.isfunction(fct) and self.matches(source_of(fct)):
                        found.append((cls, name))
        return found

    def recompile(self, original: Any) -> Any:
        """The method ``original`` with every pattern replaced."""
        source = source_of(original)
        if not self.matches(source):  # pragma: no cover
            return original
        for pattern, replacement in self.rewrites:
            source = pattern.sub(replacement, source)
        module = sys.modules[original.__module__]
        namespace = dict(vars(module))
        namespace.update(self.helpers)
        # a closure holding __class__: the zero-argument super() of the method keeps working
        owner = namespace.get(original.__qualname__.split(".")[0], None)
        # blank lines first: the line numbers of a traceback are those of the original file
        first = original.__code__.co_firstlineno
        decorators = source.count("\n", 0, source.index("def "))
        wrapper = "\n" * max(first - 2 - decorators, 0)
        wrapper += "def __make__(__class__):\n" + textwrap.indent(source, "    ")
        wrapper += f"\n    return {original.__name__}\n"
        exec(compile(wrapper, inspect.getsourcefile(original) or "<patch>", "exec"), namespace)
        patched = namespace["__make__"](owner)
        functools.update_wrapper(patched, original)
        patched.__onnx_diagnostic_patch__ = True
        return patched


def loaded_model_modules(model_types: Iterable[str] | None = None) -> list[Any]:
    """
    The modules ``transformers.models.<type>.modeling_<type>`` already imported, those of
    ``model_types`` or all of them (importing every model module costs seconds).

    >>> isinstance(loaded_model_modules(["llama"]), list)
    True
    """
    if model_types is not None:
        mods = (sys.modules.get(f"transformers.models.{t}.modeling_{t}") for t in model_types)
        return [m for m in mods if m is not None]
    prefix = "transformers.models."
    return [
        m
        for name, m in list(sys.modules.items())
        if m is not None and name.startswith(prefix) and ".modeling_" in name
    ]
