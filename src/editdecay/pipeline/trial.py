"""The trial recipe: base model → edit → fine-tune → evaluate → survival, tracked in MLflow.

Reads top to bottom like a torchtune recipe. Four model groups, as in the study:

    base     the model as loaded                     evaluated: ES/PS/NS on the edit set, DS
    ftonly   base fine-tuned with the trial's setting (the "no edits" comparison for every FT setting)
    edit     base + edits (KE-only)
    ft       edited, then fine-tuned (KE→FT), with the decay curve recorded during training

Every stage's output is a content-addressed directory in the stage cache
(:mod:`editdecay.pipeline.cache`), keyed by exactly what determines it, so trials that share a
stage (same edits, different fine-tuning) build it once; the edit's target vectors z are a stage
of their own (``z``, :mod:`editdecay.editing.targets`), shared by MEMIT and AlphaEdit and by every
λ / α / null-space threshold on the same records. The trial owns no hidden state: what it
needs is passed in, what it makes is returned and logged.

The base weights are loaded once per trial and every group is derived from them in memory:
base → FT-only (adapter wrapped around it, or trained blocks copied in, then taken out again) →
apply the edit's deltas → edit → KE→FT → revert. Stages store what defines a model, never a copy
of one: the edit stage its deltas, a fine-tuning stage its adapter or (full FT) its trained blocks
(the whole model only with ``finetune.keep_weights`` or ``tracking.log_weights=full``).

Metric names (stable; reports and the MLflow UI key on them): ``<group>.es|ps|ns``,
``<group>.ds.acc``, ``<group>.ds.<task>`` for group in base/ftonly/edit/ft; ``survival.efr``,
``survival.decrease``, ``survival.survival``, ``survival.n_successful``, ``survival.n_flipped``,
``survival.n_recovered``; the decay curve as ``curve.es|ps|ns`` by training step; the
intrinsic-knowledge control ``native.retention`` (KE→FT, with ``native.retention_ci_low|high``),
``native.retention_ftonly``, ``native.retention_edit``, ``<group>.native.acc``, and how its facts were
found, ``native.n_found|n_tried|n_pool``, ``native.excluded.<reason>`` (:mod:`editdecay.metrics.native`;
the ``native`` stage selects them). Survival metrics are defined in :mod:`editdecay.metrics.survival`
and computed from the per-edit table the run logs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from editdecay import __version__
from editdecay.config import TrialConfig, flatten, stable_hash, to_yaml
from editdecay.data.records import EditRecord, records_to_jsonl
from editdecay.editing.run import edit_records, z_stage_inputs
from editdecay.io import atomic_write_json
from editdecay.metrics.native import (KNOWN_RULE, NativeControl, evaluate_native, native_pool, native_summary,
                                      select_known)
from editdecay.metrics.survival import flipped_column, survival_of_table
from editdecay.pipeline.cache import StageCache, input_file_digests
from editdecay.pipeline.resolved import curve_series, edit_hparams, resolved_params, train_log_series

log = logging.getLogger(__name__)

GROUPS = ("base", "ftonly", "edit", "ft")


@dataclass
class TrialResult:
    run_id: str
    metrics: dict[str, float]
    stage_keys: dict[str, str]
    cache_hits: list[str]
    cache_misses: list[str]
    per_edit: pd.DataFrame = field(repr=False)
    seconds: float = 0.0
    native_missing: str | None = None  # why the native-fact control is not reported (metrics/native.py)


# ------------------------------------------------------------------------------------------------
# The recipe


def run_trial(cfg: TrialConfig, *, force: bool = False, parent_run_id: str | None = None,
              run_name: str | None = None, tags: dict[str, str] | None = None) -> TrialResult:
    """One trial as one MLflow run (nested under ``parent_run_id`` in a sweep); see :func:`trial_recipe`."""
    from editdecay.preflight import check_trial_inputs
    from editdecay.tracking.runs import tracked_run

    check_trial_inputs(cfg)  # missing files, layer ranges: one line, before a run exists
    params = trial_params(cfg)
    run_tags = {"editdecay.config_hash": stable_hash(cfg), "editdecay.version": __version__, **(tags or {})}
    with tracked_run(cfg.tracking.experiment, run_name or cfg.name, params=params, tags=run_tags,
                     tracking_uri=cfg.tracking.uri, parent_run_id=parent_run_id) as run:
        return trial_recipe(cfg, run, force=force)


def trial_params(cfg: TrialConfig) -> dict[str, Any]:
    """The run's params: the flattened config, with credentials in the tracking URI replaced by ***."""
    from editdecay.tracking import redact_uri

    params = flatten(cfg)
    params["tracking.uri"] = redact_uri(params.get("tracking.uri"))
    return params


