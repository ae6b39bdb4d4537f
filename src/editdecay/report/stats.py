"""The report's statistics. Distributions and estimators come from scipy / statsmodels.

Claims about methods are decided at the level of the fine-tuning run (seed): every edit of a run
shares its fine-tuning, so per-seed effects are combined across seeds by a random-effects model
(:func:`run_level`); the exact edit-level tests stay beside them, labelled as holding for these runs.
Rates of 0/1 outcomes get exact (Clopper–Pearson, effective-n) intervals, continuous per-edit
scores (PS, NS) a two-level bootstrap, DS a bootstrap over seeds × test rows.

Data shape everywhere: one array per seed, one value per edit (``{seed: values}``). Seeds vary the
fine-tuning (data order, adapter init) and, with ``edit.selection: random``, the edited records; with
``first`` the same edits recur in every seed, and the paired comparisons then treat the edit as the
unit (an edit measured in three seeds is one observation, not three).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, chi2
from scipy.stats import t as t_dist
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

N_BOOTSTRAP = 2000
CONFIDENCE = 0.95
BOOTSTRAP_NOTE = ("95% CI: percentile bootstrap, B = 2000; each replicate resamples seeds with replacement, then "
                  "edits with replacement within each drawn seed, afresh for every drawn copy of a seed (mean "
                  "of per-seed means)")


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


def _resampled_means(rng: np.random.Generator, values: np.ndarray, m: int) -> np.ndarray:
    """``m`` bootstrap means of ``values`` (each an independent resample with replacement)."""
    return values[rng.integers(0, values.size, size=(m, values.size))].mean(axis=1)


def _two_level_replicates(rng: np.random.Generator, seeds: list[tuple[np.ndarray, ...]], n_boot: int,
                          statistic) -> np.ndarray:
    """Replicates of the mean over seeds of ``statistic(resampled means of the seed's samples)``:
    seeds drawn with replacement, then every DRAWN COPY of a seed resamples its edits afresh (a seed
    drawn twice in one replicate gets two independent resamples; reusing one would count its
    within-seed variance twice over)."""
    k = len(seeds)
    pick = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), dtype=int)
    values = np.empty(pick.shape)
    for s, samples in enumerate(seeds):
        where = np.nonzero(pick == s)
        if where[0].size:
            values[where] = statistic([_resampled_means(rng, x, where[0].size) for x in samples])
    return values.mean(axis=1)


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
    replicates = _two_level_replicates(rng, [(a,) for a in arrays], n_boot, lambda means: means[0])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return Estimate(point, float(low), float(high), len(arrays), sizes)


def seed_level_bootstrap(values: Mapping[object, float], **kw) -> Estimate:
    """For run-level numbers (DS accuracy): one value per seed, bootstrap over seeds."""
    return hierarchical_bootstrap({k: [v] for k, v in values.items()}, **kw)


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
    means = _edit_means(diffs, edit_ids)
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


def _edit_means(diffs: Mapping[object, Sequence[float]], edit_ids: Mapping[object, Sequence[object]]) -> np.ndarray:
    """Each unit's (edit's, test row's) difference averaged over the seeds it was measured in."""
    per_unit: dict[object, list[float]] = {}
    for seed, values in diffs.items():
        for unit, value in zip(edit_ids[seed], values):
            per_unit.setdefault(unit, []).append(float(value))
    return np.array([np.mean(v) for v in per_unit.values()])


def shares_units(edit_ids: Mapping[object, Sequence[object]] | None) -> bool:
    """Whether some edit (or test row) was measured in more than one seed."""
    if edit_ids is None:
        return False
    return sum(len(set(v)) for v in edit_ids.values()) > len({e for v in edit_ids.values() for e in v})



def shared_unit_variance(diffs: Mapping[object, Sequence[float]], unit_ids: Mapping[object, Sequence[object]]) -> float:
    """Variance that units (edits, test rows) measured in several seeds add to the mean of per-seed
    means beyond what the within-seed variances already hold: a unit's own effect b_e enters with
    weight w_e = Σ_{seeds s holding e} 1/(S n_s), so it adds σ_b² Σ_e (w_e² − Σ_s (1/(S n_s))²); 0 when
    every unit is in one seed, about σ_b² (S − 1)/(S n) when all recur. σ_b² is estimated by the
    variance of the units' mean differences (conservative: it still holds some within-seed noise)."""
    seeds = [s for s in diffs if len(unit_ids[s])]
    k = len(seeds)
    weight: dict[object, float] = {}
    own: dict[object, float] = {}
    for s in seeds:
        share = 1.0 / (k * len(unit_ids[s]))
        for unit in unit_ids[s]:
            weight[unit] = weight.get(unit, 0.0) + share
            own[unit] = own.get(unit, 0.0) + share**2
    factor = sum(weight[u] ** 2 - own[u] for u in weight)
    means = _edit_means({s: diffs[s] for s in seeds}, unit_ids)
    if factor <= 1e-15 or means.size < 2:
        return 0.0
    return float(means.var(ddof=1) * factor)

# ------------------------------------------------------------------------------------------------
# The run (seed) as the unit: per-seed effects combined by a random-effects model


RUN_LEVEL_NOTE = ("Deciding test (claims about methods): the fine-tuning run (seed) is the unit. Per seed, the "
                  "effect is the paired risk difference A − B on the shared edits (or test rows) with its "
                  "within-seed variance ((b + c) − (b − c)²/n)/n² from the discordant counts b, c (0.5 added to "
                  "both when one is 0); the seeds are combined by a random-effects model (statsmodels "
                  "combine_effects, Paule–Mandel τ²) with the Hartung–Knapp–Sidik–Jonkman standard error, "
                  "never below the ordinary random-effects one (the modified Knapp–Hartung rule), and a t "
                  "distribution with S − 1 df: that one statistic gives the effect, its 95% CI and p. Where "
                  "edits or test rows recur in several seeds, the variance their own effects add is added "
                  "(common to those seeds, the seeds' spread misses it, and it does not shrink with more "
                  "seeds): σ²_unit · Σ_e (w_e² − Σ_s w_es²), w_es = 1/(S n_s), σ²_unit the variance of the units' "
                  "mean differences. Heterogeneity: τ², I², Cochran's Q (χ², S − 1 df); 'agree' = seeds "
                  "whose own effect has the combined effect's sign. Holm correction over every comparison of "
                  "the report on this p. A finding is called only at Holm p < 0.05, which also puts its CI "
                  "off 0")
WITHIN_NOTE = ("'Within these runs' (p_within): the exact edit-level test, valid for these particular runs only: "
               "per seed exact McNemar (statsmodels); across seeds the exact binomial test on the discordant "
               "pairs pooled over seeds (distinct edits per seed) or the exact sign test over edits on each "
               "edit's mean difference (edits repeated across seeds, each counted once); a_only / b_only are "
               "the counts that test used (discordant pairs, or edits favouring A / B)")
POWER_NOTE = ("mdd: for a row without a finding, the smallest difference this design (S seeds × its edits, "
              "at the observed run-level standard error) detects with 80% power in a two-sided t test at "
              "5% (statsmodels TTestPower, S − 1 df)")

TOST_NOTE = ("p_equiv (with --margin m): two one-sided t tests (TOST) on the run-level effect and standard error, "
             "S − 1 df; 'equivalent' when p_equiv < 0.05, i.e. the 90% run-level CI lies inside ±m")


@dataclass(frozen=True)
class RunLevel:
    """A comparison's deciding statistic: per-seed effects combined across seeds."""

    effect: float
    low: float
    high: float
    se: float
    df: int
    p_value: float
    tau2: float
    i2: float
    q: float
    q_p: float
    seed_effects: tuple[float, ...]
    shared_units: bool

    @property
    def n_seeds(self) -> int:
        return len(self.seed_effects)

    @property
    def agree(self) -> int:
        """Seeds whose own effect points the combined effect's way."""
        sign = np.sign(self.effect)
        return int(sum(np.sign(e) == sign for e in self.seed_effects)) if sign else 0

    def mdd(self, power: float = 0.8, alpha: float = 1 - CONFIDENCE) -> float:
        """Minimum detectable difference at ``power`` for this design at the observed standard error."""
        if self.df < 1 or not self.se > 0:
            return math.nan
        from statsmodels.stats.power import TTestPower

        n = self.df + 1
        d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
        return float(d * self.se * math.sqrt(n))

    def equivalence_p(self, margin: float) -> float:
        """TOST p-value for |true effect| < margin (the larger of the two one-sided t tests)."""
        if self.df < 1 or not self.se > 0 or not margin > 0:
            return math.nan
        lower = t_dist.sf((self.effect + margin) / self.se, self.df)
        upper = t_dist.cdf((self.effect - margin) / self.se, self.df)
        return float(max(lower, upper))


def run_level(effects: Sequence[float], variances: Sequence[float], shared_variance: float = 0.0,
              confidence: float = CONFIDENCE) -> RunLevel:
    """Random-effects combination of per-seed ``effects`` (within-seed ``variances``), HKSJ t with
    S − 1 df. ``shared_variance``: what units measured in several seeds add to the combined effect's
    variance (:func:`shared_unit_variance`; common to those seeds, so their spread misses it)."""
    eff = np.asarray(effects, dtype=float)
    var = np.asarray(variances, dtype=float)
    k = eff.size
    shared = shared_variance > 0
    nan = math.nan
    if k < 2:
        return RunLevel(float(eff[0]) if k else nan, nan, nan, nan, 0, nan, nan, nan, nan, nan, tuple(eff.tolist()), shared)
    with warnings.catch_warnings():  # I² divides by Q, which is 0 when every seed agrees exactly
        warnings.simplefilter("ignore", RuntimeWarning)
        res = combine_effects(eff, var, method_re="iterated", use_t=True)
    effect = float(res.mean_effect_re)
    se2 = max(float(res.var_hksj_re), float(res.var_eff_w_re))
    se2 += shared_variance
    se = math.sqrt(se2)
    df = k - 1
    crit = float(t_dist.ppf(0.5 + confidence / 2, df))
    if se > 0:
        p = float(2 * t_dist.sf(abs(effect) / se, df))
    else:  # every seed the same, no within-seed variance left: only a zero effect is consistent with H0
        p = 1.0 if effect == 0 else 0.0
    q = float(res.q)
    i2 = max(0.0, 1 - df / q) if q > 0 else 0.0
    return RunLevel(effect, effect - crit * se, effect + crit * se, se, df, p, float(res.tau2), i2, q,
                    float(chi2.sf(q, df)), tuple(eff.tolist()), shared)


def paired_seed_effect(a: Sequence[int], b: Sequence[int]) -> tuple[float, float]:
    """Risk difference mean(A) − mean(B) of paired 0/1 outcomes and its variance (from the discordant
    counts; 0.5 added to both when one is 0, so a seed without discordant pairs still has a variance)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    n = a.size
    x, y = float(np.sum(a & ~b)), float(np.sum(~a & b))
    effect = (x - y) / n
    if x == 0 or y == 0:
        x, y = x + 0.5, y + 0.5
    return effect, max((x + y) - (x - y) ** 2 / n, 0.25) / n**2


@dataclass(frozen=True)
class PairedTest:
    """Paired binary outcomes of A and B on the same units (1 = flipped / correct), per seed and combined."""

    run: RunLevel  # the deciding statistic: seeds as the unit
    rate_a: float  # means over seeds
    rate_b: float
    n_per_seed: tuple[int, ...]
    a_only: int  # the counts the within-run test used
    b_only: int
    p_within: float  # the exact edit-level test: valid for these runs only
    p_per_seed: dict[str, float]

    def n_label(self) -> str:
        """``3×50``, or ``3×45–50`` when the seeds hold different numbers of units."""
        low, high = min(self.n_per_seed, default=0), max(self.n_per_seed, default=0)
        return f"{len(self.n_per_seed)}×{low}" if low == high else f"{len(self.n_per_seed)}×{low}–{high}"


def paired_test(pairs: Mapping[object, tuple[Sequence[int], Sequence[int]]],
                edit_ids: Mapping[object, Sequence[object]] | None = None) -> PairedTest:
    """``pairs``: per seed, (outcomes of A, outcomes of B) on the same units in the same order;
    ``edit_ids``: per seed, which unit each position is. The deciding statistic combines the seeds
    (:func:`run_level`); the exact within-run test treats a unit repeated across seeds once."""
    diffs, per_seed, discordant, rates_a, rates_b, effects, variances, sizes = {}, {}, [], [], [], [], [], []
    for seed, (a, b) in sorted(pairs.items(), key=lambda kv: str(kv[0])):
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
        effect, variance = paired_seed_effect(a, b)
        effects.append(effect)
        variances.append(variance)
        sizes.append(int(a.size))
    ids = {s: list(edit_ids[s]) for s in diffs} if edit_ids is not None else None
    if shares_units(ids):
        means = _edit_means(diffs, ids)
        a_only, b_only = int(np.sum(means > 0)), int(np.sum(means < 0))
        run = run_level(effects, variances, shared_unit_variance(diffs, ids))
        p_within = edit_sign_test(diffs, ids)
    else:
        a_only, b_only = sum(x for x, _ in discordant), sum(y for _, y in discordant)
        run, p_within = run_level(effects, variances), combined_discordant_test(discordant)
    return PairedTest(run, float(np.mean(rates_a)) if rates_a else math.nan,
                      float(np.mean(rates_b)) if rates_b else math.nan, tuple(sizes), a_only, b_only, p_within,
                      per_seed)


def unpaired_seed_effect(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Difference of two independent proportions measured in one seed (edits vs native facts) and its
    variance; a proportion of 0 or 1 is taken as (x + 0.5) / (n + 1) in the variance only."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    pa, pb = a.mean(), b.mean()
    va, vb = [((x.sum() + 0.5) / (x.size + 1)) if p in (0.0, 1.0) else p for x, p in ((a, pa), (b, pb))]
    return float(pa - pb), float(va * (1 - va) / a.size + vb * (1 - vb) / b.size)


def two_sample_test(groups_a: Mapping[object, Sequence[float]], groups_b: Mapping[object, Sequence[float]],
                    ids_a: Mapping[object, Sequence[object]] | None = None,
                    ids_b: Mapping[object, Sequence[object]] | None = None) -> PairedTest:
    """Two independent samples of 0/1 outcomes measured in the same seeds (edits that survive vs
    native facts retained): per-seed differences of proportions combined like :func:`paired_test`;
    items that recur across seeds add their own sampling variance. No exact within-run test
    (``p_within`` NaN): the two sides are different items."""
    effects, variances, sizes, rates_a, rates_b, diffs_a, diffs_b = [], [], [], [], [], {}, {}
    for seed in sorted(set(groups_a) & set(groups_b), key=str):
        a = np.asarray(groups_a[seed], dtype=float)
        b = np.asarray(groups_b[seed], dtype=float)
        if not (a.size and b.size):
            continue
        effect, variance = unpaired_seed_effect(a, b)
        effects.append(effect)
        variances.append(variance)
        sizes.append(int(a.size + b.size))
        rates_a.append(a.mean())
        rates_b.append(b.mean())
        diffs_a[seed], diffs_b[seed] = a, b
    # The two sides are independent: the variances their recurring items add, add up.
    shared = sum(shared_unit_variance(diffs, {s: list(ids[s]) for s in diffs})
                 for diffs, ids in ((diffs_a, ids_a), (diffs_b, ids_b)) if ids is not None and diffs)
    run = run_level(effects, variances, shared)
    return PairedTest(run, float(np.mean(rates_a)) if rates_a else math.nan,
                      float(np.mean(rates_b)) if rates_b else math.nan, tuple(sizes), 0, 0, math.nan, {})


def smallest_seed_p(n_seeds: int) -> float:
    """The smallest two-sided p a test over S seeds can reach without a model of the run-to-run
    distribution: every seed agreeing, exact sign test (2 · 0.5^S)."""
    return min(1.0, 2 * 0.5**n_seeds) if n_seeds else math.nan


def critical_t(n_seeds: int, alpha: float = 1 - CONFIDENCE) -> float:
    """|t| the run-level test needs for p < alpha with S − 1 df."""
    return float(t_dist.ppf(1 - alpha / 2, n_seeds - 1)) if n_seeds > 1 else math.nan


# ------------------------------------------------------------------------------------------------
# Rates at the edit level and downstream accuracy


RATE_NOTE = ("Rates of 0/1 outcomes (EFR, flip rates, edit survival, native retention): mean over seeds of "
             "the per-seed rate, 95% CI exact Clopper–Pearson on the design's effective sample size "
             "(Korn–Graubard: n_eff = p(1 − p) / v, v the larger of the seeds' spread var(p_s)/S and the "
             "within-seed binomial variance, n_eff capped at n), so rare flips get an exact interval, never [0, 0]")
DS_NOTE = ("DS (downstream accuracy) from the per-example answers (ds/<group>/ds_predictions.json): a single model "
           "on one task (one seed, or the base model: the same in every seed) gets the exact Clopper–Pearson interval over "
           "its test rows; several seeds get a percentile bootstrap over seeds × test rows (B = 2000; seeds "
           "and rows resampled together, a row keeps its answers of every drawn seed: the rows are shared)")


def rate_interval(groups: Mapping[object, Sequence[float]], *, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of per-seed rates of 0/1 outcomes with a Korn–Graubard CI: Clopper–Pearson on the
    effective sample size p(1 − p) / v, where v, the variance of the mean of seed rates, is the larger
    of the seeds' spread (seeds as the sampling units: var(p_s) / S) and the binomial variance within
    them (Σ p_s(1 − p_s)/n_s / S²); n_eff is capped at n. One seed: the plain exact interval."""
    arrays = _clean(groups)
    if not arrays:
        return NAN_ESTIMATE
    rates = np.array([a.mean() for a in arrays])
    sizes = tuple(int(a.size) for a in arrays)
    n, k = sum(sizes), len(arrays)
    point = float(rates.mean())
    within = float(np.sum(rates * (1 - rates) / np.array(sizes)) / k**2)
    variance = max(within, float(rates.var(ddof=1) / k)) if k > 1 else within
    n_eff = min(float(n), point * (1 - point) / variance) if variance > 0 and 0 < point < 1 else float(n)
    low, high = proportion_confint(point * n_eff, n_eff, alpha=1 - confidence, method="beta")
    return Estimate(point, float(low), float(high), k, sizes)


def ds_interval(correct: Mapping[object, Sequence[float]], *, single_model: bool = False, n_boot: int = N_BOOTSTRAP,
                confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """DS accuracy over seeds × the same test rows (``correct``: per seed, 0/1 per row in one row
    order). ``single_model``: the seeds hold one model (base): Clopper–Pearson over its rows."""
    arrays = _clean(correct)
    if not arrays:
        return NAN_ESTIMATE
    if single_model:
        a = arrays[0]
        low, high = proportion_confint(a.sum(), a.size, alpha=1 - confidence, method="beta")
        return Estimate(float(a.mean()), float(low), float(high), 1, (int(a.size),))
    rows = {s: list(range(a.size)) for s, a in enumerate(arrays)}
    return crossed_bootstrap(dict(enumerate(arrays)), rows, n_boot=n_boot, confidence=confidence, seed=seed)


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
