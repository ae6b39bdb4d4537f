"""The comparisons the study makes, one registered entry each, and the code that runs them.

``flips`` comparisons hold everything but one axis fixed and compare per-edit flips (1 = an edit
that succeeded after editing fails after fine-tuning) of the two values on the SAME edits in the
SAME seed: an edit enters when it succeeded after editing on both sides. ``ds`` comparisons pair
two model groups' answers on the same DS test rows of the same run; ``native`` compares edits that
survive KE→FT with the native facts the same run retains. Every row is decided by the run-level
statistic (:func:`editdecay.report.stats.run_level`); the exact within-run test sits beside it.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from editdecay.report.data import ROW_KEYS, SETTING_KEYS, ReportData
from editdecay.report.registry import COMPARISONS, ComparisonSpec, register_comparison
from editdecay.report.stats import PairedTest, holm, paired_test, two_sample_test

register_comparison(ComparisonSpec(
    "layers", "layers", (("edited", "non_edited"), ("edited", "all"), ("non_edited", "all")),
    "fine-tuning only the edited layers vs only the others vs all layers (same editor, FT method, edits)"))
register_comparison(ComparisonSpec(
    "editor", "editor", (("memit", "alphaedit"),),
    "MEMIT vs AlphaEdit edits under the same fine-tuning, on the same edit records"))
register_comparison(ComparisonSpec(
    "ft_method", "ft", (("lora", "dora"), ("lora", "full"), ("dora", "full")),
    "LoRA vs DoRA vs full fine-tuning (same editor, layer selection, edits)"))
register_comparison(ComparisonSpec(
    "ds_ft_teaches", "group", (("ftonly", "base"),),
    "DS of the fine-tuned base model (FT-only) vs the base model, paired on the same test rows", kind="ds"))
register_comparison(ComparisonSpec(
    "ds_edits_cost", "group", (("ft", "ftonly"),),
    "DS after KE→FT vs after FT-only (same fine-tuning, with and without the edits), paired on the same test rows",
    kind="ds"))
register_comparison(ComparisonSpec(
    "edits_vs_native", "item", (("edits", "native"),),
    "edits that survive KE→FT vs native facts (known after editing) still known after KE→FT, same runs",
    kind="native"))

COLUMNS = ["comparison", "kind", "axis", "a", "b", *SETTING_KEYS, "n_seeds", "n_label", "rate_a", "rate_b", "effect",
           "ci_low", "ci_high", "se", "df", "p_value", "p_holm", "agree", "tau2", "i2", "q", "q_p", "mdd", "p_equiv",
           "a_only", "b_only", "p_within", "p_within_holm", "p_per_seed", "seed_effects", "note"]
FT_SETTING = [*ROW_KEYS, "ft", "layers"]


def _row(base: dict, test: PairedTest, margin: float | None) -> dict:
    run = test.run
    return {**base, "n_seeds": run.n_seeds, "n_label": test.n_label(), "rate_a": test.rate_a, "rate_b": test.rate_b,
            "effect": run.effect, "ci_low": run.low, "ci_high": run.high, "se": run.se, "df": run.df,
            "p_value": run.p_value, "agree": f"{run.agree} of {run.n_seeds}" if run.df else "",
            "tau2": run.tau2, "i2": run.i2, "q": run.q, "q_p": run.q_p, "mdd": run.mdd(),
            "p_equiv": run.equivalence_p(margin) if margin else math.nan, "a_only": test.a_only,
            "b_only": test.b_only, "p_within": test.p_within, "p_per_seed": json.dumps(test.p_per_seed),
            "seed_effects": json.dumps([round(e, 4) for e in run.seed_effects]),
            "note": "" if run.df else "one seed: no run-level test (the within-run test holds for this run only)"}


def _flip_rows(data: ReportData, spec: ComparisonSpec, a: str, b: str, margin: float | None) -> list[dict]:
    pe = data.per_edit
    if pe.empty or spec.axis not in pe.columns:
        return []
    pe = pe[pe["ft"] != "none"]
    fixed = [k for k in SETTING_KEYS if k != spec.axis]
    rows = []
    for keys, part in pe.groupby(fixed, sort=False):
        side_a, side_b = part[part[spec.axis] == a], part[part[spec.axis] == b]
        if side_a.empty or side_b.empty:
            continue
        setting = {**dict(zip(fixed, keys)), spec.axis: ""}
        base = {"comparison": spec.name, "kind": spec.kind, "axis": spec.axis, "a": a, "b": b, **setting}
        if spec.same_records and set(side_a["records_key"]) != set(side_b["records_key"]):
            rows.append({**base, "note": "skipped: the two sides edited different records"})
            continue
        pairs, edit_ids = {}, {}
        for seed in sorted(set(side_a["seed"]) & set(side_b["seed"]), key=str):
            sa = side_a[side_a["seed"] == seed].drop_duplicates("case_id").set_index("case_id")
            sb = side_b[side_b["seed"] == seed].drop_duplicates("case_id").set_index("case_id")
            both = sa.index.intersection(sb.index)
            ok = both[(sa.loc[both, "edit_ok"].to_numpy()) & (sb.loc[both, "edit_ok"].to_numpy())]
            fa, fb = sa.loc[ok, "flip"], sb.loc[ok, "flip"]
            keep = fa.notna() & fb.notna()
            if keep.any():
                pairs[seed] = (fa[keep].astype(int).tolist(), fb[keep].astype(int).tolist())
                edit_ids[seed] = [str(c) for c in fa[keep].index]
        if not pairs:
            rows.append({**base, "note": "skipped: no edit succeeded after editing on both sides in a shared seed"})
            continue
        rows.append(_row(base, paired_test(pairs, edit_ids), margin))
    return rows


def _ds_answers(ds: pd.DataFrame, group: str) -> dict[tuple, dict[object, pd.DataFrame]]:
    """(setting) -> seed -> that run's answers of ``group`` (row order kept)."""
    part = ds[ds["group"] == group]
    return {keys: dict(iter(by_seed.groupby("seed", sort=True)))
            for keys, by_seed in part.groupby(FT_SETTING, sort=False)}


