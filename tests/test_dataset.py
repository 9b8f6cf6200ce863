"""The dataset runner (faceanon.dataset): sources, seeds, packing, audit, and real Ray Data runs.

The Ray tests share one local Ray instance (2 CPUs, its own temporary folder, removed at the end)
and run on real photos with the real detector, identity model and atomic writers; diffusion runs on
tiny random checkpoints (the 12 GB weights cannot exist here) at 64 px, since at 512 px the tiny
model's reference attention takes minutes per face on 2 cores. The single-process CLI they are
compared with gets the same 64 px through a patched make_anonymizer (it has no flag for it).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanon.anonymizer import face_seed, image_seed
from faceanon.cli import main
from faceanon.dataset.sources import key_for_path, list_sources, output_name

pytest.importorskip("ray", reason="the optional extra faceanon[ray] (requirements-ray.txt) is not installed")


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the session (starting one takes ~25 s on 2 cores)."""
    import ray

    temp = tempfile.mkdtemp(prefix="fa-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp,
        object_store_memory=300 * 1024**2,
        logging_level="warning",
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def photo_tree(tmp_path_factory, grace_hopper_path, group_photo_path, astronaut_rgb) -> Path:
    """photos/: grace.jpg, people/group.jpg (6 faces), people/astronaut.png, broken.jpg, clip.mp4 (a real
    10-frame H.264 clip of the Grace Hopper portrait), notes.txt."""
    from faceanon.testing_video import make_test_clip

    root = tmp_path_factory.mktemp("photos")
    (root / "people").mkdir()
    shutil.copy(grace_hopper_path, root / "grace.jpg")
    shutil.copy(group_photo_path, root / "people" / "group.jpg")
    Image.fromarray(astronaut_rgb).save(root / "people" / "astronaut.png")
    (root / "broken.jpg").write_bytes(Path(grace_hopper_path).read_bytes()[:300])  # a truncated JPEG
    make_test_clip(
        root / "clip.mp4", photo="grace_hopper", motion="zoom", size=(160, 208), seconds=0.5, fps=20
    )
    (root / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory) -> dict:
    from faceanon.testing import tiny_pipeline_env

    return tiny_pipeline_env(tmp_path_factory.mktemp("tiny-weights"))


def _cli(args: list[str], monkeypatch, resolution: int | None = None) -> int:
    """The single-process CLI, in this process (at `resolution` for tiny checkpoints)."""
    if resolution:
        import faceanon.cli.anonymize as anonymize_command
        from faceanon.cli.common import make_anonymizer

        def at_resolution(args):
            anonymizer = make_anonymizer(args)
            anonymizer.resolution = resolution
            return anonymizer

        monkeypatch.setattr(anonymize_command, "make_anonymizer", at_resolution)
    return main(["anonymize", *args, "-q"])


def _outputs(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "_faceanon" not in p.parts
    }


# ---------------------------------------------------------------------------------------------
# Without Ray: seeds, sources, the worker


def test_image_seed_is_pinned_and_comes_from_the_bytes():
    assert image_seed(0, b"photo") == 2673260842943984361
    assert image_seed(0, b"photo") != image_seed(1, b"photo") != image_seed(0, b"other")
    assert 0 <= image_seed(123, b"") < 2**63


def test_sources_keys_and_output_names(photo_tree, tmp_path):
    out = photo_tree / "out"  # an output inside the source is never read back as input
    (out / "x").mkdir(parents=True)
    shutil.copy(photo_tree / "grace.jpg", out / "x" / "old.jpg")
    sources = list_sources(
        [photo_tree, str(photo_tree / "people" / "*.png"), tmp_path / "missing", "data/*.parquet"], out
    )
    keys = sorted(key_for_path(str(p), sources.roots) for p in sources.images)
    assert keys == ["broken.jpg", "grace.jpg", "people/astronaut.png", "people/group.jpg"]  # one tree
    assert sources.videos == [(photo_tree / "clip.mp4").resolve()]
    assert [(s["file"], s["reason"]) for s in sources.skipped] == [
        ("notes.txt", "not a photo faceanon reads (.txt)")
    ]
    assert [p["error"] for p in sources.problems] == ["does not exist"]
    assert sources.parquet == ["data/*.parquet"]
    shutil.rmtree(out)
    alone = list_sources([str(photo_tree / "**" / "*.png")], tmp_path / "o")
    assert [key_for_path(str(p), alone.roots) for p in alone.images] == ["people/astronaut.png"]
    assert output_name("a/b.gif") == "a/b.gif.png" and output_name("a/b.jpg") == "a/b.jpg"
    assert output_name("sha256-0123") == "sha256-0123.png" and output_name("v/clip.mp4") == "v/clip.mp4"
    from faceanon.dataset.errors import DatasetError

    with pytest.raises(DatasetError, match="not a relative file name"):
        output_name("../escape.jpg")


def _worker(tmp_path, photo_tree, pipeline, **options):
    from faceanon.dataset.runner import dataset_settings
    from faceanon.dataset.worker import AnonymizeBatch

    worker = AnonymizeBatch(
        dataset_settings(dict(method="diffusion", **options)),
        str(tmp_path / "out"),
        "tree",
        "run1",
        roots=[str(photo_tree.resolve())],
    )
    worker.anonymizer._pipeline = pipeline  # stands in for the 12 GB weights
    files = ["grace.jpg", "people/group.jpg", "people/astronaut.png"]
    batch = {
        "bytes": np.array([(photo_tree / f).read_bytes() for f in files], dtype=object),
        "path": np.array([str((photo_tree / f).resolve()) for f in files], dtype=object),
    }
    return worker, batch


def test_packing_groups_are_a_function_of_the_sorted_keys():
    from faceanon.dataset.packing import packing_groups

    keys = ["c.jpg", "a.jpg", "e/x.png", "b.jpg", "d.jpg"]
    assert packing_groups(keys, 2) == [1, 0, 2, 0, 1]  # sorted: a b | c d | e/x
    shuffled = ["e/x.png", "b.jpg", "d.jpg", "a.jpg", "c.jpg"]
    by_key = dict(zip(keys, packing_groups(keys, 2), strict=True))
    assert dict(zip(shuffled, packing_groups(shuffled, 2), strict=True)) == by_key  # order-free
    # a subset (the items still to do) keeps its groups from the full listing
    assert packing_groups(["d.jpg", "e/x.png"], 2, listing=keys) == [1, 2]
    assert packing_groups(keys, 1) == [2, 0, 4, 1, 3]


def _group_batch(photo_tree, files, writes=None) -> dict:
    """One row per packing group, as the runner makes them for --pack > 1."""
    paths = [str((photo_tree / f).resolve()) for f in files]
    return {
        "group": np.array([0]),
        "paths": np.array([np.array(paths, dtype=object)], dtype=object),
        "write": np.array([np.array(writes or [True] * len(files))], dtype=object),
    }


def test_pack_puts_faces_of_a_group_into_one_pipeline_call(identity_pipeline, photo_tree, tmp_path):
    worker, batch = _worker(tmp_path, photo_tree, identity_pipeline, pack=3)
    files = ["people/group.jpg", "grace.jpg", "people/astronaut.png"]  # any order: key order inside
    rows = worker(_group_batch(photo_tree, files))
    assert rows["file"] == files and rows["status"] == ["done"] * 3 and rows["faces"] == [6, 1, 1]
    assert [len(call["conditioning_image"]) for call in identity_pipeline.calls] == [8]
    seeds = [g.initial_seed() for g in identity_pipeline.calls[0]["generator"]]
    in_key_order = [("grace.jpg", 1), ("people/astronaut.png", 1), ("people/group.jpg", 6)]
    expected = [
        face_seed(image_seed(0, (photo_tree / name).read_bytes()), i)
        for name, n in in_key_order
        for i in range(n)
    ]
    assert seeds == expected

    # a rerun of a partly done group: every photo generated again, only the missing one written
    identity_pipeline.calls.clear()
    worker, _ = _worker(tmp_path / "again", photo_tree, identity_pipeline, pack=3)
    rows = worker(_group_batch(photo_tree, files, writes=[False, True, False]))
    assert rows["file"] == ["grace.jpg"] and [
        len(c["conditioning_image"]) for c in identity_pipeline.calls
    ] == [8]
    assert _outputs(tmp_path / "again" / "out") == {
        "grace.jpg": (tmp_path / "out" / "grace.jpg").read_bytes()
    }

    # --batch-size chunks a group; --pack 1: each photo alone, as FaceAnonymizer.anonymize does
    identity_pipeline.calls.clear()
    worker, _ = _worker(tmp_path / "chunks", photo_tree, identity_pipeline, pack=3, batch_size=5)
    worker(_group_batch(photo_tree, files))
    assert [len(call["conditioning_image"]) for call in identity_pipeline.calls] == [5, 3]
    identity_pipeline.calls.clear()
    worker, batch = _worker(tmp_path / "alone", photo_tree, identity_pipeline, pack=1, batch_size=4)
    worker(batch)
    assert [len(call["conditioning_image"]) for call in identity_pipeline.calls] == [1, 4, 2, 1]


class BrokenPipeline:
    def __call__(self, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")


def test_a_failed_diffusion_is_redacted_never_written_unchanged(photo_tree, tmp_path):
    from faceanon.dataset import read_audit

    worker, batch = _worker(tmp_path, photo_tree, BrokenPipeline(), pack=3)
    rows = worker(batch)
    assert rows["status"] == ["redacted"] * 3
    assert all("diffusion failed (unexpected RuntimeError: CUDA out of memory" in e for e in rows["error"])
    files, faces = read_audit(tmp_path / "out")
    assert list(files["status"]) == ["redacted"] * 3 and set(faces["method"]) == {"blur"}
    original = np.asarray(Image.open(photo_tree / "grace.jpg").convert("RGB")).astype(int)
    written = np.asarray(Image.open(tmp_path / "out" / "grace.jpg").convert("RGB")).astype(int)
    x0, y0, x1, y1 = (int(v) for v in faces[faces.file == "grace.jpg"].box.iloc[0])
    assert np.abs(original - written)[y0:y1, x0:x1].mean() > 5  # the face is hidden


def test_ray_missing_says_how_to_install_it(monkeypatch):
    import sys

    from faceanon.dataset.errors import DatasetError
    from faceanon.dataset.runner import connect

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DatasetError, match=r"pip install 'faceanon\[ray\]'"):
        connect(None)


def test_unreachable_cluster_is_a_clear_error(tmp_path, photo_tree, capsys):
    # `auto` with no cluster (the tests' instance is not registered with `auto`) fails fast;
    # this test runs before the session's Ray instance starts or connect() reuses it.
    import ray

    started_here = list(Path("/tmp").glob("fa-ray-*"))  # the session's instance (fixture)
    if ray.is_initialized() or Path("/tmp/ray/ray_current_cluster").exists() or started_here:
        pytest.skip("a Ray instance is running here, so `auto` would find it (or hang connecting to it)")
    assert main(["anonymize", str(photo_tree), "-o", str(tmp_path / "out"), "--ray=auto", "-q"]) == 1
    assert "The Ray cluster at 'auto' cannot be reached" in capsys.readouterr().err


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never says anything (what a firewall box or another
    program may do)."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.parametrize(
    "form",
    [
        "127.0.0.1:{closed}",
        "ray://127.0.0.1:{closed}",
        "127.0.0.1:{silent}",
        "ray://127.0.0.1:{silent}",
        "10.255.255.1:6379",
    ],
)
def test_an_unreachable_address_fails_fast(form, silent_port):
    import time

    from faceanon.dataset.errors import DatasetError
    from faceanon.dataset.runner import PROBE_SECONDS, probe

    address = form.format(closed=_closed_port(), silent=silent_port)
    started = time.perf_counter()
    # refused at once; an unroutable host times out (or, behind a proxy that answers for it, answers
    # but not as Ray); a silent port does not answer as Ray
    reasons = "refused|timed out|unreachable|not as a Ray|does not answer as Ray"
    with pytest.raises(DatasetError, match=rf"The Ray cluster at .* cannot be reached \(.*({reasons})"):
        probe(address)
    assert time.perf_counter() - started < 2 * PROBE_SECONDS + 2


