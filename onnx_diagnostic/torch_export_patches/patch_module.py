"""
Rewrites a Python ``if`` testing a tensor into :func:`torch.cond` so that
:func:`torch.export.export` can export both branches instead of failing on a data-dependent
condition (or keeping only the branch taken by the example inputs).

The source of the method is parsed with :mod:`ast`, every ``if`` of its body (also inside a
``for``, ``while`` or ``with`` block, and nested in the branches of another ``if``) is
replaced, the function is compiled again and installed on its class (or module) for the
duration of :func:`torch_export_rewrite`, then the original object is put back, also when
an exception escapes.

>>> import torch
>>> from onnx_diagnostic.torch_export_patches.patch_module import transform_method
>>> def f(x, y):
...     if x.sum() > 0:
...         return x + y
...     else:
...         return x - y
>>> rewritten = transform_method(f)
>>> "__rewrite_torch__.cond" in rewritten.code
True
>>> rewritten.func(torch.ones(2), torch.ones(2))
tensor([2., 2.])

Supported forms (``<test>`` is any expression; when it evaluates to a tensor the rewritten
code calls :func:`torch.cond`, otherwise it runs the original Python ``if``):

* ``if <test>: ... return A`` ``else: ... return B``, ``elif`` allowed, the statements
  before each ``return`` being assignments to names;
* ``if <test>: a = ...`` with or without ``else``, both branches made of assignments to
  names (``a = ...``, ``a, b = ...``, ``a += ...``) and of such ``if`` statements; a name
  assigned in one branch only keeps its previous value in the other one (it must have
  one); ``a = b`` assigns a copy of the tensor ``b`` (torch.cond refuses aliases).

Anything else (a loop or a call statement in a branch, an assignment to an attribute or an
item, a ``return`` in one branch only...) is refused with a
:class:`RewriteError` naming the method and the line. :func:`torch.cond` asks both branches
to return tensors of the same dtype and rank.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import inspect
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch  # noqa: F401  (the examples of the docstrings refer to it as a global)

__all__ = ["RewriteError", "RewrittenMethod", "torch_export_rewrite", "transform_method"]

_TORCH = "__rewrite_torch__"


class RewriteError(ValueError):
    """A method or a function cannot be rewritten; the message names it and the line."""


@dataclass
class RewrittenMethod:
    """
    The result of :func:`transform_method`.

    :param tree: the rewritten function, an :class:`ast.FunctionDef`
    :param func: the compiled function
    :param n_rewritten: number of ``if`` statements replaced
    """

    tree: ast.FunctionDef
    func: Callable[..., Any]
    n_rewritten: int

    @property
    def code(self) -> str:
        """The rewritten source."""
        return ast.unparse(self.tree)


class _Rename(ast.NodeTransformer):
    """Replaces the names read in an expression by their latest assigned version."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if isinstance(node.ctx, ast.Load) and node.id in self.mapping:
            return ast.copy_location(ast.Name(self.mapping[node.id], ast.Load()), node)
        return node


