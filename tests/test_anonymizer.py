"""FaceAnonymizer on real photos: selection, reports, batching, seeds, redaction, exact paste-back."""

import numpy as np
import pytest
from PIL import Image

from faceanon.anonymizer import FaceAnonymizer, face_seed
from faceanon.errors import ImageInputError, WeightsNotFoundError
from faceanon.faces import align_face, face_mask
from faceanon.faces.blending import warp_mask_to_photo


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def union_of_masks(rgb, faces) -> np.ndarray:
    union = np.zeros(rgb.shape[:2], bool)
    for face in faces:
        aligned = align_face(rgb, face.landmarks)
        union |= warp_mask_to_photo(face_mask(aligned.landmarks), aligned, rgb.shape).full(rgb.shape) > 0
    return union


@pytest.fixture
def anonymizer(identity_pipeline):
    # The stand-in pipeline gives every face back unchanged, which the leak guard would (rightly) blur;
    # these tests measure the round trip, the guard has tests/test_leak_guard.py.
    return FaceAnonymizer(pipeline=identity_pipeline, watermark=False, leak_guard=False)


def test_group_photo_goes_through_the_pipeline_in_one_batched_call(
    anonymizer, identity_pipeline, group_photo_rgb
):
    result = anonymizer.anonymize(group_photo_rgb, degree=1.25, seed=7, steps=3, guidance=4.0)
    assert len(identity_pipeline.calls) == 1
    call = identity_pipeline.calls[0]
    assert len(call["conditioning_image"]) == 6 and call["source_image"] == call["conditioning_image"]
    assert (
        call["anonymization_degree"] == 1.25
        and call["guidance_scale"] == 4.0
        and call["num_inference_steps"] == 3
    )
    seeds = [generator.initial_seed() for generator in call["generator"]]
    assert seeds == [face_seed(7, i) for i in range(6)] and len(set(seeds)) == 6
    assert [r.seed for r in result.faces] == seeds
    assert result.num_changed == 6 and all(r.method == "diffusion" and r.degree == 1.25 for r in result.faces)
    assert "6 face(s) found, 6 changed" in result.message


def test_identity_generator_reproduces_the_photo(anonymizer, group_photo_rgb):
    result = anonymizer.anonymize(group_photo_rgb)
    output = np.asarray(result.image)
    union = union_of_masks(group_photo_rgb, [r.face for r in result.faces])
    assert np.array_equal(output[~union], group_photo_rgb[~union])
    assert psnr(output[union], group_photo_rgb[union]) >= 40


def test_seeds_depend_on_user_seed_and_face_index_only():
    assert face_seed(0, 0) == face_seed(0, 0) != face_seed(0, 1) != face_seed(1, 0)
    assert 0 <= face_seed(123, 4) < 2**63


def test_selected_faces_only_and_reported(anonymizer, identity_pipeline, group_photo_rgb):
    result = anonymizer.anonymize(group_photo_rgb, faces=[4, 1], seed=3)
    assert [r.changed for r in result.faces] == [False, True, False, False, True, False]
    assert result.faces[0].message == "not selected"
    seeds = [g.initial_seed() for g in identity_pipeline.calls[0]["generator"]]
    assert seeds == [face_seed(3, 1), face_seed(3, 4)]  # a face keeps its seed whatever else is chosen
    with pytest.raises(ValueError, match="numbered 0 to 5"):
        anonymizer.anonymize(group_photo_rgb, faces=[9])


def test_faces_from_an_earlier_detect_skip_detection(anonymizer, astronaut_rgb):
    faces = anonymizer.detect(astronaut_rgb)
    assert len(faces) == 1
    assert anonymizer.anonymize(astronaut_rgb, faces=faces).num_changed == 1


@pytest.mark.parametrize("method", ["blur", "pixelate", "solid"])
def test_redaction_methods_change_only_inside_the_masks(group_photo_rgb, method):
    result = FaceAnonymizer(pipeline=None).anonymize(group_photo_rgb, method=method)
    output = np.asarray(result.image)
    union = union_of_masks(group_photo_rgb, [r.face for r in result.faces])
    assert result.num_changed == 6 and all(r.method == method for r in result.faces)
    assert np.array_equal(output[~union], group_photo_rgb[~union])
    assert psnr(output[union], group_photo_rgb[union]) < 30


