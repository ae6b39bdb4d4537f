"""How long does `editdecay report` take on a paper-sized sweep (360 trial runs)?

Writes a synthetic sweep straight through the tracking module (``tracked_run``: params, tags,
metrics, the decay curve, ``results/per_edit.csv`` and ``edits/records.jsonl`` as a trial logs
them; no training) into a fresh sqlite store, then times reading it back (``tracking.read``) and
building the report (tables, paired tests, plots, report.html), as ``editdecay report`` does.

Grid: 2 editors × (no FT + {LoRA, DoRA, full} × {all, edited, non-edited}) × 3 datasets ×
2 edit counts (50, 100 per-edit rows) × 3 seeds = 360 trial runs. Flips are random with rates that
differ by setting, so the paired tests have something to find.

    .venv/bin/python benchmarks/report.py      # aim: report <= 60 s on 2 cores
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from editdecay.tracking.runs import tracked_run  # noqa: E402

EDITORS = ["memit", "alphaedit"]
FT = [("none", "all")] + [(m, la) for m in ("lora", "dora", "full") for la in ("all", "edited", "non_edited")]
DATASETS = ["counterfact", "mcf", "zsre"]
N_EDITS = [50, 100]
SEEDS = [0, 1, 2]
RELATIONS = ["P36", "P38", "P37", "P30", "P106", "P19", "P108"]


def flip_rate(editor: str, ft: str, layers: str) -> float:
    base = {"lora": 0.25, "dora": 0.22, "full": 0.12}.get(ft, 0.0)
    base *= {"edited": 1.6, "non_edited": 0.4, "all": 1.0}[layers]
    return base * (0.6 if editor == "alphaedit" else 1.0)


def write_store(uri: str) -> tuple[str, int]:
    rng = np.random.default_rng(0)
    sweep_id = "bench-report-0001"
    n = 0
    with tracked_run("bench-report", "paper-synthetic", tracking_uri=uri,
                     tags={"editdecay.sweep": sweep_id, "editdecay.kind": "sweep"},
                     params={"sweep.name": "paper-synthetic", "sweep.n_trials": 360}) as parent:
        for editor, (ft, layers), dataset, n_edits, seed in itertools.product(EDITORS, FT, DATASETS, N_EDITS, SEEDS):
            trial_id = f"{editor}-{ft}-{layers}-{dataset}-{n_edits}-s{seed}"
            records = [{"case_id": i, "subject": f"s{i}", "prompt": "{} is in", "target_new": "a", "target_true": "b",
                        "relation_id": RELATIONS[i % len(RELATIONS)]} for i in range(n_edits)]
            case_rng = np.random.default_rng(zlib.crc32(f"{editor}{dataset}{n_edits}".encode()))  # same edits in every seed
            es_edit = (case_rng.random(n_edits) < (0.95 if editor == "alphaedit" else 0.8)).astype(float)
            pe = pd.DataFrame({"case_id": range(n_edits), "subject": [r["subject"] for r in records],
                               "target_new": "a", "target_true": "b", "es_base": 0.0, "ps_base": 0.0, "ns_base": 1.0,
                               "es_edit": es_edit, "ps_edit": es_edit * 0.8, "ns_edit": 0.9})
            if ft != "none":
                flipped = (es_edit == 1) & (rng.random(n_edits) < flip_rate(editor, ft, layers))
                pe["es_ftonly"], pe["ps_ftonly"], pe["ns_ftonly"] = 0.0, 0.0, 1.0
                pe["es_ft"] = np.where(flipped, 0.0, es_edit)
                pe["ps_ft"], pe["ns_ft"] = pe["es_ft"] * 0.8, 0.9
                pe["flipped"] = flipped
            params = {"model.name": "toy", "model.toy.arch": "gpt2", "edit.method": editor, "data.source": dataset,
                      "edit.num_edits": n_edits, "finetune.method": ft, "finetune.layers": layers, "seed": seed}
            tags = {"editdecay.sweep": sweep_id, "editdecay.trial_id": trial_id,
                    "editdecay.stage_keys": json.dumps({"records": f"{dataset}-{n_edits}"})}
            with tracked_run("bench-report", trial_id, params=params, tags=tags, tracking_uri=uri,
                             parent_run_id=parent.run_id) as run:
                metrics = {"base.ds.acc": 0.3, "edit.es": float(es_edit.mean())}
                if ft != "none":
                    metrics.update({"ft.ds.acc": 0.3 + 0.1 * rng.random(), "ftonly.ds.acc": 0.35,
                                    "survival.efr": float(pe["flipped"].sum() / max(1, es_edit.sum()))})
                run.log_metrics(metrics)
                if ft != "none":
                    for step in range(0, 61, 15):
                        run.log_metrics({"curve.es": float(es_edit.mean()) * (1 - step / 300)}, step=step)
                run.log_text(pe.to_csv(index=False), "results/per_edit.csv")
                run.log_text("\n".join(json.dumps(r) for r in records) + "\n", "edits/records.jsonl")
            n += 1
    return sweep_id, n


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    from editdecay.report import write_report
    from editdecay.tracking.read import read_sweep

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        t0 = time.perf_counter()
        sweep_id, n = write_store(uri)
        t1 = time.perf_counter()
        runs = read_sweep(sweep_id, tracking_uri=uri)
        t2 = time.perf_counter()
        result = write_report(runs, Path(tmp) / "report")
        t3 = time.perf_counter()
        comparisons = pd.read_csv(result.out_dir / "comparisons.csv")
        print(f"synthetic store: {n} trial runs written through tracking.runs in {t1 - t0:.1f} s")
        print(f"report on {n} runs: read {t2 - t1:.1f} s + build {t3 - t2:.1f} s (incl. logging to the parent run) "
              f"= {t3 - t1:.1f} s total  (aim: <= 60 s on 2 cores)")
        print(f"  {len(comparisons)} paired comparisons, {comparisons['p_value'].notna().sum()} tested; "
              f"{sum(1 for _ in result.out_dir.glob('*.png'))} plots")


if __name__ == "__main__":
    main()
