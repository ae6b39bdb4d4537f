"""The stage cache: each stage's output lives in a content-addressed directory.

``<cache_dir>/stages/<stage>/<key>/`` where ``key`` hashes exactly the inputs that determine the
stage (its config subset, the keys of the stages it reads, and the *content* of every input file
it reads: :func:`input_file_digests`), so a grid of E edit settings × F fine-tuning settings edits
E times, not E×F, and a data file changed in place is never answered with a stale stage. A
directory is complete when its ``stage.json`` exists: it is built under a temporary name and
renamed (a crash leaves nothing that looks done), under a file lock (concurrent Ray trials needing
the same stage: one builds, the others wait and reuse). ``stage.json`` records the sha256 of every
file of the stage; a hit is verified against it, and an entry that fails (truncated, edited, a
file missing) is reported in one line and rebuilt. Temporary directories left by killed builds are
collected. Hits and misses are recorded on the cache object — one per trial — never globally.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from editdecay import __version__
from editdecay.config import TrialConfig, stable_hash
from editdecay.errors import DataError, EditDecayError
from editdecay.io import OUTPUT_MARKER, atomic_directory

log = logging.getLogger(__name__)

MARKER = "stage.json"
# A temporary build directory older than this is collected even if its owner cannot be checked
# (another host): no stage build of the study takes a day.
STALE_TMP_SECONDS = 24 * 3600


@dataclass
class StageCache:
    root: Path
    force: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)  # {"stage", "key", "hit"} in order

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        try:
            (self.root / "stages").mkdir(parents=True, exist_ok=True)
        except (NotADirectoryError, FileExistsError):
            raise EditDecayError(f"cache_dir {self.root}: a file is in the way (a part of the path is not a directory); "
                                 "set cache_dir to a directory") from None
        except PermissionError:
            raise EditDecayError(f"cache_dir {self.root}: not writable; set cache_dir to a writable directory") from None

    def key(self, stage: str, inputs: Mapping[str, Any]) -> str:
        # The package version is part of every key: a new release never reuses an older build.
        return stable_hash({"stage": stage, "inputs": dict(inputs), "editdecay": __version__}, length=16)

    def path(self, stage: str, key: str) -> Path:
        return Path(self.root) / "stages" / stage / key

    def get_or_build(self, stage: str, inputs: Mapping[str, Any], build: Callable[[Path], None]) -> tuple[Path, str]:
        """Return (directory, key) of the stage's output, calling ``build(tmp_dir)`` if missing or corrupt."""
        key = self.key(stage, inputs)
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            collect_stale_tmp(final.parent)
            if (final / MARKER).is_file() and not self.force:
                problem = verify_stage(final)
                if problem is None:
                    self.events.append({"stage": stage, "key": key, "hit": True})
                    return final, key
                log.warning("stage cache: %s stage %s is corrupt (%s); rebuilding it", stage, final, problem)
                print(f"editdecay: cache entry {final} is corrupt ({problem}); rebuilding it", flush=True)
            started = time.time()
            with atomic_directory(final) as tmp:
                build(tmp)
                record = {"stage": stage, "key": key, "inputs": inputs, "seconds": round(time.time() - started, 3),
                          "files": file_checksums(tmp)}
                (tmp / MARKER).write_text(json.dumps(record, indent=1, default=str))
            self.events.append({"stage": stage, "key": key, "hit": False})
            return final, key

    @property
    def hits(self) -> list[str]:
        return [e["stage"] for e in self.events if e["hit"]]

    @property
    def misses(self) -> list[str]:
        return [e["stage"] for e in self.events if not e["hit"]]


# ------------------------------------------------------------------------------------------------
# Verified reads


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative paths), except the stage record and marker."""
    sums = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and not (p.parent == directory and p.name in (MARKER, OUTPUT_MARKER)):
            sums[str(p.relative_to(directory))] = sha256_file(p)
    return sums


def verify_stage(directory: Path) -> str | None:
    """None if every file recorded in ``stage.json`` is there with its checksum, else what is wrong."""
    try:
        record = json.loads((directory / MARKER).read_text())
        expected = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MARKER} is unreadable"
    if not isinstance(expected, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in expected.items()):
        return f"{MARKER} has no file table"  # e.g. "files": [] — a damaged record, not an empty stage
    for rel, digest in expected.items():
        p = directory / rel
        if not p.is_file():
            return f"{rel} is missing"
        if sha256_file(p) != digest:
            return f"{rel} does not match its recorded checksum"
    return None


def collect_stale_tmp(directory: Path) -> None:
    """Remove ``.<name>.<host>-<pid>.<rand>.tmp`` build directories whose process is gone (this
    host) or that are older than a day (any host): a SIGKILLed build leaves one, with a real model
    gigabytes."""
    host = socket.gethostname()
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for p in entries:
        if not (p.name.startswith(".") and p.name.endswith(".tmp") and p.is_dir()):
            continue
        owner = _owner(p.name)
        try:
            age = time.time() - p.stat().st_mtime
        except OSError:
            continue
        dead = owner is not None and owner[0] == host and not _alive(owner[1])
        if dead or age > STALE_TMP_SECONDS:
            log.info("stage cache: removing leftover build directory %s", p)
            shutil.rmtree(p, ignore_errors=True)


def _owner(name: str) -> tuple[str, int] | None:
    for part in name.split("."):
        host, sep, pid = part.rpartition("-")
        if sep and host and pid.isdigit():
            return host, int(pid)
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------------
# Input files by content


def path_digest(path: str | os.PathLike) -> str:
    """sha256 over a file, or over every file of a directory (with relative names). Read in full
    every time: size and mtime cannot tell an in-place edit within one clock tick."""
    p = Path(path).expanduser().resolve()
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f"{f.relative_to(p)}\0{path_digest(f)}\n".encode())
        return h.hexdigest()
    raise DataError(f"input file {path} does not exist (it was there when the config was checked); restore it")


def _local(path: str | None) -> bool:
    return bool(path) and Path(path).expanduser().exists()


def input_file_digests(cfg: TrialConfig) -> dict[str, str | None]:
    """Content digests of every input file the trial reads, by role (None: not a local file —
    the fact world, whose content the config's ``world`` section determines, or a hub id, named
    by its id and revision in the config)."""
    from editdecay.finetune.distributed import DEEPSPEED_CONFIG_DIR, DEEPSPEED_PRESETS

    ft, ev, data, stats = cfg.finetune, cfg.eval, cfg.data, cfg.edit.stats
    ds_json = None
    if ft.method == "full" and ft.deepspeed != "none":
        ds_json = str(DEEPSPEED_CONFIG_DIR / f"{ft.deepspeed}.json") if ft.deepspeed in DEEPSPEED_PRESETS else ft.deepspeed
    files = {
        "edit_data": data.path if data.source != "world" else None,
        "stats_corpus": stats.corpus if stats.corpus != "world" else None,
        "ft_data": ft.data.path if ft.data.source == "file" else None,
        "ds_data": ev.ds_path if ev.ds_source == "file" else None,
        "deepspeed": ds_json,
    }
    return {role: (path_digest(path)[:16] if _local(path) else None) for role, path in files.items()}
