"""The one exception type georet raises for problems a user can fix.

The CLI prints its message as a single line and exits non-zero; anything else
escaping the library is a bug and keeps its traceback (with ``--debug``).
"""


class GeoretError(Exception):
    """A user-facing error: bad input, missing file, incompatible index..."""
