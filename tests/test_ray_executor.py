"""Ray executor (jobs/ray_executor.py): two actors on logical GPUs, one killed mid-job, the output byte-identical.

Skipped cleanly when Ray is not installed (``pip install 'vsrup[ray]'``); CI installs it with the test extra.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import media_factory as mf
from tiny_sd import REPO_ID, _built, tiny_sd_x4_cache  # noqa: F401  (fixture)
from vsrup.config import EncodeConfig, JobConfig, SampleConfig, UpscaleConfig
from vsrup.pipeline import upscale

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One Ray for the module: 2 CPUs, 2 logical GPUs (a CPU box schedules GPU actors on them), the tiny x4 model's cache."""
    hf_home = _built(tmp_path_factory)["hf_home"]
    env = {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield hf_home
    ray.shutdown()


def config(**job) -> UpscaleConfig:
    sample = SampleConfig(steps=2, clip_len=4, clip_overlap=1)
    return UpscaleConfig(model=REPO_ID, device="cpu", sample=sample, encode=EncodeConfig(threads=1),
                         job=JobConfig(**job) if job else None)


def test_two_actors_one_killed_mid_job_give_the_local_run_s_bytes_for_a_batch(cluster, tmp_path, tiny_sd_x4_cache):
    sources = [mf.make_video(tmp_path / "in0.mp4", frames=12, size=(32, 24), audio=(mf.Audio(),)),
               mf.make_video(tmp_path / "in1.mp4", frames=5, size=(32, 24))]
    local = upscale(sources, tmp_path / "local/", config())
    assert [r.status for r in local] == ["done"] * 2
    seen, killed = [], []

    def emit(event):
        seen.append(event)
        data = event.data
        if event.kind == "unit" and data["state"] == "start" and data["unit"] == 1 and not killed:
            killed.append(data["worker"])
            os.kill(data["worker"], signal.SIGKILL)  # the actor that was just handed unit 1 of the first input

    results = upscale(sources, tmp_path / "ray/", config(ray="auto", workers=2, unit_len=3, work_dir=str(tmp_path / "work")), emit=emit)
    assert [r.status for r in results] == ["done"] * 2, [r.error for r in results]
    retried = [e.data["unit"] for e in seen if e.kind == "unit" and e.data["state"] == "retry" and e.path == str(sources[0])]
    assert killed and 1 in retried
    for source in sources:  # each unit done once, the killed one's included; the batch's inputs share the actors
        done = [e.data["unit"] for e in seen if e.kind == "unit" and e.data["state"] == "done" and e.path == str(source)]
        units = next(e.data["units"] for e in seen if e.kind == "unit" and e.path == str(source))
        assert sorted(done) == list(range(units))
        assert (tmp_path / "ray" / source.name).read_bytes() == (tmp_path / "local" / source.name).read_bytes()
    assert not any(Path(tmp_path / "work").iterdir())  # each input's work folder goes once its output is committed
