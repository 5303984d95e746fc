"""The command line: thin, lazy, one-line errors and documented exit codes."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vsrup import cli, pipeline
from vsrup.config import SampleConfig, UpscaleConfig

runner = CliRunner()


def vsrup(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vsrup", *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, vsrup.cli; sys.exit('torch' in sys.modules or 'av' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["upscale", "only-one.mp4"],
        ["upscale", "a.mp4", "b.mp4", "--scale", "5"],
        ["upscale", "a.mp4", "b.mp4", "--bogus"],
        ["upscale", "a.mp4", "b.mp4", "--frames", "9:3"],
        ["upscale", "a.mp4", "b.mp4", "--audio", "mp3"],
        ["upscale", "a.mp4", "b.mp4", "--noise-level", "400"],
        ["upscale", "a.mp4", "b.mp4", "--tile", "big"],
        ["upscale", "a.mp4", "b.mp4", "--overwrite", "--skip-existing"],
        ["upscale", "a.mp4", "b.mp4", "--motion-guidance", "2"],
        ["upscale", "a.mp4", "b.mp4", "--guidance-window", "0.5:1.5"],
        ["frames", "in", "out", "--clip-len", "4", "--clip-overlap", "4"],
        ["frames", "in"],
        [],
    ],
)
def test_usage_errors_exit_2_with_one_line(args):
    result = vsrup(*args)
    assert result.returncode == 2
    if args:
        assert result.stderr.startswith("vsrup: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_options_build_the_config_and_call_one_function(monkeypatch, tmp_path):
    seen = {}

    def fake_upscale(inputs, output, config, fmt=None, emit=None):
        seen.update(inputs=inputs, output=output, config=config, fmt=fmt)
        return []

    monkeypatch.setattr(pipeline, "upscale", fake_upscale)
    result = runner.invoke(
        cli.app,
        ["upscale", "a.mp4", "b.mp4", "out", "-s", "2", "-m", "lanczos", "--frames", "3:", "--tile", "0", "--crf", "18",
         "--guidance-window", "0.1:0.5", "--propagation-steps", "24,26", "--steps", "7", "--color-fix", "none", "--format", "mkv",
         "--compile"],
    )
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert seen["inputs"] == [Path("a.mp4"), Path("b.mp4")] and seen["output"] == Path("out") and seen["fmt"] == "mkv"
    assert config.scale == 2 and config.model == "lanczos" and config.frames == (3, None) and config.encode.crf == 18
    assert config.sample == SampleConfig(tile=0, guidance_window=(0.1, 0.5), propagation_steps=(24, 26), steps=7, color_fix="none", compile=True)


def test_defaults_of_the_cli_are_the_config_defaults(monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "upscale", lambda inputs, output, config, fmt=None, emit=None: seen.update(config=config) or [])
    assert runner.invoke(cli.app, ["upscale", "a.mp4", "b.mp4"]).exit_code == 0
    assert seen["config"] == UpscaleConfig()


def test_missing_input_is_a_data_error_without_traceback(tmp_path):
    result = vsrup("upscale", tmp_path / "missing.mp4", tmp_path / "out.mp4", "--model", "lanczos")
    assert result.returncode == 65, result.stderr
    assert "missing.mp4" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_download_events_draw_a_byte_bar_then_the_job_bar_returns():
    import io

    from rich.console import Console

    from vsrup.events import Event

    report = cli.Reporter()
    report.err = Console(file=io.StringIO(), force_terminal=True, width=100)
    report(Event("start", path="in.mp4", total=10))
    report(Event("download", message="repo/unet/diffusion_pytorch_model.safetensors", done=5_000_000, total=10_000_000))
    assert report.task_name == "repo/unet/diffusion_pytorch_model.safetensors"
    report(Event("download", message="repo/unet/diffusion_pytorch_model.safetensors", done=10_000_000, total=10_000_000))
    assert report.task_name == "in.mp4" and report.progress is not None  # the job's bar is back
    report(Event("progress", path="in.mp4", done=3, total=10))
    report(Event("done", path="in.mp4", message="out.mp4", done=10))
    assert report.progress is None
    assert "diffusion_pytorch_model" in report.err.file.getvalue()


def test_hub_progress_class_forwards_bytes_at_most_once_per_percent():
    from vsrup.models.hub import byte_progress

    events = []
    bar = byte_progress("repo/vae/model.safetensors", events.append)(total=1000)
    for _ in range(250):
        bar.update(4)
    assert [e.kind for e in events] == ["download"] * len(events) and 50 <= len(events) <= 101
    assert events[-1].done == events[-1].total == 1000 and events[-1].message == "repo/vae/model.safetensors"
