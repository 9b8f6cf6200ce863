"""What the app's buttons and named API endpoints (/detect, /anonymize, /swap) do.

Each public function here is bound to one Gradio event; its docstring is the endpoint's API
documentation (Gradio reads the "Args:" section), so keep those accurate.
"""

from __future__ import annotations

import random

import gradio as gr
import spaces  # noqa: F401  (before torch touches CUDA: ZeroGPU patches it)
from PIL import Image, ImageDraw

from faceanon.errors import FaceAnonError
from faceanon.webapp import limits as L
from faceanon.webapp.service import ModelHost

METHODS = ["diffusion", "blur", "pixelate", "solid"]
SCHEDULERS = ["default", "ddpm", "ddim", "dpmsolver++", "unipc"]
MAX_SEED = 2**31 - 1
UNREALISTIC_DEGREE = 1.5
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
    except FaceAnonError as error:
        raise gr.Error(str(error), title="Cannot read the image") from None


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
        raise gr.Error(
            f"Faces must be 'all' or face numbers such as '0, 2' (as numbered by Detect faces); got {spec!r}.",
            title="Bad face selection",
        ) from None
    if any(i < 0 for i in faces):
        raise gr.Error("Face numbers start at 0.", title="Bad face selection")
    return faces


def pick_seed(seed: float | None, randomize: bool) -> int:
    if randomize or seed is None:
        return random.randint(0, MAX_SEED)
    return int(seed) % (MAX_SEED + 1)


def _progress_callback(progress):
    """Adapts Gradio's progress tracker to faceanon's callable(fraction, description)."""

    def report(fraction: float, description: str = "") -> None:
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


def _redact(photo, method, options):
    with host().using(diffusion=False) as anonymizer:
        return anonymizer.anonymize(photo, method=method, **options)


def _count_selected(image, faces: list[int] | None) -> int:
    with host().using(diffusion=False) as anonymizer:
        found = anonymizer.detect(image)
    if faces is None:
        return len(found)
    return len([f for f in found if f.index in faces])


# -- endpoints -----------------------------------------------------------------------------------
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


