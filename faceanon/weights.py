"""Where the diffusion weights come from, how they are downloaded, verified and loaded.

The weights card's manifest (``weights_card/manifest.json``) names, per component, the hub repo,
the pinned revision and the files to fetch (``allow_patterns``: the face repo holds three 3.46 GB
UNets, the CLIP repo a full text+vision checkpoint, and nothing else is downloaded). Each source
may instead be given as a local folder, as ``repo@revision``, or through an environment variable
(``FACEANON_FACE_MODEL``, ``FACEANON_VAE``, ``FACEANON_IMAGE_ENCODER``). The Hugging Face cache,
``HF_HOME`` and ``HF_HUB_OFFLINE`` work as everywhere on the hub.

Only safetensors files are loaded, never ``.bin`` files: those are Python pickles, and unpickling
one can run any code its author put in it. Local folders are verified like downloads: every file
of the card present, sizes and sha256 where the card gives them, and the tensor names and shapes
of each safetensors file against the architecture its config.json describes.
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
    origin: str = "card"  # "card" (the weights card's default), "env" (its variable) or "argument"

    @property
    def label(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)

    @property
    def given_as(self) -> str:
        """How the user chose this source, for messages."""
        return {
            "env": f"the {self.env} environment variable",
            "argument": "the argument of from_hub",
            "card": "the weights card",
        }[self.origin]


def resolve_source(
    component: str, spec: str | os.PathLike | None = None, manifest: dict | None = None
) -> WeightSource:
    """The source of ``component``: the argument, else its environment variable, else the card."""
    entry = (manifest or load_manifest())[component]
    origin = "argument" if spec is not None else "env" if os.environ.get(entry["env"]) else "card"
    spec = spec if spec is not None else os.environ.get(entry["env"]) or None
    if spec is None:
        return WeightSource(
            component, entry["repo_id"], entry.get("revision"), None, entry["files"], entry["env"]
        )
    spec = str(spec)
    if Path(spec).expanduser().is_dir():
        return WeightSource(
            component, None, None, Path(spec).expanduser(), entry["files"], entry["env"], origin
        )
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        where = f"The folder you set in {entry['env']}" if origin == "env" else "The folder given to from_hub"
        raise WeightsNotFoundError(
            f"{where} for the {_describe(component)}, {spec!r}, does not exist. Correct the path, or "
            f"{'unset ' + entry['env'] if origin == 'env' else 'pass None'} to use {entry['repo_id']} "
            "from the hub (`faceanon download` fetches it)."
        )
    repo_id, _, revision = spec.partition("@")
    is_default_repo = repo_id == entry["repo_id"]
    revision = revision or (entry.get("revision") if is_default_repo else None)
    # Another repo must have the same layout; the card's sizes and hashes only hold for its own.
    files = entry["files"] if is_default_repo else {name: {} for name in entry["files"]}
    return WeightSource(component, repo_id, revision, None, files, entry["env"], origin)


def fetch(source: WeightSource, local_files_only: bool | None = None, verify: bool = True) -> Path:
    """A local folder holding ``source``'s files: the folder itself (checked), or the hub snapshot
    (downloaded unless ``local_files_only`` or ``HF_HUB_OFFLINE``). ``verify`` adds the sha256 of
    every file the card gives one for. Raises WeightsNotFoundError saying which source is wrong."""
    if source.folder is not None:
        verify_folder(source, source.folder, hashes=verify)
        return source.folder
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    download_tried = not local_files_only and not constants.HF_HUB_OFFLINE
    try:
        path = Path(
            snapshot_download(
                source.repo_id,
                revision=source.revision,
                allow_patterns=list(source.files),
                local_files_only=bool(local_files_only),
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError, ValueError) as error:
        raise WeightsNotFoundError(_missing_message(source, error, download_tried)) from error
    verify_folder(source, path, hashes=verify)
    return path


def verify_folder(source: WeightSource, folder: Path, hashes: bool = True) -> None:
    """Check a folder of ``source``: every file of the card present (safetensors, not ``.bin``),
    sizes, sha256 (when ``hashes``) where the card gives them, and each safetensors file's tensors
    against its config. Raises WeightsNotFoundError naming the component, folder and file."""
    layout = _layout(source, folder)
    for name, expected in source.files.items():
        path = folder / layout(name)
        if not path.is_file():
            raise WeightsNotFoundError(_wrong(source, folder, f"it lacks {layout(name)}{_bin_note(path)}"))
        size = expected.get("size_bytes")
        if size is not None and path.stat().st_size != size:
            raise WeightsNotFoundError(
                _wrong(
                    source,
                    folder,
                    f"{layout(name)} has {path.stat().st_size} bytes, the weights card expects {size} "
                    "(an incomplete or corrupt copy)",
                )
            )
        digest = expected.get("sha256")
        if hashes and digest is not None and sha256_of(path) != digest:
            raise WeightsNotFoundError(
                _wrong(
                    source,
                    folder,
                    f"{layout(name)} does not match the sha256 of the weights card (a corrupt copy, "
                    "or not the pinned version)",
                )
            )
    for name in source.files:
        if name.endswith(".safetensors"):
            problem = tensor_problem(source.component, folder / layout(name))
            if problem:
                raise WeightsNotFoundError(_wrong(source, folder, f"{layout(name)} {problem}"))


def _layout(source: WeightSource, folder: Path):
    """Maps a card path to the folder's: a VAE may be a repo (vae/...) or the VAE folder itself."""
    if source.component == "vae" and not (folder / "vae").is_dir() and (folder / "config.json").is_file():
        return lambda name: name.removeprefix("vae/")
    return lambda name: name


