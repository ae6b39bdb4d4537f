"""The ``stats`` and ``edit`` stages: config in, files out (used by the CLI and the trial recipe)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from editdecay.config import TrialConfig, to_yaml
from editdecay.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def load_for_editing(cfg: TrialConfig):
    from editdecay.models import load_model, resolve_model_path

    return load_model(cfg.model, resolve_model_path(cfg))


def edit_records(cfg: TrialConfig):
    """The ``edit.num_edits`` records the trial edits (``edit.selection``: the first, or a seeded sample)."""
    return split_edit_dataset(cfg)[0]


def split_edit_dataset(cfg: TrialConfig) -> tuple[list, list]:
    """(the edit batch, the other records in dataset order): the rest is where controls come from."""
    from editdecay.data.edits import load_edit_dataset

    records = load_edit_dataset(cfg)
    n = cfg.edit.num_edits
    if n > len(records):
        raise DataError(f"edit.num_edits={n} but the edit dataset ({cfg.data.source}) has only "
                        f"{len(records)} records; lower edit.num_edits or use a larger dataset")
    if cfg.edit.selection == "first":
        return records[:n], records[n:]
    chosen = set(random.Random(f"edit-selection-{cfg.seed}").sample(range(len(records)), n))
    batch = [r for i, r in enumerate(records) if i in chosen]  # dataset order, like "first"
    return batch, [r for i, r in enumerate(records) if i not in chosen]


def native_candidates(cfg: TrialConfig) -> tuple[list, list, list[str]]:
    """(the edit batch, the native-fact candidates in pool order, the fine-tuning questions): the
    pool ``eval.native_pool`` names — the records outside the batch, their neighborhood probes —
    then the facts of ``eval.native_path``; metrics/native.py makes it disjoint from the first and
    the last."""
    from editdecay.data.edits import check_unique_case_ids, convert_records, read_json_rows
    from editdecay.metrics.native import neighborhood_facts

    batch, rest = split_edit_dataset(cfg)
    candidates = []
    for source in cfg.eval.native_pool:
        candidates += rest if source == "records" else neighborhood_facts(rest)
    if cfg.eval.native_path:
        path = cfg.eval.native_path
        candidates += check_unique_case_ids(convert_records(read_json_rows(path), source=f"eval.native_path {path}"), path)
    return batch, candidates, finetune_questions(cfg)


def finetune_questions(cfg: TrialConfig) -> list[str]:
    """The prompts of the fine-tuning data (instruction and input, or prompt): a native fact asked
    there would be taught, not retained."""
    if cfg.finetune.method == "none":
        return []
    from editdecay.finetune.data import load_rows

    rows = load_rows(cfg.finetune.data, cfg.world)
    return [row[k] for row in rows for k in ("instruction", "input", "prompt") if isinstance(row.get(k), str)]


def run_stats(cfg: TrialConfig, model=None, tokenizer=None) -> dict[int, Any]:
    """Second moments for the edited layers (cached under ``cache_dir/stats``)."""
    from editdecay.editing.hparams import resolve_hparams
    from editdecay.editing.stats import second_moments

    if model is None:
        model, tokenizer = load_for_editing(cfg)
    hp = resolve_hparams(model, cfg.edit)
    return second_moments(model, tokenizer, cfg, list(hp.layers))


def apply_edits(cfg: TrialConfig, model, tokenizer, records, progress: bool = True, force_stats: bool = False,
                targets=None):
    """The configured editor applied to ``model`` in place: ``(hparams, EditResult)``;
    ``force_stats`` recomputes the layer statistics instead of reading them from the cache;
    ``targets``: the z stage's :class:`~editdecay.editing.targets.Targets` for ``records`` (None:
    the editor computes z)."""
    from editdecay.editing.hparams import resolve_hparams
    from editdecay.editing.registry import get_editor, run_edits
    from editdecay.editing.stats import second_moments

    hp = resolve_hparams(model, cfg.edit)
    moments = second_moments(model, tokenizer, cfg, list(hp.layers), progress=progress, force=force_stats)
    return hp, run_edits(get_editor(cfg.edit.method, hp), model, tokenizer, records, moments, cfg.edit.chunk_size,
                         targets=targets)


# --------------------------------------------------------------------------------------------
# The z stage (editdecay.editing.targets): shared by every editor and update hyperparameter


def z_stage_inputs(cfg: TrialConfig, model, n_records: int) -> dict[str, Any] | None:
    """What the z stage's output depends on besides the model and the records, or None when the
    edit cannot take a precomputed z (sequential chunks: each chunk's z depends on the edits before)."""
    from editdecay.editing.hparams import resolve_hparams
    from editdecay.editing.targets import z_params

    if cfg.edit.method == "none" or (cfg.edit.chunk_size or n_records) < n_records:
        return None
    return z_params(resolve_hparams(model, cfg.edit))


def run_targets(cfg: TrialConfig, model, tokenizer, records):
    """The z stage: :class:`~editdecay.editing.targets.Targets` for ``records`` on the unedited ``model``."""
    from editdecay.editing.hparams import resolve_hparams
    from editdecay.editing.targets import compute_targets

    return compute_targets(model, tokenizer, records, resolve_hparams(model, cfg.edit))


def run_edit(cfg: TrialConfig, out: str | os.PathLike, model=None, tokenizer=None) -> dict[str, Any]:
    """Edit, evaluate before and after, and write ``out/`` whole or not at all:
    ``deltas.safetensors``, ``per_edit.parquet``, ``metrics.json``, ``records.jsonl``, ``config.yaml``."""
    from editdecay.data.records import records_to_jsonl
    from editdecay.io import atomic_directory
    from editdecay.metrics.edit import evaluate_edits

    if cfg.edit.method == "none":
        raise ConfigError("edit.method is 'none': there is nothing to edit (set edit.method=memit or alphaedit)")
    records = edit_records(cfg)
    if model is None:
        model, tokenizer = load_for_editing(cfg)
    base = evaluate_edits(model, tokenizer, records, batch_size=cfg.eval.batch_size)
    hp, result = apply_edits(cfg, model, tokenizer, records)
    after = evaluate_edits(model, tokenizer, records, batch_size=cfg.eval.batch_size)

    table = after.per_edit.copy()
    for m in ("es", "ps", "ns"):
        table[f"base_{m}"] = base.per_edit[m].to_numpy()
    metrics = {
        **{f"base.{k}": v for k, v in base.summary.items()},
        **{f"edit.{k}": v for k, v in after.summary.items()},
        "edit.n_edits": result.n_edits,
        "edit.seconds": result.timings.get("total", 0.0),
        "edit.edits_per_second": result.n_edits / max(result.timings.get("total", 0.0), 1e-9),
        "timings": result.timings,
        "norms": result.norms,
        "hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(hp).items()},
    }
    with atomic_directory(out) as tmp:
        result.deltas.save(tmp / "deltas.safetensors")
        table.to_parquet(tmp / "per_edit.parquet", index=False)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        (tmp / "records.jsonl").write_text(records_to_jsonl(records), encoding="utf-8")
        (tmp / "config.yaml").write_text(to_yaml(cfg, redact=True), encoding="utf-8")
    log.info("edit: wrote %s", Path(out))
    return metrics
