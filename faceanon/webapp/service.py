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
from faceanon.registry import DEFAULTS

log = logging.getLogger(__name__)

HOW_TO_GET_WEIGHTS = (
    "To enable it, run `faceanon download` and restart the app, or point the environment variables "
    "`FACEANON_FACE_MODEL`, `FACEANON_VAE` and `FACEANON_IMAGE_ENCODER` at local folders."
)


class ModelHost:
    """Holds the FaceAnonymizer and says whether diffusion can run, and if not, why."""

    LOADING, READY, UNAVAILABLE = "loading", "ready", "unavailable"

    def __init__(
        self,
        device: str | None = None,
        local_files_only: bool = True,
        detector: str = DEFAULTS.detector,
        speed=None,
        cpu_jobs: int = 4,
    ):
        self.requested_device = device
        self.speed = speed  # faceanon.speed.SpeedOptions, or None for the defaults
        self.local_files_only = local_files_only
        self.detector = detector
        self.state = self.LOADING
        self.reason = ""
        self.device = None
        self.load_seconds = None
        self._anonymizer = None  # with the diffusion pipeline, once loaded
        self._lock = threading.Lock()
        self._diffusion_lock = threading.Lock()
        # CPU work (detection, redaction) runs on up to `cpu_jobs` anonymizers at once, each used by
        # one request at a time; they are made on first need and reused.
        self.cpu_jobs = max(1, int(cpu_jobs))
        self._cpu_slots = threading.Semaphore(self.cpu_jobs)
        self._free_redactors: list = []
        self._planner = None  # plans faces while the diffusion anonymizer is not loaded
        self._step_seconds: float | None = None
        self._thread: threading.Thread | None = None
        self._checked = threading.Event()  # set once the quick look for local weights is done

    # -- loading -----------------------------------------------------------------------------
    def start(self, background: bool = True) -> ModelHost:
        """Loads the diffusion weights, in a daemon thread unless `background` is False."""
        if background:
            self._thread = threading.Thread(
                target=self._check_then_load, name="faceanon-weights", daemon=True
            )
            self._thread.start()
        else:
            self._check_then_load()
        return self

    def wait(self, timeout: float | None = None) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    def wait_for_check(self, timeout: float = 30.0) -> str:
        """Waits (at most `timeout` s) until it is known whether the weights are on this machine,
        so that the page's first status line is true; loading them goes on in the background."""
        self._checked.wait(timeout)
        return self.state

    def _check_then_load(self) -> None:
        try:
            problem = self._quick_problem()
        finally:
            self._checked.set()
        if problem:
            self._set(self.UNAVAILABLE, problem)
            log.warning("diffusion unavailable: %s", self.reason)
            return
        self._load()

    def _quick_problem(self) -> str:
        """Why diffusion cannot run here, found in about a second where loading takes minutes: an
        option this device cannot do, or weights missing from this machine ("" when neither, or
        when the weights may still be downloaded)."""
        try:
            from faceanon.speed import SpeedOptions
            from faceanon.weights import default_device_and_dtype, weights_status

            device, _ = default_device_and_dtype(self.requested_device)
            (self.speed or SpeedOptions()).check_device(device)
            present, reason = weights_status() if self.local_files_only else (True, "")
        except FaceAnonError as error:
            return _reason_for_people(error)
        except Exception:  # the full load reports what is wrong
            log.exception("the quick look for the diffusion weights failed")
            return ""
        return "" if present else _reason_for_people(reason)

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            from faceanon.anonymizer import FaceAnonymizer
            from faceanon.speed import load_pipeline

            pipe, device, dtype = load_pipeline(  # GPU fp16, else CPU fp32
                self.requested_device, speed=self.speed, local_files_only=self.local_files_only
            )
            anonymizer = FaceAnonymizer(
                detector=self.detector, pipeline=pipe, device=device, torch_dtype=dtype
            )
        except (FaceAnonError, OSError, ImportError) as error:
            self._set(self.UNAVAILABLE, _reason_for_people(error))
            log.warning("diffusion unavailable: %s", self.reason)
            return
        except Exception as error:  # an unexpected failure must not take the redaction modes down
            log.exception("loading the diffusion weights failed")
            self._set(
                self.UNAVAILABLE, f"loading the diffusion weights failed ({type(error).__name__}: {error})."
            )
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
        run two detections at once. Redaction and detection borrow one of `cpu_jobs` CPU instances
        (they never wait for the weights, nor for a diffusion job); the diffusion instance is used
        by one job at a time (one GPU).
        """
        if diffusion:
            if self.state != self.READY:
                raise DiffusionUnavailable(self.unavailable_message())
            with self._diffusion_lock:
                yield self._anonymizer
            return
        with self._cpu_slots:
            redactor = self._borrow_redactor()
            try:
                yield redactor
            finally:
                with self._lock:
                    self._free_redactors.append(redactor)

    def plan_faces(self, faces, method: str, selected=None) -> list:
        """FaceAnonymizer.plan_faces of the anonymizer that will run (what each face will get).
        Planning only reads settings, so it takes no slot: a click in the picker never waits for
        a redaction or an evaluation in progress."""
        with self._lock:
            planner = self._anonymizer
            if planner is None:
                if self._planner is None:
                    from faceanon.anonymizer import FaceAnonymizer

                    self._planner = FaceAnonymizer(detector=self.detector, device="cpu")
                planner = self._planner
        return planner.plan_faces(faces, method, selected=selected)

    def _borrow_redactor(self):
        with self._lock:
            if self._free_redactors:
                return self._free_redactors.pop()
        from faceanon.anonymizer import FaceAnonymizer

        return FaceAnonymizer(detector=self.detector, device="cpu")

    def unavailable_message(self) -> str:
        """What a visitor is told: what they can do, not how the server is set up (that is in the
        server log and, briefly, in the status line)."""
        if self.state == self.LOADING:
            return (
                "The diffusion model is still loading; try again in a moment. Blur, pixelate and "
                "solid work meanwhile."
            )
        return (
            "The diffusion method is unavailable on this server (its model is not installed). "
            "Choose blur, pixelate or solid: they work without it."
        )

    def status_markdown(self) -> str:
        """One line for the top of the page."""
        if self.state == self.LOADING:
            fetching = "" if self.local_files_only else " (downloading what is missing first: about 12 GB)"
            return f"**Loading the diffusion model{fetching}…** Blur, pixelate and solid work already."
        if self.state == self.UNAVAILABLE:
            return (
                "**Diffusion unavailable** on this server: blur, pixelate and solid work. "
                f"*For the operator: {self.operator_hint()} (details in the server log).*"
            )
        if self.on_cpu:
            return (
                "**Warning: diffusion runs on the CPU** (no GPU found): expect minutes per face. "
                "Blur, pixelate and solid are instant."
            )
        return "**Diffusion model ready on the GPU** (fp16)."

    def record_step_seconds(self, seconds: float) -> None:
        """Remembers how long one denoising step of one face took here (a running average)."""
        with self._lock:
            previous = self._step_seconds
            self._step_seconds = seconds if previous is None else 0.7 * previous + 0.3 * seconds

    def step_seconds_estimate(self) -> float:
        """Seconds per face and step: measured on this server once a job ran, else a guess by device
        (SD 2.1 sized UNet: ~0.1 s per step on a GPU, ~10 s on a CPU)."""
        if self._step_seconds is not None:
            return self._step_seconds
        return 10.0 if self.on_cpu else 0.1

    def operator_hint(self) -> str:
        if "weights" in self.reason.lower() or "faceanon download" in self.reason:
            return "run `faceanon download` and restart the app"
        return "see why loading failed"

    @property
    def default_method(self) -> str:
        """The Anonymize tab's preselected method: one that works on this server now."""
        from faceanon.registry import DIFFUSION, REDACTION_METHODS

        return DIFFUSION if self.diffusion_ready else REDACTION_METHODS[0]


class DiffusionUnavailable(FaceAnonError):
    """The diffusion method was asked for but its weights are not loaded."""


def _reason_for_people(error: BaseException | str) -> str:
    text = str(error).strip() or type(error).__name__
    if not text.endswith("."):
        text += "."
    if "faceanon download" not in text and "FACEANON_" not in text:
        text += " " + HOW_TO_GET_WEIGHTS
    return text
