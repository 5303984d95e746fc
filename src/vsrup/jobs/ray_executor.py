"""Resumable jobs on Ray (``--ray ADDRESS``, ``--workers N``): the units of every input spread over GPU actors.

The driver (this process) plans each input's job exactly as a local run does, then hands units to
actors, two in flight per actor. An actor loads the model once and renders a unit with the same
``units.render_unit`` into the shared work directory, writing its record itself; it returns the
record. An actor that dies (a crash, SIGKILL, a lost node) is restarted by Ray, and its units are
queued again for whichever actor is free. Each input is assembled here, with the same writer a local
run uses, as soon as its units are done. Ray is imported only on this path.
"""

from __future__ import annotations

import os
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from vsrup.config import UpscaleConfig
from vsrup.errors import UsageError, VsrupError
from vsrup.events import Emit, Event, ignore
from vsrup.jobs.driver import (
    Renderer, begin, describe, exclusive, finish, fold, open_job, todo, unit_event,
)
from vsrup.jobs.manifest import WorkDir
from vsrup.jobs.units import Unit, render_unit, save_record
from vsrup.pipeline import Job, LazyModel, Result, Span

IN_FLIGHT = 2  # units queued per actor: the next one starts as soon as one ends
RESTARTS = 3  # times Ray restarts a dead actor; a unit is retried up to this many times too


class UnitWorker:
    """A Ray actor: the model, loaded once; renders units of any of the batch's inputs."""

    def __init__(self, config: UpscaleConfig):
        from vsrup.models.registry import choose

        self.lazy = LazyModel(choose(config.model), config, ignore)
        self.config = config

    def describe(self) -> tuple[Renderer, int]:
        return describe(self.lazy.get(), self.config), os.getpid()

    def render(self, unit: Unit, span: Span, work: str, plan: dict) -> dict:
        from vsrup.jobs.manifest import environment

        model = self.lazy.get()
        folder = WorkDir(Path(work))
        record = render_unit(unit, span.info, model, span.config, folder, pix_fmt=plan["pix_fmt"], size=span.size,
                             budget=plan["budget_bytes"])
        record["env"] = environment(model.info.device, span.config.dtype)
        save_record(folder, record)
        return record


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray and --workers need Ray: pip install 'vsrup[ray]'") from None
    return ray


@dataclass
class Input:
    """One input of the batch on its way through the actors."""

    job: Job
    span: Span
    work: WorkDir
    manifest: dict
    left: set[int] = field(default_factory=set)  # units not rendered yet (queued or in flight)
    started: float = field(default_factory=time.monotonic)
    error: VsrupError | None = None


