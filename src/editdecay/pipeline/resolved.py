"""What a trial actually ran with, for the tracker: the config leaves many knobs ``null`` (a recipe
preset, the per-model editing table or the data fill them in), so the logged config alone cannot
tell two runs apart. These functions read the resolved values from the stage outputs and return
them as ``resolved.<config key>`` params, and turn the Trainer's log into per-step metrics.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from editdecay.config import TrialConfig

# Trainer log keys -> our metric names (``<group>.train.<name>``, by optimizer step)
TRAIN_LOG_KEYS = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm", "eval_loss": "eval_loss"}


def edit_hparams(cfg: TrialConfig, model) -> dict[str, Any]:
    """The editor's hyperparameters for ``model``: the per-model table with ``edit.*`` overrides."""
    if cfg.edit.method == "none":
        return {}
    from editdecay.editing.hparams import resolve_hparams

    hp = dataclasses.asdict(resolve_hparams(model, cfg.edit))
    hp["layers"] = list(hp["layers"])
    return hp


def resolved_params(cfg: TrialConfig, edit_hp: dict[str, Any], n_records: int,
                    finetune_outs: list[Path]) -> dict[str, Any]:
    """``resolved.edit.*`` and ``resolved.finetune.*``: every hyperparameter the recipe used, none null."""
    params: dict[str, Any] = {}
    if edit_hp:
        params.update({f"resolved.edit.{k}": v if v is not None else "all" for k, v in edit_hp.items()})
        params["resolved.edit.chunk_size"] = cfg.edit.chunk_size or n_records  # None: every edit in one batch
        params["resolved.edit.num_edits"] = n_records
    for out in finetune_outs:  # FT-only and KE->FT share the fine-tuning settings: the first built one
        info_file = out / "finetune.json"
        if not info_file.is_file():
            continue
        info = json.loads(info_file.read_text())
        metrics = info.get("metrics", {})
        recipe = dict(metrics.get("recipe", {}))
        recipe.pop("method", None)
        if recipe.get("max_steps") is None:
            recipe["max_steps"] = metrics.get("steps")  # the steps the epochs came to
        cutoff = recipe.pop("cutoff_len", None)
        params.update({f"resolved.finetune.{k}": v for k, v in recipe.items() if v is not None})
        params["resolved.finetune.data.cutoff_len"] = cutoff
        params["resolved.finetune.data.max_examples"] = metrics.get("n_train")
        params["resolved.finetune.data.template"] = metrics.get("template")
        params["resolved.finetune.layers"] = metrics.get("layers", info.get("layers"))
        params["resolved.finetune.curve_every"] = _curve_every(out, cfg)
        targets = _target_modules(out / info["model_path"]) if info.get("model_path") else None
        if targets:
            params["resolved.finetune.target_modules"] = targets
        break
    return {k: v for k, v in params.items() if v is not None}


def _curve_every(out: Path, cfg: TrialConfig) -> int | None:
    if cfg.finetune.curve_every:
        return cfg.finetune.curve_every
    curve_file = out / "decay_curve.json"
    steps = [row["step"] for row in json.loads(curve_file.read_text())] if curve_file.is_file() else []
    gaps = [b - a for a, b in zip(steps, steps[1:]) if b > a]
    return min(gaps) if gaps else None  # the last point (train end) may come sooner than `every`


def _target_modules(model_path: Path) -> list[str] | None:
    config = model_path / "adapter_config.json"
    if not config.is_file():
        return None  # full fine-tuning: whole blocks, no target modules
    targets = json.loads(config.read_text()).get("target_modules")
    return sorted(targets) if isinstance(targets, list) else targets


def train_log_series(trainer_log: list[dict[str, Any]], group: str) -> dict[str, list[tuple[int, float]]]:
    """``{"ft.train.loss": [(step, value), ...], "ft.train.lr": ..., ...}`` from the Trainer's log history."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in trainer_log:
        step = row.get("step")
        if step is None:
            continue
        for key, name in TRAIN_LOG_KEYS.items():
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(f"{group}.train.{name}", []).append((int(step), float(value)))
    return series


def curve_series(curve: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``{"curve.es": [(step, value), ...], "curve.ps": ..., "curve.ns": ...}`` from the decay curve's
    rows: logged in one batch instead of one write per evaluated step."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in curve:
        for key in ("es", "ps", "ns"):
            if key in row:
                series.setdefault(f"curve.{key}", []).append((int(row["step"]), float(row[key])))
    return series
