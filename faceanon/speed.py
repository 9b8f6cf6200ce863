"""Speed and memory options for the diffusion pipeline, and the one place that loads it with them.

Measured on an H200 (``python -m benchmarks.speed --options``, 512x512, 25 steps, fp16; figures in
benchmarks/README.md): eager SDPA 0.90 s per face; channels_last 0.84 s; ``torch.compile`` of the
UNet 0.63 s after a 44 s first call; model CPU offload 2.7 s with 3.8 GB of GPU memory instead of
6.4 GB. All of them keep the method as it is: outputs differ from eager by fp16 rounding only.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faceanon.errors import UnsupportedOptionError

ATTENTION_BACKENDS = ("sdpa", "xformers")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OFFLOAD_MODES = ("model",)

if TYPE_CHECKING:  # torch loads only when a pipeline does: `faceanon --help` stays quick
    import torch


@dataclass(frozen=True)
class SpeedOptions:
    """How the pipeline runs; the defaults suit most GPUs and every CPU.

    attention: "sdpa" (PyTorch's fused attention) or "xformers" (when installed).
    channels_last: channels_last convolutions; ``None`` = on CUDA only, where it was measured faster.
    compile: ``None`` (eager), or a ``torch.compile`` mode for the denoising UNet ("default" is the
        measured one). The first call per batch size compiles (tens of seconds); worth it for
        folders of photos or a long-running server, not for one photo.
    offload: ``None``, or "model" (``enable_model_cpu_offload``): each model moves to the GPU only
        while it runs. For GPUs with less than ~8 GB free; about 3x slower.
    """

    attention: str = "sdpa"
    channels_last: bool | None = None
    compile: str | None = None
    offload: str | None = None

    def __post_init__(self):
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}; got {self.attention!r}")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be None or one of {COMPILE_MODES}; got {self.compile!r}")
        if self.offload is not None and self.offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be None or one of {OFFLOAD_MODES}; got {self.offload!r}")

    def check_device(self, device: torch.device) -> None:
        """Refuse, before any weights load, what this device cannot do."""
        if self.offload and device.type != "cuda":
            raise UnsupportedOptionError(
                f"offload moves each model to a GPU only while it runs, so it needs a CUDA device, not "
                f"{device.type}. Drop the offload option, or run on a machine with a GPU."
            )
        if self.attention == "xformers":
            try:
                import xformers.ops  # noqa: F401
            except ImportError:
                raise UnsupportedOptionError(
                    "xformers attention was asked for, but xformers is not installed (it needs a CUDA "
                    "GPU). Install it (`pip install xformers` matching your torch), or use the default "
                    "SDPA attention."
                ) from None

    def wants_channels_last(self, device: torch.device) -> bool:
        # Measured faster on a GPU (H200, fp16: 0.84 vs 0.90 s per face); undecided on CPUs.
        return self.channels_last if self.channels_last is not None else device.type == "cuda"

    def apply(self, pipe, device: torch.device) -> None:
        """Configure ``pipe`` (weights on ``device``, or on the CPU when offloading to ``device``)."""
        self.check_device(device)
        if self.attention != pipe.attention_backend:
            pipe.set_attention_backend(self.attention)
        if self.wants_channels_last(device):
            pipe.enable_channels_last()
        if self.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        if self.compile:
            pipe.compile_unet(mode=None if self.compile == "default" else self.compile)


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line flags of :class:`SpeedOptions` (CLI and web app alike)."""
    group = parser.add_argument_group("speed (GPU)")
    group.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help="torch.compile the UNet (mode: default, reduce-overhead, max-autotune, ...): the first "
        "call per batch size compiles (~1 min), later ones run ~1.4x faster",
    )
    group.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last convolutions (default: on with a GPU, off on a CPU)",
    )
    group.add_argument(
        "--attention",
        choices=ATTENTION_BACKENDS,
        default="sdpa",
        help="attention kernels: sdpa (PyTorch, default) or xformers (when installed)",
    )
    group.add_argument(
        "--offload",
        action="store_true",
        help="keep the models in CPU memory and move each to the GPU only while it runs: for "
        "GPUs with less than ~8 GB free; about 3x slower",
    )


def speed_options_from_args(args: argparse.Namespace) -> SpeedOptions:
    return SpeedOptions(
        attention=args.attention,
        channels_last=args.channels_last,
        compile=args.compile,
        offload="model" if args.offload else None,
    )


def load_pipeline(
    device=None,
    torch_dtype: torch.dtype | None = None,
    speed: SpeedOptions | None = None,
    local_files_only: bool | None = None,
):
    """The FaceAnonPipeline from the weights card's sources, on the best device (GPU fp16, else CPU
    fp32, unless told otherwise), configured with ``speed``. Returns ``(pipe, device, dtype)``."""
    from faceanon.pipeline import FaceAnonPipeline
    from faceanon.weights import default_device_and_dtype

    speed = speed or SpeedOptions()
    device, dtype = default_device_and_dtype(device, torch_dtype)
    speed.check_device(device)  # before loading 6-12 GB of weights
    # Offloading loads the weights into CPU memory; the hooks move each model to the GPU in turn.
    pipe = FaceAnonPipeline.from_hub(
        torch_dtype=dtype, device="cpu" if speed.offload else device, local_files_only=local_files_only
    )
    speed.apply(pipe, device)
    return pipe, device, dtype
