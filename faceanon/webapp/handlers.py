"""What the app's buttons and named API endpoints (/detect, /anonymize, /swap) do.

Each public function here is bound to one Gradio event; its docstring is the endpoint's API
documentation (Gradio reads the "Args:" section), so keep those accurate.
"""

from __future__ import annotations

import os
import random
import time

import gradio as gr
import spaces  # noqa: F401  (before torch touches CUDA: ZeroGPU patches it)
from PIL import Image

from faceanon import registry
from faceanon.errors import FaceAnonError
from faceanon.registry import DEFAULTS, DIFFUSION
from faceanon.webapp import limits as L
from faceanon.webapp.limits import user_error
from faceanon.webapp.pictures import draw_faces, face_at
from faceanon.webapp.service import ModelHost
from faceanon.webapp.shutdown import JOBS

METHODS = list(registry.METHODS)
SCHEDULERS = ["default", *registry.SCHEDULERS]
MAX_SEED = 2**31 - 1
UNREALISTIC_DEGREE = DEFAULTS.unrealistic_degree
LOADING_WAIT_S = 90  # a request that arrives while the weights load waits this long for them

_HOST: ModelHost | None = None
_LIMITS = L.Limits()


def configure(host: ModelHost, limits: L.Limits) -> None:
    """Gives the handlers their model host and limits (module state: the ZeroGPU worker needs it)."""
    global _HOST, _LIMITS
    _HOST, _LIMITS = host, limits


def host() -> ModelHost:
    if _HOST is None:
        raise RuntimeError("faceanon.webapp.handlers.configure() was not called")
    return _HOST


# -- inputs --------------------------------------------------------------------------------------
def load_photo(path: str | None, what: str = "photo") -> Image.Image:
    """Reads an upload as an RGB image (EXIF-rotated, metadata dropped), within the limits."""
    from faceanon.media.photo import load_image

    L.check_image_file(path, _LIMITS, what)
    try:
        return load_image(path)
    except FaceAnonError as error:  # name the file as the person knows it, never its server path
        text = str(error).replace(repr(str(path)), f"“{os.path.basename(path)}”")
        raise user_error(text, title="Cannot read the image") from None


def parse_faces(spec: str | None) -> list[int] | None:
    """'all' (or empty) -> None (every face); 'none' -> []; '0, 2' -> [0, 2]."""
    text = (spec or "").strip().lower()
    if text in ("", "all"):
        return None
    if text == "none":
        return []
    try:
        faces = sorted({int(part) for part in text.replace(";", ",").split(",") if part.strip()})
    except ValueError:
        raise user_error(
            "Faces must be 'all' or face numbers such as '0, 2' (as numbered by Detect faces); "
            f"got {spec!r}.",
            title="Bad face selection",
        ) from None
    if any(i < 0 for i in faces):
        raise user_error("Face numbers start at 0.", title="Bad face selection")
    return faces


def pick_seed(seed: float | None, randomize: bool) -> int:
    if randomize or seed is None:
        return random.randint(0, MAX_SEED)
    return int(seed) % (MAX_SEED + 1)


def _progress_callback(progress):
    """Adapts Gradio's progress tracker to faceanon's callable(fraction, description)."""

    def report(fraction: float, description: str = "") -> None:
        JOBS.check()  # a server shutting down stops the job here, with a message
        progress(min(max(float(fraction), 0.0), 1.0), desc=description or None)

    return report


# -- the diffusion call, on the GPU when there is one ----------------------------------------------
def _gpu_seconds(kind, image, other, num_faces, options, progress=None) -> int:
    """ZeroGPU time to reserve: load/transfer overhead plus each face's denoising steps."""
    steps = int(options.get("steps", 25))
    return int(min(300, 20 + max(num_faces, 1) * (3 + 0.15 * steps)))


@spaces.GPU(duration=_gpu_seconds)
def _run_diffusion(kind, image, other, num_faces, options, progress=None):
    with host().using(diffusion=True) as anonymizer:
        if kind == "swap":
            return anonymizer.swap(other, image, progress=progress, **options)
        return anonymizer.anonymize(image, method="diffusion", progress=progress, **options)


def _keep_list(paths: list[str] | None):
    """The keep-list of the uploaded photos (faceanon.keep), read before any work; None when empty."""
    paths = [p for p in ([paths] if isinstance(paths, str) else paths or []) if p]
    if not paths:
        return None
    for path in paths:
        L.check_image_file(path, _LIMITS, "keep photo")
    with host().using(diffusion=False) as anonymizer:
        try:  # names the photos by file name (the person's name for the report), never by server path
            return anonymizer.load_keep(paths)
        except FaceAnonError as error:
            raise user_error(str(error), title="Cannot use a keep photo") from None


