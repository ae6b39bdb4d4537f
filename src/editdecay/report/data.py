"""The report's data: the selected runs as pandas frames (per edit, per run, decay curves).

Setting columns (what a row of a table is about) come from the runs' params, i.e. the flattened
trial config: ``model`` (``model.name``; the toy model as ``toy-<arch>``), ``editor``
(``edit.method``), ``dataset`` (``data.source``, plus the world's format), ``n_edits``
(``edit.num_edits``), ``ft`` (``finetune.method``), ``layers`` (``finetune.layers``), ``seed``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from editdecay.tracking.read import SweepRuns, TrialRun

ROW_KEYS = ["model", "editor", "dataset", "n_edits"]  # a table row: one model × editor × dataset × #edits
SETTING_KEYS = ROW_KEYS + ["ft", "layers"]
GROUPS = {"base": "base", "edit": "KE-only", "ftonly": "FT-only", "ft": "KE→FT"}
METRICS = ("es", "ps", "ns")
SUCCESS = 1.0 - 1e-9  # the trial's success rule: ES of 1 (zsRE: every target token right)
FT_ORDER = ["none", "lora", "dora", "full"]
LAYER_ORDER = ["all", "edited", "non_edited"]


@dataclass
class ReportData:
    runs: SweepRuns
    per_edit: pd.DataFrame  # one row per (usable run, edit)
    run_table: pd.DataFrame  # one row per run (usable or not): settings, status, problem, DS metrics
    curves: pd.DataFrame  # one row per (usable run, step): settings, seed, step, es
    native: pd.DataFrame | None = None  # one row per (usable run, native fact): settings, known_<group>
    # one row per (usable run, group, DS test row): settings, seed, group, row, task, correct
    ds: pd.DataFrame | None = None
    # finished runs left out because a later finished run has the same settings and seed
    dropped: list[dict] | None = None
    comparisons: pd.DataFrame | None = None  # the run-level comparisons (build.py runs them before the tables)

    @property
    def usable(self) -> pd.DataFrame:
        return self.run_table[self.run_table["problem"] == ""]

    def varying(self, keys: list[str]) -> list[str]:
        """The keys that take more than one value in this report (the others go into the title)."""
        return [k for k in keys if self.run_table[k].nunique() > 1]


def _param(params: dict[str, str], key: str, default: str = "-") -> str:
    value = params.get(key)
    if value is None:
        return default
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value
    return value if isinstance(parsed, (str, int, float)) else json.dumps(parsed).replace(" ", "")


def settings_of(trial: TrialRun) -> dict[str, object]:
    p = trial.params
    model = _param(p, "model.name")
    model = f"toy-{_param(p, 'model.toy.arch', 'gpt2')}" if model == "toy" else Path(model).name or model
    if p.get(GROUP_PARAM):  # --group-by: runs of different configs are separate rows, never pooled
        model = f"{model} [{p[GROUP_PARAM]}]"
    dataset = _param(p, "data.source")
    if dataset == "world":
        dataset = f"world/{_param(p, 'data.world_format', 'counterfact')}"
    n_edits = _param(p, "edit.num_edits")
    seed = _param(p, "seed", "0")
    return {"model": model, "editor": _param(p, "edit.method"), "dataset": dataset,
            "n_edits": int(n_edits) if n_edits.isdigit() else n_edits, "ft": _param(p, "finetune.method"),
            "layers": _param(p, "finetune.layers"), "seed": int(seed) if seed.lstrip("-").isdigit() else seed}


# ------------------------------------------------------------------------------------------------
# Run selection: which runs may be pooled (editdecay report --group-by)

# Set on a run's params by :func:`select_runs` (never logged): its row group under --group-by.
GROUP_PARAM = "editdecay.report.group"
# Params that are the report's own setting columns (settings_of) or seeds: runs may differ in these.
SETTING_PARAMS = ("model.name", "model.toy.arch", "edit.method", "data.source", "data.world_format", "edit.num_edits",
                  "finetune.method", "finetune.layers", "seed")
# Params that do not change a result: where it was logged, stored, and how often it was checkpointed.
NEUTRAL_PARAMS = ("name", "cache_dir", "finetune.resume", "finetune.keep_checkpoints", "finetune.keep_weights",
                  "finetune.logging_steps", "finetune.save_strategy", "finetune.save_steps", "eval.batch_size",
                  "eval.ds_batch_size", "edit.stats.save_every", "edit.stats.batch_tokens")
# resolved.*: values the recipe derived from the config (pipeline/resolved.py); the config keys decide.
NEUTRAL_PREFIXES = ("tracking.", "editdecay.", "resolved.")


def config_rest(trial: TrialRun) -> dict[str, str]:
    """The run's params that must agree for runs to be pooled as seeds of one setting."""
    return {k: v for k, v in trial.params.items()
            if k not in SETTING_PARAMS and k not in NEUTRAL_PARAMS and not k.startswith(NEUTRAL_PREFIXES)}


