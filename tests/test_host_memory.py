"""The host memory a job's frames need: the formula of docs/memory.md, and the refusal before the long work."""

from __future__ import annotations


import media_factory as mf
from vsrup import host_memory
from vsrup.config import UpscaleConfig
from vsrup.host_memory import host_bytes
from vsrup.pipeline import upscale

MIB = 2**20


def test_the_formula_adds_up_its_documented_terms():
    # 960x540 -> x4 with lanczos (a window of one), queues of 8 and 2, 8-bit 4:2:0 out (1.5 bytes per pixel).
    px = 960 * 540
    f_in, f_out = 12 * px, 12 * 16 * px
    expected = (8 + 1 + 1) * f_in + (1 + 1) * f_out + (2 + 1.5) * f_out + 60 * 1.5 * 16 * px + host_memory.HOST_MARGIN
    got = host_bytes(in_px=px, scale=4, model_scale=4, window=1, overlap=0, queue_in=8, queue_out=2, picture_bytes=1.5, colour_fix_on_host=False)
    assert got == int(expected)
    # A window of 8 with an overlap of 2 and the colour fix on the host; x2 asked of a x4 model.
    clip = host_bytes(in_px=px, scale=2, model_scale=4, window=8, overlap=2, queue_in=8, queue_out=2, picture_bytes=1.5, colour_fix_on_host=True)
    f_nat, f_2 = 12 * 16 * px, 12 * 4 * px
    assert clip == int((8 + 8 + 1) * f_in + (8 + 6) * f_nat + 8 * (f_nat / 2 + 2 * f_2) + 2 * f_2 + 3.5 * f_2 + 60 * 1.5 * 4 * px + host_memory.HOST_MARGIN)


def test_frames_grow_with_the_window_and_the_output_size():
    base = dict(in_px=640 * 360, scale=4, model_scale=4, window=8, overlap=2, queue_in=8, queue_out=2, picture_bytes=1.5, colour_fix_on_host=False)
    assert host_bytes(**{**base, "window": 16}) > host_bytes(**base) > host_bytes(**{**base, "window": 1, "overlap": 0})
    assert host_bytes(**{**base, "in_px": 4 * 640 * 360}) > 3 * (host_bytes(**base) - host_memory.HOST_MARGIN)


def test_a_job_whose_frames_cannot_fit_stops_before_the_long_work(tmp_path, monkeypatch):
    src = mf.make_video(tmp_path / "in.mp4", frames=6, size=(64, 48))
    monkeypatch.setattr(host_memory, "available_host_memory", lambda: 10 * MIB)  # any job needs more than this
    events = []
    results = upscale([src], tmp_path / "out.mp4", UpscaleConfig(model="lanczos", scale=4), emit=events.append)
    error = results[0].error
    assert isinstance(error, host_memory.HostMemoryError) and error.exit_code == 1
    assert "\n" not in str(error) and "GiB of host memory" in str(error) and "0.0 GiB is available" in str(error)
    assert not [e for e in events if e.kind == "progress"]  # not one frame was upscaled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_the_estimate_is_reported_with_what_is_resident(tmp_path):
    src = mf.make_video(tmp_path / "in.mp4", frames=3, size=(32, 24))
    events = []
    upscale([src], tmp_path / "out.mp4", UpscaleConfig(model="lanczos", scale=2), emit=events.append)
    reports = [e for e in events if e.kind == "memory"]
    assert len(reports) == 1 and reports[0].data["frames_bytes"] > 0
    assert reports[0].data["resident_bytes"] is None or reports[0].data["resident_bytes"] > 50 * MIB
    assert reports[0].data["available_bytes"] >= reports[0].data["frames_bytes"]
