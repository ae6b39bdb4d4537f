"""Where a toy trial's seconds go: a table per trial, one row per part of the recipe.

    python benchmarks/trial_profile.py                      # the smoke sweep's trials on configs/toy.yaml
    python benchmarks/trial_profile.py --config configs/tiny.yaml --sweep   # + a 2-trial Ray sweep
    python benchmarks/trial_profile.py --tables DIR model.toy.grad_shards=1   # overrides; per-edit CSVs

Runs two trials of the smoke grid (``sweeps/smoke.yaml``'s overrides, seed 0) in this process with
1 torch thread, as a sweep's worker does: MEMIT × LoRA × all layers on a cold stage cache, then
MEMIT × full FT × all layers on the same cache (its edit and the base/edit evaluations come from
the cache, as in a sweep, where trials share them). The toy model and the layer statistics are
inputs (built or reused beforehand, not timed). Every row is *exclusive* time: a decay-curve
evaluation inside fine-tuning counts as "decay curve", not as fine-tuning. "other" is the trial's
wall time not covered by a row (pandas merges, survival, config dumps).

``--sweep`` also runs the same two trials through ``run_sweep`` (local Ray, one at a time, fresh
stage cache and store) and reports Ray's share: sweep wall − the two trials' own wall times
(``trial.seconds`` does not include the MLflow run's start and end; those are in the table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


class Profiler:
    """Wraps functions in place; each call's time minus its wrapped callees' goes to its row."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []  # [label, seconds of wrapped callees]
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._patches: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str | Callable[[list[str]], str]) -> None:
        original = getattr(owner, attr)
        prof = self

        def wrapper(*args, **kwargs):
            name = label([s[0] for s in prof.stack]) if callable(label) else label
            prof.stack.append([name, 0.0])
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                _, inner = prof.stack.pop()
                prof.seconds[name] += took - inner
                prof.calls[name] += 1
                if prof.stack:
                    prof.stack[-1][1] += took

        setattr(owner, attr, wrapper)
        self._patches.append((owner, attr, original))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def restore(self) -> None:
        for owner, attr, original in reversed(self._patches):
            setattr(owner, attr, original)
        self._patches.clear()


ROWS = (  # (row, what it covers) in print order
    ("mlflow: run start/end", "client, experiment, environment tags, create_run, set_terminated"),
    ("mlflow: system metrics", "the system-metrics thread's start and final sample"),
    ("mlflow: params", "log_params (flattened config, resolved params)"),
    ("mlflow: metrics", "log_metrics, per-step series (train log, decay curve)"),
    ("mlflow: datasets", "log_dataset (edit records profiled, FT data)"),
    ("mlflow: tables", "log_table (per-edit grid)"),
    ("mlflow: artifacts", "log_text / log_dict / log_artifact (config, records, csv, DS answers, trainer log)"),
    ("mlflow: tags", "set_tags"),
    ("model load", "load_model + fingerprint"),
    ("inputs", "preflight, edit records, native records, hparams, input file digests"),
    ("edit", "apply_edits (z, update; layer statistics cached)"),
    ("eval ES/PS/NS", "evaluate_edits on the edit batch, per group"),
    ("eval DS", "downstream accuracy, per group"),
    ("eval native facts", "evaluate_native, per group"),
    ("decay curve", "evaluate_edits on the tracked edits during fine-tuning"),
    ("FT data", "build_finetune_data (tokenise the FT set)"),
    ("FT trainer setup", "adapter/trainable layers, TrainingArguments, Trainer"),
    ("FT steps", "Trainer.train minus the decay curve and checkpoints"),
    ("FT checkpoints", "Trainer checkpoints written during training (for resuming)"),
    ("FT save/apply", "saving the stage, apply_finetuned/restore, deltas apply/revert"),
    ("stage cache", "keys, locks, stage.json, parquet read/write"),
)