def upscale_on_ray(jobs: list[Job], config: UpscaleConfig, emit: Emit) -> list[Result]:
    """Every input's job, its units rendered by Ray actors; one Result per input (failures reported, not raised)."""
    ray = import_ray()
    jc = config.job
    if not ray.is_initialized():
        ray.init(address=None if jc.ray == "local" else jc.ray, include_dashboard=False, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = jc.workers or max(1, gpus)
    resources = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
    actor_class = ray.remote(max_restarts=RESTARTS, max_task_retries=0, **resources)(UnitWorker)
    actors = [actor_class.remote(config) for _ in range(count)]
    emit(Event("info", message=f"Ray: {count} worker(s), {'one GPU each' if gpus else 'on CPUs (the cluster has no GPU)'}"))
    try:
        renderer, _ = ray.get(actors[0].describe.remote())  # what the plans are made from, once per batch
        pids = {a: ray.get(a.describe.remote())[1] for a in actors}
        with ExitStack() as locks:
            return drive(ray, jobs, config, emit, actors, pids, renderer, locks)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def drive(ray, jobs, config, emit, actors, pids, renderer, locks) -> list[Result]:
    results: dict[Job, Result] = {}
    inputs: list[Input] = []
    queue: deque[tuple[Input, Unit]] = deque()
    for job in jobs:
        if job.target.exists() and config.skip_existing:
            emit(Event("skipped", path=str(job.source), message=f"{job.target} exists", data={"output": str(job.target)}))
            results[job] = Result(job, "skipped")
            continue
        try:
            span, work = begin(job, config, emit, len(jobs) > 1)
            locks.enter_context(exclusive(work, shared=False))
            manifest = open_job(job, span, config, work, emit, lambda: renderer)
            item = Input(job, span, work, manifest)
            units = todo(job, span, config, work, manifest, emit, lambda: renderer.env)
        except VsrupError as error:
            emit(Event("error", path=str(job.source), message=str(error), data={"exit_code": error.exit_code}))
            results[job] = Result(job, "failed", error=error)
            continue
        item.left = {u.id for u in units}
        inputs.append(item)
        queue.extend((item, u) for u in units)
    from vsrup.progress import Tracker

    tracker = Tracker("", sum(u.hi - u.lo for _, u in queue), emit=emit)  # this run's frames, over every input
    flying: dict = {}  # object ref -> (actor, input, unit)
    tries: dict[tuple[int, int], int] = {}
    for item in inputs:
        if not item.left:
            settle(item, config, emit, results)
    restarting: dict = {}  # describe() call of an actor Ray is restarting -> the actor: no units for it until it answers
    while queue or flying:
        for actor in actors:
            while actor not in restarting.values() and queue and sum(1 for a, *_ in flying.values() if a is actor) < IN_FLIGHT:
                item, unit = queue.popleft()
                if item.error is not None:
                    continue
                n = len(item.manifest["units"])
                emit(unit_event(item.job, unit, n, "start", f"unit {unit.id + 1}/{n}: frames {unit.lo}:{unit.hi}", worker=pids[actor]))
                ref = actor.render.remote(unit, item.span, str(item.work.path), item.manifest["plan"])
                flying[ref] = (actor, item, unit)
        if not flying and not restarting:
            break
        ready, _ = ray.wait(list(flying) + list(restarting), num_returns=1)
        if ready[0] in restarting:  # a restarted actor answers (its new process), or is out of restarts
            actor = restarting.pop(ready[0])
            try:
                pids[actor] = ray.get(ready[0])[1]
            except ray.exceptions.RayActorError:
                actors.remove(actor)
                if not actors:
                    raise VsrupError("every Ray worker died and none can be restarted; run the same command again to resume") from None
            continue
        actor, item, unit = flying.pop(ready[0])
        n = len(item.manifest["units"])
        try:
            record = ray.get(ready[0])
        except ray.exceptions.RayActorError as error:
            key = (id(item), unit.id)
            tries[key] = tries.get(key, 0) + 1
            if tries[key] > RESTARTS:
                item.error = VsrupError(f"{item.job.source}: unit {unit.id} failed {tries[key]} times: its worker died ({type(error).__name__})")
            else:
                emit(unit_event(item.job, unit, n, "retry", f"unit {unit.id + 1}/{n}: its worker died; queued again"))
                queue.appendleft((item, unit))
                if actor not in restarting.values():  # the other actors go on meanwhile
                    restarting[actor.describe.remote()] = actor
                continue
        except ray.exceptions.RayTaskError as error:
            cause = error.as_instanceof_cause()
            item.error = cause if isinstance(cause, VsrupError) else VsrupError(f"{item.job.source}: unit {unit.id}: {error.cause!r}")
        else:
            fold(item.work, item.manifest)
            item.left.discard(unit.id)
            tracker.frames(tracker.done + unit.hi - unit.lo)
            emit(unit_event(item.job, unit, n, "done", f"unit {unit.id + 1}/{n} done in {record['seconds']:.1f} s", seconds=record["seconds"]))
        if item.error is not None and item.job not in results:
            emit(Event("error", path=str(item.job.source), message=str(item.error), data={"exit_code": item.error.exit_code}))
            results[item.job] = Result(item.job, "failed", error=item.error)
        elif not item.left and item.job not in results:
            settle(item, config, emit, results)
    return [results[job] for job in jobs if job in results]


def settle(item: Input, config: UpscaleConfig, emit: Emit, results: dict) -> None:
    """Assemble an input whose units are all done, here; its Result."""
    try:
        frames = finish(item.job, item.span, None, config, item.work, item.manifest, emit)
    except VsrupError as error:
        emit(Event("error", path=str(item.job.source), message=str(error), data={"exit_code": error.exit_code}))
        results[item.job] = Result(item.job, "failed", error=error)
        return
    seconds = time.monotonic() - item.started
    emit(Event("done", path=str(item.job.source), message=f"wrote {item.job.target}", done=frames,
               data={"output": str(item.job.target), "seconds": round(seconds, 3)}))
    results[item.job] = Result(item.job, "done", frames, seconds)
