"""Findings: one neutral sentence per tested comparison, every number taken from the comparison table.

The rule (one statistic decides): a finding is called when the run-level p, Holm-adjusted over every
comparison of the report, is below 0.05 — then the run-level CI excludes 0 too, and the direction
is that of the same effect. Everything else is worded as "no difference detected" (with the
smallest difference the design would detect, and the equivalence test when a margin is set) or,
for edits vs native facts, as a comparison.
"""

from __future__ import annotations

import math

import pandas as pd

from editdecay.report.data import SETTING_KEYS

ALPHA = 0.05
GROUP_NAMES = {"base": "the base model", "ftonly": "FT-only", "ft": "KE→FT", "edit": "KE-only"}


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


def is_finding(row: pd.Series) -> bool:
    """The run-level rule: Holm-adjusted p < 0.05 and a CI that excludes 0 (implied; checked anyway)."""
    return (not math.isnan(row["p_holm"]) and row["p_holm"] < ALPHA
            and not (row["ci_low"] <= 0 <= row["ci_high"]))


def _verb(row: pd.Series, more: bool) -> tuple[str, str, str]:
    """(side A, verb, side B) for a called difference."""
    a, b = str(row["a"]), str(row["b"])
    if row["kind"] == "ds":
        return (f"DS of {GROUP_NAMES.get(a, a)}", "is higher than" if more else "is lower than",
                f"DS of {GROUP_NAMES.get(b, b)}")
    if row["kind"] == "native":
        return "edits", "survive fine-tuning more often than" if more else "survive fine-tuning less often than", \
            "the native facts the model knew after editing"
    if row["axis"] == "layers":
        return f"fine-tuning {a} layers", "flips more edits than" if more else "flips fewer edits than", \
            f"fine-tuning {b} layers"
    if row["axis"] == "editor":
        return f"{a} edits", "are flipped more often than" if more else "are flipped less often than", f"{b} edits"
    return a, "flips more edits than" if more else "flips fewer edits than", b


def _sides(row: pd.Series) -> tuple[str, str]:
    if row["kind"] == "ds":
        return f"DS of {GROUP_NAMES.get(row['a'], row['a'])}", f"DS of {GROUP_NAMES.get(row['b'], row['b'])}"
    if row["kind"] == "native":
        return "edits surviving", "native facts retained"
    if row["axis"] == "layers":
        return f"fine-tuning {row['a']} layers", f"fine-tuning {row['b']} layers"
    if row["axis"] == "editor":
        return f"{row['a']} edits", f"{row['b']} edits"
    return str(row["a"]), str(row["b"])


def _numbers(row: pd.Series) -> str:
    what = {"ds": "in DS accuracy", "native": "in the rate kept"}.get(row["kind"], "in flip rate")
    unit = {"ds": "test rows"}.get(row["kind"], "edits" if row["kind"] == "flips" else "items")
    seeds, per_seed = row["n_label"].split("×") if "×" in row["n_label"] else (row["n_label"], "")
    seeds_word = "seed" if seeds.strip() == "1" else "seeds"
    n_text = f"{seeds} {seeds_word} × {per_seed} {unit}" if per_seed else f"{row['n_label']} {unit}"
    rates = f"({row['rate_a']:.2f} vs {row['rate_b']:.2f})"
    if not row["df"]:
        within = "" if math.isnan(row["p_within"]) else f", within this run {_p(row['p_within'])}"
        return f"{row['effect']:+.2f} {what} {rates}{within}; {n_text}"
    text = (f"{row['effect']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] {what} {rates}, run-level "
            f"{_p(row['p_holm'])} Holm-adjusted ({_p(row['p_value'])} unadjusted, t with {int(row['df'])} df), "
            f"{row['agree']} seeds agree, I² = {row['i2']:.0%}")
    if not math.isnan(row["p_within"]):
        text += f"; within these runs {_p(row['p_within'])}"
    return text + f"; {n_text}"


def findings(comparisons: pd.DataFrame, varying: list[str], margin: float | None = None) -> list[dict]:
    """Sentences for the tested comparisons, findings first, each with its numbers."""
    out = []
    tested = comparisons[comparisons["effect"].notna()]
    for _, row in tested.iterrows():
        context = _context(row, varying, row["axis"])
        numbers = _numbers(row)
        called = bool(row["df"]) and is_finding(row)
        a, b = _sides(row)
        if called:
            side_a, verb, side_b = _verb(row, row["effect"] > 0)
            text = f"{context}: {side_a} {verb} {side_b}: {numbers}"
        elif not row["df"]:
            text = f"{context}: {a} vs {b}, one seed, so no run-level test (a description of this run only): {numbers}"
        elif row["kind"] == "native":
            text = (f"{context}: comparison, not a finding (the run-level rule is not met): edits survive "
                    f"{row['rate_a']:.2f}, native facts known after editing are retained {row['rate_b']:.2f}: {numbers}")
        else:
            text = f"{context}: no difference detected at the run level (Holm) between {a} and {b}: {numbers}"
        if not called and row["df"]:
            if not math.isnan(row["mdd"]):
                text += f"; this design detects a difference of ±{row['mdd']:.2f} with 80% power"
            if margin and not math.isnan(row["p_equiv"]):
                verdict = "equivalent" if row["p_equiv"] < ALPHA else "equivalence not shown"
                text += f"; {verdict} within ±{margin:g} (TOST {_p(row['p_equiv'])})"
        p_holm = float(row["p_holm"]) if not math.isnan(row["p_holm"]) else 1.0
        out.append({"text": text, "significant": called, "p_holm": p_holm, "comparison": row["comparison"],
                    "kind": row["kind"]})
    out.sort(key=lambda f: (not f["significant"], f["p_holm"]))
    return out


def design_warning(n_seeds: int, n_comparisons: int) -> str:
    """The header's caveat when the design cannot support claims about methods."""
    from editdecay.report.stats import critical_t, smallest_seed_p

    if n_seeds >= 5:
        return ""
    if n_seeds < 2:
        return (f"{n_seeds} seed: claims about methods cannot be tested (the fine-tuning run is the unit; one run "
                "gives no run-to-run variance). Only the within-run tests are shown.")
    return (f"{n_seeds} seeds: method-level claims are weak. The fine-tuning run is the unit of these claims; with "
            f"{n_seeds} runs even all of them agreeing gives at best p = {smallest_seed_p(n_seeds):.3g} by an exact "
            f"sign test over seeds, and the run-level t test has {n_seeds - 1} df (|t| ≥ {critical_t(n_seeds):.2f} "
            f"for p < 0.05, ≥ {critical_t(n_seeds, ALPHA / max(1, n_comparisons)):.1f} to pass Holm over "
            f"{n_comparisons} comparisons). Use ≥ 5 seeds (sweeps/paper.yaml: 10).")
