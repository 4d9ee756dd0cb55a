"""What every command shares: user errors become one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable

from samdg.errors import SamdgError


def entry_point(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script ``main``: ``SamdgError`` -> ``samdg: error: ...`` on stderr, exit code 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
        except SamdgError as error:
            print(f"samdg: error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("samdg: interrupted; finished outputs are kept and a rerun resumes", file=sys.stderr)
            sys.exit(130)
        return code or 0

    return wrapped
