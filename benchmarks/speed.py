"""Benchmark: faceanon's FaceAnonPipeline against the plain reference formulation, side by side.

    python -m benchmarks.speed                       # SD 2.1 size, CPU: 256x256, 2 steps, fp32
    python -m benchmarks.speed --device cuda --dtype fp16     # GPU: 512x512, 25 steps (+ fp32 runs)
    python -m benchmarks.speed --size tiny --height 64 --width 64   # seconds; a smoke run

Components are built in memory with random weights of the real sizes
(:func:`faceanon.testing.build_components`: three SD 2.1 UNets, the SD 2.1 VAE, the CLIP ViT-L/14
vision tower; nothing is downloaded) and shared by both formulations: one
:class:`~faceanon.pipeline.FaceAnonPipeline`, on which :func:`faceanon.reference.reference_call`
runs the reference way (full concatenated self-attention, reference nets at batch 2 through their
whole forward pass, every call) and then reinstalls the optimised processors.

Measured, at the same resolution, steps and seed, anonymizing a real face (NASA's astronaut portrait,
public domain), d = 1.25 and g = 4.0 by default:

* seconds per face (warm-up excluded; min over ``--repeats``; CUDA timings between synchronizes);
* FLOPs (``torch.utils.flop_counter.FlopCounterMode``, counted per component call on a 1-step run):
  UNet per step, reference nets per call, total per face at the benchmark's steps. Attention is
  counted: torch counts its CUDA SDPA kernels; the CPU one (``_scaled_dot_product_flash_attention_for_cpu``)
  is not in torch's table, so it is added here with torch's own SDPA formula;
* peak memory: CUDA ``torch.cuda.max_memory_allocated`` (weights included, and the part above the
  memory allocated before the call); CPU: the process RSS sampled every 5 ms with psutil, above the
  RSS before the call (after ``malloc_trim``); without psutil the ``ru_maxrss`` growth (a lower bound);
* agreement: max |reference - faceanon| of the output images (and of the final latents) at the
  benchmark's steps and at 1 step (one UNet call);
* a ``--faces``-face photo through faceanon: one batched call (one generator per face) against one
  call per face.

Exit status: 0, or 1 when the two formulations disagree beyond the tolerance even for one UNet call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from benchmarks.speed_common import (
    DTYPE_NAMES,
    DTYPES,
    PeakMemory,
    build_pipeline,
    count_component_flops,
    face_images,
    max_abs,
    mb,
    set_tf32,
    sync,
)
from benchmarks.speed_options import parse_options, run_options

TOLERANCE_FP32 = 1e-4


@dataclass
class BenchConfig:
    size: str = "sd21"
    device: str = "auto"
    dtype: str = "fp32"
    height: int | None = None  # CPU 256, CUDA 512
    width: int | None = None
    steps: int | None = None  # CPU 2, CUDA 25
    faces: int = 6
    scheduler: str = "ddpm"
    degree: float = 1.25
    guidance: float = 4.0
    seed: int = 0
    repeats: int | None = None  # CPU 1, CUDA 3
    skip_reference: bool = False
    reference_own_record: bool = False  # for checking the check: the formulations then disagree
    options: str | None = None  # faceanon alone, option by option (benchmarks.speed_options)
    json: str | None = None

    def resolve(self) -> BenchConfig:
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        gpu = device.startswith("cuda")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        return BenchConfig(
            **{
                **asdict(self),
                "device": device,
                "height": self.height or (512 if gpu else 256),
                "width": self.width or (512 if gpu else 256),
                "steps": self.steps or (25 if gpu else 2),
                "repeats": self.repeats or (3 if gpu else 1),
            }
        )


@dataclass
class Measurement:
    """One formulation at one dtype."""

    name: str
    dtype: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time (all threads) of each call
    unet_flops_per_step: int = 0
    reference_net_flops_per_call: int = 0
    null_records_flops_once: int = 0  # faceanon's s0, computed once per loaded model
    total_flops_per_face: int = 0
    peak_memory_bytes: int = 0
    peak_memory_above_baseline_bytes: int = 0
    memory_method: str = ""

    @property
    def seconds_per_face(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")


class _LatentsTap:
    """Records the latents each call hands to ``pipe.decode_latents`` (both formulations do)."""

    def __init__(self, pipe):
        self.pipe, self.latents = pipe, None

    def __enter__(self):
        original = self.pipe.decode_latents

        def tapped(latents):
            self.latents = latents.detach().float().cpu()
            return original(latents)

        object.__setattr__(self.pipe, "decode_latents", tapped)
        return self

    def __exit__(self, *exc):
        object.__delattr__(self.pipe, "decode_latents")
        return False


# ---------------------------------------------------------------------------------------------
# The benchmark


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Runner:
    def __init__(self, pipe, config: BenchConfig, face):
        self.pipe, self.config, self.face = pipe, config, face

    def generator(self, seed: int | None = None) -> torch.Generator:
        return torch.Generator("cpu").manual_seed(self.config.seed if seed is None else seed)

    def kwargs(self, steps: int) -> dict:
        c = self.config
        return dict(
            anonymization_degree=c.degree,
            guidance_scale=c.guidance,
            num_inference_steps=steps,
            height=c.height,
            width=c.width,
            output_type="np",
        )

    def faceanon(self, steps: int):
        return self.pipe(None, self.face, generator=self.generator(), **self.kwargs(steps)).images

    def reference(self, steps: int):
        from faceanon.reference import reference_call

        return reference_call(
            self.pipe,
            None,
            self.face,
            generator=self.generator(),
            own_record=self.config.reference_own_record,
            **self.kwargs(steps),
        )

    def call(self, formulation: str, steps: int):
        """Output image (np) and final latents of one call."""
        with _LatentsTap(self.pipe) as tap:
            images = getattr(self, formulation)(steps)
        return np.asarray(images, dtype=np.float32), tap.latents

    def count(self, formulation: str, measurement: Measurement) -> tuple:
        """A 1-step call under the FLOP counter (also the warm-up): fills the FLOP figures."""
        with count_component_flops(self.pipe) as (calls, total):
            output = self.call(formulation, 1)
        unet = [f for name, f in calls if name == "unet"]
        measurement.unet_flops_per_step = unet[0] if unet else 0
        measurement.reference_net_flops_per_call = sum(
            f for name, f in calls if name in ("referencenet", "conditioning_referencenet")
        )
        # total at the benchmark's steps: one more UNet call per extra step
        measurement.total_flops_per_face = total.get_total_flops() + (self.config.steps - 1) * sum(unet)
        return output

    def timed(self, formulation: str, measurement: Measurement):
        device = self.config.device
        with PeakMemory(device) as memory:
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            output = self.call(formulation, self.config.steps)
            sync(device)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        measurement.seconds.append(seconds)
        measurement.cpu_seconds.append(cpu_seconds)
        measurement.peak_memory_bytes = max(measurement.peak_memory_bytes, memory.peak_bytes)
        measurement.peak_memory_above_baseline_bytes = max(
            measurement.peak_memory_above_baseline_bytes, memory.above_baseline_bytes
        )
        measurement.memory_method = memory.method
        _log(f"{measurement.name} {measurement.dtype}: {seconds:.2f} s (CPU time {cpu_seconds:.2f} s)")
        return output


def run_phase(runner: Runner, dtype_name: str, results: dict) -> dict:
    """Both formulations at one dtype: warm-up + FLOPs, timed repeats, agreement."""
    config, pipe = runner.config, runner.pipe
    if pipe.unet.dtype != DTYPES[dtype_name]:
        pipe.to(dtype=DTYPES[dtype_name])
    names = ["faceanon"] if config.skip_reference else ["reference", "faceanon"]
    measurements = {name: Measurement(name, dtype_name) for name in names}

    # Warm-up (not timed): a plain 1-step faceanon call computes the null-source records s0 (once
    # per loaded model); then 1-step calls of both under the FLOP counter.
    with count_component_flops(pipe) as (first_calls, _):
        runner.call("faceanon", 1)
    one_step = {}
    for name in names:
        one_step[name] = runner.count(name, measurements[name])
    ours = measurements["faceanon"]
    first_reference_net = sum(f for n, f in first_calls if n in ("referencenet", "conditioning_referencenet"))
    ours.null_records_flops_once = max(0, first_reference_net - ours.reference_net_flops_per_call)

    full = {}
    for _ in range(config.repeats):  # alternate, so that a busy machine hurts both alike
        for name in names:
            full[name] = runner.timed(name, measurements[name])

    phase = {"dtype": dtype_name, "measurements": measurements, "outputs": full}
    if not config.skip_reference:
        agreement = {
            "steps": config.steps,
            "max_abs_diff_images": max_abs(full["reference"][0], full["faceanon"][0]),
            "max_abs_diff_latents": max_abs(full["reference"][1], full["faceanon"][1]),
            "max_abs_diff_images_1_step": max_abs(one_step["reference"][0], one_step["faceanon"][0]),
            "max_abs_diff_latents_1_step": max_abs(one_step["reference"][1], one_step["faceanon"][1]),
            "latents_abs_max": float(full["faceanon"][1].abs().max()),
            "saturated_pixels_fraction": float(
                np.mean((full["faceanon"][0] <= 0) | (full["faceanon"][0] >= 1))
            ),
        }
        if dtype_name == "fp32":
            agreement["tolerance"] = TOLERANCE_FP32
            if agreement["max_abs_diff_images"] <= TOLERANCE_FP32:
                agreement["verdict"] = "PASS"
            elif agreement["max_abs_diff_images_1_step"] <= TOLERANCE_FP32:
                agreement["verdict"] = "PASS per UNet call only"
            else:
                agreement["verdict"] = "FAIL"
        else:
            agreement["verdict"] = "info"  # no tolerance set for half precision
        phase["agreement"] = agreement
    results["phases"].append(phase)
    return phase


def run_reference_with_pytorch_defaults(runner: Runner, results: dict) -> None:
    """The reference formulation in fp32 as the paper's code runs on CUDA: PyTorch's defaults, i.e.
    TF32 convolutions. Timed too, so that the half-precision speed-up is not quoted against a
    slower, strict-fp32 reference only."""
    config = runner.config
    set_tf32(convolutions=True, matmuls=False)
    try:
        measurement = Measurement("reference", "fp32 (TF32 convolutions)")
        runner.call("reference", 1)  # warm-up: cuDNN picks its TF32 algorithms
        for _ in range(config.repeats):
            images, _ = runner.timed("reference", measurement)
    finally:
        set_tf32(convolutions=False, matmuls=False)
    strict = results["phases"][0]["outputs"]["reference"][0]
    results["reference_fp32_pytorch_defaults"] = {
        "seconds_per_face": measurement.seconds_per_face,
        "max_abs_diff_images_vs_ieee_fp32": max_abs(images, strict),
    }


def run_batch(runner: Runner, results: dict) -> None:
    """A photo with ``faces`` faces through faceanon: one batched call vs one call per face."""
    config, pipe = runner.config, runner.pipe
    faces = face_images(config.faces)
    seeds = [config.seed + i for i in range(config.faces)]
    kwargs = runner.kwargs(config.steps)
    device = config.device
    if device.startswith("cuda"):  # warm up the batch-sized kernels
        pipe(None, faces, generator=[runner.generator(s) for s in seeds], **runner.kwargs(1))

    sync(device)
    start = time.perf_counter()
    singles = [
        pipe(None, face, generator=runner.generator(s), **kwargs).images[0]
        for face, s in zip(faces, seeds, strict=True)
    ]
    sync(device)
    one_by_one = time.perf_counter() - start
    _log(f"{config.faces} faces one by one: {one_by_one:.2f} s")

    with PeakMemory(device) as memory:
        sync(device)
        start = time.perf_counter()
        batched = pipe(None, faces, generator=[runner.generator(s) for s in seeds], **kwargs).images
        sync(device)
        batched_seconds = time.perf_counter() - start
    _log(f"{config.faces} faces batched: {batched_seconds:.2f} s")
    results["batch"] = {
        "faces": config.faces,
        "dtype": DTYPE_NAMES[pipe.unet.dtype],
        "one_by_one_seconds": one_by_one,
        "batched_seconds": batched_seconds,
        "speedup": one_by_one / batched_seconds,
        "batched_peak_memory_bytes": memory.peak_bytes,
        "batched_peak_memory_above_baseline_bytes": memory.above_baseline_bytes,
        "max_abs_diff_batched_vs_one_by_one": max_abs(np.stack(batched), np.stack(singles)),
    }


def environment(config: BenchConfig) -> dict:
    import diffusers
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": config.device,
    }
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    with contextlib.suppress(OSError, AttributeError):
        env["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if config.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(config.device)
    return env


def run_benchmark(config: BenchConfig, out: Callable[[str], None] = print) -> dict:
    """Run everything, print the table through ``out``, return the figures (JSON-ready)."""
    config = config.resolve()
    _log(f"building {config.size} components (random weights) ...")
    start = time.perf_counter()
    pipe = build_pipeline(config.size, config.device, config.scheduler, seed=config.seed)
    build_seconds = time.perf_counter() - start
    parameters = {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("unet", "referencenet", "conditioning_referencenet", "vae", "image_encoder")
    }
    _log(f"built in {build_seconds:.1f} s")
    results = {
        "config": asdict(config),
        "environment": environment(config),
        "build_seconds": build_seconds,
        "parameters": parameters,
        "phases": [],
    }
    runner = Runner(pipe, config, face_images(1)[0])
    if config.options is not None:
        return _run_options(pipe, config, results, runner.face, out)

    dtypes = [config.dtype]
    if config.device.startswith("cuda") and config.dtype != "fp32":
        dtypes = ["fp32", config.dtype]  # the "faster than the reference in fp32" comparison
    if config.device.startswith("cuda"):
        set_tf32(convolutions=False, matmuls=False)
        results["environment"]["fp32_on_cuda"] = (
            "IEEE fp32 (TF32 off for cuDNN convolutions and cuBLAS matmuls)"
        )
    for dtype_name in dtypes:
        _log(f"phase {dtype_name} ...")
        run_phase(runner, dtype_name, results)
        if dtype_name == "fp32" and len(dtypes) == 2 and not config.skip_reference:
            run_reference_with_pytorch_defaults(runner, results)  # before the weights are rounded to 16 bits
    if len(results["phases"]) == 2:  # half precision against fp32, faceanon, same seed
        fp32, half = (p["outputs"]["faceanon"] for p in results["phases"])
        results["half_vs_fp32"] = {
            "dtype": config.dtype,
            "max_abs_diff_images": max_abs(fp32[0], half[0]),
            "mean_abs_diff_images": float(np.abs(fp32[0] - half[0]).mean()),
            "max_abs_diff_latents": max_abs(fp32[1], half[1]),
        }
    with contextlib.suppress(OSError, AttributeError):
        results["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["ok"] = all(p.get("agreement", {}).get("verdict") != "FAIL" for p in results["phases"])
    out(format_table(results))  # the per-face figures first: the batch run is the long one
    _write_json(config, results)
    if config.faces > 1:
        run_batch(runner, results)
        out(format_batch(results["batch"]))
        _write_json(config, results)
    return _jsonable(results)


def _run_options(pipe, config: BenchConfig, results: dict, face, out: Callable[[str], None]) -> dict:
    env = results["environment"]
    out(
        f"machine: {env.get('gpu') or env.get('cpu', '?')}; torch {env['torch']}, "
        f"diffusers {env['diffusers']}, transformers {env['transformers']}; "
        f"components: {sum(results['parameters'].values()) / 1e6:,.0f} M "
        f"parameters (random weights), built in {results['build_seconds']:.0f} s"
    )
    if pipe.unet.dtype != DTYPES[config.dtype]:
        pipe.to(dtype=DTYPES[config.dtype])
    results.update(run_options(pipe, config, face, parse_options(config.options), out))
    results["ok"] = not results["failures"]
    _write_json(config, results)
    return _jsonable(results)


def _write_json(config: BenchConfig, results: dict) -> None:
    if config.json:
        with open(config.json, "w") as f:
            json.dump(_jsonable(results), f, indent=2)


def _jsonable(results: dict) -> dict:
    out = dict(results)
    out["phases"] = []
    for phase in results["phases"]:
        p = {k: v for k, v in phase.items() if k not in ("outputs", "measurements")}
        p["measurements"] = {}
        for name, m in phase["measurements"].items():
            p["measurements"][name] = {**asdict(m), "seconds_per_face": m.seconds_per_face}
        out["phases"].append(p)
    return out


# ---------------------------------------------------------------------------------------------
# The table


def _g(flops: int) -> str:
    return f"{flops / 1e9:,.1f}" if flops >= 1e10 else f"{flops / 1e9:.3g}"


def format_table(results: dict) -> str:
    config, env = results["config"], results["environment"]
    lines = [
        f"faceanon benchmark: size={config['size']} device={config['device']} "
        f"{config['height']}x{config['width']} steps={config['steps']} scheduler={config['scheduler']} "
        f"d={config['degree']} g={config['guidance']} seed={config['seed']} repeats={config['repeats']}",
        f"machine: {env.get('gpu') or env.get('cpu', '?')}; {env['cpu_count']} CPUs, torch threads "
        f"{env['torch_threads']}; torch {env['torch']}, diffusers {env['diffusers']}, "
        f"transformers {env['transformers']}",
        f"load average (1/5/15 min) at start {env.get('load_average_at_start')}, "
        f"at end {env.get('load_average_at_end')}",
        *([f"fp32 on CUDA: {env['fp32_on_cuda']}"] if "fp32_on_cuda" in env else []),
        f"components: random weights, {sum(results['parameters'].values()) / 1e6:,.0f} M parameters, "
        f"built in {results['build_seconds']:.0f} s",
        "",
    ]
    columns = [m for phase in results["phases"] for m in phase["measurements"].values()]
    headers = [f"{m.name} {m.dtype}" for m in columns]
    width = max(16, *(len(h) + 2 for h in headers))
    memory_method = columns[0].memory_method if columns else ""

    def row(label, values):
        return f"{label:<44}" + "".join(f"{v:>{width}}" for v in values)

    lines.append(row("per face (1 face, anonymize)", headers))
    lines.append(
        row(
            f"  seconds per face (min of {config['repeats']})", [f"{m.seconds_per_face:.2f}" for m in columns]
        )
    )
    if not config["device"].startswith("cuda"):
        lines.append(
            row("  CPU seconds per face (process, min)", [f"{min(m.cpu_seconds):.2f}" for m in columns])
        )
    lines.append(row("  UNet GFLOP per step", [_g(m.unet_flops_per_step) for m in columns]))
    lines.append(
        row("  reference nets GFLOP per call", [_g(m.reference_net_flops_per_call) for m in columns])
    )
    lines.append(
        row(
            f"  total GFLOP per face ({config['steps']} steps)", [_g(m.total_flops_per_face) for m in columns]
        )
    )
    peak_label = (
        "peak GPU MiB allocated (weights incl.)"
        if config["device"].startswith("cuda")
        else "peak process RSS MiB"
    )
    lines.append(row(f"  {peak_label}", [mb(m.peak_memory_bytes) for m in columns]))
    lines.append(
        row("  peak MiB above before the call", [mb(m.peak_memory_above_baseline_bytes) for m in columns])
    )
    once = [m for m in columns if m.null_records_flops_once]
    if once:
        lines.append(
            f"  (faceanon also computes s0, the null-source records, once per loaded model: "
            f"{_g(once[0].null_records_flops_once)} GFLOP, excluded above)"
        )
    lines.append(f"  memory: {memory_method}")
    lines.append("")

    def cpu_ratio(ref, ours):
        if config["device"].startswith("cuda") or not ref.cpu_seconds or not ours.cpu_seconds:
            return ""
        return f" ({min(ref.cpu_seconds) / min(ours.cpu_seconds):.2f}x in CPU time)"

    for phase in results["phases"]:
        ms = phase["measurements"]
        if "reference" in ms:
            ref, ours = ms["reference"], ms["faceanon"]
            lines.append(
                f"{phase['dtype']}: faceanon vs reference: "
                f"{ref.seconds_per_face / ours.seconds_per_face:.2f}x faster "
                f"per face{cpu_ratio(ref, ours)}; UNet FLOPs per step "
                f"{ref.unet_flops_per_step / max(ours.unet_flops_per_step, 1):.2f}x fewer; "
                "total FLOPs per face "
                f"{ref.total_flops_per_face / max(ours.total_flops_per_face, 1):.2f}x fewer"
            )
    if len(results["phases"]) == 2 and "reference" in results["phases"][0]["measurements"]:
        ref32 = results["phases"][0]["measurements"]["reference"]
        half = results["phases"][1]["measurements"]["faceanon"]
        lines.append(
            f"faceanon {half.dtype} vs reference fp32: {ref32.seconds_per_face / half.seconds_per_face:.2f}x "
            f"faster per face ({half.seconds_per_face:.2f} s vs {ref32.seconds_per_face:.2f} s)"
        )
        defaults = results.get("reference_fp32_pytorch_defaults")
        if defaults:
            lines.append(
                f"faceanon {half.dtype} vs reference fp32 with PyTorch's CUDA defaults (TF32 convolutions): "
                f"{defaults['seconds_per_face'] / half.seconds_per_face:.2f}x faster per face "
                f"({half.seconds_per_face:.2f} s vs {defaults['seconds_per_face']:.2f} s; TF32 moves the "
                f"reference's images by {defaults['max_abs_diff_images_vs_ieee_fp32']:.3g})"
            )

    for phase in results["phases"]:
        a = phase.get("agreement")
        if not a:
            continue
        tolerance = f", tolerance {a['tolerance']:g}" if "tolerance" in a else ""
        lines.append(
            f"agreement {phase['dtype']} ({a['verdict']}{tolerance}): max |reference - faceanon| "
            f"images {a['max_abs_diff_images']:.3g} after {a['steps']} steps, "
            f"{a['max_abs_diff_images_1_step']:.3g} after 1 step (one UNet call); latents "
            f"{a['max_abs_diff_latents']:.3g} / {a['max_abs_diff_latents_1_step']:.3g} "
            f"(|latents| max {a['latents_abs_max']:.3g}; "
            f"saturated pixels {a['saturated_pixels_fraction']:.1%})"
        )
        if a["verdict"] == "PASS per UNet call only":
            lines.append(
                f"  after {a['steps']} steps the difference exceeds {a['tolerance']:g}: float32 rounding, "
                "amplified by each step of the random-weight UNet; one UNet call agrees within tolerance"
            )
        elif a["verdict"] == "FAIL":
            lines.append("  FAIL: the formulations disagree even for one UNet call")
    if "half_vs_fp32" in results:
        h = results["half_vs_fp32"]
        lines.append(
            f"faceanon {h['dtype']} vs fp32, same seed: max |diff| images {h['max_abs_diff_images']:.3g}, "
            f"mean {h['mean_abs_diff_images']:.3g}; latents max {h['max_abs_diff_latents']:.3g}"
        )
    return "\n".join(lines)


def format_batch(b: dict) -> str:
    n = b["faces"]
    lines = [
        "",
        f"{n} faces, faceanon {b['dtype']}:",
        f"  one by one ({n} calls): {b['one_by_one_seconds']:.2f} s "
        f"({b['one_by_one_seconds'] / n:.2f} s per face)",
        f"  batched (1 call, {n} generators): {b['batched_seconds']:.2f} s "
        f"({b['batched_seconds'] / n:.2f} s per face); "
        f"{b['speedup']:.2f}x; peak {mb(b['batched_peak_memory_bytes'])} MiB "
        f"({mb(b['batched_peak_memory_above_baseline_bytes'])} above before)",
        f"  max |batched - one by one| {b['max_abs_diff_batched_vs_one_by_one']:.3g}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed",
        description="faceanon vs the reference formulation of 'Face Anonymization Made Simple', "
        "side by side, on random-weight components of the real sizes (no download).",
    )
    parser.add_argument(
        "--size",
        choices=("sd21", "tiny"),
        default="sd21",
        help="component sizes: SD 2.1 / CLIP ViT-L/14 (needs ~13 GB RAM) or tiny (seconds)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="fp32",
        help="on CUDA a non-fp32 dtype also runs both formulations in fp32 first",
    )
    parser.add_argument("--height", type=int, help="pixels (default: CPU 256, CUDA 512)")
    parser.add_argument("--width", type=int, help="pixels (default: CPU 256, CUDA 512)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: CPU 2, CUDA 25)")
    parser.add_argument(
        "--faces", type=int, default=6, help="faces in the batched vs one-by-one run (0 or 1: skip)"
    )
    parser.add_argument("--scheduler", default="ddpm", help="ddpm (the reference), ddim, dpmsolver++, unipc")
    parser.add_argument("--degree", type=float, default=1.25, help="anonymization degree d")
    parser.add_argument("--guidance", type=float, default=4.0, help="guidance scale g")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, help="timed calls per formulation, min reported (default: CPU 1, CUDA 3)"
    )
    parser.add_argument("--skip-reference", action="store_true", help="time faceanon only")
    parser.add_argument(
        "--reference-own-record",
        action="store_true",
        help="test the agreement check: the reference pairs each transformer with its own record "
        "(the plausible mistake), so the formulations disagree and the check must fail",
    )
    parser.add_argument(
        "--options",
        nargs="?",
        const="all",
        metavar="LIST",
        help="instead of the side-by-side run, time faceanon alone option by option: "
        "baseline, batch (memory per face), offload, channels_last, xformers, compile "
        "(comma-separated; default all)",
    )
    parser.add_argument("--json", metavar="OUT", help="write the figures as JSON to OUT")
    args = parser.parse_args(argv)
    return BenchConfig(**vars(args))


def main(argv=None) -> int:
    config = parse_args(argv)
    results = run_benchmark(config)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
