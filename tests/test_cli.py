"""The `faceanon` command line on real photos: folders, reports, failures, no overwrites."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from faceanon.cli import main


@pytest.fixture
def photo_folder(tmp_path, grace_hopper_path, group_photo_path):
    folder = tmp_path / "in"
    (folder / "team").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)  # GPS latitude
    Image.open(grace_hopper_path).save(folder / "grace.jpg", exif=exif.tobytes())
    shutil.copy(group_photo_path, folder / "team" / "group.jpg")
    (folder / "team" / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not a photo, not an input")
    return folder


def test_folder_is_processed_with_a_report_and_a_clear_failure(photo_folder, tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = main(["anonymize", str(photo_folder), "-o", str(out), "--method", "pixelate", "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png: error:" in captured.out and "not an image faceanon can read" in captured.out
    assert "1 file(s) could not be processed" in captured.err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "grace.jpg", "team/group.jpg"]
    data = json.loads(report.read_text())
    assert (data["done"], data["error"], data["faces_found"], data["faces_changed"]) == (2, 1, 7, 7)
    group = next(f for f in data["files"] if f["input"].endswith("group.jpg"))
    assert group["num_faces"] == 6 and len(group["faces"][0]["face"]["landmarks"]) == 5
    written = Image.open(out / "grace.jpg")
    assert not written.getexif() and b"PhoneMaker" not in (out / "grace.jpg").read_bytes()


def test_existing_outputs_are_skipped_unless_overwrite(photo_folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["anonymize", str(photo_folder / "grace.jpg"), "-o", str(out), "--method", "blur", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["done"] == 1 and first["files"][0]["output"] == str(out / "grace.jpg")
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 1
    assert main([*args, "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 1


def test_an_input_is_never_overwritten(photo_folder, capsys):
    original = (photo_folder / "grace.jpg").read_bytes()
    code = main(["anonymize", str(photo_folder / "grace.jpg"), "-o", str(photo_folder / "grace.jpg"),
                 "--method", "blur", "--overwrite"])
    assert code == 1 and "would overwrite an input" in capsys.readouterr().out
    assert (photo_folder / "grace.jpg").read_bytes() == original


def test_single_file_to_a_named_output_with_chosen_faces(group_photo_path, tmp_path, capsys):
    out = tmp_path / "result.png"
    code = main(["anonymize", str(group_photo_path), "-o", str(out), "--method", "solid", "--faces", "0,5", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and out.is_file()
    assert [f["changed"] for f in data["files"][0]["faces"]] == [True, False, False, False, False, True]
    before, after = np.asarray(Image.open(group_photo_path)), np.asarray(Image.open(out))
    assert after.shape == before.shape and (after != before).any()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["anonymize", "x.jpg", "-o", "out", "--faces", "one"])
    assert exit_info.value.code == 2 and "face numbers" in capsys.readouterr().err
    assert main([]) == 2


def test_download_without_weights_says_how_to_get_them(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FACEANON_FACE_MODEL", str(tmp_path / "missing"))
    assert main(["download", "--offline"]) == 1
    assert "FACEANON_FACE_MODEL" in capsys.readouterr().err


def test_download_finds_local_weights_and_prints_their_hashes(monkeypatch, tmp_path, capsys):
    from faceanon.testing import tiny_pipeline_env
    from faceanon.weights import sha256_of

    for name, value in tiny_pipeline_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert main(["download", "--offline", "--print-hashes"]) == 0
    out = capsys.readouterr().out
    vae_file = tmp_path / "stable-diffusion-2-1" / "vae" / "diffusion_pytorch_model.safetensors"
    assert f"sha256={sha256_of(vae_file)}" in out and "verified" in out


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "faceanon.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("anonymize", "swap", "download", "serve"):
        assert command in done.stdout


class _DonorPipeline:
    """Stands in for the diffusion model: every face becomes astronaut's (a real, different face)."""

    def __call__(self, source_image, conditioning_image, **kwargs):
        from types import SimpleNamespace

        from skimage import data

        from faceanon.faces import align_face
        from faceanon.faces.detection import create_detector

        rgb = data.astronaut()
        crop = align_face(rgb, create_detector("yunet").detect(rgb)[0].landmarks).crop
        return SimpleNamespace(images=[Image.fromarray(crop) for _ in conditioning_image])


def test_outputs_carry_the_provenance_marks_and_no_input_metadata(photo_folder, tmp_path, monkeypatch, capsys):
    from faceanon.anonymizer import FaceAnonymizer
    from faceanon.trust.watermark import PNG_TEXT, PNG_TEXT_REDACTED, read_watermark

    monkeypatch.setattr(FaceAnonymizer, "_load_pipeline", lambda self: _DonorPipeline())
    grace = photo_folder / "grace.jpg"
    outputs = {}
    for name, extra in (("gen.png", ["--method", "diffusion"]), ("gen.jpg", ["--method", "diffusion"]),
                        ("plain.png", ["--method", "diffusion", "--no-watermark"]), ("blur.png", ["--method", "blur"])):
        outputs[name] = tmp_path / name
        assert main(["anonymize", str(grace), "-o", str(outputs[name]), "-q", *extra]) == 0
    for path in outputs.values():
        raw = path.read_bytes()
        assert b"PhoneMaker" not in raw and not Image.open(path).getexif()
    assert Image.open(outputs["gen.png"]).text == {"Comment": PNG_TEXT}
    assert Image.open(outputs["blur.png"]).text == {"Comment": PNG_TEXT_REDACTED}
    assert not Image.open(outputs["plain.png"]).text and b"faceanon" not in outputs["gen.jpg"].read_bytes()
    assert read_watermark(Image.open(outputs["gen.png"])).found
    assert read_watermark(Image.open(outputs["gen.jpg"])).found
    assert not read_watermark(Image.open(outputs["plain.png"])).found
    capsys.readouterr()
    assert main(["verify", str(outputs["gen.jpg"]), str(outputs["plain.png"])]) == 1
    out = capsys.readouterr().out
    assert "gen.jpg: carries faceanon's watermark: face 0 (score" in out and "plain.png: no faceanon watermark" in out