class UntrackedRun:
    """Stands in for a tracked run where nothing should be logged (the tracking-overhead benchmark)."""

    run_id = ""

    def log_metrics(self, metrics, step=None): pass  # noqa: E704
    def log_artifact(self, path, artifact_path=None): pass  # noqa: E704
    def log_text(self, text, artifact_file): pass  # noqa: E704
    def log_dict(self, data, artifact_file): pass  # noqa: E704
    def set_tags(self, tags): pass  # noqa: E704
    def log_params(self, params): pass  # noqa: E704
    def log_metric_steps(self, series): pass  # noqa: E704
    def log_table(self, table, artifact_file): pass  # noqa: E704
    def log_dataset(self, name, source, context, table=None, digest=None): pass  # noqa: E704


def trial_recipe(cfg: TrialConfig, run, *, force: bool = False) -> TrialResult:
    """base → edit → fine-tune → evaluate → survival, logging into ``run`` (a tracker)."""
    from editdecay.models import load_model, model_fingerprint, resolve_model_path

    start = time.perf_counter()
    cache = StageCache(Path(cfg.cache_dir), force=force)
    run.log_text(to_yaml(cfg, redact=True), "config.yaml")

    # -- setup: the base model (the trial's one weight load), the edit records, the downstream rows
    base_dir = resolve_model_path(cfg)
    model, tokenizer = load_model(cfg.model, base_dir)
    base_key = model_fingerprint(model)[:16]
    records = edit_records(cfg)
    records_key = stable_hash([r.to_dict() for r in records], length=16)
    # Input files by content, not path: a file changed in place must not be answered from the cache.
    files = input_file_digests(cfg)
    run.log_text(records_to_jsonl(records), "edits/records.jsonl")
    keys: dict[str, str] = {"model": base_key, "records": records_key}
    log_datasets(run, cfg, records, records_key)
    edit_hp = edit_hparams(cfg, model)
    # The intrinsic-knowledge control: facts the base model knows, never edited (scored before any edit).
    control, native_key = native_control(cfg, cache, model, tokenizer, base_key)
    if native_key is not None:
        keys["native"] = native_key
    native = control.facts

    # -- base: evaluate the model as loaded
    base_eval, keys["eval.base"] = evaluate_stage(cache, cfg, "base", base_key, records, records_key,
                                                  lambda: (model, tokenizer), files, native)

    # -- edit (KE-only): the deltas; the edited model is base + deltas, evaluated further below
    deltas_file, edited_key = None, base_key
    if cfg.edit.method != "none":
        # z first, its own stage: shared by both editors and every λ / α / threshold (editing/targets.py)
        z_dir, z_inputs = None, z_stage_inputs(cfg, model, len(records))
        if z_inputs is not None:
            z_dir, keys["z"] = cache.get_or_build("z", {"model": base_key, "records": records_key, "z": z_inputs},
                                                  lambda d: build_z(cfg, model, tokenizer, records, d))
        edit_out, keys["edit"] = cache.get_or_build(
            "edit", {"model": base_key, "records": records_key, "edit": cfg.edit.model_dump(mode="json"),
                     "stats_corpus": files["stats_corpus"], "z": keys.get("z")},
            lambda d: build_edit(cfg, model, tokenizer, records, d, force_stats=force, z_dir=z_dir))
        deltas_file, edited_key = edit_out / "deltas.safetensors", keys["edit"]
        edit_info = json.loads((edit_out / "edit.json").read_text())
        edited_layers = edit_info["layers"]
        run.log_metrics({f"edit.seconds.{k}": v for k, v in edit_info["timings"].items()})
        if cfg.tracking.log_weights != "none":
            run.log_artifact(deltas_file, "edit")
    else:
        edited_layers = None

    # -- fine-tune: FT-only (base) and KE→FT (edited), each then evaluated
    ftonly_eval = ft_eval = edit_eval = None
    ftonly_out = ft_out = None
    curve: list[dict[str, float]] = []
    # What a fine-tuning stage keeps of the trained model (part of its key: a hit must hold it).
    ft_weights = "full" if cfg.finetune.keep_weights or cfg.tracking.log_weights == "full" else "blocks"
    if cfg.finetune.method != "none":
        # The edited layers determine the FT stage only when the layer selection refers to them.
        selects_edited = cfg.finetune.layers in ("edited", "non_edited")
        ft_inputs = {"finetune": cfg.finetune.model_dump(mode="json"), "seed": cfg.seed,
                     "world": cfg.world.model_dump(mode="json"),
                     "edited_layers": edited_layers if selects_edited else None,
                     "ft_data": files["ft_data"], "deepspeed": files["deepspeed"], "weights": ft_weights}
        ftonly_out, keys["finetune.ftonly"] = cache.get_or_build(
            "finetune", {**ft_inputs, "model": base_key},
            lambda d: build_finetune(cfg, model, tokenizer, base_dir, None, d, None, edited_layers, ft_weights))
        ftonly_eval, keys["eval.ftonly"] = evaluate_stage(cache, cfg, "ftonly", keys["finetune.ftonly"], records,
                                                          records_key, lambda: derive_ft(model, tokenizer, ftonly_out), files,
                                                          native)
    if deltas_file is not None:
        with deltas_applied(model, deltas_file):  # the edited model, from here to the revert
            edit_eval, keys["eval.edit"] = evaluate_stage(cache, cfg, "edit", edited_key, records, records_key,
                                                          lambda: (model, tokenizer), files, native)
            if cfg.finetune.method != "none":
                curve_records = records[: cfg.tracking.curve_edits]
                ft_out, keys["finetune.ft"] = cache.get_or_build(
                    "finetune", {**ft_inputs, "model": edited_key, "curve": [records_key, cfg.tracking.curve_edits]},
                    lambda d: build_finetune(cfg, model, tokenizer, base_dir, deltas_file, d, curve_records,
                                             edited_layers, ft_weights))
                ft_eval, keys["eval.ft"] = evaluate_stage(cache, cfg, "ft", keys["finetune.ft"], records, records_key,
                                                          lambda: derive_ft(model, tokenizer, ft_out), files, native)
                curve_file = ft_out / "decay_curve.json"
                curve = json.loads(curve_file.read_text()) if curve_file.is_file() else []
                log_finetune_artifacts(run, cfg, ft_out, "finetune/ft")
    if cfg.finetune.method != "none":
        log_finetune_artifacts(run, cfg, ftonly_out, "finetune/ftonly")

    # -- survival and logging
    evals = {"base": base_eval, "edit": edit_eval, "ftonly": ftonly_eval, "ft": ft_eval}
    for group, ev in evals.items():
        if ev is not None:
            run.log_artifact(ev["dir"] / "ds_predictions.json", f"ds/{group}")  # DS answers, to read them
    metrics, per_edit = log_results(run, evals, control)
    run.log_metric_steps(curve_series(curve))
    run.log_params(resolved_params(cfg, edit_hp, len(records),
                                   [out for out in (ftonly_out, ft_out) if out is not None]))
    run.log_dict(metrics, "results/metrics.json")
    run.set_tags({"editdecay.stage_keys": json.dumps(keys, sort_keys=True),
                  "editdecay.cache_hits": ",".join(cache.hits), "editdecay.cache_misses": ",".join(cache.misses)})
    seconds = time.perf_counter() - start
    run.log_metrics({"trial.seconds": seconds})
    return TrialResult(run.run_id, metrics, keys, cache.hits, cache.misses, per_edit, seconds, control.missing)


