"""The repository's own promises: the Space front matter matches the weights card and the pins."""

from __future__ import annotations

import re
from pathlib import Path

from faceanon.weights import load_manifest

ROOT = Path(__file__).resolve().parent.parent


def front_matter() -> str:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must start with the Space front matter"
    return text.split("---\n")[1]


def test_space_preloads_exactly_the_files_of_the_weights_card():
    preload = re.findall(r"^  - (\S+) (\S+)$", front_matter(), flags=re.M)
    listed = {repo: set(files.split(",")) for repo, files in preload}
    expected = {entry["repo_id"]: set(entry["files"]) for entry in load_manifest().values()}
    assert listed == expected


def test_space_sdk_version_is_the_pinned_gradio():
    sdk = re.search(r"^sdk_version: (\S+)$", front_matter(), flags=re.M).group(1)
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    assert sdk == pinned


def test_requirements_pin_torch_and_one_opencv():
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", requirements, flags=re.M)
    lines = [line.split("#")[0].strip() for line in requirements.splitlines()]
    assert [line for line in lines if line.startswith("opencv")] == ["opencv-python-headless==5.0.0.93"]
