"""The paper-style tables, one registered entry each. Cells: mean [95% CI] (n = seeds × edits)."""

from __future__ import annotations

import pandas as pd

from editdecay.report.data import GROUPS, METRICS, ROW_KEYS, ReportData, order_key
from editdecay.report.registry import Table, register_table
from editdecay.report.stats import (BOOTSTRAP_NOTE, Estimate, difference_bootstrap, hierarchical_bootstrap,
                                    seed_level_bootstrap)

METRIC_NAMES = {"es": "ES (efficacy)", "ps": "PS (paraphrase)", "ns": "NS (neighborhood)"}


def _by_seed(frame: pd.DataFrame, column: str) -> dict[object, list[float]]:
    return {seed: part[column].dropna().tolist() for seed, part in frame.groupby("seed")}


def _long_row(table: str, metric: str, keys: dict, column: str, est: Estimate) -> dict:
    return {"table": table, "metric": metric, **keys, "column": column, "mean": est.mean, "ci_low": est.low,
            "ci_high": est.high, "n_seeds": est.n_seeds, "n": est.n, "n_label": est.n_label() if est.n_seeds else "",
            "cell": est.format()}


def _wide(long: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame(columns=[*ROW_KEYS, *columns])
    wide = long.pivot_table(index=ROW_KEYS, columns="column", values="cell", aggfunc="first").reset_index()
    wide.columns.name = None
    present = [c for c in columns if c in wide.columns]
    return wide[[*ROW_KEYS, *present]].fillna("–")


def _ft_settings(data: ReportData) -> list[tuple[str, str]]:
    runs = data.usable[data.usable["ft"] != "none"][["ft", "layers"]].drop_duplicates()
    runs = runs.sort_values(["ft", "layers"], key=lambda s: order_key(s.name)(s))
    return list(runs.itertuples(index=False, name=None))


@register_table("edit_quality")
def edit_quality(data: ReportData) -> list[Table]:
    """ES/PS/NS per group: base and KE-only (independent of fine-tuning), FT-only and KE→FT per FT setting."""
    pe = data.per_edit
    if pe.empty:
        return []
    tables = []
    settings = _ft_settings(data)
    for metric in METRICS:
        rows, columns = [], ["base", "KE-only"] + [f"{GROUPS[g]} · {ft}/{layers}" for ft, layers in settings
                                                 for g in ("ftonly", "ft")]
        for keys, part in pe.groupby(ROW_KEYS, sort=False):
            keys = dict(zip(ROW_KEYS, keys))
            # base and KE-only are the same model in every trial of a seed: count each edit once per seed.
            once = part.drop_duplicates(["seed", "case_id"])
            for group in ("base", "edit"):
                est = hierarchical_bootstrap(_by_seed(once, f"{metric}_{group}"))
                if est.n_seeds:
                    rows.append(_long_row("edit_quality", metric, keys, GROUPS[group], est))
            for (ft, layers), cell in part[part["ft"] != "none"].groupby(["ft", "layers"], sort=False):
                for group in ("ftonly", "ft"):
                    est = hierarchical_bootstrap(_by_seed(cell, f"{metric}_{group}"))
                    if est.n_seeds:
                        rows.append(_long_row("edit_quality", metric, {**keys, "ft": ft, "layers": layers},
                                              f"{GROUPS[group]} · {ft}/{layers}", est))
        long = pd.DataFrame(rows)
        tables.append(Table(f"edit_quality_{metric}", f"{METRIC_NAMES[metric]} by group and fine-tuning setting",
                            f"Per-edit {metric.upper()} averaged over edits, then seeds. Columns: group · FT method/"
                            f"layers. {BOOTSTRAP_NOTE}; n = seeds × edits.", _wide(long, columns), long))
    return tables


@register_table("efr")
def efr(data: ReportData) -> list[Table]:
    """Edit flip ratio per FT method and layer selection: flipped / successful after editing."""
    pe = data.per_edit
    if pe.empty:
        return []
    rows = []
    settings = _ft_settings(data)
    for keys, part in pe[pe["ft"] != "none"].groupby([*ROW_KEYS, "ft", "layers"], sort=False):
        keys = dict(zip([*ROW_KEYS, "ft", "layers"], keys))
        est = hierarchical_bootstrap(_by_seed(part, "flip"))
        if est.n_seeds:
            rows.append(_long_row("efr", "efr", keys, f"{keys['ft']}/{keys['layers']}", est))
    long = pd.DataFrame(rows)
    return [Table("efr", "Edit flip ratio (EFR) by FT method / layer selection",
                  "EFR = edits successful after editing that fail after fine-tuning, over edits successful after "
                  f"editing (per seed, then averaged). {BOOTSTRAP_NOTE}; n = seeds × successful edits.",
                  _wide(long, [f"{ft}/{layers}" for ft, layers in settings]), long)]


@register_table("downstream")
def downstream(data: ReportData) -> list[Table]:
    """DS accuracy of the base model, FT-only and KE→FT per FT setting (run-level numbers)."""
    runs = data.usable
    if runs.empty:
        return []
    rows = []
    settings = _ft_settings(data)
    columns = ["base"] + [f"{GROUPS[g]} · {ft}/{layers}" for ft, layers in settings for g in ("ftonly", "ft")]
    for keys, part in runs.groupby(ROW_KEYS, sort=False):
        keys = dict(zip(ROW_KEYS, keys))
        base = part.drop_duplicates("seed")
        est = seed_level_bootstrap(dict(zip(base["seed"], base["base.ds.acc"])))
        if est.n_seeds:
            rows.append(_long_row("downstream", "ds.acc", keys, "base", est))
        for (ft, layers), cell in part[part["ft"] != "none"].groupby(["ft", "layers"], sort=False):
            for group in ("ftonly", "ft"):
                est = seed_level_bootstrap(dict(zip(cell["seed"], cell[f"{group}.ds.acc"])))
                if est.n_seeds:
                    rows.append(_long_row("downstream", "ds.acc", {**keys, "ft": ft, "layers": layers},
                                          f"{GROUPS[group]} · {ft}/{layers}", est))
    long = pd.DataFrame(rows)
    return [Table("downstream", "Downstream accuracy (DS) by group and fine-tuning setting",
                  "DS accuracy is one number per run (the per-example answers are not re-read), so its 95% CI is a "
                  "percentile bootstrap over seeds only (B = 2000); n = seeds × 1. One seed: no CI.",
                  _wide(long, columns), long)]


@register_table("edits_vs_native")
def edits_vs_native(data: ReportData) -> list[Table]:
    """Edit survival next to the intrinsic-knowledge control, per FT setting: do edits decay faster
    than the facts the model knew by itself (arXiv 2507.14198 reports they do)?"""
    pe, native = data.per_edit, data.native
    if pe.empty or native is None or native.empty or "known_ft" not in native.columns:
        return []
    rows, columns = [], []
    by = [*ROW_KEYS, "ft", "layers"]
    survived = pe.assign(survived=1.0 - pe["flip"])  # over edits that succeeded after editing
    retained = native[native["known_base"].astype(bool)].assign(retained=lambda f: f["known_ft"].astype(float))
    facts_of = dict(iter(retained.groupby(by, sort=False)))  # the same setting columns as the edits
    for values, part in survived[survived["ft"] != "none"].groupby(by, sort=False):
        keys = dict(zip(by, values))
        facts = facts_of.get(values, retained.iloc[:0])
        setting = f"{keys['ft']}/{keys['layers']}"
        edits_by_seed, facts_by_seed = _by_seed(part, "survived"), _by_seed(facts, "retained")
        for label, est in ((f"edits survive · {setting}", hierarchical_bootstrap(edits_by_seed)),
                           (f"native retained · {setting}", hierarchical_bootstrap(facts_by_seed)),
                           (f"edits − native · {setting}", difference_bootstrap(edits_by_seed, facts_by_seed))):
            if est.n_seeds:
                rows.append(_long_row("edits_vs_native", "survival", keys, label, est))
                if label not in columns:
                    columns.append(label)
    if not rows:
        return []
    long = pd.DataFrame(rows)
    return [Table("edits_vs_native", "Edits vs the model's own facts after fine-tuning (KE→FT)",
                  "Edits survive = 1 − EFR (edits successful after editing that still succeed after KE→FT). Native "
                  "retained = of the never-edited native facts the base model knows, the fraction still known after "
                  "KE→FT (metrics/native.py: the edit metrics' rule, mirrored). edits − native: difference of the two, "
                  f"bootstrapped with edits and facts resampled independently within each drawn seed. {BOOTSTRAP_NOTE}; "
                  "n = seeds × items.", _wide(long, columns), long)]
