"""Where the diffusion weights come from, how they are downloaded, verified and loaded.

The weights card's manifest (``weights_card/manifest.json``) names, per component, the hub repo,
the pinned revision and the files to fetch (``allow_patterns``: the face repo holds three 3.46 GB
UNets, the CLIP repo a full text+vision checkpoint, and nothing else is downloaded). Each source
may instead be given as a local folder, as ``repo@revision``, or through an environment variable
(``FACEANON_FACE_MODEL``, ``FACEANON_VAE``, ``FACEANON_IMAGE_ENCODER``). The Hugging Face cache,
``HF_HOME`` and ``HF_HUB_OFFLINE`` work as everywhere on the hub.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from faceanon.errors import WeightsNotFoundError

MANIFEST_ENV = "FACEANON_WEIGHTS_MANIFEST"
DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "weights_card" / "manifest.json"
COMPONENTS = ("face_model", "vae", "image_encoder")
_FACE_MODEL_FOLDERS = ("unet", "referencenet", "conditioning_referencenet")


def load_manifest(path: str | Path | None = None) -> dict:
    path = Path(path or os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)
    manifest = json.loads(path.read_text())
    return {k: v for k, v in manifest.items() if not k.startswith("_")}


@dataclass
class WeightSource:
    """One component's source: a local folder, or a hub repo at a revision."""

    component: str
    repo_id: str | None
    revision: str | None
    folder: Path | None
    files: dict  # path in repo -> {"size_bytes", "sha256", ...}
    env: str

    @property
    def label(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)


def resolve_source(component: str, spec: str | os.PathLike | None = None, manifest: dict | None = None) -> WeightSource:
    """The source of ``component``: the argument, else its environment variable, else the card."""
    entry = (manifest or load_manifest())[component]
    spec = spec if spec is not None else os.environ.get(entry["env"]) or None
    if spec is None:
        return WeightSource(component, entry["repo_id"], entry.get("revision"), None, entry["files"], entry["env"])
    spec = str(spec)
    if Path(spec).expanduser().is_dir():
        return WeightSource(component, None, None, Path(spec).expanduser(), entry["files"], entry["env"])
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise WeightsNotFoundError(
            f"The {_describe(component)} folder {spec!r} does not exist. Check the path given in "
            f"{entry['env']} (or the argument), or unset it to use {entry['repo_id']} from the hub."
        )
    repo_id, _, revision = spec.partition("@")
    is_default_repo = repo_id == entry["repo_id"]
    revision = revision or (entry.get("revision") if is_default_repo else None)
    # Another repo must have the same layout; the card's sizes and hashes only hold for its own.
    files = entry["files"] if is_default_repo else {name: {} for name in entry["files"]}
    return WeightSource(component, repo_id, revision, None, files, entry["env"])


def fetch(source: WeightSource, local_files_only: bool | None = None, verify: bool = True) -> Path:
    """A local folder holding ``source``'s files: the folder itself, or the hub snapshot (downloaded
    unless ``local_files_only`` or ``HF_HUB_OFFLINE``). Raises WeightsNotFoundError with a way out."""
    if source.folder is not None:
        return source.folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        path = Path(snapshot_download(
            source.repo_id, revision=source.revision, allow_patterns=list(source.files),
            local_files_only=bool(local_files_only),
        ))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError, ValueError) as error:
        raise WeightsNotFoundError(_missing_message(source, error)) from error
    missing = [f for f in source.files if not (path / f).is_file()]
    if missing:
        raise WeightsNotFoundError(_missing_message(source, f"files missing from the download: {missing}"))
    if verify:
        verify_files(path, source.files)
    return path


def verify_files(folder: Path, files: dict) -> None:
    """Check each file's size and sha256 where the manifest gives them."""
    for name, expected in files.items():
        path = folder / name
        size = expected.get("size_bytes")
        if size is not None and path.stat().st_size != size:
            raise WeightsNotFoundError(
                f"{path} has {path.stat().st_size} bytes, the weights card expects {size}: the download is "
                "incomplete or corrupt. Delete it and run `faceanon download` again."
            )
        digest = expected.get("sha256")
        if digest is not None and sha256_of(path) != digest:
            raise WeightsNotFoundError(
                f"{path} does not match the sha256 of the weights card: the file is corrupt or not the "
                "pinned version. Delete it and run `faceanon download` again."
            )