def _redact(photo, method, options):
    with host().using(diffusion=False) as anonymizer:
        return anonymizer.anonymize(photo, method=method, **options)


def _count_generated(image, faces: list[int] | None) -> tuple[int, int]:
    """(selected faces that will get a new identity, selected faces redacted instead: too small)."""
    with host().using(diffusion=False) as anonymizer:
        found = anonymizer.detect(image)
    return _tally(found, faces)


def _tally(found, faces: list[int] | None) -> tuple[int, int]:
    """Counts the anonymizer's own plan (FaceAnonymizer.plan_faces), so the app and the library
    never disagree about which faces are generated."""
    selected = None if faces is None else [f for f in found if f.index in faces]
    methods = [plan.method for plan in host().plan_faces(found, DIFFUSION, selected=selected)]
    generated = methods.count(DIFFUSION)
    return generated, sum(1 for m in methods if m is not None) - generated


# -- endpoints -----------------------------------------------------------------------------------
@JOBS.endpoint
def detect(image: str | None):
    """Finds the faces in a photo and numbers them, so that /anonymize can be told which to change.

    Args:
        image: the photo (JPEG, PNG or WebP).

    Returns:
        the photo with a numbered box on every face, and a list of faces (index, box, landmarks, score).
    """
    if not image:
        return None, []
    photo = load_photo(image)
    with host().using(diffusion=False) as anonymizer:
        faces = anonymizer.detect(photo)
    return draw_faces(photo, faces), [f.to_dict() for f in faces]


@JOBS.endpoint
def anonymize(
    image: str | None,
    method: str = DIFFUSION,
    degree: float = DEFAULTS.degree,
    seed: float = DEFAULTS.seed,
    randomize_seed: bool = False,
    faces: str = "all",
    steps: float = DEFAULTS.steps,
    guidance: float = DEFAULTS.guidance,
    scheduler: str = "default",
    keep: list[str] | None = None,
    progress=gr.Progress(),  # noqa: B008  (Gradio's documented way to receive a progress tracker)
):
    """Gives every selected face in a photo a new identity (diffusion) or redacts it.

    Args:
        image: the photo (JPEG, PNG or WebP).
        method: "diffusion" (a new, realistic face) or "blur", "pixelate", "solid" (redaction, no model weights needed).
        degree: anonymization degree d for diffusion: 0 reconstructs the face, 1.2-1.3 is recommended, above 1.5 faces stop looking real.
        seed: random seed of the diffusion method (same seed, same result).
        randomize_seed: if true, a random seed is used and returned.
        faces: which faces to change: "all", or face numbers from /detect such as "0, 2".
        steps: denoising steps of the diffusion method (more is slower and finer).
        guidance: classifier-free guidance scale of the diffusion method.
        scheduler: diffusion sampler: "default", "ddpm", "ddim", "dpmsolver++" or "unipc".
        keep: photos of people to leave untouched (one face each); faces matching them are kept.

    Returns:
        the anonymized photo (PNG, no input metadata), a summary for people, the per-face report, and the seed used.
    """
    if method not in METHODS:
        raise user_error(
            f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.", title="Bad setting"
        )
    photo = load_photo(image)
    selected = parse_faces(faces)
    seed_used = pick_seed(seed, randomize_seed)
    options = dict(seed=seed_used, faces=selected, keep=_keep_list(keep))
    if method != "diffusion":
        progress(0.5, desc=f"Applying {method}")
        result = _call(lambda: _redact(photo, method, options))
        return _finish(photo, result, seed_used)
    _require_diffusion(progress)
    if float(degree) > UNREALISTIC_DEGREE:
        gr.Warning(f"d = {degree:g} is above {UNREALISTIC_DEGREE}: faces may stop looking like faces.")
    options.update(
        degree=float(degree),
        steps=L.check_steps(steps, _LIMITS),
        guidance=float(guidance),
        scheduler=None if scheduler in ("", "default", None) else scheduler,
    )
    progress(0.0, desc="Finding faces")
    num_faces, too_small = _count_generated(photo, selected)
    L.check_face_count(num_faces, _LIMITS, too_small)
    result = _timed_diffusion(
        num_faces,
        options["steps"],
        lambda: _run_diffusion("anonymize", photo, None, num_faces, options, _progress_callback(progress)),
    )
    return _finish(photo, result, seed_used)


