"""The app with no diffusion weights at all: it starts fast, redacts, and says why diffusion is off."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file  # noqa: I001
from PIL import Image

from faceanon.webapp.testing import CHROMIUM, REPO_ROOT, running_app

EXAMPLES = REPO_ROOT / "examples"
ARTIFACTS = REPO_ROOT / "test-artifacts"
WEIGHT_VARS = (
    "FACEANON_FACE_MODEL",
    "FACEANON_VAE",
    "FACEANON_IMAGE_ENCODER",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
)


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """(url, seconds to answer, workdir): an empty hub cache, offline, and a 1-megapixel upload limit."""
    empty_home = tmp_path_factory.mktemp("empty-hf-home")
    env = {"HF_HOME": str(empty_home), "HF_HUB_OFFLINE": "1", "FACEANON_MAX_MEGAPIXELS": "1"}
    began = time.monotonic()
    workdir = tmp_path_factory.mktemp("app")
    with running_app(env, unset=WEIGHT_VARS, workdir=workdir) as url:
        yield url, time.monotonic() - began, workdir


@pytest.fixture(scope="module")
def client(started):
    return Client(started[0], verbose=False)


def test_starts_quickly_without_weights(started):
    assert started[1] < 45, f"start-up took {started[1]:.1f} s"


def test_status_line_is_true_from_the_first_paint(started):
    """The page's first status line (in the config the browser renders first) already says that
    diffusion is unavailable: the look for local weights is done before the page is built."""
    import json
    import urllib.request

    with urllib.request.urlopen(started[0] + "config", timeout=30) as response:
        config = json.load(response)
    status = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "status")
    assert "Diffusion unavailable" in status["props"]["value"], status["props"]["value"]


def test_redaction_works_without_weights(client):
    out, summary, report, _ = client.predict(
        handle_file(EXAMPLES / "astronaut.jpg"), method="blur", api_name="/anonymize"
    )
    assert report["num_changed"] == 1
    assert Image.open(out).size == (512, 512)


def test_diffusion_says_why_it_is_unavailable(client, started):
    with pytest.raises(Exception) as error:
        client.predict(handle_file(EXAMPLES / "astronaut.jpg"), method="diffusion", api_name="/anonymize")
    message = str(error.value)
    assert "diffusion method is unavailable" in message and "blur, pixelate or solid" in message
    # a visitor is told what to do, not how the server is set up (that is in the log and status line)
    for operator_detail in ("LocalEntryNotFoundError", "FACEANON_", "faceanon download", "/tmp"):
        assert operator_detail not in message
    log = (Path(started[2]) / "server.log").read_text()
    assert "faceanon download" in log and "Traceback" not in log


def test_swap_says_why_it_is_unavailable(client):
    with pytest.raises(Exception, match="diffusion method is unavailable"):
        client.predict(
            handle_file(EXAMPLES / "astronaut.jpg"),
            handle_file(EXAMPLES / "grace_hopper.jpg"),
            api_name="/swap",
        )


def test_too_many_pixels_get_a_clear_error(client, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (1300, 1000), (120, 90, 60)).save(big)
    with pytest.raises(Exception, match=r"1300×1000 pixels .* at most 1 megapixels"):
        client.predict(handle_file(big), method="blur", api_name="/anonymize")


@pytest.mark.browser
@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
def test_page_tells_people_why_diffusion_is_off(started):
    from faceanon.webapp.testing import chromium

    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        page = browser.new_page()
        page.goto(started[0])
        status = page.locator("#status")
        status.get_by_text("Diffusion unavailable").wait_for(timeout=30_000)
        assert "faceanon download" in status.inner_text()
        page.set_input_files("#anon-input input[type=file]", str(EXAMPLES / "astronaut.jpg"))
        page.locator("#method label", has_text="diffusion").click()
        page.click("#anonymize-button")
        page.get_by_text("diffusion method is unavailable").first.wait_for(timeout=30_000)
        page.mouse.wheel(0, -5000)
        page.wait_for_timeout(1000)  # let the error toast finish fading in
        page.screenshot(path=str(ARTIFACTS / "app_no_weights.png"))


def test_evaluate_measures_the_baselines(client):
    identity, detection, attributes, table = client.predict(
        handle_file(EXAMPLES / "astronaut.jpg"),
        degrees="1.2",
        seeds=1,
        steps=1,
        baselines=True,
        api_name="/evaluate",
    )
    for plot in (identity, detection, attributes):
        assert Image.open(plot).size[0] > 200
    methods = {row[0] for row in table["data"]}
    assert methods == {"original", "blur", "pixelate", "solid"}  # no weights: baselines only
