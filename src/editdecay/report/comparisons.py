"""The paired comparisons the study makes, one registered entry each, and the code that runs them.

Every comparison holds everything but one axis fixed and compares per-edit flips (1 = an edit that
succeeded after editing fails after fine-tuning) of the two values on the SAME edits in the SAME
seed: an edit enters when it succeeded after editing on both sides.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from editdecay.report.data import SETTING_KEYS, ReportData
from editdecay.report.registry import COMPARISONS, ComparisonSpec, register_comparison
from editdecay.report.stats import holm, paired_test

register_comparison(ComparisonSpec(
    "layers", "layers", (("edited", "non_edited"), ("edited", "all"), ("non_edited", "all")),
    "fine-tuning only the edited layers vs only the others vs all layers (same editor, FT method, edits)"))
register_comparison(ComparisonSpec(
    "editor", "editor", (("memit", "alphaedit"),),
    "MEMIT vs AlphaEdit edits under the same fine-tuning, on the same edit records"))
register_comparison(ComparisonSpec(
    "ft_method", "ft", (("lora", "dora"), ("lora", "full"), ("dora", "full")),
    "LoRA vs DoRA vs full fine-tuning (same editor, layer selection, edits)"))

COLUMNS = ["comparison", "axis", "a", "b", *SETTING_KEYS, "n_seeds", "n_label", "rate_a", "rate_b", "effect",
           "ci_low", "ci_high", "a_only", "b_only", "odds_ratio", "p_value", "p_holm", "p_per_seed", "note"]


def _pairs_for(data: ReportData, spec: ComparisonSpec, a: str, b: str) -> list[dict]:
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
        base = {"comparison": spec.name, "axis": spec.axis, "a": a, "b": b, **setting}
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
            pairs[seed] = (fa[keep].astype(int).tolist(), fb[keep].astype(int).tolist())
            edit_ids[seed] = [str(c) for c in fa[keep].index]
        if not any(len(x) for x, _ in pairs.values()):
            rows.append({**base, "note": "skipped: no edit succeeded after editing on both sides in a shared seed"})
            continue
        test = paired_test(pairs, edit_ids)
        rows.append({**base, "n_seeds": test.effect.n_seeds, "n_label": test.effect.n_label(), "rate_a": test.rate_a,
                     "rate_b": test.rate_b, "effect": test.effect.mean, "ci_low": test.effect.low,
                     "ci_high": test.effect.high, "a_only": test.a_only, "b_only": test.b_only,
                     "odds_ratio": test.odds_ratio, "p_value": test.p_value,
                     "p_per_seed": json.dumps(test.p_per_seed), "note": ""})
    return rows


def run_comparisons(data: ReportData) -> pd.DataFrame:
    """Every registered comparison wherever the data has both sides; Holm over all tested rows."""
    rows = []
    for spec in COMPARISONS.values():
        for a, b in spec.pairs:
            rows.extend(_pairs_for(data, spec, a, b))
    table = pd.DataFrame(rows, columns=COLUMNS)
    tested = table["p_value"].notna()
    table["p_holm"] = math.nan
    if tested.any():
        table.loc[tested, "p_holm"] = holm(table.loc[tested, "p_value"].astype(float).tolist())
    return table