def test_cli_with_an_unreachable_address_says_so_without_hanging(grace_hopper_path, tmp_path):
    """In a subprocess (no Ray instance of this test session in it), bounded by a timeout: before
    the probe, Ray retried such an address for more than 2 minutes."""
    import subprocess
    import sys

    address = f"127.0.0.1:{_closed_port()}"
    command = [
        sys.executable,
        "-m",
        "faceanon.cli",
        "anonymize",
        str(grace_hopper_path),
        "-o",
        str(tmp_path / "o"),
    ]
    done = subprocess.run(
        [*command, "--method", "blur", f"--ray={address}", "-q"], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 1, done.stderr
    assert f"The Ray cluster at '{address}' cannot be reached ({address}: Connection refused)" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


def test_a_bad_keep_photo_stops_the_job_before_ray_starts(photo_tree, tmp_path, monkeypatch, capsys):
    import faceanon.dataset.runner as runner
    from faceanon.dataset import anonymize_dataset
    from faceanon.errors import ImageInputError

    def no_ray(address):
        raise AssertionError("Ray must not start for a job with a bad --keep photo")

    monkeypatch.setattr(runner, "connect", no_ray)
    (tmp_path / "fake.jpg").write_text("not an image")
    out = tmp_path / "out"
    code = main(
        ["anonymize", str(photo_tree), "-o", str(out), "--method", "blur", "--ray", "-q"]
        + ["--keep", str(tmp_path / "fake.jpg")]
    )
    assert code == 1  # as the photo CLI (tests/test_keep.py): the ImageInputError's text, no traceback
    err = capsys.readouterr().err
    assert "Keep photo: The file 'fake.jpg' is not an image" in err and "Traceback" not in err
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError):
        anonymize_dataset(photo_tree, out, method="blur", keep=[tmp_path / "empty"], quiet=True)
    no_face = tmp_path / "noface.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(no_face)
    with pytest.raises(ImageInputError):
        anonymize_dataset(photo_tree, out, method="blur", keep=[no_face], quiet=True)