def _bin_note(path: Path) -> str:
    pickles = sorted(p.name for p in path.parent.glob("*.bin")) if path.parent.is_dir() else []
    if path.suffix != ".safetensors" or not pickles:
        return ""
    return (
        f" (it holds {', '.join(pickles)} instead: faceanon loads only safetensors, because a .bin file is a "
        "Python pickle and loading one can run any code inside it; convert it with safetensors' "
        "`save_file` on a machine you trust, or download the safetensors files)"
    )


def tensor_problem(component: str, path: Path) -> str:
    """What is wrong with the tensors of a safetensors file against its config.json ("" if nothing):
    names missing or unexpected, shapes that differ. Reads the file's header only."""
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as error:  # a truncated or non-safetensors file
        return f"is not a readable safetensors file ({type(error).__name__})"
    try:
        expected = _expected_tensors(component, path.parent)
    except Exception as error:
        return f"has no usable config.json beside it ({type(error).__name__}: {error})"
    missing = [k for k in expected if k not in found]
    unexpected = [
        k for k in found if k not in expected and not k.startswith(_IGNORED_KEYS.get(component, ()))
    ]
    mismatched = [k for k in expected if k in found and found[k] != expected[k]]
    if not (missing or unexpected or mismatched):
        return ""
    parts = [
        f"{label} {keys[:3]}{' and more' if len(keys) > 3 else ''} ({len(keys)})"
        for label, keys in (
            ("lacks", missing),
            ("has unexpected", unexpected),
            ("has other shapes for", mismatched),
        )
        if keys
    ]
    return "does not fit its config.json: it " + "; ".join(parts)


_IGNORED_KEYS = {"image_encoder": ("text_model.", "text_projection", "visual_projection", "logit_scale")}


def _expected_tensors(component: str, folder: Path) -> dict[str, tuple]:
    """Tensor names and shapes of the model a config describes, built without memory (meta device)."""
    with torch.device("meta"):
        if component == "image_encoder":
            from transformers import CLIPConfig, CLIPVisionConfig, CLIPVisionModel

            config = json.loads((folder / "config.json").read_text())
            vision = (
                CLIPConfig.from_dict(config).vision_config
                if "vision_config" in config
                else CLIPVisionConfig.from_dict(config)
            )
            # A full CLIP checkpoint names the vision tower's tensors "vision_model.*".
            return {
                k if k.startswith("vision_model.") else f"vision_model.{k}": tuple(v.shape)
                for k, v in CLIPVisionModel(vision).state_dict().items()
            }
        else:
            from diffusers import AutoencoderKL, UNet2DConditionModel

            cls = AutoencoderKL if component == "vae" else UNet2DConditionModel
            model = cls.from_config(cls.load_config(folder))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _wrong(source: WeightSource, folder: Path, problem: str) -> str:
    if source.folder is None:  # the hub cache
        return (
            f"The downloaded {_describe(source.component)} ({source.label}) is wrong: {problem}. "
            "Delete it from the Hugging Face cache and run `faceanon download` again."
        )
    where = (
        f"The folder you set in {source.env}" if source.origin == "env" else "The folder given to from_hub"
    )
    return (
        f"{where} for the {_describe(source.component)} is wrong: {problem}. Folder: {folder}. Point it at a "
        f"complete copy of {_card_repo(source)} (safetensors files), or "
        f"{'unset ' + source.env if source.origin == 'env' else 'pass None'} to use the hub weights "
        "(`faceanon download` fetches them)."
    )


def _card_repo(source: WeightSource) -> str:
    return load_manifest()[source.component]["repo_id"]


