"""Helpers both speed benchmarks use (benchmarks/speed.py and benchmarks/speed_options.py): the
faces, the random-weight pipeline, FLOP counting, timing synchronisation, TF32 and peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import threading
from collections.abc import Callable

import numpy as np
import PIL.Image
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

# ---------------------------------------------------------------------------------------------
# Inputs


def face_images(count: int) -> list[PIL.Image.Image]:
    """Real faces that ship inside installed packages (public domain): NASA's astronaut portrait
    (skimage) and the US Navy's Grace Hopper (matplotlib), as crops, mirror images and re-crops."""
    import matplotlib
    from skimage import data

    astronaut = PIL.Image.fromarray(data.astronaut())
    hopper = PIL.Image.open(
        os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    ).convert("RGB")
    crops = [
        astronaut.crop((140, 40, 300, 200)),
        hopper.crop((120, 60, 400, 340)),
        astronaut.crop((130, 30, 310, 210)).transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT),
        hopper.crop((100, 40, 420, 360)).transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT),
        astronaut.crop((150, 50, 290, 190)),
        hopper.crop((140, 80, 380, 320)),
    ]
    return [crops[i % len(crops)] for i in range(count)]


def build_pipeline(size: str, device: str, scheduler: str, seed: int = 0):
    """A FaceAnonPipeline on random-weight components of ``size`` (fp32), on ``device``."""
    from faceanon.pipeline import FaceAnonPipeline, default_feature_extractor
    from faceanon.schedulers import make_scheduler
    from faceanon.testing import build_components

    components = build_components(size, seed=seed)
    pipe = FaceAnonPipeline(
        **components, feature_extractor=default_feature_extractor(), scheduler=make_scheduler(scheduler)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# ---------------------------------------------------------------------------------------------
# Measuring


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's flop table has the CUDA SDPA kernels but not the CPU one.
CUSTOM_FLOPS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    CUSTOM_FLOPS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS)


@contextlib.contextmanager
def around_component_calls(pipe, around: Callable[[str, Callable[[], object]], object]):
    """Route every call of each component (the three UNets, CLIP, VAE encode / decode) through
    ``around(label, call)`` while the block runs; ``around`` must return ``call()``'s result."""
    patched = []

    def wrap(owner, attribute: str, label: str):
        original = getattr(owner, attribute)

        def wrapped(*args, **kwargs):
            return around(label, lambda: original(*args, **kwargs))

        object.__setattr__(owner, attribute, wrapped)
        patched.append((owner, attribute))

    for name in ("unet", "referencenet", "conditioning_referencenet", "image_encoder"):
        wrap(getattr(pipe, name), "forward", name)
    wrap(pipe.vae, "encode", "vae.encode")
    wrap(pipe.vae, "decode", "vae.decode")
    try:
        yield
    finally:
        for owner, attribute in patched:
            object.__delattr__(owner, attribute)


@contextlib.contextmanager
def count_component_flops(pipe):
    """Count FLOPs per call of each component (and in total) while the block runs.

    Yields ``(calls, total)``: ``calls`` is filled with ``(component, flops)`` in call order;
    ``total`` is the FlopCounterMode around everything (``total.get_total_flops()``)."""
    calls: list[tuple[str, int]] = []

    def counted(label, call):
        mode = flop_counter()
        try:
            with mode:
                return call()
        finally:  # the optimised reference nets stop early by raising
            calls.append((label, mode.get_total_flops()))

    total = flop_counter()
    with around_component_calls(pipe, counted), total:
        yield calls, total


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def set_tf32(convolutions: bool, matmuls: bool) -> None:
    """TF32 for cuDNN convolutions / cuBLAS matmuls in fp32 (PyTorch's defaults: on / off).

    The benchmark turns both off on CUDA, so that its fp32 is IEEE fp32 and the agreement check
    (1e-4) measures the formulations, not TF32's 10-bit mantissa: with TF32 convolutions a batch-2
    and a batch-1 reference-net pass round differently by ~1e-4."""
    torch.backends.cudnn.allow_tf32 = convolutions
    torch.backends.cuda.matmul.allow_tf32 = matmuls


def _malloc_trim() -> None:
    # Return freed heap memory to the OS so that the RSS before a call is a fair baseline.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of the block: CUDA allocated memory, or the CPU process RSS (see module doc)."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0  # everything (CUDA: weights included; CPU: the whole process RSS)
        self.above_baseline_bytes = 0  # what the call itself added
        self.method = ""

    def __enter__(self):
        if self.device.startswith("cuda"):
            self.method = "torch.cuda.max_memory_allocated"
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            return self
        _malloc_trim()
        try:
            import psutil
        except ImportError:
            self.method = "ru_maxrss growth (lower bound)"
            self.baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return self
        self.method = "psutil RSS sampled every 5 ms"
        process = psutil.Process()
        self.baseline = self._peak = process.memory_info().rss
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, process.memory_info().rss)

        self._process = process
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("psutil"):
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, self._process.memory_info().rss)
        else:
            self.peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.above_baseline_bytes = max(0, self.peak_bytes - self.baseline)
        return False


def max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f}"
