"""Outputs appear whole or not at all (faceanon.media.atomic)."""

from __future__ import annotations

import os
import stat

import pytest

from faceanon.media.atomic import atomic_output, is_partial, write_bytes_atomic


def test_a_failed_write_leaves_the_previous_output_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.png"
    write_bytes_atomic(target, b"complete")
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_outputs_get_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "sub" / "a.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with atomic_output(tmp_path / "b.mp4") as temporary:
        assert is_partial(temporary) and temporary.suffix == ".mp4"
