"""What preprocessing wrote, recorded so that a damaged ``.npy`` is found before it is trusted.

Each preprocessed array is recorded as ``{"bytes", "shape", "dtype"}`` in its case's properties JSON. A file
whose size, header, shape or dtype no longer match (truncated by a full disk or a copy cut short, overwritten, or
with a damaged header) is redone by the next ``samdg_plan_and_preprocess`` run and named in one line by training,
instead of a numpy traceback deep inside a data loader. Checking reads only the header, so it costs a few
microseconds per file; damage inside the voxel data of a complete file is not detected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """-> (shape, dtype, offset of the data) from an .npy header; ValueError/OSError when it is damaged."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = read(file)
        return tuple(int(s) for s in shape), dtype, file.tell()


def npy_record(path: str | Path) -> dict[str, Any]:
    """Size, shape and dtype of an .npy file just written."""
    path = Path(path)
    shape, dtype, _ = _read_header(path)
    return {"bytes": path.stat().st_size, "shape": list(shape), "dtype": dtype.str}


def npy_problem(path: str | Path, record: dict[str, Any] | None = None) -> str | None:
    """Why the .npy file at ``path`` cannot be trusted, or None when it is complete (and matches ``record``)."""
    path = Path(path)
    if not path.is_file():
        return "is missing"
    try:
        shape, dtype, offset = _read_header(path)
    except (OSError, ValueError, SyntaxError) as error:  # numpy raises these for damaged headers
        return f"has a damaged header ({error})"
    size = path.stat().st_size
    expected_size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected_size:
        return f"is truncated or damaged ({size} bytes, its header needs {expected_size})"
    if record is not None:
        if record.get("bytes") != size:
            return f"has {size} bytes, preprocessing wrote {record.get('bytes')}"
        if record.get("shape") != list(shape) or record.get("dtype") != dtype.str:
            return (f"holds {dtype.str} {list(shape)}, preprocessing wrote {record.get('dtype')} "
                    f"{record.get('shape')}")
    return None
