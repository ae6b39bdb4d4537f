"""The report's statistics with known answers: the run (seed) as the unit of method claims, one
statistic for direction, CI and p, exact intervals for rare flips, DS intervals over seeds × rows,
duplicates counted once, and a small version of benchmarks/report_calibration.py.

The report-level tests build the runs as ``tracking.read`` hands them to the report (``SweepRuns``
of ``TrialRun``: params, tags, metrics, per-edit tables, DS answers) and run the real report on them."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, t as t_dist
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint

from editdecay.report.stats import (ds_interval, hierarchical_bootstrap, paired_test, rate_interval, run_level,
                                    smallest_seed_p)
from editdecay.tracking.read import SweepRuns, TrialRun

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


# ------------------------------------------------------------------------------------------------
# Statistics


def test_identical_groups_give_no_effect_and_no_finding():
    rng = np.random.default_rng(0)
    pairs = {s: ((rng.random(50) < 0.3).astype(int),) * 2 for s in range(5)}
    test = paired_test(pairs)
    assert test.run.effect == 0 and test.run.p_value == 1.0
    assert test.run.low < 0 < test.run.high
    assert test.p_within == 1.0 and (test.a_only, test.b_only) == (0, 0)
    assert test.run.agree == 0 and test.run.tau2 == 0


def test_direction_ci_and_p_come_from_one_statistic():
    # The conflict: one small seed says A ≫ B, two large seeds lean B. The old report took the
    # direction from the seed-weighted mean (A) and p from the pooled discordant counts (B ahead).
    small_a, small_b = [1] * 8 + [0] * 2, [0] * 10
    large_a, large_b = [0] * 14 + [1] * 6 + [0] * 80, [1] * 14 + [0] * 6 + [0] * 80
    test = paired_test({0: (small_a, small_b), 1: (large_a, large_b), 2: (large_a, large_b)})
    run = test.run
    assert run.low <= run.effect <= run.high
    assert (run.p_value < 0.05) == (not run.low <= 0 <= run.high)
    # Over many random designs: p < 0.05 exactly when the CI excludes 0, effect always inside.
    rng = np.random.default_rng(1)
    for _ in range(200):
        k = int(rng.integers(2, 8))
        pairs = {}
        for s in range(k):
            n = int(rng.integers(5, 80))
            rate_a, rate_b = rng.random(), rng.random()
            pairs[s] = ((rng.random(n) < rate_a).astype(int), (rng.random(n) < rate_b).astype(int))
        run = paired_test(pairs).run
        assert run.low <= run.effect <= run.high
        assert (run.p_value < 0.05) == (not run.low <= 0 <= run.high), (run, pairs)


def test_run_level_matches_statsmodels_and_the_t_distribution():
    from statsmodels.stats.meta_analysis import combine_effects

    effects, variances = [0.32, -0.02, 0.38], [0.004, 0.004, 0.005]
    run = run_level(effects, variances)
    ref = combine_effects(np.array(effects), np.array(variances), method_re="iterated", use_t=True)
    se = max(ref.sd_eff_w_re_hksj, ref.sd_eff_w_re)
    assert run.effect == pytest.approx(ref.mean_effect_re) and run.se == pytest.approx(se)
    assert run.p_value == pytest.approx(2 * t_dist.sf(abs(run.effect) / se, 2))
    assert run.high - run.low == pytest.approx(2 * t_dist.ppf(0.975, 2) * se)
    assert run.agree == 2 and run.n_seeds == 3 and run.q_p < 0.05  # two seeds of three agree; heterogeneous
    # The example (+0.32, −0.02, +0.38): edit-level p < 0.001, run-level not significant.
    assert run.p_value > 0.05 and run.low < 0
    d = TTestPower().solve_power(nobs=3, alpha=0.05, power=0.8)
    assert run.mdd() == pytest.approx(d * se * math.sqrt(3))
    assert run_level([0.01, 0.0, -0.01], [1e-4] * 3).equivalence_p(0.05) < 0.05  # tight and near 0: equivalent
    assert run.equivalence_p(0.05) > 0.5  # wide: equivalence not shown
    assert smallest_seed_p(3) == 0.25 and smallest_seed_p(5) == 0.0625


def test_bootstrap_resamples_a_seed_drawn_twice_independently():
    # S identical seeds: the two-level bootstrap variance of the mean is p(1-p)/(n S) when every drawn
    # copy is resampled afresh; reusing one resample per seed inflates it by (2S - 1)/S (5/3 at S = 3).
    x = np.array([1] * 15 + [0] * 35, dtype=float)
    est = hierarchical_bootstrap({s: x for s in range(3)}, n_boot=8000)
    expected_width = 2 * 1.96 * math.sqrt(0.3 * 0.7 / 150)
    assert est.high - est.low == pytest.approx(expected_width, rel=0.12)


def test_rare_flips_get_the_exact_interval():
    one_seed = rate_interval({0: [1, 1] + [0] * 147})
    low, high = proportion_confint(2, 149, method="beta")
    assert (one_seed.low, one_seed.high) == (pytest.approx(low), pytest.approx(high))
    none = rate_interval({s: [0] * 50 for s in range(3)})
    assert none.low == 0 and none.high == pytest.approx(proportion_confint(0, 150, method="beta")[1])


def test_ds_interval_of_three_identical_seeds_is_the_binomial_interval():
    rng = np.random.default_rng(2)
    correct = (rng.random(100) < 0.18).astype(float)
    k = int(correct.sum())
    single = ds_interval({0: correct}, single_model=True)
    assert (single.low, single.high) == (pytest.approx(proportion_confint(k, 100, method="beta")[0]),
                                         pytest.approx(proportion_confint(k, 100, method="beta")[1]))
    three = ds_interval({s: correct for s in range(3)}, n_boot=8000)
    # The rows are shared: three copies of one model are still 100 rows, not 300 (no √3 narrowing),
    # and the bootstrap over rows gives the binomial distribution's own quantiles.
    assert three.low == pytest.approx(binom.ppf(0.025, 100, k / 100) / 100, abs=0.011)
    assert three.high == pytest.approx(binom.ppf(0.975, 100, k / 100) / 100, abs=0.011)
    assert three.low == pytest.approx(single.low, abs=0.02) and three.high == pytest.approx(single.high, abs=0.02)


def test_calibration_small_version():
    """benchmarks/report_calibration.py at 200 sweeps: the deciding test holds its level under
    run-to-run spread where the edit-level test does not; the CI covers; an effect is found."""
    from report_calibration import Condition, calibrate

    null = calibrate(Condition(5, 40, 1.0, 0.0), 200, seed=3)
    assert null["reject"] <= 0.10 and null["coverage"] >= 0.88
    assert null["within_reject"] >= 0.15  # the old deciding test, for contrast
    effect = calibrate(Condition(10, 40, 0.5, 1.0), 200, seed=4)
    assert effect["reject"] >= 0.5 and effect["coverage"] >= 0.88


# ------------------------------------------------------------------------------------------------
# The report on runs as tracking.read hands them over


def _trial(editor: str, ft: str, layers: str, seed: int, flips: np.ndarray, ds: dict[str, np.ndarray],
           run_id: str, start: int = 0) -> TrialRun:
    n = flips.size
    case_ids = [f"{seed}-{i}" for i in range(n)]
    per_edit = pd.DataFrame({"case_id": case_ids, "subject": "s", "target_new": "a", "target_true": "b",
                             "es_base": 0.0, "ps_base": 0.0, "ns_base": 1.0, "es_edit": 1.0, "ps_edit": 1.0,
                             "ns_edit": 1.0, "es_ftonly": 0.0, "ps_ftonly": 0.0, "ns_ftonly": 1.0,
                             "es_ft": 1.0 - flips, "ps_ft": 1.0 - flips, "ns_ft": 1.0, "flipped": flips.astype(bool),
                             "relation": "P36"})
    gold = ["city"] * next(iter(ds.values())).size
    answers = {g: pd.DataFrame({"task": "world_kind", "gold": gold,
                                "pred": ["city" if c else "country" for c in correct]}) for g, correct in ds.items()}
    params = {"model.name": "toy", "model.toy.arch": "gpt2", "edit.method": editor, "data.source": "world",
              "data.world_format": "counterfact", "edit.num_edits": str(n), "finetune.method": ft,
              "finetune.layers": layers, "seed": str(seed)}
    tags = {"editdecay.trial_id": f"{editor}-{ft}-{layers}-s{seed}",
            "editdecay.stage_keys": json.dumps({"records": f"records-{seed}"})}
    metrics = {f"{g}.ds.acc": float(c.mean()) for g, c in ds.items()}
    return TrialRun(run_id, tags["editdecay.trial_id"], "FINISHED", "1", params, tags, metrics, per_edit,
                    start_time=start, ds_predictions=answers)


def _sweep(trials: list[TrialRun]) -> SweepRuns:
    return SweepRuns("synthetic", "sqlite:///unused.db", "synthetic", "1", None, None, trials)


def _runs(seeds=(0, 1, 2), n=60):
    rng = np.random.default_rng(5)
    base = (rng.random(40) < 0.2).astype(float)
    trials = []
    for seed in seeds:
        ftonly = (rng.random(40) < 0.7).astype(float)
        for ft, rate in (("lora", 0.3), ("full", 0.1)):
            flips = (rng.random(n) < rate).astype(float)
            trials.append(_trial("memit", ft, "all", seed, flips, {"base": base, "ftonly": ftonly, "ft": ftonly},
                                 f"run-{ft}-{seed}", start=seed))
    return trials


def test_duplicated_trial_is_counted_once_and_warned(tmp_path):
    from editdecay.report import write_report

    trials = _runs()
    once = write_report(_sweep(trials), tmp_path / "once", log_to_parent=False)
    # The same trial twice (a second `make main` read with --experiment): an older copy and a newer one.
    duplicate = _trial("memit", "lora", "all", 0, np.ones(60), {"base": np.zeros(40), "ftonly": np.zeros(40),
                                                                "ft": np.zeros(40)}, "run-old-copy", start=-5)
    twice = write_report(_sweep(trials + [duplicate]), tmp_path / "twice", log_to_parent=False)
    assert once.warnings == [w for w in twice.warnings if not w.startswith("warning: 1 duplicate")]
    line = [w for w in twice.warnings if "duplicate" in w]
    assert len(line) == 1 and "memit-lora-all-s0 (run run-old-" in line[0]
    assert twice.n_usable == once.n_usable == 6
    t1, t2 = (pd.read_csv(d / "tables.csv") for d in (tmp_path / "once", tmp_path / "twice"))
    assert t1.equals(t2)  # the older copy (all flipped) changed nothing: counted once, the latest kept
    c1, c2 = (pd.read_csv(d / "comparisons.csv") for d in (tmp_path / "once", tmp_path / "twice"))
    assert c1.equals(c2)


def test_report_decides_at_the_run_level_and_states_the_design(tmp_path):
    from editdecay.report import write_report

    result = write_report(_sweep(_runs()), tmp_path / "r", log_to_parent=False, margin=0.05)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert any("3 seeds: method-level claims are weak" in w and "p = 0.25" in w for w in result.warnings)
    comp = pd.read_csv(tmp_path / "r" / "comparisons.csv")
    lora_full = comp[comp["comparison"] == "ft_method"].iloc[0]
    assert lora_full["df"] == 2 and lora_full["agree"].endswith("of 3")
    assert lora_full["ci_low"] <= lora_full["effect"] <= lora_full["ci_high"]
    tested = comp[comp["p_value"].notna()]
    from statsmodels.stats.multitest import multipletests
    assert list(tested["p_holm"]) == pytest.approx(list(multipletests(tested["p_value"], method="holm")[1]))
    # DS: FT-only vs base paired on the answers, once (not once per editor); KE→FT vs FT-only identical here.
    ds = comp[comp["kind"] == "ds"]
    assert set(ds["comparison"]) == {"ds_ft_teaches", "ds_edits_cost"}
    same = ds[ds["comparison"] == "ds_edits_cost"]
    assert (same["effect"] == 0).all() and (same["p_value"] == 1).all()
    for f in summary["findings"]:
        row = tested[tested["comparison"] == f["comparison"]]
        if f["significant"]:
            assert "run-level" in f["text"] and "seeds agree" in f["text"]
        else:
            assert "detects a difference of ±" in f["text"] and "TOST" in f["text"]
    # Base DS: one model over 40 rows, the exact binomial interval (not [x, x] from identical seeds).
    tables = pd.read_csv(tmp_path / "r" / "tables.csv")
    base = tables[(tables["table"] == "downstream") & (tables["column"] == "base")].iloc[0]
    k = int(round(base["mean"] * 40))
    assert (base["ci_low"], base["ci_high"]) == (pytest.approx(proportion_confint(k, 40, method="beta")[0]),
                                                 pytest.approx(proportion_confint(k, 40, method="beta")[1]))
