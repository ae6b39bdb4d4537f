"""Survival metrics on hand-made per-edit tables."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from editdecay.metrics.survival import flip_table, survival


def test_efr_decrease_survival_by_hand():
    # 5 edits: 4 succeeded after editing; of those 1 flipped; 1 failed edit recovered after FT.
    before = [True, True, True, True, False]
    after = [True, False, True, True, True]
    s = survival(before, after)
    assert s.efr == pytest.approx(1 / 4)
    assert s.survival == pytest.approx(3 / 4)
    # ES 0.8 -> 0.8: the recovered edit hides the flip in the aggregate; EFR does not.
    assert s.decrease == pytest.approx(0.0)
    assert (s.n_edits, s.n_successful, s.n_flipped, s.n_recovered) == (5, 4, 1, 1)
    assert s.as_metrics()["survival.efr"] == pytest.approx(0.25)


def test_all_edits_survive_and_all_flip():
    assert survival([True] * 3, [True] * 3).efr == 0.0
    s = survival([True] * 3, [False] * 3)
    assert s.efr == 1.0 and s.survival == 0.0 and s.decrease == 1.0


def test_all_failed_edits_give_nan_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        s = survival([False, False], [True, False])
    assert math.isnan(s.efr) and math.isnan(s.decrease) and math.isnan(s.survival)
    assert s.n_successful == 0 and s.n_recovered == 1
    assert "no edit succeeded" in caplog.text


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 edits before fine-tuning but 2 after"):
        survival([True, True, False], [True, True])


def test_flip_table_matches_by_case_id():
    edited = pd.DataFrame({"case_id": [3, 1, 2], "es": [True, True, False]})
    finetuned = pd.DataFrame({"case_id": [1, 2, 3], "es": [False, False, True]})
    table = flip_table(edited, finetuned).set_index("case_id")
    assert table.loc[1, "flipped"] and not table.loc[3, "flipped"] and not table.loc[2, "flipped"]
    with pytest.raises(ValueError):
        flip_table(edited, finetuned[finetuned.case_id != 2])


def test_partial_zsre_successes_count_in_the_decrease_but_are_not_successes():
    # zsRE-style token accuracies: 0.5 and 0.667 are partial, not successful edits.
    s = survival([1.0, 1.0, 0.5, 0.667], [1.0, 0.667, 1.0, 0.667])
    assert (s.n_successful, s.n_flipped, s.n_recovered) == (2, 1, 1) and s.efr == pytest.approx(0.5)
    es_edit, es_ft = (1 + 1 + 0.5 + 0.667) / 4, (1 + 0.667 + 1 + 0.667) / 4
    assert s.decrease == pytest.approx((es_edit - es_ft) / es_edit)  # the mean ES, as edit.es and ft.es print it


# ------------------------------------------------------------------------------------------------
# One definition per summary metric: what a trial prints, what MLflow holds, what the report shows

# A constructed zsRE-style trial: per-edit ES is teacher-forced token accuracy, partial for some edits.
ES_EDIT = [1.0, 1.0, 1.0, 1.0, 0.5, 2 / 3, 1.0, 0.75]
ES_FT = [1.0, 0.5, 1.0, 2 / 3, 1.0, 2 / 3, 1.0, 0.5]  # edits 1 and 3 flip, edit 4 recovers, the mean falls
KNOWN_FT = [True, True, False, True]  # native facts (all known by the base model) after KE->FT


def _group(es: list[float], known: list[bool]) -> dict:
    n = len(es)
    per_edit = pd.DataFrame({"case_id": [str(i) for i in range(n)], "subject": [f"s{i}" for i in range(n)],
                             "target_new": "a", "target_true": None, "es": es, "ps": es, "ns": [1.0] * n})
    native = pd.DataFrame({"case_id": [f"w{i}" for i in range(len(known))], "subject": "w", "prompt": "p", "answer": "a",
                           "known": known, "top1": False, "nll": 1.0, "nll_alternative": 2.0, "token_accuracy": 0.0})
    # What the eval stage's summary holds: the mean over edits (metrics/edit.py).
    return {"per_edit": per_edit, "native": native,
            "metrics": {"es": float(np.mean(es)), "ps": float(np.mean(es)), "ns": 1.0, "ds.acc": 0.5}}


def test_printed_summary_mlflow_metric_and_report_cell_agree(tmp_path):
    from mlflow.tracking import MlflowClient

    from editdecay.cli import trial_summary
    from editdecay.data.records import EditRecord
    from editdecay.metrics.native import NativeControl
    from editdecay.pipeline.trial import GROUPS, log_results
    from editdecay.report.data import build_data
    from editdecay.report.tables import edit_quality, edits_vs_native, efr
    from editdecay.tracking.read import read_experiment
    from editdecay.tracking.runs import tracked_run

    evals = {"base": _group([0.0] * 8, [True] * 4), "ftonly": None, "edit": _group(ES_EDIT, [True] * 4),
             "ft": _group(ES_FT, KNOWN_FT)}
    facts = [EditRecord(case_id=f"w{i}", subject="w", prompt="The word '{}' means", target_new="x", target_true="y")
             for i in range(4)]
    control = NativeControl(facts, tried=6, pool=400, wanted=4, minimum=4)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {"model.name": "smollm2-135m", "edit.method": "memit", "data.source": "zsre", "edit.num_edits": "8",
              "finetune.method": "lora", "finetune.layers": "all", "seed": "0"}
    with tracked_run("agree", "constructed", params=params, tracking_uri=uri) as run:
        metrics, per_edit = log_results(run, evals, control)
    printed = "\n".join(trial_summary(metrics, GROUPS))
    logged = MlflowClient(uri).get_run(run.run_id).data.metrics
    data = build_data(read_experiment("agree", tracking_uri=uri))
    cells = pd.concat([t.long for t in [*edit_quality(data), *efr(data), *edits_vs_native(data)]])
    cell = lambda column, metric: cells[(cells["column"] == column) & (cells["metric"] == metric)]["mean"].item()  # noqa: E731

    es_edit, es_ft = np.mean(ES_EDIT), np.mean(ES_FT)
    expected = {"survival.efr": 2 / 5, "survival.survival": 3 / 5, "survival.decrease": (es_edit - es_ft) / es_edit,
                "native.retention": 3 / 4}
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value) and logged[name] == pytest.approx(value), name
    # The printed line shows the logged numbers (3 decimals) and the ES it is computed from.
    assert (f"survival {expected['survival.survival']:.3f}   EFR {expected['survival.efr']:.3f}   "
            f"decrease {expected['survival.decrease']:.3f}   (2 of 5 successful edits flipped") in printed
    assert f"  {'edit':8s} {es_edit:6.3f}" in printed and f"  {'ft':8s} {es_ft:6.3f}" in printed
    assert f"native   retention {0.75:.3f} [" in printed and "4 facts the base model knows, found in 6 tried" in printed
    # The report's cells, recomputed from the logged per-edit table, are the same numbers.
    assert cell("lora/all", "efr") == pytest.approx(logged["survival.efr"])
    assert cell("edits survive · lora/all", "survival") == pytest.approx(logged["survival.survival"])
    assert cell("native retained (known by base) · lora/all", "survival") == pytest.approx(logged["native.retention"])
    ke_only, ke_ft = cell("KE-only", "es"), cell("KE→FT · lora/all", "es")
    assert (ke_only, ke_ft) == pytest.approx((logged["edit.es"], logged["ft.es"]))
    assert (ke_only - ke_ft) / ke_only == pytest.approx(logged["survival.decrease"])
    # The per-edit table the report read is the one the metrics came from (flips included).
    assert per_edit["flipped"].tolist() == [False, True, False, True, False, False, False, False]
