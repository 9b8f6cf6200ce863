"""What happens to an uploaded photo, tested on a real server (no weights needed): the upload is
re-encoded without its metadata on arrival, a killed server's files go at the next start, SIGTERM
cleans up, and refused uploads are explained without server paths."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from faceanon.webapp.testing import REPO_ROOT, running_app

EXAMPLES = REPO_ROOT / "examples"
NO_WEIGHTS = {"HF_HUB_OFFLINE": "1", "FACEANON_MAX_MEGAPIXELS": "2"}
UNSET = ("FACEANON_FACE_MODEL", "FACEANON_VAE", "FACEANON_IMAGE_ENCODER")


def _tagged_photo(folder: Path) -> tuple[Path, str]:
    """A real photo with a camera make and GPS position in its EXIF; returns (path, marker)."""
    marker = f"SecretCam-{uuid.uuid4().hex[:8]}"
    exif = Image.Exif()
    exif[0x010F] = marker  # camera make
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 7.0)})
    path = folder / "holiday.jpg"
    Image.open(EXAMPLES / "grace_hopper.jpg").save(path, exif=exif, quality=92)
    assert marker.encode() in path.read_bytes()
    return path, marker


def _files_with(folder: Path, marker: str) -> list[Path]:
    """Files under `folder` that still carry the marker or any GPS block."""
    found = []
    for path in folder.rglob("*"):
        if not path.is_file() or path.name == "server.log":
            continue
        data = path.read_bytes()
        if marker.encode() in data:
            found.append(path)
            continue
        try:
            with Image.open(path) as image:
                if image.getexif().get_ifd(0x8825):
                    found.append(path)
        except Exception:
            pass
    return found


def _server_folders(workdir: Path) -> list[Path]:
    return sorted((workdir / "tmp" / "faceanon-webapp").glob("server-*"))


def test_uploads_are_clean_on_arrival_and_a_killed_servers_files_go_at_restart(tmp_path):
    photo, marker = _tagged_photo(tmp_path)
    workdir = tmp_path / "app"
    workdir.mkdir()
    with running_app(NO_WEIGHTS, unset=UNSET, workdir=workdir) as url:
        Client(url, verbose=False).predict(handle_file(photo), method="blur", api_name="/anonymize")
        stored = [p for p in workdir.rglob("*") if p.is_file() and p.name != "server.log"]
        assert any(p.name == "holiday.jpg" for p in stored)  # the upload is kept (until retention ends)...
        assert _files_with(workdir, marker) == []  # ...but without its EXIF / GPS, already now
        [first] = _server_folders(workdir)
        assert any(first.rglob("anonymized.png"))  # the result is in the server's own folder too
        url.process.send_signal(signal.SIGKILL)  # no clean-up possible
        url.process.wait(timeout=10)
        assert any(first.rglob("holiday.jpg"))  # what a crash leaves behind...
    with running_app(NO_WEIGHTS, unset=UNSET, workdir=workdir):
        assert not first.exists()  # ...goes when the next server starts
        assert len(_server_folders(workdir)) == 1


def test_sigterm_deletes_the_servers_files(tmp_path):
    photo, _ = _tagged_photo(tmp_path)
    with running_app(NO_WEIGHTS, unset=UNSET, workdir=tmp_path) as url:
        Client(url, verbose=False).predict(handle_file(photo), method="solid", api_name="/anonymize")
        [folder] = _server_folders(tmp_path)
        assert any(folder.rglob("holiday.jpg"))
        url.process.send_signal(signal.SIGTERM)
        assert url.process.wait(timeout=30) is not None
        assert not folder.exists()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_app(NO_WEIGHTS, unset=UNSET, workdir=tmp_path_factory.mktemp("app")) as url:
        yield Client(url, verbose=False), url


def _refusal(client, path: Path) -> str:
    with pytest.raises(Exception) as error:
        client[0].predict(handle_file(path), method="blur", api_name="/anonymize")
    message = str(error.value)
    assert "/tmp" not in message and str(client[1].workdir) not in message, message  # no server paths
    return message


def test_truncated_jpeg_is_explained(client, tmp_path):
    whole = (EXAMPLES / "grace_hopper.jpg").read_bytes()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(whole[: len(whole) // 3])
    message = _refusal(client, truncated)
    assert "“cut.jpg” is truncated" in message and "get the complete file again" in message


def test_tiny_and_too_wide_images_are_explained(client, tmp_path):
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "dot.png")
    Image.new("RGB", (20_001, 8), (10, 10, 10)).save(tmp_path / "strip.png")
    assert "“dot.png”" in _refusal(client, tmp_path / "dot.png")
    assert "“strip.png”" in _refusal(client, tmp_path / "strip.png")


def test_too_many_pixels_is_not_called_not_an_image(client, tmp_path):
    Image.new("1", (15_000, 15_000)).save(tmp_path / "huge.png")  # 225 megapixels, a tiny file
    message = _refusal(client, tmp_path / "huge.png")
    assert "not an image" not in message and "megapixels" in message


def test_port_in_use_is_one_line_not_a_traceback(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FACEANON_TEMP_DIR": str(tmp_path)}
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / "app.py"), "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"use --port {port + 1}" in output and "Traceback" not in output
    assert time.monotonic() - began < 60  # before any model loads