# ------------------------------------------------------------------------------------------------
# Stages: each builds into a directory the cache hands it, and touches nothing else


def build_z(cfg: TrialConfig, model, tokenizer, records: list[EditRecord], out: Path) -> None:
    """The target vectors z of the edit records on the base model (``z.safetensors``, ``z.json``)."""
    from editdecay.editing.run import run_targets

    run_targets(cfg, model, tokenizer, records).save(out)


def build_edit(cfg: TrialConfig, model, tokenizer, records: list[EditRecord], out: Path,
               force_stats: bool = False, z_dir: Path | None = None) -> None:
    """Edit the in-memory base model (with the z stage's target vectors when given), keep the
    deltas (what defines the edit), and revert it."""
    from editdecay.editing.run import apply_edits
    from editdecay.editing.targets import Targets

    targets = Targets.load(z_dir, next(model.parameters()).device) if z_dir is not None else None
    hp, result = apply_edits(cfg, model, tokenizer, records, progress=False, force_stats=force_stats, targets=targets)
    if targets is not None:
        result.timings["z"] = targets.seconds  # what the z stage took when it was built
    try:
        result.deltas.save(out / "deltas.safetensors")
        (out / "records.jsonl").write_text(records_to_jsonl(records), encoding="utf-8")
        atomic_write_json(out / "edit.json", {"method": cfg.edit.method, "layers": list(hp.layers),
                                              "n_edits": result.n_edits, "timings": result.timings,
                                              "norms": result.norms})
    finally:
        result.revert(model)  # the trial derives the edited model from the saved deltas, hit or miss