def test_small_faces_are_reported_and_redacted_instead(identity_pipeline, group_photo_rgb):
    small = np.asarray(Image.fromarray(group_photo_rgb).resize((320, 222), Image.LANCZOS))  # ~30 px faces
    anonymizer = FaceAnonymizer(pipeline=identity_pipeline, min_face_size=1000)
    result = anonymizer.anonymize(small)
    assert identity_pipeline.calls == []
    assert result.faces and all(r.method == "blur" and r.changed for r in result.faces)
    first_pass = [
        r for r in result.faces if not r.guard
    ]  # the guard blurs a face YuNet scores under 0.6 here
    assert first_pass and all("too small" in r.message and "blurred instead" in r.message for r in first_pass)
    untouched = FaceAnonymizer(pipeline=identity_pipeline, min_face_size=1000, small_face_method=None)
    result = untouched.anonymize(small)
    assert result.num_changed == 0 and np.array_equal(np.asarray(result.image), small)


def test_no_face_returns_the_photo_unchanged_with_a_message(anonymizer):
    blank = np.full((200, 300, 3), 90, np.uint8)
    result = anonymizer.anonymize(blank)
    assert result.faces == [] and np.array_equal(np.asarray(result.image), blank)
    assert "No face was found" in result.message


def test_without_weights_the_default_falls_back_to_blur_and_diffusion_explains(monkeypatch, astronaut_rgb):
    anonymizer = FaceAnonymizer()
    anonymizer._pipeline_error = "The diffusion weights are not downloaded. Run `faceanon download`."
    assert (
        not anonymizer.diffusion_available and "faceanon download" in anonymizer.diffusion_unavailable_reason
    )
    result = anonymizer.anonymize(astronaut_rgb)
    assert result.faces[0].method == "blur" and "faceanon download" in result.message
    with pytest.raises(WeightsNotFoundError, match="faceanon download"):
        anonymizer.anonymize(astronaut_rgb, method="diffusion")


