"""The exceptions georet raises for problems a user can fix.

The CLI prints the message as a single line and exits non-zero; anything else
escaping the library is a bug and keeps its traceback (``GEORET_DEBUG=1``).
The subclasses say what kind of problem it is, so a shell maps them without
reading messages (the server: 404, 403, 409, else 400); as rasterio's do, the kinds that
mean one of Python's own also subclass it (``InputError`` a ``ValueError``, ``NotFoundError`` a
``LookupError``).

A message that names an option writes it as ``{name}`` and lists it in
``names``: the library spells it as its parameter (``bbox_crs``), the CLI as
its flag (``--bbox-crs``) and the server as its query parameter, through
:meth:`GeoretError.render`, so each user reads the name they typed.
"""

from __future__ import annotations

import errno
from typing import Callable, Sequence

#: what a full disk reads as, whoever wrote to it
DISK_FULL = "the disk is full (no space left on device)"


class GeoretError(Exception):
    """A user-facing error: bad input, missing file, incompatible index..."""

    def __init__(self, message: str = "", *, names: Sequence[str] = ()):
        self.template, self.names = message, tuple(names)
        super().__init__(self.render())

    def render(self, spell: Callable[[str], str] = str) -> str:
        """The message with each named option spelled by ``spell`` (default: the library's parameter name)."""
        message = self.template
        for name in self.names:
            message = message.replace("{" + name + "}", spell(name))
        return message

    def __reduce__(self):  # errors cross processes (Ray workers): keep the template, not only the text
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type, args: tuple, state: dict) -> GeoretError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class NotFoundError(GeoretError, LookupError):
    """Something named does not exist: a file, a tile, a label set, an index (a ``LookupError`` too, so code
    that asks for something by name catches it as Python's own kind)."""


class ReadOnlyError(GeoretError):
    """The index can be read but not changed here."""


class ConflictError(GeoretError):
    """What exists was made for something else: an index or cache of another model, a file that is not georet's."""


class InputError(GeoretError, ValueError):
    """A bad value for one named parameter: ``bbox: must be four numbers`` (the CLI: ``--bbox: ...``); a
    ``ValueError`` too, as Python's own bad values are."""

    def __init__(self, param: str, problem: str, *, names: Sequence[str] = ()):
        self.param, self.problem = param, problem
        super().__init__("{" + param + "}: " + problem, names=(param, *names))


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: an ``OSError`` from Python, or Lance's own error, which carries
    the OS error only in its text."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or f"os error {errno.ENOSPC})" in text
