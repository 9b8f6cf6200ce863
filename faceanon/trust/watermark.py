"""Provenance: an invisible watermark on images with generated faces, and a PNG text chunk.

The watermark is invisible-watermark's DWT-DCT-SVD embedding (`imwatermark`, the library Stable
Diffusion releases use), made to survive JPEG and resizing:

* Stock `dwtDct` (Stable Diffusion's choice) does not survive JPEG q=75 here (bit accuracy ~0.5,
  i.e. chance, on natural photos), and neither stock method survives a resize, because bits are
  tiled over 4x4 blocks of the *full-resolution* wavelet band: after a resize every block moves.
* So the bits are embedded at a fixed working resolution (160x160, aspect ignored) in the U
  (chroma) channel with `dwtDctSvd` at strength 48; the change is upsampled to the photo's size and
  added. The detector resizes any image to 160x160 and decodes there, so a resized copy decodes as
  well as the original. 8 repeats of each bit are averaged by the library's decoder.
* Embedding calls the library's `encode_frame` on the wavelet band and rebuilds only the band's
  change: the library's own `encode` swaps the horizontal and vertical detail bands when it
  rebuilds the image (imwatermark 0.2.0), which moves colour edges by up to ~110 levels.

Measured on 12 photos from skimage/matplotlib/insightface (0.1 to 2 MP): PSNR >= 39.3 dB; bit
accuracy 1.00 after JPEG q=75, after a half-size resize (Lanczos, bilinear or nearest) and after
JPEG q=50; >= 0.98 after a half-size resize then JPEG q=75; unwatermarked photos read <= 0.60. Detection needs
>= 40 of 48 bits (0.83): a chance match of an unmarked image is ~1e-6. Crops, rotations,
flips and heavy edits remove it; it marks provenance, it is not tamper-proof.

Faces (what FaceAnonymizer marks). A whole-image mark cannot be put into a photo by the
anonymizer: only pixels inside the face masks may change, and a group photo's small faces are a
sliver of it. So each generated face carries its own mark, tied to the face's geometry:

* Where: FACE_REGION (centre (256, 290), side 224: brows to chin) of the FFHQ frame of the
  *generated* face: the anonymizer pastes the new crop into a copy of the photo, runs YuNet there
  (`generated_face_landmarks`) and places the mark in the frame of those landmarks, which is the
  frame a reader recomputes from the output (the crop's own frame when no face is found). It lies
  in the core of the blend mask; pixels outside the masks stay the input's, bit for bit.
* What: two key-derived balanced +-1 patterns of 14x14 cells (16 crop pixels each,
  Gaussian-smoothed), along the U (blue-yellow) and V (red-green) chroma directions, scaled so
  that no channel changes by more than 5 levels and the RMS change over the region is 2.1 levels
  (PSNR 41.6 dB over the region, 41.8 dB over the changed pixels of an output; no visible pattern
  at 2x zoom, checked by eye; a first version at 14 levels showed colour blotches).
* Reading: YuNet finds the faces of the photo as it is and of the photo upscaled 2x (a half-size
  copy upscaled looks to the detector like the photo the mark was placed in; measured landmark
  residuals <= 5 px of 512, 3 %, 2 degrees against ~20 px, 13 %, 10 degrees without). Each face
  is re-aligned at 128 px, its chroma planes low-passed (sigma 1.5 px), freed of the host face
  (minus a bilateral-filtered estimate of it), high-passed (minus a sigma-4 blur) and divided by
  the local activity, and matched (normalised correlation, mean of U
  and V) with the high-passed pattern over shifts of +-2 px, scales 0.97-1.03 and +-2.5 degrees
  (9 warps x 25 shifts); the better hypothesis counts. ~0.1 s a face.
* Decision: a face is marked when its score >= `FACE_THRESHOLD` (0.21); a photo is marked when
  the whole-image mark decodes (>= 40 of 48 bits) or any face is marked. Null: 2016 scores of
  unmarked faces (8 package faces and 8 unmarked generated faces x original/JPEG q=75/half size,
  read with random keys): mean 0.077, sd 0.031, max 0.194, p99.9 0.176, none >= 0.21 (4.3 sd;
  normal tail ~1e-5 per face). Generated faces (another real face pasted by FaceAnonymizer), as
  written / JPEG q=75 / half size: Grace Hopper 0.50 / 0.46 / 0.49; the 6 group faces 0.23-0.53;
  the astronaut with Grace Hopper's (JPEG-blocky) face 0.28 / 0.219 / 0.27 — found, by a thin
  margin after JPEG. A half-size resize *then* JPEG q=75 is mostly lost. Invisibility comes
  first; it marks provenance, it is not tamper-proof.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, PngImagePlugin

WATERMARK_MESSAGE = b"fAnon!"  # 48 bits, 24 of them ones: a flat image decodes to 0.5 accuracy
WORK_SIZE = 160
STRENGTH = 48.0  # quantization step of the block's largest singular value, in 8-bit levels
BLOCK = 4
DETECTION_THRESHOLD = 40 / 48

# The per-face mark (see the module doc).
FACE_CROP = 512  # the aligned crop size FACE_REGION refers to
FACE_REGION = (256.0, 290.0, 224.0)  # centre x, centre y, side, in 512x512 aligned-crop pixels
FACE_GRID = 14  # cells per side
FACE_MAX_CHANGE = 5.0  # largest change of any channel, 8-bit levels
FACE_RMS = 2.1  # RMS change over FACE_REGION, 8-bit levels (PSNR 41.6 dB)
FACE_THRESHOLD = 0.21  # random-key null over 2016 readings: mean 0.077, sd 0.031, max 0.194
_READ_SIZE = 128  # faces are re-aligned at this size for reading
_HIGHPASS_SIGMA = 4.0  # read pixels
_ACTIVITY_SIGMA = 4.0
_LOWPASS_SIGMA = 1.5
# The host face is estimated with an edge-keeping (bilateral) filter and subtracted before
# correlating: the mark is weak next to a face's own chroma texture (JPEG blocks included).
_HOST_SIGMA_COLOR = 12.0  # chroma levels
_HOST_SIGMA_SPACE = 4.0  # read pixels
_SEARCH_SHIFT = 2  # read pixels
_SEARCH_SCALES = tuple(np.log([0.97, 1.0, 1.03]))
_SEARCH_ANGLES = (-2.5, 0.0, 2.5)  # degrees
_UPSCALE_MAX_SIDE = 2048
# Unit chroma directions in RGB (the U and V axes of YUV, largest component 1).
_U_RGB = np.array([-0.147, -0.289, 0.436]) / 0.436
_V_RGB = np.array([0.615, -0.515, -0.100]) / 0.615

PNG_TEXT_KEY = "Comment"
PNG_TEXT = (
    "Faces in this image were anonymized by faceanon: they were replaced by generated faces "
    "of people who do not exist."
)
PNG_TEXT_REDACTED = "Faces in this image were anonymized by faceanon (blurred, pixelated or filled)."


def watermark_bits() -> np.ndarray:
    return np.unpackbits(np.frombuffer(WATERMARK_MESSAGE, dtype=np.uint8)).astype(bool)


def _embedder(bits):
    from imwatermark.dwtDctSvd import EmbedDwtDctSvd

    # The image is handed over in [0, 1] floats (no 8-bit rounding of the band), so scale by 1/255.
    return EmbedDwtDctSvd(list(bits), wmLen=len(watermark_bits()), scales=[0, STRENGTH / 255, 0], block=BLOCK)


def _working_rgb(rgb: np.ndarray) -> np.ndarray:
    """The photo at the working resolution, as [0, 1] floats."""
    import cv2

    return cv2.resize(rgb, (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _watermark_delta(rgb: np.ndarray) -> np.ndarray:
    """The RGB change (8-bit levels, float) that carries the watermark, at the photo's size."""
    import cv2
    import pywt

    yuv = cv2.cvtColor(_working_rgb(rgb), cv2.COLOR_RGB2YUV)
    band, _ = pywt.dwt2(yuv[:, :, 1], "haar")
    marked = band.copy()
    _embedder(watermark_bits()).encode_frame(marked, STRENGTH / 255)
    delta_u = pywt.idwt2((marked - band, (None, None, None)), "haar")
    delta_yuv = np.zeros_like(yuv)
    delta_yuv[:, :, 1] = delta_u
    # YUV -> RGB is affine; the float path's 0.5 chroma offset cancels out of the difference.
    offset = np.array([0, 0.5, 0.5], dtype=np.float32)
    delta_rgb = (
        cv2.cvtColor(delta_yuv + offset, cv2.COLOR_YUV2RGB)
        - cv2.cvtColor(np.zeros_like(yuv) + offset, cv2.COLOR_YUV2RGB)
    ) * 255
    height, width = rgb.shape[:2]
    return cv2.resize(delta_rgb, (width, height), interpolation=cv2.INTER_LINEAR)


