"""The one exception type for problems a user can fix (bad files, arguments, missing data)."""


class SamdgError(Exception):
    """A user-facing error. The message names the file or argument and says what is wrong.

    Command-line entry points print it without a traceback (see :mod:`samdg.cli.common`).
    """


def one_line(error: BaseException, limit: int = 300) -> str:
    """A library's exception message on one line (whitespace collapsed, cut at ``limit`` characters), for
    SamdgError messages that quote it; the type name when the message is empty."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
