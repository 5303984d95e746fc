"""`vsrup` as a user runs it, in a subprocess: outputs, exit codes, signals, and nothing half-written.

These use `--model lanczos` so they run in seconds; the diffusion model's end-to-end test lives
in test_default_model.py.
"""

import hashlib
import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import media_factory as mf


def vsrup(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vsrup", *map(str, args)], capture_output=True, text=True, timeout=300, **kw)


def frames_of(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [(f.time, f.width, f.height) for f in c.decode(stream)], [s.type for s in c.streams]


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if "partial" in p.name]


def writing_job(tmp_path: Path, out_dir: Path) -> subprocess.Popen:
    """A long lanczos job into ``out_dir``, in its own process, once it has started writing its output."""
    src = mf.make_video(tmp_path / "long.mp4", frames=400, size=(160, 120), audio=(mf.Audio("aac"),))
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "vsrup", "upscale", str(src), str(out_dir / "o.mp4"), "-m", "lanczos", "-s", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not leftovers(out_dir) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert leftovers(out_dir), "the run never started writing"
    return proc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_upscale_keeps_every_frame_time_and_the_audio(tmp_path):
    src = mf.mp4_vfr(tmp_path)
    out = tmp_path / "out" / "up.mp4"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 0, result.stderr
    (src_frames, src_kinds), (out_frames, out_kinds) = frames_of(src), frames_of(out)
    assert len(out_frames) == len(src_frames)
    assert [round(t, 3) for t, _, _ in out_frames] == [round(t, 3) for t, _, _ in src_frames]
    assert {(w, h) for _, w, h in out_frames} == {(2 * src_frames[0][1], 2 * src_frames[0][2])}
    assert out_kinds == src_kinds == ["video", "audio"]
    assert leftovers(out.parent) == []


def test_frames_span_writes_only_those_frames_with_their_times(tmp_path):
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "part.mp4"
    assert vsrup("upscale", src, out, "-m", "lanczos", "-s", "2", "--frames", "3:7").returncode == 0
    src_frames, _ = frames_of(src)
    out_frames, kinds = frames_of(out)
    assert [round(t, 3) for t, _, _ in out_frames] == [round(t, 3) for t, _, _ in src_frames[3:7]]
    assert kinds == ["video", "audio"]


@pytest.mark.parametrize("make", [mf.corrupt, mf.truncated, mf.moov_at_end_truncated, mf.audio_only, mf.empty_file, mf.text_file])
def test_bad_input_exits_65_in_one_line_and_leaves_nothing(tmp_path, make):
    src = make(tmp_path)
    before = sha(src)
    out = tmp_path / "out.mkv"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 65, result.stderr
    assert result.stderr.startswith("vsrup: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists() and leftovers(tmp_path) == []
    assert sha(src) == before


def test_allow_partial_writes_what_decodes_with_a_warning(tmp_path):
    src = mf.truncated(tmp_path)
    out = tmp_path / "out.mkv"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2", "--allow-partial")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr
    assert 0 < len(frames_of(out)[0]) < 30


def test_output_io_error_exits_74_and_removes_the_temporary_file(tmp_path):
    src = mf.long_mkv(tmp_path, frames=30)
    out = tmp_path / "out.mkv"

    def small_files():  # any file past 20 kB fails to grow: EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "4", preexec_fn=small_files)
    assert result.returncode == 74, result.stderr
    assert "cannot write" in result.stderr or "File too large" in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_output_is_refused_kept_or_replaced(tmp_path):
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    refused = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    kept = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2", "--skip-existing")
    assert kept.returncode == 0 and out.read_bytes() == b"precious"
    replaced = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2", "--overwrite")
    assert replaced.returncode == 0 and len(frames_of(out)[0]) == 12


def test_output_equal_to_input_is_refused(tmp_path):
    src = mf.mp4_aac(tmp_path)
    before = sha(src)
    result = vsrup("upscale", src, src, "-m", "lanczos", "--overwrite")
    assert result.returncode == 2 and "input" in result.stderr
    assert sha(src) == before


def test_batch_attempts_every_input_and_reports_failures_in_json(tmp_path):
    good = mf.mp4_aac(tmp_path)
    bad = mf.corrupt(tmp_path)
    out = tmp_path / "outdir"
    result = vsrup("upscale", good, bad, out, "-m", "lanczos", "-s", "2", "--format", "mkv", "--log-json")
    assert result.returncode == 65
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and "progress" in kinds and "done" in kinds and "error" in kinds
    summary = events[-1]
    assert summary["event"] == "summary" and summary["seconds"] > 0 and summary["exit_code"] == 65
    assert {k: summary[k] for k in ("done", "skipped", "failed", "failed_inputs")} == {
        "done": 1, "skipped": 0, "failed": 1, "failed_inputs": [{"input": str(bad), "exit_code": 65}]}
    assert (out / f"{good.stem}.mkv").exists()
    assert not (out / f"{bad.stem}.mkv").exists() and leftovers(out) == []


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_exits_128_plus_signal_and_leaves_nothing(tmp_path, signum, code):
    out_dir = tmp_path / "out"
    proc = writing_job(tmp_path, out_dir)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []


def test_frames_folder_keeps_names_depth_and_alpha_and_resumes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ["2.png", "10.png", "1.png"]:
        Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).save(src / name)
    rgba16 = (rng.random((12, 16, 4)) * 65535).astype(np.uint16)
    import cv2

    cv2.imwrite(str(src / "3.png"), rgba16)
    out = tmp_path / "out"
    result = vsrup("frames", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["1.png", "10.png", "2.png", "3.png"]
    deep = cv2.imread(str(out / "3.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (24, 32, 4)
    assert Image.open(out / "1.png").size == (32, 24)
    # resume: one output lost, the others untouched
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "10.png").unlink()
    again = vsrup("frames", src, out, "-m", "lanczos", "-s", "2", "--skip-existing")
    assert again.returncode == 0, again.stderr
    assert (out / "10.png").exists()
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in out.iterdir() if p.name != "10.png")


def test_probe_reports_rotation_rate_and_streams_as_json(tmp_path):
    src = mf.mp4_rotated(tmp_path, 90)
    result = vsrup("probe", src, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["video"]["rotation"] in (90, -270) and info["video"]["frames"] == 12
    assert [s["kind"] for s in info["streams"]] == ["video", "audio"]
    table = vsrup("probe", src)
    assert table.returncode == 0 and "rotation" in table.stdout


def test_probe_of_bad_input_is_exit_65(tmp_path):
    result = vsrup("probe", mf.text_file(tmp_path))
    assert result.returncode == 65 and result.stderr.count("\n") == 1


@pytest.mark.parametrize("args,needle", [(["--codec", "nosuch"], "unknown video encoder"), (["--codec", "ffv1", "--pix-fmt", "gbrp"], "cannot encode pixel format gbrp")])
def test_bad_encoder_settings_are_usage_errors_before_any_work(tmp_path, args, needle):
    src = mf.mp4_aac(tmp_path)
    result = vsrup("upscale", src, tmp_path / "out.mkv", "-m", "lanczos", "-s", "2", *args)
    assert result.returncode == 2 and needle in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_a_log_json_reader_that_leaves_early_stops_the_reporting_not_the_job(tmp_path):
    """`vsrup ... --log-json | head -1`: the job goes on, keeps its output and exits per the job."""
    src = mf.make_video(tmp_path / "long.mp4", frames=100, size=(160, 120))
    out = tmp_path / "o.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "vsrup", "upscale", str(src), str(out), "-m", "lanczos", "-s", "2", "--log-json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()  # what `head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert first["event"] == "start" and err == ""
    assert len(frames_of(out)[0]) == 100 and leftovers(tmp_path) == []


def test_under_log_json_errors_go_to_stderr_too(tmp_path):
    result = vsrup("upscale", tmp_path / "missing.mp4", tmp_path / "o.mp4", "-m", "lanczos", "--log-json")
    assert result.returncode == 65
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()] == ["error"]
    assert result.stderr.startswith("vsrup: error: ") and "missing.mp4" in result.stderr and result.stderr.count("\n") == 1


def test_a_storm_of_sigterms_exits_143_in_one_line_and_leaves_nothing(tmp_path):
    out_dir = tmp_path / "out"
    proc = writing_job(tmp_path, out_dir)
    for _ in range(300):
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err == "vsrup: error: interrupted by SIGTERM\n", err
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("stderr_to", ["file", "pipe"])
def test_a_two_frame_10_bit_job_succeeds_whatever_stderr_is(tmp_path, stderr_to):
    """Issue 11, item 4: libx265's uninitialised dts for encodes of up to 2 frames."""
    src = mf.make_video(tmp_path / "ten2.mp4", frames=2, size=(200, 200), pix_fmt="yuv420p10le")
    for attempt in range(3):
        out = tmp_path / f"t{attempt}.mp4"
        with open(tmp_path / "err.txt", "w+") as err:
            stream = err if stderr_to == "file" else subprocess.PIPE
            result = subprocess.run([sys.executable, "-m", "vsrup", "upscale", str(src), str(out), "-s", "2", "--model", "lanczos"],
                                    stderr=stream, text=True, timeout=120)
            err.seek(0)
            message = err.read() if stderr_to == "file" else result.stderr
        assert result.returncode == 0, message
        assert len(frames_of(out)[0]) == 2


def test_frames_into_a_folder_that_cannot_be_created_is_exit_74(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(src / "1.png")
    (tmp_path / "file").write_text("a file, not a folder")
    result = vsrup("frames", src, tmp_path / "file" / "out", "-m", "lanczos", "-s", "2")
    assert result.returncode == 74, result.stderr
    assert result.stderr.startswith("vsrup: error: ") and result.stderr.count("\n") == 1 and "file/out" in result.stderr


def test_a_directory_batch_skips_hidden_and_temporary_files(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    mf.mp4_aac(clips)
    (clips / ".aac.vsrup-12345.partial.mp4").write_bytes(b"half of a killed run")
    (clips / "._aac.mp4").write_bytes(b"macOS resource fork")
    out = tmp_path / "out"
    result = vsrup("upscale", clips, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["aac.mp4"]


def test_a_frame_size_change_mid_stream_is_resized_to_the_first_frame_s_size(tmp_path):
    src = mf.ts_size_change(tmp_path)
    out = tmp_path / "o.mkv"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 0, result.stderr
    assert "frame size changes" in result.stderr
    frames, _ = frames_of(out)
    assert len(frames) == 24 and {(w, h) for _, w, h in frames} == {(128, 96)}


@pytest.mark.parametrize("make", [mf.truncated, mf.faststart_truncated])
def test_a_truncated_input_fails_before_the_long_work(tmp_path, make):
    """Where the container says how long the video is, truncation is found before any frame is upscaled."""
    src = make(tmp_path, frames=200)
    result = vsrup("upscale", src, tmp_path / "o.mkv", "-m", "lanczos", "-s", "2", "--log-json")
    assert result.returncode == 65, result.stderr
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()] == ["error"]
    assert "truncated" in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def test_a_span_before_the_truncation_still_runs(tmp_path):
    src = mf.truncated(tmp_path, frames=200)
    result = vsrup("upscale", src, tmp_path / "o.mkv", "-m", "lanczos", "-s", "2", "--frames", "0:10")
    assert result.returncode == 0, result.stderr
    assert len(frames_of(tmp_path / "o.mkv")[0]) == 10


def test_a_read_only_file_system_is_exit_74(tmp_path):
    """A real read-only mount where the tests may mount one (root with CAP_SYS_ADMIN); skipped elsewhere."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only file system here")
    try:
        result = vsrup("upscale", mf.mp4_aac(tmp_path), read_only / "o.mp4", "-m", "lanczos", "-s", "2")
    finally:
        subprocess.run(["umount", str(read_only)], check=True)
    assert result.returncode == 74, result.stderr
    assert result.stderr == f"vsrup: error: {read_only / 'o.mp4'}: cannot write output: Read-only file system\n"
