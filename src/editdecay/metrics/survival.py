"""Do the edits survive fine-tuning? Edit flip ratio, decrease rate, survival (DESIGN "Definitions").

Given, per edit, whether it succeeded right after editing (KE-only) and after fine-tuning (KE→FT):

- EFR (edit flip ratio) = |{successful after editing ∧ unsuccessful after FT}| / |{successful after editing}|
- decrease rate        = (ES_edited − ES_edited+FT) / ES_edited
- survival             = 1 − EFR

When no edit succeeded in the first place the ratios have no denominator. They are then NaN,
not 0 — "nothing flipped" would read as perfect survival in a comparison view — with a warning,
and ``n_successful`` = 0 says why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

log = logging.getLogger(__name__)


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


def survival(edited_ok: Sequence[bool], finetuned_ok: Sequence[bool]) -> Survival:
    """Survival of one metric (usually ES) from per-edit success before and after fine-tuning."""
    before = [bool(x) for x in edited_ok]
    after = [bool(x) for x in finetuned_ok]
    if len(before) != len(after):
        raise ValueError(f"{len(before)} edits before fine-tuning but {len(after)} after")
    n = len(before)
    n_ok = sum(before)
    flipped = sum(b and not a for b, a in zip(before, after))
    recovered = sum(a and not b for b, a in zip(before, after))
    if n_ok == 0:
        log.warning("no edit succeeded after editing (%d edits): EFR, decrease rate and survival are undefined (NaN)", n)
        return Survival(math.nan, math.nan, math.nan, n, 0, 0, recovered)
    es_edited = n_ok / n
    es_after = sum(after) / n
    efr = flipped / n_ok
    return Survival(efr=efr, decrease=(es_edited - es_after) / es_edited, survival=1.0 - efr, n_edits=n,
                    n_successful=n_ok, n_flipped=flipped, n_recovered=recovered)


def flip_table(edited: pd.DataFrame, finetuned: pd.DataFrame, metric: str = "es", key: str = "case_id") -> pd.DataFrame:
    """Per-edit table: success after editing and after FT, and whether the edit flipped."""
    merged = edited[[key, metric]].merge(finetuned[[key, metric]], on=key, suffixes=("_edited", "_finetuned"),
                                         validate="one_to_one")
    if len(merged) != len(edited):
        raise ValueError(f"per-edit tables do not cover the same edits ({len(edited)} vs {len(merged)} matched)")
    merged["flipped"] = merged[f"{metric}_edited"].astype(bool) & ~merged[f"{metric}_finetuned"].astype(bool)
    return merged
