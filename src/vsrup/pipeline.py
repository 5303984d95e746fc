"""The one orchestrator: decode -> clips -> model -> cross-fade -> encode, for videos and image folders.

``upscale()`` runs a batch of videos, ``upscale_folder()`` an image sequence. Both resolve ``--model``
once (``models.registry``), settle the family's sampler options before anything loads, and go
through ``upscale_frames()``, the streaming core: memory holds one clip of input frames and one clip
of outputs, whatever the length of the video. The model contract is in ``models/__init__.py``;
``runner.py`` runs the model on each window (flow, memory plan, colour fix, CPU estimate).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vsrup.clips import CrossFade, Indexed, last_restart, plan, restarts
from vsrup.config import UpscaleConfig
from vsrup.errors import EXIT_RUNTIME, InputDataError, Interrupted, OutputError, UsageError, VsrupError
from vsrup.events import Emit, Event, ignore
from vsrup.models import Model, Window
from vsrup.models.registry import Choice, choose
from vsrup.outputs import atomic_output, check_output, release_signals
from vsrup.progress import Tracker
from vsrup.resize import lanczos_resize
from vsrup.runner import Flows, ModelRunner
from vsrup.threads import Ahead, Behind

QUEUE_BYTES = 256 * 2**20  # float32 RGB frames each background queue (decode ahead, encode behind) may hold
QUEUE_FRAMES = 8  # and at most this many frames (at least one): enough to keep the model fed
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class Result:
    job: Job
    status: str  # done|skipped|failed
    frames: int = 0
    seconds: float = 0.0
    error: VsrupError | None = None


def plan_jobs(inputs: Sequence[Path], output: Path | str, fmt: str | None = None) -> list[Job]:
    """One input file to one output file; several inputs, or a directory, to an output directory.

    ``output`` as typed: a trailing slash makes it a directory even for one input. A name with a
    video extension is never made a directory, and ``fmt`` never renames a single named output.
    """
    if not inputs:
        raise UsageError("no input given")
    as_dir = str(output).endswith(("/", os.sep))
    output = Path(output)
    sources: list[Path] = []
    for path in inputs:
        if path.is_dir():
            # Hidden files include vsrup's own temporary ones (a killed run's ".o.vsrup-PID.partial.mp4").
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise UsageError(f"{path}: no video files in this directory")
            sources += found
        else:
            sources.append(path)
    fmt = fmt.lstrip(".").lower() if fmt else None
    single = len(inputs) == 1 and not inputs[0].is_dir() and not as_dir and not output.is_dir()
    if single:
        if fmt and output.suffix and output.suffix.lower() != "." + fmt:
            raise UsageError(f"{output}: --format {fmt} contradicts the output's extension {output.suffix}; drop one of them")
        return [Job(sources[0], output.with_suffix("." + fmt) if fmt else output)]
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: several inputs need an output directory")
    if not output.exists() and not as_dir and output.suffix.lower() in VIDEO_SUFFIXES:
        raise UsageError(f"{output}: several inputs need an output directory, and this name is a video file's; "
                         "name a directory (a trailing / makes one)")
    jobs = [Job(s, output / (s.stem + ("." + fmt if fmt else s.suffix))) for s in sources]
    names = [j.target.name for j in jobs]
    if len(set(names)) != len(names):
        raise UsageError(f"{output}: two inputs would write the same output name")
    return jobs


def upscale(inputs: Sequence[Path], output: Path | str, config: UpscaleConfig, *, fmt: str | None = None, emit: Emit = ignore) -> list[Result]:
    """Upscale every input; each is attempted, failures are reported in the results, not raised.

    ``output`` as the user typed it (see ``plan_jobs``: a trailing slash names a directory)."""
    jobs = plan_jobs([Path(p) for p in inputs], output, fmt)
    choice, config = settle(config)
    model = LazyModel(choice, config, emit)
    results = []
    for job in jobs:
        release_signals()  # a signal held during the last job's commit stops the batch here
        if job.target.exists() and config.skip_existing:
            emit(Event("skipped", path=str(job.source), message=f"{job.target} exists", data={"output": str(job.target)}))
            results.append(Result(job, "skipped"))
            continue
        results.append(run_job(lambda: upscale_video(job, model, config, emit), job, emit))
    return results


def run_job(work: Callable[[], int], job: Job, emit: Emit) -> Result:
    """Run one job; a failure becomes a Result (and an error event). Interruptions stop the batch."""
    started = time.monotonic()
    try:
        frames = work()
    except (KeyboardInterrupt, Interrupted):
        raise
    except Exception as e:
        if not isinstance(e, VsrupError):
            if os.environ.get("VSRUP_DEBUG"):
                raise
            e = VsrupError(f"{job.source}: internal error: {type(e).__name__}: {e} (VSRUP_DEBUG=1 shows the traceback)")
        emit(Event("error", path=str(job.source), message=str(e), data={"exit_code": e.exit_code}))
        return Result(job, "failed", seconds=time.monotonic() - started, error=e)
    seconds = time.monotonic() - started
    emit(Event("done", path=str(job.source), message=f"wrote {job.target}", done=frames, data={"output": str(job.target), "seconds": round(seconds, 3)}))
    return Result(job, "done", frames, seconds)


def settle(config: UpscaleConfig) -> tuple[Choice, UpscaleConfig]:
    """Resolve ``--model`` once and fill in its family's sampler defaults: option errors before anything loads."""
    choice = choose(config.model)
    config = choice.settle(config)
    if config.sample.flow != "dis":
        from vsrup.flow import require

        require(config.sample.flow)
    return choice, config