def install(prof: Profiler) -> None:
    import transformers

    import editdecay.editing.run as editing_run
    import editdecay.finetune.run as ft_run
    import editdecay.metrics.downstream as downstream
    import editdecay.metrics.edit as edit_metrics
    import editdecay.models as models
    import editdecay.pipeline.trial as trial
    import editdecay.preflight as preflight
    import editdecay.tracking.runs as runs
    from editdecay.editing.deltas import EditDeltas
    from editdecay.pipeline.cache import StageCache

    for fn in ("check_reachable", "get_experiment_id", "check_artifact_root", "environment_tags"):
        prof.wrap(runs, fn, "mlflow: run start/end")
    prof.wrap(runs.MlflowClient, "create_run", "mlflow: run start/end")  # the class tracking/runs.py uses
    prof.wrap(runs.MlflowClient, "set_terminated", "mlflow: run start/end")
    prof.wrap(runs, "_system_metrics", "mlflow: system metrics")
    prof.wrap(runs, "_finish_system_metrics", "mlflow: system metrics")
    prof.wrap(runs.Tracker, "log_params", "mlflow: params")
    prof.wrap(runs.Tracker, "log_metrics", "mlflow: metrics")
    prof.wrap(runs.Tracker, "log_metric_steps", "mlflow: metrics")
    prof.wrap(runs.Tracker, "log_dataset", "mlflow: datasets")
    prof.wrap(runs.Tracker, "log_table", "mlflow: tables")
    for fn in ("log_text", "log_dict", "log_artifact"):
        prof.wrap(runs.Tracker, fn, "mlflow: artifacts")
    prof.wrap(runs.Tracker, "set_tags", "mlflow: tags")
    prof.wrap(models, "load_model", "model load")
    prof.wrap(models, "model_fingerprint", "model load")
    prof.wrap(preflight, "check_trial_inputs", "inputs")
    for fn in ("edit_records", "native_control_records", "edit_hparams", "input_file_digests"):
        prof.wrap(trial, fn, "inputs")
    prof.wrap(editing_run, "apply_edits", "edit")
    in_ft = lambda stack: "decay curve" if "FT steps" in stack else "eval ES/PS/NS"  # noqa: E731
    prof.wrap(edit_metrics, "evaluate_edits", in_ft)
    if hasattr(edit_metrics, "EditEvaluator"):  # since issue 23: the curve's prompts are tokenised once
        prof.wrap(edit_metrics.EditEvaluator, "__init__", in_ft)
        prof.wrap(edit_metrics.EditEvaluator, "__call__", in_ft)
    prof.wrap(downstream, "evaluate_configured", "eval DS")
    prof.wrap(trial, "evaluate_native", "eval native facts")
    prof.wrap(ft_run, "build_finetune_data", "FT data")
    prof.wrap(ft_run, "finetune", "FT trainer setup")  # what is left of finetune(): wrapping, Trainer, …
    prof.wrap(transformers.Trainer, "train", "FT steps")
    prof.wrap(transformers.Trainer, "_save_checkpoint", "FT checkpoints")
    prof.wrap(ft_run, "_save", "FT save/apply")
    prof.wrap(ft_run, "apply_finetuned", "FT save/apply")
    prof.wrap(EditDeltas, "apply", "FT save/apply")
    prof.wrap(EditDeltas, "revert", "FT save/apply")
    prof.wrap(StageCache, "get_or_build", "stage cache")


EXTRA: list[str] = []  # key=value overrides from the command line, applied to every trial


def smoke_config(config: str, cache: Path, uri: str, method: str, layers: str = "all", seed: int = 0,
                 editor: str = "memit"):
    from editdecay.config import load_config

    spec = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    overrides = [f"{k}={v}" for k, v in spec["overrides"].items()]
    return load_config(config, [*overrides, f"cache_dir={cache}", f"tracking.uri={uri}", f"edit.method={editor}",
                                f"finetune.method={method}", f"finetune.layers={layers}", f"seed={seed}", *EXTRA])


