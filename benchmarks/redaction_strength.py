"""Does redaction really hide, and from what face size on can the identity model tell people apart?

    PYTHONPATH=. python benchmarks/redaction_strength.py [--sizes 64,96,...] [--json out.json]

Faces: the 13 real faces of the photos the tests use (skimage's astronaut, matplotlib's Grace Hopper,
the 6 of insightface's t1.jpg, tests/data/people/: Biden, Obama x2, Obama + Biden), each person
labelled. Each face is rescaled (its photo around it, area / cubic resampling) so the face is N px.

1. Redaction strength: every redaction method of faceanon.faces.redaction.REDACTORS at strength 1
   (and the weakest strength a user can ask for, 0.1) on each face at 64..512 px; the ArcFace
   similarity between the face and its redacted version (both aligned with the original landmarks,
   as faceanon's identity check does). A method is strong enough when no face scores "same person".
2. Identity reliability: at 8..112 px, genuine pairs (the same face resampled half a pixel off and
   JPEG-compressed; and the same person in two photos) against impostor pairs (different people at the
   same size) and redacted faces (the face against its blur), with the landmarks YuNet finds at that
   size. The smallest size from which on every impostor and redacted pair stays under the threshold
   and (almost) every genuine pair above is where verdicts mean something:
   faceanon.trust.identity.MIN_VERIFIABLE_FACE.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faceanon.faces import align_face, create_detector  # noqa: E402
from faceanon.faces.redaction import REDACTORS, redact_face  # noqa: E402
from faceanon.media.photo import load_image, split_alpha  # noqa: E402
from faceanon.results import DetectedFace  # noqa: E402
from faceanon.trust.identity import get_identity_model  # noqa: E402

PEOPLE_DIR = ROOT / "tests" / "data" / "people"
# Who is who in tests/data/people (checked with ArcFace: same person 0.66-0.94, others <= 0.07).
PEOPLE = {
    "biden.jpg": ["biden"],
    "obama.jpg": ["obama"],
    "obama2.jpg": ["obama"],
    "two_people.jpg": ["obama", "biden"],
}


def labelled_faces() -> list[tuple[str, np.ndarray, DetectedFace]]:
    """(person, photo, face) for the 13 faces."""
    import insightface
    import matplotlib
    from skimage import data

    detector = create_detector("yunet")
    photos = [
        ("astronaut", data.astronaut()),
        ("hopper", _rgb(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")),
    ]
    t1 = _rgb(Path(os.path.dirname(insightface.__file__)) / "data" / "images" / "t1.jpg")
    found = [(name, photo, face) for name, photo in photos for face in detector.detect(photo)]
    found += [(f"t1-{face.index}", t1, face) for face in detector.detect(t1)]
    for file, names in PEOPLE.items():
        photo = _rgb(PEOPLE_DIR / file)
        found += [(name, photo, face) for name, face in zip(names, detector.detect(photo), strict=True)]
    return found


def _rgb(path) -> np.ndarray:
    return split_alpha(load_image(path))[0]


def at_size(photo: np.ndarray, face: DetectedFace, size: float, shift: float = 0.0):
    """The face's neighbourhood (1 face size around it) rescaled so the face is `size` px, and the
    face moved along. `shift` offsets the resampling grid (source pixels): another sampling of the face."""
    x0, y0, x1, y1 = face.box
    margin = face.size
    height, width = photo.shape[:2]
    cx0, cy0 = int(max(0, x0 - margin)), int(max(0, y0 - margin))
    cx1, cy1 = int(min(width, x1 + margin)), int(min(height, y1 + margin))
    scale = size / face.size
    matrix = np.array([[scale, 0, -(cx0 + shift) * scale], [0, scale, -(cy0 + shift) * scale]])
    out_size = (max(1, round((cx1 - cx0) * scale)), max(1, round((cy1 - cy0) * scale)))
    if scale < 1:
        # Area averaging first (as a camera would have recorded a smaller face), then the sub-pixel shift.
        region = cv2.resize(photo[cy0:cy1, cx0:cx1], out_size, interpolation=cv2.INTER_AREA)
        local = np.array([[1, 0, -shift * scale], [0, 1, -shift * scale]])
        small = cv2.warpAffine(
            region, local, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
    else:
        small = cv2.warpAffine(
            photo, matrix, out_size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
        )

    def move(points):
        return np.asarray(points, np.float64).reshape(-1, 2) @ matrix[:, :2].T + matrix[:, 2]

    box = move(np.reshape(face.box, (2, 2))).ravel()
    moved = DetectedFace(
        face.index, tuple(float(v) for v in box), move(face.landmarks).astype(np.float32), face.score
    )
    return np.ascontiguousarray(small), moved


def jpeg(rgb: np.ndarray, quality: int = 80) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def redacted(photo: np.ndarray, face: DetectedFace, method: str, strength: float = 1.0) -> np.ndarray:
    out = photo.copy()
    redact_face(out, align_face(photo, face.landmarks), method, strength)
    return out


def redaction_rows(faces, sizes, strengths=(1.0, 0.1), model=None) -> list[dict]:
    model = model or get_identity_model("arcface")
    rows = []
    for method, strength in itertools.product(REDACTORS, strengths):
        for size in sizes:
            scores = []
            for _, photo, face in faces:
                small, moved = at_size(photo, face, size)
                scores.append(
                    model.compare(
                        small, moved.landmarks, redacted(small, moved, method, strength), moved.landmarks
                    )
                )
            rows.append(
                {
                    "method": method,
                    "strength": strength,
                    "size": size,
                    "max": round(max(scores), 3),
                    "mean": round(float(np.mean(scores)), 3),
                }
            )
    return rows


def redetected(detector, rgb: np.ndarray, face: DetectedFace) -> DetectedFace:
    """The face as the detector finds it at this size (its landmarks are what the product aligns
    with; at 10-20 px they are a few pixels off), or the rescaled one when it is not found."""
    from faceanon.faces.leak_guard import same_face

    for found in detector.detect(rgb):
        if same_face(found.box, face.box):
            return found
    return face


def reliability_rows(faces, sizes, model=None) -> list[dict]:
    model = model or get_identity_model("arcface")
    detector = create_detector("yunet", threshold=0.3)
    rows = []
    for size in sizes:
        embeddings, self_pairs, blurred = [], [], []
        for _, photo, face in faces:
            small, moved = at_size(photo, face, size)
            moved = redetected(detector, small, moved)
            other, other_face = at_size(photo, face, size, shift=0.5)
            other_face = redetected(detector, other, other_face)
            embedding = model.embed(small, moved.landmarks)
            embeddings.append(embedding)
            self_pairs.append(model.similarity(embedding, model.embed(jpeg(other), other_face.landmarks)))
            blurred.append(
                model.compare(small, moved.landmarks, redacted(small, moved, "blur"), moved.landmarks)
            )
        same_photo_pairs, cross_photo, impostor = self_pairs, [], []
        for (a, ea), (b, eb) in itertools.combinations(zip(faces, embeddings, strict=True), 2):
            (cross_photo if a[0] == b[0] else impostor).append(model.similarity(ea, eb))
        rows.append(
            {
                "size": size,
                "self_min": round(min(same_photo_pairs), 3),
                "same_person_min": round(min(cross_photo), 3),
                "impostor_max": round(max(impostor), 3),
                "blurred_max": round(max(blurred), 3),
                "self_below_threshold": sum(s < model.threshold for s in same_photo_pairs),
                "impostor_above_threshold": sum(s >= model.threshold for s in impostor),
                "pairs": len(impostor),
            }
        )
    return rows


def reliable_from(rows: list[dict]) -> int | None:
    """The smallest size from which on no impostor or blurred face reaches the threshold."""
    threshold = get_identity_model("arcface").threshold
    ok = [row["impostor_max"] < threshold and row["blurred_max"] < threshold for row in rows]
    for i, row in enumerate(rows):
        if all(ok[i:]):
            return row["size"]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="64,96,128,192,256,384,512", help="face sizes for the redaction table"
    )
    parser.add_argument(
        "--small-sizes",
        default="8,12,16,20,24,28,32,40,48,56,64,80,96,112",
        help="face sizes for the reliability table",
    )
    parser.add_argument("--json", type=Path, default=None, help="write both tables here")
    args = parser.parse_args(argv)
    faces = labelled_faces()
    redaction = redaction_rows(faces, [int(s) for s in args.sizes.split(",")])
    reliability = reliability_rows(faces, [int(s) for s in args.small_sizes.split(",")])
    print(
        f"{len(faces)} faces. Redaction: highest ArcFace similarity to the original (threshold "
        f"{get_identity_model('arcface').threshold}; 'same person' at or above)"
    )
    for method, strength in itertools.product(REDACTORS, (1.0, 0.1)):
        picked = [r for r in redaction if r["method"] == method and r["strength"] == strength]
        cells = "  ".join(f"{r['size']}px {r['max']:+.2f}" for r in picked)
        print(
            f"  {method:8s} strength {strength:.1f}: highest {max(r['max'] for r in picked):+.2f}   {cells}"
        )
    print("Identity reliability by face size (ArcFace):")
    print("  size  self_min  same_person_min  impostor_max  blurred_max  impostor>=thr")
    for r in reliability:
        print(
            f"  {r['size']:4d}  {r['self_min']:8.2f}  {r['same_person_min']:15.2f}  {r['impostor_max']:12.2f}"
            f"  {r['blurred_max']:11.2f}  {r['impostor_above_threshold']:4d}/{r['pairs']}"
        )
    print(f"Verdicts are reliable from {reliable_from(reliability)} px on.")
    if args.json:
        args.json.write_text(json.dumps({"redaction": redaction, "reliability": reliability}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
