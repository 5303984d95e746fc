"""The command line: thin, lazy, one-line errors and documented exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import media_factory as mf

from vsrup import cli, pipeline
from vsrup.config import SampleConfig, UpscaleConfig

runner = CliRunner()


def vsrup(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vsrup", *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, vsrup.cli; sys.exit('torch' in sys.modules or 'av' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_lanczos_job_runs_without_torch(tmp_path):
    """The preview path never pays torch's (or diffusers') import: ~1.3 s (~3 s) on this machine."""
    src = mf.make_video(tmp_path / "in.mp4", frames=3, size=(32, 24))
    code = (
        "import sys\nfrom vsrup.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as done:\n"
        "    sys.exit(done.code or any(m in sys.modules for m in ('torch', 'diffusers')))"
    )
    result = subprocess.run([sys.executable, "-c", code, "upscale", str(src), str(tmp_path / "o.mp4"), "-m", "lanczos", "-s", "2"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["upscale", "only-one.mp4"],
        ["upscale", "a.mp4", "b.mp4", "--scale", "9"],
        ["upscale", "a.mp4", "b.mp4", "--scale", "2", "--width", "1920"],
        ["upscale", "a.mp4", "b.mp4", "--encoder-opt", "novalue"],
        ["upscale", "a.mp4", "b.mp4", "--start", "1:75"],
        ["upscale", "a.mp4", "b.mp4", "--start", "5", "--end", "4"],
        ["upscale", "a.mp4", "b.mp4", "--end", "5", "--duration", "4"],
        ["upscale", "a.mp4", "b.mp4", "--frames", "0:4", "--start", "1"],
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
         "--guidance-window", "0.1:0.5", "--propagation-steps", "24,26", "--steps", "27", "--color-fix", "none", "--format", "mkv",
         "--compile"],
    )
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert seen["inputs"] == [Path("a.mp4"), Path("b.mp4")] and seen["output"] == "out" and seen["fmt"] == "mkv"
    assert config.scale == 2 and config.model == "lanczos" and config.frames == (3, None) and config.encode.crf == 18
    assert config.sample == SampleConfig(tile=0, guidance_window=(0.1, 0.5), propagation_steps=(24, 26), steps=27, color_fix="none", compile=True)


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


OUT_OF_RANGE = [
    ("--guidance", "inf"), ("--guidance", "nan"), ("--guidance", "-1"), ("--guidance", "1e9"),
    ("--tile", "1"), ("--tile", "12"), ("--tile", "100"),
    ("--batch", "0"), ("--batch", "100000"),
    ("--tile-overlap", "-1"), ("--tile-overlap", "64", "--tile", "64"), ("--tile-overlap", "32", "--tile", "16"), ("--tile-overlap", "128"),
    ("--seed", "-1"), ("--seed", str(2**64)),
    ("--steps", "0"), ("--steps", "1000000"),
    ("--crf", "-1"), ("--crf", "64"),
    ("--scale", "0.5"), ("--scale", "9"), ("--scale", "nan"), ("--width", "8"), ("--height", "100000"), ("--threads", "-1"),
    ("--scene-threshold", "-0.1"), ("--scene-threshold", "1.5"), ("--scene-threshold", "nan"),
    ("--noise-level", "-1"), ("--noise-level", "351"),
    ("--clip-len", "0"), ("--clip-len", "100000"),
    ("--clip-overlap", "-1"),
    ("--motion-guidance", "nan"),
    ("--guidance-window", "nan:0.5"), ("--guidance-window", "0:inf"),
    ("--propagation-steps", "-1"), ("--propagation-steps", "30", "--steps", "30"),
]


@pytest.mark.parametrize("command", ["upscale", "frames"])
@pytest.mark.parametrize("option", OUT_OF_RANGE, ids=" ".join)
def test_numeric_options_out_of_range_exit_2_naming_the_option_before_anything_runs(monkeypatch, run_vsrup, command, option):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the job started")

    monkeypatch.setattr(pipeline, "upscale", must_not_run)
    monkeypatch.setattr(pipeline, "upscale_folder", must_not_run)
    paths = ["a.mp4", "b.mp4"] if command == "upscale" else ["in", "out"]
    if option[0] in ("--crf", "--threads") and command == "frames":
        pytest.skip("frames does not encode video")
    code, err = run_vsrup(command, *paths, *option)
    assert code == 2, err
    assert err.startswith("vsrup: error: ") and err.count("\n") == 1 and option[0] in err, err


@pytest.mark.parametrize("option", [("--tile", "16"), ("--tile", "0"), ("--tile", "auto"), ("--seed", str(2**63 - 1)), ("--guidance", "1"),
                                    ("--steps", "1000"), ("--scene-threshold", "0"), ("--crf", "0"), ("--batch", "1"),
                                    ("--tile-overlap", "0"), ("--tile", "64", "--tile-overlap", "63")], ids=" ".join)
def test_numeric_options_at_their_bounds_are_accepted(monkeypatch, run_vsrup, option):
    monkeypatch.setattr(pipeline, "upscale", lambda inputs, output, config, fmt=None, emit=None: [])
    code, err = run_vsrup("upscale", "a.mp4", "b.mp4", *option)
    assert code == 0, err


def unreadable(path):
    """Make ``path`` unreadable to the child process, also when the tests run as root (root reads anything)."""
    path.chmod(0)
    if os.geteuid() != 0:
        return None

    def drop_read_override():  # the child keeps root but loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the bounding set at exec
                raise OSError(ctypes.get_errno(), "prctl")

    return drop_read_override


@pytest.mark.parametrize("command", ["upscale", "probe"])
def test_an_unreadable_input_is_exit_65(tmp_path, command):
    import media_factory as mf

    src = mf.mp4_aac(tmp_path)
    preexec = unreadable(src)
    args = [command, src] + ([tmp_path / "o.mp4", "-m", "lanczos"] if command == "upscale" else [])
    result = vsrup(*args, preexec_fn=preexec)
    assert result.returncode == 65, result.stderr
    assert result.stderr.startswith("vsrup: error: ") and "permission denied" in result.stderr and result.stderr.count("\n") == 1


def test_messages_with_line_breaks_in_file_names_stay_on_one_line(tmp_path):
    src = tmp_path / "two\nlines\rand more.mp4"
    src.write_text("not a video")
    result = vsrup("upscale", src, tmp_path / "o.mp4", "-m", "lanczos")
    assert result.returncode == 65, result.stderr
    assert result.stderr.count("\n") == 1 and "\r" not in result.stderr, repr(result.stderr)
    assert "two\\nlines\\rand more.mp4" in result.stderr