@contextmanager
def deltas_applied(model, deltas_file: Path):
    """The edited model for the duration of the block: base + deltas, reverted bit for bit after."""
    from editdecay.editing.deltas import EditDeltas

    snapshot = EditDeltas.load(deltas_file).apply(model)
    try:
        yield model
    finally:
        EditDeltas.revert(model, snapshot)


def build_finetune(cfg: TrialConfig, model, tokenizer, base_dir: str | Path, deltas_file: Path | None, out: Path,
                   curve_records: list[EditRecord] | None, edited_layers: list[int] | None, weights: str) -> None:
    """Fine-tune the in-memory model (base, or base + deltas); left as it was on return."""
    from editdecay.finetune.run import finetune

    if cfg.finetune.num_processes > 1:  # data-parallel ranks under torchrun (no decay curve)
        from editdecay.finetune.launch import finetune_multiprocess

        if curve_records and cfg.finetune.curve_every:
            log.warning("finetune.num_processes=%d: the decay curve is recorded only by single-process runs",
                        cfg.finetune.num_processes)
        # Separate processes load the base themselves and apply the deltas: no saved edited copy.
        result = finetune_multiprocess(cfg, base_dir, out / "run", edited_layers, deltas=deltas_file, weights=weights)
        atomic_write_json(out / "decay_curve.json", [])
        atomic_write_json(out / "finetune.json", stage_record(result, out))
        return
    evaluate_fn = None
    if curve_records and cfg.finetune.curve_every:
        from editdecay.metrics.edit import EditEvaluator

        # The decay curve: ES/PS/NS of a fixed subset of the edits, every finetune.curve_every steps
        # (its prompts tokenised once, here).
        evaluate_curve = EditEvaluator(copy.deepcopy(tokenizer), curve_records, cfg.eval.batch_size)
        evaluate_fn = lambda m: evaluate_curve(m).summary  # noqa: E731
    result = finetune(cfg, None, out / "run", evaluate_fn=evaluate_fn, edited_layers=edited_layers,
                      model=model, tokenizer=tokenizer, weights=weights)
    atomic_write_json(out / "decay_curve.json", result.curve)
    atomic_write_json(out / "finetune.json", stage_record(result, out))


def stage_record(result, stage_dir: Path) -> dict[str, Any]:
    """The fine-tuning result with its paths relative to the stage directory: the stage is built
    under a temporary name and renamed, so absolute paths would point at a directory that is gone."""
    rel = lambda p: str(Path(p).relative_to(stage_dir)) if p is not None else None  # noqa: E731
    record = result.to_dict()
    return {**record, "out_dir": rel(result.out_dir), "model_path": rel(result.model_path),
            "merged_path": rel(result.merged_path)}


