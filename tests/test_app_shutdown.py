"""A server that is shut down (SIGTERM: docker stop, systemd, a Space restart) tells each client what
happened in words: jobs in flight finish or are stopped with a message, new work is refused with
one, and the server then exits 0 with its temp folder deleted. Real servers (python app.py, no
weights: video blur is the long job), called with gradio_client; the drain itself in-process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

from faceanon.media.video import probe_video
from faceanon.testing_video import make_test_clip
from faceanon.webapp.shutdown import REFUSED, STOPPED, TITLE, Jobs
from faceanon.webapp.testing import CHROMIUM, REPO_ROOT, chromium, running_app

UNSET = ("FACEANON_FACE_MODEL", "FACEANON_VAE", "FACEANON_IMAGE_ENCODER")


def _serve(tmp_path, grace: float):
    workdir = tmp_path / "app"
    workdir.mkdir()
    env = {
        "HF_HOME": str(tmp_path / "empty-hf-home"),
        "FACEANON_MAX_VIDEO_FRAMES": "1000",
        "FACEANON_SHUTDOWN_GRACE": str(grace),
    }
    return running_app(env, unset=UNSET, workdir=workdir)


def _started(job, timeout: float = 60) -> None:
    """Waits until the server reports progress for the job (it is in flight, not queued)."""
    deadline = time.monotonic() + timeout
    while job.status().code != Status.PROGRESS:
        assert time.monotonic() < deadline, f"the job did not start: {job.status()}"
        assert not job.done(), job.result()
        time.sleep(0.1)


def _server_folders(url) -> list:
    return sorted((url.workdir / "tmp" / "faceanon-webapp").glob("server-*"))


def test_sigterm_lets_a_job_in_flight_finish_and_refuses_new_work_in_words(tmp_path):
    clip = make_test_clip(tmp_path / "short.mp4", photo="group", size=(320, 224), seconds=1.0, fps=10)
    with _serve(tmp_path, grace=120) as url:
        client = Client(url, verbose=False)
        video = client.submit(handle_file(clip.path), method="blur", api_name="/anonymize_video")
        _started(video)
        [folder] = _server_folders(url)
        url.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the drain has begun
        with pytest.raises(AppError) as refused:
            client.predict(handle_file(REPO_ROOT / "examples" / "grace_hopper.jpg"), api_name="/detect")
        assert str(refused.value) == REFUSED
        result, summary, _report = video.result(timeout=120)  # the job in flight was finished
        path = result["video"] if isinstance(result, dict) else result
        assert probe_video(path).frame_count == clip.frame_count
        assert "blur" in summary.lower()
        assert url.process.wait(timeout=30) == 0
        assert not folder.exists()  # uploads and results deleted, as at Ctrl-C


def test_sigterm_stops_a_long_job_with_a_message_and_exits_cleanly(tmp_path):
    clip = make_test_clip(tmp_path / "long.mp4", photo="group", size=(640, 448), seconds=8.0, fps=20)
    with _serve(tmp_path, grace=0) as url:
        video = Client(url, verbose=False).submit(
            handle_file(clip.path), method="blur", api_name="/anonymize_video"
        )
        _started(video)
        [folder] = _server_folders(url)
        began = time.monotonic()
        url.process.send_signal(signal.SIGTERM)
        with pytest.raises(AppError) as stopped:  # not a text-less CancelledError
            video.result(timeout=60)
        assert str(stopped.value) == STOPPED
        assert url.process.wait(timeout=30) == 0  # no abort from a job thread still running
        assert time.monotonic() - began < 15
        assert not folder.exists()
        assert "Traceback" not in url.log_path.read_text()


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_page_says_in_its_message_box_that_the_server_stopped_its_request(tmp_path):
    clip = make_test_clip(tmp_path / "long.mp4", photo="group", size=(640, 448), seconds=8.0, fps=20)
    with _serve(tmp_path, grace=0) as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Video").click()
        page.set_input_files("#video-input input[type=file]", str(clip.path))  # starts finding people
        page.wait_for_timeout(5000)  # the scan (minutes here) is in flight: STOPPED, not REFUSED, says so
        url.process.send_signal(signal.SIGTERM)
        box = page.locator("#video-message")
        box.get_by_text("stopped your request before it finished").wait_for(timeout=30_000)
        assert "Send it again in a minute" in box.inner_text()
        assert "takes no new work" not in box.inner_text()
        assert page.get_by_text(TITLE).count() == 0  # one message, in the tab's box: no toast
        assert url.process.wait(timeout=30) == 0


def test_the_drain_finishes_short_jobs_stops_long_ones_and_refuses_new_ones():
    jobs = Jobs()

    @jobs.endpoint
    def short():
        time.sleep(0.3)
        return "done"

    @jobs.endpoint
    def long(stop_seen: threading.Event):
        while True:
            try:
                jobs.check()
            except gr.Error:
                stop_seen.set()
                raise
            time.sleep(0.02)

    results, stop_seen = [], threading.Event()
    threads = [
        threading.Thread(target=lambda: results.append(short())),
        threading.Thread(target=lambda: _swallow(lambda: long(stop_seen))),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    assert jobs.running == 2
    began = time.monotonic()
    assert jobs.drain(grace=1.0, stop_wait=3.0, quiet=0.2) == 0
    assert 1.0 <= time.monotonic() - began < 3.0
    assert results == ["done"] and stop_seen.is_set() and jobs.running == 0
    with pytest.raises(gr.Error) as refused:
        short()
    assert refused.value.message == REFUSED


def _swallow(run) -> None:
    try:
        run()
    except gr.Error:
        pass


def test_a_job_that_does_not_stop_still_leaves_no_files_behind(tmp_path):
    """A job stuck past the drain (a CPU diffusion step can outlast it): the server deletes its temp
    folder and exits 0 instead of letting Python's exit abort inside the job's native code."""
    script = f"""
import sys, threading, time
from faceanon.webapp import server
from faceanon.webapp.shutdown import JOBS
from faceanon.webapp.uploads import ServerTempDir
temp = ServerTempDir({str(tmp_path)!r})
print(temp.claim(), flush=True)
threading.Thread(target=JOBS.endpoint(lambda: time.sleep(600)), daemon=True).start()
time.sleep(0.2)
server._exit_now_if_jobs_still_run(temp)
sys.exit(3)  # not reached
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.parent == tmp_path and not folder.exists()
    assert "still running at exit" in done.stderr
