"""Operating limits of the web app and the checks that enforce them on every upload.

Every check fails with a `gr.Error` whose text is shown to the person as is: what is wrong, and
what to do about it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import gradio as gr
from PIL import Image, UnidentifiedImageError

from faceanon.webapp.uploads import REFUSALS, UnreadableUpload

READABLE_FORMATS = "JPEG, PNG or WebP"
log = logging.getLogger("faceanon.webapp")


def user_error(message: str, title: str = "Cannot do that", duration: float | None = 10) -> gr.Error:
    """An expected refusal (bad upload, bad setting): shown to the person as is, logged as one line
    (Gradio would print a traceback for every one)."""
    log.info("refused (%s): %s", title, message)
    return gr.Error(message, title=title, duration=duration, print_exception=False)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server. Defaults suit a shared Space; override by env vars."""

    max_file_size: str = "20mb"  # enforced by Gradio at upload time (HTTP 413)
    max_megapixels: int = 40  # checked from the file header, before decoding
    max_diffusion_faces: int = 12  # per request: each face is one diffusion run
    max_steps: int = 100
    gpu_jobs: int = 1  # diffusion jobs that may run at once (one per GPU)
    cpu_jobs: int = min(4, os.cpu_count() or 1)  # detections / redactions that may run at once
    requests_at_once: int = 16  # photo requests in progress (the rest wait in Gradio's queue)
    cache_every_s: int = 300  # how often Gradio's temp files are swept...
    cache_max_age_s: int = 900  # ...and how old a file must be to go

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_file_size=os.environ.get("FACEANON_MAX_FILE_SIZE", cls.max_file_size),
            max_megapixels=_env_int("FACEANON_MAX_MEGAPIXELS", cls.max_megapixels),
            max_diffusion_faces=_env_int("FACEANON_MAX_DIFFUSION_FACES", cls.max_diffusion_faces),
            max_steps=_env_int("FACEANON_MAX_STEPS", cls.max_steps),
            gpu_jobs=_env_int("FACEANON_GPU_JOBS", cls.gpu_jobs),
            cpu_jobs=_env_int("FACEANON_CPU_JOBS", cls.cpu_jobs),
            requests_at_once=_env_int("FACEANON_REQUESTS_AT_ONCE", cls.requests_at_once),
            cache_every_s=_env_int("FACEANON_CACHE_EVERY_S", cls.cache_every_s),
            cache_max_age_s=_env_int("FACEANON_CACHE_MAX_AGE_S", cls.cache_max_age_s),
        )

    @property
    def delete_cache(self) -> tuple[int, int]:
        """The (frequency, age) pair of `gr.Blocks(delete_cache=...)`."""
        return (self.cache_every_s, self.cache_max_age_s)


def not_an_image_error(name: str = "") -> gr.Error:
    what = f"“{os.path.basename(name)}”" if name else "This file"
    return user_error(
        f"{what} is not an image faceanon can read. Upload a photo as {READABLE_FORMATS}.",
        title="Not an image",
    )


def check_image_file(path: str | None, limits: Limits, what: str = "photo") -> tuple[int, int]:
    """Checks an uploaded file is a readable image within the pixel limit; returns (width, height).

    Only the header is read, so a decompression bomb is refused before it is decoded.
    """
    if not path:
        raise user_error(f"Upload a {what} first.", title="No image")
    if isinstance(path, UnreadableUpload):  # refused by the photo input: say why
        raise user_error(str(path), title="Cannot read the image")
    refused = REFUSALS.get(path)  # refused when it arrived (uploads.CleanUploads): say why
    if refused:
        raise user_error(refused, title="Cannot read the image")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise not_an_image_error(path) from None
    megapixels = width * height / 1e6
    if megapixels > limits.max_megapixels:
        raise user_error(
            f"The {what} is {width}×{height} pixels ({megapixels:.0f} megapixels); this server accepts "
            f"at most {limits.max_megapixels} megapixels. Resize it and try again.",
            title="Image too large",
        )
    return width, height


def check_face_count(generated: int, limits: Limits, too_small: int = 0) -> None:
    """Refuses more new identities than the limit; faces too small for one are only blurred and
    do not count."""
    if generated > limits.max_diffusion_faces:
        small = (
            (
                f" ({too_small} smaller selected face{'s are' if too_small != 1 else ' is'} only blurred "
                "and not counted)"
            )
            if too_small
            else ""
        )
        raise user_error(
            f"{generated} selected faces are large enough for a new identity{small}; this server makes at "
            f"most {limits.max_diffusion_faces} per request. Select fewer faces (click them on the "
            "picture), or use blur, pixelate or solid for crowds.",
            title="Too many faces",
        )


def check_steps(steps: int, limits: Limits) -> int:
    steps = int(steps)
    if not 1 <= steps <= limits.max_steps:
        raise user_error(f"Steps must be between 1 and {limits.max_steps}; got {steps}.", title="Bad setting")
    return steps