def _ds_rows(data: ReportData, spec: ComparisonSpec, a: str, b: str, margin: float | None) -> list[dict]:
    ds = data.ds
    if ds is None or ds.empty:
        return []
    ds = ds[ds["ft"] != "none"]
    side_a, side_b = _ds_answers(ds, a), _ds_answers(ds, b)
    rows, seen = [], {}
    for keys, seeds_a in side_a.items():
        seeds_b = side_b.get(keys, {})
        pairs, ids = {}, {}
        for seed in sorted(set(seeds_a) & set(seeds_b), key=str):
            xa, xb = seeds_a[seed], seeds_b[seed]
            if list(xa["gold"]) != list(xb["gold"]):
                continue  # not the same test rows: no pairing
            pairs[seed] = (xa["correct"].astype(int).tolist(), xb["correct"].astype(int).tolist())
            ids[seed] = list(xa["row"])
        if not pairs:
            continue
        setting = dict(zip(FT_SETTING, keys))
        # Neither side depends on the editor (FT-only vs base): the same models recur once per editor.
        fingerprint = (json.dumps({str(s): p for s, p in pairs.items()}),
                       tuple(v for k, v in setting.items() if k != "editor"))
        if a != "ft" and b != "ft" and fingerprint in seen:
            seen[fingerprint]["editor"] += f"/{setting['editor']}"
            continue
        base = {"comparison": spec.name, "kind": spec.kind, "axis": spec.axis, "a": a, "b": b, **setting}
        rows.append(_row(base, paired_test(pairs, ids), margin))
        seen[fingerprint] = rows[-1]
    return rows


def _native_rows(data: ReportData, spec: ComparisonSpec, margin: float | None) -> list[dict]:
    pe, native = data.per_edit, data.native
    if pe.empty or native is None or native.empty or "known_ft" not in native.columns or "known_edit" not in native.columns:
        return []
    facts = native[native["known_edit"].astype(bool)]  # the same conditioning as the edits: known after editing
    facts_by = dict(iter(facts.groupby(FT_SETTING, sort=False)))
    rows = []
    for keys, part in pe[(pe["ft"] != "none") & pe["flip"].notna()].groupby(FT_SETTING, sort=False):
        known = facts_by.get(keys)
        if known is None or known.empty:
            continue
        survived = {s: (1 - g["flip"]).tolist() for s, g in part.groupby("seed")}
        retained = {s: g["known_ft"].astype(float).tolist() for s, g in known.groupby("seed")}
        edit_ids = {s: g["case_id"].astype(str).tolist() for s, g in part.groupby("seed")}
        fact_ids = {s: g["case_id"].astype(str).tolist() for s, g in known.groupby("seed")}
        test = two_sample_test(survived, retained, edit_ids, fact_ids)
        if not test.n_per_seed:
            continue
        base = {"comparison": spec.name, "kind": spec.kind, "axis": spec.axis, "a": "edits", "b": "native",
                **dict(zip(FT_SETTING, keys))}
        rows.append(_row(base, test, margin))
    return rows


def run_comparisons(data: ReportData, margin: float | None = None) -> pd.DataFrame:
    """Every registered comparison wherever the data has both sides; Holm over all tested rows, on
    the deciding (run-level) p and, separately, on the within-run p."""
    rows = []
    for spec in COMPARISONS.values():
        for a, b in spec.pairs:
            if spec.kind == "ds":
                rows.extend(_ds_rows(data, spec, a, b, margin))
            elif spec.kind == "native":
                rows.extend(_native_rows(data, spec, margin))
            else:
                rows.extend(_flip_rows(data, spec, a, b, margin))
    table = pd.DataFrame(rows, columns=COLUMNS)
    for column, adjusted in (("p_value", "p_holm"), ("p_within", "p_within_holm")):
        tested = table[column].notna()
        table[adjusted] = math.nan
        if tested.any():
            table.loc[tested, adjusted] = holm(table.loc[tested, column].astype(float).tolist())
    return table
