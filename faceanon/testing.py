"""Random-weight checkpoints in the exact layout of the hub repos, for tests and benchmarks.

The real weights (about 12 GB) cannot be downloaded everywhere; these builders give the same
folders, configs and safetensors files with tiny (or real SD 2.1 / CLIP ViT-L/14) sizes, so that the
loading code under test is the code that loads the real weights:

    <root>/face-anon-simple/{unet,referencenet,conditioning_referencenet}/
        config.json  diffusion_pytorch_model.safetensors      (reference nets: "ReferenceNetModel")
    <root>/stable-diffusion-2-1/vae/config.json, diffusion_pytorch_model.safetensors
    <root>/clip-vit-large-patch14/config.json, model.safetensors   (a full CLIP: text + vision)

Usage in a test::

    paths = build_tiny_checkpoints(tmp_path)
    pipe = FaceAnonPipeline.from_hub(**paths)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from faceanon.configs import VAE_SCALING_FACTOR

FACE_MODEL_FOLDERS = ("unet", "referencenet", "conditioning_referencenet")


def unet_config(size: str = "tiny") -> dict:
    """SD 2.1's UNet config, or a tiny one with the same block structure."""
    if size == "sd21":
        return dict(
            sample_size=96,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            attention_head_dim=(5, 10, 20, 20),
            cross_attention_dim=1024,
            use_linear_projection=True,
            upcast_attention=True,
        )
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        norm_num_groups=8,
        block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4, 4),
        cross_attention_dim=32,
        use_linear_projection=True,
        upcast_attention=True,
    )


def vae_config(size: str = "tiny", blocks: int = 4) -> dict:
    """SD 2.1's VAE config (4 blocks: 8x downsampling), or a tiny one; ``blocks`` > 4 downsamples
    more (7: 512x512 pixels -> 8x8 latents), so that tests can run 512x512 calls quickly."""
    common = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        scaling_factor=VAE_SCALING_FACTOR,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
    )
    if size == "sd21":
        return dict(common, block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=768)
    return dict(
        common,
        block_out_channels=(8,) + (16,) * (blocks - 1),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )


def clip_config(size: str = "tiny") -> CLIPConfig:
    if size == "sd21":  # CLIP ViT-L/14
        vision = dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=24,
            image_size=224,
            patch_size=14,
            projection_dim=768,
        )
        text = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=224,
        patch_size=32,
    )
    text = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        max_position_embeddings=77,
        bos_token_id=998,
        eos_token_id=999,
        pad_token_id=1,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def build_components(
    size: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32, vae_blocks: int = 4
) -> dict:
    """In-memory random-weight components (unet, referencenet, conditioning_referencenet, vae,
    image_encoder). Leaves torch's global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components = {name: UNet2DConditionModel(**unet_config(size)) for name in FACE_MODEL_FOLDERS}
        components["vae"] = AutoencoderKL(**vae_config(size, vae_blocks))
        components["image_encoder"] = CLIPVisionModel(
            CLIPVisionConfig(**clip_config(size).vision_config.to_dict())
        )
        _perturb_zero_initialised(components)
    if dtype != torch.float32:
        components = {name: module.to(dtype) for name, module in components.items()}
    return {name: module.eval() for name, module in components.items()}


def _perturb_zero_initialised(components: dict) -> None:
    # diffusers zero-initialises some output layers; random weights everywhere make the tests
    # sensitive to every path through the model.
    for name in FACE_MODEL_FOLDERS:
        for parameter in components[name].parameters():
            if parameter.ndim > 0 and torch.count_nonzero(parameter) == 0:
                parameter.data.normal_(0, 0.02)


def build_tiny_checkpoints(root: str | Path, seed: int = 0, vae_blocks: int = 4) -> dict[str, str]:
    """Write tiny random checkpoints in the hub repos' layout under ``root``.

    Returns the keyword arguments of :meth:`FaceAnonPipeline.from_hub` that point at them.
    Reuses what an earlier call wrote to ``root`` with the same seed and VAE. ``vae_blocks=7``
    gives a VAE that downsamples 64x (512x512 calls on 8x8 latents: seconds, for examples).
    """
    root = Path(root)
    paths = {
        "face_model": root / "face-anon-simple",
        "vae": root / "stable-diffusion-2-1",
        "image_encoder": root / "clip-vit-large-patch14",
    }
    stamp = root / ".faceanon-tiny.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {"seed": seed, "vae_blocks": vae_blocks}:
        return {k: str(v) for k, v in paths.items()}

    components = build_components("tiny", seed, vae_blocks=vae_blocks)
    for name in FACE_MODEL_FOLDERS:
        folder = paths["face_model"] / name
        components[name].save_pretrained(folder, safe_serialization=True)
        if name != "unet":  # the hub's reference nets declare the reference code's class name
            _set_class_name(folder / "config.json", "ReferenceNetModel")
    components["vae"].save_pretrained(paths["vae"] / "vae", safe_serialization=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        clip = CLIPModel(clip_config("tiny"))
    clip.vision_model.load_state_dict(components["image_encoder"].state_dict())
    clip.save_pretrained(paths["image_encoder"], safe_serialization=True)
    stamp.write_text(json.dumps({"seed": seed, "vae_blocks": vae_blocks}))
    return {k: str(v) for k, v in paths.items()}


def _set_class_name(config_path: Path, class_name: str) -> None:
    config = json.loads(config_path.read_text())
    config["_class_name"] = class_name
    config_path.write_text(json.dumps(config, indent=2))


def tiny_pipeline_env(root: str | Path, seed: int = 0, vae_blocks: int = 4) -> dict[str, str]:
    """Environment variables that point faceanon's loader at tiny checkpoints under ``root``."""
    paths = build_tiny_checkpoints(root, seed, vae_blocks)
    return {
        "FACEANON_FACE_MODEL": paths["face_model"],
        "FACEANON_VAE": paths["vae"],
        "FACEANON_IMAGE_ENCODER": paths["image_encoder"],
    }


def tiny_pipeline(root: str | Path, seed: int = 0, **kwargs):
    """A FaceAnonPipeline on tiny checkpoints, loaded through the real loading code."""
    from faceanon.pipeline import FaceAnonPipeline

    return FaceAnonPipeline.from_hub(**build_tiny_checkpoints(root, seed), **kwargs)