class LazyModel:
    """Loads the model on first use, once per batch, after the first input has been checked."""

    def __init__(self, choice: Choice, config: UpscaleConfig, emit: Emit):
        self.choice, self.config, self.emit, self.model = choice, config, emit, None

    def get(self) -> Model:
        if self.model is None:
            self.model = self.choice.load(self.config, self.emit)
        return self.model


def upscale_video(job: Job, model: LazyModel, config: UpscaleConfig, emit: Emit) -> int:
    from vsrup.media.decode import check_length, decode_frames
    from vsrup.media.encode import VideoWriter
    from vsrup.media.probe import probe

    # 1. Refuse what must be refused before any work: output == input, an existing output.
    check_output(job.source, job.target, overwrite=config.overwrite)
    # 2. Probe the input and decide the frame span. A job that reads to the end of a truncated input fails
    #    now, where the container says how long the video is, not after the long work.
    info = probe(job.source)
    if not config.allow_partial and to_the_end(config):
        check_length(info)
    length = info.video.duration or info.duration
    if config.times is not None:  # --start/--end/--duration: the frames they hold, by index from here on
        if length is not None and config.times[0] >= length:
            raise UsageError(f"--start {config.times[0]:g} s is past the end of the input ({length:g} s)")
        config = replace(config, frames=frames_in_time(info, config), times=None)
    first, stop = frame_span(config, info.video.frames)
    total = None if stop is None else stop - first
    # The frames to expect: exact where the container counts them, else duration x rate, said to be an estimate.
    expected = total if total is not None else frames_estimate(info.video, length, first)
    estimated = total is None and expected is not None
    width, height = output_size(config, info.video.width, info.video.height, str(job.source), emit)
    path = str(job.source)
    emit(Event("start", path=path, message=f"upscaling to {job.target}", total=expected,
               data={"output": str(job.target), "total_estimated": estimated, "width": width, "height": height}))
    written = 0
    with atomic_output(job.target, overwrite=config.overwrite, emit=emit) as partial:
        # 3. Open the output: streams are planned (trial mux) before the long work starts.
        with VideoWriter(partial, info, config.encode, (width, height), trim=config.frames is not None, emit=emit) as writer:
            # 4. Load the model (once per batch), then stream: decode -> clips -> upscale -> blend -> encode.
            if model.model is None:
                emit(Event("stage", path=path, message="loading the model", data={"stage": "load"}))
            upscaler = model.get()
            window, overlap = work_shape(upscaler, config)
            tracker = Tracker(path, expected, estimated=estimated, window=window, overlap=overlap, emit=emit)
            # Decoding runs a clip ahead and encoding a clip behind, each in its own thread; the frames must fit.
            in_px = info.video.width * info.video.height
            ahead, behind = queue_depth(in_px), queue_depth(width * height)
            check_frames_fit(upscaler, config, in_px, width * height, ahead, behind, writer.picture_bytes, str(job.source), emit)
            start_at = 0
            if upscaler.info.kind == "sequential" and first > 0:  # its state starts at the last restart point before `first`
                with closing(decode_frames(info, deinterlace=config.deinterlace, allow_partial=config.allow_partial)) as scan:
                    start_at = last_restart(scan, first, upscaler.info.restart_every, config.sample.scene_threshold)
            seen = 0  # frames decoded: tells a span past the end from an input without frames

            def counted(frames):
                nonlocal seen
                for frame in frames:
                    seen = frame.index + 1
                    yield frame

            frames = counted(decode_frames(info, deinterlace=config.deinterlace, allow_partial=config.allow_partial, emit=emit))
            tracker.stage("decode", "decoding the first frames")
            with Ahead(frames, ahead, "vsrup-decode") as decoded, Behind(writer.write, behind, "vsrup-encode") as encode:
                for frame, image in upscale_frames(decoded, upscaler, config, in_span(first, stop), stop, total=expected,
                                                   start_at=start_at, emit=emit, tracker=tracker):
                    encode.submit(image, frame.pts)
                    written += 1
                    tracker.frames(written)
                tracker.stage("finish", "encoding the last frames")
                encode.finish()
            if written == 0 and seen > first:
                raise InputDataError(f"{job.source}: no frames in the range {first}:{'' if stop is None else stop}")
            if written == 0 and seen:  # the container did not say how long it is (frame_span refuses this up front where it does)
                raise UsageError(f"--frames starts at {first} but the input has {seen} frames")
    return written


