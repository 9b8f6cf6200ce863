"""The web app served for real (python app.py in a subprocess, tiny diffusion checkpoints via the
FACEANON_* variables), called with gradio_client and driven in Debian's headless Chromium."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanon.webapp.testing import CHROMIUM, REPO_ROOT, running_app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

EXAMPLES = REPO_ROOT / "examples"
ARTIFACTS = REPO_ROOT / "test-artifacts"
FAST = {"steps": 1}  # tiny checkpoints take seconds per step on a shared CPU


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from faceanon.testing import tiny_pipeline_env

    env = tiny_pipeline_env(tmp_path_factory.mktemp("tiny-weights"))
    with running_app(env, workdir=tmp_path_factory.mktemp("app")) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def _open(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _inside(box, shape, margin=0):
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask = np.zeros(shape[:2], bool)
    mask[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = True
    return mask


def test_named_endpoints_are_documented(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/anonymize", "/swap", "/detect"} <= set(api)
    params = {p["parameter_name"]: p for p in api["/anonymize"]["parameters"]}
    assert list(params)[:4] == ["image", "method", "degree", "seed"]
    assert params["degree"]["parameter_default"] == 1.25
    assert "degree: anonymization degree d" in api["/anonymize"]["description"]


def test_detect_numbers_the_faces(client):
    annotated, faces = client.predict(handle_file(EXAMPLES / "two_portraits.jpg"), api_name="/detect")
    assert [f["index"] for f in faces] == [0, 1]
    assert faces[0]["box"][0] < faces[1]["box"][0]  # left to right
    assert Image.open(annotated).size == Image.open(EXAMPLES / "two_portraits.jpg").size


def test_redaction_changes_faces_only(client):
    path = EXAMPLES / "grace_hopper.jpg"
    out, summary, report, seed = client.predict(handle_file(path), method="pixelate", api_name="/anonymize")
    before, after = _open(path), _open(out)
    assert after.shape == before.shape
    assert report["num_changed"] == 1 and report["faces"][0]["method"] == "pixelate"
    face = _inside(report["faces"][0]["face"]["box"], before.shape, margin=40)
    assert np.abs(after - before)[face].mean() > 5  # the face really changed...
    assert np.abs(after - before)[~face].max() <= 3  # ...and nothing far from it did
    assert "1 of 1 face changed" in summary and seed == 0


def test_output_carries_no_input_metadata(client, tmp_path):
    tagged = tmp_path / "tagged.jpg"
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # camera make
    exif[0x9003] = "2020:01:01 10:00:00"
    Image.open(EXAMPLES / "astronaut.jpg").save(tagged, exif=exif, quality=90)
    out, *_ = client.predict(handle_file(tagged), method="blur", api_name="/anonymize")
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert not image.getexif()
        assert "SecretCam" not in str(image.info)


def test_face_selection_leaves_other_faces_alone(client):
    path = EXAMPLES / "two_portraits.jpg"
    out, _, report, _ = client.predict(handle_file(path), method="solid", faces="1", api_name="/anonymize")
    assert [f["changed"] for f in report["faces"]] == [False, True]
    before, after = _open(path), _open(out)
    first = _inside(report["faces"][0]["face"]["box"], before.shape)
    assert np.abs(after - before)[first].max() <= 3


def test_diffusion_anonymize_on_tiny_checkpoints(client):
    path = EXAMPLES / "astronaut.jpg"
    out, summary, report, seed = client.predict(
        handle_file(path), method="diffusion", degree=1.25, seed=3, api_name="/anonymize", **FAST
    )
    assert seed == 3
    face = report["faces"][0]
    assert face["changed"] and face["method"] == "diffusion" and face["degree"] == 1.25
    before, after = _open(path), _open(out)
    assert after.shape == before.shape
    assert np.abs(after - before)[_inside(face["face"]["box"], before.shape)].mean() > 5


def test_swap_on_tiny_checkpoints(client):
    out, _, report, seed = client.predict(
        handle_file(EXAMPLES / "astronaut.jpg"),
        handle_file(EXAMPLES / "grace_hopper.jpg"),
        randomize_seed=True,
        api_name="/swap",
        **FAST,
    )
    assert report["num_changed"] == 1 and report["faces"][0]["degree"] == 0.0
    assert Image.open(out).size == Image.open(EXAMPLES / "grace_hopper.jpg").size
    assert 0 <= seed < 2**31


def test_non_image_upload_gets_a_clear_error(client, tmp_path):
    fake = tmp_path / "notes.txt"
    fake.write_text("this is not a photo")
    with pytest.raises(Exception, match="is not an image faceanon can read") as error:
        client.predict(handle_file(fake), method="blur", api_name="/anonymize")
    assert "/tmp" not in str(error.value)  # no server paths in messages


def test_redaction_does_not_wait_for_a_running_diffusion_job(client):
    """Diffusion holds the (one) GPU slot for its whole job; a blur request meanwhile runs on a CPU
    slot and is answered while the diffusion job is still going."""
    photo = handle_file(EXAMPLES / "astronaut.jpg")
    slow = client.submit(photo, method="diffusion", steps=8, api_name="/anonymize")  # ~5 s a step here
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _generating(slow):
        time.sleep(0.2)
    assert _generating(slow), f"the diffusion job never started: {slow.status()}"
    began = time.monotonic()
    _, _, report, _ = client.predict(photo, method="blur", api_name="/anonymize")
    blur_s = time.monotonic() - began
    assert report["faces"][0]["method"] == "blur"
    assert not slow.done(), f"the blur answer ({blur_s:.1f} s) came after the diffusion job ended"
    print(f"blur answered in {blur_s:.1f} s while diffusion ran")
    slow.result(timeout=600)  # the diffusion job still finishes


def _generating(job) -> bool:
    """True once the job reports denoising steps (it holds the diffusion model then)."""
    progress = job.status().progress_data or []
    return any("step" in (unit.desc or "").lower() for unit in progress)


def test_bad_settings_get_clear_errors(client):
    path = handle_file(EXAMPLES / "two_portraits.jpg")
    with pytest.raises(Exception, match="there is no face 5"):
        client.predict(path, method="blur", faces="5", api_name="/anonymize")
    with pytest.raises(Exception, match="Faces must be 'all' or face numbers"):
        client.predict(path, method="blur", faces="left one", api_name="/anonymize")


# -- a real browser --------------------------------------------------------------------------------
browser_only = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None,
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def page(server):
    from faceanon.webapp.testing import chromium

    with chromium() as browser:
        page = browser.new_page()
        page.goto(server)
        page.wait_for_selector("#anonymize-button")
        yield page


def _run_anonymize(page, method: str, timeout_s: float = 120, server_log=None) -> np.ndarray:
    previous = (
        page.locator("#anon-output img").get_attribute("src")
        if page.locator("#anon-output img").count()
        else None
    )
    page.locator("#method label", has_text=method).click()
    page.click("#anonymize-button")
    from playwright.sync_api import TimeoutError as PageTimeout

    try:
        page.wait_for_function(  # a new result, or a message saying why there is none
            "prev => { const img = document.querySelector('#anon-output img');"
            " const box = document.querySelector('#anon-message');"
            " if (box && box.offsetParent !== null && box.innerText.trim()) return true;"
            " return img && img.complete && img.naturalWidth > 0 && img.getAttribute('src') !== prev; }",
            arg=previous,
            timeout=timeout_s * 1000,
        )
    except PageTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"app_anonymize_{method}_timeout.png"), full_page=True)
        log = server_log.read_text()[-4000:] if server_log else ""
        pytest.fail(f"no {method} result in {timeout_s} s; page: {page.inner_text('body')[-1500:]}\n{log}")
    box = page.locator("#anon-message")
    assert not (box.is_visible() and box.inner_text().strip()), box.inner_text()
    src = page.locator("#anon-output img").get_attribute("src")
    data = page.request.get(src).body()
    from io import BytesIO

    return np.asarray(Image.open(BytesIO(data)).convert("RGB")).astype(int)


@pytest.mark.browser
@browser_only
def test_browser_anonymizes_an_uploaded_photo(page, server):
    ARTIFACTS.mkdir(exist_ok=True)
    photo = EXAMPLES / "two_portraits.jpg"
    page.set_input_files("#anon-input input[type=file]", str(photo))
    page.locator("#selection-note").get_by_text("2 of 2 faces selected").wait_for(timeout=60_000)
    page.get_by_text("Faces by number").click()  # closed by default: the picture is the picker
    page.wait_for_selector("#choose-faces input[type=checkbox]", timeout=30_000)
    assert page.locator("#choose-faces input[type=checkbox]:checked").count() == 2

    blurred = _run_anonymize(page, "blur")
    assert blurred.shape == _open(photo).shape
    assert "2 of 2 faces changed" in page.locator("#summary").inner_text()
    page.screenshot(path=str(ARTIFACTS / "app_anonymize_blur.png"), full_page=True)

    page.get_by_text("Advanced settings (diffusion)").first.click()
    page.get_by_label("number input for Steps").first.fill("1")
    page.get_by_label("number input for Steps").first.press("Enter")
    # The slider's range input follows the component's value: 1 there means the click sends 1 step
    # (not the default 25, which takes minutes here).
    page.wait_for_function(
        "() => document.querySelector('input[aria-label=\"range slider for Steps\"]').value === '1'",
        timeout=30_000,
    )
    # two faces on a shared CPU
    generated = _run_anonymize(page, "diffusion", timeout_s=400, server_log=server.log_path)
    assert generated.shape == blurred.shape and np.abs(generated - blurred).mean() > 1
    assert "diffusion" in page.locator("#summary").inner_text()
    page.screenshot(path=str(ARTIFACTS / "app_anonymize_diffusion.png"), full_page=True)


@pytest.mark.browser
@browser_only
def test_browser_redaction_example_runs_from_the_gallery(page):
    page.reload()
    page.wait_for_selector("#anonymize-button")
    page.locator("#redaction-examples").get_by_text("pixelate").first.click()
    page.wait_for_selector("#anon-output img", timeout=60_000)
    assert "1 of 1 face changed" in page.locator("#summary").inner_text(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "app_example_pixelate.png"), full_page=True)