def add_watermark(image: Image.Image) -> Image.Image:
    """A copy of `image` carrying faceanon's invisible watermark (alpha, if any, is kept)."""
    rgb = np.asarray(image.convert("RGB"))
    marked = np.clip(rgb + _watermark_delta(rgb), 0, 255).round().astype(np.uint8)
    out = Image.fromarray(marked)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        out.putalpha(image.convert("RGBA").getchannel("A"))
    return out


def watermark_score(image: Image.Image) -> float:
    """Fraction of the 48 watermark bits read back correctly (about 0.5 for unmarked images)."""
    working = _working_rgb(np.asarray(image.convert("RGB")))
    bits = np.asarray(
        _embedder([]).decode(np.ascontiguousarray(working[:, :, ::-1])), dtype=bool
    )  # wants BGR
    return float(np.mean(bits == watermark_bits()))


def detect_watermark(image: Image.Image, faces: bool = True) -> tuple[bool, float]:
    """(carries faceanon's watermark, score). The whole-image mark is read first; the score is its
    bit accuracy in [0, 1]. When it is absent and `faces`, each detected face's mark is read too
    and the score is the best face's correlation (FACE_THRESHOLD and above: marked); with no
    face found it stays the bit accuracy. `read_watermark` gives the full picture."""
    score = watermark_score(image)
    if score >= DETECTION_THRESHOLD or not faces:
        return score >= DETECTION_THRESHOLD, score
    best = read_watermark(image).best_face
    if best is None:
        return False, score
    return best.found, best.score