@pytest.fixture(scope="session")
def pack_tree(tmp_path_factory, grace_hopper_path, astronaut_rgb) -> Path:
    """Five real photos, 6 faces: packed by 3 they make groups {astronaut, biden, grace} and
    {obama, two_people}."""
    root = tmp_path_factory.mktemp("pack")
    people = Path(__file__).parent / "data" / "people"
    for name in ("biden.jpg", "obama.jpg", "two_people.jpg"):
        shutil.copy(people / name, root / name)
    shutil.copy(grace_hopper_path, root / "grace.jpg")
    Image.fromarray(astronaut_rgb).save(root / "astronaut.png")
    return root


DIFFUSION_OPTIONS = dict(method="diffusion", steps=1, seed=3, resolution=64, quiet=True)


def test_cli_pack_reruns_a_partly_done_group_with_the_same_companions(
    pack_tree, tiny_env, tmp_path, monkeypatch
):
    for name, value in tiny_env.items():
        monkeypatch.setenv(name, value)
    options = ["--method", "diffusion", "--steps", "1", "--seed", "3", "--pack", "3"]
    assert _cli([str(pack_tree), "-o", str(tmp_path / "a"), *options], monkeypatch, resolution=64) == 0
    first = _outputs(tmp_path / "a")
    assert len(first) == 5
    (tmp_path / "a" / "biden.jpg").unlink()  # its companions astronaut and grace are done
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    assert _cli([str(pack_tree), "-o", str(tmp_path / "a"), *options], monkeypatch, resolution=64) == 0
    assert _outputs(tmp_path / "a") == first  # the same bytes: generated with the same companions
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir() if p.name in stamps} == stamps


