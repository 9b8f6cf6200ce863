"""Keep-list: people whose faces are left untouched while everyone else is anonymized.

    keep = load_keep_list(["me.jpg", "folder_of_people/"], detector)   # validated before any work
    matches = match_faces(rgb, faces, keep)       # one KeepMatch (or None) per face of a frame
    fa.anonymize(photo, keep=keep)                # or keep=["me.jpg"]: the anonymizer loads it

A face is kept when the identity model's similarity to a kept person is at or above the model's
`keep_threshold` (ArcFace 0.40, SFace 0.50): stricter than its "same person" threshold (0.30), which
errs towards "same person" to catch leaks; here a false match would leave a stranger's face visible,
so the bar sits above every different-people pair measured (ArcFace <= 0.33, six people of one photo)
and well below the same person in two photos (>= 0.66). Faces below MIN_VERIFIABLE_FACE cannot be
recognized reliably and are never kept. Video code calls `match_faces` per frame (or per track).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceanon.errors import ImageInputError
from faceanon.results import DetectedFace

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}


@dataclass(frozen=True)
class KeepPerson:
    """One person to keep: a name for reports (the photo's file name stem) and the face embedding."""

    name: str
    embedding: np.ndarray
    note: str = ""  # e.g. "3 faces in the photo: the largest was used"


@dataclass(frozen=True)
class KeepMatch:
    """The kept person a face matched, and how closely."""

    name: str
    similarity: float

    @property
    def message(self) -> str:
        return f"kept: matches {self.name} (similarity {self.similarity:.2f})"


@dataclass(frozen=True)
class KeepList:
    """The loaded keep-list: people plus the identity model that embedded them."""

    people: tuple[KeepPerson, ...]
    model: object  # faceanon.trust.identity.IdentityModel

    @property
    def threshold(self) -> float:
        return self.model.keep_threshold

    @property
    def notes(self) -> list[str]:
        return [f"{person.name}: {person.note}" for person in self.people if person.note]

    def __len__(self) -> int:
        return len(self.people)


def load_keep_list(items, detector, model=None) -> KeepList:
    """Read every keep photo (paths, folders of photos, bytes, PIL images or RGB arrays) and embed
    its face; any problem raises ImageInputError before anything is anonymized."""
    if isinstance(items, KeepList):
        return items
    from faceanon.trust.identity import get_identity_model

    model = model or get_identity_model()
    sources = list(_expand(items))
    if not sources:
        raise ImageInputError("The keep-list is empty: give at least one photo of a person to keep.")
    return KeepList(tuple(_person(name, source, detector, model) for name, source in sources), model)


def _expand(items) -> Iterable[tuple[str, object]]:
    if (
        isinstance(items, (str, Path, bytes))
        or not isinstance(items, Iterable)
        or isinstance(items, np.ndarray)
    ):
        items = [items]
    for number, item in enumerate(items):
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            photos = sorted(
                p for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
            )
            if not photos:
                raise ImageInputError(
                    f"The keep folder {Path(item).name!r} has no photos (.jpg, .png, .webp...). "
                    "Put one photo per person to keep in it."
                )
            yield from ((photo.stem, photo) for photo in photos)
        elif isinstance(item, (str, Path)):
            yield Path(item).stem, item
        else:
            yield f"keep photo {number + 1}", item


def _person(name: str, source, detector, model) -> KeepPerson:
    from faceanon.media.photo import load_image, split_alpha

    try:
        rgb, _ = split_alpha(load_image(source))
    except ImageInputError as error:  # name the photo, not where it lies (a server's upload folder)
        text = (
            str(error).replace(str(source), Path(source).name)
            if isinstance(source, (str, Path))
            else str(error)
        )
        raise ImageInputError(f"Keep photo: {text}") from None
    faces = detector.detect(rgb)
    if not faces:
        raise ImageInputError(
            f"No face was found in the keep photo {name!r}. Use a photo where the person's "
            "face is clearly visible."
        )
    face = max(faces, key=lambda f: f.size)
    note = f"{len(faces)} faces in the photo: the largest was used" if len(faces) > 1 else ""
    return KeepPerson(name, model.embed(rgb, face.landmarks), note)


def match_faces(
    rgb: np.ndarray, faces: Sequence[DetectedFace], keep: KeepList | None
) -> list[KeepMatch | None]:
    """For each face of one frame: the kept person it matches best at or above the keep threshold,
    or None (not a kept person, too small to tell, or an empty keep-list)."""
    if not keep or not faces:
        return [None] * len(faces)
    from faceanon.trust.identity import MIN_VERIFIABLE_FACE

    people = np.stack([person.embedding for person in keep.people])
    matches: list[KeepMatch | None] = []
    for face in faces:
        if face.size < MIN_VERIFIABLE_FACE:
            matches.append(None)
            continue
        similarities = people @ keep.model.embed(rgb, face.landmarks)
        best = int(np.argmax(similarities))
        similarity = float(similarities[best])
        matches.append(
            KeepMatch(keep.people[best].name, round(similarity, 4)) if similarity >= keep.threshold else None
        )
    return matches


__all__ = ["KeepList", "KeepMatch", "KeepPerson", "load_keep_list", "match_faces"]