def to_the_end(config: UpscaleConfig) -> bool:
    """Whether the job reads the input to its end (then a truncated input is refused up front)."""
    if config.times is not None:
        return config.times[1] is None
    return config.frames is None or config.frames[1] is None


def frames_estimate(video, length: float | None, first: int) -> int | None:
    """Frames from ``first`` on, from the duration and the nominal rate, where the container counts none."""
    if length is None or not video.rate:
        return None
    return max(0, round(length * video.rate) - first)


MAX_FACTOR = 8  # the output may be at most this many times the input per side (cli.RANGES["scale"])


def output_size(config: UpscaleConfig, width: int, height: int, what: str, emit: Emit = ignore) -> tuple[int, int]:
    """The output size for a ``width`` x ``height`` input; a UsageError for a size that is no upscale."""
    out_w, out_h = config.output_size(width, height)
    fx, fy = out_w / width, out_h / height
    if min(fx, fy) < 1 or max(fx, fy) > MAX_FACTOR:
        raise UsageError(f"{what}: {width}x{height} to {out_w}x{out_h} is a factor {min(fx, fy):.3g}..{max(fx, fy):.3g}; "
                         f"vsrup upscales by 1 to {MAX_FACTOR} (--width/--height/--scale)")
    if abs(fx / fy - 1) > 0.01 and config.width and config.height:
        emit(Event("warning", path=what, message=f"{width}x{height} to {out_w}x{out_h} changes the aspect ratio: the picture is stretched"))
    return out_w, out_h


