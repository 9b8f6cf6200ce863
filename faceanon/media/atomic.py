"""Outputs appear whole or not at all.

Every file faceanon writes (photos, videos, reports, CSVs, Parquet tables) goes through
`atomic_output`: the data is written to a hidden temporary name in the destination's folder,
flushed to disk, and renamed over the destination only when complete. A crash, a full disk or
Ctrl-C leaves the destination as it was (absent, or the previous complete version) and removes
the temporary file, so a rerun that skips existing outputs never mistakes a broken one for done.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".faceanon-partial-"


@contextlib.contextmanager
def atomic_output(destination: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `destination`; on success it replaces `destination`.

    `suffix` (default: the destination's) matters to writers that pick a format from the name,
    such as FFmpeg muxers.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=TEMP_PREFIX, suffix=destination.suffix if suffix is None else suffix, dir=destination.parent
    )
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomic(destination: str | Path, data: bytes) -> Path:
    """`Path.write_bytes`, atomically."""
    with atomic_output(destination) as temporary:
        temporary.write_bytes(data)
    return Path(destination)


def write_text_atomic(destination: str | Path, text: str) -> Path:
    """`Path.write_text` (UTF-8), atomically."""
    return write_bytes_atomic(destination, text.encode("utf-8"))


def is_partial(path: str | Path) -> bool:
    """Whether `path` is a temporary file left by an interrupted write (to skip, or sweep)."""
    return Path(path).name.startswith(TEMP_PREFIX)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def sweep_partials(folder: str | Path, older_than_s: float = 600.0) -> list[Path]:
    """Remove the temporary files an interrupted run left in `folder` (not below it). Files
    touched in the last `older_than_s` seconds are left alone: another run may be writing them."""
    import time

    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    limit = time.time() - older_than_s
    for leftover in folder.glob(f"{TEMP_PREFIX}*"):
        try:
            if leftover.is_file() and leftover.stat().st_mtime < limit:
                leftover.unlink()
                removed.append(leftover)
        except OSError:
            pass  # gone already, or not ours to remove: it is ignored either way
    return removed


def _fsync(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


__all__ = [
    "atomic_output",
    "write_bytes_atomic",
    "write_text_atomic",
    "is_partial",
    "sweep_partials",
    "TEMP_PREFIX",
]
