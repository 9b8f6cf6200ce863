"""What a dataset job reads and where each result goes.

A source is a folder tree of photos, a single photo, a glob (``"photos/**/*.jpg"``), or Parquet
(a ``.parquet`` file or folder, or a glob ending in ``.parquet``) with a column of encoded image
bytes. Every item has a *key*: its path relative to its folder (or glob base, or its name for a
single file); for Parquet rows the key column, else the ``path`` of a Hugging Face image struct,
else ``sha256-<first 16 hex digits of the bytes>``. The key names the output (``OUT/<key>``) and
the item's rows in the audit, and it is what a rerun looks up to skip completed items.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from faceanon.dataset.errors import DatasetError

GLOB_MAGIC = ("*", "?", "[")
AUDIT_FOLDER = "_faceanon"  # inside the destination; '_' keeps it out of Parquet readers' listings


@dataclass
class Sources:
    """The items of a job, split by kind."""

    images: list[Path] = field(default_factory=list)  # files to read with read_binary_files
    roots: list[str] = field(default_factory=list)  # folders keys are relative to (shortest first)
    parquet: list[str] = field(default_factory=list)  # Parquet files/folders for read_parquet
    videos: list[Path] = field(default_factory=list)  # video files, one worker call each
    skipped: list[dict] = field(default_factory=list)  # {file, source, reason}: files not read
    problems: list[dict] = field(default_factory=list)  # {file, source, error}: missing paths


def is_parquet(path: str | Path) -> bool:
    return str(path).rstrip("/").lower().endswith(".parquet")


def list_sources(paths: list[str | Path], destination: Path) -> Sources:
    """Expand folders and globs into items. Files under `destination` are never inputs."""
    from faceanon.cli.jobs import not_read_reason

    sources = Sources()
    destination = destination.resolve()
    roots, videos = set(), video_extensions()
    for given in map(str, paths):
        if is_parquet(given):
            sources.parquet.append(given)
            continue
        files, root = _expand(given)
        if files is None:
            sources.problems.append({"file": given, "source": given, "error": "does not exist"})
            continue
        if root is not None:
            roots.add(str(root.resolve()))
        for file in files:
            if destination == file.resolve() or destination in file.resolve().parents:
                continue
            if file.suffix.lower() in videos and video_support():
                sources.videos.append(file.resolve())
                continue
            reason = (
                VIDEO_REASON if file.suffix.lower() in videos else not_read_reason(file)
            )  # the CLI's rule
            if reason:
                key = file.name if root is None else _relative(file, root)
                sources.skipped.append({"file": key, "source": str(file), "reason": reason})
            else:
                sources.images.append(file.resolve())
    sources.roots = sorted(roots, key=len)
    sources.images = sorted(set(sources.images))
    sources.videos = sorted(set(sources.videos))
    return sources


VIDEO_REASON = "videos need FaceAnonymizer.anonymize_video, which this installation of faceanon does not have"


def video_support() -> bool:
    """Whether videos are items (FaceAnonymizer.anonymize_video exists), else listed as skipped."""
    from faceanon.anonymizer import FaceAnonymizer

    return hasattr(FaceAnonymizer, "anonymize_video")


def video_extensions() -> frozenset[str]:
    try:
        from faceanon.media.video import VIDEO_EXTENSIONS
    except ImportError:
        return frozenset()
    return frozenset(VIDEO_EXTENSIONS)


def is_video_key(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in video_extensions()


def _expand(given: str) -> tuple[list[Path] | None, Path | None]:
    """(files, the root keys are relative to; None: a single file keyed by its name)."""
    if any(magic in given for magic in GLOB_MAGIC):
        base = _glob_base(given)
        matches = [Path(p) for p in glob.glob(given, recursive=True)]
        files = sorted(p for p in matches if p.is_file() and not p.name.startswith("."))
        return (files or None), base
    path = Path(given)
    if path.is_file():
        return [path], None
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
        return files, path
    return None, None


def _glob_base(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if any(magic in part for magic in GLOB_MAGIC):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _hidden(relative: Path) -> bool:
    """Hidden files (faceanon's temporary files among them) and a destination's audit folder."""
    return relative.name.startswith(".") or AUDIT_FOLDER in relative.parts[:-1]


def _relative(file: Path, root: Path) -> str:
    return file.resolve().relative_to(root.resolve()).as_posix()


def key_for_path(path: str, roots: list[str]) -> str:
    """An image file's key: relative to the outermost root that holds it (a folder and a glob
    inside it give one tree), else its name."""
    resolved = Path(path).resolve()
    for root in roots:
        if Path(root) in resolved.parents:
            return resolved.relative_to(root).as_posix()
    return resolved.name


def key_for_bytes(data: bytes) -> str:
    return "sha256-" + hashlib.sha256(data).hexdigest()[:16]


def parquet_item(value, key_value=None) -> tuple[bytes, str]:
    """(image bytes, key) of a Parquet row: `value` from the image column (bytes, or a Hugging Face
    Image struct {bytes, path}), `key_value` from --key-column when given."""
    struct_path = None
    if isinstance(value, dict):
        value, struct_path = value.get("bytes"), value.get("path")
    data = bytes(value) if value is not None else b""
    if key_value is not None:
        return data, str(key_value)
    return data, str(struct_path) if struct_path else key_for_bytes(data)


def output_name(key: str) -> str:
    """The output's relative path: the key, with ".png" appended when faceanon cannot write the
    input's format (photo.gif -> photo.gif.png: the single-process CLI's rule, so both agree)."""
    from faceanon.errors import FaceAnonError
    from faceanon.media.photo import format_for_path

    safe = PurePosixPath(key)
    if safe.is_absolute() or ".." in safe.parts or not safe.parts:
        raise DatasetError(
            f"The item key {key!r} is not a relative file name; give a --key-column whose values "
            "are relative paths such as 'folder/photo.jpg'."
        )
    if is_video_key(key):
        return safe.as_posix()  # a video keeps its container, as in the CLI
    try:
        format_for_path(key)
        return safe.as_posix()
    except FaceAnonError:
        return f"{safe.as_posix()}.png"


__all__ = [
    "Sources",
    "list_sources",
    "key_for_path",
    "key_for_bytes",
    "parquet_item",
    "output_name",
    "is_parquet",
    "VIDEO_REASON",
    "AUDIT_FOLDER",
]
