"""The page as a new visitor meets it, on a server without diffusion weights, in Debian's Chromium:
a working default method, the result in view, one error message, crowds, and the Evaluate tab.
Screenshots go to test-artifacts/ (look at them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceanon.webapp.testing import CHROMIUM, REPO_ROOT, crowd_photo, running_app

EXAMPLES = REPO_ROOT / "examples"
ARTIFACTS = REPO_ROOT / "test-artifacts"
UNSET = ("FACEANON_FACE_MODEL", "FACEANON_VAE", "FACEANON_IMAGE_ENCODER")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from faceanon.webapp.testing import chromium

    ARTIFACTS.mkdir(exist_ok=True)
    env = {"HF_HOME": str(tmp_path_factory.mktemp("hf")), "HF_HUB_OFFLINE": "1"}
    with running_app(env, unset=UNSET, workdir=tmp_path_factory.mktemp("app")) as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#anonymize-button")
        yield page


def _in_view(page, selector: str) -> bool:
    return page.evaluate(
        """s => { const r = document.querySelector(s).getBoundingClientRect();
        return r.top >= 0 && r.top < window.innerHeight && r.height > 0; }""",
        selector,
    )


def _page_height(page) -> int:
    return page.evaluate("document.documentElement.scrollHeight")


def _upload(page, path):
    page.set_input_files("#anon-input input[type=file]", str(path))
    page.wait_for_selector("#detected img", timeout=90_000)


def _anonymize(page):
    """Presses Anonymize and waits for a new result (not the one already on the page)."""
    output = page.locator("#anon-output img")
    previous = output.get_attribute("src") if output.count() else None
    page.click("#anonymize-button")
    page.wait_for_function(
        "prev => { const img = document.querySelector('#anon-output img');"
        " return img && img.complete && img.naturalWidth > 0 && img.getAttribute('src') !== prev; }",
        arg=previous,
        timeout=120_000,
    )
    page.locator("#summary").get_by_text("changed").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1200)  # the smooth scroll


def test_default_method_works_and_the_result_comes_into_view(page):
    assert page.locator("#method input[value=blur]").is_checked()  # no weights here: not diffusion
    _upload(page, EXAMPLES / "two_portraits.jpg")
    page.mouse.wheel(0, -5000)
    _anonymize(page)
    assert "2 of 2 faces changed" in page.locator("#summary").inner_text()
    assert _in_view(page, "#anon-output")
    assert page.locator("#compare img").count() >= 1  # before / after open by default
    assert page.get_by_text("Error", exact=True).count() == 0
    page.screenshot(path=str(ARTIFACTS / "page_result_in_view.png"))


def test_a_truncated_upload_gets_one_message_and_no_badges(page, tmp_path):
    whole = (EXAMPLES / "grace_hopper.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    page.set_input_files("#anon-input input[type=file]", str(tmp_path / "cut.jpg"))
    box = page.locator("#anon-message")
    box.get_by_text("is truncated").wait_for(timeout=60_000)
    page.click("#anonymize-button")
    page.wait_for_timeout(3000)
    text = box.inner_text()
    assert "“cut.jpg”" in text and "/tmp" not in text
    assert page.get_by_text("is truncated").count() == 1  # one message, no toast copy
    assert page.get_by_text("Error", exact=True).count() == 0  # no red badges on other boxes
    page.screenshot(path=str(ARTIFACTS / "page_truncated_upload.png"), full_page=True)


def test_crowds_select_by_clicking_and_stay_compact(page, tmp_path):
    crowd = crowd_photo(tmp_path / "crowd.jpg")  # 130 faces
    _upload(page, crowd)
    note = page.locator("#selection-note")
    note.get_by_text("130 of 130 faces selected").wait_for(timeout=60_000)
    page.click("#select-none")
    note.get_by_text("0 of 130 faces selected").wait_for(timeout=30_000)
    page.click("#select-all")
    note.get_by_text("130 of 130 faces selected").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "page_crowd_picker.png"), full_page=True)
    _anonymize(page)
    assert "130 of 130 faces changed" in page.locator("#summary").inner_text()
    assert page.locator("#face-table").is_visible()
    height = _page_height(page)
    print(f"page height with a 130-face result: {height} px")
    assert height < 4000, height
    page.screenshot(path=str(ARTIFACTS / "page_crowd_result.png"), full_page=True)


def test_evaluate_tab_without_weights(page):
    page.get_by_role("tab", name="Evaluate").click()
    estimate = page.locator("#eval-estimate")
    estimate.get_by_text("only the blur, pixelate and solid baselines").wait_for(timeout=30_000)
    page.set_input_files("#eval-input input[type=file]", str(EXAMPLES / "astronaut.jpg"))
    page.click("#evaluate-button")
    page.wait_for_selector("#eval-plot-0 img", timeout=180_000)
    page.wait_for_selector("#eval-table table", timeout=30_000)
    headers = page.locator("#eval-table thead").inner_text()
    assert "Identity similarity" in headers and "identity_similarity" not in headers
    width = page.locator("#eval-plot-0 img").bounding_box()["width"]
    assert width > 500, width  # readable on the page
    page.screenshot(path=str(ARTIFACTS / "page_evaluate.png"), full_page=True)


def test_clicking_a_face_toggles_it_and_only_that_face_changes(page, tmp_path):
    page.get_by_role("tab", name="Anonymize").click()
    _upload(page, crowd_photo(tmp_path / "crowd.jpg", rows=9))  # 117: not the last test's 130
    note = page.locator("#selection-note")
    note.get_by_text("117 of 117 faces selected").wait_for(timeout=60_000)
    page.click("#select-none")
    note.get_by_text("0 of 117 faces selected").wait_for(timeout=30_000)
    page.mouse.click(*_face_centre(page, row=5, column=6))
    note.get_by_text("1 of 117 faces selected").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "page_crowd_one_clicked.png"), full_page=True)
    _anonymize(page)
    page.locator("#summary").get_by_text("1 of 117 faces changed").wait_for(timeout=60_000)
    page.mouse.click(*_face_centre(page, row=5, column=6))  # a second click leaves the face again
    note.get_by_text("0 of 117 faces selected").wait_for(timeout=30_000)


def _face_centre(page, row: int, column: int) -> tuple[float, float]:
    """Where a face of the 9 x 13 crowd is on the screen now (results scroll the page)."""
    picture = page.locator("#detected img")
    picture.scroll_into_view_if_needed()
    box = picture.bounding_box()
    return box["x"] + box["width"] * (column + 0.5) / 13, box["y"] + box["height"] * (row + 0.5) / 9