def test_alpha_and_colour_profile_are_kept_and_no_metadata_leaks(anonymizer, astronaut_rgb, tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    alpha = np.full((512, 512), 180, np.uint8)
    path = tmp_path / "in.png"
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    Image.fromarray(np.dstack([astronaut_rgb, alpha])).save(path, icc_profile=icc, exif=exif.tobytes())
    result = anonymizer.anonymize(path, method="pixelate")
    assert result.image.mode == "RGBA" and np.array_equal(np.asarray(result.image)[..., 3], alpha)
    # The colour profile is faceanon's own sRGB profile: no byte of the input's profile is copied.
    from faceanon.media.photo import srgb_profile

    assert result.image.info.get("icc_profile") == srgb_profile() and "exif" not in result.image.info


def test_progress_is_reported_from_zero_to_one(anonymizer, astronaut_rgb):
    seen = []
    anonymizer.anonymize(astronaut_rgb, steps=4, progress=lambda fraction, text: seen.append(fraction))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 6


def test_swap_puts_the_source_face_on_every_target_face(
    anonymizer, identity_pipeline, astronaut_rgb, group_photo_rgb
):
    result = anonymizer.swap(astronaut_rgb, group_photo_rgb, seed=1, faces=[0, 2])
    call = identity_pipeline.calls[0]
    assert call["anonymization_degree"] == 0.0 and len(call["conditioning_image"]) == 2
    source = np.asarray(call["source_image"][0])
    assert all(np.array_equal(np.asarray(s), source) for s in call["source_image"])
    assert [r.changed for r in result.faces] == [True, False, True, False, False, False]
    with pytest.raises(ImageInputError, match="No face was found in the source"):
        anonymizer.swap(np.full((100, 100, 3), 50, np.uint8), group_photo_rgb)


def test_batch_size_splits_calls_but_keeps_per_face_seeds(identity_pipeline, group_photo_rgb):
    FaceAnonymizer(pipeline=identity_pipeline, batch_size=4, identity_check=False).anonymize(
        group_photo_rgb, seed=5
    )
    assert [len(c["conditioning_image"]) for c in identity_pipeline.calls] == [4, 2]
    seeds = [g.initial_seed() for c in identity_pipeline.calls for g in c["generator"]]
    assert seeds == [face_seed(5, i) for i in range(6)]


@pytest.fixture(scope="module")
def tiny_anonymizer(tmp_path_factory):
    """The real engine on tiny random checkpoints (the 12 GB weights cannot exist here), generating
    at 64x64 so a call takes about a second."""
    from faceanon.testing import tiny_pipeline

    pipe = tiny_pipeline(tmp_path_factory.mktemp("tiny"))
    pipe.set_progress_bar_config(disable=True)
    return FaceAnonymizer(pipeline=pipe, resolution=64, identity_check=False)


def test_batched_call_equals_one_by_one_calls_with_the_same_seeds(tiny_anonymizer, group_photo_rgb):
    batched = np.asarray(tiny_anonymizer.anonymize(group_photo_rgb, faces=[1, 3], seed=11, steps=1).image)
    again = np.asarray(tiny_anonymizer.anonymize(group_photo_rgb, faces=[1, 3], seed=11, steps=1).image)
    assert np.array_equal(batched, again)  # a rerun reproduces the photo exactly
    masks = {}
    for index in (1, 3):  # every face of the batch, each against its own single call
        single = np.asarray(tiny_anonymizer.anonymize(group_photo_rgb, faces=[index], seed=11, steps=1).image)
        masks[index] = changed = (single != group_photo_rgb).any(axis=2)
        assert changed.sum() > 5000
        # Batched and single convolutions may round differently in the last float bits.
        difference = np.abs(batched[changed].astype(int) - single[changed])
        assert difference.max() <= 2 and difference.mean() < 0.05
    assert not (masks[1] & masks[3]).any()  # two separate faces, each checked on its own pixels


def test_identity_check_flags_an_unchanged_face_and_redacts_it_on_request(identity_pipeline, group_photo_rgb):
    reporting = FaceAnonymizer(pipeline=identity_pipeline, watermark=False, leak_guard=False).anonymize(
        group_photo_rgb, faces=[0, 1]
    )
    assert [r.same_person for r in reporting.faces[:3]] == [True, True, None]
    assert reporting.faces[0].identity_similarity > 0.9  # the identity "generator" changed nothing
    assert "#0, #1 still look like the same person" in reporting.message
    # Beside identity, the attribute check: an unchanged face keeps its pose and expression.
    pose = reporting.faces[0].attributes
    assert pose and abs(pose["yaw_delta"]) < 2 and pose["expression_distance"] < 0.2
    strict = FaceAnonymizer(pipeline=identity_pipeline, watermark=False, on_same_person="pixelate")
    result = strict.anonymize(group_photo_rgb, faces=[0, 1])
    assert [r.method for r in result.faces[:2]] == ["pixelate", "pixelate"]
    assert "still matched the person" in result.faces[0].message and result.faces[0].same_person is False


def test_retry_regenerates_matching_faces_with_a_new_seed_and_higher_degree(identity_pipeline, astronaut_rgb):
    retrying = FaceAnonymizer(pipeline=identity_pipeline, watermark=False, on_same_person="retry")
    result = retrying.anonymize(astronaut_rgb, degree=1.2, seed=4)
    first, second = identity_pipeline.calls
    assert second["anonymization_degree"] == pytest.approx(1.3)
    assert (
        [g.initial_seed() for g in second["generator"]] == [face_seed(4, 0, attempt=1)] != [face_seed(4, 0)]
    )
    report = result.faces[0]
    assert report.seed == face_seed(4, 0, attempt=1) and report.degree == pytest.approx(1.3)
    assert "still recognizable after a retry" in report.message


def test_generated_faces_carry_the_watermark_and_nothing_outside_changes(identity_pipeline, astronaut_rgb):
    from faceanon.trust.watermark import detect_watermark

    result = FaceAnonymizer(pipeline=identity_pipeline, leak_guard=False).anonymize(astronaut_rgb)
    output = np.asarray(result.image)
    face = result.faces[0].face
    found, _ = detect_watermark(Image.fromarray(align_face(output, face.landmarks).crop))
    assert found
    union = union_of_masks(astronaut_rgb, [face])
    assert np.array_equal(output[~union], astronaut_rgb[~union])


@pytest.mark.parametrize("variant", ["exif_rotated", "greyscale", "cmyk"])
def test_rotated_greyscale_and_cmyk_photos_come_out_upright_greyscale_kept(
    grace_hopper_rgb, tmp_path, variant
):
    photo = Image.fromarray(grace_hopper_rgb)
    path = tmp_path / "in.jpg"
    if variant == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways, shown upright
        photo.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)
    else:
        photo.convert("L" if variant == "greyscale" else "CMYK").save(path, quality=95)
    result = FaceAnonymizer(pipeline=None, identity_check=False).anonymize(path, method="blur")
    assert result.image.mode == ("L" if variant == "greyscale" else "RGB") and result.image.size == photo.size
    assert result.num_changed == 1
    face = result.faces[0].face
    assert (
        face.landmarks[0, 0] < face.landmarks[1, 0] and face.landmarks[3, 1] > face.landmarks[0, 1]
    )  # upright


