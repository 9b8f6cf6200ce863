"""FaceAnonymizer: the one place the method runs on faces. Frames in, frames and reports out.

    fa = FaceAnonymizer()                        # YuNet detector; diffusion weights load lazily
    result = fa.anonymize("group.jpg", degree=1.25, seed=0)      # a photo
    result.image.save(...)                        # or faceanon.media.photo.save_image (no metadata)
    for report in result.faces: print(report.face.index, report.changed, report.message)

The seam every media kind uses (photos here, video tracks and dataset batches above):

    faces = fa.detect_frame(rgb)                                   # HxWx3 uint8 -> DetectedFace list
    plans = fa.plan_faces(faces, method="diffusion", degree=1.25, seed=0)   # what to do, per face
    frame = fa.prepare_frame(rgb, plans)                           # aligned crops + generation requests
    crops = fa.generate(frame.requests + ..., Generation(...))      # ONE batched call, any frames
    result = fa.finish_frame(frame, crops[:len(frame.requests)])   # paste / redact, checks -> FrameResult
    result = fa.complete_frame(frame, crops, Generation(...))       # finish + on_same_person + leak guard
    result = fa.anonymize_frame(rgb, plans, Generation(...))       # the three steps for one frame
    # photos: resolve_method, select_faces, photo_result, no_faces_result (what anonymize runs)

Diffusion: the selected faces are aligned to 512x512 FFHQ crops and go through the pipeline in
batched calls; each face gets its own torch generator seeded with `face_seed(seed, index)`
(index = the face's detection index, so choosing a subset of faces does not change the others,
and rerunning with the same seed reproduces the photo exactly). The new crops are pasted back
through a feathered face mask; pixels outside the masks are the input's, bit for bit.

`pipeline` may be any object called like FaceAnonPipeline (`pipe(source_image=..., conditioning_image=...,
anonymization_degree=..., ...)` returning `.images`), which lets tests and other generators plug in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from faceanon.errors import FaceAnonError, ImageInputError, WeightsNotFoundError
from faceanon.faces.alignment import AlignedFace, align_face
from faceanon.faces.blending import face_mask, paste_face
from faceanon.faces.detection import Detector, create_detector
from faceanon.faces.leak_guard import (
    FOUND_ON_SECOND_PASS,
    STILL_SAME_PERSON,
    guard_detector,
    guard_mask,
    new_faces,
)
from faceanon.faces.redaction import redact_face
from faceanon.keep import KeepList, KeepMatch, load_keep_list, match_faces
from faceanon.media.photo import Tone, describe_tone, load_image, merge_alpha, restore_mode, split_alpha
from faceanon.registry import DEFAULTS, DIFFUSION, METHODS, REDACTION_METHODS
from faceanon.results import AnonymizationResult, DetectedFace, FaceReport

Progress = Callable[[float, str], None]


def face_seed(seed: int, index: int, attempt: int = 0) -> int:
    """The seed of face `index` for the user's `seed`: the first 63 bits of
    sha256("faceanon:{seed}:{index}") (":{attempt}" appended for retries). Stable everywhere."""
    key = f"faceanon:{int(seed)}:{int(index)}" + (f":{int(attempt)}" if attempt else "")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def image_seed(seed: int, data: bytes) -> int:
    """The seed of one photo of a batch (CLI folders, datasets): the first 63 bits of
    sha256("faceanon-image:{seed}:" + sha256(file bytes)). Its faces then get face_seed(image_seed, index).
    From the content, so an output depends on neither the file's name, the order, nor how a dataset
    is split between workers; different photos get different faces for the same user seed."""
    digest = hashlib.sha256(f"faceanon-image:{int(seed)}:".encode() + hashlib.sha256(data).digest()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------------------------------------
# The seam's types


@dataclass
class FacePlan:
    """What to do with one face of one frame."""

    face: DetectedFace
    method: str | None  # "diffusion", a redaction method, or None: leave the face as it is
    seed: int | None = None  # diffusion: the face's generator seed
    degree: float = 0.0  # diffusion: the anonymization degree (0 with `source`: a swap)
    source: np.ndarray | None = None  # swap: the aligned crop whose identity goes onto the face
    source_reference: Any = None  # the engine's reusable encoding of `source` (video tracks)
    strength: float = DEFAULTS.strength  # redaction methods
    message: str = ""  # for people: why the face is handled this way
    base_seed: int | None = None  # the user's seed `seed` was derived from (retries derive anew)
    kept: KeepMatch | None = None  # the keep-list person this face matched (method None)


@dataclass
class Generation:
    """Sampler settings shared by every face of one call."""

    steps: int = DEFAULTS.steps
    guidance: float = DEFAULTS.guidance
    scheduler: str | None = None


@dataclass
class CropRequest:
    """One new face to generate: the inputs of one row of a pipeline call."""

    condition: np.ndarray  # the aligned face crop (pose, expression, lighting, background)
    degree: float
    seed: int
    source: np.ndarray | None = None  # None: the face itself (anonymization)
    source_reference: Any = None


@dataclass
class PreparedFrame:
    """A frame with its faces aligned and its generation requests, ready for `generate`."""

    rgb: np.ndarray
    plans: list[FacePlan]
    aligned: dict[int, AlignedFace]  # face index -> aligned crop, for every face that is changed
    requests: list[CropRequest] = field(default_factory=list)  # the diffusion plans, in plan order
    tone: Tone | None = None  # a monochrome photo's look: generated faces are toned to match it
    only_planned: bool = False  # the caller chose faces: the leak guard reports new faces but leaves them
    leak_guard: bool | None = None  # None: the anonymizer's setting

    @property
    def generated(self) -> list[FacePlan]:
        return [plan for plan in self.plans if plan.method == DIFFUSION]


@dataclass
class FrameResult:
    """An anonymized frame (RGB uint8) and what happened to each of its faces."""

    image: np.ndarray
    faces: list[FaceReport]


class FaceAnonymizer:
    """Detect, align, anonymize (diffusion or redaction) and blend back the faces of frames and photos.

    Args:
        detector: a name of faceanon.registry.DETECTORS (default DEFAULTS.detector) or a Detector.
        pipeline: a loaded FaceAnonPipeline (or compatible callable); None loads it on first use.
        device, torch_dtype: where/how the pipeline is loaded when it is loaded here.
        min_face_size: faces smaller than this (pixels, larger box side) are too small for the
            diffusion model to give a meaningful new identity; they are reported and handled
            with `small_face_method` ("blur" by default; None leaves them untouched).
        detection_threshold: detector confidence needed to report a face.
        color_match: match the new face's colours to the photo's around it.
        batch_size: faces per pipeline call (None: all requested faces in one call, or as many as
            fit in free GPU memory).
        resolution: the size the model generates at (512, what the published weights were trained
            on; smaller only for tests with tiny checkpoints). Faces are always aligned at 512.
        watermark: put faceanon's invisible per-face watermark (faceanon.trust.watermark) into the
            core of every generated face crop before it is pasted (pixels outside the face masks
            stay untouched); `faceanon verify` / read_watermark find it in the photo.
        identity_check: fill each changed face's identity_similarity / same_person (faceanon.trust).
        on_same_person: what to do with generated faces the identity check still calls the same
            person: None (leave it to the leak guard), "retry" (once: new seed, d + 0.1), or a redaction
            method.
        leak_guard: after the faces are handled, detect again on the output (lower threshold) and
            redact with `guard_method` every face found only then, and every changed face the identity
            check still calls the person (faceanon.faces.leak_guard). On by default; reported per face.
    """

    def __init__(
        self,
        detector: str | Detector = DEFAULTS.detector,
        pipeline=None,
        device=None,
        torch_dtype=None,
        min_face_size: float = DEFAULTS.min_face_size,
        detection_threshold: float | None = None,
        small_face_method: str | None = DEFAULTS.small_face_method,
        color_match: bool = False,
        batch_size: int | None = None,
        resolution: int = 512,
        watermark: bool = True,
        identity_check: bool = True,
        on_same_person: str | None = None,
        speed=None,
        leak_guard: bool = True,
        guard_method: str = "blur",
    ):
        if small_face_method not in (None, *REDACTION_METHODS):
            raise ValueError(f"small_face_method must be one of {REDACTION_METHODS} or None.")
        if on_same_person not in (None, "retry", *REDACTION_METHODS):
            raise ValueError(f"on_same_person must be None, 'retry' or one of {REDACTION_METHODS}.")
        if guard_method not in REDACTION_METHODS:
            raise ValueError(f"guard_method must be one of {REDACTION_METHODS}.")
        self.detector = create_detector(detector, threshold=detection_threshold, min_face_size=4)
        self.min_face_size = float(min_face_size)
        self.small_face_method = small_face_method
        self.color_match = color_match
        self.batch_size = batch_size
        self.resolution = int(resolution)
        self.watermark, self.identity_check, self.on_same_person = watermark, identity_check, on_same_person
        self.device, self.torch_dtype, self.speed = device, torch_dtype, speed
        self._pipeline = pipeline
        self._pipeline_error: str | None = None
        self.leak_guard, self.guard_method = leak_guard, guard_method
        self._second_pass = guard_detector(self.detector)

    # ---------------------------------------------------------------------------------------
    # The pipeline, loaded on first use

    @property
    def pipeline(self):
        if self._pipeline is None:
            self._pipeline = self._load_pipeline()
        return self._pipeline

    def _load_pipeline(self):
        if self._pipeline_error:
            raise WeightsNotFoundError(self._pipeline_error)
        try:
            from faceanon.speed import load_pipeline

            pipe, _, _ = load_pipeline(self.device, self.torch_dtype, self.speed)
            return pipe
        except WeightsNotFoundError as error:
            self._pipeline_error = str(error)
            raise
        except ImportError as error:
            self._pipeline_error = f"The diffusion engine cannot be imported ({error}). Reinstall faceanon."
            raise WeightsNotFoundError(self._pipeline_error) from error

    @property
    def diffusion_available(self) -> bool:
        """Whether method="diffusion" can run with weights already on this machine (never starts a
        download; loads the pipeline if the weights are there)."""
        if self._pipeline is None and not self._pipeline_error:
            present, reason = _weights_present()
            if not present:
                self._pipeline_error = reason
        try:
            _ = self.pipeline
        except WeightsNotFoundError:
            return False
        return True

    @property
    def diffusion_unavailable_reason(self) -> str:
        return "" if self.diffusion_available else (self._pipeline_error or "")

    # ---------------------------------------------------------------------------------------
    # Photos

    def detect(self, image) -> list[DetectedFace]:
        """Faces of a photo (path, bytes, PIL or numpy RGB), left to right."""
        rgb, _ = split_alpha(load_image(image))
        return self.detect_frame(rgb)

    def anonymize(
        self,
        image,
        degree: float = DEFAULTS.degree,
        seed: int = DEFAULTS.seed,
        steps: int = DEFAULTS.steps,
        guidance: float = DEFAULTS.guidance,
        method: str | None = None,
        faces=None,
        scheduler: str | None = None,
        progress: Progress | None = None,
        strength: float = DEFAULTS.strength,
        keep=None,
        leak_guard: bool | None = None,
    ) -> AnonymizationResult:
        """Give every selected face of a photo a new identity (or redact it) and blend it back.

        method: "diffusion" (default when the weights are available, else "blur"), "blur",
            "pixelate" or "solid". strength (0, 1]: how strongly redaction methods hide.
        faces: None (all), face indices, or DetectedFace objects from an earlier `detect`.
        keep: photos of people to leave untouched (paths, folders, images) or a KeepList from
            `load_keep`; faces the identity model matches to one of them are kept.
        leak_guard: None (the anonymizer's setting) or False/True for this call (the evaluation turns it
            off: it measures the method itself).
        """
        report = progress or _no_progress
        keep = self.load_keep(keep) if keep is not None else None  # every keep photo checked before any work
        photo = load_image(image)
        rgb, alpha = split_alpha(photo)
        method, method_note = self.resolve_method(method)
        report(0.0, "Finding faces")
        detected, selected = self.select_faces(rgb, faces)
        if not detected:
            return self.no_faces_result(photo)
        plans = self.plan_faces(
            detected, method, degree=degree, seed=seed, selected=selected, strength=strength
        )
        plans = self.keep_plans(rgb, plans, keep)
        tone = describe_tone(photo)
        frame = self.anonymize_frame(
            rgb,
            plans,
            Generation(steps, guidance, scheduler),
            report,
            tone=tone,
            only_planned=faces is not None,
            leak_guard=leak_guard,
        )
        return self.photo_result(photo, alpha, frame, method_note, tone)

    def swap(
        self,
        source_image,
        target_image,
        seed: int = DEFAULTS.seed,
        steps: int = DEFAULTS.steps,
        guidance: float = DEFAULTS.guidance,
        source_face: int = 0,
        faces=None,
        scheduler: str | None = None,
        progress: Progress | None = None,
    ) -> AnonymizationResult:
        """Put the identity of `source_image`'s face number `source_face` on the selected faces
        of `target_image` (their pose, expression, lighting and background are kept)."""
        report = progress or _no_progress
        source_crop = self._source_crop(source_image, source_face)
        photo = load_image(target_image)
        rgb, alpha = split_alpha(photo)
        report(0.0, "Finding faces")
        detected, selected = self.select_faces(rgb, faces)
        if not detected:
            return self.no_faces_result(photo)
        plans = self.plan_faces(
            detected, DIFFUSION, degree=0.0, seed=seed, selected=selected, source=source_crop
        )
        tone = describe_tone(photo)
        frame = self.anonymize_frame(
            rgb,
            plans,
            Generation(steps, guidance, scheduler),
            report,
            tone=tone,
            only_planned=faces is not None,
        )
        return self.photo_result(photo, alpha, frame, "", tone)

    def anonymize_video(
        self,
        src,
        dst,
        method: str | None = None,
        degree: float = DEFAULTS.degree,
        seed: int = DEFAULTS.seed,
        steps: int = DEFAULTS.steps,
        guidance: float = DEFAULTS.guidance,
        tracks=None,
        per_frame: bool = False,
        strength: float = DEFAULTS.strength,
        scheduler: str | None = None,
        progress: Progress | None = None,
        **options,
    ):
        """Anonymize the faces of the video `src` into `dst`, one identity per tracked person (see
        faceanon.media.video_anonymize). tracks: None (every person) or track ids from `scan_video`.
        per_frame: diffusion on every frame with the track's seed instead of keyframe + swap.
        options: VideoSettings fields (window, reuse_source...), `tracking` (TrackingOptions),
        `on_frames` / `notify` callbacks, `crf`. Returns a VideoReport (per track: frames, keyframe, seed,
        interpolated frames, identity similarities)."""
        from faceanon.media.video_anonymize import VideoSettings, anonymize_video

        extra = {k: options.pop(k) for k in ("tracking", "on_frames", "notify", "crf") if k in options}
        settings = VideoSettings(
            method=method,
            degree=degree,
            seed=seed,
            steps=steps,
            guidance=guidance,
            scheduler=scheduler,
            strength=strength,
            tracks=tracks,
            per_frame=per_frame,
            **options,
        )
        return anonymize_video(self, src, dst, settings, progress=progress, **extra)

    def photo_result(
        self, photo, alpha, frame: FrameResult, note: str, tone: Tone | None
    ) -> AnonymizationResult:
        """A photo's result from its anonymized frame: alpha and colour profile back, a greyscale file
        back to greyscale, the summary message (`note`: e.g. resolve_method's fallback note)."""
        image = merge_alpha(frame.image, alpha, photo.info.get("icc_profile"))
        if tone is not None and tone.kind == "stored":
            image = restore_mode(image, like=photo)  # a greyscale file comes back greyscale
        return AnonymizationResult(image=image, faces=frame.faces, message=_summary(frame.faces, note))

    def _source_crop(self, source_image, source_face: int) -> np.ndarray:
        source_rgb, _ = split_alpha(load_image(source_image))
        source_faces = self.detect_frame(source_rgb)
        if not source_faces:
            raise ImageInputError(
                "No face was found in the source photo. Use a photo where the face is clearly "
                "visible, or lower the detection threshold."
            )
        if not 0 <= source_face < len(source_faces):
            raise ValueError(
                f"The source photo has {len(source_faces)} face(s) (0-{len(source_faces) - 1}); "
                f"face {source_face} does not exist."
            )
        return align_face(source_rgb, source_faces[source_face].landmarks).crop

    # ---------------------------------------------------------------------------------------
    # Frames: the seam

    def detect_frame(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces of one RGB uint8 frame, left to right."""
        return self.detector.detect(rgb)

    def plan_faces(
        self,
        faces: list[DetectedFace],
        method: str,
        degree: float = DEFAULTS.degree,
        seed: int = DEFAULTS.seed,
        selected: Iterable[DetectedFace] | None = None,
        source: np.ndarray | None = None,
        strength: float = DEFAULTS.strength,
    ) -> list[FacePlan]:
        """One plan per face: `method` for the selected faces (all when None), nothing for the others.
        Diffusion faces below `min_face_size` get `small_face_method` instead; each diffusion face
        gets the seed face_seed(seed, face.index)."""
        chosen = {face.index for face in (faces if selected is None else selected)}
        plans = []
        for face in faces:
            if face.index not in chosen:
                plans.append(FacePlan(face, None, message="not selected"))
            elif method == DIFFUSION and face.size < self.min_face_size:
                plans.append(
                    FacePlan(
                        face,
                        self.small_face_method,
                        strength=strength,
                        message=_too_small(face, self.min_face_size, self.small_face_method),
                    )
                )
            elif method == DIFFUSION:
                plans.append(
                    FacePlan(
                        face,
                        DIFFUSION,
                        seed=face_seed(seed, face.index),
                        degree=float(degree),
                        source=source,
                        base_seed=int(seed),
                    )
                )
            else:
                plans.append(FacePlan(face, method, strength=strength))
        return plans

    def load_keep(self, keep) -> KeepList:
        """The keep-list (faceanon.keep) from photos, folders or images, faces found with this
        anonymizer's detector; raises ImageInputError for an unreadable photo, a photo without a
        face or an empty folder."""
        return load_keep_list(keep, self.detector)

    def keep_plans(self, rgb: np.ndarray, plans: list[FacePlan], keep: KeepList | None) -> list[FacePlan]:
        """Plans with the faces of kept people (faceanon.keep.match_faces) left untouched. Video code
        calls it per frame (or match_faces per track) so a kept person stays kept in every frame."""
        if not keep:
            return plans
        matches = match_faces(rgb, [plan.face for plan in plans], keep)
        return [
            plan if match is None else FacePlan(plan.face, None, message=match.message, kept=match)
            for plan, match in zip(plans, matches, strict=True)
        ]

    def prepare_frame(
        self,
        rgb: np.ndarray,
        plans: list[FacePlan],
        tone: Tone | None = None,
        only_planned: bool = False,
        leak_guard: bool | None = None,
    ) -> PreparedFrame:
        """Align every face that will change and list the new faces to generate. `tone`
        (media.photo.describe_tone of a black-and-white or sepia photo) tones the new faces like it.
        only_planned: the caller chose these faces; faces the leak guard finds on the output are
        reported, not redacted."""
        aligned = {plan.face.index: align_face(rgb, plan.face.landmarks) for plan in plans if plan.method}
        frame = PreparedFrame(
            rgb=rgb, plans=plans, aligned=aligned, tone=tone, only_planned=only_planned, leak_guard=leak_guard
        )
        frame.requests = [
            CropRequest(
                condition=aligned[p.face.index].crop,
                degree=p.degree,
                seed=p.seed,
                source=p.source,
                source_reference=p.source_reference,
            )
            for p in frame.generated
        ]
        return frame

    def generate(
        self,
        requests: list[CropRequest],
        generation: Generation | None = None,
        progress: Progress | None = None,
    ) -> list[np.ndarray]:
        """New 512x512 crops for `requests`, in order: batched pipeline calls (chunks of `batch_size`,
        or of what fits in free GPU memory), one generator per request."""
        if not requests:
            return []
        generation = generation or Generation()
        pipe = self.pipeline
        suggested = getattr(pipe, "suggested_batch_size", lambda *_: None)(self.resolution, self.resolution)
        chunk = self.batch_size or suggested or len(requests)
        results: list[np.ndarray] = []
        with _scheduler(pipe, generation.scheduler):
            for start, part in _chunks(requests, chunk):
                span = (start / len(requests), len(part) / len(requests))
                results.extend(self._generate_chunk(pipe, part, generation, progress or _no_progress, span))
        return results

    def finish_frame(self, frame: PreparedFrame, crops: list[np.ndarray]) -> FrameResult:
        """Paste the generated crops (watermarked), redact, report every face of the frame, then the
        leak guard (when on)."""
        return self._guard(frame, self._finish(frame, crops))

    def _finish(self, frame: PreparedFrame, crops: list[np.ndarray]) -> FrameResult:
        if len(crops) != len(frame.requests):
            raise ValueError(
                f"finish_frame needs one crop per request: {len(frame.requests)} requested, "
                f"{len(crops)} given."
            )
        output = frame.rgb.copy()
        new_faces = dict(zip((p.face.index for p in frame.generated), crops, strict=True))
        reports = []
        for plan in frame.plans:
            if plan.method == DIFFUSION:
                crop = new_faces[plan.face.index]
                self._paste(
                    output,
                    frame.aligned[plan.face.index],
                    crop if frame.tone is None else frame.tone.apply(crop),
                )
            elif plan.method:
                redact_face(output, frame.aligned[plan.face.index], plan.method, plan.strength)
            reports.append(_report(plan))
        self._measure(frame.rgb, output, [r for r in reports if r.changed], attributes=False)
        self._measure(frame.rgb, output, [r for r in reports if r.method == DIFFUSION], identity=False)
        return FrameResult(image=output, faces=reports)

    def anonymize_frame(
        self,
        rgb: np.ndarray,
        plans: list[FacePlan],
        generation: Generation | None = None,
        progress: Progress | None = None,
        tone: Tone | None = None,
        only_planned: bool = False,
        leak_guard: bool | None = None,
    ) -> FrameResult:
        """prepare_frame -> generate -> finish_frame for one frame, with `on_same_person` before the
        leak guard."""
        report = progress or _no_progress
        frame = self.prepare_frame(rgb, plans, tone, only_planned, leak_guard)
        crops = self.generate(frame.requests, generation, report)
        result = self.complete_frame(frame, crops, generation, report)
        report(1.0, "Done")
        return result

    def complete_frame(
        self,
        frame: PreparedFrame,
        crops: list[np.ndarray],
        generation: Generation | None = None,
        progress: Progress | None = None,
    ) -> FrameResult:
        """What anonymize_frame does after `generate`: paste / redact (finish_frame without the guard),
        then `on_same_person` (a retry generates again, alone, with `generation`), then the leak guard.
        For callers that generate the crops of many frames in one call (datasets) and finish each."""
        report = progress or _no_progress
        result = self._finish(frame, crops)
        frame, result = self._handle_still_recognizable(frame, crops, result, generation, report)
        return self._guard(frame, result)

    # ---------------------------------------------------------------------------------------
    # Steps

    def resolve_method(self, method: str | None) -> tuple[str, str]:
        """(the method to run, a note for people). None: diffusion when its weights are here, else
        blur with a note saying why. "diffusion" loads the pipeline now, so a missing weight fails
        before any work; an unknown name is a ValueError."""
        if method is None:
            if self.diffusion_available:
                return DIFFUSION, ""
            return (
                "blur",
                f"Diffusion is not available here ({self.diffusion_unavailable_reason.rstrip('.')}), so "
                "faces were blurred instead.",
            )
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        if method == DIFFUSION:
            _ = self.pipeline  # fail now, with the weights' message, before any work
        return method, ""

    def select_faces(self, rgb: np.ndarray, faces) -> tuple[list[DetectedFace], list[DetectedFace]]:
        """(all faces, the chosen ones): `faces` None (all), face indices (a ValueError names a missing
        one) or DetectedFace objects (detection skipped). The photo rule of anonymize and datasets."""
        if faces is not None:
            faces = list(faces)
            if faces and all(isinstance(f, DetectedFace) for f in faces):
                return faces, faces
        detected = self.detect_frame(rgb)
        if faces is None:
            return detected, detected
        chosen = sorted({int(i) for i in faces})
        missing = [i for i in chosen if not 0 <= i < len(detected)]
        if missing:
            raise ValueError(
                f"This photo has {len(detected)} face(s), numbered 0 to {len(detected) - 1}; "
                f"there is no face {', '.join(map(str, missing))}."
            )
        return detected, [detected[i] for i in chosen]

    def _generate_chunk(
        self,
        pipe,
        requests: list[CropRequest],
        generation: Generation,
        report: Progress,
        span: tuple[float, float],
    ) -> list[np.ndarray]:
        import torch
        from PIL import Image

        conditions = [Image.fromarray(r.condition) for r in requests]
        references = {id(r.source_reference) for r in requests}
        source_kwargs: dict = {}
        if len(references) == 1 and requests[0].source_reference is not None:
            # One shared, already encoded source for the whole chunk (a video track): the engine
            # reuses its reference records instead of encoding the same face again.
            source_kwargs = {"source_image": None, "source_reference": requests[0].source_reference}
        else:
            source_kwargs = {
                "source_image": [
                    Image.fromarray(r.condition if r.source is None else r.source) for r in requests
                ]
            }
        degrees = [r.degree for r in requests]
        output = pipe(
            conditioning_image=conditions,
            **source_kwargs,
            anonymization_degree=degrees[0] if len(set(degrees)) == 1 else degrees,
            guidance_scale=generation.guidance,
            num_inference_steps=generation.steps,
            height=self.resolution,
            width=self.resolution,
            generator=[torch.Generator().manual_seed(r.seed) for r in requests],
            callback_on_step_end=_step_reporter(report, *span, generation.steps),
        )
        return [np.asarray(image.convert("RGB")) for image in output.images]

    def _paste(self, output: np.ndarray, aligned: AlignedFace, crop: np.ndarray) -> None:
        mask = face_mask(aligned.landmarks, aligned.size)
        paste_face(
            output,
            self._watermarked(crop, output, aligned, mask),
            aligned,
            mask,
            color_match=self.color_match,
        )

    def _watermarked(
        self, crop: np.ndarray, photo: np.ndarray, aligned: AlignedFace, mask: np.ndarray
    ) -> np.ndarray:
        if not self.watermark:
            return crop
        try:
            from faceanon.trust.watermark import add_face_watermark, generated_face_landmarks
        except ImportError:
            return crop
        # The mark goes where a reader will look: in the frame of the landmarks a detector finds for
        # the new face pasted into this photo (the crop's own frame when none is found). It lies in
        # the core of the blend mask, and nothing outside the mask changes.
        landmarks = generated_face_landmarks(photo, crop, aligned, mask, color_match=self.color_match)
        return add_face_watermark(crop, landmarks)

    def _measure(
        self,
        original: np.ndarray,
        output: np.ndarray,
        reports: list[FaceReport],
        identity: bool = True,
        attributes: bool = True,
    ) -> None:
        """Identity / pose checks of `reports` (faceanon.trust.checks.measure_reports, when installed)."""
        if not self.identity_check or not reports:
            return
        try:
            from faceanon.trust.checks import measure_reports

            measure_reports(original, output, reports, identity=identity, attributes=attributes)
        except (ImportError, FaceAnonError):
            return

    def _guard(self, frame: PreparedFrame, result: FrameResult) -> FrameResult:
        """The leak guard (faceanon.faces.leak_guard): one detection pass on the output; faces found
        only there, and changed faces still recognized as the person, are redacted with guard_method
        and reported. Its own redactions are measured, never detected again: it cannot loop."""
        if not (self.leak_guard if frame.leak_guard is None else frame.leak_guard):
            return result
        known = [plan.face for plan in frame.plans]
        found = new_faces(
            self._second_pass.detect(result.image),
            known,
            first_index=max((face.index for face in known), default=-1) + 1,
        )
        leaking = [r for r in result.faces if r.changed and r.same_person]
        if not found and not leaking:
            return result
        output, redacted = result.image.copy(), []
        for face_report in leaking:
            aligned = frame.aligned[face_report.face.index]
            redact_face(output, aligned, self.guard_method, mask=guard_mask(aligned))
            face_report.guard = (
                f"{STILL_SAME_PERSON} after {face_report.method} (similarity "
                f"{face_report.identity_similarity:.2f}): {_DONE[self.guard_method]}"
            )
            face_report.method = self.guard_method
            face_report.message = "; ".join(filter(None, [face_report.message, face_report.guard]))
            redacted.append(face_report)
        extra = [self._guard_new_face(output, face, frame.only_planned) for face in found]
        self._measure(frame.rgb, output, redacted + [r for r in extra if r.changed], attributes=False)
        return FrameResult(image=output, faces=result.faces + extra)

    def _guard_new_face(self, output: np.ndarray, face: DetectedFace, leave: bool) -> FaceReport:
        if leave:
            return FaceReport(
                face=face,
                guard=f"{FOUND_ON_SECOND_PASS}; left: only the chosen faces are changed",
                message=f"{FOUND_ON_SECOND_PASS}; left, as only the chosen faces are changed",
            )
        aligned = align_face(output, face.landmarks)
        redact_face(output, aligned, self.guard_method, mask=guard_mask(aligned))
        text = f"{FOUND_ON_SECOND_PASS}: {_DONE[self.guard_method]}"
        return FaceReport(face=face, changed=True, method=self.guard_method, guard=text, message=text)

    def _handle_still_recognizable(
        self,
        frame: PreparedFrame,
        crops: list[np.ndarray],
        result: FrameResult,
        generation: Generation | None,
        report: Progress,
    ) -> tuple[PreparedFrame, FrameResult]:
        """on_same_person: "retry" regenerates faces the identity check still matches, once, with a
        new seed (attempt 1) and d + 0.1 (at most 1.5); a redaction method hides them instead."""
        still = {r.face.index for r in result.faces if r.method == DIFFUSION and r.same_person}
        if not still or not self.on_same_person:
            return frame, result
        similarity = {r.face.index: r.identity_similarity for r in result.faces}
        plans = []
        for plan in frame.plans:
            if plan.face.index not in still:
                plans.append(plan)
            elif self.on_same_person == "retry":
                degree = max(plan.degree, min(plan.degree + 0.1, DEFAULTS.unrealistic_degree))
                base = plan.seed if plan.base_seed is None else plan.base_seed
                plans.append(replace(plan, seed=face_seed(base, plan.face.index, attempt=1), degree=degree))
            else:
                plans.append(
                    FacePlan(
                        plan.face,
                        self.on_same_person,
                        message=(
                            "the new face still matched the person "
                            f"(similarity {similarity[plan.face.index]:.2f}); "
                            f"{_DONE_INSTEAD[self.on_same_person]}"
                        ),
                    )
                )
        retried = self.prepare_frame(frame.rgb, plans, frame.tone, frame.only_planned, frame.leak_guard)
        # Faces generated already keep their crop; only the retried ones are generated again.
        previous = dict(zip((p.face.index for p in frame.generated), crops, strict=True))
        again = [i for i, p in enumerate(retried.generated) if p.face.index in still]
        new = self.generate([retried.requests[i] for i in again], generation, report)
        kept = [previous[p.face.index] for p in retried.generated]
        for i, crop in zip(again, new, strict=True):
            kept[i] = crop
        final = self._finish(retried, kept)
        for face in final.faces:
            if face.face.index in still and face.method == DIFFUSION and face.same_person:
                face.message = "still recognizable after a retry with a new seed and a higher degree"
        return retried, final

    @staticmethod
    def no_faces_result(photo) -> AnonymizationResult:
        """The result of a photo without faces: the photo as loaded, and a message saying what to try."""
        message = (
            "No face was found in this photo; it is returned unchanged. If there is a face, try a "
            "lower detection threshold or another detector."
        )
        return AnonymizationResult(image=photo, faces=[], message=message)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def _report(plan: FacePlan) -> FaceReport:
    generated = plan.method == DIFFUSION
    return FaceReport(
        face=plan.face,
        changed=bool(plan.method),
        method=plan.method,
        seed=plan.seed if generated else None,
        degree=plan.degree if generated else None,
        message=plan.message,
        kept_as=plan.kept.name if plan.kept else None,
        kept_similarity=plan.kept.similarity if plan.kept else None,
    )


def _weights_present() -> tuple[bool, str]:
    try:
        from faceanon.weights import weights_status
    except ImportError as error:
        return False, f"The diffusion engine cannot be imported ({error}). Reinstall faceanon."
    return weights_status()


_DONE_INSTEAD = {
    "blur": "blurred instead",
    "pixelate": "pixelated instead",
    "solid": "filled instead",
    None: "left unchanged",
}
_DONE = {"blur": "blurred", "pixelate": "pixelated", "solid": "filled"}


def _too_small(face: DetectedFace, min_size: float, method: str | None) -> str:
    return (
        f"face is {face.size:.0f} px, smaller than {min_size:.0f} px: too small for a new identity, "
        f"{_DONE_INSTEAD[method]}"
    )


def _summary(reports: Iterable[FaceReport], note: str) -> str:
    reports = list(reports)
    changed = sum(r.changed for r in reports)
    text = f"{len(reports)} face(s) found, {changed} changed."
    return " ".join(
        filter(
            None,
            [
                text,
                _kept_summary(reports),
                _guard_summary(reports),
                _identity_summary(reports),
                note if changed else "",
            ],
        )
    )


def _kept_summary(reports: list[FaceReport]) -> str:
    kept = [r for r in reports if r.kept_as]
    if not kept:
        return ""
    return (
        "Kept (keep-list): "
        + ", ".join(f"#{r.face.index} {r.kept_as} ({r.kept_similarity:.2f})" for r in kept)
        + "."
    )


def _guard_summary(reports: list[FaceReport]) -> str:
    """The leak guard's findings: "1 face found only on the second pass: blurred." and the like."""
    sentences = []
    for prefix in (FOUND_ON_SECOND_PASS, STILL_SAME_PERSON):
        groups: dict[str, int] = {}
        for r in reports:
            if r.guard.startswith(prefix):
                outcome = (
                    r.guard.rsplit(": ", 1)[-1] if r.changed else "left (only the chosen faces are changed)"
                )
                groups[outcome] = groups.get(outcome, 0) + 1
        for outcome, count in groups.items():
            what = (
                "found only on the second pass"
                if prefix == FOUND_ON_SECOND_PASS
                else "still looked like the same person"
            )
            sentences.append(f"{count} face{'s' if count > 1 else ''} {what}: {outcome}.")
    return " ".join(sentences)


def _identity_summary(reports: list[FaceReport]) -> str:
    """The identity verdicts of changed faces in one sentence, the worst first."""
    checked = [r for r in reports if r.changed and r.identity_similarity is not None]
    small = sum(1 for r in reports if r.changed and r.identity_note)
    too_small = f"{small} changed face(s) too small to verify." if small else ""
    if not checked:
        return f"Identity check: {too_small}" if small else ""
    recognizable = [r for r in checked if r.same_person]
    highest = max(r.identity_similarity for r in checked)
    if recognizable:
        faces = ", ".join(f"#{r.face.index}" for r in recognizable)
        return " ".join(
            filter(
                None,
                [
                    f"Identity check: face(s) {faces} still look like the same person (highest "
                    f"similarity {highest:.2f}); {_advice(recognizable)}.",
                    too_small,
                ],
            )
        )
    return " ".join(
        filter(
            None,
            [
                f"Identity check: every verifiable changed face is a different person (highest "
                f"similarity {highest:.2f}).",
                too_small,
            ],
        )
    )


def _advice(recognizable: list[FaceReport]) -> str:
    """What helps for the methods used: diffusion and redaction fail differently."""
    advice = []
    if any(r.method == DIFFUSION for r in recognizable):
        advice.append("for new faces use a higher degree or another seed")
    if any(r.method in REDACTION_METHODS for r in recognizable):
        advice.append("for redacted faces use a stronger redaction (strength 1, or solid)")
    return "; ".join(advice) + ", or keep the leak guard on"


@contextmanager
def _scheduler(pipe, name: str | None):
    """Use scheduler `name` for one call, then put the pipeline's own back: the pipeline is shared
    (the web app serves every user with one), so a choice must not outlive its request."""
    if not name or not hasattr(pipe, "set_scheduler"):
        yield
        return
    original = pipe.scheduler
    pipe.set_scheduler(name)
    try:
        yield
    finally:
        pipe.scheduler = original


def _step_reporter(report: Progress, done_before: float, share: float, steps: int):
    """A diffusers callback_on_step_end mapping denoising steps onto progress 0.05 .. 0.95."""

    def on_step(_pipe, step, _timestep, callback_kwargs):
        report(
            0.05 + 0.9 * (done_before + share * (step + 1) / steps),
            f"Generating faces: step {step + 1}/{steps}",
        )
        return callback_kwargs

    return on_step


def _no_progress(fraction: float, description: str) -> None:
    pass


__all__ = [
    "FaceAnonymizer",
    "FacePlan",
    "Generation",
    "CropRequest",
    "PreparedFrame",
    "FrameResult",
    "face_seed",
    "image_seed",
    "METHODS",
]