def select_runs(runs: SweepRuns, group_by: list[str] | None = None) -> None:
    """Decide which runs the report uses, in place: a run it does not use gets a ``problem``.

    - Duplicates: runs of one config (its params, less where it was logged and stored) and seed counted once; the latest
      FINISHED one is used, the others are set aside ("duplicate of run ...").
    - Different configs in one setting (same model/editor/dataset/#edits/FT/layers, configs differing
      elsewhere, e.g. ``finetune.lr``) are refused with one line naming the keys, unless ``group_by``
      says how to tell them apart: ``config`` (a row group per config hash) or param keys (a row
      group per combination of their values). Pooling them would count one edit set many times.
    """
    from editdecay.config import stable_hash
    from editdecay.tracking.read import ReportInputError

    group_by = [k for k in (group_by or []) if k]
    if group_by and group_by != ["config"]:
        known = set().union(*(t.params for t in runs.trials)) if runs.trials else set()
        unknown = [k for k in group_by if k not in known]
        if unknown:
            raise ReportInputError(f"--group-by {','.join(unknown)}: not a config key of these runs (e.g. finetune.lr); "
                                   "or give --group-by config")
    usable = [t for t in runs.trials if not t.problem]
    for t in usable:
        rest = config_rest(t)
        if group_by == ["config"]:
            t.params[GROUP_PARAM] = f"config {stable_hash(rest, length=8)}"
        elif group_by:
            t.params[GROUP_PARAM] = ",".join(f"{k}={t.params.get(k, '-')}" for k in group_by)
    # Duplicates: the same full config (and seed) more than once; keep the latest (runs come oldest first).
    latest: dict[str, TrialRun] = {}
    for t in usable:
        ident = stable_hash({k: v for k, v in t.params.items() if k not in NEUTRAL_PARAMS and not k.startswith(NEUTRAL_PREFIXES)})
        if ident in latest:
            latest[ident].problem = f"duplicate of run {t.run_id} (same config and seed; the latest is used)"
        latest[ident] = t
    # Different configs in one setting (and row group): refuse to pool them.
    by_setting: dict[tuple, dict[str, TrialRun]] = {}
    for t in latest.values():
        s = settings_of(t)
        key = tuple(s[k] for k in SETTING_KEYS)
        by_setting.setdefault(key, {}).setdefault(stable_hash(config_rest(t)), t)
    for key, configs in by_setting.items():
        if len(configs) > 1:
            a, b = list(configs.values())[:2]
            ra, rb = config_rest(a), config_rest(b)
            differ = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
            shown = ", ".join(f"{k} ({ra.get(k, '-')} vs {rb.get(k, '-')})" for k in differ[:3])
            more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
            raise ReportInputError(f"runs {a.run_id} and {b.run_id} have the same setting ({', '.join(map(str, key))}) "
                                   f"but different configs: {shown}{more}; pooling them would count their edits as "
                                   f"one sample: pass --group-by {','.join(differ[:3])} (or --group-by config), "
                                   "or select one config with --filter")


def records_key(trial: TrialRun) -> str:
    try:
        return json.loads(trial.tags.get("editdecay.stage_keys", "{}")).get("records", "")
    except json.JSONDecodeError:
        return ""


