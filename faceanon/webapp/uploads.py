"""What happens to an uploaded photo: where the app keeps it, when it is cleaned and when it goes.

* Every server process keeps Gradio's files (uploads, results) in a folder of its own,
  `<root>/faceanon-webapp/server-<pid>-<token>/`, where root is `FACEANON_TEMP_DIR`, else the
  operator's `GRADIO_TEMP_DIR`, else the system temp folder. faceanon points `GRADIO_TEMP_DIR` there.
* The folder is locked (`flock`) while its server runs. At start-up a server deletes every sibling
  folder whose lock is free: the leftovers of a server that was killed (SIGKILL, a crash, a power
  cut), which had no chance to clean up. SIGTERM is turned into a normal shutdown, which deletes the
  server's own folder; Gradio's `delete_cache` removes files older than its age limit meanwhile.
* An upload is re-encoded the moment it arrives, before the upload request is answered
  (`CleanUploads`): the file Gradio stored is overwritten with a PNG of the pixels (EXIF rotation
  applied; EXIF, GPS, XMP, IPTC and comments dropped; ICC profile kept). An image that cannot be read
  or is too large is emptied, and the reason is kept in memory to be shown to the person.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
import warnings
from collections import OrderedDict
from pathlib import Path

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

FOLDER_NAME = "faceanon-webapp"
LOCK_NAME = ".lock"
_UNLOCKED_GRACE_S = 60  # a folder without a lock file is a server still creating it, or a dead one

try:  # POSIX; elsewhere leftovers are only removed by age (see sweep_leftovers)
    import fcntl
except ImportError:  # pragma: no cover  (Windows)
    fcntl = None


def temp_root() -> Path:
    """The folder that holds every faceanon server's temp folder on this machine."""
    base = os.environ.get("FACEANON_TEMP_DIR") or os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()
    return Path(base) / FOLDER_NAME


class ServerTempDir:
    """This server's own temp folder (see the module doc): claimed at start, locked while it runs."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else temp_root()
        self.path: Path | None = None
        self._lock_file = None

    def claim(self) -> Path:
        """Sweeps dead servers' folders, creates and locks this one, points Gradio at it."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = sweep_leftovers(self.root)
        if removed:
            log.info("removed %d temp folder(s) left by servers that did not shut down cleanly", removed)
        self.path = self.root / f"server-{os.getpid()}-{secrets.token_hex(4)}"
        self.path.mkdir(mode=0o700)
        self._lock_file = open(self.path / LOCK_NAME, "w")  # noqa: SIM115  (held for the process's life)
        if fcntl is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.environ["GRADIO_TEMP_DIR"] = str(self.path)
        return self.path

    def release(self) -> None:
        """Deletes this server's folder (at a clean shutdown)."""
        if self.path is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_file is not None:
            self._lock_file.close()
        self.path = self._lock_file = None


def sweep_leftovers(root: Path) -> int:
    """Deletes the folders under `root` whose server is gone; returns how many."""
    removed = 0
    for folder in sorted(Path(root).glob("server-*")):
        if folder.is_dir() and _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _abandoned(folder: Path) -> bool:
    lock = folder / LOCK_NAME
    if not lock.exists():
        return time.time() - folder.stat().st_mtime > _UNLOCKED_GRACE_S
    if fcntl is None:  # pragma: no cover
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its server holds the lock: alive
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


# -- uploads: cleaned on arrival --------------------------------------------------------------------
class Refusals:
    """Why an upload was refused (emptied on arrival), by stored path; bounded, in memory only."""

    def __init__(self, size: int = 2048):
        self._reasons: OrderedDict[str, str] = OrderedDict()
        self._size = size

    def add(self, path: str, reason: str) -> None:
        self._reasons[str(path)] = reason
        while len(self._reasons) > self._size:
            self._reasons.popitem(last=False)

    def get(self, path: str | None) -> str | None:
        return self._reasons.get(str(path)) if path else None


REFUSALS = Refusals()


class UnreadableUpload(str):
    """What a photo input passes on for an upload it cannot use: the reason, for people.

    The handler raises it as its one error (limits.check_image_file), so the page shows one message
    in its message box instead of Gradio's toast plus an "Error" badge on every output.
    """


