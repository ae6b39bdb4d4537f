"""The report's statistics: hierarchical bootstrap CIs, exact McNemar per seed, a combined test
across seeds, Holm correction. Distributions come from scipy / statsmodels, never written by hand.

Data shape everywhere: one array per seed, one value per edit (``{seed: values}``). Seeds vary the
fine-tuning (data order, adapter init) and, with ``edit.selection: random``, the edited records; with
``first`` the same edits recur in every seed, and the paired comparisons then treat the edit as the
unit (an edit measured in three seeds is one observation, not three).
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
                      "sign test over edits (scipy.stats.binomtest): each edit's flip difference A−B is averaged "
                      "over the seeds it was measured in, and under H0 an edit with a non-zero mean is as likely "
                      "to favour A as B. Edits that differ between seeds make this the binomial test on the "
                      "discordant pairs pooled over seeds; edits repeated in every seed count once each. The CI "
                      "of a comparison with repeated edits resamples seeds and edits crossed (one draw of edits "
                      "for all seeds). Holm correction over all comparisons of the report (statsmodels "
                      "multipletests)")


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


def difference_bootstrap(groups_a: Mapping[object, Sequence[float]], groups_b: Mapping[object, Sequence[float]], *,
                         n_boot: int = N_BOOTSTRAP, confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Mean over seeds of (mean of A − mean of B) for two unpaired samples measured in the same seeds
    (edits and native facts of one trial): seeds resampled, then A and B independently within each."""
    shared = sorted(set(groups_a) & set(groups_b), key=str)
    pairs = [(np.asarray(groups_a[s], dtype=float), np.asarray(groups_b[s], dtype=float)) for s in shared]
    pairs = [(a[~np.isnan(a)], b[~np.isnan(b)]) for a, b in pairs]
    pairs = [(a, b) for a, b in pairs if a.size and b.size]
    if not pairs:
        return NAN_ESTIMATE
    rng = np.random.default_rng(seed)
    point = float(np.mean([a.mean() - b.mean() for a, b in pairs]))
    sizes = tuple(int(a.size + b.size) for a, b in pairs)
    per_seed = np.stack([a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
                         - b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1) for a, b in pairs])
    pick = rng.integers(0, len(pairs), size=(n_boot, len(pairs)))
    replicates = per_seed[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return Estimate(point, float(low), float(high), len(pairs), sizes)


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


def edit_sign_test(diffs: Mapping[object, Sequence[float]], edit_ids: Mapping[object, Sequence[object]]) -> float:
    """Exact two-sided sign test over edits on each edit's mean difference across its seeds."""
    per_edit: dict[object, list[float]] = {}
    for seed, values in diffs.items():
        for edit, value in zip(edit_ids[seed], values):
            per_edit.setdefault(edit, []).append(float(value))
    means = np.array([np.mean(v) for v in per_edit.values()])
    positive, negative = int(np.sum(means > 0)), int(np.sum(means < 0))
    if positive + negative == 0:
        return 1.0
    return float(binomtest(positive, positive + negative, 0.5, alternative="two-sided").pvalue)


def crossed_bootstrap(diffs: Mapping[object, Sequence[float]], edit_ids: Mapping[object, Sequence[object]], *,
                      n_boot: int = N_BOOTSTRAP, confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Mean of per-seed means with a percentile CI that resamples seeds and, once per replicate, the
    edits shared by all seeds (an edit's outcomes in different seeds stay together)."""
    seeds = sorted(diffs, key=str)
    edits = sorted({e for s in seeds for e in edit_ids[s]}, key=str)
    column = {e: j for j, e in enumerate(edits)}
    matrix = np.full((len(seeds), len(edits)), np.nan)
    for i, s in enumerate(seeds):
        for edit, value in zip(edit_ids[s], diffs[s]):
            matrix[i, column[edit]] = value
    sizes = tuple(int(np.sum(~np.isnan(row))) for row in matrix)
    point = float(np.mean([np.nanmean(row) for row in matrix]))
    rng = np.random.default_rng(seed)
    replicates = []
    for _ in range(n_boot):
        sub = matrix[rng.integers(0, len(seeds), len(seeds))][:, rng.integers(0, len(edits), len(edits))]
        counts = np.sum(~np.isnan(sub), axis=1)
        if counts.all():
            replicates.append(float(np.mean(np.nansum(sub, axis=1) / counts)))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha]) if replicates else (math.nan, math.nan)
    return Estimate(point, float(low), float(high), len(seeds), sizes)


def paired_test(pairs: Mapping[object, tuple[Sequence[int], Sequence[int]]],
                edit_ids: Mapping[object, Sequence[object]] | None = None, **boot) -> PairedTest:
    """``pairs``: per seed, (outcomes of A, outcomes of B) on the same edits in the same order;
    ``edit_ids``: per seed, which edit each position is. When an edit recurs across seeds, the test
    and the CI treat the edit as the unit (``edit_sign_test``, ``crossed_bootstrap``)."""
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
    ids = {s: list(edit_ids[s]) for s in diffs} if edit_ids is not None else None
    repeated = ids is not None and sum(len(set(v)) for v in ids.values()) > len({e for v in ids.values() for e in v})
    if repeated:
        effect, p_value = crossed_bootstrap(diffs, ids, **boot), edit_sign_test(diffs, ids)
    else:
        effect, p_value = hierarchical_bootstrap(diffs, **boot), combined_discordant_test(discordant)
    return PairedTest(effect, float(np.mean(rates_a)) if rates_a else math.nan,
                      float(np.mean(rates_b)) if rates_b else math.nan, a_only, b_only, p_value, per_seed, odds)


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
