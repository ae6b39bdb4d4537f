"""What does running a grid through Ray Tune cost, and does the stage cache share the edits?

Runs the smoke grid (``sweeps/smoke.yaml``, optionally on another base config and cut to the first
``--limit`` trials) twice, on equal terms:

1. sequentially, calling ``run_trial`` directly in this process (no Ray), and
2. as a sweep (``run_sweep``: local Ray, ``--concurrency`` trials at a time, 1 CPU each),

both COLD, each on its own fresh stage cache (sharing only the toy model and the second moments,
which are the same inputs for both and not what a sweep is about) and its own sqlite tracking
store. Prints the wall times, the ratio sweep / sequential, the sum of the trials' own durations
inside the sweep (so the Ray overhead = sweep wall - what the trials themselves took / concurrency),
and how many times the edit stage was built on each side: E distinct edit settings should be built
E times, not once per fine-tuning setting.

    .venv/bin/python benchmarks/sweep.py --config configs/tiny.yaml --limit 6
    .venv/bin/python benchmarks/sweep.py                     # the whole smoke grid on the toy model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from editdecay.config import load_config  # noqa: E402
from editdecay.sweep.grid import Sweep, load_sweep  # noqa: E402


def grid(sweep_file: Path, config: Path, cache: Path, uri: str, work: Path, limit: int | None) -> Sweep:
    spec = yaml.safe_load(sweep_file.read_text())
    spec["base"] = str(config.resolve())
    spec.setdefault("overrides", {})["cache_dir"] = str(cache)
    file = work / f"{cache.name}.yaml"
    file.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep = load_sweep(file, tracking_uri=uri)
    return dataclasses.replace(sweep, trials=sweep.trials[:limit] if limit else sweep.trials)


def fresh_cache(root: Path, shared_from: Path) -> Path:
    root.mkdir(parents=True)
    for name in ("toy", "stats"):
        (shared_from / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(shared_from / name)
    return root


def sequential(sweep: Sweep) -> tuple[float, list[list[str]]]:
    from editdecay.pipeline.trial import run_trial

    misses = []
    start = time.perf_counter()
    for t in sweep.trials:
        result = run_trial(t.config, run_name=t.trial_id)
        misses.append(result.cache_misses)
        print(f"  sequential {t.trial_id:28s} {result.seconds:6.1f} s  built: {','.join(result.cache_misses) or '-'}",
              flush=True)
    return time.perf_counter() - start, misses


def swept(sweep: Sweep, storage: Path, concurrency: int) -> tuple[float, list[list[str]], float]:
    from editdecay.sweep.runner import run_sweep
    from editdecay.tracking.runs import search_runs_by_tags

    start = time.perf_counter()
    outcome = run_sweep(sweep, storage=storage, max_concurrent=concurrency)
    wall = time.perf_counter() - start
    runs = search_runs_by_tags(outcome.tracking_uri, outcome.experiment, {"editdecay.sweep": outcome.sweep_id},
                               statuses=("FINISHED",))
    runs = [r for r in runs if "editdecay.trial_id" in r.tags]
    misses = [r.tags.get("editdecay.cache_misses", "").split(",") for r in runs]
    return wall, [[m for m in ms if m] for ms in misses], sum(r.metrics.get("trial.seconds", 0.0) for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=str(REPO / "sweeps" / "smoke.yaml"))
    ap.add_argument("--config", default=str(REPO / "configs" / "toy.yaml"), help="base trial config for the grid")
    ap.add_argument("--limit", type=int, default=None, help="run only the first N trials of the grid")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--shared-cache", default=None,
                    help="where the toy model and second moments live (default: the config's cache_dir)")
    ap.add_argument("--work", default=None, help="scratch directory (default: a new temporary one)")
    args = ap.parse_args()

    config = Path(args.config)
    shared = Path(args.shared_cache or load_config(config).cache_dir).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="editdecay-bench-sweep-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    seq_grid = grid(Path(args.sweep), config, fresh_cache(work / "cache-seq", shared), f"sqlite:///{work}/seq.db",
                    work, args.limit)
    sweep_grid = grid(Path(args.sweep), config, fresh_cache(work / "cache-sweep", shared), f"sqlite:///{work}/sweep.db",
                      work, args.limit)
    n = len(sweep_grid.trials)
    edit_settings = {json.dumps(t.config.edit.model_dump(mode="json"), sort_keys=True) for t in sweep_grid.trials
                     if t.config.edit.method != "none"}
    print(f"benchmark: {n} trials of {args.sweep} on {config}, both sides cold on separate stage caches under {work}",
          flush=True)

    seq_wall, seq_misses = sequential(seq_grid)
    sweep_wall, sweep_misses, trial_sum = swept(sweep_grid, work / "tune", args.concurrency)

    def edits(misses: list[list[str]]) -> int:
        return sum(ms.count("edit") for ms in misses)

    print()
    print(f"trials                     {n}   (distinct edit settings E = {len(edit_settings)})")
    print(f"sequential run_trial       {seq_wall:8.1f} s  (no Ray, one process, torch default threads)")
    print(f"sweep (Ray Tune, {args.concurrency} at once) {sweep_wall:8.1f} s  (1 CPU and 1 torch thread per trial)")
    print(f"ratio sweep / sequential   {sweep_wall / seq_wall:8.2f}")
    print(f"sum of trial times inside the sweep {trial_sum:8.1f} s; sweep wall - that / {args.concurrency} = "
          f"{sweep_wall - trial_sum / args.concurrency:.1f} s of Ray start-up, scheduling and logging")
    print(f"edit stage built           sequential {edits(seq_misses)}, sweep {edits(sweep_misses)} "
          f"(expected E = {len(edit_settings)}, not one per trial with an editor)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
