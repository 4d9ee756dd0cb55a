"""What every command shares: user errors become one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import json
import sys
from typing import Callable, Sequence

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