class _RenameStores(ast.NodeTransformer):
    """Replaces the names assigned by statements (the Python path of a nested ``if``)."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if isinstance(node.ctx, ast.Store) and node.id in self.mapping:
            return ast.copy_location(ast.Name(self.mapping[node.id], ast.Store()), node)
        return node


def _function_def(name: str, args: list[ast.arg], body: list[ast.stmt]) -> ast.FunctionDef:
    """An ``ast.FunctionDef`` on every supported Python (``type_params`` came in 3.12)."""
    kwargs: dict[str, Any] = dict(
        name=name,
        args=ast.arguments(posonlyargs=[], args=args, kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=body,
        decorator_list=[],
        returns=None,
    )
    if "type_params" in ast.FunctionDef._fields:
        kwargs["type_params"] = []
    return ast.FunctionDef(**kwargs)


def _renamed(node: ast.expr, mapping: dict[str, str]) -> ast.expr:
    """A copy of ``node`` reading the latest versions of the names (the original is kept
    for the Python path)."""
    return _Rename(mapping).visit(copy.deepcopy(node))


def _no_alias(value: ast.expr, mapping: dict[str, str]) -> ast.expr:
    """torch.cond refuses a branch returning one of its inputs: a name the branch did not
    assign is returned as ``name.clone()``."""
    if isinstance(value, ast.Name) and value.id not in mapping.values():
        return ast.Call(ast.Attribute(value, "clone", ast.Load()), [], [])
    if isinstance(value, ast.Tuple):
        return ast.Tuple([_no_alias(v, mapping) for v in value.elts], ast.Load())
    return value


def _copy_if_alias(value: ast.expr) -> ast.expr:
    """``a = b`` in a branch makes ``a`` an alias torch.cond refuses to return: the
    branch assigns ``b.clone()`` when ``b`` is a tensor."""
    if not isinstance(value, ast.Name):
        return value
    is_tensor = ast.Call(_name("isinstance"), [value, _torch_attr("Tensor")], [])
    clone = ast.Call(ast.Attribute(copy.deepcopy(value), "clone", ast.Load()), [], [])
    return ast.IfExp(test=is_tensor, body=clone, orelse=copy.deepcopy(value))


def _name(id_: str, store: bool = False) -> ast.Name:
    return ast.Name(id_, ast.Store() if store else ast.Load())


def _torch_attr(*names: str) -> ast.expr:
    node: ast.expr = _name(_TORCH)
    for n in names:
        node = ast.Attribute(node, n, ast.Load())
    return node


class _Rewriter:
    def __init__(self, where: str, first_line: int):
        self.where = where
        self.first_line = first_line
        self.count = 0

    def fail(self, node: ast.AST, reason: str) -> RewriteError:
        line = self.first_line + getattr(node, "lineno", 1) - 1
        return RewriteError(f"cannot rewrite {self.where}, line {line}: {reason}")

    # statements of a branch

    def _targets(self, target: ast.expr, node: ast.stmt) -> list[str]:
        if isinstance(target, ast.Name):
            return [target.id]
        if isinstance(target, (ast.Tuple, ast.List)):
            return [n for t in target.elts for n in self._targets(t, node)]
        raise self.fail(
            node,
            f"a branch assigns {ast.unparse(target)!r}, only names can be assigned "
            "(an attribute or an item would be modified in both branches)",
        )

    def _retarget(self, target: ast.expr, mapping: dict[str, str], prefix: str) -> ast.expr:
        if isinstance(target, ast.Name):
            mapping[target.id] = f"{target.id}__{prefix}"
            return _name(mapping[target.id], store=True)
        assert isinstance(target, (ast.Tuple, ast.List))
        return type(target)([self._retarget(t, mapping, prefix) for t in target.elts], ast.Store())

    def _branch(
        self, stmts: list[ast.stmt], prefix: str, returns: bool
    ) -> tuple[list[ast.stmt], dict[str, str], ast.expr | None]:
        """Renames what a branch assigns (a closure must not assign the names it reads)."""
        mapping: dict[str, str] = {}
        out: list[ast.stmt] = []
        result: ast.expr | None = None
        for k, stmt in enumerate(stmts):
            last = k == len(stmts) - 1
            tag = f"{prefix}{k}"
            if isinstance(stmt, ast.Assign):
                value = _copy_if_alias(_renamed(stmt.value, mapping))
                for t in stmt.targets:
                    self._targets(t, stmt)
                targets = [self._retarget(t, mapping, tag) for t in stmt.targets]
                out.append(ast.Assign(targets=targets, value=value))
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                self._targets(stmt.target, stmt)
                value = _copy_if_alias(_renamed(stmt.value, mapping))
                out.append(
                    ast.Assign(targets=[self._retarget(stmt.target, mapping, tag)], value=value)
                )
            elif isinstance(stmt, ast.AugAssign):
                (name,) = self._targets(stmt.target, stmt)
                current = _name(mapping.get(name, name))
                value = ast.BinOp(current, stmt.op, _renamed(stmt.value, mapping))
                out.append(
                    ast.Assign(targets=[self._retarget(stmt.target, mapping, tag)], value=value)
                )
            elif isinstance(stmt, ast.Return) and returns and last:
                if stmt.value is None:
                    raise self.fail(stmt, "a branch returns nothing, torch.cond needs tensors")
                result = _renamed(stmt.value, mapping)
            elif isinstance(stmt, ast.If) and returns and last:
                # elif: the nested test becomes part of the false branch
                out.extend(self._rewrite_if(_Rename(mapping).visit(copy.deepcopy(stmt))))
                result = None
            elif isinstance(stmt, ast.If) and not self._ends_with_return(stmt.body):
                # a nested if assigning names: it reads the latest versions of the names of
                # this branch and gives new versions to the names it assigns
                nested = _Rename(mapping).visit(copy.deepcopy(stmt))
                stmts_, fresh = self._rewrite_if(nested, outer=dict(mapping), tag=tag)
                out.extend(stmts_)
                mapping.update(fresh)
            else:
                what = type(stmt).__name__
                if isinstance(stmt, ast.Return):
                    what = "a return in one branch only or before the end of a branch"
                raise self.fail(
                    stmt,
                    f"{what} in a branch is not supported, a branch may only assign names "
                    "and end with a return",
                )
        if returns and result is None and not (stmts and isinstance(stmts[-1], ast.If)):
            raise self.fail(stmts[-1] if stmts else ast.Pass(), "a branch does not return")
        return out, mapping, result

    # the if statements

    @staticmethod
    def _ends_with_return(stmts: list[ast.stmt]) -> bool:
        if not stmts:
            return False
        last = stmts[-1]
        if isinstance(last, ast.Return):
            return True
        return (
            isinstance(last, ast.If)
            and _Rewriter._ends_with_return(last.body)
            and _Rewriter._ends_with_return(last.orelse)
        )

    def _rewrite_if(self, node: ast.If, outer: dict[str, str] | None = None, tag: str = "") -> Any:
        """
        The statements replacing ``node``. With ``outer`` (the versions of the names in the
        enclosing branch, ``node`` nested in a branch), returns ``(statements, fresh)``:
        the names the ``if`` assigns get new versions ``fresh`` (a closure must not assign
        the names it reads), the others read their version in ``outer``.
        """
        self.count += 1
        n = self.count
        nested = outer is not None
        previous = outer or {}
        returns_true = self._ends_with_return(node.body)
        returns_false = self._ends_with_return(node.orelse)
        if returns_true != returns_false:
            raise self.fail(
                node,
                "one branch returns and the other does not, both must return "
                "or both must assign names",
            )
        returns = returns_true
        t_body, t_map, t_res = self._branch(node.body, f"t{n}_", returns)
        f_body, f_map, f_res = self._branch(node.orelse, f"f{n}_", returns)
        cond_name = f"__cond_{n}"
        names: list[str] = []
        if not returns:
            names = list(dict.fromkeys([*t_map, *f_map]))
            if not names:
                raise self.fail(node, "the branches assign nothing")

        def before(k: str) -> ast.Name:
            return _name(previous.get(k, k))

        def branch_def(name: str, body: list[ast.stmt], mapping: dict, res: Any) -> ast.stmt:
            if returns:
                value = None if res is None else _no_alias(res, mapping)
            else:
                value = ast.Tuple(
                    [
                        _no_alias(before(k), mapping) if k not in mapping else _name(mapping[k])
                        for k in names
                    ],
                    ast.Load(),
                )
            final = [ast.Return(value)] if value is not None else []
            return _function_def(name, [], body + final or [ast.Pass()])

        true_name, false_name = f"__branch_true_{n}", f"__branch_false_{n}"
        cond_call = ast.Call(
            _torch_attr("cond"),
            [_name(cond_name), _name(true_name), _name(false_name), ast.Tuple([], ast.Load())],
            [],
        )
        fresh = {k: f"{k}__{tag}n{n}" for k in names} if nested else {k: k for k in names}
        python_if: ast.stmt = ast.If(test=_name(cond_name), body=node.body, orelse=node.orelse)
        init: list[ast.stmt] = []
        if nested:
            # the Python path assigns the new versions; a name one branch does not assign
            # keeps its previous value
            python_if = _RenameStores(fresh).visit(copy.deepcopy(python_if))
            init = [
                ast.Assign(targets=[_name(fresh[k], store=True)], value=before(k))
                for k in names
                if not (k in t_map and k in f_map)
            ]
        if returns:
            tensor_path: list[ast.stmt] = [ast.Return(cond_call)]
        else:
            target = ast.Tuple([_name(fresh[k], store=True) for k in names], ast.Store())
            tensor_path = [ast.Assign(targets=[target], value=cond_call)]
        is_tensor = ast.Call(_name("isinstance"), [_name(cond_name), _torch_attr("Tensor")], [])
        stmts: list[ast.stmt] = [
            branch_def(true_name, t_body, t_map, t_res),
            branch_def(false_name, f_body, f_map, f_res),
            ast.Assign(targets=[_name(cond_name, store=True)], value=node.test),
            ast.If(
                test=is_tensor,
                body=tensor_path,
                # not a tensor: the original Python if, unchanged
                orelse=[*init, python_if] if init else [python_if],
            ),
        ]
        for s in stmts:
            ast.copy_location(s, node)
            for sub in ast.walk(s):
                if not hasattr(sub, "lineno") and isinstance(sub, (ast.stmt, ast.expr)):
                    ast.copy_location(sub, node)
        if nested:
            return stmts, {k: fresh[k] for k in names}
        return stmts

    def _rewrite_block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        body: list[ast.stmt] = []
        for stmt in stmts:
            if isinstance(stmt, ast.If):
                body.extend(self._rewrite_if(stmt))
                continue
            if isinstance(stmt, (ast.For, ast.While, ast.With)):
                # an if in a loop or a with block is rewritten in place
                stmt.body = self._rewrite_block(stmt.body)
                if isinstance(stmt, (ast.For, ast.While)) and stmt.orelse:
                    stmt.orelse = self._rewrite_block(stmt.orelse)
            body.append(stmt)
        return body

    def rewrite(self, fdef: ast.FunctionDef) -> None:
        fdef.body = self._rewrite_block(fdef.body)


def _unwrap(func: Any) -> types.FunctionType:
    if isinstance(func, (staticmethod, classmethod)):
        func = func.__func__
    if isinstance(func, types.MethodType):
        func = func.__func__
    if not isinstance(func, types.FunctionType):
        raise TypeError(f"{func!r} is not a Python function or method, it cannot be rewritten")
    return func


def transform_method(func: Callable[..., Any], verbose: int = 0) -> RewrittenMethod:
    """
    Rewrites the ``if`` statements of the body of ``func`` into
    :func:`torch.cond` (see the module documentation for the supported forms) and compiles
    the result with the globals and the closure of ``func``.

    :param func: a function or a method (its source must be available)
    :param verbose: prints the rewritten code if > 0
    :return: a :class:`RewrittenMethod` (``func``, ``tree``, ``code``)
    :raises RewriteError: an ``if`` cannot be rewritten, or there is none

    >>> def g(x):
    ...     y = x
    ...     if x.max() > 1:
    ...         y = x * 2
    ...     return y
    >>> print(transform_method(g).code)  # doctest: +ELLIPSIS
    def g(x):
        import torch as __rewrite_torch__
        y = x
    ...
        if isinstance(__cond_1, __rewrite_torch__.Tensor):
            y, = __rewrite_torch__.cond(__cond_1, __branch_true_1, __branch_false_1, ())
    ...
    """
    func = _unwrap(func)
    where = f"{func.__module__}.{func.__qualname__}"
    try:
        lines, first_line = inspect.getsourcelines(func)
    except (OSError, TypeError) as e:
        raise RewriteError(f"cannot rewrite {where}: its source is not available ({e})") from e
    tree = ast.parse(textwrap.dedent("".join(lines)))
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef):
        raise RewriteError(f"cannot rewrite {where}: it is not defined by a 'def' statement")
    fdef.decorator_list = []
    rewriter = _Rewriter(where, first_line)
    rewriter.rewrite(fdef)
    # torch is imported as a local name: neither the globals of func nor a closure change
    fdef.body.insert(0, ast.Import(names=[ast.alias("torch", _TORCH)]))
    if rewriter.count == 0:
        raise RewriteError(
            f"cannot rewrite {where}, line {first_line}: there is no 'if' in its body "
            "(loops and with blocks included), nothing to rewrite"
        )
    # a factory gives the rewritten function the closure of the original one
    freevars = list(func.__code__.co_freevars)
    factory = _function_def(
        "__rewrite_factory__",
        [ast.arg(v) for v in freevars],
        [fdef, ast.Return(_name(fdef.name))],
    )
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    ast.increment_lineno(module, first_line - 1)
    filename = inspect.getsourcefile(func) or f"<{where}>"
    code = compile(module, filename=filename, mode="exec")
    namespace: dict[str, Any] = {}
    exec(code, func.__globals__, namespace)  # the globals of func, seen live
    cells = [c.cell_contents for c in (func.__closure__ or ())]
    new_func = namespace["__rewrite_factory__"](*cells)
    new_func.__defaults__ = func.__defaults__
    new_func.__kwdefaults__ = func.__kwdefaults__
    new_func.__qualname__ = func.__qualname__
    new_func.__doc__ = func.__doc__
    new_func.__dict__.update(func.__dict__)
    result = RewrittenMethod(fdef, new_func, rewriter.count)
    if verbose:
        print(f"[transform_method] {where}, {rewriter.count} if rewritten:\n{result.code}")
    return result


def _resolve(item: Any, i: int) -> tuple[Any, str, Any]:
    """Returns ``(owner, attribute name, function)`` for one element of ``rewrite``."""
    where = f"rewrite[{i}]"
    if isinstance(item, tuple):
        if len(item) != 2 or not isinstance(item[1], str):
            raise TypeError(f"{where} must be (class, method name), not {item!r}")
        owner, name = item
        if not isinstance(owner, type):
            raise TypeError(f"{where}: {owner!r} is not a class")
        if not hasattr(owner, name):
            raise AttributeError(f"{where}: class {owner.__name__} has no attribute {name!r}")
        return owner, name, inspect.getattr_static(owner, name)
    if not isinstance(item, (types.FunctionType, types.MethodType)):
        raise TypeError(
            f"{where} must be (class, method name) or a function, not {type(item).__name__}"
        )
    func = _unwrap(item)
    parts = func.__qualname__.split(".")
    if "<locals>" in parts:
        raise ValueError(
            f"{where}: {func.__qualname__} is defined inside a function, its owner cannot be "
            "found, pass (class, method name)"
        )
    import sys

    owner = sys.modules.get(func.__module__)
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
    if owner is None or getattr(owner, parts[-1], None) is None:
        raise ValueError(f"{where}: cannot find where {func.__qualname__} is defined")
    return owner, parts[-1], inspect.getattr_static(owner, parts[-1])


@contextlib.contextmanager
def torch_export_rewrite(
    rewrite: list[tuple[type, str] | Callable[..., Any]] | None = None,
    dump_rewriting: str | None = None,
    verbose: int = 0,
) -> Iterator[None]:
    """
    Replaces, while the context is active, the methods or functions in ``rewrite`` by their
    version where the Python ``if`` statements testing a tensor call :func:`torch.cond`
    (see :func:`transform_method`), so that :func:`torch.export.export` keeps both branches.
    Every method is rewritten before anything is installed (an error leaves everything
    as it was); on exit, normally or through an exception, the original objects are put
    back (the very same ones, an inherited method is removed from the subclass again).

    :param rewrite: the methods or functions to rewrite: ``(class, method name)``, or a
        method or a function defined at module level (``Model.forward``, ``outside``)
    :param dump_rewriting: if not None, writes the original and the rewritten code of every
        method in ``<dump_rewriting>.<owner>.<name>.original.py`` / ``.rewritten.py``
    :param verbose: prints what is rewritten and restored (> 1 also prints the code)

    >>> import torch
    >>> class Model(torch.nn.Module):
    ...     def forward(self, x, y):
    ...         if x.sum() > 0:
    ...             return x + y
    ...         else:
    ...             return torch.abs(x) + y + 1
    >>> x, y = torch.rand((4, 5)), torch.rand((4, 5))
    >>> ds = ({0: torch.export.Dim.DYNAMIC}, {0: torch.export.Dim.DYNAMIC})
    >>> with torch_export_rewrite(rewrite=[(Model, "forward")]):
    ...     ep = torch.export.export(Model(), (x, y), dynamic_shapes=ds)
    >>> bool((ep.module()(-x, y) == Model()(-x, y)).all())
    True
    """
    if rewrite is None or not isinstance(rewrite, (list, tuple)) or not rewrite:
        raise TypeError(
            "torch_export_rewrite: rewrite must be a non empty list of (class, method name) "
            f"or functions, not {rewrite!r}"
        )
    if dump_rewriting is not None and not isinstance(dump_rewriting, str):
        raise TypeError(f"dump_rewriting must be a str or None, not {dump_rewriting!r}")
    prepared: list[tuple[Any, str, Any, RewrittenMethod]] = []
    seen: set[tuple[int, str]] = set()
    for i, item in enumerate(rewrite):
        owner, name, original = _resolve(item, i)
        if (id(owner), name) in seen:
            raise ValueError(f"rewrite[{i}]: {owner.__name__}.{name} is given twice")
        seen.add((id(owner), name))
        rewritten = transform_method(original, verbose=max(verbose - 1, 0))
        prepared.append((owner, name, original, rewritten))
    with contextlib.ExitStack() as stack:
        for owner, name, original, rewritten in prepared:
            label = f"{owner.__name__}.{name}"
            new = rewritten.func
            if isinstance(original, staticmethod):
                new = staticmethod(new)
            elif isinstance(original, classmethod):
                new = classmethod(new)
            if dump_rewriting:
                base = f"{dump_rewriting}.{owner.__name__}.{name}"
                with open(f"{base}.original.py", "w", encoding="utf-8") as f:
                    f.write(textwrap.dedent(inspect.getsource(_unwrap(original))))
                with open(f"{base}.rewritten.py", "w", encoding="utf-8") as f:
                    f.write(rewritten.code + "\n")
            had = name in vars(owner)
            setattr(owner, name, new)
            stack.callback(_restore, owner, name, had, original, verbose)
            if verbose:
                print(f"[torch_export_rewrite] rewrites {label} ({rewritten.n_rewritten} if)")
        yield


def _restore(owner: Any, name: str, had: bool, original: Any, verbose: int) -> None:
    if had:
        setattr(owner, name, original)
    else:
        delattr(owner, name)
    if verbose:
        print(f"[torch_export_rewrite] restores {owner.__name__}.{name}")
