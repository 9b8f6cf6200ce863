"""The page as a new visitor meets it, on a server without diffusion weights, in Debian's Chromium:
a working default method, the result in view, one error message, crowds, the Evaluate tab, and
the Video tab (people found, keep photos, the result playing and downloading, a non-video refused).
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


# -- the Video tab ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Five frames of the six-person group photo, small: quick to scan and to render."""
    from faceanon.testing_video import make_test_clip

    path = tmp_path_factory.mktemp("video") / "group.mp4"
    return make_test_clip(path, photo="group", motion="still", size=(320, 224), seconds=0.5, fps=10)


def _video_tab(page):
    page.get_by_role("tab", name="Video").click()
    page.wait_for_selector("#video-input", timeout=30_000)


def _clear_video(page):
    clear = page.locator("#video-input button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.wait_for_selector("#video-input input[type=file]", state="attached", timeout=30_000)


def test_video_tab_finds_the_people_and_plays_the_blurred_video(page, clip, tmp_path):
    from faceanon.anonymizer import FaceAnonymizer
    from faceanon.media.video import probe_video
    from faceanon.media.video_anonymize import scan_video

    expected = len(scan_video(FaceAnonymizer(), clip.path).tracks)  # the server's default detector too
    assert expected >= 5
    _video_tab(page)
    _clear_video(page)
    page.set_input_files("#video-input input[type=file]", str(clip.path))
    page.wait_for_function(
        "n => document.querySelectorAll('#video-people img').length === n", arg=expected, timeout=60_000
    )
    captions = page.locator("#video-people .caption-label").all_inner_texts()
    assert captions == [f"Person {i}" for i in range(expected)]
    assert page.locator("#video-choose input[type=checkbox]").count() == expected
    page.locator("#video-method input[value=blur]").check()
    page.click("#video-button")
    player = page.locator("#video-output video")
    player.wait_for(timeout=60_000)
    assert player.get_attribute("src").endswith("/anonymized.mp4")
    playback = page.evaluate(
        """async () => {
          const v = document.querySelector('#video-output video');
          for (let i = 0; i < 100 && v.readyState < 2; i++) await new Promise(r => setTimeout(r, 100));
          v.muted = true;
          await v.play();
          await new Promise(r => setTimeout(r, 300));
          return {ready: v.readyState, width: v.videoWidth, duration: v.duration, time: v.currentTime,
                  error: v.error && v.error.code};
        }"""
    )
    assert playback["error"] is None and playback["ready"] >= 2, playback  # Chromium decodes it
    assert playback["width"] == clip.width and playback["time"] > 0, playback  # and it plays
    assert abs(playback["duration"] - 0.5) < 0.15, playback
    assert f"{expected} anonymized (blur)" in page.locator("#video-summary").inner_text()
    with page.expect_download() as download:
        page.click("#video-output button[aria-label=Download]")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "anonymized.mp4" and probe_video(saved).frame_count == clip.frame_count
    assert page.get_by_text("Error", exact=True).count() == 0
    page.screenshot(path=str(ARTIFACTS / "page_video_result.png"), full_page=True)


def test_video_tab_not_a_video_gets_one_message(page, tmp_path):
    _video_tab(page)
    _clear_video(page)
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video")
    page.set_input_files("#video-input input[type=file]", str(fake))
    box = page.locator("#video-message")
    box.get_by_text("is not a video faceanon can read").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # a toast, had there been one, would be up by now
    text = box.inner_text()
    assert "'holiday.mp4'" in text and "Use an MP4, MOV, MKV, WebM or AVI file" in text
    assert "/tmp" not in text and str(tmp_path) not in text
    assert page.get_by_text("not a video faceanon can read").count() == 1  # one message, no toast copy
    assert page.get_by_text("Video not playable").count() == 0  # the input player's toast is stopped
    assert page.get_by_text("Error", exact=True).count() == 0  # no toast, no red badges
    assert page.locator("#video-people img").count() == 0  # the last video's people are gone
    page.screenshot(path=str(ARTIFACTS / "page_video_not_a_video.png"), full_page=True)


def test_video_tab_keep_photo_marks_the_person_and_leaves_them(page, tmp_path):
    import cv2
    import numpy as np
    from PIL import Image

    from faceanon.testing_video import make_test_clip, photo_rgb

    two = np.concatenate(
        [cv2.resize(photo_rgb("astronaut"), (300, 300)), cv2.resize(photo_rgb("grace_hopper"), (225, 300))],
        axis=1,
    )
    clip = make_test_clip(
        tmp_path / "two.mp4", photo=two, motion="still", size=(350, 200), seconds=0.5, fps=10
    )
    Image.fromarray(photo_rgb("grace_hopper")).save(tmp_path / "grace.jpg")  # her portrait, not a frame
    _video_tab(page)
    _clear_video(page)
    page.set_input_files("#video-input input[type=file]", str(clip.path))
    page.wait_for_function(
        "() => document.querySelectorAll('#video-people img').length === 2", timeout=60_000
    )
    page.set_input_files("#video-keep input[type=file]", str(tmp_path / "grace.jpg"))
    people = page.locator("#video-people")
    people.get_by_text(": kept (grace)").wait_for(timeout=60_000)  # marked again, without a new scan
    assert page.locator("#video-choose").get_by_text(": kept (grace)").count() == 1
    page.locator("#video-method input[value=solid]").check()
    page.click("#video-button")
    summary = page.locator("#video-summary")
    summary.get_by_text("Kept (keep-list)").wait_for(timeout=60_000)
    assert "kept (grace)" in summary.inner_text() and "solid" in summary.inner_text()
    assert page.locator("#video-message").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "page_video_keep.png"), full_page=True)
