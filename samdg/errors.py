"""The one exception type for problems a user can fix (bad files, arguments, missing data)."""


class SamdgError(Exception):
    """A user-facing error. The message names the file or argument and says what is wrong.

    Command-line entry points print it without a traceback (see :mod:`samdg.cli.common`).
    """