def test_tiny_diffusion_faces_carry_the_face_mark_inside_the_masks_only(tiny_anonymizer, group_photo_rgb):
    """The real engine on tiny random checkpoints: its faces are coloured noise (a detector does not
    find them again, and noise is the worst host for the mark), so the mark is isolated as the
    difference from the same generated crop pasted without it, and read at the face's landmarks;
    nothing outside the masks moves. tests/test_trust_watermark.py reads it from realistic faces
    that the detector finds again."""
    from faceanon.faces import paste_face
    from faceanon.trust.watermark import FACE_THRESHOLD, face_watermark_score

    generated = []
    engine = tiny_anonymizer.pipeline

    def recording(**kwargs):
        output = engine(**kwargs)
        generated.extend(np.asarray(image.convert("RGB")) for image in output.images)
        return output

    assert tiny_anonymizer.watermark  # on by default
    tiny_anonymizer._pipeline = recording
    try:
        marked = tiny_anonymizer.anonymize(group_photo_rgb, faces=[4], seed=3, steps=1)
    finally:
        tiny_anonymizer._pipeline = engine
    output = np.asarray(marked.image)
    face = marked.faces[4].face
    union = union_of_masks(group_photo_rgb, [face])
    assert np.array_equal(output[~union], group_photo_rgb[~union])
    plain = group_photo_rgb.copy()
    aligned = align_face(group_photo_rgb, face.landmarks)
    paste_face(plain, generated[0], aligned, face_mask(aligned.landmarks, aligned.size))
    mark_only = np.clip(output.astype(int) - plain + 128, 0, 255).astype(np.uint8)
    assert np.abs(mark_only.astype(int) - 128).max() <= 6
    assert face_watermark_score(mark_only, face.landmarks) >= FACE_THRESHOLD + 0.3
    assert face_watermark_score(np.full_like(mark_only, 128), face.landmarks) < FACE_THRESHOLD


def test_a_scheduler_choice_lasts_one_call(identity_pipeline, astronaut_rgb):
    # The web app shares one pipeline between users: a scheduler picked for one request must not
    # become the next request's default.
    identity_pipeline.scheduler = "the pipeline's own"
    seen = []
    anonymizer = FaceAnonymizer(
        pipeline=_Recording(identity_pipeline, seen), watermark=False, identity_check=False
    )
    anonymizer.anonymize(astronaut_rgb, scheduler="unipc")
    anonymizer.anonymize(astronaut_rgb)
    assert seen == ["unipc", "the pipeline's own"]
    assert identity_pipeline.scheduler == "the pipeline's own"


class _Recording:
    """Forwards to a pipeline stand-in, noting the scheduler in use at each call."""

    def __init__(self, pipe, seen):
        self.pipe, self.seen = pipe, seen

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @scheduler.setter
    def scheduler(self, value):
        self.pipe.scheduler = value

    def set_scheduler(self, name):
        self.pipe.scheduler = name

    def __call__(self, *args, **kwargs):
        self.seen.append(self.pipe.scheduler)
        return self.pipe(*args, **kwargs)


def test_face_seed_is_pinned():
    # Golden values: a change here changes every user's outputs for the same seed.
    assert face_seed(0, 0) == 281896945333384854
    assert face_seed(7, 3) == 7895890259719030772
    assert face_seed(4, 0, attempt=1) == 6227244346177740722


