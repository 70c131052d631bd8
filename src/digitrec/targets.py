"""`_target_` names (Hydra's convention): finding the class they name, and its arguments.

Torch-free on purpose: the config pre-check reads a class's arguments from its source file when it
can (importing torch takes seconds, a typo should be one line in about one), and imports the
module only when the source does not say.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitrec.errors import DigitrecError


def locate(target: str) -> Any:
    """The object a dotted `_target_` names (importing its module), or a one-line DigitrecError."""
    module_name, _, name = str(target).rpartition(".")
    if not module_name or not name:
        raise DigitrecError(f"no class {target}: give its full dotted path, e.g. torch.optim.Adam")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        parent, _, attr = module_name.rpartition(".")  # a.b.C.D: C may be a class inside module a.b
        if parent:
            try:
                return getattr(locate(f"{parent}.{attr}"), name)
            except (DigitrecError, AttributeError):
                pass
        raise DigitrecError(f"no class {target}: cannot import {module_name} ({err})") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise DigitrecError(f"no class {target}: {module_name} has no {name}") from None


@dataclass(frozen=True)
class Signature:
    """The keyword arguments a class or function takes (after `skip` leading positional ones)."""

    names: tuple[str, ...]
    required: frozenset[str]
    any_keyword: bool  # **kwargs: every name is accepted

    def accepts(self, name: str) -> bool:
        return self.any_keyword or name in self.names


def _module_file(dotted: str) -> Path | None:
    top, *rest = dotted.split(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level find_spec imports nothing
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin and not rest:
        return Path(spec.origin)
    else:
        return None
    path = base.joinpath(*rest)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _definition(module: str, name: str, depth: int = 0) -> ast.ClassDef | ast.FunctionDef | None:
    """The class or function `name` of `module` in its source, following `from .x import name`."""
    path = _module_file(module)
    if path is None or depth > 4:
        return None
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            return node
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = node.module or ""
                    if node.level:
                        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                        source = ".".join([*base, source] if source else base)
                    return _definition(source, alias.name, depth + 1)
    return None


def _from_ast(function: ast.FunctionDef, skip: int) -> Signature:
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    defaults_from = len(positional) - len(args.defaults)
    required = {a.arg for i, a in enumerate(positional) if i < defaults_from}
    required |= {a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None}
    names = [a.arg for a in positional][skip:] + [a.arg for a in args.kwonlyargs]
    return Signature(tuple(names), frozenset(required & set(names)), args.kwarg is not None)


def signature(target: str, skip: int = 0) -> Signature:
    """The arguments of the class or function `target` names: from its source when it is plain
    Python with its own __init__, else from the imported object. Raises DigitrecError ("no class ...")."""
    module, _, name = str(target).rpartition(".")
    node = _definition(module, name) if module else None
    if isinstance(node, ast.ClassDef):
        init = next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)
        if init is not None and not node.decorator_list:
            return _from_ast(init, skip + 1)  # + self
    elif isinstance(node, ast.FunctionDef) and not node.decorator_list:
        return _from_ast(node, skip)
    obj = locate(target)
    try:
        parameters = list(inspect.signature(obj).parameters.values())[skip:]
    except (TypeError, ValueError):
        return Signature((), frozenset(), True)
    kinds = inspect.Parameter
    names = tuple(p.name for p in parameters if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY))
    required = frozenset(p.name for p in parameters if p.name in names and p.default is kinds.empty)
    return Signature(names, required, any(p.kind is kinds.VAR_KEYWORD for p in parameters))