def clean_upload(path: str | Path, max_megapixels: float, display_name: str = "") -> str:
    """Rewrites an uploaded image in place without its metadata; returns what was done.

    "cleaned": overwritten with a metadata-free PNG; "refused": emptied, reason in REFUSALS;
    "not an image": left as is (not a photo upload: other tabs' files, or a wrong file type that the
    photo input refuses when it is used).
    """
    from faceanon.errors import ImageInputError
    from faceanon.media.atomic import write_bytes_atomic
    from faceanon.media.photo import load_image

    path = Path(path)
    name = f"“{display_name or path.name}”"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            with Image.open(path) as header:
                width, height = header.size
                upright_jpeg = header.format == "JPEG" and header.getexif().get(0x0112, 1) == 1
    except Image.DecompressionBombError:
        return _refuse(
            path,
            f"{name} has far more pixels than this server accepts (at most "
            f"{max_megapixels:g} megapixels). Resize it and try again.",
        )
    except (UnidentifiedImageError, OSError, ValueError):
        return "not an image"
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        return _refuse(
            path,
            f"{name} is {width}×{height} pixels ({megapixels:.0f} megapixels); this server "
            f"accepts at most {max_megapixels:g} megapixels. Resize it and try again.",
        )
    try:
        data = path.read_bytes()
        image = None if upright_jpeg else load_image(data, max_pixels=int(max_megapixels * 1e6))
        cleaned = _jpeg_without_metadata(data) if upright_jpeg else _png_bytes(image)
        if upright_jpeg:  # the copy must still decode, whole: a truncated or damaged file is refused
            load_image(cleaned, max_pixels=int(max_megapixels * 1e6))
    except ImageInputError as error:
        return _refuse(path, str(error).replace("The image", name, 1))
    write_bytes_atomic(path, cleaned)
    return "cleaned"


# JPEG segments kept by _jpeg_without_metadata: what decoding needs, JFIF, the ICC profile and
# Adobe's colour-transform flag. Everything else before the image data goes: EXIF and XMP (APP1),
# MPF and FlashPix (APP2), IPTC / Photoshop (APP13), comments, makers' APPn.
_KEEP_APP = {0xE0: (b"JFIF\0", b"JFXX\0"), 0xE2: (b"ICC_PROFILE\0",), 0xEE: (b"Adobe",)}
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}


def _jpeg_without_metadata(data: bytes) -> bytes:
    """The same JPEG, bit for bit the same pixels, without metadata segments and without anything
    after the first image (phones append previews with their own EXIF: MPF). For upright photos:
    the EXIF orientation is dropped with the rest."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    out, i = [b"\xff\xd8"], 2
    while i < len(data) - 1:
        if data[i] != 0xFF:
            raise ValueError("damaged JPEG")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            out.append(data[i : i + 2])
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segment = data[i : i + 2 + length]
        if marker == 0xDA:  # start of scan: the image data, up to the end-of-image marker
            end = data.find(b"\xff\xd9", i + 2 + length)
            out.append(data[i:] if end < 0 else data[i : end + 2])
            return b"".join(out)
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE) or segment[4:].startswith(
            _KEEP_APP.get(marker, (b"\x00" * 64,))
        ):
            out.append(segment)
        i += 2 + length
    raise ValueError("JPEG without image data")


def _png_bytes(image: Image.Image) -> bytes:
    """Pixels and ICC profile only, as PNG; the fastest zlib level: this runs on every upload, before
    the upload is answered, and the file lives minutes (encode_image's level 6 is 3-4x slower)."""
    buffer = io.BytesIO()
    icc = image.info.get("icc_profile")
    image.save(buffer, format="PNG", compress_level=1, **({"icc_profile": icc} if icc else {}))
    return buffer.getvalue()


def _refuse(path: Path, reason: str) -> str:
    path.write_bytes(b"")  # whatever metadata it carried goes now
    REFUSALS.add(str(path), reason)
    return "refused"


class CleanUploads:
    """ASGI middleware: runs `clean_upload` on every file of a Gradio upload before answering it."""

    def __init__(self, app, max_megapixels: float = 40):
        self.app = app
        self.max_megapixels = max_megapixels

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/upload"):
            return await self.app(scope, receive, send)
        held: list[dict] = []

        async def hold_until_clean(message):
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await self._clean_response_files(held)
                for kept in held:
                    await send(kept)

        await self.app(scope, receive, hold_until_clean)

    async def _clean_response_files(self, messages: list[dict]) -> None:
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        if start is None or start.get("status") != 200:
            return
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        with contextlib.suppress(ValueError):
            paths = json.loads(body)
            if isinstance(paths, list):
                await asyncio.to_thread(self._clean_all, [p for p in paths if isinstance(p, str)])

    def _clean_all(self, paths: list[str]) -> None:
        for path in paths:
            try:
                clean_upload(path, self.max_megapixels)
            except Exception:  # a failure here must not leave the original: empty it
                log.exception("cleaning an upload failed; the file is emptied")
                with contextlib.suppress(OSError):
                    Path(path).write_bytes(b"")
                REFUSALS.add(
                    path, "This file could not be read as an image. Upload a JPEG, PNG or WebP photo."
                )
