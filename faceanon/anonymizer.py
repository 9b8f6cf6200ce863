"""FaceAnonymizer: every chosen face of a photo replaced (or redacted) in one pass.

    fa = FaceAnonymizer()                        # YuNet detector; diffusion weights load lazily
    result = fa.anonymize("group.jpg", degree=1.25, seed=0)
    result.image.save(...)                        # or faceanon.media.photo.save_image (no metadata)
    for report in result.faces: print(report.face.index, report.changed, report.message)

Diffusion: all selected faces are aligned to 512x512 FFHQ crops and go through the pipeline in
ONE batched call; each face gets its own torch generator seeded with `face_seed(seed, index)`
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
from dataclasses import dataclass

import numpy as np

from faceanon.errors import FaceAnonError, ImageInputError, WeightsNotFoundError
from faceanon.faces.alignment import AlignedFace, align_face
from faceanon.faces.blending import face_mask, paste_face
from faceanon.faces.detection import Detector, create_detector
from faceanon.faces.redaction import REDACTION_METHODS, redact_face
from faceanon.media.photo import load_image, merge_alpha, split_alpha
from faceanon.results import AnonymizationResult, DetectedFace, FaceReport

METHODS = ("diffusion", *REDACTION_METHODS)
Progress = Callable[[float, str], None]


def face_seed(seed: int, index: int, attempt: int = 0) -> int:
    """The seed of face `index` for the user's `seed`: the first 63 bits of
    sha256("faceanon:{seed}:{index}") (":{attempt}" appended for retries). Stable everywhere."""
    key = f"faceanon:{int(seed)}:{int(index)}" + (f":{int(attempt)}" if attempt else "")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


@dataclass
class _Run:
    """The generation settings of one anonymize/swap call."""

    degree: float
    seed: int
    steps: int
    guidance: float
    scheduler: str | None
    progress: Progress


class FaceAnonymizer:
    """Detect, align, anonymize (diffusion or redaction) and blend back the faces of photos.

    Args:
        detector: "yunet" (bundled, offline, default), "scrfd", "insightface", or a Detector.
        pipeline: a loaded FaceAnonPipeline (or compatible callable); None loads it on first use.
        device, torch_dtype: where/how the pipeline is loaded when it is loaded here.
        min_face_size: faces smaller than this (pixels, larger box side) are too small for the
            diffusion model to give a meaningful new identity; they are reported and handled
            with `small_face_method` ("blur" by default; None leaves them untouched).
        detection_threshold: detector confidence needed to report a face.
        color_match: match the new face's colours to the photo's around it.
        batch_size: faces per pipeline call (None: all faces of a photo in one call).
        resolution: the size the model generates at (512, what the published weights were trained
            on; smaller only for tests with tiny checkpoints). Faces are always aligned at 512.
        watermark: put faceanon's invisible per-face watermark (faceanon.trust.watermark) into the
            core of every generated face crop before it is pasted (pixels outside the face masks
            stay untouched); `faceanon verify` / read_watermark find it in the photo.
        identity_check: fill each changed face's identity_similarity / same_person (faceanon.trust).
        on_same_person: what to do with generated faces the identity check still calls the same
            person: None (report only), "retry" (once: new seed, d + 0.1), or a redaction method.
    """

    def __init__(self, detector: str | Detector = "yunet", pipeline=None, device=None, torch_dtype=None,
                 min_face_size: float = 24, detection_threshold: float | None = None,
                 small_face_method: str | None = "blur", color_match: bool = False,
                 batch_size: int | None = None, resolution: int = 512, watermark: bool = True,
                 identity_check: bool = True, on_same_person: str | None = None, speed=None):
        if small_face_method not in (None, *REDACTION_METHODS):
            raise ValueError(f"small_face_method must be one of {REDACTION_METHODS} or None.")
        if on_same_person not in (None, "retry", *REDACTION_METHODS):
            raise ValueError(f"on_same_person must be None, 'retry' or one of {REDACTION_METHODS}.")
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
    # Public API

    def detect(self, image) -> list[DetectedFace]:
        """Faces of a photo (path, bytes, PIL or numpy RGB), left to right."""
        rgb, _ = split_alpha(load_image(image))
        return self.detector.detect(rgb)

    def anonymize(self, image, degree: float = 1.25, seed: int = 0, steps: int = 25, guidance: float = 4.0,
                  method: str | None = None, faces=None, scheduler: str | None = None,
                  progress: Progress | None = None, strength: float = 1.0) -> AnonymizationResult:
        """Give every selected face a new identity (or redact it) and blend it back.

        method: "diffusion" (default when the weights are available, else "blur"), "blur",
            "pixelate" or "solid". strength (0, 1]: how strongly redaction methods hide.
        faces: None (all), face indices, or DetectedFace objects from an earlier `detect`.
        """
        report = progress or _no_progress
        photo = load_image(image)
        rgb, alpha = split_alpha(photo)
        method, method_note = self._resolve_method(method)
        report(0.0, "Finding faces")
        detected, selected = self._select(rgb, faces)
        reports = {face.index: FaceReport(face=face, message="not selected") for face in detected}
        if not detected:
            return self._no_faces(photo, method_note)
        aligned = {face.index: align_face(rgb, face.landmarks) for face in selected}
        large = [f for f in selected if f.size >= self.min_face_size or method != "diffusion"]
        small = [f for f in selected if f not in large]
        output = self._with_small_faces_redacted(rgb, small, aligned, reports, strength)
        if method == "diffusion" and large:
            run = _Run(degree, seed, steps, guidance, scheduler, report)
            plan = {f.index: (face_seed(seed, f.index), degree) for f in large}
            crops = self._generate_faces(large, aligned, plan, run)
            self._paste(output, large, crops, aligned, reports, plan)
            self._check_identities(rgb, output, large, reports)
            output = self._handle_still_recognizable(rgb, output, small, large, crops, aligned, reports, plan, run,
                                                     strength)
            self._check_attributes(rgb, output, large, reports)
        else:
            for face in large:
                redact_face(output, aligned[face.index], method, strength)
                reports[face.index] = FaceReport(face=face, changed=True, method=method)
            self._check_identities(rgb, output, large, reports)
        report(1.0, "Done")
        ordered = [reports[f.index] for f in detected]
        message = _summary(ordered, method_note)
        return AnonymizationResult(image=merge_alpha(output, alpha, photo.info.get("icc_profile")),
                                   faces=ordered, message=message)

    def swap(self, source_image, target_image, seed: int = 0, steps: int = 25, guidance: float = 4.0,
             source_face: int = 0, faces=None, scheduler: str | None = None,
             progress: Progress | None = None) -> AnonymizationResult:
        """Put the identity of `source_image`'s face number `source_face` on the selected faces
        of `target_image` (their pose, expression, lighting and background are kept)."""
        report = progress or _no_progress
        source_rgb, _ = split_alpha(load_image(source_image))
        source_faces = self.detector.detect(source_rgb)
        if not source_faces:
            raise ImageInputError("No face was found in the source photo. Use a photo where the face is clearly "
                                  "visible, or lower the detection threshold.")
        if not 0 <= source_face < len(source_faces):
            raise ValueError(f"The source photo has {len(source_faces)} face(s) (0-{len(source_faces) - 1}); "
                             f"face {source_face} does not exist.")
        source_crop = align_face(source_rgb, source_faces[source_face].landmarks).crop
        photo = load_image(target_image)
        rgb, alpha = split_alpha(photo)
        report(0.0, "Finding faces")
        detected, selected = self._select(rgb, faces)
        if not detected:
            return self._no_faces(photo, "")
        reports = {face.index: FaceReport(face=face, message="not selected") for face in detected}
        large = [f for f in selected if f.size >= self.min_face_size]
        for face in selected:
            if face not in large:
                reports[face.index] = FaceReport(face=face, message=_too_small(face, self.min_face_size, None))
        output = rgb.copy()
        aligned = {face.index: align_face(rgb, face.landmarks) for face in large}
        if large:
            run = _Run(0.0, seed, steps, guidance, scheduler, report)
            plan = {f.index: (face_seed(seed, f.index), 0.0) for f in large}
            crops = self._generate_faces(large, aligned, plan, run, sources=[source_crop] * len(large))
            self._paste(output, large, crops, aligned, reports, plan)
            self._check_identities(rgb, output, large, reports)
            self._check_attributes(rgb, output, large, reports)
        report(1.0, "Done")
        ordered = [reports[f.index] for f in detected]
        return AnonymizationResult(image=merge_alpha(output, alpha, photo.info.get("icc_profile")),
                                   faces=ordered, message=_summary(ordered, ""))

    # ---------------------------------------------------------------------------------------
    # Steps

    def _resolve_method(self, method: str | None) -> tuple[str, str]:
        if method is None:
            if self.diffusion_available:
                return "diffusion", ""
            return "blur", ("The diffusion weights are not available, so faces were blurred instead. "
                            "Run `faceanon download` to get them.")
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        if method == "diffusion":
            _ = self.pipeline  # fail now, with the weights' message, before any work
        return method, ""

    def _select(self, rgb: np.ndarray, faces) -> tuple[list[DetectedFace], list[DetectedFace]]:
        """(all faces, the chosen ones). `faces` given as DetectedFace objects skips detection."""
        if faces is not None:
            faces = list(faces)
            if faces and all(isinstance(f, DetectedFace) for f in faces):
                return faces, faces
        detected = self.detector.detect(rgb)
        if faces is None:
            return detected, detected
        chosen = sorted({int(i) for i in faces})
        missing = [i for i in chosen if not 0 <= i < len(detected)]
        if missing:
            raise ValueError(f"This photo has {len(detected)} face(s), numbered 0 to {len(detected) - 1}; "
                             f"there is no face {', '.join(map(str, missing))}.")
        return detected, [detected[i] for i in chosen]

    def _with_small_faces_redacted(self, rgb, small, aligned, reports, strength) -> np.ndarray:
        """A copy of the photo with the faces too small for diffusion handled."""
        output = rgb.copy()
        for face in small:
            method = self.small_face_method
            if method:
                redact_face(output, aligned[face.index], method, strength)
            reports[face.index] = FaceReport(face=face, changed=bool(method), method=method,
                                             message=_too_small(face, self.min_face_size, method))
        return output

    def _generate_faces(self, faces, aligned, plan, run: _Run, sources=None) -> dict[int, np.ndarray]:
        """New crops for `faces` (anonymize: source = conditioning = the face's crop)."""
        conditions = [aligned[f.index].crop for f in faces]
        seeds = [plan[f.index][0] for f in faces]
        degrees = [plan[f.index][1] for f in faces]
        crops = self._generate(sources or conditions, conditions, degrees, seeds, run)
        return {face.index: crop for face, crop in zip(faces, crops, strict=True)}

    def _generate(self, sources, conditions, degrees: list[float], seeds: list[int], run: _Run) -> list[np.ndarray]:
        """Run the pipeline on aligned crops in one batched call (or chunks of `batch_size`, or of
        what fits in free GPU memory), one generator per face."""
        from PIL import Image

        pipe = self.pipeline
        sources = [Image.fromarray(c) for c in sources]
        conditions = [Image.fromarray(c) for c in conditions]
        count = len(conditions)
        suggested = getattr(pipe, "suggested_batch_size", lambda *_: None)(self.resolution, self.resolution)
        chunk = self.batch_size or suggested or count
        results: list[np.ndarray] = []
        with _scheduler(pipe, run.scheduler):
            for start in range(0, count, chunk):
                part = slice(start, min(start + chunk, count))
                results.extend(self._generate_chunk(pipe, sources[part], conditions[part], degrees[part],
                                                    seeds[part], run, progress_span=(start / count, (part.stop - start) / count)))
        return results

    def _generate_chunk(self, pipe, sources, conditions, degrees, seeds, run: _Run,
                        progress_span: tuple[float, float]) -> list[np.ndarray]:
        import torch

        output = pipe(source_image=sources, conditioning_image=conditions,
                      anonymization_degree=degrees[0] if len(set(degrees)) == 1 else degrees,
                      guidance_scale=run.guidance, num_inference_steps=run.steps,
                      height=self.resolution, width=self.resolution,
                      generator=[torch.Generator().manual_seed(s) for s in seeds],
                      callback_on_step_end=_step_reporter(run.progress, *progress_span, run.steps))
        return [np.asarray(image.convert("RGB")) for image in output.images]

    def _watermarked(self, crop: np.ndarray, photo: np.ndarray, aligned: AlignedFace, mask: np.ndarray) -> np.ndarray:
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

    def _paste(self, output, faces, crops: dict[int, np.ndarray], aligned: dict[int, AlignedFace], reports,
               plan: dict[int, tuple[int, float]]) -> None:
        for face in faces:
            crop_aligned = aligned[face.index]
            mask = face_mask(crop_aligned.landmarks, crop_aligned.size)
            crop = self._watermarked(crops[face.index], output, crop_aligned, mask)
            paste_face(output, crop, crop_aligned, mask, color_match=self.color_match)
            seed, degree = plan[face.index]
            reports[face.index] = FaceReport(face=face, changed=True, method="diffusion", seed=seed, degree=degree)

    def _check_identities(self, original, output, faces, reports) -> None:
        """Fill identity_similarity / same_person (when faceanon.trust and its model are present)."""
        if not self.identity_check or not faces:
            return
        try:
            from faceanon.trust.identity import check_identity, get_identity_model

            model = get_identity_model()
        except (ImportError, FaceAnonError):
            return
        for face, similarity in zip(faces, check_identity(original, output, faces, model), strict=True):
            reports[face.index].identity_similarity = round(float(similarity), 4)
            reports[face.index].same_person = bool(model.same_person(similarity))

    def _check_attributes(self, original, output, faces, reports) -> None:
        """Pose / expression change of each generated face (utility kept), beside the identity check."""
        if not self.identity_check or not faces:
            return
        try:
            from faceanon.trust.attributes import check_attributes

            entries = check_attributes(original, output, faces)
        except (ImportError, FaceAnonError):
            return
        for face, entry in zip(faces, entries, strict=True):
            reports[face.index].attributes = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in entry.items()}

    def _handle_still_recognizable(self, rgb, output, small, large, crops, aligned, reports, plan, run: _Run,
                                   strength) -> np.ndarray:
        """on_same_person: "retry" regenerates faces the identity check still matches, once, with a
        new seed (attempt 1) and d + 0.1 (at most 1.5); a redaction method hides them instead."""
        still = [f for f in large if reports[f.index].same_person]
        if not still or not self.on_same_person:
            return output
        if self.on_same_person == "retry":
            retry_degree = max(run.degree, min(run.degree + 0.1, 1.5))
            plan.update({f.index: (face_seed(run.seed, f.index, attempt=1), retry_degree) for f in still})
            crops.update(self._generate_faces(still, aligned, plan, run))
            output = self._with_small_faces_redacted(rgb, small, aligned, reports, strength)
            self._paste(output, large, crops, aligned, reports, plan)
            self._check_identities(rgb, output, large, reports)
            for face in still:
                if reports[face.index].same_person:
                    reports[face.index].message = "still recognizable after a retry with a new seed and a higher degree"
            return output
        for face in still:
            redact_face(output, aligned[face.index], self.on_same_person, strength)
            reports[face.index] = FaceReport(face=face, changed=True, method=self.on_same_person, message=(
                f"the new face still matched the person (similarity {reports[face.index].identity_similarity:.2f}); "
                f"{_DONE_INSTEAD[self.on_same_person]}"))
        self._check_identities(rgb, output, still, reports)
        return output

    @staticmethod
    def _no_faces(photo, note: str) -> AnonymizationResult:
        message = ("No face was found in this photo; it is returned unchanged. If there is a face, try a "
                   "lower detection threshold or another detector.")
        return AnonymizationResult(image=photo, faces=[], message=" ".join(filter(None, [message, note])))