def frames_in_time(info, config: UpscaleConfig) -> tuple[int, int | None]:
    """The [first, stop) frame indices of --start/--end/--duration (``config.times``, seconds from the first
    frame's timestamp), from the decoded frames' own timestamps: exact for variable frame rates, and the
    index span every later step (clips, seeds, restarts) works with. Decodes up to the span's end."""
    from vsrup.media.decode import decode_frames

    start, end = config.times
    first, origin, seen = None, None, 0
    with closing(decode_frames(info, deinterlace=config.deinterlace, allow_partial=config.allow_partial)) as scan:
        for frame in scan:
            origin = frame.pts if origin is None else origin
            t = float((frame.pts - origin) * info.video.time_base)
            if end is not None and t >= end:
                if first is None:
                    raise UsageError(f"no frame starts between {start:g} s and {end:g} s")
                return first, frame.index
            if first is None and t >= start:
                first = frame.index
                if end is None:
                    return first, None
            seen = frame.index + 1
    if first is None:
        raise UsageError(f"--start {start:g} s is past the end of the input ({seen} frames)")
    return first, None


def queue_depth(pixels: int) -> int:
    """How many float32 RGB frames of ``pixels`` a background queue holds: QUEUE_BYTES of them, 1 to QUEUE_FRAMES."""
    return max(1, min(QUEUE_FRAMES, QUEUE_BYTES // (12 * pixels)))


def check_frames_fit(model: Model, config: UpscaleConfig, in_px: int, out_px: int, ahead: int, behind: int, picture_bytes: float, what: str, emit: Emit) -> None:
    """Refuse, in one line, a job whose frames cannot fit in host memory (memory.host_bytes), before the long work."""
    from vsrup.host_memory import check_host_memory, host_bytes, resident_bytes

    window, overlap = clip_shape(model, config)
    scale = (out_px / in_px) ** 0.5  # the linear factor of the output's area
    need = host_bytes(
        in_px=in_px, scale=scale, model_scale=model.info.scale or scale, window=window, overlap=overlap,
        queue_in=ahead, queue_out=behind, picture_bytes=picture_bytes,
        colour_fix_on_host=model.info.generative and model.info.device == "cpu" and config.sample.color_fix != "none",
    )
    available = check_host_memory(need, what)
    emit(Event("memory", path=what, message=f"host memory for the frames: about {need / 2**30:.2f} GiB of {available / 2**30:.1f} GiB available",
               data={"frames_bytes": need, "available_bytes": available, "resident_bytes": resident_bytes()}))


def clip_shape(model: Model, config: UpscaleConfig) -> tuple[int, int]:
    """(frames per clip, overlap): the model's own window (with --clip-overlap, below it; none for independent
    frames), else --clip-len/--clip-overlap."""
    if model.info.window:
        return model.info.window, min(config.sample.clip_overlap, model.info.window - 1)
    return config.sample.clip_len, config.sample.clip_overlap


def work_shape(model: Model, config: UpscaleConfig) -> tuple[int, int]:
    """(frames per window, overlap) of the model's work, for progress: a sequential model steps each frame once."""
    return (1, 0) if model.info.kind == "sequential" else clip_shape(model, config)


def frame_span(config: UpscaleConfig, n_frames: int | None) -> tuple[int, int | None]:
    """The [first, stop) frame range of the job; stop None means to the end."""
    if config.frames is None:
        return 0, n_frames
    first, stop = config.frames
    if n_frames is not None:
        if first >= n_frames:
            raise UsageError(f"--frames starts at {first} but the input has {n_frames} frames")
        stop = n_frames if stop is None else min(stop, n_frames)
    return first, stop


def in_span(first: int, stop: int | None) -> Callable[[int], bool]:
    return lambda i: first <= i and (stop is None or i < stop)


def upscale_frames(
    frames: Iterable[Indexed],
    model: Model,
    config: UpscaleConfig,
    wanted: Callable[[int], bool],
    stop: int | None = None,
    *,
    total: int | None = None,
    start_at: int = 0,
    emit: Emit = ignore,
    tracker: Tracker | None = None,
) -> Iterator[tuple[Indexed, np.ndarray]]:
    """The streaming core: yield (input frame, output image (H, W, 3) float32) for every wanted frame, in order.

    A clip is sampled only if it holds a wanted frame; every frame's result depends only on the
    clips that contain it, so a partial run gives the frames of a whole run exactly. ``total``
    (frames of the job, when known or estimated) is for the CPU time estimate; ``tracker`` hears of
    each window and of the model's progress inside it. ``start_at``: sequential models run no frame
    before it (``clips.last_restart`` of the first wanted frame; 0: from the first shot that may hold
    a wanted frame).
    """
    runner = ModelRunner(model, config, total, emit, tracker)
    with Flows(model, config.sample.flow) as flows:
        if model.info.kind == "sequential":
            yield from stream_sequence(frames, model, runner, flows, config, wanted, stop, start_at, emit)
        else:
            yield from stream_clips(frames, model, runner, flows, config, wanted, stop)


def stream_clips(frames, model, runner: ModelRunner, flows: Flows, config: UpscaleConfig, wanted, stop):
    """Clip models: overlapping clips, sampled whole, cross-faded; the next clip's flow estimated ahead."""
    s = config.sample
    clip_len, overlap = clip_shape(model, config)
    fade = CrossFade(overlap)
    pending: dict[int, Indexed] = {}

    def final(pairs):
        for index, image in pairs:
            frame = pending.pop(index)
            if wanted(index):
                yield frame, image

    def needed():
        for clip in plan(frames, clip_len, overlap, s.scene_threshold if clip_len > 1 else 0.0):
            if stop is not None and clip.start >= stop:
                return
            if any(wanted(i) for i in clip.indices):
                yield clip

    stacked = ((clip, clip.images()) for clip in needed())  # each clip's frames (T, h, w, 3), stacked once
    current = next(stacked, None)
    while current is not None:
        clip, lowres = current
        following = next(stacked, None)
        if following is not None:  # its flow is estimated while this clip samples
            flows.prefetch(following[1], tuple(following[0].indices))
        pending.update((f.index, f) for f in clip.frames)
        if not flows.ready(tuple(clip.indices)):
            runner.tracker.stage("flow", f"estimating the optical flow of clip {runner.windows + 1}")
        window = Window(lowres, tuple(clip.indices), flows.get(lowres, tuple(clip.indices)))
        outputs = runner.run(window, lambda plan, progress: model.sample(window, plan, progress))  # (T, H, W, 3)
        yield from final(fade.push(clip, outputs))
        current = following
    yield from final(fade.flush())


def stream_sequence(frames, model, runner: ModelRunner, flows: Flows, config: UpscaleConfig, wanted, stop, start_at: int = 0,
                    emit: Emit = ignore):
    """Sequential models: one frame at a time, the state carried from frame to frame and reset at restart points.

    The model runs from a restart point only when a wanted frame may follow before the next fixed
    restart (every ``restart_every`` frames; without it, before the shot ends), so a partial run
    starts where a whole run resets its state and gives the same frames. The flow of the next pair is
    estimated in the background while a frame samples, off the critical path as for clips.
    """
    every = model.info.restart_every
    state, running, previous, pair = None, False, None, None
    frames = restarts(frames, every, config.sample.scene_threshold)
    upcoming = next(frames, None)
    while upcoming is not None:
        (frame, restart), upcoming = upcoming, next(frames, None)  # one frame of look-ahead: the next pair's flow
        i = frame.index
        if stop is not None and i >= stop:
            return
        if restart:
            ahead = range(i, i + every) if every else range(i, stop if stop is not None else i + 1)
            running = i >= start_at and (every is None and stop is None or any(wanted(k) for k in ahead))
            state = None
            if running and not wanted(i):
                emit(Event("info", message=f"{model.info.name} carries its state from frame {i}, where the shot starts: "
                                           "the frames before the first one asked for are computed, not written"))
        if running:
            current, pair = pair, None  # with a state, the pair (previous, this) was stacked and handed over a frame ago
            if upcoming is not None and not upcoming[1] and (stop is None or upcoming[0].index < stop):
                # the next frame continues the shot: its pair's flow is estimated while this frame samples
                pair = np.stack([frame.image, upcoming[0].image])  # (2, h, w, 3)
                flows.prefetch(pair, (i, upcoming[0].index))
            flow = flows.get(current, (previous.index, i)) if state is not None else None
            window = Window(frame.image[None], (i,), flow)

            def step(plan, progress):
                nonlocal state
                out, state = model.step(window, state, plan, progress)
                return out

            image = runner.run(window, step)[0]  # (H, W, 3)
            if wanted(i):
                yield frame, image
        previous = frame


@dataclass(frozen=True)
class FolderItem:
    index: int
    image: np.ndarray  # (h, w, 3) float32 RGB
    source: object  # the vsrup.media.images.Image it came from
    target: Path


def upscale_folder(in_dir: Path, out_dir: Path, config: UpscaleConfig, *, emit: Emit = ignore) -> Result:
    """`vsrup frames`: an image folder as one sequence, written with the same file names."""
    job = Job(Path(in_dir), Path(out_dir))
    choice, config = settle(config)
    return run_job(lambda: _upscale_folder(job, choice, config, emit), job, emit)


def _upscale_folder(job: Job, choice: Choice, config: UpscaleConfig, emit: Emit) -> int:
    from vsrup.media.images import list_images, read_image, write_image

    if job.target.resolve() == job.source.resolve():
        raise UsageError(f"{job.target}: output folder is the input folder; vsrup never modifies its input")
    paths = list_images(job.source, emit)
    targets = [job.target / p.name for p in paths]
    exists = [t.exists() for t in targets]
    if any(exists) and not (config.overwrite or config.skip_existing):
        clash = targets[exists.index(True)]
        raise UsageError(f"{clash}: output exists; pass --overwrite to replace or --skip-existing to resume")
    todo = {i for i, e in enumerate(exists) if config.overwrite or not e}
    for i in sorted(set(range(len(paths))) - todo):
        emit(Event("skipped", path=str(paths[i]), message=f"{targets[i]} exists", data={"output": str(targets[i])}))
    emit(Event("start", path=str(job.source), message=f"upscaling to {job.target}", total=len(todo), data={"output": str(job.target), "total_estimated": False}))
    if not todo:
        return 0
    try:
        job.target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{job.target}: cannot create the output folder: {e.strerror or e}") from None

    def items():
        for i, path in enumerate(paths):
            image = read_image(path, emit if i in todo else ignore)  # skipped images are read for the clip plan only
            yield FolderItem(i, image.rgb, image, targets[i])

    emit(Event("stage", path=str(job.source), message="loading the model", data={"stage": "load"}))
    upscaler = choice.load(config, emit)

    def write(item: FolderItem, rgb: np.ndarray) -> None:
        alpha = item.source.alpha  # (h, w, 1) or None
        if alpha is not None:
            alpha = lanczos_resize(alpha, rgb.shape[0], rgb.shape[1])  # (H, W, 1)
        write_image(item.target, rgb, alpha, like=item.source)

    written = 0
    first = read_image(paths[min(todo)]).rgb
    in_px = first.shape[0] * first.shape[1]
    out_w, out_h = output_size(config, first.shape[1], first.shape[0], str(paths[min(todo)]), emit)
    ahead, behind = queue_depth(in_px), queue_depth(out_w * out_h)
    check_frames_fit(upscaler, config, in_px, out_w * out_h, ahead, behind, 0.0, str(job.source), emit)
    window, overlap = work_shape(upscaler, config)
    tracker = Tracker(str(job.source), len(todo), window=window, overlap=overlap, emit=emit)
    with Ahead(items(), ahead, "vsrup-read") as read, Behind(write, behind, "vsrup-write") as save:
        for item, rgb in upscale_frames(read, upscaler, config, todo.__contains__, total=len(todo), emit=emit, tracker=tracker):
            save.submit(item, rgb)
            written += 1
            tracker.frames(written)
        tracker.stage("finish", "writing the last images")
        save.finish()
    return written


def exit_code(results: Sequence[Result]) -> int:
    """0 when nothing failed; the failures' shared exit code, or 1 when they differ."""
    codes = {r.error.exit_code for r in results if r.status == "failed" and r.error is not None}
    if not codes:
        return 0
    return codes.pop() if len(codes) == 1 else EXIT_RUNTIME
