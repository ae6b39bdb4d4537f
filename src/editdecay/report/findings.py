"""Findings: one neutral sentence per tested comparison, every number taken from the comparison table."""

from __future__ import annotations

import math

import pandas as pd

from editdecay.report.data import SETTING_KEYS

ALPHA = 0.05


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _context(row: pd.Series, varying: list[str], axis: str) -> str:
    parts = []
    for key in SETTING_KEYS:
        if key == axis or key not in varying and key not in ("editor", "ft", "layers"):
            continue
        value = row[key]
        parts.append(f"{value} layers" if key == "layers" else f"{value} edits" if key == "n_edits" else str(value))
    return ", ".join(parts)


def _sides(row: pd.Series) -> tuple[str, str]:
    if row["axis"] == "layers":
        return f"fine-tuning {row['a']} layers", f"fine-tuning {row['b']} layers"
    if row["axis"] == "editor":
        return f"{row['a']} edits", f"{row['b']} edits"
    return str(row["a"]), str(row["b"])


def findings(comparisons: pd.DataFrame, varying: list[str]) -> list[dict]:
    """Sentences for the tested comparisons, Holm-significant ones first, each with its numbers."""
    out = []
    for _, row in comparisons[comparisons["p_value"].notna()].iterrows():
        a, b = _sides(row)
        seeds, per_seed = row["n_label"].split("×") if "×" in row["n_label"] else (row["n_label"], "")
        n_text = f"{seeds} seeds × {per_seed} edits" if per_seed else row["n_label"] + " edits"
        numbers = (f"{row['effect']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] in flip rate "
                   f"({row['rate_a']:.2f} vs {row['rate_b']:.2f}), {_p(row['p_holm'])} Holm-adjusted "
                   f"({_p(row['p_value'])} unadjusted), {n_text}")
        if math.isnan(row["ci_low"]):
            numbers = numbers.replace(" [nan, nan]", "")
        context = _context(row, varying, row["axis"])
        significant = row["p_holm"] < ALPHA
        if significant:
            more = row["effect"] > 0
            if row["axis"] == "editor":
                verb = "are flipped more often than" if more else "are flipped less often than"
            else:
                verb = "flips more edits than" if more else "flips fewer edits than"
            text = f"{context}: {a} {verb} {b}: {numbers}"
        else:
            text = f"{context}: no difference detected between {a} and {b}: {numbers}"
        out.append({"text": text, "significant": bool(significant), "p_holm": float(row["p_holm"]),
                    "comparison": row["comparison"]})
    out.sort(key=lambda f: (not f["significant"], f["p_holm"]))
    return out
