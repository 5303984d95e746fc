"""Driving a resumable job: open (or resume) its work directory, render the units it lacks, assemble the output.

``run`` is one input's job in this process: every unit, or one shard's (``--shard I/N``: units I,
I + N, ...; shards never assemble). ``assemble_work_dir`` is ``vsrup assemble``: the final step after
the shards, which refuses, listing them, while units are missing. ``ray_executor`` drives the same
steps with the units spread over Ray actors.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vsrup.config import EncodeConfig, JobConfig, SampleConfig, UpscaleConfig
from vsrup.errors import OutputError, UsageError
from vsrup.events import Emit, Event, ignore
from vsrup.jobs.manifest import FORMAT, WorkDir, create_json, differences, environment, model_files, plain, settings, sha256_of, write_json
from vsrup.jobs.units import CorruptUnit, Unit, check_pix_fmt, plan_units, read_unit, render_unit, save_record
from vsrup.models import ModelInfo
from vsrup.outputs import atomic_output, discard
from vsrup.pipeline import Job, LazyModel, Span, clip_shape, prepare


def work_path(job: Job, config: UpscaleConfig, several: bool = False) -> Path:
    """The job's work directory: --work-dir (a folder per output when a batch shares it), else beside the output."""
    chosen = config.job.work_dir
    if chosen is None:
        return job.target.with_name(job.target.name + ".vsrup-work")
    return Path(chosen) / job.target.name if several else Path(chosen)


@dataclass(frozen=True)
class Renderer:
    """What planning needs of the process that renders: its model's info, free device memory and environment."""

    info: ModelInfo
    budget: int | None  # free bytes on its device with the model loaded: every unit's memory plans are made from it
    env: dict


def describe(model, config: UpscaleConfig) -> Renderer:
    """The Renderer of a loaded model, in the process that holds it."""
    budget = None
    if model.info.cost is not None:
        import torch

        from vsrup.memory import free_memory

        budget = free_memory(torch.device(model.info.device))
    return Renderer(model.info, budget, environment(model.info.device, config.dtype))


def begin(job: Job, config: UpscaleConfig, emit: Emit, several: bool) -> tuple[Span, WorkDir]:
    """Probe the input, decide the span and the work directory (discarded first with --restart)."""
    jc = config.job
    span = prepare(job, config, emit)
    work = WorkDir(work_path(job, config, several))
    if jc.restart and jc.shard is not None:
        raise UsageError("--restart discards every shard's work; run it without --shard first, or remove the work directory")
    if jc.restart and work.path.exists():
        work.remove()
        emit(Event("info", path=str(job.source), message=f"--restart: discarded {work.path}"))
    work.create()
    return span, work


def todo(job: Job, span: Span, config: UpscaleConfig, work: WorkDir, manifest: dict, emit: Emit, env) -> list[Unit]:
    """The units this process (or this shard) must render; the done ones are announced as resumed."""
    jc = config.job
    units = [Unit(u["id"], u["lo"], u["hi"], u["decode_from"]) for u in manifest["units"]]
    done = work.records(manifest)
    mine = [u for u in units if jc.shard is None or u.id % jc.shard[1] == jc.shard[0]]
    left = [u for u in mine if u.id not in done]
    if left:
        accept_env(manifest, config, work, job, emit, env())
    emit(Event("start", path=str(job.source), message=f"upscaling to {job.target} ({len(left)} of {len(units)} units to render)",
               total=sum(u.hi - u.lo for u in left),
               data={"output": str(job.target), "total_estimated": False, "width": span.size[0], "height": span.size[1]}))
    for unit in mine:
        if unit.id in done:
            emit(unit_event(job, unit, len(units), "resumed", f"unit {unit.id + 1}/{len(units)} (frames {unit.lo}:{unit.hi}) was done"))
    return left


def run(job: Job, lazy: LazyModel, config: UpscaleConfig, emit: Emit, *, several: bool = False) -> int:
    """Run (or resume) one input's job in this process; returns the frames written (or, for a shard, rendered)."""
    jc = config.job
    span, work = begin(job, config, emit, several)
    with exclusive(work, shared=jc.shard is not None):
        manifest = open_job(job, span, config, work, emit, lambda: describe(lazy.get(), config))
        units = manifest["units"]
        todo_units = todo(job, span, config, work, manifest, emit, lambda: local_env(config))
        rendered = 0
        tracker = None
        if todo_units:
            from vsrup.pipeline import work_shape
            from vsrup.progress import Tracker

            check_fit(lazy.get(), config, span, manifest["plan"]["pix_fmt"], str(job.source), emit)
            window, overlap = work_shape(lazy.get(), config)
            tracker = Tracker(str(job.source), sum(u.hi - u.lo for u in todo_units), window=window, overlap=overlap, emit=emit)
        for unit in todo_units:
            rendered += render(job, span, lazy, config, work, manifest, unit, emit, tracker)
        if jc.shard is not None:
            left = len(units) - len(work.records(manifest))
            emit(Event("info", path=str(job.source), message=f"shard {jc.shard[0]}/{jc.shard[1]}: its units are done; "
                       + (f"{left} unit(s) of other shards remain" if left else f"all units are done: run `vsrup assemble {work.path}`")))
            return rendered
        return finish(job, span, lazy, config, work, manifest, emit)


