"""The stage cache: each stage's output lives in a content-addressed directory.

``<cache_dir>/stages/<stage>/<key>/`` where ``key`` hashes exactly the inputs that determine the
stage (its config subset and the keys of the stages it reads), so a grid of E edit settings ×
F fine-tuning settings edits E times, not E×F. A directory is complete when its ``stage.json``
exists: it is built under a temporary name and renamed (a crash leaves nothing that looks done),
under a file lock (concurrent Ray trials needing the same stage: one builds, the others wait and
reuse). Hits and misses are recorded on the cache object — one per trial — never globally.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from editdecay import __version__
from editdecay.config import stable_hash
from editdecay.io import atomic_directory

MARKER = "stage.json"


@dataclass
class StageCache:
    root: Path
    force: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)  # {"stage", "key", "hit"} in order

    def key(self, stage: str, inputs: Mapping[str, Any]) -> str:
        # The package version is part of every key: a new release never reuses an older build.
        return stable_hash({"stage": stage, "inputs": dict(inputs), "editdecay": __version__}, length=16)

    def path(self, stage: str, key: str) -> Path:
        return Path(self.root) / "stages" / stage / key

    def get_or_build(self, stage: str, inputs: Mapping[str, Any], build: Callable[[Path], None]) -> tuple[Path, str]:
        """Return (directory, key) of the stage's output, calling ``build(tmp_dir)`` if missing."""
        key = self.key(stage, inputs)
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if (final / MARKER).is_file() and not self.force:
                self.events.append({"stage": stage, "key": key, "hit": True})
                return final, key
            started = time.time()
            with atomic_directory(final) as tmp:
                build(tmp)
                (tmp / MARKER).write_text(json.dumps({"stage": stage, "key": key, "inputs": inputs,
                                                      "seconds": round(time.time() - started, 3)}, indent=1, default=str))
            self.events.append({"stage": stage, "key": key, "hit": False})
            return final, key

    @property
    def hits(self) -> list[str]:
        return [e["stage"] for e in self.events if e["hit"]]

    @property
    def misses(self) -> list[str]:
        return [e["stage"] for e in self.events if not e["hit"]]