@JOBS.endpoint
def swap(
    source: str | None,
    target: str | None,
    source_face: float = 0,
    target_faces: str = "all",
    seed: float = DEFAULTS.seed,
    randomize_seed: bool = False,
    steps: float = DEFAULTS.steps,
    guidance: float = DEFAULTS.guidance,
    progress=gr.Progress(),  # noqa: B008
):
    """Puts the identity of a face from one photo onto faces of another (keeping their pose and expression).

    Args:
        source: photo whose face gives the identity.
        target: photo whose faces are replaced.
        source_face: which face of the source photo to use (number from /detect; 0 is the first).
        target_faces: which faces of the target to replace: "all", or face numbers such as "0, 2".
        seed: random seed (same seed, same result).
        randomize_seed: if true, a random seed is used and returned.
        steps: denoising steps.
        guidance: classifier-free guidance scale.

    Returns:
        the target photo with swapped faces (PNG), a summary for people, the per-face report, and the seed used.
    """
    source_photo = load_photo(source, "source photo")
    target_photo = load_photo(target, "target photo")
    _require_diffusion(progress)
    selected = parse_faces(target_faces)
    seed_used = pick_seed(seed, randomize_seed)
    options = dict(
        seed=seed_used,
        source_face=int(source_face),
        faces=selected,
        steps=L.check_steps(steps, _LIMITS),
        guidance=float(guidance),
    )
    progress(0.0, desc="Finding faces")
    num_faces, too_small = _count_generated(target_photo, selected)
    L.check_face_count(num_faces, _LIMITS, too_small)
    result = _timed_diffusion(
        num_faces,
        options["steps"],
        lambda: _run_diffusion(
            "swap", target_photo, source_photo, num_faces, options, _progress_callback(progress)
        ),
    )
    return _finish(target_photo, result, seed_used)


def _timed_diffusion(num_faces: int, steps: int, run):
    """Runs a diffusion job and records its seconds per face and step (the Evaluate tab's estimate)."""
    began = time.perf_counter()
    result = _call(run)
    host().record_step_seconds((time.perf_counter() - began) / max(1, num_faces * steps))
    return result


def _require_diffusion(progress=None) -> None:
    """Fails with the reason unless the weights are loaded; waits a while if they are loading."""
    if host().state == ModelHost.LOADING:
        if progress is not None:
            progress(0.0, desc="Waiting for the diffusion model to load")
        host().wait(LOADING_WAIT_S)
    if not host().diffusion_ready:
        raise user_error(host().unavailable_message(), title="Diffusion unavailable", duration=None)


def _call(run):
    """Runs library work, turning faceanon's errors (written for people) into Gradio errors."""
    try:
        return run()
    except gr.Error:  # already for people (a ValueError too, whose str() would add quotes)
        raise
    except (FaceAnonError, ValueError) as error:  # the library's ValueErrors are written for people too
        raise user_error(str(error), title="Cannot do that") from None


def _finish(original: Image.Image, result, seed_used: int):
    from faceanon.webapp.report import add_identity_checks, summary_markdown

    add_identity_checks(original, result)
    return (
        _result_png(result),
        summary_markdown(result, seed_used),
        result.to_dict() | {"seed": seed_used},
        seed_used,
    )


def _result_png(result) -> str:
    """The result written as a PNG in Gradio's cache (the file the user downloads): pixels, ICC
    profile and faceanon's provenance note only, never the input's metadata."""
    from gradio.processing_utils import save_bytes_to_cache
    from gradio.utils import get_upload_folder

    from faceanon.media.photo import encode_image

    try:
        from faceanon.trust.watermark import provenance_for
    except ImportError:
        pnginfo = None
    else:
        pnginfo = provenance_for(result)
    data = encode_image(result.image, "PNG", pnginfo=pnginfo)
    return save_bytes_to_cache(data, "anonymized.png", cache_dir=get_upload_folder())


@JOBS.endpoint
def evaluate(
    image: str | None,
    degrees: str = "0.6, 1.2, 1.5",
    seeds: float = 1,
    steps: float = DEFAULTS.steps,
    baselines: bool = True,
    progress=gr.Progress(),  # noqa: B008
):
    """Measures how well a photo's faces are anonymized, as the paper's supplementary Figs. 1-3 do.

    Without the diffusion model only the blur, pixelate and solid baselines are measured.

    Args:
        image: the photo (JPEG, PNG or WebP).
        degrees: anonymization degrees d to try, comma-separated.
        seeds: seeds per degree.
        steps: denoising steps per run.
        baselines: also measure blur, pixelate and solid.

    Returns:
        the identity, detection and attribute plots, and one table row per face and run.
    """
    photo = load_photo(image)
    options = evaluation_options(degrees, seeds, steps, baselines)
    diffusion = host().diffusion_ready
    options["on_run"] = _evaluation_progress(progress)
    rows, figures = _call(lambda: _run_evaluation(photo, diffusion, options))
    return (*figures, evaluation_table(rows))


