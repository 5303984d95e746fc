"""Smoke tests of benchmarks/bench_host.py, bench_networks.py and device_check.py at their smallest sizes.

They check that the scripts run and report what docs/benchmarks.md reads from them, with numbers
that hold together; the measurements themselves belong in the docs, not in assertions.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from tiny_sd import one_torch_thread  # noqa: F401  (restores torch's thread count)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_host_accounts_for_the_accelerator_time(capsys):
    result = load_script("bench_host").main(["--size", "24x32", "--frames", "10", "--accelerator-s", "0.05", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["frames"] == result["frames"] == 10
    # clips of 8 overlapping by 2: frames 0-7 and 6-9, 12 sampled frames at 0.05 s each
    assert printed["accelerator_s"] == pytest.approx(12 * 0.05)
    assert 0 < printed["busy_fraction"] < 1 and printed["overhead_fraction"] == pytest.approx(1 - printed["busy_fraction"])
    assert printed["startup_s"] > 0 and printed["drain_s"] > 0 and printed["copy_s"] >= 0
    assert printed["steady_overhead_without_copy"] <= printed["steady_overhead"] < 1
    assert printed["startup_s"] + printed["accelerator_s"] + printed["drain_s"] < printed["wall_s"]


@pytest.mark.slow  # ~20 s: the full-size networks are built
def test_bench_networks_times_every_variant(capsys, one_torch_thread):
    result = load_script("bench_networks").main(["--device", "cpu", "--tile", "8", "--batch", "1", "--reps", "1", "--warmup", "0", "--threads", "1", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(printed["rows"]) == len(result["rows"]) == 4  # (UNet, VAE) x (contiguous, channels-last)
    assert {(r["network"], r["layout"]) for r in printed["rows"]} == {(net, layout) for net in ("unet", "vae") for layout in ("contiguous", "channels_last")}
    for row in printed["rows"]:
        assert row["best_s"] > 0 and row["flops"] > 0 and row["tflops"] == pytest.approx(row["flops"] / row["best_s"] / 1e12)
        assert row["max_abs_diff"] < 1e-3  # the layouts agree
    assert printed["matmul_tflops"] > 0 and printed["conv_tflops"] > 0


def test_device_check_of_the_cpu_against_itself_is_exact(capsys):
    result = load_script("device_check").main(["--device", "cpu", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == result
    assert printed["frames"] == 12 and printed["size"] == [128, 192]  # 12 frames of 48x32, x4
    assert printed["max_abs_levels"] == 0  # two separate jobs, same device and dtype: bit for bit
    assert "on cpu in float32" in printed["model_line"]
    assert printed["job_identical"] is True  # the same job, resumable, in units of 4 frames


def test_bench_encoders_measures_each_default_encoder_with_its_default_options(capsys):
    result = load_script("bench_encoders").main(["--sizes", "128x96", "--frames", "3", "--encoders", "libx264,libvpx-vp9", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == result
    assert [(r["encoder"], r["size"], r["frames"]) for r in printed["rows"]] == [("libx264", "128x96", 3), ("libvpx-vp9", "128x96", 3)]
    assert all(r["write_fps"] == pytest.approx(3 / r["seconds"], rel=0.05) for r in printed["rows"])
    vp9 = printed["rows"][1]["options"]
    assert vp9["row-mt"] == "1" and vp9["deadline"] == "good" and vp9["cpu-used"] == "4"  # the defaults that finish
