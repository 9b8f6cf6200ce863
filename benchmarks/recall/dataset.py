"""The labelled evaluation set: real photos with hand-checked face boxes, and hard cases made from them.

Base photos come from installed packages (scikit-image, matplotlib, insightface) and from
`photos/` (US government photos, public domain). Each hard case is a deterministic transform of a
base photo (resize, rotation, crop, darkening, blur, occluders, mosaics); the hand-checked boxes and
points go through the same transform, so every face of every case is labelled. Faces that end up
under 12 px, or mostly outside the frame, become "ignore" regions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
MIN_FACE = 12  # pixels (larger box side): smaller faces are "ignore"
FLIP_ORDER = [1, 0, 2, 4, 3]  # a mirror swaps image-left and image-right points


@dataclass
class Face:
    box: np.ndarray  # x0 y0 x1 y1
    points: np.ndarray  # (5, 2)

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class Case:
    name: str
    tags: tuple[str, ...]
    image: np.ndarray  # RGB uint8, upright as stored (no EXIF anywhere)
    faces: list[Face]
    ignore: list[np.ndarray] = field(default_factory=list)

    @property
    def megapixels(self) -> float:
        return self.image.shape[0] * self.image.shape[1] / 1e6


def labels() -> dict:
    return json.loads((HERE / "labels.json").read_text())["photos"]


@cache
def _base_pixels(name: str) -> np.ndarray:
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    if name == "grace_hopper":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    elif name == "t1":
        import insightface

        path = Path(os.path.dirname(insightface.__file__)) / "data" / "images" / "t1.jpg"
    else:
        path = HERE / "photos" / f"{name}.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def base(name: str) -> Case:
    entry = labels()[name]
    faces = [Face(np.array(f["box"], float), np.array(f["points"], float)) for f in entry["faces"]]
    return Case(
        name, ("base",), _base_pixels(name).copy(), faces, [np.array(b, float) for b in entry["ignore"]]
    )


# ---- geometry: every transform is a 2x3 affine matrix applied to pixels, boxes and points -------------


def _warp_labels(case: Case, matrix: np.ndarray, size: tuple[int, int], name: str, tags) -> Case:
    width, height = size
    faces, ignore = [], [_warp_box(b, matrix) for b in case.ignore]
    flipped = np.linalg.det(matrix[:, :2]) < 0
    for face in case.faces:
        box = _warp_box(face.box, matrix)
        points = np.c_[face.points, np.ones(5)] @ matrix.T
        if flipped:
            points = points[FLIP_ORDER]
        clipped = np.clip(box, 0, [width, height, width, height])
        visible = _area(clipped) / max(_area(box), 1e-9)
        if visible < 0.6 or max(clipped[2] - clipped[0], clipped[3] - clipped[1]) < MIN_FACE:
            if _area(clipped) > 0:
                ignore.append(clipped)
            continue
        faces.append(Face(clipped, points))
    return Case(name, tuple(tags), case.image, faces, ignore)


def _warp_box(box: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Upright box around the ellipse inscribed in `box`, after the transform (a face is round:
    the box of a rotated face is smaller than the box of its rotated box)."""
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 1.0]) @ matrix.T
    half = np.array([(box[2] - box[0]) / 2, (box[3] - box[1]) / 2])
    linear = matrix[:, :2]
    extent = np.sqrt((linear * half) ** 2 @ np.ones(2))  # per output axis: sqrt((m00 a)^2 + (m01 b)^2)
    return np.r_[centre - extent, centre + extent]


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def warp(case: Case, matrix: np.ndarray, size: tuple[int, int], name: str, tags, fill=(0, 0, 0)) -> Case:
    pixels = cv2.warpAffine(case.image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=fill)
    out = _warp_labels(case, matrix, size, name, tags)
    out.image = pixels
    return out


