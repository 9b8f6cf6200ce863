"""Outputs appear whole or not at all (faceanon.media.atomic), also for `faceanon evaluate`'s CSV."""

import os
import subprocess
import sys

import pytest

from faceanon.media.atomic import TEMP_PREFIX, atomic_output, is_partial, sweep_partials, write_bytes_atomic


def test_a_failed_write_keeps_the_previous_version_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.png"
    write_bytes_atomic(target, b"complete version 1")
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_bytes(b"half of vers")
        assert is_partial(temporary) and temporary.parent == tmp_path
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"complete version 1" and os.listdir(tmp_path) == ["out.png"]


def test_sweep_removes_stale_leftovers_only(tmp_path):
    stale, fresh = tmp_path / f"{TEMP_PREFIX}1.jpg", tmp_path / f"{TEMP_PREFIX}2.jpg"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (1, 1))
    (tmp_path / "photo.jpg").write_bytes(b"z")
    assert sweep_partials(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted([fresh.name, "photo.jpg"])


_CSV_UNDER_LIMIT = r"""
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
from faceanon.evaluation import _csv_appender
try:
    with _csv_appender(Path(sys.argv[1])) as write:
        for seed in range(100):
            write([{"photo": "grace.jpg", "method": "blur", "degree": 0.0, "seed": seed, "face": 0}])
except OSError as error:
    print("stopped:", error.strerror)
"""


def test_the_evaluation_csv_is_never_left_with_a_cut_row(tmp_path):
    """RLIMIT_FSIZE (SIGXFSZ ignored) makes writes past 3000 bytes fail with EFBIG, as a full disk."""
    from faceanon.evaluation import COLUMNS, _complete_rows, _done_keys

    csv_path = tmp_path / "evaluation.csv"
    done = subprocess.run(
        [sys.executable, "-c", _CSV_UNDER_LIMIT, str(csv_path)], capture_output=True, text=True, timeout=120
    )
    assert "stopped: File too large" in done.stdout, done.stderr
    text = csv_path.read_bytes().decode()
    assert text.endswith("\r\n") and len(text) <= 3000 and os.listdir(tmp_path) == ["evaluation.csv"]
    rows = _complete_rows(csv_path)
    assert rows and [int(r["seed"]) for r in rows] == list(range(len(rows)))
    # a CSV cut mid-row (as the appending writer could leave it): the cut row is measured again
    csv_path.write_bytes((text + ",".join(["grace.jpg", "blur"] + [""] * 3)).encode())
    assert len(_complete_rows(csv_path)) == len(rows) and len(_done_keys(csv_path)) == len(rows)
    assert len(COLUMNS) > 5
