"""`faceanon evaluate` end to end: tiny random checkpoints + the real redaction baselines."""

from __future__ import annotations

import argparse
import csv

import pytest
from PIL import Image

from faceanon.anonymizer import FaceAnonymizer
from faceanon.evaluation import COLUMNS, evaluate, evaluate_photo, summarize


class SmallOutputPipeline:
    """The tiny-checkpoint FaceAnonPipeline generating at 64x64 (upscaled to the 512 crop the
    anonymizer expects): the same code path, a fraction of the CPU time."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.calls = 0

    def __call__(self, **kwargs):
        self.calls += 1
        out = self.pipe(**{**kwargs, "height": 64, "width": 64})
        out.images = [image.resize((512, 512)) for image in out.images]
        return out


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from faceanon.testing import tiny_pipeline

    pipe = tiny_pipeline(tmp_path_factory.mktemp("tiny"))
    pipe.set_progress_bar_config(disable=True)
    return SmallOutputPipeline(pipe)


@pytest.fixture
def photo_folder(tmp_path, astronaut_rgb, grace_hopper_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(astronaut_rgb).resize((256, 256)).save(folder / "astronaut.png")
    Image.open(grace_hopper_path).resize((200, 234)).save(folder / "grace_hopper.jpg")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_evaluate_writes_csv_and_plots_and_resumes(photo_folder, tmp_path, tiny_pipe):
    out = tmp_path / "eval"
    anonymizer = FaceAnonymizer(pipeline=tiny_pipe)
    settings = dict(
        anonymizer=anonymizer,
        degrees=(1.4,),
        seeds=1,
        baselines=("blur",),
        steps=1,
        guidance=1.0,
        progress_bar=False,
    )

    class Interrupted(Exception):
        pass

    def interrupt_after_four(fraction, description):
        if fraction >= 4 / 6 - 1e-9:
            raise Interrupted(description)

    # 2 photos x (original, blur, d=1.4) = 6 runs; stop after 4: the first photo and one more run.
    with pytest.raises(Interrupted):
        evaluate(photo_folder, out, progress=interrupt_after_four, **settings)
    rows_before = list(csv.DictReader((out / "evaluation.csv").open()))
    assert [r["method"] for r in rows_before] == ["original", "blur", "diffusion", "original"]
    calls_before = tiny_pipe.calls

    result = evaluate(photo_folder, out, **settings)
    assert result.skipped_runs == 4
    assert tiny_pipe.calls - calls_before == 1  # only the second photo's diffusion run
    with (out / "evaluation.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert len(rows) == 6 and rows[:4] == rows_before
    assert {r["photo"] for r in rows} == {"astronaut.png", "grace_hopper.jpg"}
    for path in result.figure_paths:
        assert path.stat().st_size > 10_000 and Image.open(path).size[0] > 500
    assert [p.name for p in result.figure_paths] == [
        "evaluation_identity.png",
        "evaluation_detection.png",
        "evaluation_attributes.png",
    ]

    # Random tiny weights paint noise, not a face: nobody is recognized, the original is itself.
    originals = [r for r in result.rows if r["method"] == "original"]
    assert all(r["identity_similarity"] > 0.999 and r["detected_yunet"] == 1 for r in originals)
    degrees, means, _, baselines = summarize(result.rows, "identity_distance")
    assert degrees == [1.4] and min(means) > 0.5
    assert baselines["blur"] > 0.5

    # Nothing left to do: a third run recomputes nothing.
    calls = tiny_pipe.calls
    assert evaluate(photo_folder, out, **settings).skipped_runs == 6 and tiny_pipe.calls == calls


def test_redaction_baselines_only(photo_folder, tmp_path):
    result = evaluate(
        photo_folder,
        tmp_path / "eval",
        anonymizer=FaceAnonymizer(pipeline=None),
        diffusion=False,
        progress_bar=False,
    )
    assert {r["method"] for r in result.rows} == {"original", "blur", "pixelate", "solid"}
    _, _, _, similarity = summarize(result.rows, "identity_similarity")
    assert similarity["original"] > 0.999
    assert all(similarity[m] < 0.3 for m in ("blur", "pixelate", "solid"))  # measured 0.05 .. 0.20
    _, _, _, detected = summarize(result.rows, "detected_yunet")
    assert detected["original"] == 1 and detected["solid"] == 0


def test_evaluate_photo_for_the_app(astronaut_rgb, tiny_pipe):
    small = astronaut_rgb[::2, ::2].copy()
    told = []
    rows, figures = evaluate_photo(
        FaceAnonymizer(pipeline=tiny_pipe),
        small,
        degrees=(1.2,),
        seeds=1,
        baselines=(),
        steps=1,
        guidance=1.0,
        on_run=lambda done, total, run: told.append((done, total, run.method, run.degree)),
    )
    assert [r["method"] for r in rows] == ["original", "diffusion"]
    assert told == [(1, 2, "original", None), (2, 2, "diffusion", 1.2)]  # what the app's progress shows
    assert len(figures) == 3 and all(f.mode == "RGB" and f.width > 500 for f in figures)


def test_cli_commands(photo_folder, tmp_path, capsys, astronaut_rgb):
    from faceanon.cli.evaluate import add_evaluate as add_evaluate_command
    from faceanon.cli.verify import add_verify as add_verify_command
    from faceanon.trust.watermark import add_watermark

    parser = argparse.ArgumentParser(prog="faceanon")
    subparsers = parser.add_subparsers()
    add_evaluate_command(subparsers)
    add_verify_command(subparsers)

    args = parser.parse_args(
        [
            "evaluate",
            str(photo_folder),
            "-o",
            str(tmp_path / "e"),
            "--no-diffusion",
            "--baselines",
            "solid",
            "--identity-model",
            "sface",
        ]
    )
    assert args.run(args) == 0
    assert "evaluation.csv" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", str(photo_folder), "--degrees", "a,b"])

    marked, plain = tmp_path / "marked.jpg", tmp_path / "plain.png"
    add_watermark(Image.fromarray(astronaut_rgb)).save(marked, quality=75)
    Image.fromarray(astronaut_rgb).save(plain)
    args = parser.parse_args(["verify", str(marked), str(plain)])
    assert args.run(args) == 1
    out = capsys.readouterr().out
    assert "marked.jpg: carries faceanon's watermark" in out and "plain.png: no faceanon watermark" in out
