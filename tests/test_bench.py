"""Smoke tests of the benchmark (python -m benchmarks.speed) on the tiny size: it runs, prints its
table, writes its JSON, and its agreement check fails when the two formulations disagree."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from benchmarks import speed as bench
from benchmarks import speed_common

TINY = ["--size", "tiny", "--height", "32", "--width", "32", "--steps", "2", "--repeats", "1"]


def test_cpu_attention_flops_are_counted():
    query, key = torch.randn(2, 5, 64, 8), torch.randn(2, 5, 192, 8)
    with speed_common.flop_counter() as counter:
        F.scaled_dot_product_attention(query, key, key)
    assert counter.get_total_flops() == 4 * 2 * 5 * 64 * 192 * 8  # QK^T and PV, 2 FLOPs per MAC


def test_benchmark_runs_prints_its_table_and_agrees(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert bench.main([*TINY, "--faces", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for text in (
        "reference fp32",
        "faceanon fp32",
        "seconds per face",
        "UNet GFLOP per step",
        "reference nets GFLOP per call",
        "peak process RSS MiB",
        "faster per face",
        "agreement fp32 (PASS",
        "2 faces, faceanon fp32",
        "batched (1 call, 2 generators)",
    ):
        assert text in table, text

    figures = json.loads(out.read_text())
    phase = figures["phases"][0]
    reference, ours = phase["measurements"]["reference"], phase["measurements"]["faceanon"]
    assert reference["seconds_per_face"] > 0 and ours["seconds_per_face"] > 0
    # the reference formulation does strictly more work, and attention is part of the count
    assert reference["unet_flops_per_step"] > ours["unet_flops_per_step"] > 0
    assert reference["reference_net_flops_per_call"] > ours["reference_net_flops_per_call"] > 0
    assert ours["null_records_flops_once"] > 0
    assert ours["peak_memory_bytes"] > 0
    assert phase["agreement"]["max_abs_diff_images_1_step"] <= bench.TOLERANCE_FP32
    assert figures["batch"]["faces"] == 2
    assert figures["batch"]["max_abs_diff_batched_vs_one_by_one"] <= 1e-4
    assert figures["ok"] is True


def test_agreement_check_reports_a_failure_when_the_formulations_disagree(capsys):
    # The reference then pairs each transformer with its own record (the plausible mistake).
    assert bench.main([*TINY, "--faces", "0", "--reference-own-record"]) == 1
    table = capsys.readouterr().out
    assert "agreement fp32 (FAIL" in table
    assert "disagree even for one UNet call" in table


def test_options_run_reports_each_option_and_skips_what_needs_a_gpu(tmp_path, capsys):
    out = tmp_path / "options.json"
    code = bench.main([*TINY, "--options", "batch,offload,channels_last,fp32_memory", "--json", str(out)])
    table = capsys.readouterr().out
    assert code == 0, table
    for text in (
        "baseline",
        "batch fp32 8 faces",
        "MiB per face",
        "suggested_batch_size assumes",
        "offload        needs CUDA: skipped",
        "channels_last",
        "fp32_memory    needs CUDA: skipped",
    ):
        assert text in table, text
    figures = json.loads(out.read_text())
    options = figures["options"]
    assert options["baseline"]["seconds_per_face"] > 0
    assert options["channels_last"]["max_abs_diff_vs_baseline"] <= 1e-4  # same method, other memory layout
    assert [row["faces"] for row in options["batch"]["sweeps"]["fp32"]["rows"]] == [1, 2, 4, 8]
    assert figures["failures"] == {}


def test_unknown_options_are_refused():
    import pytest

    from benchmarks.speed_options import parse_options

    assert parse_options("batch")[:2] == ["baseline", "batch"]  # every option is compared with the baseline
    with pytest.raises(ValueError, match="unknown option"):
        parse_options("batch,warp-speed")


def test_reference_with_pytorch_defaults_is_timed_before_weights_go_16_bit(capsys):
    """The CUDA-only comparison (reference fp32 with TF32 convolutions) runs here too: on a CPU,
    TF32 does not exist, so the reference's output must be the strict fp32 one exactly."""
    config = bench.BenchConfig(
        size="tiny", device="cpu", height=32, width=32, steps=2, repeats=1, faces=0
    ).resolve()
    runner = bench.Runner(
        speed_common.build_pipeline("tiny", "cpu", "ddpm"), config, speed_common.face_images(1)[0]
    )
    results = {
        "config": bench.asdict(config),
        "environment": bench.environment(config),
        "build_seconds": 1.0,
        "parameters": {"unet": 1},
        "phases": [],
    }
    bench.run_phase(runner, "fp32", results)
    bench.run_reference_with_pytorch_defaults(runner, results)
    bench.run_phase(runner, "bf16", results)
    defaults = results["reference_fp32_pytorch_defaults"]
    assert defaults["seconds_per_face"] > 0
    assert defaults["max_abs_diff_images_vs_ieee_fp32"] == 0
    assert "with PyTorch's CUDA defaults (TF32 convolutions)" in bench.format_table(results)
