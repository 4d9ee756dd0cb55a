"""What every command shares: user errors become one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import errno
import functools
import json
import sys
from typing import Callable, Sequence

from samdg.errors import SamdgError


def entry_point(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script ``main``: ``SamdgError`` (and a full disk) -> ``samdg: error: ...`` on stderr, exit
    code 2; Ctrl-C -> one line, exit code 130."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
        except SamdgError as error:
            print(f"samdg: error: {error}", file=sys.stderr)
            sys.exit(2)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # a full disk hit outside samdg's atomic writers (which say so themselves): still one line
            where = f" on {error.filename}" if error.filename else ""
            print(f"samdg: error: no space left{where} ({error.strerror}); free some space and rerun, finished "
                  "outputs are kept", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("samdg: interrupted; finished outputs are kept and a rerun resumes", file=sys.stderr)
            sys.exit(130)
        return code or 0

    return wrapped


def parse_overrides(texts: Sequence[str]) -> dict[str, object]:
    """``--override KEY=VALUE`` arguments -> ``{dotted key: value}`` (a repeated key: the last one wins).

    The value is read as JSON (``4``, ``1e-3``, ``true``, ``null``, ``"x"``, ``[64,64]``), anything else as text
    (``training.augmentation=none``). Whether the key exists and the value fits is checked by the plans.
    """
    overrides: dict[str, object] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise SamdgError(f"--override {text}: expected key=value, e.g. training.batch_size=8")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides
