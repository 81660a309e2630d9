"""Public names of a package that import their module on first use.

Why: a ``georet query`` must not pay for torch (~1.3 s) when its text goes
through the numpy encoder, yet ``from georet.models import load_model`` should
stay the one public way in. A package lists its heavy names here; the light
ones it imports as usual.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``{module: names}``; a name equal to the module's last part
    is the module itself."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(module)
        value = loaded if module.rsplit(".", 1)[-1] == name else getattr(loaded, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
