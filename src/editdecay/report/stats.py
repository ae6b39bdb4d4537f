"""The report's statistics: hierarchical bootstrap CIs, exact McNemar per seed, a combined test
across seeds, Holm correction. Distributions come from scipy / statsmodels, never written by hand.

Data shape everywhere: one array per seed, one value per edit (``{seed: values}``). Seeds vary the
fine-tuning (data order, adapter init); the edits are the same records in every seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

N_BOOTSTRAP = 2000
CONFIDENCE = 0.95
BOOTSTRAP_NOTE = ("95% CI: percentile bootstrap, B = 2000; each replicate resamples seeds with replacement, then "
                  "edits with replacement within each drawn seed (mean of per-seed means)")
COMBINED_TEST_NOTE = ("per seed: exact McNemar (statsmodels, binomial on discordant pairs); across seeds: exact "
                      "binomial test on the discordant pairs pooled over seeds (scipy.stats.binomtest; seeds are "
                      "strata, under H0 each discordant pair is a fair coin); Holm correction over all comparisons "
                      "of the report (statsmodels multipletests)")


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% CI and what it is over."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_per_seed: tuple[int, ...]  # observations (edits) in each seed

    @property
    def n(self) -> int:
        return sum(self.n_per_seed)

    def n_label(self) -> str:
        """``3×50`` when every seed has the same number of edits, else ``3 seeds, 142``."""
        sizes = set(self.n_per_seed)
        return f"{self.n_seeds}×{sizes.pop()}" if len(sizes) == 1 else f"{self.n_seeds} seeds, {self.n}"

    def format(self, digits: int = 3) -> str:
        if math.isnan(self.mean):
            return "–"
        ci = "" if math.isnan(self.low) else f" [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return f"{self.mean:.{digits}f}{ci} (n={self.n_label()})"


NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0, ())


def _clean(groups: Mapping[object, Sequence[float]]) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=float) for _, v in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    arrays = [a[~np.isnan(a)] for a in arrays]
    return [a for a in arrays if a.size]


def hierarchical_bootstrap(groups: Mapping[object, Sequence[float]], *, n_boot: int = N_BOOTSTRAP,
                           confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Mean of per-seed means with a percentile bootstrap CI: seeds resampled, then edits within seed.

    One seed: the ordinary bootstrap over edits (what ``scipy.stats.bootstrap(method='percentile')``
    computes). One observation in all: no CI (NaN bounds).
    """
    arrays = _clean(groups)
    if not arrays:
        return NAN_ESTIMATE
    rng = np.random.default_rng(seed)
    point = float(np.mean([a.mean() for a in arrays]))
    sizes = tuple(int(a.size) for a in arrays)
    if sum(sizes) < 2:
        return Estimate(point, math.nan, math.nan, len(arrays), sizes)
    # Per seed: B bootstrap means over its edits. Then per replicate: draw seeds, average their draws.
    per_seed = np.stack([a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1) for a in arrays])
    if len(arrays) > 1:
        pick = rng.integers(0, len(arrays), size=(n_boot, len(arrays)))
        replicates = per_seed[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    else:
        replicates = per_seed[0]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return Estimate(point, float(low), float(high), len(arrays), sizes)


def seed_level_bootstrap(values: Mapping[object, float], **kw) -> Estimate:
    """For run-level numbers (DS accuracy): one value per seed, bootstrap over seeds."""
    return hierarchical_bootstrap({k: [v] for k, v in values.items()}, **kw)


@dataclass(frozen=True)
class PairedTest:
    """Paired binary outcomes of A and B on the same edits (1 = flipped), per seed and combined."""

    effect: Estimate  # mean over seeds of (rate_A − rate_B), bootstrap CI over paired differences
    rate_a: float
    rate_b: float
    a_only: int  # discordant: A flipped, B did not (summed over seeds)
    b_only: int
    p_value: float  # combined across seeds
    p_per_seed: dict[str, float]
    odds_ratio: float  # a_only / b_only (McNemar's conditional odds ratio), inf/nan at 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["effect"] = asdict(self.effect)
        return d


def mcnemar_exact(a: Sequence[int], b: Sequence[int]) -> tuple[float, int, int]:
    """Exact McNemar p-value for paired 0/1 outcomes, and the discordant counts (a only, b only)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    a_only, b_only = table[0][1], table[1][0]
    if a_only + b_only == 0:
        return 1.0, 0, 0
    return float(mcnemar(table, exact=True).pvalue), a_only, b_only


def combined_discordant_test(discordant: Sequence[tuple[int, int]]) -> float:
    """Exact two-sided binomial test on discordant pairs pooled over seeds (each seed a stratum)."""
    a_only = sum(x for x, _ in discordant)
    total = sum(x + y for x, y in discordant)
    if total == 0:
        return 1.0
    return float(binomtest(a_only, total, 0.5, alternative="two-sided").pvalue)


def paired_test(pairs: Mapping[object, tuple[Sequence[int], Sequence[int]]], **boot) -> PairedTest:
    """``pairs``: per seed, (outcomes of A, outcomes of B) on the same edits in the same order."""
    diffs, per_seed, discordant, rates_a, rates_b = {}, {}, [], [], []
    for seed, (a, b) in pairs.items():
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
        if a.size == 0:
            continue
        diffs[seed] = a - b
        p, x, y = mcnemar_exact(a, b)
        per_seed[str(seed)] = p
        discordant.append((x, y))
        rates_a.append(a.mean())
        rates_b.append(b.mean())
    a_only = sum(x for x, _ in discordant)
    b_only = sum(y for _, y in discordant)
    odds = a_only / b_only if b_only else (math.inf if a_only else math.nan)
    return PairedTest(hierarchical_bootstrap(diffs, **boot), float(np.mean(rates_a)) if rates_a else math.nan,
                      float(np.mean(rates_b)) if rates_b else math.nan, a_only, b_only,
                      combined_discordant_test(discordant), per_seed, odds)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels), order kept; NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and Student-t CI across seeds (decay-curve bands: a handful of seeds, one number each)."""
    from scipy.stats import t

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half