def test_frames_packed_into_one_call_equal_each_frame_alone(
    identity_pipeline, group_photo_rgb, astronaut_rgb
):
    """The seam the dataset runner and video use: requests of two frames in one generate() call give
    the same frames as anonymize_frame on each, and the call carries every face once."""
    from faceanon.anonymizer import Generation

    anonymizer = FaceAnonymizer(pipeline=identity_pipeline, watermark=False, identity_check=False)
    frames = []
    for rgb, seed in ((group_photo_rgb, 3), (astronaut_rgb, 9)):
        plans = anonymizer.plan_faces(anonymizer.detect_frame(rgb), "diffusion", degree=1.25, seed=seed)
        frames.append(anonymizer.prepare_frame(rgb, plans))
    requests = [r for frame in frames for r in frame.requests]
    crops = anonymizer.generate(requests, Generation(steps=2))
    assert (
        len(identity_pipeline.calls) == 1
        and len(identity_pipeline.calls[0]["generator"]) == len(requests) == 7
    )
    packed, start = [], 0
    for frame in frames:
        packed.append(anonymizer.finish_frame(frame, crops[start : start + len(frame.requests)]))
        start += len(frame.requests)
    for frame, result in zip(frames, packed, strict=True):
        alone = anonymizer.anonymize_frame(frame.rgb, frame.plans, Generation(steps=2))
        assert np.array_equal(alone.image, result.image)
        assert [r.seed for r in alone.faces] == [r.seed for r in result.faces]


class _ColourDonor:
    """Stands in for the diffusion model (no weights here): every new face is the astronaut's, in colour."""

    def __call__(self, source_image, conditioning_image, **kwargs):
        from types import SimpleNamespace

        from skimage import data

        donor = Image.fromarray(data.astronaut()).resize(conditioning_image[0].size)
        return SimpleNamespace(images=[donor.copy() for _ in conditioning_image])


def test_black_and_white_photos_stay_black_and_white(tmp_path, grace_hopper_rgb):
    # The donor face is not FFHQ-aligned: it lands off the original face, where the leak guard would
    # (rightly) find a face of its own.
    anonymizer = FaceAnonymizer(
        pipeline=_ColourDonor(), watermark=False, identity_check=False, leak_guard=False
    )
    grey_file = tmp_path / "grey.png"
    Image.fromarray(grace_hopper_rgb).convert("L").save(grey_file)
    result = anonymizer.anonymize(grey_file, method="diffusion")
    assert result.num_changed == 1 and result.image.mode == "L"  # a greyscale file comes back greyscale

    scan = tmp_path / "scan.png"  # a black-and-white scan stored as RGB: the new face is grey too
    Image.fromarray(grace_hopper_rgb).convert("L").convert("RGB").save(scan)
    pixels = np.asarray(anonymizer.anonymize(scan, method="diffusion").image.convert("RGB")).astype(int)
    assert (pixels.max(axis=2) - pixels.min(axis=2)).max() <= 1


def test_the_public_seam_runs_a_photo_as_anonymize_does(identity_pipeline, astronaut_rgb):
    """select_faces -> plan -> prepare_frame -> generate -> complete_frame -> photo_result (the steps a
    dataset worker runs with the crops of many photos in one call) give anonymize's result, retry and
    leak guard included."""
    from faceanon.anonymizer import Generation

    fa = FaceAnonymizer(pipeline=identity_pipeline, on_same_person="retry")
    expected = fa.anonymize(astronaut_rgb, seed=5, steps=2)
    method, note = fa.resolve_method(None)
    detected, selected = fa.select_faces(astronaut_rgb, None)
    frame = fa.prepare_frame(astronaut_rgb, fa.plan_faces(detected, method, seed=5, selected=selected))
    generation = Generation(steps=2)
    result = fa.complete_frame(frame, fa.generate(frame.requests, generation), generation)
    photo = Image.fromarray(astronaut_rgb)
    got = fa.photo_result(photo, None, result, note, None)
    assert np.array_equal(np.asarray(got.image), np.asarray(expected.image))
    assert got.message == expected.message and got.faces[0].seed == face_seed(5, 0, attempt=1)
    assert fa.no_faces_result(photo).faces == [] and fa.no_faces_result(photo).image is photo


def test_front_ends_use_only_the_public_seam():
    """The dataset runner (and the CLI, which shares its photo steps) reach no private FaceAnonymizer name."""
    import ast
    from pathlib import Path

    import faceanon

    package = Path(faceanon.__file__).parent
    private = set()
    for path in [*(package / "dataset").glob("*.py"), *(package / "cli").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                owner = node.value
                name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                if name in ("fa", "anonymizer"):
                    private.add(f"{path.name}: {name}.{node.attr}")
    assert not private, sorted(private)
