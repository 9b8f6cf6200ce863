"""The models behind the app: face detection at once, the diffusion weights in the background.

The page must come up in seconds even when the 12 GB of diffusion weights are missing or still
arriving, so redaction (blur/pixelate/solid) never waits for them. On a ZeroGPU Space the weights are
loaded before launch instead, because ZeroGPU moves models to the GPU only when they exist at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from faceanon.errors import FaceAnonError

log = logging.getLogger(__name__)

HOW_TO_GET_WEIGHTS = (
    "To enable it, run `faceanon download` and restart the app, or point the environment variables "
    "`FACEANON_FACE_MODEL`, `FACEANON_VAE` and `FACEANON_IMAGE_ENCODER` at local folders."
)


class ModelHost:
    """Holds the FaceAnonymizer and says whether diffusion can run, and if not, why."""

    LOADING, READY, UNAVAILABLE = "loading", "ready", "unavailable"

    def __init__(self, device: str | None = None, local_files_only: bool = True, detector: str = "yunet",
                 speed=None):
        self.requested_device = device
        self.speed = speed  # faceanon.speed.SpeedOptions, or None for the defaults
        self.local_files_only = local_files_only
        self.detector = detector
        self.state = self.LOADING
        self.reason = ""
        self.device = None
        self.load_seconds = None
        self._redactor = None
        self._anonymizer = None  # with the diffusion pipeline, once loaded
        self._lock = threading.Lock()
        self._redaction_lock = threading.Lock()
        self._diffusion_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- loading -----------------------------------------------------------------------------
    def start(self, background: bool = True) -> ModelHost:
        """Loads the diffusion weights, in a daemon thread unless `background` is False."""
        if background:
            self._thread = threading.Thread(target=self._load, name="faceanon-weights", daemon=True)
            self._thread.start()
        else:
            self._load()
        return self

    def wait(self, timeout: float | None = None) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            from faceanon.anonymizer import FaceAnonymizer
            from faceanon.speed import load_pipeline

            pipe, device, dtype = load_pipeline(  # GPU fp16, else CPU fp32
                self.requested_device, speed=self.speed, local_files_only=self.local_files_only)
            anonymizer = FaceAnonymizer(detector=self.detector, pipeline=pipe, device=device, torch_dtype=dtype)
        except (FaceAnonError, OSError, ImportError) as error:
            self._set(self.UNAVAILABLE, _reason_for_people(error))
            log.warning("diffusion unavailable: %s", self.reason)
            return
        except Exception as error:  # an unexpected failure must not take the redaction modes down
            log.exception("loading the diffusion weights failed")
            self._set(self.UNAVAILABLE, f"loading the diffusion weights failed ({type(error).__name__}: {error}).")
            return
        with self._lock:
            self._anonymizer, self.device = anonymizer, device
            self.load_seconds = time.perf_counter() - started
            self.state = self.READY
        log.info("diffusion ready on %s in %.1f s", device, self.load_seconds)

    def _set(self, state: str, reason: str) -> None:
        with self._lock:
            self.state, self.reason = state, reason

    # -- what handlers use ---------------------------------------------------------------------
    @property
    def diffusion_ready(self) -> bool:
        return self.state == self.READY

    @property
    def on_cpu(self) -> bool:
        return self.diffusion_ready and not str(self.device).startswith("cuda")

    @contextlib.contextmanager
    def using(self, diffusion: bool):
        """The anonymizer for this request, held exclusively while the block runs.

        OpenCV's face detectors keep per-call state (the input size), so one instance must never
        run two detections at once. Redaction and detection use their own instance (fast, never
        waits for the weights); the diffusion instance is used by one job at a time anyway.
        """
        if diffusion:
            if self.state != self.READY:
                raise DiffusionUnavailable(self.unavailable_message())
            anonymizer, lock = self._anonymizer, self._diffusion_lock
        else:
            anonymizer, lock = self._get_redactor(), self._redaction_lock
        with lock:
            yield anonymizer

    def _get_redactor(self):
        with self._lock:
            if self._redactor is None:
                from faceanon.anonymizer import FaceAnonymizer

                self._redactor = FaceAnonymizer(detector=self.detector, device="cpu")
            return self._redactor

    def unavailable_message(self) -> str:
        if self.state == self.LOADING:
            return ("The diffusion model is still loading; try again in a moment. Blur, pixelate and "
                    "solid work meanwhile.")
        tail = "" if "blur" in self.reason.lower() else " Blur, pixelate and solid still work."
        return f"The diffusion method is unavailable: {self.reason}{tail}"

    def status_markdown(self) -> str:
        """One line for the top of the page."""
        if self.state == self.LOADING:
            return "**Loading the diffusion model…** Blur, pixelate and solid work already."
        if self.state == self.UNAVAILABLE:
            tail = "" if "blur" in self.reason.lower() else " Blur, pixelate and solid work."
            return f"**Diffusion unavailable.** {self.reason}{tail}"
        if self.on_cpu:
            return ("**Warning: diffusion runs on the CPU** (no GPU found): expect minutes per face. "
                    "Blur, pixelate and solid are instant.")
        return "**Diffusion model ready on the GPU** (fp16)."


class DiffusionUnavailable(FaceAnonError):
    """The diffusion method was asked for but its weights are not loaded."""


def _reason_for_people(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if not text.endswith("."):
        text += "."
    if "faceanon download" not in text and "FACEANON_" not in text:
        text += " " + HOW_TO_GET_WEIGHTS
    return text
