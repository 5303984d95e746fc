"""Resumable jobs (jobs/): units, the manifest, resume after SIGKILL, shards, identity checks, corrupt units.

The output of a job, interrupted or not, sharded or not, must be byte-identical to a plain run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import media_factory as mf
from tiny_sd import tiny_sd_x4_cache, tiny_sd_x4_folder  # noqa: F401  (fixtures)
from tiny_stream import tiny_stream_cache  # noqa: F401  (fixture)
from tiny_uav import tiny_uav_folder  # noqa: F401  (fixture)
from vsrup.jobs.units import plan_units

TINY = ["-m", "sd-x4", "--device", "cpu", "--steps", "2", "--clip-len", "4", "--clip-overlap", "1", "--threads", "1"]


@dataclass
class F:
    index: int
    image: np.ndarray


def frames_with_cut(n: int, cut: int | None) -> list[F]:
    rng = np.random.default_rng(0)
    a, b = 0.3 * rng.random((8, 8, 3), dtype=np.float32), 0.6 + 0.3 * rng.random((8, 8, 3), dtype=np.float32)  # dark, then bright
    return [F(i, (b if cut is not None and i >= cut else a) + 0.002 * i) for i in range(n)]


def test_units_start_at_clip_starts_and_read_from_the_clip_before():
    # clips of 4 overlapping by 1: starts 0, 3, 6, 9, ...; a cut at 14 restarts the grid at 14
    units, count = plan_units(frames_with_cut(26, 14), first=0, stop=None, unit_len=5, kind="clip", clip_len=4, overlap=1,
                              every=None, scene_threshold=0.3)
    assert count == 26
    assert [(u.lo, u.hi, u.decode_from) for u in units] == [(0, 6, 0), (6, 12, 3), (12, 17, 9), (17, 23, 14), (23, 26, 20)]
    # the first frame asked for may sit inside a clip: the unit reads from the first clip holding it
    units, _ = plan_units(frames_with_cut(26, None), first=4, stop=11, unit_len=100, kind="clip", clip_len=4, overlap=1,
                          every=None, scene_threshold=0.0)
    assert [(u.lo, u.hi, u.decode_from) for u in units] == [(4, 11, 3)]


def test_sequential_units_start_at_restart_points():
    units, _ = plan_units(frames_with_cut(20, 9), first=2, stop=None, unit_len=3, kind="sequential", clip_len=1, overlap=0,
                          every=4, scene_threshold=0.3)
    # restarts at 0, 4, 8 (every 4), 9 (the cut), 13, 17
    assert [(u.lo, u.hi, u.decode_from) for u in units] == [(2, 8, 0), (8, 13, 8), (13, 17, 13), (17, 20, 17)]


@pytest.fixture
def video(tmp_path) -> Path:
    return mf.make_video(tmp_path / "in.mp4", frames=20, size=(32, 24), audio=(mf.Audio(),))


def events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def units_by_state(log: list[dict], state: str) -> list[int]:
    return [e["unit"] for e in log if e["event"] == "unit" and e["state"] == state]


def test_a_job_is_byte_identical_to_a_plain_run_and_leaves_no_work_behind(tmp_path, video, run_vsrup):
    code, err = run_vsrup("upscale", video, tmp_path / "plain.mp4", "-m", "lanczos", "-s", "2", "--threads", "2")
    assert code == 0, err
    code, err = run_vsrup("upscale", video, tmp_path / "job.mp4", "-m", "lanczos", "-s", "2", "--threads", "2",
                          "--resumable", "--unit-len", "6", "--log-json")
    assert code == 0, err
    log = events(run_vsrup.stdout)
    assert units_by_state(log, "done") == [0, 1, 2, 3]  # 20 frames in units of 6 (frames are independent: cut anywhere)
    from test_cli_progress import documented

    fields = documented()["unit"]
    assert all(set(e) == fields for e in log if e["event"] == "unit")  # the documented --log-json schema
    assert (tmp_path / "job.mp4").read_bytes() == (tmp_path / "plain.mp4").read_bytes()
    assert not (tmp_path / "job.mp4.vsrup-work").exists()


def kill_at(args: list, moment, env=None) -> list[dict]:
    """Run ``vsrup ARGS --log-json`` and SIGKILL it at the first event for which ``moment(event)`` is true."""
    proc = subprocess.Popen([sys.executable, "-m", "vsrup", *map(str, args), "--log-json"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stdout:
        event = json.loads(line)
        seen.append(event)
        if moment(event):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the job ended before the moment to kill it"
    return seen


def test_sigkill_mid_unit_and_mid_assembly_then_the_same_command_resumes_to_identical_bytes(tmp_path, video, tiny_sd_x4_cache, run_vsrup):
    plain = tmp_path / "plain.mp4"
    assert run_vsrup("upscale", video, plain, *TINY)[0] == 0
    out = tmp_path / "out.mp4"
    job = ["upscale", video, out, *TINY, "--resumable", "--unit-len", "6"]
    # 1. killed while unit 1 samples, once its first frames are in its .partial file
    started = {}

    def sampling_unit_1(event):
        if event["event"] == "unit" and event["unit"] == 1 and event["state"] == "start":
            started["done"] = None
        elif event["event"] == "progress" and "done" in started:
            if started["done"] is None:
                started["done"] = event["done"]
            return event["done"] > started["done"]
        return False

    before = kill_at(job, sampling_unit_1)
    assert units_by_state(before, "done") == [0]
    work = tmp_path / "out.mp4.vsrup-work"
    assert list(work.glob("unit_000001.partial.*.nut")) and not out.exists(), sorted(p.name for p in work.iterdir())  # named by its writer's host and pid
    # 2. the same command: unit 0 is not computed again; killed while it assembles
    again = kill_at(job, lambda e: e["event"] == "stage" and e.get("stage") == "assemble")
    n = next(e["units"] for e in before if e["event"] == "unit")
    assert n >= 3
    assert units_by_state(again, "resumed") == [0]
    assert units_by_state(again, "start") == list(range(1, n))
    assert not out.exists() and not list(work.glob("unit_000001.partial.*"))
    # 3. once more: nothing is rendered, the output is assembled, byte-identical to the plain run
    code, err = run_vsrup(*job, "--log-json")  # in this process: nothing left to kill
    assert code == 0, err
    last = events(run_vsrup.stdout)
    assert units_by_state(last, "start") == [] and units_by_state(last, "resumed") == list(range(n))
    assert out.read_bytes() == plain.read_bytes()
    assert not work.exists()


def test_shards_then_assemble_give_the_plain_run_and_assembly_lists_what_is_missing(tmp_path, video, tiny_sd_x4_cache, run_vsrup):
    plain = tmp_path / "plain.mp4"
    tiny = [*TINY, "--clip-len", "5", "--clip-overlap", "2"]
    assert run_vsrup("upscale", video, plain, *tiny)[0] == 0
    out, work = tmp_path / "out.mp4", tmp_path / "shared-work"
    job = ["upscale", video, out, *tiny, "--work-dir", work, "--unit-len", "6"]
    assert run_vsrup(*job, "--shard", "1/2")[0] == 0
    units = json.loads((work / "manifest.json").read_text())["units"]
    assert len(units) >= 3
    code, err = run_vsrup("assemble", work)
    missing = [u for u in units if u["id"] % 2 == 0]
    listed = ", ".join(f"{u['id']} ({u['lo']}:{u['hi']})" for u in missing)
    assert code == 2 and f"{len(missing)} of {len(units)} units are not done: {listed};" in err
    assert run_vsrup(*job, "--shard", "0/2")[0] == 0
    assert not out.exists()  # shards never assemble
    assert run_vsrup("assemble", work)[0] == 0
    assert out.read_bytes() == plain.read_bytes()


def test_a_changed_setting_is_refused_with_the_differences_and_restart_discards(tmp_path, video, run_vsrup, monkeypatch):
    out = tmp_path / "out.mp4"
    args = ["upscale", video, out, "-m", "lanczos", "-s", "2", "--resumable", "--unit-len", "6"]
    code, err = run_vsrup(*args, "--shard", "0/2")
    assert code == 0, err
    code, err = run_vsrup(*args, "-s", "3", "--crf", "20")
    assert code == 2
    assert "holds another job: settings.encode.crf: null -> 20; settings.scale: 2.0 -> 3.0" in err
    code, err = run_vsrup(*args, "-s", "3", "--crf", "20", "--restart")
    assert code == 0, err
    assert out.exists()


def test_a_changed_environment_is_refused_unless_accepted_and_then_recorded(tmp_path, video, run_vsrup, monkeypatch):
    from vsrup.jobs import driver, manifest

    out = tmp_path / "out.mp4"
    args = ["upscale", video, out, "-m", "lanczos", "-s", "2", "--resumable", "--unit-len", "6", "--keep-work"]
    code, err = run_vsrup(*args, "--shard", "0/2")
    assert code == 0, err
    real = manifest.environment
    monkeypatch.setattr(driver, "environment", lambda *args: {**real(*args), "torch": "9.9.9"})
    code, err = run_vsrup(*args)
    assert code == 2 and "torch: " in err and "--accept-env-change" in err
    code, err = run_vsrup(*args, "--accept-env-change")
    assert code == 0, err
    recorded = json.loads((tmp_path / "out.mp4.vsrup-work" / "manifest.json").read_text())
    assert recorded["env_changes"][0]["changes"][0].startswith("torch: ")
    assert recorded["output"] == {"committed": True, "frames": 20}


def test_a_corrupt_unit_is_found_by_its_checksums_and_rendered_again(tmp_path, video, run_vsrup):
    plain = tmp_path / "plain.mp4"
    code, err = run_vsrup("upscale", video, plain, "-m", "lanczos", "-s", "2")
    assert code == 0, err
    out = tmp_path / "out.mp4"
    args = ["upscale", video, out, "-m", "lanczos", "-s", "2", "--resumable", "--unit-len", "6"]
    code, err = run_vsrup(*args, "--shard", "0/1")  # every unit, not assembled
    assert code == 0, err
    unit = tmp_path / "out.mp4.vsrup-work" / "unit_000002.nut"
    data = bytearray(unit.read_bytes())
    data[len(data) * 2 // 3] ^= 0x55  # same size: only the CRCs can tell
    unit.write_bytes(bytes(data))
    code, err = run_vsrup(*args, "--log-json")
    assert code == 0, err
    log = events(run_vsrup.stdout)
    assert any(e["event"] == "warning" and "unit 2:" in e["message"] for e in log)
    assert units_by_state(log, "start") == [2]
    assert out.read_bytes() == plain.read_bytes()


def test_a_fixed_plan_is_never_shrunk_on_out_of_memory():
    import torch

    from vsrup.memory import MemoryPlan, OomRetry, OutOfMemory

    plan = MemoryPlan((64, 64), 64, 16, 4, 64, 16)
    calls = []

    def oom(p):
        calls.append(p)
        raise torch.cuda.OutOfMemoryError("simulated")

    with pytest.raises(OutOfMemory, match="fixed plan .* --restart and a smaller --tile or --batch"):
        OomRetry(plan, fixed=True).run(oom)
    assert calls == [plan]


def test_a_sequential_model_s_units_start_at_its_restart_points_and_give_the_plain_run(tmp_path, tiny_stream_cache, run_vsrup):
    src = mf.make_video(tmp_path / "in.mp4", frames=12, size=(16, 12))  # its blue channel wraps at frame 7: a cut
    fast = ["--model", "stream-diffvsr", "--steps", "2", "--threads", "1"]
    assert run_vsrup("upscale", src, tmp_path / "plain.mp4", *fast)[0] == 0
    code, err = run_vsrup("upscale", src, tmp_path / "job.mp4", *fast, "--resumable", "--unit-len", "3", "--log-json")
    assert code == 0, err
    starts = [(e["lo"], e["hi"]) for e in events(run_vsrup.stdout) if e["event"] == "unit" and e["state"] == "start"]
    assert starts == [(0, 7), (7, 12)]  # the state runs through each shot: the only restart points are 0 and the cut
    assert (tmp_path / "job.mp4").read_bytes() == (tmp_path / "plain.mp4").read_bytes()


def test_a_job_over_a_frame_span_gives_the_plain_run_of_that_span(tmp_path, video, tiny_sd_x4_cache, run_vsrup):
    span = ["--frames", "5:16"]  # 5 sits inside a clip (starts 0, 3, 6, ...): its unit reads from the clip at 3
    assert run_vsrup("upscale", video, tmp_path / "plain.mp4", *TINY, *span)[0] == 0
    code, err = run_vsrup("upscale", video, tmp_path / "job.mp4", *TINY, *span, "--resumable", "--unit-len", "4", "--log-json")
    assert code == 0, err
    assert units_by_state(events(run_vsrup.stdout), "done") == [0, 1, 2]
    assert (tmp_path / "job.mp4").read_bytes() == (tmp_path / "plain.mp4").read_bytes()


def test_a_changed_input_or_model_file_is_refused(tmp_path, run_vsrup, tiny_sd_x4_folder):
    import shutil

    src = mf.make_video(tmp_path / "in.mp4", frames=8, size=(32, 24))
    model = tmp_path / "model"
    shutil.copytree(tiny_sd_x4_folder, model)
    args = ["upscale", src, tmp_path / "out.mp4", *TINY, "-m", model, "--resumable", "--unit-len", "4"]
    assert run_vsrup(*args, "--shard", "0/2")[0] == 0
    config = model / "unet" / "config.json"
    config.write_text(config.read_text() + "\n")
    code, err = run_vsrup(*args)
    assert code == 2 and "holds another job: model.files.unet/config.json: " in err
    shutil.copy(tiny_sd_x4_folder / "unet" / "config.json", config)
    mf.make_video(src, frames=9, size=(32, 24))
    code, err = run_vsrup(*args)
    assert code == 2 and "input.bytes: " in err and "input.sha256: " in err


def test_a_driver_is_refused_while_shards_run_and_a_shard_keeps_live_writers_files(tmp_path, video, run_vsrup):
    import fcntl
    import socket

    from vsrup.jobs.manifest import WorkDir

    out = tmp_path / "out.mp4"
    args = ["upscale", video, out, "-m", "lanczos", "-s", "2", "--resumable", "--unit-len", "6"]
    assert run_vsrup(*args, "--shard", "0/2")[0] == 0
    work = WorkDir(tmp_path / "out.mp4.vsrup-work")
    with open(work.path / "lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # a shard at work
        code, err = run_vsrup(*args)
        assert code == 2 and "another vsrup process is running this job" in err
    manifest = json.loads(work.manifest_path.read_text())
    host = socket.gethostname().replace(".", "_")
    live = work.path / f"unit_000001.partial.{host}.{os.getpid()}.nut"  # this process is alive
    dead = work.path / f"unit_000003.partial.{host}.{2**22 + 12345}.nut"  # no such process
    remote = work.path / "unit_000002.partial.elsewhere.1.nut"  # another machine's: it may be at work
    for path in (live, dead, remote):
        path.write_bytes(b"x")
    work.clean(manifest, alone=False)
    assert live.exists() and remote.exists() and not dead.exists()
    work.clean(manifest, alone=True)  # a driver holds the lock alone: every partial file is a dead run's
    assert not live.exists() and not remote.exists()


def test_an_upscale_a_video_job_in_its_official_folder_gives_the_plain_run(tmp_path, run_vsrup, tiny_uav_folder):
    """Windows of 8 overlapping by 2, the model's files hashed for the identity (a local folder of pickles)."""
    src = mf.make_video(tmp_path / "in.mp4", frames=14, size=(16, 12))
    fast = ["--model", tiny_uav_folder, "--device", "cpu", "--steps", "2", "--threads", "1"]
    assert run_vsrup("upscale", src, tmp_path / "plain.mp4", *fast)[0] == 0
    code, err = run_vsrup("upscale", src, tmp_path / "job.mp4", *fast, "--resumable", "--unit-len", "6", "--keep-work", "--log-json")
    assert code == 0, err
    assert units_by_state(events(run_vsrup.stdout), "done") == [0, 1]  # windows start at 0, 6, 12: units 0:6, 6:14
    assert (tmp_path / "job.mp4").read_bytes() == (tmp_path / "plain.mp4").read_bytes()
    manifest = json.loads((tmp_path / "job.mp4.vsrup-work" / "manifest.json").read_text())
    assert "unet/unet_video.bin" in manifest["job"]["model"]["files"]


def test_ray_options_without_ray_installed_are_one_line_usage_errors(tmp_path, video, run_vsrup, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as where the extra is not installed
    code, err = run_vsrup("upscale", video, tmp_path / "out.mp4", "-m", "lanczos", "--workers", "2")
    assert code == 2 and "need Ray: pip install 'vsrup[ray]'" in err and not (tmp_path / "out.mp4").exists()
    code, err = run_vsrup("upscale", video, tmp_path / "out.mp4", "-m", "lanczos", "--shard", "0/2", "--ray", "auto")
    assert code == 2 and "give --shard or --ray/--workers, not both" in err
    code, err = run_vsrup("upscale", video, tmp_path / "out.mp4", "-m", "lanczos", "--restart")
    assert code == 2 and "applies to resumable jobs" in err
