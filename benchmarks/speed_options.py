"""Speed and memory options of faceanon alone (``python -m benchmarks.speed --options``).

The side-by-side benchmark (:mod:`benchmarks.speed`) answers "how much faster than the reference
formulation"; this answers "what do the GPU options buy, and how much memory does each face take":

* ``baseline``: the pipeline as loaded (SDPA attention), seconds per face and peak memory;
* ``batch``: peak memory above the weights for 1, 2, 4, 8 faces in one call (at the benchmark's
  dtype and, on CUDA, in fp32 too), fitted to bytes per face — the figure behind
  :meth:`FaceAnonPipeline.suggested_batch_size`, printed next to the estimate it uses;
* ``offload``: ``enable_model_cpu_offload`` (CUDA only): peak GPU memory with the weights
  offloaded, and its time cost;
* ``channels_last``, ``xformers`` (when installed), ``compile`` (``torch.compile`` of the UNet,
  mode "default"; its first call, the compilation, is reported separately), ``cudagraphs``
  (mode "reduce-overhead": CUDA graphs). A compiled UNet is also checked on a second face against
  eager, so that a graph holding on to the first call's references would show. The UNet is
  compiled in place, so these two come last (``all`` runs both, each from a fresh dynamo cache);
* ``fp32_memory``: peak memory of each component in fp32 with and without TF32 (CUDA).

Each option reports the max |difference| of its output from the baseline's on the same seed, and
an option that fails is reported and skipped; the others still run.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.speed_common import (
    DTYPE_NAMES,
    DTYPES,
    PeakMemory,
    around_component_calls,
    face_images,
    max_abs,
    mb,
    set_tf32,
    sync,
)

OPTIONS = (
    "baseline",
    "batch",
    "offload",
    "channels_last",
    "xformers",
    "compile",
    "cudagraphs",
    "fp32_memory",
)
BATCH_SIZES = (1, 2, 4, 8)
BATCH_STEPS = 2  # activation memory does not depend on the number of steps


def parse_options(text: str) -> list[str]:
    names = list(OPTIONS) if text in ("", "all") else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; choose from {', '.join(OPTIONS)} or 'all'")
    if "baseline" not in names:
        names.insert(0, "baseline")  # every option is compared with it
    return names


class OptionsRunner:
    """One faceanon pipeline (random weights of the benchmark's size), measured option by option."""

    def __init__(self, pipe, config, face, out: Callable[[str], None]):
        self.pipe, self.config, self.face, self.out = pipe, config, face, out
        self.device = config.device
        self.cuda = config.device.startswith("cuda")
        self.results: dict = {}
        self.baseline_images = None

    # -- measuring ---------------------------------------------------------------------------

    def _call(self, faces: int = 1, steps: int | None = None):

        images = [self.face] if faces == 1 else face_images(faces)
        return self._run(images, [self.config.seed + i for i in range(faces)], steps)

    def _run(self, images: list, seeds: list[int], steps: int | None = None):
        c = self.config
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        return self.pipe(
            None,
            images,
            generator=generators,
            anonymization_degree=c.degree,
            guidance_scale=c.guidance,
            num_inference_steps=steps or c.steps,
            height=c.height,
            width=c.width,
            output_type="np",
        ).images

    def _timed(self, faces: int = 1, steps: int | None = None) -> tuple[float, object, object]:

        with PeakMemory(self.device) as memory:
            sync(self.device)
            start = time.perf_counter()
            images = self._call(faces, steps)
            sync(self.device)
            seconds = time.perf_counter() - start
        return seconds, images, memory

    def measure(self, name: str, note: str = "") -> dict:
        """Warm-up call (reported: the compile time when compiling), then ``repeats`` timed calls."""

        first_seconds, _, _ = self._timed(steps=1)
        runs = [self._timed() for _ in range(self.config.repeats)]
        seconds = min(r[0] for r in runs)
        images, memory = runs[-1][1], runs[-1][2]
        if self.baseline_images is None:
            self.baseline_images = images
        figures = {
            "seconds_per_face": seconds,
            "first_call_seconds_1_step": first_seconds,
            "peak_memory_bytes": memory.peak_bytes,
            "peak_memory_above_baseline_bytes": memory.above_baseline_bytes,
            "max_abs_diff_vs_baseline": max_abs(images, self.baseline_images),
            "note": note,
        }
        self.results[name] = figures
        self.out(
            f"  {name:<14} {seconds:8.3f} s/face   peak {mb(memory.peak_bytes):>7} MiB "
            f"({mb(memory.above_baseline_bytes):>6} above weights)   "
            f"first 1-step call {first_seconds:7.2f} s   "
            f"max |diff vs baseline| {figures['max_abs_diff_vs_baseline']:.3g}{'   ' + note if note else ''}"
        )
        return figures

    # -- the options -------------------------------------------------------------------------

    def baseline(self):
        self.measure("baseline", f"attention {self.pipe.attention_backend}")
        self.baseline_second_face = self._second_face()

    def _second_face(self):

        return self._run([face_images(2)[1]], [self.config.seed + 1])

    def _check_second_face(self, name: str) -> None:

        difference = max_abs(self._second_face(), self.baseline_second_face)
        self.results[name]["max_abs_diff_second_face_vs_eager"] = difference
        self.out(f"  {name:<14} second face (other seed) vs eager: max |diff| {difference:.3g}")

    def channels_last(self):
        self.pipe.enable_channels_last()
        try:
            self.measure("channels_last")
        finally:
            for net in (self.pipe.unet, self.pipe.referencenet, self.pipe.conditioning_referencenet):
                net.to(memory_format=torch.contiguous_format)

    def xformers(self):
        try:
            import xformers  # noqa: F401
        except ImportError:
            self.out("  xformers       not installed: skipped")
            return
        self.pipe.set_attention_backend("xformers")
        try:
            self.measure("xformers")
        finally:
            self.pipe.set_attention_backend("sdpa")

    def offload(self):
        if not self.cuda:
            self.out("  offload        needs CUDA: skipped")
            return
        pipe = self.pipe
        pipe.to("cpu")
        torch.cuda.empty_cache()
        pipe.enable_model_cpu_offload(device=self.device)
        try:
            self.measure("offload", "enable_model_cpu_offload")
        finally:
            pipe.remove_all_hooks()
            pipe.to(self.device)

    def compile(self):
        torch._dynamo.reset()  # a fresh compilation, whatever ran before
        self.pipe.compile_unet(mode=None)
        self.measure("compile", "torch.compile(unet), mode default; first call = compilation")
        self._check_second_face("compile")

    def cudagraphs(self):
        torch._dynamo.reset()
        self.pipe.compile_unet(mode="reduce-overhead")
        self.measure("cudagraphs", "torch.compile(unet), mode reduce-overhead; first call = compilation")
        self._check_second_face("cudagraphs")

    def fp32_memory(self):
        """Peak memory above what was allocated before each component call, fp32, TF32 on and off."""

        if not self.cuda:
            self.out("  fp32_memory    needs CUDA: skipped")
            return
        _set_dtype(self.pipe, torch.float32)
        figures = {}
        try:
            for tf32 in (True, False):
                set_tf32(convolutions=tf32, matmuls=False)
                with _component_peaks(self.pipe, self.device) as peaks:
                    self._call(steps=1)
                label = "tf32" if tf32 else "ieee"
                figures[label] = dict(peaks)
                self.out(
                    f"  fp32_memory {label}: MiB above the start of each call: "
                    + ", ".join(f"{k} {mb(v)}" for k, v in peaks.items())
                )
        finally:
            set_tf32(convolutions=True, matmuls=False)  # PyTorch's defaults
            _set_dtype(self.pipe, DTYPES[self.config.dtype])
        self.results["fp32_memory"] = figures

    def batch(self):
        from faceanon.pipeline import ACTIVATION_BYTES_PER_FACE_512_FP32

        dtypes = [self.config.dtype] + (["fp32"] if self.cuda and self.config.dtype != "fp32" else [])
        sweeps = {}
        for dtype_name in dtypes:
            _set_dtype(self.pipe, DTYPES[dtype_name])
            rows = []
            for faces in BATCH_SIZES:
                self._call(faces, steps=1)  # warm-up at this batch size
                seconds, _, memory = self._timed(faces, steps=BATCH_STEPS)
                rows.append(
                    {
                        "faces": faces,
                        "seconds": seconds,
                        "peak_memory_bytes": memory.peak_bytes,
                        "peak_memory_above_baseline_bytes": memory.above_baseline_bytes,
                    }
                )
                self.out(
                    f"  batch {dtype_name} {faces} faces: {seconds:7.2f} s ({BATCH_STEPS} steps)   peak "
                    f"{mb(memory.peak_bytes):>7} MiB ({mb(memory.above_baseline_bytes):>6} above weights)"
                )
            faces = np.array([r["faces"] for r in rows], dtype=np.float64)
            above = np.array([r["peak_memory_above_baseline_bytes"] for r in rows], dtype=np.float64)
            per_face, fixed = np.polyfit(faces, above, 1)
            estimate = (
                ACTIVATION_BYTES_PER_FACE_512_FP32
                * self.config.height
                * self.config.width
                / 512**2
                * DTYPES[dtype_name].itemsize
                / 4
            )
            sweeps[dtype_name] = {
                "rows": rows,
                "bytes_per_face": per_face,
                "fixed_bytes": fixed,
                "estimate_bytes_per_face": estimate,
            }
            self.out(
                f"  batch {dtype_name}: {per_face / 2**20:,.0f} MiB per face + {fixed / 2**20:,.0f} MiB "
                f"(least squares); suggested_batch_size assumes {estimate / 2**20:,.0f} MiB per face"
            )
        _set_dtype(self.pipe, DTYPES[self.config.dtype])
        self.results["batch"] = {
            "steps": BATCH_STEPS,
            "sweeps": sweeps,
            "dtype_after": DTYPE_NAMES[self.pipe.unet.dtype],
        }


@contextlib.contextmanager
def _component_peaks(pipe, device):
    """{component: max bytes allocated above the start of its call} while the block runs (CUDA)."""

    peaks: dict[str, int] = {}

    def measured(label, call):
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            return call()
        finally:  # the reference nets stop early by raising
            torch.cuda.synchronize(device)
            peaks[label] = max(peaks.get(label, 0), torch.cuda.max_memory_allocated(device) - before)

    with around_component_calls(pipe, measured):
        yield peaks


def _set_dtype(pipe, dtype: torch.dtype) -> None:
    if pipe.unet.dtype != dtype:
        pipe.to(dtype=dtype)


def run_options(pipe, config, face, names: list[str], out: Callable[[str], None] = print) -> dict:
    """Measure each named option on ``pipe`` (already at ``config.dtype`` on ``config.device``)."""
    c = config
    out(
        f"faceanon options: device={c.device} dtype={c.dtype} {c.height}x{c.width} steps={c.steps} "
        f"scheduler={c.scheduler} repeats={c.repeats} (seconds: min of repeats, warm-up excluded)"
    )
    runner = OptionsRunner(pipe, config, face, out)
    failures = {}
    for name in names:
        try:
            getattr(runner, name)()
        except Exception as error:  # an option that fails here is a finding, not the end of the run
            failures[name] = f"{type(error).__name__}: {error}"
            out(f"  {name:<14} FAILED: {failures[name]}")
            traceback.print_exc()
            with contextlib.suppress(Exception):
                pipe.remove_all_hooks()
                pipe.to(c.device)
    return {"options": runner.results, "failures": failures}