# ---------------------------------------------------------------------------------------------
# With a local Ray instance


@pytest.mark.slow
def test_folder_with_redaction_equals_the_cli_and_is_audited(ray_local, photo_tree, tmp_path, monkeypatch):
    from faceanon.anonymizer import FaceAnonymizer
    from faceanon.dataset import anonymize_dataset, read_audit

    assert (
        _cli([str(photo_tree), "-o", str(tmp_path / "cli"), "--method", "blur"], monkeypatch) == 1
    )  # broken.jpg
    result = anonymize_dataset(photo_tree, tmp_path / "ray", method="blur", images_per_batch=2, quiet=True)
    assert (result.done, result.failed, result.skipped, result.faces) == (4, 1, 1, 9)  # 3 photos, 1 video
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "cli")  # the video too
    assert not (tmp_path / "ray" / "broken.jpg").exists()

    files, faces = read_audit(tmp_path / "ray")
    by_file = files.set_index("file")
    assert sorted(by_file.index) == [
        "broken.jpg",
        "clip.mp4",
        "grace.jpg",
        "notes.txt",
        "people/astronaut.png",
        "people/group.jpg",
    ]
    assert (
        by_file.loc["broken.jpg", "status"] == "error" and "truncated" in by_file.loc["broken.jpg", "error"]
    )
    assert (
        by_file.loc["notes.txt", "status"] == "skipped" and "not a photo" in by_file.loc["notes.txt", "error"]
    )
    assert by_file.loc["clip.mp4", "status"] == "done" and by_file.loc["clip.mp4", "faces"] == 1
    track = faces[faces.file == "clip.mp4"]
    assert list(track.face) == [0] and track.method.iloc[0] == "blur" and track.box.iloc[0] is None
    faces = faces[faces.file != "clip.mp4"]
    assert list(by_file.loc[["grace.jpg", "people/group.jpg"], "faces"]) == [1, 6]
    assert (by_file.loc[["grace.jpg", "people/group.jpg", "people/astronaut.png"], "seconds"] > 0).all()
    group = faces[faces.file == "people/group.jpg"]
    detected = FaceAnonymizer().detect(photo_tree / "people" / "group.jpg")
    assert list(group.face) == list(range(6))
    np.testing.assert_allclose(np.stack(group.box.to_numpy()), [d.box for d in detected], atol=1e-3)
    assert set(faces.method) == {"blur"} and faces.seed.isna().all() and not faces.watermark.any()
    assert faces.identity_similarity.notna().all() and set(faces.verdict) == {"different person"}
    assert faces.leak_guard_hits.notna().all() and set(faces.leak_guard_hits) <= {
        0,
        1,
    }  # the guard ran (default)


