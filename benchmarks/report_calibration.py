"""Is the report's deciding test calibrated when fine-tuning runs differ from one another?

Simulates sweeps of one paired comparison (A vs B on the same edits, e.g. LoRA vs full FT) and
runs the report's own test on each (``editdecay.report.stats.paired_test``: per-seed risk
differences combined by a random-effects model, Hartung–Knapp t with S − 1 df). Per sweep:

- S seeds (fine-tuning runs), each with its own n edits (``edit.selection: random``, as the smoke
  sweep), or the same n edits in every seed (``--shared``, ``edit.selection: first``);
- edit e has a baseline flip logit mu_e ~ N(logit 0.25, 1); seed s shifts both sides by
  u_s ~ N(0, 0.5) and has its own A-vs-B logit difference delta_s ~ N(Delta, sd_run^2): the
  run-to-run spread of the effect the edit-level tests ignore;
- A flips with expit(mu_e + u_s + delta_s / 2), B with expit(mu_e + u_s - delta_s / 2).

The estimand is the population risk difference E[p_A - p_B] over runs and edits (0 under the null
Delta = 0 by symmetry; by Monte Carlo otherwise). Printed per condition: the deciding test's
rejection rate at 5 % (type-I error under the null, power under an effect), its 95 % CI's
coverage of the estimand, and, for comparison, the rejection rate of the edit-level test the
report used to decide with (pooled exact binomial on discordant pairs; now the "within these runs"
column).

    .venv/bin/python benchmarks/report_calibration.py              # 1,000 sweeps per condition
    .venv/bin/python benchmarks/report_calibration.py --sweeps 200 --seeds 5
    .venv/bin/python benchmarks/report_calibration.py --shared     # only the same-edits-in-every-seed design
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit, logit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from editdecay.report.stats import paired_test  # noqa: E402

BASE_RATE = 0.25
EDIT_SD = 1.0
SEED_SHIFT_SD = 0.5
ALPHA = 0.05


@dataclass(frozen=True)
class Condition:
    n_seeds: int
    n_edits: int
    sd_run: float  # SD of the run-to-run A-vs-B effect, logit scale
    delta: float  # mean A-vs-B effect, logit scale (0: the null)
    shared: bool = False  # the same edits in every seed


def true_effect(c: Condition, rng: np.random.Generator, draws: int = 400_000) -> float:
    """E[p_A - p_B] over runs and edits (0 under the null by symmetry)."""
    if c.delta == 0:
        return 0.0
    mu = logit(BASE_RATE) + EDIT_SD * rng.standard_normal(draws) + SEED_SHIFT_SD * rng.standard_normal(draws)
    d = c.delta + c.sd_run * rng.standard_normal(draws)
    return float(np.mean(expit(mu + d / 2) - expit(mu - d / 2)))


def simulate_sweep(c: Condition, rng: np.random.Generator):
    shared_mu = logit(BASE_RATE) + EDIT_SD * rng.standard_normal(c.n_edits)
    pairs, ids = {}, {}
    for s in range(c.n_seeds):
        mu = shared_mu if c.shared else logit(BASE_RATE) + EDIT_SD * rng.standard_normal(c.n_edits)
        u = SEED_SHIFT_SD * rng.standard_normal()
        d = c.delta + c.sd_run * rng.standard_normal()
        a = (rng.random(c.n_edits) < expit(mu + u + d / 2)).astype(int)
        b = (rng.random(c.n_edits) < expit(mu + u - d / 2)).astype(int)
        pairs[s] = (a, b)
        ids[s] = [f"e{i}" if c.shared else f"s{s}e{i}" for i in range(c.n_edits)]
    return paired_test(pairs, ids)


def calibrate(c: Condition, n_sweeps: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    target = true_effect(c, rng)
    reject = covered = within_reject = 0
    for _ in range(n_sweeps):
        test = simulate_sweep(c, rng)
        run = test.run
        reject += run.p_value < ALPHA
        covered += run.low <= target <= run.high
        within_reject += test.p_within < ALPHA
    return {"true_effect": target, "reject": reject / n_sweeps, "coverage": covered / n_sweeps,
            "within_reject": within_reject / n_sweeps}


CONDITIONS = [Condition(s, 50, sd, 0.0) for s in (3, 5, 10) for sd in (0.0, 0.5, 1.0)] + \
             [Condition(s, 50, 0.5, 0.8) for s in (3, 5, 10)] + \
             [Condition(5, 50, 0.5, 0.0, shared=True), Condition(5, 50, 1.0, 0.0, shared=True),
              Condition(5, 50, 0.5, 0.8, shared=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", type=int, default=1000, help="simulated sweeps per condition (default 1000)")
    ap.add_argument("--seeds", type=int, nargs="*", help="only these seed counts")
    ap.add_argument("--edits", type=int, default=50, help="edits per seed (default 50)")
    ap.add_argument("--shared", action="store_true", help="only the conditions with the same edits in every seed")
    args = ap.parse_args(argv)
    print(f"{args.sweeps} simulated sweeps per condition; base flip rate {BASE_RATE}, edit SD {EDIT_SD}, "
          f"seed shift SD {SEED_SHIFT_SD} (logit); test at {ALPHA:.0%}")
    print(f"{'seeds':>5} {'edits':>5} {'shared':>6} {'sd_run':>6} {'delta':>5} {'true RD':>8} "
          f"{'reject':>7} {'CI cover':>8} {'old edit-level reject':>22} {'s':>5}")
    for c in CONDITIONS:
        if args.seeds and c.n_seeds not in args.seeds or args.shared and not c.shared:
            continue
        c = Condition(c.n_seeds, args.edits, c.sd_run, c.delta, c.shared)
        start = time.perf_counter()
        r = calibrate(c, args.sweeps)
        print(f"{c.n_seeds:>5} {c.n_edits:>5} {'yes' if c.shared else 'no':>6} {c.sd_run:>6.1f} {c.delta:>5.1f} "
              f"{r['true_effect']:>+8.3f} {r['reject']:>7.3f} {r['coverage']:>8.3f} {r['within_reject']:>22.3f} "
              f"{time.perf_counter() - start:>5.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
