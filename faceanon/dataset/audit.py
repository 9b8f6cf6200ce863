"""The audit of a dataset job: two Parquet tables under ``DESTINATION/_faceanon/``.

    files/part-*.parquet   one row per item: file (its key), source, output, status, faces, changed,
                           seconds, error, image_seed, message, run, finished
    faces/part-*.parquet   one row per face: file, face (index), box [x0, y0, x1, y1], score, method,
                           seed, degree, identity_similarity, verdict, leak_guard_hits, watermark,
                           message, run

status: "done" (anonymized, or written unchanged because no face was found), "redacted" (faces
found, the diffusion failed: every face was blurred instead, `error` says why), "error" (nothing
written, `error` says why), "skipped" (not an input faceanon handles yet, e.g. videos).

Each worker batch writes its parts atomically (faceanon.media.atomic), outputs first, the files
part last: a files row is the commit mark of its items. A rerun skips the keys whose latest row is
"done" and retries the others. `read_audit(destination)` gives the latest row per file and that
attempt's faces, as pandas DataFrames. leak_guard_hits stays null until the leak guard lands.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from faceanon.dataset.sources import AUDIT_FOLDER
from faceanon.media.atomic import atomic_output

FILES_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("source", pa.string()),
        ("output", pa.string()),
        ("status", pa.string()),
        ("faces", pa.int32()),
        ("changed", pa.int32()),
        ("seconds", pa.float64()),
        ("error", pa.string()),
        ("image_seed", pa.int64()),
        ("message", pa.string()),
        ("run", pa.string()),
        ("finished", pa.float64()),
    ]
)
FACES_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("face", pa.int32()),
        ("box", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("method", pa.string()),
        ("seed", pa.int64()),
        ("degree", pa.float64()),
        ("identity_similarity", pa.float64()),
        ("verdict", pa.string()),
        ("leak_guard_hits", pa.int32()),
        ("watermark", pa.bool_()),
        ("message", pa.string()),
        ("run", pa.string()),
    ]
)
COMPLETED = "done"


def audit_folder(destination: str | Path) -> Path:
    return Path(destination) / AUDIT_FOLDER


def write_part(destination: str | Path, table: str, name: str, rows: list[dict]) -> Path:
    """Write rows of `table` ("files" or "faces") as one Parquet part, atomically."""
    schema = FILES_SCHEMA if table == "files" else FACES_SCHEMA
    target = audit_folder(destination) / table / f"{name}.parquet"
    write_table(target, pa.Table.from_pylist(rows, schema=schema))
    return target


def write_table(target: Path, data: pa.Table) -> None:
    with atomic_output(target) as temporary:
        pq.write_table(data, temporary)


def file_row(file: str, source: str, status: str, run: str, **values) -> dict:
    row = dict.fromkeys(FILES_SCHEMA.names)
    row.update(file=file, source=source, status=status, run=run, finished=time.time(), faces=0, changed=0)
    row.update(values)
    return row


def _parts(destination: str | Path, table: str) -> list[Path]:
    folder = audit_folder(destination) / table
    return (
        sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []
    )


def _read(parts: list[Path], schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    tables = []
    for part in parts:
        try:
            tables.append(pq.read_table(part, columns=columns, schema=schema))
        except (OSError, pa.ArrowInvalid):
            continue  # not a complete Parquet file: never committed
    if not tables:
        names = columns or schema.names
        return pa.Table.from_pylist([], schema=pa.schema([schema.field(n) for n in names]))
    return pa.concat_tables(tables)


def latest_files(destination: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The latest files row of every key (rows sorted by `finished`)."""
    wanted = sorted(set(columns or FILES_SCHEMA.names) | {"file", "finished"}, key=FILES_SCHEMA.names.index)
    table = _read(_parts(destination, "files"), FILES_SCHEMA, wanted)
    if table.num_rows == 0:
        return table
    table = table.sort_by([("finished", "descending")])
    files = table.column("file").to_pylist()
    seen, keep = set(), []
    for i, key in enumerate(files):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table.take(keep).sort_by("file")


def completed_keys(destination: str | Path) -> set[str]:
    """Keys whose latest row says done: what a rerun skips."""
    latest = latest_files(destination, ["file", "status"])
    return {
        k
        for k, s in zip(latest.column("file").to_pylist(), latest.column("status").to_pylist(), strict=True)
        if s == COMPLETED
    }


def committed_parts(destination: str | Path) -> set[str]:
    """Names of the batches whose files part exists (their outputs are complete)."""
    return {p.stem for p in _parts(destination, "files")}


def read_audit(destination: str | Path):
    """(files, faces) pandas DataFrames: each file's latest row, and the faces of that attempt."""
    files = latest_files(destination)
    faces = _read(_parts(destination, "faces"), FACES_SCHEMA)
    attempts = set(zip(files.column("file").to_pylist(), files.column("run").to_pylist(), strict=True))
    keep = [
        i
        for i, pair in enumerate(
            zip(faces.column("file").to_pylist(), faces.column("run").to_pylist(), strict=True)
        )
        if pair in attempts
    ]
    faces = faces.take(keep).sort_by([("file", "ascending"), ("face", "ascending")])
    return files.to_pandas(), faces.to_pandas()


__all__ = [
    "read_audit",
    "completed_keys",
    "write_part",
    "file_row",
    "FILES_SCHEMA",
    "FACES_SCHEMA",
    "audit_folder",
]
