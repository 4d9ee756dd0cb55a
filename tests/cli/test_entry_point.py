"""What every command shares: a full disk met outside samdg's atomic writers is still one line, exit code 2."""

from __future__ import annotations

import errno

import pytest

from samdg.cli.common import entry_point


def test_a_full_disk_anywhere_is_one_line(capsys):
    @entry_point
    def main() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/results/fold_0/training_log.txt")

    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("samdg: error: no space left on /data/results/fold_0/training_log.txt (No space "
                                       "left on device); free some space and rerun, finished outputs are kept\n")


def test_other_os_errors_are_not_hidden():
    @entry_point
    def main() -> int:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        main()
