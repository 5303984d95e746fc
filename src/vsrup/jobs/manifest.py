"""A job's work directory: the manifest (identity, environment, plan, units), unit records, and the rerun checks.

Layout (docs/jobs.md)::

    <work dir>/manifest.json      the job: identity, environment, plan and units; rewritten whole, atomically
    <work dir>/units/000003.json  unit 3's record (its file, size and per-frame pts and CRC-32), written when it is done
    <work dir>/unit_000003.nut    unit 3's frames, FFV1, lossless ("unit_000003.partial.HOST.PID.nut" while written)

A unit counts as done only when its record exists and its file has the recorded size; the records are
the truth (shards write them from separate processes), and the manifest's copy of them is a summary
rewritten by the process that drives the job.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vsrup import __version__
from vsrup.config import UpscaleConfig
from vsrup.errors import OutputError, UsageError
from vsrup.events import Emit, Event, ignore
from vsrup.outputs import alive, discard, fsync, move_no_replace

FORMAT = 1  # "vsrup_manifest" version
MANIFEST = "manifest.json"
UNIT_FILE = re.compile(r"unit_(\d{6})\.nut")
WRITER = re.compile(r".*\.(?P<host>[^.]+)\.(?P<pid>\d+)\.(tmp|nut)")  # a file being written: the writer's host and pid
RECORD = re.compile(r"(\d{6})\.json")
NOT_IDENTITY = ("overwrite", "skip_existing")  # options that change what happens to an existing output, not its bits
EXECUTOR = ("work_dir", "shard", "ray", "workers", "restart", "accept_env_change", "keep_work")  # who renders, not what


def writer_tag() -> str:
    """HOST.PID of this process, in the names of the files it is writing: a rerun removes only a dead writer's."""
    return f"{socket.gethostname().replace('.', '_') or 'host'}.{os.getpid()}"


def write_json(path: Path, data: dict) -> None:
    """Replace ``path`` with ``data`` atomically: a temporary file, fsync, rename, directory fsync."""
    temp = path.with_name(f".{path.name}.{writer_tag()}.tmp")
    try:
        temp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        fsync(temp)
        os.replace(temp, path)
        fsync(path.parent)
    except OSError as e:
        discard(temp)
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None


def create_json(path: Path, data: dict) -> bool:
    """Write ``path`` atomically unless it exists (another shard made it first): whether this call made it."""
    temp = path.with_name(f".{path.name}.{writer_tag()}.tmp")
    try:
        temp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        fsync(temp)
        move_no_replace(temp, path)
        fsync(path.parent)
    except FileExistsError:
        discard(temp)
        return False
    except OSError as e:
        discard(temp)
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
    return True


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a vsrup manifest ({e}); remove the work directory or pass --restart") from None


def plain(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists), so that a new identity compares with a stored one."""
    return json.loads(json.dumps(data))


def sha256_of(path: Path, known: dict | None = None) -> str:
    """The file's SHA-256; from ``known`` (path -> [bytes, mtime_ns, sha256]) when its size and mtime are the same;
    from the blob's name for a Hugging Face cache entry (a symlink to blobs/<sha256>)."""
    target = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", target.name) and target.parent.name == "blobs":
        return target.name
    stat = target.stat()
    cached = (known or {}).get(str(target))
    if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
        return cached[2]
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        while block := f.read(2**22):
            digest.update(block)
    if known is not None:
        known[str(target)] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
    return digest.hexdigest()


def settings(config: UpscaleConfig) -> dict:
    """What of ``config`` decides the output's bits: everything but the executor and the existing-output options."""
    data = asdict(config)
    for name in NOT_IDENTITY:
        data.pop(name)
    job = data.pop("job") or {}
    data["unit_len"] = job.get("unit_len")
    return plain(data)


def model_files(folder: Path | None, known: dict | None = None) -> dict:
    """The model folder's files by SHA-256, and its Hub revision where it is a cache snapshot."""
    if folder is None:
        return {}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return {
        "revision": folder.name if folder.parent.name == "snapshots" else None,
        "files": {p.relative_to(folder).as_posix(): sha256_of(p, known) for p in files},
    }