def sha256_of(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _describe(component: str) -> str:
    return {"face_model": "face model (unet, referencenet, conditioning_referencenet)",
            "vae": "Stable Diffusion 2.1 VAE", "image_encoder": "CLIP ViT-L/14 image encoder"}[component]


def _missing_message(source: WeightSource, cause) -> str:
    return (
        f"The diffusion weights are not available: the {_describe(source.component)} '{source.label}' is not in "
        f"the Hugging Face cache and could not be downloaded ({type(cause).__name__ if isinstance(cause, Exception) else cause}).\n"
        "Two ways out:\n"
        "  1. download the weights once, on a machine with network access: `faceanon download` "
        "(about 12 GB into the Hugging Face cache; set HF_HOME to choose where);\n"
        f"  2. use a local copy: set {source.env}=/path/to/folder (or pass it to FaceAnonPipeline.from_hub).\n"
        "The blur, pixelate and solid redaction methods work without these weights."
    )


# ---------------------------------------------------------------------------------------------
# Loading


def default_device_and_dtype(device=None, torch_dtype=None) -> tuple[torch.device, torch.dtype]:
    """CUDA with fp16 when there is a GPU, else CPU with fp32 (fp16 is slow or unsupported on CPUs)."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if torch_dtype is None:
        torch_dtype = torch.float16 if device.type == "cuda" else torch.float32
    return device, torch_dtype


def _face_model_folder(path: Path, source: WeightSource) -> Path:
    missing = [f for f in _FACE_MODEL_FOLDERS if not (path / f / "config.json").is_file()]
    if missing:
        raise WeightsNotFoundError(
            f"{path} is not a face model folder: it lacks {', '.join(m + '/' for m in missing)}. It must hold "
            f"unet/, referencenet/ and conditioning_referencenet/, as hkung/face-anon-simple does "
            f"(set {source.env} to such a folder, or run `faceanon download`)."
        )
    return path


def _vae_subfolder(path: Path, source: WeightSource) -> str | None:
    if (path / "vae" / "config.json").is_file():
        return "vae"
    if (path / "config.json").is_file():
        return None
    raise WeightsNotFoundError(
        f"{path} holds no VAE: expected vae/config.json (a Stable Diffusion 2.1 repo layout) or config.json "
        f"(a VAE folder). Set {source.env} to such a folder, or run `faceanon download`."
    )


def _check_loading_info(name: str, info: dict, ignore_unexpected: tuple[str, ...] = ()) -> None:
    # A missing key would silently leave random weights in the model: refuse.
    missing = list(info.get("missing_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(ignore_unexpected)]
    if missing or mismatched or unexpected:
        raise WeightsNotFoundError(
            f"The {name} weights do not fit the expected architecture (missing: {missing[:5]}, "
            f"unexpected: {unexpected[:5]}, mismatched: {mismatched[:5]}). Check that the folder holds the "
            "right checkpoint, or run `faceanon download` again."
        )


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def load_components(face_model=None, vae=None, image_encoder=None, torch_dtype=None, device=None,
                    local_files_only=None, verify: bool = True) -> dict:
    """Fetch (if needed) and load unet, referencenet, conditioning_referencenet, vae, image_encoder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionModel

    device, torch_dtype = default_device_and_dtype(device, torch_dtype)
    manifest = load_manifest()
    sources = {c: resolve_source(c, s, manifest) for c, s in zip(COMPONENTS, (face_model, vae, image_encoder), strict=True)}
    paths = {c: fetch(s, local_files_only, verify) for c, s in sources.items()}  # all errors before loading

    face_path = _face_model_folder(paths["face_model"], sources["face_model"])
    components = {}
    for name in _FACE_MODEL_FOLDERS:
        # The reference nets' configs say "ReferenceNetModel": their weights are a stock UNet's.
        model, info = UNet2DConditionModel.from_pretrained(
            face_path, subfolder=name, torch_dtype=torch_dtype, use_safetensors=True, output_loading_info=True)
        _check_loading_info(name, info)
        components[name] = model
    vae_model, info = AutoencoderKL.from_pretrained(
        paths["vae"], subfolder=_vae_subfolder(paths["vae"], sources["vae"]), torch_dtype=torch_dtype,
        use_safetensors=True, output_loading_info=True)
    _check_loading_info("VAE", info)
    components["vae"] = vae_model
    with _quiet_transformers():  # its load report lists the unused text tower, key by key
        encoder, info = CLIPVisionModel.from_pretrained(
            paths["image_encoder"], dtype=torch_dtype, use_safetensors=True, output_loading_info=True)
    _check_loading_info("CLIP image encoder", info, ignore_unexpected=("text_model.", "text_projection",
                                                                      "visual_projection", "logit_scale"))
    components["image_encoder"] = encoder
    return {name: module.to(device).eval() for name, module in components.items()}


def download_weights(components=COMPONENTS, local_files_only: bool = False, verify: bool = True) -> dict[str, Path]:
    """Download (or find in the cache) each component's pinned files; verify them. For `faceanon download`."""
    manifest = load_manifest()
    return {c: fetch(resolve_source(c, None, manifest), local_files_only, verify) for c in components}


def weights_status() -> tuple[bool, str]:
    """Whether all weights are available locally without network, and if not, why."""
    try:
        manifest = load_manifest()
        for component in COMPONENTS:
            fetch(resolve_source(component, None, manifest), local_files_only=True, verify=False)
    except WeightsNotFoundError as error:
        return False, str(error)
    return True, ""