def anonymize(
    image: str | None,
    method: str = "diffusion",
    degree: float = 1.25,
    seed: float = 0,
    randomize_seed: bool = False,
    faces: str = "all",
    steps: float = 25,
    guidance: float = 4.0,
    scheduler: str = "default",
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

    Returns:
        the anonymized photo (PNG, no input metadata), a summary for people, the per-face report, and the seed used.
    """
    if method not in METHODS:
        raise gr.Error(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.", title="Bad setting")
    photo = load_photo(image)
    selected = parse_faces(faces)
    seed_used = pick_seed(seed, randomize_seed)
    options = dict(seed=seed_used, faces=selected)
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
    num_faces = _count_selected(photo, selected)
    L.check_face_count(num_faces, _LIMITS)
    result = _call(lambda: _run_diffusion("anonymize", photo, None, num_faces, options, _progress_callback(progress)))
    return _finish(photo, result, seed_used)


def swap(
    source: str | None,
    target: str | None,
    source_face: float = 0,
    target_faces: str = "all",
    seed: float = 0,
    randomize_seed: bool = False,
    steps: float = 25,
    guidance: float = 4.0,
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
        seed=seed_used, source_face=int(source_face), faces=selected,
        steps=L.check_steps(steps, _LIMITS), guidance=float(guidance),
    )
    progress(0.0, desc="Finding faces")
    num_faces = _count_selected(target_photo, selected)
    L.check_face_count(num_faces, _LIMITS)
    result = _call(lambda: _run_diffusion("swap", target_photo, source_photo, num_faces, options,
                                          _progress_callback(progress)))
    return _finish(target_photo, result, seed_used)


def _require_diffusion(progress=None) -> None:
    """Fails with the reason unless the weights are loaded; waits a while if they are loading."""
    if host().state == ModelHost.LOADING:
        if progress is not None:
            progress(0.0, desc="Waiting for the diffusion model to load")
        host().wait(LOADING_WAIT_S)
    if not host().diffusion_ready:
        raise gr.Error(host().unavailable_message(), title="Diffusion unavailable", duration=None)


def _call(run):
    """Runs library work, turning faceanon's errors (written for people) into Gradio errors."""
    try:
        return run()
    except (FaceAnonError, ValueError) as error:  # the library's ValueErrors are written for people too
        raise gr.Error(str(error), title="Cannot do that") from None


def _finish(original: Image.Image, result, seed_used: int):
    from faceanon.webapp.report import add_identity_checks, summary_markdown

    add_identity_checks(original, result)
    return _result_png(result), summary_markdown(result, seed_used), result.to_dict() | {"seed": seed_used}, seed_used


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


def evaluate(
    image: str | None,
    degrees: str = "0.3, 0.6, 0.9, 1.2, 1.4, 1.5",
    seeds: float = 2,
    steps: float = 25,
    baselines: bool = True,
    progress=gr.Progress(),  # noqa: B008
):
    """Measures how well a photo's faces are anonymized, as the paper's supplementary Figs. 1-3 do.

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
    try:
        values = [float(v) for v in str(degrees).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise gr.Error(f"Degrees must be numbers separated by commas, such as 0.6, 1.2; got {degrees!r}.",
                       title="Bad setting") from None
    diffusion = host().diffusion_ready
    if not values and not baselines:
        raise gr.Error("Choose at least one degree or the baselines.", title="Nothing to evaluate")
    if not diffusion:
        gr.Warning("The diffusion model is not loaded: only the blur, pixelate and solid baselines are measured.")
    options = dict(degrees=values if diffusion else (), seeds=max(1, int(seeds)), steps=L.check_steps(steps, _LIMITS),
                   baselines=("blur", "pixelate", "solid") if baselines or not diffusion else (),
                   progress=_progress_callback(progress))
    rows, figures = _call(lambda: _run_evaluation(photo, diffusion, options))
    table = [[r.get(c) for c in EVALUATION_COLUMNS] for r in rows]
    return (*figures, table)


EVALUATION_COLUMNS = ["method", "degree", "seed", "face", "identity_similarity", "same_person",
                      "detected_yunet", "detected_scrfd", "pose_distance", "expression_distance"]


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


# -- pictures ------------------------------------------------------------------------------------
def draw_faces(photo: Image.Image, faces) -> Image.Image:
    """A copy of the photo with a numbered box on each face."""
    canvas = photo.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    font_size = max(14, round(max(canvas.size) / 30))
    try:
        from PIL import ImageFont

        font = ImageFont.load_default(size=font_size)
    except (TypeError, OSError):  # Pillow without FreeType
        font = None
    for face in faces:
        x0, y0, x1, y1 = face.box
        draw.rectangle((x0, y0, x1, y1), outline=(255, 200, 0), width=width)
        label = f"#{face.index}"
        tx, ty = x0, max(0, y0 - font_size - 2 * width)
        box = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(255, 200, 0))
        draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
    return canvas


def face_choices(faces: list[dict] | None):
    """The checkbox list of detected faces, all ticked."""
    faces = faces or []
    choices = [(f"#{f['index']} (score {f['score']:.2f})", f["index"]) for f in faces]
    label = f"Faces to change ({len(faces)} found)" if faces else "Faces to change (none found yet)"
    return gr.CheckboxGroup(choices=choices, value=[c[1] for c in choices], label=label)


def faces_spec(selected: list[int] | None, faces: list[dict] | None) -> str:
    """The /anonymize `faces` text for the ticked boxes ('all' when every face is ticked)."""
    selected = sorted(selected or [])
    if faces is not None and len(selected) == len(faces):
        return "all"
    return ", ".join(str(i) for i in selected) if selected else "none"


def degree_hint(degree: float) -> str:
    d = float(degree)
    if d > UNREALISTIC_DEGREE:
        return (f"**d = {d:g} is above {UNREALISTIC_DEGREE}: the paper's supplementary (Fig. 2) shows faces "
                "stop being detected as faces there.** 1.2–1.3 gives new, natural identities.")
    if d < 1.0:
        return (f"d = {d:g} keeps much of the original identity (d = 0 reconstructs the face). "
                "Use 1.2–1.3 to anonymize.")
    return ""