@pytest.mark.slow
def test_tiny_diffusion_equals_the_cli_bit_for_bit(ray_local, photo_tree, tiny_env, tmp_path, monkeypatch):
    from faceanon.dataset import anonymize_dataset, read_audit

    for name, value in tiny_env.items():
        monkeypatch.setenv(name, value)  # the runner forwards FACEANON_* to its workers
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(photo_tree / "grace.jpg", source)
    shutil.copy(photo_tree / "people" / "astronaut.png", source)
    options = ["--method", "diffusion", "--steps", "1", "--seed", "3"]
    assert _cli([str(source), "-o", str(tmp_path / "cli"), *options], monkeypatch, resolution=64) == 0
    result = anonymize_dataset(
        source,
        tmp_path / "ray",
        method="diffusion",
        steps=1,
        seed=3,
        resolution=64,
        images_per_batch=2,
        quiet=True,
    )
    assert (result.done, result.changed) == (2, 2)
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "cli")

    files, faces = read_audit(tmp_path / "ray")
    for name in ("astronaut.png", "grace.jpg"):
        seed = image_seed(3, (source / name).read_bytes())
        assert files.set_index("file").loc[name, "image_seed"] == seed
        row = faces[faces.file == name].iloc[0]
        assert row.seed == face_seed(seed, 0) and row.degree == 1.25 and row.method == "diffusion"
        assert row.watermark and row.verdict in ("same person", "different person")
        assert -1 <= row.identity_similarity <= 1


@pytest.mark.slow
def test_a_rerun_after_an_interruption_does_only_the_rest(ray_local, photo_tree, tmp_path):
    from faceanon.dataset import anonymize_dataset, read_audit
    from faceanon.dataset.audit import completed_keys

    source = tmp_path / "src"
    source.mkdir()
    for i in range(6):
        shutil.copy(photo_tree / "grace.jpg", source / f"p{i}.jpg")

    def stop_after_the_first(row):
        raise KeyboardInterrupt  # what Ctrl-C does to the driver

    with pytest.raises(KeyboardInterrupt):
        anonymize_dataset(
            source,
            tmp_path / "out",
            method="blur",
            images_per_batch=1,
            quiet=True,
            on_file=stop_after_the_first,
        )
    first = completed_keys(tmp_path / "out")
    assert 1 <= len(first) < 6
    stamps = {key: (tmp_path / "out" / key).stat().st_mtime_ns for key in first}

    result = anonymize_dataset(source, tmp_path / "out", method="blur", images_per_batch=1, quiet=True)
    assert (result.already_done, result.done) == (len(first), 6 - len(first))
    assert {key: (tmp_path / "out" / key).stat().st_mtime_ns for key in first} == stamps  # not redone
    files, faces = read_audit(tmp_path / "out")
    assert sorted(files.file) == [f"p{i}.jpg" for i in range(6)] and set(files.status) == {"done"}
    assert len(faces) == 6 and len(set(files.run)) == 2