def check_fit(model, config: UpscaleConfig, span: Span, pix_fmt: str, what: str, emit: Emit) -> None:
    """The host-memory check of a plain run (``pipeline.check_frames_fit``), for a unit's frames: decoded a clip
    ahead, written to its file in the encoder's pixel format as they come."""
    import av

    from vsrup.pipeline import check_frames_fit, queue_depth

    video = span.info.video
    in_px, out_px = video.width * video.height, span.size[0] * span.size[1]
    picture = sum(p.buffer_size for p in av.VideoFrame(64, 64, pix_fmt).planes) / 64**2
    check_frames_fit(model, config, in_px, out_px, queue_depth(in_px), 0, picture, what, emit)


def finish(job: Job, span: Span, lazy, config: UpscaleConfig, work: WorkDir, manifest: dict, emit: Emit) -> int:
    """Assemble; a unit whose file fails its checks is rendered again (when a model is at hand) and assembly restarts."""
    for _ in range(len(manifest["units"]) + 1):
        try:
            written = assemble(job, span, config, work, manifest, emit)
        except CorruptUnit as error:
            emit(Event("warning", path=str(job.source), message=f"{error}: rendering it again"))
            work.forget(error.unit)
            if lazy is None:
                raise UsageError(f"{work.path}: {error}; run the job (or its shard) again to render it, then assemble") from None
            unit = next(Unit(u["id"], u["lo"], u["hi"], u["decode_from"]) for u in manifest["units"] if u["id"] == error.unit)
            render(job, span, lazy, config, work, manifest, unit, emit)
            continue
        manifest["output"] = {"committed": True, "frames": written}
        write_json(work.manifest_path, manifest)
        if not config.job.keep_work:
            work.remove()
        return written
    raise OutputError(f"{work.path}: unit files keep failing their checks after being rendered again; is the disk failing?")


def unit_event(job: Job, unit: Unit, units: int, state: str, message: str, **data) -> Event:
    return Event("unit", path=str(job.source), message=message,
                 data={"unit": unit.id, "units": units, "lo": unit.lo, "hi": unit.hi, "state": state, **data})


def render(job: Job, span: Span, lazy: LazyModel, config: UpscaleConfig, work: WorkDir, manifest: dict, unit: Unit, emit: Emit,
           tracker=None) -> int:
    """Render one unit here, record it, and fold it into the manifest: the frames rendered."""
    n = len(manifest["units"])
    emit(unit_event(job, unit, n, "start", f"unit {unit.id + 1}/{n}: frames {unit.lo}:{unit.hi}", worker=os.getpid()))
    plan = manifest["plan"]
    record = render_unit(unit, span.info, lazy.get(), span.config, work, pix_fmt=plan["pix_fmt"], size=span.size,
                         budget=plan["budget_bytes"], emit=emit, tracker=tracker)
    record["env"] = environment(lazy.get().info.device, config.dtype)
    check_env(manifest, record["env"], config, work)
    save_record(work, record)
    if not config.job.shard:
        fold(work, manifest)
    emit(unit_event(job, unit, n, "done", f"unit {unit.id + 1}/{n} done in {record['seconds']:.1f} s", seconds=record["seconds"]))
    return unit.hi - unit.lo


def fold(work: WorkDir, manifest: dict) -> None:
    """Rewrite the manifest with every unit's state (and its record, for the done ones)."""
    done = work.records(manifest)
    manifest["units"] = [{**{k: u[k] for k in ("id", "lo", "hi", "decode_from")}, "state": "done" if u["id"] in done else "pending",
                          **({k: done[u["id"]][k] for k in ("file", "bytes", "frames", "seconds")} if u["id"] in done else {})}
                         for u in manifest["units"]]
    write_json(work.manifest_path, manifest)


def check_env(manifest: dict, env: dict, config: UpscaleConfig, work: WorkDir) -> None:
    changed = differences(manifest["env"], env)
    if changed and not config.job.accept_env_change:
        raise UsageError(f"{work.path}: the software or device differs from the job's ({'; '.join(changed)}): its units may not agree "
                         "bit for bit; pass --accept-env-change to go on anyway, or --restart")


