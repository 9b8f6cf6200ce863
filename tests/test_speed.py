"""Speed options (faceanon.speed): validation before any weights load, the loader applying them,
the CLI flags, and torch.compile keeping the method's processors and per-call references.

The GPU-only options (offload, xformers, CUDA timings) cannot run here: their refusals on a CPU
are tested; their figures come from `python -m benchmarks.speed --options` on a GPU."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from faceanon.errors import UnsupportedOptionError
from faceanon.speed import SpeedOptions, load_pipeline
from faceanon.testing import tiny_pipeline, tiny_pipeline_env


@pytest.fixture
def tiny_env(tmp_path, monkeypatch):
    for name, value in tiny_pipeline_env(tmp_path).items():
        monkeypatch.setenv(name, value)


def _anonymize(pipe, face, seed: int):
    return pipe(
        None,
        face,
        anonymization_degree=1.25,
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images


@pytest.mark.parametrize("bad", [dict(attention="flash"), dict(compile="fastest"), dict(offload="disk")])
def test_unknown_option_values_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SpeedOptions(**bad)


def test_offload_on_a_cpu_is_refused_before_any_weights_load(monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("weights were loaded before the option was checked")

    monkeypatch.setattr("faceanon.pipeline.FaceAnonPipeline.from_hub", must_not_load)
    with pytest.raises(UnsupportedOptionError, match="needs a CUDA device"):
        load_pipeline("cpu", speed=SpeedOptions(offload="model"))


def test_xformers_without_xformers_is_refused_with_a_way_out(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_xformers(name, *args, **kwargs):
        if name.startswith("xformers"):
            raise ImportError("No module named 'xformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xformers)
    with pytest.raises(UnsupportedOptionError, match="not installed.*default SDPA"):
        load_pipeline("cpu", speed=SpeedOptions(attention="xformers"))


def test_loader_applies_channels_last_and_outputs_stay_the_same(tiny_env):
    from benchmarks.speed_common import face_images

    face = face_images(1)[0]
    plain, device, dtype = load_pipeline("cpu")
    assert (device.type, dtype) == ("cpu", torch.float32)
    conv = plain.unet.conv_in.weight
    assert not conv.is_contiguous(memory_format=torch.channels_last)  # the CPU default: off

    fast, _, _ = load_pipeline("cpu", speed=SpeedOptions(channels_last=True))
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(_anonymize(fast, face, 0) - _anonymize(plain, face, 0)).max() <= 1e-4


def test_cli_speed_flags_reach_the_anonymizer():
    from faceanon.cli import build_parser
    from faceanon.speed import speed_options_from_args

    args = build_parser().parse_args(
        ["anonymize", "in.jpg", "-o", "out", "--compile", "--no-channels-last", "--offload"]
    )
    assert speed_options_from_args(args) == SpeedOptions(
        compile="default", channels_last=False, offload="model"
    )
    args = build_parser().parse_args(["anonymize", "in.jpg", "-o", "out"])
    assert speed_options_from_args(args) == SpeedOptions()


def test_cli_offload_without_a_gpu_says_what_to_do(tiny_env, grace_hopper_path, tmp_path, capsys):
    from faceanon.cli import main

    code = main(
        [
            "anonymize",
            str(grace_hopper_path),
            "-o",
            str(tmp_path / "out.jpg"),
            "--device",
            "cpu",
            "--offload",
            "--quiet",
        ]
    )
    assert code == 1
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out.jpg").exists()


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on a CPU needs a C++ compiler",
)
def test_compiled_unet_follows_each_calls_references(tmp_path):
    """The compiled UNet must read each call's reference keys/values, not the first call's."""
    from benchmarks.speed_common import face_images

    pipe = tiny_pipeline(tmp_path)
    face_a, face_b = face_images(2)
    eager_a, eager_b = _anonymize(pipe, face_a, 0), _anonymize(pipe, face_b, 1)
    assert np.abs(eager_a - eager_b).max() > 0.1  # the two calls really differ

    pipe.compile_unet()
    compiled_a, compiled_b = _anonymize(pipe, face_a, 0), _anonymize(pipe, face_b, 1)
    assert np.abs(compiled_a - eager_a).max() <= 1e-4
    assert np.abs(compiled_b - eager_b).max() <= 1e-4


def test_batch_cap_follows_free_gpu_memory_and_the_measured_cost_per_face(tmp_path, monkeypatch):
    """The arithmetic of FaceAnonPipeline.suggested_batch_size, with the GPU's free memory mocked
    (no GPU here): 80% of what is free, 1.1 GiB per 512x512 face in fp32, half that in fp16."""
    from faceanon.pipeline import FaceAnonPipeline

    pipe = tiny_pipeline(tmp_path)
    assert pipe.suggested_batch_size() is None  # CPU: no cap
    monkeypatch.setattr(FaceAnonPipeline, "_execution_device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 16 * 2**30))
    assert pipe.suggested_batch_size() == 7  # 8 GiB / 1.1 GiB
    pipe.to(dtype=torch.float16)
    assert pipe.suggested_batch_size() == 14
    assert pipe.suggested_batch_size(1024, 1024) == 3
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**28, 16 * 2**30))
    assert pipe.suggested_batch_size() == 1  # never 0: one face always goes


def test_web_app_takes_the_same_flags_and_says_why_an_option_cannot_run():
    from faceanon.speed import speed_options_from_args
    from faceanon.webapp.server import parse_args
    from faceanon.webapp.service import ModelHost

    args = parse_args(["--compile", "reduce-overhead", "--offload", "--device", "cpu"])
    speed = speed_options_from_args(args)
    assert speed == SpeedOptions(compile="reduce-overhead", offload="model")
    host = ModelHost(device="cpu", speed=speed).start(background=False)
    assert host.state == ModelHost.UNAVAILABLE
    assert "needs a CUDA device" in host.reason


def test_fp16_vae_overflow_is_decoded_again_in_fp32(tmp_path):
    """SD 2.1's VAE can overflow in fp16; then that decode is redone in fp32. A real overflow: the
    decoder's first convolution scaled so that fp16 (max 65504) cannot hold its output."""
    pipe = tiny_pipeline(tmp_path, torch_dtype=torch.float16)
    with torch.no_grad():
        pipe.vae.decoder.conv_in.weight.mul_(1e5)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = pipe.vae.decode(latents.half() / pipe.vae.config.scaling_factor).sample
    assert not torch.isfinite(raw).all()  # fp16 really overflows

    image = pipe.decode_latents(latents)
    assert torch.isfinite(image).all()
    assert pipe.vae.dtype == torch.float16  # back to fp16 for the next call
