"""The `faceanon` command line on real photos: folders, reports, failures, no overwrites."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

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
    code = main(
        ["anonymize", str(photo_folder), "-o", str(out), "--method", "pixelate", "--report", str(report)]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png: error:" in captured.out and "not an image faceanon can read" in captured.out
    assert "1 file(s) could not be processed" in captured.err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "grace.jpg",
        "team/group.jpg",
    ]
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


def test_pack_reports_a_folder_as_one_photo_at_a_time_does(photo_folder, tmp_path, capsys):
    """--pack 2 (photos in groups, as a --ray job does): the same outputs, entries and failures as
    --pack 1 (redaction does not depend on packing); existing outputs are still skipped."""
    reports = {}
    for pack in ("1", "2"):
        out = tmp_path / f"out{pack}"
        args = ["anonymize", str(photo_folder), "-o", str(out), "--method", "blur", "--json", "-q"]
        assert main([*args, "--pack", pack]) == 1  # broken.png
        reports[pack] = json.loads(capsys.readouterr().out)
    one, two = reports["1"], reports["2"]
    by_input = {pack: {f["input"]: f for f in r["files"]} for pack, r in reports.items()}
    assert {k: (v["status"], v.get("num_faces")) for k, v in by_input["1"].items()} == {
        k: (v["status"], v.get("num_faces")) for k, v in by_input["2"].items()
    }
    assert (two["done"], two["error"], two["faces_changed"]) == (one["done"], one["error"], 7)
    for name in ("grace.jpg", "team/group.jpg"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    assert (
        main(
            [
                "anonymize",
                str(photo_folder),
                "-o",
                str(tmp_path / "out2"),
                "--method",
                "blur",
                "--json",
                "-q",
                "--pack",
                "2",
            ]
        )
        == 1
    )
    assert json.loads(capsys.readouterr().out)["skipped"] == 3  # 2 outputs exist, notes.txt
    with pytest.raises(SystemExit) as exit_info:
        main(["anonymize", str(photo_folder), "-o", str(tmp_path / "o"), "--pack", "0"])
    assert exit_info.value.code == 2 and "1 or more" in capsys.readouterr().err


def test_an_input_is_never_overwritten(photo_folder, capsys):
    original = (photo_folder / "grace.jpg").read_bytes()
    code = main(
        [
            "anonymize",
            str(photo_folder / "grace.jpg"),
            "-o",
            str(photo_folder / "grace.jpg"),
            "--method",
            "blur",
            "--overwrite",
        ]
    )
    assert code == 1 and "would overwrite an input" in capsys.readouterr().out
    assert (photo_folder / "grace.jpg").read_bytes() == original


def test_single_file_to_a_named_output_with_chosen_faces(group_photo_path, tmp_path, capsys):
    out = tmp_path / "result.png"
    code = main(
        ["anonymize", str(group_photo_path), "-o", str(out), "--method", "solid", "--faces", "0,5", "--json"]
    )
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
    done = subprocess.run(
        [sys.executable, "-m", "faceanon.cli", "--help"], capture_output=True, text=True, timeout=60
    )
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


def test_outputs_carry_the_provenance_marks_and_no_input_metadata(
    photo_folder, tmp_path, monkeypatch, capsys
):
    from faceanon.anonymizer import FaceAnonymizer
    from faceanon.trust.watermark import PNG_TEXT, PNG_TEXT_REDACTED, read_watermark

    monkeypatch.setattr(FaceAnonymizer, "_load_pipeline", lambda self: _DonorPipeline())
    grace = photo_folder / "grace.jpg"
    outputs = {}
    for name, extra in (
        ("gen.png", ["--method", "diffusion"]),
        ("gen.jpg", ["--method", "diffusion"]),
        ("plain.png", ["--method", "diffusion", "--no-watermark"]),
        ("blur.png", ["--method", "blur"]),
    ):
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
    assert (
        "gen.jpg: carries faceanon's watermark: face 0 (score" in out
        and "plain.png: no faceanon watermark" in out
    )


# ---------------------------------------------------------------------------------------------
# Faults: full disks, broken outputs, clashing names, unread files (issue 10 points 1, 3, 4; 12.9)


def _faceanon(
    args: list[str], limit_bytes: int | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """The CLI in a fresh process; with `limit_bytes`, every file it writes is capped there
    (RLIMIT_FSIZE with SIGXFSZ ignored: a write past it fails with EFBIG, as on a full disk)."""
    code = (
        "import resource, signal, sys\n"
        "limit = int(sys.argv[1])\n"
        "if limit:\n"
        "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
        "from faceanon.cli import main\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(limit_bytes or 0), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def twelve_photos(tmp_path, grace_hopper_path):
    """2 small JPEGs (about 10 KB out) and 10 PNGs (about 450 KB out) of a real face."""
    folder = tmp_path / "twelve"
    folder.mkdir()
    grace = Image.open(grace_hopper_path)
    for i in range(2):
        grace.resize((128, 150)).save(folder / f"small{i}.jpg", quality=90)
    for i in range(10):
        grace.save(folder / f"large{i:02d}.png")
    return folder


def _decodes(path) -> bool:
    from faceanon.errors import ImageInputError
    from faceanon.media.photo import load_image

    try:
        load_image(path)
    except ImageInputError:
        return False
    return True


def test_a_full_disk_leaves_no_broken_output_and_a_rerun_redoes_the_rest(twelve_photos, tmp_path):
    out = tmp_path / "out"
    first = _faceanon(["anonymize", str(twelve_photos), "-o", str(out), "--method", "blur", "--json"], 64_000)
    assert first.returncode == 1 and "Traceback" not in first.stderr
    report = json.loads(first.stdout)
    assert (report["done"], report["error"]) == (2, 10)
    failed = [f for f in report["files"] if f["status"] == "error"]
    assert all(f["output"] is None and f["planned_output"].endswith(".png") for f in failed)
    assert all("disk is full or a file size limit" in f["error"] for f in failed)
    assert sorted(p.name for p in out.iterdir()) == [
        "small0.jpg",
        "small1.jpg",
    ]  # no empty, cut or temporary file
    second = _faceanon(["anonymize", str(twelve_photos), "-o", str(out), "--method", "blur", "--json"])
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert (report["done"], report["skipped"], report["error"]) == (10, 2, 0)
    assert len(list(out.iterdir())) == 12 and all(_decodes(p) for p in out.iterdir())


def _in_tmpfs_namespace(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_full_tmpfs_disk_fails_photos_and_the_report_with_error_lines(twelve_photos, tmp_path):
    """A real full disk (a 64 KB tmpfs for outputs, a 4 KB one for the report), where this machine
    allows mounting one in a user namespace."""
    if shutil.which("unshare") is None or _in_tmpfs_namespace(f"mount -t tmpfs tmpfs {tmp_path}").returncode:
        pytest.skip("cannot mount a small tmpfs here (needs unprivileged user namespaces)")
    out, reports = tmp_path / "out", tmp_path / "reports"
    out.mkdir(), reports.mkdir()
    done = _in_tmpfs_namespace(
        f"mount -t tmpfs -o size=64k tmpfs {out} && mount -t tmpfs -o size=4k tmpfs {reports} && "
        f"{sys.executable} -m faceanon.cli anonymize {twelve_photos} -o {out} --method blur -q "
        f"--report {reports}/report.json; echo rc=$?; ls -a {out} {reports}"
    )
    listing = done.stdout.split()
    assert "rc=1" in listing and "Traceback" not in done.stderr
    assert "faceanon: error: the report was not written" in done.stderr and "disk is full" in done.stderr
    assert done.stdout.count("disk is full") >= 9  # every large photo: No space left on device
    assert not [name for name in listing if name.startswith(".faceanon-partial") or name.startswith("large")]
    assert "report.json" not in listing


def test_broken_outputs_are_redone_and_leftovers_swept(photo_folder, tmp_path, capsys):
    import os

    from faceanon.media.atomic import TEMP_PREFIX

    out = tmp_path / "out"
    args = [
        "anonymize",
        str(photo_folder / "grace.jpg"),
        str(photo_folder / "team" / "group.jpg"),
        "-o",
        str(out),
        "--method",
        "blur",
        "--json",
    ]
    assert main(args) == 0
    capsys.readouterr()
    whole = (out / "group.jpg").read_bytes()
    (out / "group.jpg").write_bytes(whole[: len(whole) // 2] + b"\xff\xd9")  # what a crash used to leave
    (out / "grace.jpg").write_bytes(b"")
    stale = out / f"{TEMP_PREFIX}abc.jpg"
    stale.write_bytes(b"half")
    os.utime(stale, (1, 1))
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["done"], report["skipped"]) == (2, 0)
    notes = {Path(f["input"]).name: f["notes"][0] for f in report["files"]}
    assert "truncated" in notes["group.jpg"] and "could not be read" in notes["grace.jpg"]
    assert "made again" in notes["grace.jpg"] and not stale.exists()
    assert _decodes(out / "group.jpg") and _decodes(out / "grace.jpg")
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["skipped"] == 2


def test_distinct_inputs_get_distinct_outputs_and_unread_files_are_listed(
    grace_hopper_path, tmp_path, capsys
):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    grace = Image.open(grace_hopper_path)
    for suffix in (".png", ".gif", ".avif"):
        grace.save(folder / f"photo{suffix}")
    frames = [grace, grace.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grace]
    frames[0].save(folder / "wave.gif", save_all=True, append_images=frames[1:])
    (folder / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic")
    (folder / "notes.txt").write_text("not a photo")
    for _ in range(2):  # the second time with --overwrite: still three photos, none lost
        code = main(["anonymize", str(folder), "-o", str(out), "--method", "blur", "--overwrite", "--json"])
        report, err = json.loads(capsys.readouterr().out), capsys.readouterr().err
        assert code == 0, err
        assert report["done"] == 4 and report["error"] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "photo.avif.png",
        "photo.gif.png",
        "photo.png",
        "wave.gif.png",
    ]
    reasons = {Path(f["input"]).name: f["reason"] for f in report["files"] if f["status"] == "skipped"}
    assert set(reasons) == {"phone.heic", "notes.txt"}  # videos are processed (tests/test_cli_video.py)
    assert "HEIC" in reasons["phone.heic"] and ".txt" in reasons["notes.txt"]
    wave = next(f for f in report["files"] if f["input"].endswith("wave.gif"))
    assert wave["notes"] == ["only the first of its 3 frames (or pages) was anonymized and written"]


def test_two_inputs_for_one_output_are_refused(grace_hopper_path, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(grace_hopper_path).save(folder / "a.gif")
    Image.open(grace_hopper_path).save(folder / "a.gif.png")
    code = main(["anonymize", str(folder), "-o", str(tmp_path / "out"), "--method", "blur"])
    assert code == 1 and "is already written to" in capsys.readouterr().out


def test_a_text_chunk_bomb_is_a_clear_error_in_anonymize_and_verify(tmp_path, capsys):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "A" * 20_000_000, zip=True)
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(bomb, pnginfo=info)
    assert main(["anonymize", str(bomb), "-o", str(tmp_path / "out.png"), "--method", "blur", "--json"]) == 1
    entry = json.loads(capsys.readouterr().out)["files"][0]
    assert "unexpected" not in entry["error"] and "could not be decoded" in entry["error"]
    assert entry["output"] is None and entry["planned_output"] == str(tmp_path / "out.png")
    assert main(["verify", str(bomb)]) == 2
    assert "bomb.png: cannot be checked: The file" in capsys.readouterr().out


def test_no_mediapipe_or_tflite_log_noise_on_stderr(grace_hopper_path, tmp_path):
    """The attribute check (MediaPipe) runs after diffusion; the 12 GB model is replaced by a donor
    face in a fresh process, as in test_outputs_carry_the_provenance_marks_and_no_input_metadata."""
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_cli import _DonorPipeline\n"
        "from faceanon.anonymizer import FaceAnonymizer\n"
        "FaceAnonymizer._load_pipeline = lambda self: _DonorPipeline()\n"
        "from faceanon.cli import main\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(__file__).parent),
            "anonymize",
            str(grace_hopper_path),
            "-o",
            str(tmp_path / "out.png"),
            "--method",
            "diffusion",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"][0]["faces"][0]["attributes"]  # MediaPipe really ran
    lines = done.stderr.strip().splitlines()  # with --json the per-file lines go to stderr: only those
    assert len(lines) == 2 and lines[0].startswith(f"{grace_hopper_path}: 1 face(s) found"), done.stderr
    assert lines[1] == "1 of 1 file(s) done, 0 skipped, 0 failed; 1 face(s) found, 1 changed."


def test_a_wrong_face_model_folder_is_said_even_with_quiet(tmp_path, grace_hopper_path, monkeypatch, capsys):
    """No --method and FACEANON_FACE_MODEL pointing at an empty folder: the photo is blurred, and the
    user is told why, once, on stderr, even with --quiet (issue 12 point 7)."""
    empty = tmp_path / "not-the-model"
    empty.mkdir()
    monkeypatch.setenv("FACEANON_FACE_MODEL", str(empty))
    code = main(["anonymize", str(grace_hopper_path), "-o", str(tmp_path / "out.jpg"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "out.jpg").is_file()
    assert err.count("diffusion is not available") == 1 and "faces are blurred instead" in err
    assert "FACEANON_FACE_MODEL" in err or str(empty) in err or "not-the-model" in err