def local_env(config: UpscaleConfig) -> dict:
    """This process's environment, for the device the job asks for (before the model loads)."""
    from vsrup.device import resolve_device

    return environment(str(resolve_device(config.device)), config.dtype)


def accept_env(manifest: dict, config: UpscaleConfig, work: WorkDir, job: Job, emit: Emit, env: dict) -> None:
    """Before rendering more units: the same software and device as the job's, or --accept-env-change (recorded)."""
    changed = differences(manifest["env"], env)
    if not changed:
        return
    check_env(manifest, env, config, work)
    manifest.setdefault("env_changes", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": changed})
    manifest["env"] = env
    if config.job.shard is None:
        write_json(work.manifest_path, manifest)
    emit(Event("warning", path=str(job.source), message=f"--accept-env-change: {'; '.join(changed)}; the output may differ from an uninterrupted run's"))


@contextmanager
def exclusive(work: WorkDir, *, shared: bool):
    """One driver per work directory, or any number of shards (each taking its own units), never both."""
    path = work.path / "lock"
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{work.path}: another vsrup process is running this job") from None
        yield


def identity(job: Job, span: Span, config: UpscaleConfig, folder: Path | None, hashes: dict) -> dict:
    """What decides the output's bits, as the manifest records and a rerun compares it."""
    return plain({
        "input": {"bytes": job.source.stat().st_size, "sha256": sha256_of(job.source, hashes)},
        "settings": settings(span.config),
        "model": model_files(folder, hashes),
    })


def model_folder(config: UpscaleConfig) -> Path | None:
    """The model's folder (a local folder, or the Hub cache snapshot) without loading it; None for a model without files."""
    from vsrup.models import hub
    from vsrup.models.registry import choose

    choice = choose(config.model)
    files = getattr(choice.module, "FILES", None)
    if choice.source is None or not isinstance(files, hub.Layout):
        return None
    from vsrup.device import is_half, resolve_device, resolve_dtype

    half = is_half(resolve_dtype(config.dtype, resolve_device(config.device)))
    return hub.resolve(choice.source, files, config.revision, half)


def open_job(job: Job, span: Span, config: UpscaleConfig, work: WorkDir, emit: Emit, renderer: Callable[[], Renderer]) -> dict:
    """The job's manifest: the existing one if its identity is this command's (else a UsageError listing what changed),
    or a new one, planned from one decoding pass with what ``renderer()`` says of the process that renders."""
    existing = work.manifest()
    hashes = dict(existing.get("hashes", {})) if existing else {}
    ident = identity(job, span, config, model_folder(config), hashes)
    if existing is not None:
        changed = differences(existing["job"], ident)
        if changed:
            raise UsageError(f"{work.path} holds another job: {'; '.join(changed)}; pass --restart to discard its work, or choose another --work-dir")
        work.clean(existing, emit, alone=config.job.shard is None)
        return existing
    model = renderer()
    emit(Event("stage", path=str(job.source), message="planning the units (one decoding pass)", data={"stage": "plan"}))
    units, count = plan_job(span, model, config)
    encode = config.encode
    pix_fmt = encoder_pix_fmt(job, span, work, emit)
    check_pix_fmt(pix_fmt, span.info.video, span.size)
    budget = model.budget
    manifest = {
        "vsrup_manifest": FORMAT,
        "job": ident,
        "env": model.env,
        "about": {"input": str(job.source.resolve()), "output": str(job.target.resolve()), "config": plain(asdict(config)),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "plan": {"frames": count, "first": span.first, "stop": units[-1].hi, "pix_fmt": pix_fmt, "budget_bytes": budget,
                 "encoder_threads": encode.threads or os.cpu_count() or 1, "memory_plans": memory_plans(model, config, units, span, budget)},
        "units": [{**u.row(), "state": "pending"} for u in units],
        "output": {"committed": False},
        "hashes": hashes,
    }
    if not create_json(work.manifest_path, manifest):  # another shard planned it first: compare with its identity
        return open_job(job, span, config, work, emit, renderer)
    emit(Event("info", path=str(job.source), message=f"planned {len(units)} unit(s) of about {config.job.unit_len} frames in {work.path}"))
    return manifest


def plan_job(span: Span, model, config: UpscaleConfig) -> tuple[list[Unit], int]:
    from contextlib import closing

    from vsrup.media.decode import decode_frames

    s = config.sample
    clip_len, overlap = clip_shape(model, config)
    with closing(decode_frames(span.info, deinterlace=config.deinterlace, allow_partial=config.allow_partial)) as frames:
        return plan_units(frames, first=span.first, stop=span.stop, unit_len=config.job.unit_len, kind=model.info.kind,
                          clip_len=clip_len, overlap=overlap, every=model.info.restart_every, scene_threshold=s.scene_threshold)


def memory_plans(model, config: UpscaleConfig, units: list[Unit], span: Span, budget: int | None) -> dict:
    """The plan of each window length the job will use, for the record (every unit recomputes them from the budget)."""
    if budget is None:
        return {}
    import torch

    from vsrup.memory import Planner

    s = config.sample
    planner = Planner(model.info.cost, torch.device(model.info.device), s.tile, s.tile_overlap, s.batch, budget=budget)
    h, w = span.info.video.height, span.info.video.width
    frames = 1 if model.info.kind == "sequential" else clip_shape(model, config)[0]
    return {f"{frames} frames of {w}x{h}": planner.plan(frames, h, w).describe()}


def encoder_pix_fmt(job: Job, span: Span, work: WorkDir, emit: Emit) -> str:
    """The pixel format the final encoder will take, from a writer opened (and discarded) as the final one will be;
    its refusals (options, streams) surface now, before any unit is rendered."""
    from vsrup.media.encode import VideoWriter

    trial = work.path / f".trial.partial{job.target.suffix}"
    writer = VideoWriter(trial, span.info, span.config.encode, span.size, trim=span.config.frames is not None, emit=ignore)
    try:
        return writer.pix_fmt
    finally:
        writer.abort()
        discard(trial)


def assemble(job: Job, span: Span, config: UpscaleConfig, work: WorkDir, manifest: dict, emit: Emit) -> int:
    """Encode the output once from the done units, with the input's timestamps; a UsageError listing the missing units."""
    from vsrup.media.encode import VideoWriter
    from vsrup.progress import Tracker

    done = work.records(manifest)
    missing = [u for u in manifest["units"] if u["id"] not in done]
    if missing:
        listed = ", ".join(f"{u['id']} ({u['lo']}:{u['hi']})" for u in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise UsageError(f"{work.path}: {len(missing)} of {len(manifest['units'])} units are not done: {listed}; "
                         "run the shards that hold them, then assemble")
    for record in done.values():
        check_env(manifest, record["env"], config, work)
    plan = manifest["plan"]
    encode = replace(span.config.encode, threads=plan["encoder_threads"])
    total = plan["stop"] - plan["first"]
    tracker = Tracker(str(job.source), total, emit=emit)
    tracker.stage("assemble", f"encoding {job.target} from {len(done)} unit(s)")
    written = 0
    with atomic_output(job.target, overwrite=config.overwrite, emit=emit) as partial:
        with VideoWriter(partial, span.info, encode, span.size, trim=span.config.frames is not None, emit=emit) as writer:
            if writer.pix_fmt != plan["pix_fmt"]:
                raise UsageError(f"{job.target}: the encoder now takes {writer.pix_fmt}, the units hold {plan['pix_fmt']}; pass --restart")
            for unit in manifest["units"]:
                for frame, pts in read_unit(work, done[unit["id"]], plan["pix_fmt"], span.info.video):
                    writer.write_frame(frame, pts)
                    written += 1
                    tracker.frames(written)
    return written


def assemble_work_dir(path: Path, *, overwrite: bool = False, keep_work: bool = False, emit: Emit = ignore) -> int:
    """`vsrup assemble WORK_DIR`: the output of a job whose units are all done (by shards); nothing is rendered here."""
    work = WorkDir(path)
    manifest = work.manifest() if (path / "manifest.json").is_file() else None
    if manifest is None:
        raise UsageError(f"{path}: not a vsrup work directory (no manifest.json)")
    about = manifest["about"]
    config = config_from(about["config"])
    config = replace(config, overwrite=overwrite, job=replace(config.job, shard=None, keep_work=keep_work, restart=False))
    job = Job(Path(about["input"]), Path(about["output"]))
    if not job.source.is_file():
        raise UsageError(f"{job.source}: the job's input is gone")
    span = prepare(job, config, emit)
    hashes = dict(manifest.get("hashes", {}))
    now = {"bytes": job.source.stat().st_size, "sha256": sha256_of(job.source, hashes)}
    if now != manifest["job"]["input"]:
        raise UsageError(f"{job.source}: the input changed since the job was planned; run the job again with --restart")
    with exclusive(work, shared=False):
        return finish(job, span, None, config, work, manifest, emit)


def config_from(data: dict) -> UpscaleConfig:
    """The UpscaleConfig a manifest recorded (``asdict`` through JSON: tuples came back as lists)."""
    def tuples(d: dict) -> dict:
        return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v for k, v in d.items()}

    data = dict(data)
    encode = EncodeConfig(**tuples(data.pop("encode")))
    sample = SampleConfig(**tuples(data.pop("sample")))
    job = data.pop("job")
    return UpscaleConfig(**tuples(data), encode=encode, sample=sample, job=JobConfig(**tuples(job)) if job else None)