def environment(device: str, dtype: str = "auto") -> dict:
    """What may change a job's bits without changing its settings: the software, the device and the dtype
    ``--dtype`` resolves to on it."""
    import av
    import diffusers
    import numpy
    import torch
    import transformers

    from vsrup.device import resolve_dtype

    env = {
        "python": platform.python_version(),
        "vsrup": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "av": av.__version__,
        "ffmpeg": str(av.ffmpeg_version_info),
        "device": device_name(device),
        "dtype": str(resolve_dtype(dtype, torch.device(device))).removeprefix("torch."),
    }
    if device.startswith("cuda"):
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def device_name(device: str) -> str:
    """The device the model runs on, as specific as bits need: the GPU model, or the CPU model (its vector units)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    if device == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return "cpu: " + line.split(":", 1)[1].strip()
        except OSError:
            pass
        return f"cpu: {platform.machine()} {platform.processor()}".strip()
    return device


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Each leaf that differs, as "key: old -> new" (dotted keys)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    if old != new:
        return [f"{prefix}: {short(old)} -> {short(new)}"]
    return []


def short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class WorkDir:
    """One job's work directory (see the module doc)."""

    def __init__(self, path: Path):
        self.path = path
        self.units = path / "units"

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def create(self) -> None:
        try:
            self.units.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.path}: cannot create the work directory: {e.strerror or e}") from None

    def manifest(self) -> dict | None:
        data = read_json(self.manifest_path)
        if data is not None and data.get("vsrup_manifest") != FORMAT:
            raise UsageError(f"{self.manifest_path}: manifest format {data.get('vsrup_manifest')!r}, this vsrup reads {FORMAT}; "
                             "pass --restart to discard the work directory")
        return data

    def unit_file(self, unit: int) -> Path:
        return self.path / f"unit_{unit:06d}.nut"

    def partial_file(self, unit: int) -> Path:
        return self.path / f"unit_{unit:06d}.partial.{writer_tag()}.nut"

    def record_path(self, unit: int) -> Path:
        return self.units / f"{unit:06d}.json"

    def records(self, manifest: dict) -> dict[int, dict]:
        """The done units: a record whose file exists with the recorded size (others are dropped, to be redone)."""
        done = {}
        for unit in manifest["units"]:
            record = read_json(self.record_path(unit["id"]))
            if record is None:
                continue
            path = self.unit_file(unit["id"])
            if path.is_file() and path.stat().st_size == record["bytes"] and record["lo"] == unit["lo"] and record["hi"] == unit["hi"]:
                done[unit["id"]] = record
            else:
                self.forget(unit["id"])
        return done

    def forget(self, unit: int) -> None:
        """Drop a unit's record and file: it will be rendered again."""
        discard(self.record_path(unit))
        discard(self.unit_file(unit))

    def clean(self, manifest: dict, emit: Emit = ignore, *, alone: bool = True) -> None:
        """Remove what a killed run left (``.partial`` files, temporary manifests) and unit files the manifest does not list.

        ``alone``: no other process works in the directory (a driver's lock), so every partial file is a dead
        one's; else (shards) only those whose writer was on this host and is gone."""
        listed = {u["id"] for u in manifest["units"]}
        here = writer_tag().rsplit(".", 1)[0]
        for entry in list(self.path.iterdir()) + list(self.units.iterdir()):
            name = entry.name
            stray = False
            if ".partial." in name or name.endswith(".tmp"):
                writer = WRITER.fullmatch(name)
                stray = alone or (writer is not None and writer["host"] == here and not alive(int(writer["pid"])))
            elif entry.parent == self.path and (m := UNIT_FILE.fullmatch(name)):
                stray = int(m[1]) not in listed
            elif entry.parent == self.units and (m := RECORD.fullmatch(name)):
                stray = int(m[1]) not in listed
            if stray and entry.is_file():
                discard(entry)
                emit(Event("info", path=str(self.path), message=f"removed {entry.name}, left by a run that did not finish"))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
