"""Do the edits survive fine-tuning? Edit flip ratio, decrease rate, survival (DESIGN "Definitions").

One definition per metric, all computed from the per-edit table a trial logs
(``results/per_edit.csv``: ``es_edit`` after editing, ``es_ft`` after KE→FT) — the table the report
reads — by :func:`survival_of_table`. Per edit, ES is CounterFact's 0/1 (new target beats the old
one) or zsRE's teacher-forced token accuracy, which can be partial (2 of 3 answer tokens: 0.667).

- An edit is *successful* when its ES is 1 (:data:`SUCCESS`; zsRE: every target token right).
- ``efr`` (edit flip ratio) = |{successful after editing ∧ unsuccessful after FT}| / |{successful after editing}|
- ``survival``             = 1 − EFR (the report's "edits survive")
- ``decrease`` (decrease rate of ES) = (ES_edit − ES_ft) / ES_edit, with ES_edit and ES_ft the mean
  per-edit ES over all edits: exactly the ``edit.es`` and ``ft.es`` a trial prints and logs, so a
  fall from 0.855 to 0.829 is a decrease of 0.030 even when no edit flipped (partial successes).
- ``n_successful`` (EFR's denominator), ``n_flipped``, ``n_recovered`` (unsuccessful after editing,
  successful after FT).

When no edit succeeded EFR and survival have no denominator; when ES_edit is 0 the decrease has
none. They are then NaN, not 0 — "nothing flipped" would read as perfect survival in a comparison
view — with a warning, and ``n_successful`` = 0 says why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

log = logging.getLogger(__name__)

SUCCESS = 1.0 - 1e-9  # per-edit ES at or above this is a successful edit (report/data.py uses the same)


@dataclass(frozen=True)
class Survival:
    efr: float
    decrease: float
    survival: float
    n_edits: int
    n_successful: int  # successful after editing: EFR's denominator
    n_flipped: int  # successful after editing, unsuccessful after fine-tuning
    n_recovered: int  # unsuccessful after editing, successful after fine-tuning

    def as_metrics(self, prefix: str = "survival.") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def survival(es_edited: Sequence[float], es_finetuned: Sequence[float]) -> Survival:
    """The survival metrics from per-edit ES after editing and after fine-tuning (0/1 or partial
    token accuracies; booleans count as 0/1), edit by edit in the same order."""
    before = [float(x) for x in es_edited]
    after = [float(x) for x in es_finetuned]
    if len(before) != len(after):
        raise ValueError(f"{len(before)} edits before fine-tuning but {len(after)} after")
    n = len(before)
    ok_before = [x >= SUCCESS for x in before]
    ok_after = [x >= SUCCESS for x in after]
    n_ok = sum(ok_before)
    flipped = sum(b and not a for b, a in zip(ok_before, ok_after))
    recovered = sum(a and not b for b, a in zip(ok_before, ok_after))
    es_edit = sum(before) / n if n else math.nan
    es_ft = sum(after) / n if n else math.nan
    decrease = (es_edit - es_ft) / es_edit if n and es_edit > 0 else math.nan
    if n_ok == 0:
        log.warning("no edit succeeded after editing (%d edits): EFR and survival are undefined (NaN)", n)
        return Survival(math.nan, decrease, math.nan, n, 0, 0, recovered)
    efr = flipped / n_ok
    return Survival(efr=efr, decrease=decrease, survival=1.0 - efr, n_edits=n, n_successful=n_ok, n_flipped=flipped,
                    n_recovered=recovered)


def survival_of_table(per_edit: pd.DataFrame, before: str = "es_edit", after: str = "es_ft") -> Survival:
    """:func:`survival` of a trial's per-edit table (one row per edit, ES of each group side by side)."""
    return survival(per_edit[before].tolist(), per_edit[after].tolist())


def flipped_column(per_edit: pd.DataFrame, before: str = "es_edit", after: str = "es_ft") -> pd.Series:
    """Per edit: successful after editing and unsuccessful after fine-tuning (the ``flipped`` column)."""
    return (per_edit[before] >= SUCCESS) & ~(per_edit[after] >= SUCCESS)


def flip_table(edited: pd.DataFrame, finetuned: pd.DataFrame, metric: str = "es", key: str = "case_id") -> pd.DataFrame:
    """Two groups' per-edit tables joined by ``key``: the metric after editing and after FT, and
    whether the edit flipped (:func:`flipped_column`; a partial zsRE score is not a success)."""
    merged = edited[[key, metric]].merge(finetuned[[key, metric]], on=key, suffixes=("_edited", "_finetuned"),
                                         validate="one_to_one")
    if len(merged) != len(edited):
        raise ValueError(f"per-edit tables do not cover the same edits ({len(edited)} vs {len(merged)} matched)")
    merged["flipped"] = flipped_column(merged.astype({f"{metric}_edited": float, f"{metric}_finetuned": float}),
                                       f"{metric}_edited", f"{metric}_finetuned")
    return merged