def _weights_present() -> tuple[bool, str]:
    try:
        from faceanon.weights import weights_status
    except ImportError as error:
        return False, f"The diffusion engine cannot be imported ({error}). Reinstall faceanon."
    return weights_status()


_DONE_INSTEAD = {"blur": "blurred instead", "pixelate": "pixelated instead", "solid": "filled instead", None: "left unchanged"}


def _too_small(face: DetectedFace, min_size: float, method: str | None) -> str:
    return (f"face is {face.size:.0f} px, smaller than {min_size:.0f} px: too small for a new identity, "
            f"{_DONE_INSTEAD[method]}")


def _summary(reports: Iterable[FaceReport], note: str) -> str:
    reports = list(reports)
    changed = sum(r.changed for r in reports)
    text = f"{len(reports)} face(s) found, {changed} changed."
    return " ".join(filter(None, [text, _identity_summary(reports), note]))


def _identity_summary(reports: list[FaceReport]) -> str:
    """The identity verdicts of changed faces in one sentence, the worst first."""
    checked = [r for r in reports if r.changed and r.identity_similarity is not None]
    if not checked:
        return ""
    recognizable = [r for r in checked if r.same_person]
    highest = max(r.identity_similarity for r in checked)
    if recognizable:
        faces = ", ".join(f"#{r.face.index}" for r in recognizable)
        return (f"Identity check: face(s) {faces} still look like the same person (highest similarity {highest:.2f}); "
                "use a higher degree, another seed, or redact them.")
    return f"Identity check: every changed face is a different person (highest similarity {highest:.2f})."


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
        report(0.05 + 0.9 * (done_before + share * (step + 1) / steps), f"Generating faces: step {step + 1}/{steps}")
        return callback_kwargs

    return on_step


def _no_progress(fraction: float, description: str) -> None:
    pass


__all__ = ["FaceAnonymizer", "face_seed", "METHODS"]
