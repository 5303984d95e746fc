"""Smoke test of benchmarks/bench_pipeline.py: the real pipeline with full-size random networks, tiniest size."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from tiny_sd import one_torch_thread  # noqa: F401  (restores torch's thread count)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pipeline.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~20 s building the full-size networks on a 2-core CPU, plus the run
def test_bench_pipeline_json(capsys, one_torch_thread):
    bench = load_script()
    result = bench.main(["--device", "cpu", "--size", "16x16", "--frames", "2", "--steps", "1", "--guidance", "1", "--threads", "1", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["frames"] == result["frames"] == 2
    for key in ("s_per_frame", "stages", "unet_tflops", "vae_tflops", "overhead_fraction", "peak_mem_bytes", "peak_rss_bytes"):
        assert key in printed, key
    stages = printed["stages"]
    assert set(stages) == set(bench.STAGES)
    measured = sum(v for k, v in stages.items() if k != "idle")
    assert 0 < measured <= printed["wall_s"] + 1e-6  # the main thread's stages never exceed the wall time
    assert stages["unet"] > 0 and stages["vae"] > 0 and stages["text_encoder"] > 0
    assert 0 <= printed["overhead_fraction"] < 1
    assert 0 <= printed["steady_overhead_fraction"] < 1 and printed["startup_s"] > 0 and printed["drain_s"] > 0
    assert printed["startup_s"] + printed["drain_s"] < printed["wall_s"]
    # one step, no CFG, 2 frames of 16x16 in one tile per call: the FLOPs are of exactly those calls
    assert printed["unet_calls"] == {"(2, 7, 16, 16)": 1}
    assert printed["unet_tflops"] > 0 and printed["vae_tflops"] > 0
    assert printed["peak_mem_bytes"] > 1e9  # the full-size fp32 networks are resident


@pytest.mark.slow  # ~30 s: the full-size StableVSR networks (UNet, ControlNet, VAE, text encoder) on a 2-core CPU
def test_bench_pipeline_stablevsr_counts_what_its_loop_calls(capsys, one_torch_thread):
    """One step on a window of 2 frames: 2 UNet calls, 1 ControlNet call and 1 decode of the neighbour's
    estimate, then 2 decodes; the FLOPs counted in the run equal what --flops-only says per frame."""
    bench = load_script()
    args = ["--model", "stablevsr", "--size", "16x16", "--steps", "1", "--clip-len", "2"]
    result = bench.main(["--device", "cpu", *args, "--frames", "2", "--threads", "1", "--json"])
    assert result["unet_calls"] == {"(1, 7, 16, 16)": 2}
    assert result["vae_calls"] == {"(1, 4, 16, 16)": 1, "(2, 4, 16, 16)": 1}  # the neighbour's estimate, then the window
    assert result["stage_calls"]["controlnet"] == 1 and result["controlnet_flops"] > 0
    counted = result["unet_flops"] + result["controlnet_flops"] + result["vae_flops"]
    per_frame = bench.main([*args, "--tile", "0", "--flops-only", "--json"])["frame_flops_unet_untiled"]
    assert counted == pytest.approx(2 * per_frame, rel=1e-9)
    capsys.readouterr()
