"""The paper-style tables, one registered entry each. Cells: mean [95% CI] (n = seeds × edits)."""

from __future__ import annotations

import math

import pandas as pd

from editdecay.report.data import GROUPS, METRICS, ROW_KEYS, ReportData, order_key
from editdecay.report.registry import Table, register_table
from editdecay.report.stats import (BOOTSTRAP_NOTE, DS_NOTE, RATE_NOTE, Estimate, ds_interval, hierarchical_bootstrap,
                                    rate_interval, seed_level_bootstrap)

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
        est = rate_interval(_by_seed(part, "flip"))
        if est.n_seeds:
            rows.append(_long_row("efr", "efr", keys, f"{keys['ft']}/{keys['layers']}", est))
    long = pd.DataFrame(rows)
    return [Table("efr", "Edit flip ratio (EFR) by FT method / layer selection",
                  "EFR = edits successful after editing that fail after fine-tuning, over edits successful after "
                  f"editing (per seed, then averaged). {RATE_NOTE}; n = seeds × successful edits.",
                  _wide(long, [f"{ft}/{layers}" for ft, layers in settings]), long)]


def ds_estimate(data: ReportData, runs, group: str) -> Estimate:
    """DS of ``group`` over the given runs (one per seed): from the per-example answers when logged
    (bootstrap over seeds × rows; one model — a single seed, or the base model, the same in every
    seed — exact binomial), else from the runs' DS metric (bootstrap over seeds)."""
    ds = data.ds
    answers = {}
    if ds is not None and not ds.empty:
        mine = ds[ds["run_id"].isin(set(runs["run_id"])) & (ds["group"] == group)]
        answers = {seed: part.sort_values("row")["correct"].to_numpy() for seed, part in mine.groupby("seed")}
    if answers and len(answers) == runs["seed"].nunique():
        vectors = list(answers.values())
        # One model: a single seed, or the base model (the same weights in every seed).
        one_model = len(vectors) == 1 or group == "base" and all(
            len(v) == len(vectors[0]) and (v == vectors[0]).all() for v in vectors)
        single_task = ds[ds["group"] == group]["task"].nunique() == 1
        if one_model and single_task:
            return ds_interval({0: vectors[0]}, single_model=True)
        return ds_interval(answers)
    return seed_level_bootstrap(dict(zip(runs["seed"], runs[f"{group}.ds.acc"])))


@register_table("downstream")
def downstream(data: ReportData) -> list[Table]:
    """DS accuracy of the base model, FT-only and KE→FT per FT setting, over seeds × test rows."""
    runs = data.usable
    if runs.empty:
        return []
    rows = []
    settings = _ft_settings(data)
    columns = ["base"] + [f"{GROUPS[g]} · {ft}/{layers}" for ft, layers in settings for g in ("ftonly", "ft")]
    for keys, part in runs.groupby(ROW_KEYS, sort=False):
        keys = dict(zip(ROW_KEYS, keys))
        est = ds_estimate(data, part.drop_duplicates("seed"), "base")
        if est.n_seeds:
            rows.append(_long_row("downstream", "ds.acc", keys, "base", est))
        for (ft, layers), cell in part[part["ft"] != "none"].groupby(["ft", "layers"], sort=False):
            for group in ("ftonly", "ft"):
                est = ds_estimate(data, cell, group)
                if est.n_seeds:
                    rows.append(_long_row("downstream", "ds.acc", {**keys, "ft": ft, "layers": layers},
                                          f"{GROUPS[group]} · {ft}/{layers}", est))
    long = pd.DataFrame(rows)
    return [Table("downstream", "Downstream accuracy (DS) by group and fine-tuning setting",
                  f"{DS_NOTE}; n = seeds × test rows. Runs without logged answers: percentile bootstrap over the "
                  "seeds' DS metric (n = seeds × 1). Paired tests (FT-only vs base, KE→FT vs FT-only) are in the "
                  "comparisons.", _wide(long, columns), long)]


@register_table("edits_vs_native")
def edits_vs_native(data: ReportData) -> list[Table]:
    """Edit survival next to the intrinsic-knowledge control, per FT setting: do edits decay faster
    than the facts the model knew by itself (arXiv 2507.14198 reports they do)? Both sides are
    conditioned alike: edits that succeeded after editing, native facts known after editing."""
    pe, native = data.per_edit, data.native
    if pe.empty or native is None or native.empty or "known_ft" not in native.columns:
        return []
    rows, columns = [], []
    by = [*ROW_KEYS, "ft", "layers"]
    survived = pe.assign(survived=1.0 - pe["flip"])  # over edits that succeeded after editing
    after_edit = "known_edit" if "known_edit" in native.columns else "known_base"
    facts_after = dict(iter(native[native[after_edit].astype(bool)].groupby(by, sort=False)))
    facts_base = dict(iter(native[native["known_base"].astype(bool)].groupby(by, sort=False)))
    comparisons = data.comparisons
    native_rows = (comparisons[comparisons["kind"] == "native"] if comparisons is not None and not comparisons.empty
                   else pd.DataFrame(columns=[*by, "effect"]))
    for values, part in survived[survived["ft"] != "none"].groupby(by, sort=False):
        keys = dict(zip(by, values))
        setting = f"{keys['ft']}/{keys['layers']}"
        retained = lambda facts: _by_seed(facts.get(values, native.iloc[:0]).assign(  # noqa: E731
            r=lambda f: f["known_ft"].astype(float)), "r")
        cells = [(f"edits survive · {setting}", rate_interval(_by_seed(part, "survived"))),
                 (f"native retained (known after editing) · {setting}", rate_interval(retained(facts_after))),
                 (f"native retained (known by base) · {setting}", rate_interval(retained(facts_base)))]
        for label, est in cells:
            if est.n_seeds:
                rows.append(_long_row("edits_vs_native", "survival", keys, label, est))
                if label not in columns:
                    columns.append(label)
        match = native_rows
        for k in by:
            match = match[match[k] == keys[k]]
        if len(match) and pd.notna(match["effect"].iloc[0]):
            r = match.iloc[0]
            label = f"edits − native (after editing) · {setting}"
            ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if pd.notna(r["ci_low"]) else ""
            holm = f", Holm p {r['p_holm']:.3g}" if pd.notna(r["p_holm"]) else ""
            rows.append({"table": "edits_vs_native", "metric": "survival", **keys, "column": label, "mean": r["effect"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_seeds": r["n_seeds"], "n": math.nan,
                         "n_label": r["n_label"], "cell": f"{r['effect']:+.3f}{ci}{holm} (n={r['n_label']})"})
            if label not in columns:
                columns.append(label)
    if not rows:
        return []
    long = pd.DataFrame(rows)
    return [Table("edits_vs_native", "Edits vs the model's own facts after fine-tuning (KE→FT)",
                  "Edits survive = 1 − EFR (edits successful after editing that still succeed after KE→FT). Native "
                  "retained = of the never-edited native facts known after editing (the same conditioning as the "
                  "edits; beside it the earlier definition, known by the base model), the fraction still known after "
                  "KE→FT (metrics/native.py: the edit metrics' rule, mirrored). "
                  f"{RATE_NOTE}. edits − native: the run-level difference (per-seed difference of the two rates, "
                  "combined across seeds as the comparisons are; 95% CI, Holm p over all comparisons); a comparison, "
                  "not a finding, unless it passes the findings' rule. n = seeds × items.",
                  _wide(long, columns), long)]
