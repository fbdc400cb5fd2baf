"""The errors a user can act on, one hierarchy for the whole project.

Every app verb and library function raises one of these for a problem the user can fix
(bad data, a missing model, an export of another app, bad input). The command line prints
them as one ``error:`` line and exits with code 2; any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

__all__ = ["DataError", "InputError", "ModelError", "RnnkitError"]


class RnnkitError(Exception):
    """Base class: a problem the user can fix, printed as one ``error:`` line."""


class DataError(RnnkitError, ValueError):
    """The data cannot be used: unknown ``--data`` spec, missing or malformed files,
    a failed download, an empty split."""


class ModelError(RnnkitError):
    """No trained model or export where one is needed, or one of the wrong kind."""


class InputError(RnnkitError, ValueError):
    """A ``predict`` input cannot be used: no input, a missing or corrupt file, NaN."""