def latest_runs(trials: list[TrialRun]) -> tuple[set[str], list[dict]]:
    """One run per trial × seed (same settings and seed): the latest finished one, else the latest.
    Returns the run ids kept and the finished runs dropped (a sweep read twice through
    ``--experiment``, a trial rerun by hand), which would otherwise count their edits twice."""
    by_key: dict[tuple, list[TrialRun]] = {}
    for t in trials:
        s = settings_of(t)
        by_key.setdefault(tuple(str(s[k]) for k in (*SETTING_KEYS, "seed")), []).append(t)
    kept, dropped = set(), []
    for group in by_key.values():
        finished = [t for t in group if t.problem is None and t.per_edit is not None]
        chosen = max(finished or group, key=lambda t: t.start_time)
        kept.add(chosen.run_id)
        dropped += [{"trial_id": t.tags.get("editdecay.trial_id", t.name), "run_id": t.run_id, "kept": chosen.run_id}
                    for t in finished if t is not chosen]
    return kept, dropped


def dropped_warning(dropped: list[dict]) -> str:
    """The one line that names the duplicate runs left out."""
    if not dropped:
        return ""
    names = ", ".join(f"{d['trial_id']} (run {d['run_id'][:8]})" for d in dropped)
    return (f"warning: {len(dropped)} duplicate finished run(s) dropped, the latest run of each trial × seed kept: "
            f"{names}")


def build_data(runs: SweepRuns) -> ReportData:
    run_rows, edit_parts, curve_rows, native_parts, ds_parts = [], [], [], [], []
    kept, dropped = latest_runs(runs.trials)
    for t in runs.trials:
        s = settings_of(t)
        problem = t.problem or ""
        if not problem and t.run_id not in kept:
            problem = "duplicate: a later finished run of the same trial and seed is used"
        if not problem and t.per_edit is not None and "es_base" not in t.per_edit.columns:
            problem = "per_edit.csv has no es_base column"
        run_rows.append({"run_id": t.run_id, "trial_id": t.tags.get("editdecay.trial_id", t.name), "status": t.status,
                         "problem": problem, **s, "records_key": records_key(t),
                         **{f"{g}.ds.acc": t.metrics.get(f"{g}.ds.acc", math.nan) for g in GROUPS},
                         "survival.efr": t.metrics.get("survival.efr", math.nan)})
        if problem:
            continue
        pe = t.per_edit.copy()
        for m in METRICS:
            for g in GROUPS:
                if f"{m}_{g}" not in pe.columns:
                    pe[f"{m}_{g}"] = math.nan
        pe["edit_ok"] = pe["es_edit"] >= SUCCESS
        pe["ft_ok"] = pe["es_ft"] >= SUCCESS
        if "flipped" not in pe.columns:
            pe["flipped"] = math.nan
        # EFR's observations: edits that succeeded after editing; 1 if fine-tuning undid them.
        has_ft = pe["es_ft"].notna() & pe["es_edit"].notna()
        pe["flip"] = (pe["edit_ok"] & ~pe["ft_ok"]).astype(float).where(has_ft & pe["edit_ok"])
        pe["case_id"] = pe["case_id"].astype(str)
        for k, v in {"run_id": t.run_id, **s, "records_key": records_key(t)}.items():
            pe[k] = v
        edit_parts.append(pe)
        if t.native is not None and len(t.native):
            native_parts.append(t.native.assign(**{"run_id": t.run_id, **s}))
        for step, value in t.curve:
            curve_rows.append({"run_id": t.run_id, **s, "step": step, "es": value})
        for group, answers in t.ds_predictions.items():
            ds_parts.append(answers.assign(run_id=t.run_id, **s, group=group, row=range(len(answers)),
                                           correct=(answers["pred"].astype(str) == answers["gold"].astype(str))
                                           .astype(float)))
    run_table = pd.DataFrame(run_rows)
    per_edit = pd.concat(edit_parts, ignore_index=True) if edit_parts else pd.DataFrame()
    curves = pd.DataFrame(curve_rows, columns=["run_id", *SETTING_KEYS, "seed", "step", "es"])
    native = pd.concat(native_parts, ignore_index=True) if native_parts else pd.DataFrame()
    ds = pd.concat(ds_parts, ignore_index=True) if ds_parts else pd.DataFrame()
    return ReportData(runs, per_edit, run_table, curves, native, ds, dropped)


def order_key(column: str):
    """Sort order for setting values: FT methods and layer selections in the study's order."""
    order = {"ft": FT_ORDER, "layers": LAYER_ORDER}.get(column)
    if not order:
        return lambda s: s.astype(str) if hasattr(s, "astype") else str(s)
    return lambda s: s.map(lambda v: (order.index(v) if v in order else len(order), str(v)))