def scaled(case: Case, factor: float, name: str, tags) -> Case:
    height, width = case.image.shape[:2]
    size = (round(width * factor), round(height * factor))
    out = _warp_labels(case, np.array([[factor, 0, 0], [0, factor, 0]], float), size, name, tags)
    out.image = cv2.resize(case.image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    return out


def rotated(case: Case, quarter_turns: int, name: str, tags) -> Case:
    """The photo stored sideways or upside down (np.rot90: counter-clockwise turns), no EXIF."""
    height, width = case.image.shape[:2]
    k = quarter_turns % 4
    matrix = {
        0: [[1, 0, 0], [0, 1, 0]],
        1: [[0, 1, 0], [-1, 0, width - 1]],
        2: [[-1, 0, width - 1], [0, -1, height - 1]],
        3: [[0, -1, height - 1], [1, 0, 0]],
    }[k]
    out = _warp_labels(
        case, np.array(matrix, float), (height, width) if k % 2 else (width, height), name, tags
    )
    out.image = np.ascontiguousarray(np.rot90(case.image, k))
    return out


def tilted(case: Case, degrees: float, name: str, tags) -> Case:
    """Rotated about the centre (a rolled head), on a canvas that keeps the whole photo."""
    height, width = case.image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    size = (int(height * sin + width * cos), int(height * cos + width * sin))
    matrix[:, 2] += np.array(size) / 2 - np.array([width / 2, height / 2])
    return warp(case, matrix, size, name, tags, fill=(90, 90, 90))


def cropped(case: Case, box: tuple[int, int, int, int], name: str, tags) -> Case:
    x0, y0, x1, y1 = box
    out = _warp_labels(case, np.array([[1, 0, -x0], [0, 1, -y0]], float), (x1 - x0, y1 - y0), name, tags)
    out.image = np.ascontiguousarray(case.image[y0:y1, x0:x1])
    return out


def mosaic(parts: list[tuple[Case, int, int]], size: tuple[int, int], name: str, tags, seed: int = 0) -> Case:
    """Paste cases at (x, y) on a textured canvas (noise, so no flat areas help the detectors)."""
    rng = np.random.default_rng(seed)
    width, height = size
    canvas = cv2.GaussianBlur(rng.integers(60, 200, (height, width, 3), dtype=np.uint8), (0, 0), 6)
    faces, ignore = [], []
    for part, x, y in parts:
        h, w = part.image.shape[:2]
        canvas[y : y + h, x : x + w] = part.image
        moved = _warp_labels(part, np.array([[1, 0, x], [0, 1, y]], float), size, name, tags)
        faces += moved.faces
        ignore += moved.ignore
    return Case(name, tuple(tags), canvas, faces, ignore)


def mirrored(case: Case, name: str, tags) -> Case:
    width = case.image.shape[1]
    out = _warp_labels(
        case, np.array([[-1, 0, width - 1], [0, 1, 0]], float), (width, case.image.shape[0]), name, tags
    )
    out.image = np.ascontiguousarray(case.image[:, ::-1])
    return out


# ---- photometric changes and occluders (labels unchanged) ---------------------------------------------


def recoloured(case: Case, change: Callable[[np.ndarray], np.ndarray], name: str, tags) -> Case:
    return Case(
        name,
        tuple(tags),
        np.clip(change(case.image.astype(np.float32)), 0, 255).astype(np.uint8),
        list(case.faces),
        list(case.ignore),
    )


def low_light(image: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    dark = 255 * (image / 255) ** 2.2 * 0.35  # underexposed by ~2.5 stops
    return dark + rng.normal(0, 3, image.shape)  # and sensor noise


def grayscale(image: np.ndarray) -> np.ndarray:
    gray = image @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(gray[:, :, None], 3, 2)


def motion_blur(length: int, degrees: float) -> Callable[[np.ndarray], np.ndarray]:
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1
    kernel = cv2.warpAffine(
        kernel, cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), degrees, 1), (length, length)
    )
    return lambda image: cv2.filter2D(image, -1, kernel / kernel.sum())


def occluded(case: Case, kind: str, name: str, tags) -> Case:
    """Sunglasses, a face mask or a hand drawn over each face from its labelled points."""
    image = case.image.copy()
    for face in case.faces:
        eyes, nose, mouth = face.points[:2], face.points[2], face.points[3:]
        eye_gap = float(np.linalg.norm(eyes[1] - eyes[0]))
        if kind == "sunglasses":
            for eye in eyes:
                cv2.ellipse(
                    image, _pt(eye), _pt((eye_gap * 0.42, eye_gap * 0.3)), 0, 0, 360, (20, 20, 25), -1
                )
            cv2.line(image, _pt(eyes[0]), _pt(eyes[1]), (20, 20, 25), max(2, round(eye_gap * 0.08)))
        elif kind == "mask":
            x0, y0, x1, y1 = face.box
            top = nose[1] - 0.15 * (y1 - y0)
            polygon = np.array(
                [
                    [x0 + 0.05 * (x1 - x0), top],
                    [x1 - 0.05 * (x1 - x0), top],
                    [x1 - 0.12 * (x1 - x0), y1],
                    [x0 + 0.12 * (x1 - x0), y1],
                ]
            )
            cv2.fillPoly(image, [polygon.round().astype(np.int32)], (170, 200, 225))
        elif kind == "hand":  # a palm over the image-right eye and cheek
            centre = (eyes[1] + mouth[1]) / 2 + np.array([eye_gap * 0.15, 0])
            cv2.ellipse(
                image, _pt(centre), _pt((eye_gap * 0.62, eye_gap * 0.95)), 15, 0, 360, (180, 130, 105), -1
            )
    return Case(name, tuple(tags), image, list(case.faces), list(case.ignore))


def _pt(values) -> tuple[int, int]:
    return int(round(values[0])), int(round(values[1]))


def negative(name: str) -> Case:
    from skimage import data

    return Case(name, ("no face",), getattr(data, name)(), [], [])