def evaluation_options(degrees, seeds, steps, baselines) -> dict:
    """The evaluation's settings, checked; without the diffusion model, the baselines only."""
    try:
        values = [float(v) for v in str(degrees or "").replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise user_error(
            f"Degrees must be numbers separated by commas, such as 0.6, 1.2; got {degrees!r}.",
            title="Bad setting",
        ) from None
    diffusion = host().diffusion_ready
    if not values and not baselines:
        raise user_error("Choose at least one degree or the baselines.", title="Nothing to evaluate")
    return dict(
        degrees=values if diffusion else [],
        seeds=max(1, int(seeds or 1)),
        steps=L.check_steps(steps, _LIMITS),
        baselines=list(registry.REDACTION_METHODS) if baselines or not diffusion else [],
    )


def evaluation_estimate(degrees, seeds, steps, baselines) -> str:
    """What the Evaluate button will do and about how long it takes, before it is pressed."""
    try:
        options = evaluation_options(degrees, seeds, steps, baselines)
    except gr.Error as error:
        return f"⚠ {error.message}"
    runs = len(options["degrees"]) * options["seeds"]
    parts = [f"{len(options['baselines'])} baselines"] if options["baselines"] else []
    if not host().diffusion_ready:
        return (
            "The diffusion model is not on this server: only the blur, pixelate and solid baselines are "
            "measured (a few seconds per face)."
        )
    if runs:
        parts.insert(0, f"{runs} diffusion run{'s' if runs != 1 else ''} × {options['steps']} steps")
    seconds = runs * options["steps"] * host().step_seconds_estimate()
    return f"**{' + '.join(parts)}** per face: about {_duration(seconds)} per face on this server."


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _evaluation_progress(progress):
    """faceanon.evaluation's runs in plain words, counted in runs."""

    def report(done: int, total: int, run) -> None:
        JOBS.check()
        what = run.method
        if run.method == DIFFUSION:
            what = f"diffusion, d = {run.degree:g}, seed {run.seed}"
        progress((done, total), desc=f"Measured {what}", unit="runs")

    return report


EVALUATION_COLUMNS = [
    "method",
    "degree",
    "seed",
    "face",
    "identity_similarity",
    "same_person",
    "detected_yunet",
    "detected_scrfd",
    "pose_distance",
    "expression_distance",
]
EVALUATION_HEADERS = [
    "Method",
    "d",
    "Seed",
    "Face",
    "Identity similarity",
    "Same person?",
    "Found by YuNet",
    "Found by SCRFD",
    "Pose change (°)",
    "Expression change",
]


def evaluation_table(rows: list[dict]) -> list[list]:
    """One row per face and run, numbers rounded, yes/no for the booleans."""

    def cell(value):
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return None if value != value else round(value, 2)
        return value

    return [[cell(r.get(c)) for c in EVALUATION_COLUMNS] for r in rows]


def _evaluation_seconds(photo, diffusion, options) -> int:
    runs = len(options["degrees"]) * options["seeds"]
    return int(min(300, 20 + runs * (3 + 0.15 * options["steps"])))


@spaces.GPU(duration=_evaluation_seconds)
def _run_evaluation(photo, diffusion, options):
    from faceanon.evaluation import evaluate_photo

    with host().using(diffusion=diffusion) as anonymizer:
        return evaluate_photo(_RedactionOnly(anonymizer) if not diffusion else anonymizer, photo, **options)


class _RedactionOnly:
    """The redaction anonymizer as seen by the evaluation: it must not try to load the weights."""

    diffusion_available = False

    def __init__(self, anonymizer):
        self._anonymizer = anonymizer

    def __getattr__(self, name):
        return getattr(self._anonymizer, name)


# -- the Anonymize tab's face picker ---------------------------------------------------------------
def face_choices(faces: list[dict] | None):
    """The checkbox list of detected faces, all ticked."""
    faces = faces or []
    choices = [(f"#{f['index']}", f["index"]) for f in faces]
    label = f"Faces to change ({len(faces)} found)" if faces else "Faces to change (none found yet)"
    return gr.CheckboxGroup(choices=choices, value=[c[1] for c in choices], label=label)


def faces_spec(selected: list[int] | None, faces: list[dict] | None) -> str:
    """The /anonymize `faces` text for the ticked boxes ('all' when every face is ticked)."""
    selected = sorted(selected or [])
    if faces is not None and len(selected) == len(faces):
        return "all"
    return ", ".join(str(i) for i in selected) if selected else "none"


def selection_note(selected: list[int] | None, faces: list[dict] | None) -> str:
    """'3 of 130 faces selected (2 large enough for a new identity)' above the picker."""
    faces, chosen = faces or [], sorted(set(selected or []))
    if not faces:
        return ""
    generated, _ = _tally(_detected(faces), chosen)
    return (
        f"**{len(chosen)} of {len(faces)} faces selected** ({generated} large enough for a new identity; "
        "smaller ones are blurred). Click a face on the picture to select or leave it."
    )


def _detected(faces: list[dict]):
    """The picker's faces (as /detect returns them) as DetectedFace, for drawing and planning."""
    from faceanon.results import DetectedFace

    return [
        DetectedFace(index=f["index"], box=tuple(f["box"]), landmarks=None, score=f.get("score", 1.0))
        for f in faces
    ]


def show_selection(image: str | None, faces: list[dict] | None, selected: list[int] | None):
    """(picture, faces text, note) for a new selection."""
    picture = None
    if image and faces is not None:
        picture = draw_faces(load_photo(image), _detected(faces), set(selected or []))
    return picture, faces_spec(selected, faces), selection_note(selected, faces)


# The selection lives in a gr.State (the page's `chosen`): the number checkboxes sit in a closed
# accordion, and Gradio 6 does not mount those, so their value in the browser is not kept up to date.
def _new_selection(image, faces, chosen: list[int]):
    chosen = sorted(set(chosen))
    return chosen, gr.CheckboxGroup(value=chosen), *show_selection(image, faces, chosen)


def toggle_face(image, faces, chosen, evt: gr.SelectData):
    """A click on the Detected faces picture selects or leaves the face under it."""
    x, y = evt.index
    index = face_at(faces or [], x, y)
    chosen = set(chosen or [])
    if index is not None:
        chosen ^= {index}
    return _new_selection(image, faces, chosen)


def select_all(image, faces):
    return _new_selection(image, faces, [f["index"] for f in faces or []])


def select_none(image, faces):
    return _new_selection(image, faces, [])


def select_numbers(image, faces, ticked):
    """The number checkboxes changed (they are mounted then: the person is using them)."""
    chosen = sorted(set(ticked or []))
    return chosen, *show_selection(image, faces, chosen)


def degree_hint(degree: float) -> str:
    d = float(degree)
    if d > UNREALISTIC_DEGREE:
        return (
            f"**d = {d:g} is above {UNREALISTIC_DEGREE}: the paper's supplementary (Fig. 2) shows faces "
            "stop being detected as faces there.** 1.2–1.3 gives new, natural identities."
        )
    if d < 1.0:
        return (
            f"d = {d:g} keeps much of the original identity (d = 0 reconstructs the face). "
            "Use 1.2–1.3 to anonymize."
        )
    return ""


# -- what the page's buttons run: one message box for errors, no stray badges ------------------------
def message(text: str | None = None):
    """The tab's message box: shown with the text, or hidden."""
    return gr.Markdown(value=f"**{text}**" if text else "", visible=bool(text))


def page_detect(image: str | None):
    """Detection after an upload, for the page: (picture, faces, picker, chosen, faces text, note,
    message)."""
    if not image:
        return None, [], face_choices([]), [], "all", "", message()
    try:
        picture, faces = detect(image)
    except gr.Error as error:
        return None, [], face_choices([]), [], "all", "", message(error.message)
    everyone = [f["index"] for f in faces]
    return picture, faces, face_choices(faces), everyone, "all", selection_note(everyone, faces), message()


def page_anonymize(
    image,
    method,
    degree,
    seed,
    randomize_seed,
    faces,
    steps,
    guidance,
    scheduler,
    keep=None,
    found=None,
    chosen=None,
    progress=gr.Progress(),  # noqa: B008
):
    """/anonymize for the page: (result, summary, report, seed, before/after, per-face table, message);
    on an error only the message box changes. The faces are the picker's selection (server state),
    not the hidden text box, which the browser may not have updated yet."""
    if found:
        faces = faces_spec(chosen, found)
    try:
        out, summary, report, seed_used = anonymize(
            image,
            method,
            degree,
            seed,
            randomize_seed,
            faces,
            steps,
            guidance,
            scheduler,
            keep,
            progress=progress,
        )
    except gr.Error as error:
        return (gr.skip(),) * 6 + (message(error.message),)
    from faceanon.webapp.report import COMPACT_FACES, face_rows

    rows = face_rows(report)
    table = gr.Dataframe(value=rows, visible=len(rows) > COMPACT_FACES)
    return out, summary, report, seed_used, (load_photo(image), out), table, message()