def derive_ft(model, tokenizer, out: Path):
    """``(fine-tuned model, tokenizer, restore)``: derived in memory from ``model`` (the one it was
    trained from) by the stage's adapter or trained blocks; ``restore()`` takes them out again."""
    from editdecay.finetune.run import apply_finetuned

    ft_model, restore = apply_finetuned(model, out / "run")
    return ft_model, tokenizer, restore


def evaluate_stage(cache: StageCache, cfg: TrialConfig, group: str, model_key: str, records: list[EditRecord],
                   records_key: str, load, files: dict[str, str | None],
                   native: list[EditRecord] = ()) -> tuple[dict[str, Any], str]:
    """ES/PS/NS per edit, DS and the native facts for one model group; cached by (model, records,
    native records, eval config)."""

    def build(out: Path) -> None:
        from editdecay.metrics.downstream import evaluate_configured
        from editdecay.metrics.edit import evaluate_edits

        model, tokenizer, *restore = load()  # a derived model comes with the function that undoes it
        try:
            edits = evaluate_edits(model, tokenizer, records, cfg.eval.batch_size)
            ds = evaluate_configured(cfg, model, tokenizer)
            native_table = evaluate_native(model, tokenizer, native, cfg.eval.batch_size)  # before the undo
        finally:
            for undo in restore:
                undo()
        edits.per_edit.to_parquet(out / "per_edit.parquet", index=False)
        atomic_write_json(out / "metrics.json", {**edits.summary, **ds.metrics("ds")})
        atomic_write_json(out / "ds_predictions.json", ds.predictions)
        native_table.to_parquet(out / "native.parquet", index=False)

    inputs = {"model": model_key, "records": records_key, "eval": cfg.eval.model_dump(mode="json"),
              "world": cfg.world.model_dump(mode="json"), "template": cfg.finetune.data.template,
              "ds_data": files["ds_data"], "native": stable_hash([r.to_dict() for r in native], length=16)}
    out, key = cache.get_or_build("eval", inputs, build)
    return {"metrics": json.loads((out / "metrics.json").read_text()),
            "per_edit": pd.read_parquet(out / "per_edit.parquet"), "native": pd.read_parquet(out / "native.parquet"),
            "dir": out}, key


def native_control(cfg: TrialConfig, cache: StageCache, model, tokenizer,
                   base_key: str) -> tuple[NativeControl, str | None]:
    """The native facts (:mod:`editdecay.metrics.native`): the candidate pool, disjoint from the edit
    batch and the fine-tuning data, scored on the base model in order until ``eval.native_facts`` are
    known. A stage keyed by the base model and the pool itself (trials sharing both, e.g. every FT
    setting and seed of an edit batch, score it once); it keeps which facts were found and the base
    model's scores of every candidate tried (``scored.parquet``)."""
    from editdecay.editing.run import native_candidates

    ev = cfg.eval
    if ev.native_facts == 0:
        return NativeControl([], 0, 0, 0, ev.native_min_facts), None
    batch, candidates, finetune_questions = native_candidates(cfg)
    pool = native_pool(batch, candidates, finetune_questions)

    def build(out: Path) -> None:
        scored: list[pd.DataFrame] = []

        def known(part: list[EditRecord]) -> list[bool]:
            scored.append(evaluate_native(model, tokenizer, part, ev.batch_size))
            return scored[-1]["known"].tolist()

        found, tried = select_known(pool.candidates, known, ev.native_facts, chunk=ev.batch_size)
        atomic_write_json(out / "native.json", {"case_ids": [str(r.case_id) for r in found], "tried": tried})
        table = pd.concat(scored, ignore_index=True) if scored else evaluate_native(model, tokenizer, [])
        table.to_parquet(out / "scored.parquet", index=False)

    inputs = {"model": base_key, "pool": stable_hash([r.to_dict() for r in pool.candidates], length=16),
              "n": ev.native_facts, "rule": KNOWN_RULE}
    out, key = cache.get_or_build("native", inputs, build)
    info = json.loads((out / "native.json").read_text())
    by_id = {str(r.case_id): r for r in pool.candidates}
    return NativeControl([by_id[c] for c in info["case_ids"]], info["tried"], len(pool.candidates), ev.native_facts,
                         ev.native_min_facts, pool.excluded), key