# ------------------------------------------------------------------------------------------------
# Per-face mark


@lru_cache(maxsize=64)
def face_patterns(key: bytes = WATERMARK_MESSAGE) -> np.ndarray:
    """The two (FACE_GRID, FACE_GRID) +-1 patterns (U, V), balanced, fixed by `key`."""
    seed = int.from_bytes(hashlib.sha256(b"faceanon-face2:" + key).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    cells = FACE_GRID * FACE_GRID
    patterns = []
    for _ in range(2):
        values = np.array([1.0] * (cells // 2) + [-1.0] * (cells - cells // 2))
        rng.shuffle(values)
        patterns.append(values.reshape(FACE_GRID, FACE_GRID))
    return np.stack(patterns)


@lru_cache(maxsize=64)
def _pattern_planes(size: int, key: bytes = WATERMARK_MESSAGE) -> np.ndarray:
    """The two smooth pattern planes (2, size, size), float32, peak ~1, in the face's template frame
    (an FFHQ-aligned crop of `size` pixels), zero outside FACE_REGION (plus a fade of one cell)."""
    import cv2

    upsample = 16
    centre_x, centre_y, side = (v * size / FACE_CROP for v in FACE_REGION)
    cell = side / FACE_GRID
    step = cell / upsample
    # Pattern pixel (u, v) -> crop pixel; one zero cell around the grid lets the smoothing fade out.
    to_crop = np.array(
        [
            [step, 0, centre_x - side / 2 - cell + step / 2 - 0.5],
            [0, step, centre_y - side / 2 - cell + step / 2 - 0.5],
        ]
    )
    planes = []
    for pattern in face_patterns(key):
        grid = np.pad(pattern, 1).astype(np.float32)
        fine = cv2.resize(grid, None, fx=upsample, fy=upsample, interpolation=cv2.INTER_NEAREST)
        fine = cv2.GaussianBlur(fine, (0, 0), upsample * 0.35)
        planes.append(cv2.warpAffine(fine, to_crop, (size, size), flags=cv2.INTER_LINEAR))
    out = np.stack(planes)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def _face_amplitude() -> float:
    """Peak chroma amplitude: the largest one that keeps every channel's change <= FACE_MAX_CHANGE
    and the RMS change over FACE_REGION at FACE_RMS."""
    planes = _pattern_planes(FACE_CROP)
    delta = planes[0][..., None] * _U_RGB + planes[1][..., None] * _V_RGB
    centre_x, centre_y, side = FACE_REGION
    region = delta[
        int(centre_y - side / 2) : int(centre_y + side / 2),
        int(centre_x - side / 2) : int(centre_x + side / 2),
    ]
    return float(min(FACE_MAX_CHANGE / np.abs(delta).max(), FACE_RMS / np.sqrt(np.mean(region**2))))


def add_face_watermark(crop: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
    """An FFHQ-aligned face crop (square RGB uint8, any size) carrying the per-face mark.

    The mark lies in FACE_REGION of the frame that `landmarks` (the face's 5 landmarks in crop
    pixels, as a detector finds them in the photo the crop is pasted into: see
    `generated_face_landmarks`) define, i.e. where a reader that re-detects this face will look.
    Without landmarks it lies in FACE_REGION of the crop itself. Pixels far from the region are
    returned unchanged."""
    import cv2

    from faceanon.faces.alignment import alignment_matrix

    crop = np.asarray(crop)
    size = crop.shape[0]
    if crop.ndim != 3 or crop.shape[1] != size or crop.shape[2] < 3:
        raise ValueError(f"add_face_watermark needs a square RGB crop, got shape {crop.shape}")
    planes = _pattern_planes(size)
    if landmarks is not None:  # crop pixel -> template pixel; sample the template's planes there
        to_template = alignment_matrix(np.asarray(landmarks, np.float64).reshape(5, 2), size)
        planes = np.stack(
            [
                cv2.warpAffine(p, to_template, (size, size), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
                for p in planes
            ]
        )
    amplitude = _face_amplitude()
    delta = amplitude * (
        planes[0][..., None] * _U_RGB.astype(np.float32) + planes[1][..., None] * _V_RGB.astype(np.float32)
    )
    out = crop.copy()
    out[..., :3] = np.clip(np.rint(crop[..., :3] + delta), 0, 255).astype(np.uint8)
    return out


def generated_face_landmarks(
    photo: np.ndarray, crop: np.ndarray, aligned, mask=None, color_match: bool = False, detector=None
) -> np.ndarray | None:
    """The landmarks (in crop pixels) a detector finds for the generated `crop` once it is pasted
    into `photo` (what `paste_face(photo, crop, aligned, mask)` would give; `photo` is not changed),
    or None when it finds no face there. This is the frame `read_watermark` recomputes."""
    from faceanon.faces.blending import paste_face

    composite = np.array(photo[..., :3], copy=True)
    paste_face(composite, crop, aligned, mask, color_match=color_match)
    centre = np.array([0.5, 0.55]) * aligned.size  # the face's centre in crop pixels
    centre = aligned.inverse[:, :2] @ centre + aligned.inverse[:, 2]
    found = _nearest_face(
        (detector or _detector()).detect(composite), centre, 0.5 * aligned.size / aligned.scale / 2
    )
    if found is None:
        return None
    points = np.asarray(found.landmarks, np.float64).reshape(5, 2)
    return (points @ aligned.matrix[:, :2].T + aligned.matrix[:, 2]) * (
        np.asarray(crop).shape[0] / aligned.size
    )


def _nearest_face(faces, centre, max_distance):
    best, best_distance = None, max_distance
    for face in faces:
        box = np.asarray(face.box, np.float64)
        distance = float(np.hypot(*((box[:2] + box[2:]) / 2 - centre)))
        if distance < best_distance:
            best, best_distance = face, distance
    return best


def _read_positions(rgb: np.ndarray, landmarks: np.ndarray) -> list[np.ndarray]:
    """The face re-aligned at _READ_SIZE from `landmarks`, at each scale/rotation of the search,
    as activity-normalised high-passed chroma planes (2, _READ_SIZE, _READ_SIZE)."""
    import cv2

    from faceanon.faces.alignment import align_face

    crop = align_face(np.asarray(rgb)[..., :3], landmarks, size=_READ_SIZE).crop.astype(np.float32)
    centre = np.array(FACE_REGION[:2]) * _READ_SIZE / FACE_CROP - 0.5
    out = []
    for log_scale, angle in itertools.product(_SEARCH_SCALES, _SEARCH_ANGLES):
        matrix = cv2.getRotationMatrix2D(tuple(centre), angle, float(np.exp(log_scale)))
        warped = (
            cv2.warpAffine(
                crop,
                matrix,
                (_READ_SIZE, _READ_SIZE),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )
            if (log_scale or angle)
            else crop
        )
        planes = []
        for direction in (_U_RGB, _V_RGB):
            plane = warped @ direction.astype(np.float32)
            if _LOWPASS_SIGMA:
                plane = cv2.GaussianBlur(plane, (0, 0), _LOWPASS_SIGMA)
            plane = plane - cv2.bilateralFilter(plane, 0, _HOST_SIGMA_COLOR, _HOST_SIGMA_SPACE)
            high = plane - cv2.GaussianBlur(plane, (0, 0), _HIGHPASS_SIGMA)
            activity = np.sqrt(cv2.GaussianBlur(high * high, (0, 0), _ACTIVITY_SIGMA)) + 1.0
            planes.append(high / activity)
        out.append(np.stack(planes))
    return out


@lru_cache(maxsize=64)
def _read_templates(key: bytes = WATERMARK_MESSAGE) -> tuple[np.ndarray, tuple[int, int]]:
    """The high-passed pattern planes over FACE_REGION plus a margin at _READ_SIZE, and the
    template's top-left corner in the read crop."""
    import cv2

    planes = _pattern_planes(_READ_SIZE, key)
    centre_x, centre_y, side = (v * _READ_SIZE / FACE_CROP for v in FACE_REGION)
    half = int(np.ceil(side / 2 + side / FACE_GRID / 2))
    x0, y0 = int(round(centre_x)) - half, int(round(centre_y)) - half
    templates = []
    for plane in planes:
        high = plane - cv2.GaussianBlur(plane, (0, 0), _HIGHPASS_SIGMA)
        templates.append(np.ascontiguousarray(high[y0 : y0 + 2 * half, x0 : x0 + 2 * half]))
    return np.stack(templates), (x0, y0)


def _best_correlation(positions: list[np.ndarray], key: bytes = WATERMARK_MESSAGE) -> float:
    """The best normalised correlation (mean over U and V) of the pattern with the face over the
    search: each scale/rotation, shifts of up to _SEARCH_SHIFT read pixels."""
    import cv2

    templates, (x0, y0) = _read_templates(key)
    size = templates.shape[1]
    r = _SEARCH_SHIFT
    best = -1.0
    for planes in positions:
        maps = [
            cv2.matchTemplate(
                np.ascontiguousarray(plane[y0 - r : y0 + size + r, x0 - r : x0 + size + r]),
                template,
                cv2.TM_CCOEFF_NORMED,
            )
            for plane, template in zip(planes, templates, strict=True)
        ]
        best = max(best, float((maps[0] + maps[1]).max() / 2))
    return best


def face_watermark_score(rgb: np.ndarray, landmarks: np.ndarray, key: bytes = WATERMARK_MESSAGE) -> float:
    """How strongly the face with these 5 landmarks (in `rgb`, an RGB uint8 photo) carries the
    per-face mark: the best normalised correlation with the pattern over a small search around
    the landmarks' frame (unmarked faces: about 0.05 +- 0.04, see FACE_THRESHOLD)."""
    return _best_correlation(_read_positions(rgb, landmarks), key)


@dataclass
class FaceMark:
    """The per-face mark of one face found in a photo."""

    index: int
    box: tuple[float, float, float, float]
    score: float  # pattern correlation, see face_watermark_score

    @property
    def found(self) -> bool:
        return self.score >= FACE_THRESHOLD


@dataclass
class WatermarkReading:
    """What `read_watermark` found: the whole-image mark and each face's mark."""

    image_score: float  # bit accuracy of the whole-image mark (about 0.5 when absent)
    faces: list[FaceMark] = field(default_factory=list)

    @property
    def image_found(self) -> bool:
        return self.image_score >= DETECTION_THRESHOLD

    @property
    def marked_faces(self) -> list[FaceMark]:
        return [f for f in self.faces if f.found]

    @property
    def best_face(self) -> FaceMark | None:
        return max(self.faces, key=lambda f: f.score, default=None)

    @property
    def found(self) -> bool:
        return self.image_found or bool(self.marked_faces)

    def describe(self) -> str:
        """One line for people, e.g. "face 2 (score 0.71; 3 of 6 faces marked)"."""
        parts = []
        if self.image_found:
            parts.append(f"whole image (bit accuracy {self.image_score:.2f})")
        marked = self.marked_faces
        if marked:
            best = max(marked, key=lambda f: f.score)
            parts.append(
                f"face {best.index} (score {best.score:.2f}; {len(marked)} of {len(self.faces)} "
                f"face(s) marked)"
            )
        if parts:
            return " and ".join(parts)
        best = self.best_face
        faces = (
            f"best face {best.index} scored {best.score:.2f} < {FACE_THRESHOLD}" if best else "no face found"
        )
        return f"whole-image bit accuracy {self.image_score:.2f} < {DETECTION_THRESHOLD:.2f}, {faces}"


_DETECTOR = None
_DETECTOR_LOCK = threading.Lock()


def _detector():
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            from faceanon.faces.detection import create_detector

            _DETECTOR = create_detector("yunet", min_face_size=16)
        return _DETECTOR


def read_watermark(image: Image.Image, detector=None, faces: bool = True) -> WatermarkReading:
    """Look for faceanon's marks in a photo: the whole-image mark, and (faces=True) the per-face
    mark of every face a detector (YuNet by default) finds. Each face is read in the frame of the
    landmarks found in the photo as it is and in the photo upscaled 2x (a half-size copy then
    looks to the detector like the photo the mark was placed in); the better score counts."""
    import cv2

    reading = WatermarkReading(image_score=watermark_score(image))
    if not faces:
        return reading
    detector = detector or _detector()
    rgb = np.asarray(image.convert("RGB"))
    found = detector.detect(rgb)
    big = None
    if found and max(rgb.shape[:2]) <= _UPSCALE_MAX_SIDE:
        big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        big_faces = detector.detect(big)
    for face in found:
        score = face_watermark_score(rgb, face.landmarks)
        if big is not None:
            box = np.asarray(face.box, np.float64)
            twin = _nearest_face(big_faces, (box[:2] + box[2:]), 0.3 * max(box[2:] - box[:2]) * 2)
            if twin is not None:
                score = max(score, face_watermark_score(big, twin.landmarks))
        reading.faces.append(FaceMark(face.index, face.box, round(score, 4)))
    return reading


def provenance_pnginfo(generated: bool = True) -> PngImagePlugin.PngInfo:
    """The only metadata faceanon writes into PNG outputs: one text chunk saying what was done.
    `generated=False` for outputs whose faces were only redacted."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_TEXT_KEY, PNG_TEXT if generated else PNG_TEXT_REDACTED)
    return info


def provenance_for(result) -> PngImagePlugin.PngInfo | None:
    """The PNG text chunk for an AnonymizationResult: the "generated" note when a face was replaced
    by diffusion, the "redacted" note when faces were only redacted, None when nothing changed."""
    methods = {report.method for report in result.faces if report.changed}
    if not methods:
        return None
    return provenance_pnginfo(generated="diffusion" in methods)


def read_provenance(image: Image.Image) -> str | None:
    """The faceanon text chunk of an opened PNG, or None."""
    text = getattr(image, "text", None) or image.info
    value = text.get(PNG_TEXT_KEY) if text else None
    return value if isinstance(value, str) and "faceanon" in value else None