def sha256_of(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _describe(component: str) -> str:
    return {
        "face_model": "face model (unet, referencenet, conditioning_referencenet)",
        "vae": "Stable Diffusion 2.1 VAE",
        "image_encoder": "CLIP ViT-L/14 image encoder",
    }[component]


def _missing_message(source: WeightSource, cause, download_tried: bool) -> str:
    chosen = "" if source.origin == "card" else f" (chosen by {source.given_as})"
    reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
    if download_tried:
        what = (
            f"the {_describe(source.component)} '{source.label}'{chosen} could not be downloaded ({reason}). "
            "Check the network and the repo id, then run `faceanon download` again"
        )
    else:
        from huggingface_hub import constants

        offline = " (HF_HUB_OFFLINE is set, so nothing was downloaded)" if constants.HF_HUB_OFFLINE else ""
        what = (
            f"the {_describe(source.component)} '{source.label}'{chosen} is not downloaded yet: it is not in "
            f"the Hugging Face cache{offline}"
        )
    return (
        f"The diffusion weights are not available: {what}.\n"
        "Two ways out:\n"
        "  1. download the weights once, on a machine with network access: `faceanon download` "
        "(about 12 GB into the Hugging Face cache; set HF_HOME to choose where);\n"
        f"  2. use a local copy: set {source.env}=/path/to/folder "
        "(or pass it to FaceAnonPipeline.from_hub).\n"
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
            f"{path} is not a face model folder: it lacks {', '.join(m + '/' for m in missing)}. "
            f"It must hold unet/, referencenet/ and conditioning_referencenet/, as hkung/face-anon-simple "
            f"does (set {source.env} to such a folder, or run `faceanon download`)."
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


def load_components(
    face_model=None,
    vae=None,
    image_encoder=None,
    torch_dtype=None,
    device=None,
    local_files_only=None,
    verify: bool = True,
) -> dict:
    """Fetch (if needed) and load unet, referencenet, conditioning_referencenet, vae, image_encoder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionModel

    device, torch_dtype = default_device_and_dtype(device, torch_dtype)
    manifest = load_manifest()
    sources = {
        c: resolve_source(c, s, manifest)
        for c, s in zip(COMPONENTS, (face_model, vae, image_encoder), strict=True)
    }
    paths = {c: fetch(s, local_files_only, verify) for c, s in sources.items()}  # all errors before loading

    face_path = _face_model_folder(paths["face_model"], sources["face_model"])
    components = {}
    for name in _FACE_MODEL_FOLDERS:
        # The reference nets' configs say "ReferenceNetModel": their weights are a stock UNet's.
        model, info = UNet2DConditionModel.from_pretrained(
            face_path, subfolder=name, torch_dtype=torch_dtype, use_safetensors=True, output_loading_info=True
        )
        _check_loading_info(name, info)
        components[name] = model
    vae_model, info = AutoencoderKL.from_pretrained(
        paths["vae"],
        subfolder=_vae_subfolder(paths["vae"], sources["vae"]),
        torch_dtype=torch_dtype,
        use_safetensors=True,
        output_loading_info=True,
    )
    _check_loading_info("VAE", info)
    components["vae"] = vae_model
    with _quiet_transformers():  # its load report lists the unused text tower, key by key
        encoder, info = CLIPVisionModel.from_pretrained(
            paths["image_encoder"], dtype=torch_dtype, use_safetensors=True, output_loading_info=True
        )
    _check_loading_info(
        "CLIP image encoder",
        info,
        ignore_unexpected=("text_model.", "text_projection", "visual_projection", "logit_scale"),
    )
    components["image_encoder"] = encoder
    return {name: module.to(device).eval() for name, module in components.items()}


def download_weights(
    components=COMPONENTS, local_files_only: bool = False, verify: bool = True
) -> dict[str, Path]:
    """Download (or find in the cache) each component's pinned files; verify them. For `faceanon download`."""
    manifest = load_manifest()
    return {c: fetch(resolve_source(c, None, manifest), local_files_only, verify) for c in components}


def weights_status(hashes: bool = False) -> tuple[bool, str]:
    """Whether all weights are available locally without network, and if not, the precise reason:
    which source (the weights card's, or the folder set in FACEANON_*), and what is wrong with it.

    Checks files, sizes and the safetensors headers against their configs; the sha256 of every
    file (12 GB to read) only with ``hashes``. Never downloads."""
    try:
        manifest = load_manifest()
        for component in COMPONENTS:
            fetch(resolve_source(component, None, manifest), local_files_only=True, verify=hashes)
    except WeightsNotFoundError as error:
        return False, str(error)
    return True, ""