def log_datasets(run, cfg: TrialConfig, records: list[EditRecord], records_key: str) -> None:
    """The edit records (profiled) and the fine-tuning data (name and source) as the run's inputs."""
    table = pd.DataFrame([{"case_id": r.case_id, "subject": r.subject, "prompt": r.prompt,
                           "target_new": r.target_new, "target_true": r.target_true} for r in records])
    run.log_dataset(f"edits-{cfg.data.source}", cfg.data.path or f"world:seed={cfg.world.seed}", "edit", table,
                    digest=records_key[:8])
    if cfg.finetune.method != "none":
        data = cfg.finetune.data
        source = data.path or f"world:seed={cfg.world.seed}"
        run.log_dataset(f"finetune-{data.source}", source, "train",
                        digest=stable_hash({**data.model_dump(mode="json"), "world": cfg.world.seed}, length=8))


def log_results(run, evals: dict[str, dict[str, Any] | None], control: NativeControl) -> tuple[dict[str, float], pd.DataFrame]:
    """The trial's metrics and per-edit table from the groups' evaluations, logged to ``run``: every
    group's ES/PS/NS/DS, survival (metrics/survival.py) computed from the per-edit table logged as
    ``results/per_edit.csv`` — the table the report reads — and the native-fact control."""
    metrics: dict[str, float] = {}
    for group, ev in evals.items():
        if ev is not None:
            metrics.update({f"{group}.{k}": v for k, v in ev["metrics"].items()})
    per_edit = per_edit_table(evals)
    if evals.get("edit") is not None and evals.get("ft") is not None:
        metrics.update(survival_of_table(per_edit).as_metrics())
        per_edit["flipped"] = flipped_column(per_edit)
    # -- the intrinsic-knowledge control: the same FT on facts nobody edited
    metrics.update(control.metrics())
    if control.facts:
        native_metrics, native_table = native_summary({g: ev["native"] for g, ev in evals.items() if ev is not None})
        metrics.update(native_metrics)
        run.log_text(native_table.to_csv(index=False), "results/native_facts.csv")
    elif control.missing:
        run.set_tags({"editdecay.native_missing": control.missing})
    run.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})
    run.log_text(per_edit.to_csv(index=False), "results/per_edit.csv")
    run.log_table(per_edit, "results/per_edit_table.json")  # the same rows, shown as a grid in the UI
    return metrics, per_edit


def per_edit_table(evals: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """One row per edit: ES/PS/NS of every group side by side (``es_base``, ``es_edit``, …)."""
    table: pd.DataFrame | None = None
    for group in GROUPS:
        ev = evals.get(group)
        if ev is None:
            continue
        part = ev["per_edit"][["case_id", "es", "ps", "ns"]].rename(columns={m: f"{m}_{group}" for m in ("es", "ps", "ns")})
        if table is None:
            table = ev["per_edit"][["case_id", "subject", "target_new", "target_true"]].merge(part, on="case_id")
        else:
            table = table.merge(part, on="case_id", how="left")
    assert table is not None
    return table


def log_finetune_artifacts(run, cfg: TrialConfig, out: Path, path: str) -> None:
    info = json.loads((out / "finetune.json").read_text())
    run.log_metrics({f"{path.split('/')[-1]}.train.{k}": float(v) for k, v in info["metrics"].items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)})
    trainer_log = out / "run" / "trainer_log.json"
    if trainer_log.is_file():  # multi-process runs write it too (rank 0)
        run.log_metric_steps(train_log_series(json.loads(trainer_log.read_text()), path.split("/")[-1]))
        run.log_artifact(trainer_log, path)
    if cfg.tracking.log_weights == "none":
        return
    model_path = out / info["model_path"]
    if model_path.name == "adapter" or cfg.tracking.log_weights == "full":
        run.log_artifact(model_path, f"{path}/{model_path.name}")
