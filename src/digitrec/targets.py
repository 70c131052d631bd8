"""`_target_` names (Hydra's convention): the class a name stands for, and the arguments it takes.

Both questions are put to Python itself: the class is imported, its arguments come from
`inspect.signature`, so the answer is always the installed library's own.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
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
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name and module_name.startswith(err.name):
            hint = " (run digitrec from the folder that holds it, or put that folder on PYTHONPATH)"
        raise DigitrecError(f"no class {target}: cannot import {module_name} ({err}){hint}") from None
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


def signature(target: str, skip: int = 0) -> Signature:
    """The arguments of the class or function `target` names, from `inspect.signature` of the
    imported object. Raises DigitrecError ("no class ...")."""
    obj = locate(target)
    try:
        parameters = list(inspect.signature(obj).parameters.values())[skip:]
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return Signature((), frozenset(), True)
    kinds = inspect.Parameter
    names = tuple(p.name for p in parameters if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY))
    required = frozenset(p.name for p in parameters if p.name in names and p.default is kinds.empty)
    return Signature(names, required, any(p.kind is kinds.VAR_KEYWORD for p in parameters))