# ---- the set ----------------------------------------------------------------------------------------


def cases() -> list[Case]:
    t1, obama, obama2, hopper = base("t1"), base("obama"), base("obama2"), base("grace_hopper")
    two = base("two_people")
    out = [base(name) for name in labels()]
    out += [
        rotated(t1, 1, "t1_sideways_left", ("rotated",)),
        rotated(t1, 3, "t1_sideways_right", ("rotated",)),
        rotated(t1, 2, "t1_upside_down", ("rotated",)),
        rotated(hopper, 2, "hopper_upside_down", ("rotated",)),
        rotated(two, 3, "two_people_sideways", ("rotated",)),
        cropped(rotated(obama, 1, "", ()), (0, 150, 1137, 910), "obama_lying_down", ("rotated", "lying")),
        tilted(t1, 35, "t1_tilted_35", ("tilted",)),
        tilted(base("astronaut"), -50, "astronaut_tilted_50", ("tilted",)),
    ]
    out += [
        recoloured(t1, low_light, "t1_low_light", ("low light",)),
        recoloured(obama2, low_light, "obama2_low_light", ("low light",)),
        recoloured(t1, motion_blur(17, 0), "t1_motion_blur", ("motion blur",)),
        recoloured(two, motion_blur(25, 30), "two_people_motion_blur", ("motion blur",)),
        recoloured(t1, grayscale, "t1_grayscale", ("grayscale",)),
        recoloured(occluded(two, "mask", "", ()), grayscale, "two_people_mask_gray", ("mask", "grayscale")),
        occluded(t1, "sunglasses", "t1_sunglasses", ("sunglasses",)),
        occluded(t1, "mask", "t1_mask", ("mask",)),
        occluded(obama, "hand", "obama_hand", ("hand",)),
        occluded(t1, "hand", "t1_hand", ("hand",)),
    ]
    out += [
        cropped(obama, (450, 0, 910, 700), "obama_at_left_border", ("border",)),
        cropped(t1, (95, 95, 1280, 886), "t1_at_borders", ("border",)),
    ]
    out += [
        _tiny(t1),
        _small(t1, obama2, hopper),
        _crowd(t1),
        scaled(t1, 3.125, "t1_12mp", ("large", "12 MP")),
        _distant_groups(t1, two),
    ]
    out += [negative("coffee"), negative("chelsea"), negative("rocket")]
    return out


def _tiny(t1: Case) -> Case:
    """Faces of 12-24 px: the group photo at three small scales, in a 1600x1000 frame."""
    parts = [
        (scaled(t1, 0.13, "", ()), 80, 90),
        (scaled(t1, 0.17, "", ()), 700, 120),
        (scaled(t1, 0.21, "", ()), 300, 600),
        (scaled(mirrored(t1, "", ()), 0.15, "", ()), 1100, 650),
    ]
    return mosaic(parts, (1600, 1000), "tiny_faces", ("tiny",), seed=2)


def _small(t1: Case, obama2: Case, hopper: Case) -> Case:
    parts = [
        (scaled(t1, 0.35, "", ()), 40, 40),
        (scaled(obama2, 0.12, "", ()), 600, 60),
        (scaled(hopper, 0.18, "", ()), 800, 300),
        (scaled(t1, 0.28, "", ()), 500, 420),
    ]
    return mosaic(parts, (1100, 700), "small_faces", ("small",), seed=3)


def _distant_groups(t1: Case, two: Case) -> Case:
    """A 12 MP frame with people far away: faces of 30-60 px in 4000x3000 pixels."""
    parts = [
        (scaled(t1, 0.25, "", ()), 300, 400),
        (scaled(t1, 0.4, "", ()), 2200, 1700),
        (scaled(two, 0.2, "", ()), 2600, 300),
        (scaled(mirrored(t1, "", ()), 0.3, "", ()), 500, 2000),
    ]
    return mosaic(parts, (4000, 3000), "distant_groups_12mp", ("12 MP", "small"), seed=5)


def _crowd(t1: Case) -> Case:
    """A 36-face crowd: six copies of the group photo (some mirrored) at 24-70 px faces, JPEG-compressed."""
    tiles = []
    for i, factor in enumerate((0.5, 0.42, 0.36, 0.45, 0.3, 0.38)):
        source = mirrored(t1, "", ()) if i % 2 else t1
        tiles.append(scaled(source, factor, "", ()))
    positions = [(0, 0), (640, 0), (1180, 0), (0, 450), (580, 450), (980, 450)]
    crowd = mosaic(
        [(tile, px, py) for tile, (px, py) in zip(tiles, positions, strict=True)],
        (1660, 860),
        "crowd_36",
        ("crowd",),
        seed=4,
    )
    _, jpeg = cv2.imencode(".jpg", crowd.image, [cv2.IMWRITE_JPEG_QUALITY, 60])
    crowd.image = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)  # channel order is irrelevant to JPEG round trip
    return crowd
