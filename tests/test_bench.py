"""Smoke tests of the benchmark (python -m faceanon.bench) on the tiny size: it runs, prints its
table, writes its JSON, and its agreement check fails when the two formulations disagree."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from faceanon import bench

TINY = ["--size", "tiny", "--height", "32", "--width", "32", "--steps", "2", "--repeats", "1"]


def test_cpu_attention_flops_are_counted():
    query, key = torch.randn(2, 5, 64, 8), torch.randn(2, 5, 192, 8)
    with bench.flop_counter() as counter:
        F.scaled_dot_product_attention(query, key, key)
    assert counter.get_total_flops() == 4 * 2 * 5 * 64 * 192 * 8  # QK^T and PV, 2 FLOPs per MAC


def test_benchmark_runs_prints_its_table_and_agrees(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert bench.main([*TINY, "--faces", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for text in ("reference fp32", "faceanon fp32", "seconds per face", "UNet GFLOP per step",
                 "reference nets GFLOP per call", "peak process RSS MiB", "faster per face",
                 "agreement fp32 (PASS", "2 faces, faceanon fp32", "batched (1 call, 2 generators)"):
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
