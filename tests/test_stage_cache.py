"""The stage cache builds a stage once per key, atomically, even with concurrent builders."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from editdecay.pipeline.cache import MARKER, StageCache


def test_same_inputs_hit_different_inputs_miss(tmp_path):
    calls = []

    def build(d: Path) -> None:
        calls.append(d)
        (d / "out.txt").write_text("built")

    cache = StageCache(tmp_path)
    a, key_a = cache.get_or_build("edit", {"method": "memit", "n": 10}, build)
    b, key_b = cache.get_or_build("edit", {"n": 10, "method": "memit"}, build)  # key order is irrelevant
    c, _ = cache.get_or_build("edit", {"method": "alphaedit", "n": 10}, build)
    assert a == b != c and key_a == key_b and len(calls) == 2
    assert cache.hits == ["edit"] and cache.misses == ["edit", "edit"]
    assert (a / "out.txt").read_text() == "built" and (a / MARKER).is_file()
    forced = StageCache(tmp_path, force=True)
    forced.get_or_build("edit", {"method": "memit", "n": 10}, build)
    assert len(calls) == 3 and forced.misses == ["edit"]


def test_failed_build_leaves_nothing_that_looks_done(tmp_path):
    cache = StageCache(tmp_path)

    def broken(d: Path) -> None:
        (d / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cache.get_or_build("finetune", {"a": 1}, broken)
    stage_dir = tmp_path / "stages" / "finetune"
    assert not [p for p in stage_dir.iterdir() if not p.name.endswith(".lock")]
    path, _ = cache.get_or_build("finetune", {"a": 1}, lambda d: (d / "ok").write_text("1"))
    assert (path / "ok").is_file() and cache.misses == ["finetune"]


def _worker(root: str, out: "mp.Queue") -> None:
    cache = StageCache(Path(root))

    def slow(d: Path) -> None:
        time.sleep(1.0)
        (d / "pid").write_text(str(mp.current_process().pid))

    cache.get_or_build("stats", {"layer": 3}, slow)
    out.put(cache.events[0]["hit"])


def test_concurrent_builders_build_once(tmp_path):
    queue: mp.Queue = mp.Queue()
    procs = [mp.get_context("fork").Process(target=_worker, args=(str(tmp_path), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    hits = sorted(queue.get(timeout=5) for _ in procs)
    assert hits == [False, True, True]
