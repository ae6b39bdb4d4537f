"""Tracking overhead of a trial: the same recipe with MLflow logging versus without, in one run.

    python benchmarks/trial.py                       # tiny toy trial, 3 pairs, ~1 min on 2 cores
    python benchmarks/trial.py --config configs/toy.yaml --pairs 1
    python benchmarks/trial.py --sweep 4             # tracked trials in a Ray sweep vs bare (tiny model)
    python benchmarks/trial.py --config configs/toy.yaml --model-cache .cache/editdecay --sweep 4

``--sweep N``: the first N trials of the smoke grid (``sweeps/smoke.yaml``, seed 0, on ``--config``)
twice, each side cold on its own stage cache (sharing the toy model and layer statistics): bare, as
``trial_recipe`` with ``UntrackedRun`` one after another in this process with 1 torch thread (no
MLflow, no Ray), and tracked, as ``run_sweep`` one trial at a time (Ray start-up, worker start,
MLflow runs, params, metrics, datasets, tables, artifacts, system metrics). The ratio of the two
wall times is what tracking and orchestration add to a sweep's trials.

Each measurement runs the full recipe cold (a fresh stage-cache directory: stats, edit, both
fine-tunings and the four evaluations are all built) so both sides do the same work; the tracked
side logs params, metrics, the decay curve and artifacts (deltas, adapters, tables) into an
embedded sqlite store, the untracked side logs nothing. Tracked and untracked runs alternate, so
drift on the machine (another process, thermal) falls on both. The stage cache's own bookkeeping
(hashing, locks, ``stage.json``) is in both sides; its reuse effect is reported separately: a
warm rerun's wall time against the cold one.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from editdecay.config import load_config  # noqa: E402
from editdecay.pipeline.trial import UntrackedRun, run_trial, trial_recipe  # noqa: E402
from editdecay.tracking.runs import tracked_run  # noqa: E402
from editdecay.world.toy import ensure_toy_model  # noqa: E402

SMALL = ["edit.num_edits=20", "finetune.max_steps=12", "finetune.curve_every=4", "eval.ds_max_examples=40",
         "tracking.curve_edits=10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    ap.add_argument("--pairs", type=int, default=3, help="tracked/untracked pairs to alternate")
    ap.add_argument("--model-cache", default=str(REPO / ".cache" / "editdecay-test"),
                    help="where the toy model is (or gets) built; stages go to fresh temp dirs")
    ap.add_argument("--sweep", type=int, default=0, metavar="N",
                    help="instead: N smoke-grid trials on --config in a Ray sweep (tracked) vs bare")
    args = ap.parse_args()
    if args.sweep:
        in_sweep(args.config, args.sweep, Path(args.model_cache))
        return

    base = load_config(args.config, [f"cache_dir={args.model_cache}", *SMALL])
    toy = ensure_toy_model(base)  # the toy model is an input here (a local model dir), not measured
    tracked: list[float] = []
    untracked: list[float] = []
    with tempfile.TemporaryDirectory(prefix="editdecay-bench-") as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        # Creating the store's tables and the experiment happens once per store, not per trial.
        with tracked_run(base.tracking.experiment, "warm-up", tracking_uri=store):
            pass
        for i in range(args.pairs):
            for side in ("untracked", "tracked"):
                stages = Path(tmp) / f"{side}{i}"
                cfg = load_config(args.config, [f"cache_dir={stages}", *SMALL, f"tracking.uri={store}", f"model.name={toy}"])
                t0 = time.perf_counter()
                if side == "tracked":
                    run_trial(cfg)
                    tracked.append(time.perf_counter() - t0)
                else:
                    trial_recipe(cfg, UntrackedRun())
                    untracked.append(time.perf_counter() - t0)
                print(f"  pair {i} {side:9s} {time.perf_counter() - t0:7.1f} s", flush=True)
        t0 = time.perf_counter()
        run_trial(cfg)  # the last tracked trial again: every stage comes from the cache
        warm = time.perf_counter() - t0

    t, u = statistics.median(tracked), statistics.median(untracked)
    print(f"\ntrial ({Path(args.config).name}, cold stages), median of {args.pairs}:")
    print(f"  without MLflow  {u:7.1f} s")
    print(f"  with MLflow     {t:7.1f} s")
    print(f"  overhead ratio  {t / u:7.3f}  ({(t / u - 1) * 100:+.1f} %; aim <= +5 %)")
    print(f"  warm rerun      {warm:7.1f} s  ({warm / t:.3f} of a cold tracked trial: every stage reused)")



def in_sweep(config: str, n: int, shared: Path) -> None:
    """Bare sequential compute of N smoke-grid trials vs the same N tracked through a Ray sweep."""
    import resource

    import torch
    import yaml

    from editdecay.sweep.grid import load_sweep
    from editdecay.sweep.runner import run_sweep

    shared = shared.resolve()
    ensure_toy_model(load_config(config, [f"cache_dir={shared}"]))
    work = Path(tempfile.mkdtemp(prefix="editdecay-bench-overhead-"))

    def cache(name: str) -> Path:
        root = work / name
        root.mkdir()
        for sub in ("toy", "stats"):
            (shared / sub).mkdir(parents=True, exist_ok=True)
            (root / sub).symlink_to(shared / sub)
        return root

    spec = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    spec.update(base=str(Path(config).resolve()), seeds=[0], max_concurrent_trials=1)

    def grid(name: str):
        spec["overrides"]["cache_dir"] = str(cache(name))
        file = work / f"{name}.yaml"
        file.write_text(yaml.safe_dump(spec, sort_keys=False))
        sweep = load_sweep(file, tracking_uri=f"sqlite:///{work}/{name}.db")
        return dataclasses.replace(sweep, trials=sweep.trials[:n])

    # The layer statistics are an input every trial shares (built once per model): not measured.
    warm = grid("warm").trials[0].config
    trial_recipe(warm.model_copy(update={"finetune": warm.finetune.model_copy(update={"method": "none"})}), UntrackedRun())

    bare_grid, swept_grid = grid("bare"), grid("sweep")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a sweep's worker: 1 CPU per trial
    t0 = time.perf_counter()
    for t in bare_grid.trials:
        trial_recipe(t.config, UntrackedRun())
    bare = time.perf_counter() - t0
    torch.set_num_threads(threads)
    print(f"  bare      {bare:7.1f} s  ({n} trials: trial_recipe, UntrackedRun, one process)", flush=True)
    t0 = time.perf_counter()
    outcome = run_sweep(swept_grid, storage=work / "tune", max_concurrent=1)
    tracked = time.perf_counter() - t0
    print(f"  in sweep  {tracked:7.1f} s  ({n} trials: run_sweep, 1 at a time, tracked into sqlite; "
          f"{n - outcome.n_failed - outcome.n_not_run} finished)", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{n} smoke-grid trials ({Path(config).name}, cold stages), tracked in a sweep vs bare compute:")
    print(f"  ratio {tracked / bare:.3f}  ({(tracked / bare - 1) * 100:+.1f} %; aim <= 1.15); "
          f"{(tracked - bare) / n:.1f} s per trial; peak RSS of this process {rss:.0f} MB")


if __name__ == "__main__":
    main()