def shared_cache(root: Path, shared_from: Path) -> Path:
    """A fresh stage cache that shares the toy model and the layer statistics (inputs, not measured)."""
    root.mkdir(parents=True)
    for name in ("toy", "stats"):
        (shared_from / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(shared_from / name)
    return root


def print_table(columns: dict[str, tuple[dict[str, float], dict[str, int], float]]) -> None:
    names = list(columns)
    print(f"\n{'part':24s}" + "".join(f"{n:>22s}" for n in names))
    for row, _ in ROWS:
        cells = []
        for n in names:
            secs, calls, total = columns[n]
            cells.append(f"{secs.get(row, 0.0):7.2f} s {100 * secs.get(row, 0.0) / total:4.1f}% ({calls.get(row, 0):3d})")
        print(f"{row:24s}" + "".join(f"{c:>22s}" for c in cells))
    cells = []
    for n in names:
        secs, _, total = columns[n]
        other = total - sum(secs.values())
        cells.append(f"{other:7.2f} s {100 * other / total:4.1f}%      ")
    print(f"{'other':24s}" + "".join(f"{c:>22s}" for c in cells))
    print(f"{'trial wall':24s}" + "".join(f"{columns[n][2]:7.2f} s" + " " * 14 for n in names))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "toy.yaml"))
    ap.add_argument("--shared-cache", default=None, help="where the toy model and statistics live (default: the config's)")
    ap.add_argument("--sweep", action="store_true", help="also run the two trials through Ray (run_sweep)")
    ap.add_argument("--tables", default=None, help="write each trial's per-edit table here as CSV (to compare runs)")
    ap.add_argument("overrides", nargs="*", help="key=value for every trial (e.g. model.toy.grad_shards=1)")
    args = ap.parse_args()
    EXTRA.extend(args.overrides)

    import torch

    from editdecay.config import load_config
    from editdecay.pipeline.trial import run_trial
    from editdecay.tracking.runs import tracked_run
    from editdecay.world.toy import ensure_toy_model

    torch.set_num_threads(1)  # as a sweep worker (1 CPU per trial)
    shared = Path(args.shared_cache or load_config(args.config).cache_dir).resolve()
    ensure_toy_model(load_config(args.config, [f"cache_dir={shared}", *EXTRA]))
    work = Path(tempfile.mkdtemp(prefix="editdecay-profile-"))
    uri = f"sqlite:///{work}/mlflow.db"
    # Statistics are an input shared by every trial of a sweep: build them outside the measurement.
    warm = smoke_config(args.config, shared_cache(work / "warm", shared), uri, "none")
    with tracked_run(warm.tracking.experiment, "warm-up", tracking_uri=uri):  # store schema, once per store
        pass
    run_trial(warm)
    cache = shared_cache(work / "cache", shared)
    prof = Profiler()
    install(prof)
    columns: dict[str, tuple[dict[str, float], dict[str, int], float]] = {}
    try:
        for method in ("lora", "full"):
            cfg = smoke_config(args.config, cache, uri, method)
            prof.reset()
            start = time.perf_counter()
            result = run_trial(cfg, run_name=f"profile-{method}")
            wall = time.perf_counter() - start
            columns[f"memit×{method}×all"] = (dict(prof.seconds), dict(prof.calls), wall)
            if args.tables:
                Path(args.tables).mkdir(parents=True, exist_ok=True)
                result.per_edit.to_csv(Path(args.tables) / f"per_edit_{method}.csv", index=False)
            print(f"{method}: {wall:.1f} s, built {','.join(result.cache_misses)}", flush=True)
            print_table({f"memit×{method}×all": columns[f"memit×{method}×all"]})  # at once: a long run keeps it
    finally:
        prof.restore()
    print(f"\nconfig {args.config}, {torch.get_num_threads()} torch thread, smoke overrides, seed 0; "
          "seconds, share of the trial, (calls)")
    print_table(columns)
    if args.sweep:
        ray_overhead(args.config, shared, work)
    return 0


def ray_overhead(config: str, shared: Path, work: Path) -> None:
    from editdecay.sweep.grid import load_sweep
    from editdecay.sweep.runner import run_sweep
    from editdecay.tracking.runs import search_runs_by_tags

    spec = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    spec.update(base=str(Path(config).resolve()), seeds=[0], exclude=[],
                axes={"edit.method": ["memit"], "finetune.method": ["lora", "full"], "finetune.layers": ["all"]})
    spec["overrides"]["cache_dir"] = str(shared_cache(work / "cache-sweep", shared))
    file = work / "profile-sweep.yaml"
    file.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep = load_sweep(file, tracking_uri=f"sqlite:///{work}/sweep.db")
    start = time.perf_counter()
    outcome = run_sweep(sweep, storage=work / "tune", max_concurrent=1)
    wall = time.perf_counter() - start
    runs = [r for r in search_runs_by_tags(outcome.tracking_uri, outcome.experiment,
                                           {"editdecay.sweep": outcome.sweep_id}, statuses=("FINISHED",))
            if "editdecay.trial_id" in r.tags]
    inside = sum(r.metrics.get("trial.seconds", 0.0) for r in runs)
    print(f"\nRay sweep of the same 2 trials, one at a time: wall {wall:.1f} s, trials' own {inside:.1f} s → "
          f"{wall - inside:.1f} s of Ray start-up, worker start, scheduling and MLflow run start/end "
          f"({(wall - inside) / len(runs):.1f} s per trial)")


if __name__ == "__main__":
    raise SystemExit(main())
