"""Shared fixtures: real photos that ship inside installed packages (no network, nothing outside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    """NASA portrait of Eileen Collins (public domain), 512x512, one face."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def grace_hopper_path() -> Path:
    """US Navy portrait of Grace Hopper (public domain), 512x600 JPEG, one face."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="session")
def grace_hopper_rgb(grace_hopper_path) -> np.ndarray:
    return np.asarray(Image.open(grace_hopper_path).convert("RGB"))


@pytest.fixture(scope="session")
def group_photo_path() -> Path:
    """insightface's t1.jpg: a 1280x886 group photo with 6 faces."""
    import insightface

    return Path(os.path.dirname(insightface.__file__)) / "data" / "images" / "t1.jpg"


@pytest.fixture(scope="session")
def group_photo_rgb(group_photo_path) -> np.ndarray:
    return np.asarray(Image.open(group_photo_path).convert("RGB"))


class IdentityPipeline:
    """Stands in for FaceAnonPipeline: returns the conditioning crops unchanged, and records calls.

    With it, anonymize() is exactly align -> paste back, so the round trip can be measured."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, source_image, conditioning_image, **kwargs):
        from types import SimpleNamespace

        self.calls.append(dict(kwargs, source_image=source_image, conditioning_image=conditioning_image))
        steps = kwargs.get("num_inference_steps", 1)
        callback = kwargs.get("callback_on_step_end")
        for step in range(steps if callback else 0):
            callback(self, step, 0, {})
        return SimpleNamespace(images=[image.copy() for image in conditioning_image])


@pytest.fixture
def identity_pipeline() -> IdentityPipeline:
    return IdentityPipeline()