@pytest.mark.slow
def test_parquet_in_parquet_out(ray_local, photo_tree, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from faceanon.dataset import anonymize_dataset, read_audit

    names = ["grace.jpg", "people/group.jpg"]
    images = [{"bytes": (photo_tree / n).read_bytes(), "path": n} for n in names]
    images.append({"bytes": b"not an image", "path": "bad.jpg"})
    pq.write_table(pa.table({"image": images, "label": [0, 1, 2]}), tmp_path / "in.parquet")

    result = anonymize_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", method="blur", quiet=True)
    assert (result.done, result.failed) == (2, 1)
    table = pq.read_table(tmp_path / "out.parquet")  # the audit folder (_faceanon) is not part of it
    assert sorted(table.column("file").to_pylist()) == names
    for row in table.to_pylist():
        written = Image.open(io.BytesIO(row["image"]))
        assert written.format == "JPEG" and written.size == Image.open(photo_tree / row["file"]).size
    files, _ = read_audit(tmp_path / "out.parquet")
    assert files.set_index("file").loc["bad.jpg", "status"] == "error"

    again = anonymize_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", method="blur", quiet=True)
    assert (again.already_done, again.done, again.failed) == (2, 0, 1)
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 2


@pytest.mark.slow
def test_cli_ray_flag_prints_the_summary_and_a_json_report(ray_local, photo_tree, tmp_path, capsys):
    code = main(
        [
            "anonymize",
            str(photo_tree / "grace.jpg"),
            "-o",
            str(tmp_path / "out"),
            "--method",
            "pixelate",
            "--ray",
            "--json",
            "-q",
        ]
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # with --json, people's lines go to stderr
    assert code == 0 and report["done"] == 1 and report["faces"] == 1
    assert "1 item(s) done" in captured.err and (tmp_path / "out" / "grace.jpg").exists()


@pytest.mark.slow
def test_the_probe_lets_a_live_head_through(ray_local):
    from faceanon.dataset.errors import DatasetError
    from faceanon.dataset.runner import probe

    probe(ray_local.get_runtime_context().gcs_address)  # a GCS: no error
    with pytest.raises(DatasetError, match="answers, but not as a Ray Client server"):
        probe("ray://" + ray_local.get_runtime_context().gcs_address)  # the GCS port is not Ray Client's


@pytest.mark.slow
def test_pack_is_bit_identical_whatever_the_batches_and_workers(
    ray_local, pack_tree, tiny_env, tmp_path, monkeypatch
):
    """--pack 3: the single-process CLI, Ray with 1 worker and 5 photos a batch, Parquet rows keyed
    by the same names (in another order), and Ray with 2 workers and 2 photos a batch give the same
    bytes. CPU float sums also depend on torch's thread count, and a CPU worker gets its share of the
    cores (2 workers on 2 cores: 1 thread each), so the 2-worker run is compared with the CLI on
    1 thread: the packing is then the only thing that could differ, and it does not."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from faceanon.dataset import anonymize_dataset

    for name, value in tiny_env.items():
        monkeypatch.setenv(name, value)
    options = ["--method", "diffusion", "--steps", "1", "--seed", "3"]
    assert _cli([str(pack_tree), "-o", str(tmp_path / "cli"), *options, "--pack", "3"], monkeypatch, 64) == 0
    expected = _outputs(tmp_path / "cli")
    assert _cli([str(pack_tree), "-o", str(tmp_path / "one"), *options], monkeypatch, 64) == 0
    assert _outputs(tmp_path / "one") != expected  # packing changes the rounding: the test can fail

    big = anonymize_dataset(
        pack_tree, tmp_path / "big", pack=3, workers=1, images_per_batch=5, **DIFFUSION_OPTIONS
    )
    assert big.done == 5 and _outputs(tmp_path / "big") == expected

    names = sorted(expected)
    images = [{"bytes": (pack_tree / n).read_bytes(), "path": n} for n in names[::-1]]  # another order
    pq.write_table(pa.table({"image": images}), tmp_path / "in.parquet")
    table = anonymize_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", pack=3, **DIFFUSION_OPTIONS)
    assert table.done == 5
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert {row["file"]: row["image"] for row in rows} == expected

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert (
            _cli([str(pack_tree), "-o", str(tmp_path / "cli1"), *options, "--pack", "3"], monkeypatch, 64)
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    two = anonymize_dataset(
        pack_tree, tmp_path / "two", pack=3, workers=2, images_per_batch=2, **DIFFUSION_OPTIONS
    )
    assert two.done == 5 and _outputs(tmp_path / "two") == _outputs(tmp_path / "cli1")
