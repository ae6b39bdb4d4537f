"""Tracking overhead of a trial: the same recipe with MLflow logging versus without, in one run.

    python benchmarks/trial.py                       # tiny toy trial, 3 pairs, ~1 min on 2 cores
    python benchmarks/trial.py --config configs/toy.yaml --pairs 1

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
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
