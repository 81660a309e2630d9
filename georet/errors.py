"""The exceptions georet raises for problems a user can fix.

The CLI prints the message as a single line and exits non-zero; anything else
escaping the library is a bug and keeps its traceback (``GEORET_DEBUG=1``).
The subclasses say what kind of problem it is, so a shell maps them without
reading messages (the server: 404, 403, 409, else 400).
"""


class GeoretError(Exception):
    """A user-facing error: bad input, missing file, incompatible index..."""


class NotFoundError(GeoretError):
    """Something named does not exist: a file, a tile, a label set, an index."""


class ReadOnlyError(GeoretError):
    """The index can be read but not changed here."""


class ConflictError(GeoretError):
    """What exists was made for something else: an index or cache of another model, a file that is not georet's."""


class InputError(GeoretError):
    """A bad value for one named parameter.

    The message names the parameter as the library spells it (``bbox: must be
    four numbers``), which is also the HTTP query parameter; the CLI names the
    flag instead (``--bbox: must be four numbers``), so each user reads the name
    they typed.
    """

    def __init__(self, param: str, problem: str):
        self.param, self.problem = param, problem
        super().__init__(f"{param}: {problem}")
