"""Helpers for testing the app for real: a server in a subprocess, and a headless system Chromium.

with running_app(env) as url: Client(url).predict(...)
with chromium() as browser: page = browser.new_page(); page.goto(url)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FACEANON_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(
    env: dict[str, str] | None = None,
    args: list[str] = (),
    timeout: float = 120,
    workdir: str | Path | None = None,
    unset: tuple[str, ...] = (),
):
    """Runs `python app.py` on a free 127.0.0.1 port; yields its URL; stops it afterwards.

    The server's working directory (Gradio's example cache) and temp root (`<workdir>/tmp`, see
    faceanon.webapp.uploads) are a fresh temporary folder unless `workdir` is given. Its console
    output is in `<workdir>/server.log`. Variables named in `unset` are removed from the server's
    environment.
    """
    with contextlib.ExitStack() as stack:
        workdir = Path(workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="faceanon-app-")))
        port = free_port()
        full_env = {
            **os.environ,
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "FACEANON_TEMP_DIR": str(workdir / "tmp"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            **(env or {}),
        }
        for name in unset:  # e.g. FACEANON_* of the caller's environment
            full_env.pop(name, None)
        log = open(workdir / "server.log", "w")  # noqa: SIM115  (closed by the exit stack)
        stack.callback(log.close)
        process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=workdir,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, process)
        url = AppURL(f"http://127.0.0.1:{port}/")
        url.process, url.workdir, url.log_path = process, workdir, workdir / "server.log"
        _wait_until_up(url, process, timeout, workdir / "server.log")
        yield url


class AppURL(str):
    """The running app's URL, with its `process`, `workdir` and `log_path` (e.g. to kill it)."""

    process: subprocess.Popen
    workdir: Path
    log_path: Path


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the app did not answer within {timeout} s:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def chromium(headless: bool = True):
    """Debian's Chromium driven by Playwright (never a downloaded browser), with a fresh profile."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="faceanon-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=headless,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


def crowd_photo(path: str | Path, rows: int = 10, columns: int = 13, tile: int = 96) -> Path:
    """A crowd test photo (rows x columns faces) tiled from real faces: the six of insightface's t1.jpg,
    skimage's astronaut and matplotlib's Grace Hopper (no crowd photo ships in any package)."""
    import insightface  # noqa: I001  (only for the location of its sample photo)
    import matplotlib
    import numpy as np
    from PIL import Image
    from skimage import data

    from faceanon.faces.detection import create_detector

    sources = [
        Path(os.path.dirname(insightface.__file__)) / "data" / "images" / "t1.jpg",
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    ]
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sources] + [data.astronaut()]
    detector = create_detector("yunet")
    faces = []
    for rgb in photos:
        for face in detector.detect(rgb):
            x0, y0, x1, y1 = face.box
            side = 1.8 * max(x1 - x0, y1 - y0)  # the face with some hair and background around it
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = (
                int(max(0, cx - side / 2)),
                int(max(0, cy - side / 2)),
                int(cx + side / 2),
                int(cy + side / 2),
            )
            faces.append(Image.fromarray(rgb).crop(box).resize((tile, tile), Image.LANCZOS))
    canvas = Image.new("RGB", (columns * tile, rows * tile), (235, 235, 235))
    for i in range(rows * columns):
        canvas.paste(faces[i % len(faces)], ((i % columns) * tile, (i // columns) * tile))
    canvas.save(path, quality=92)
    return Path(path)
