"""Per-edit ES/PS/NS in CounterFact and zsRE style on the toy model."""

from __future__ import annotations

import math

from editdecay.data.edits import convert_zsre
from editdecay.metrics.edit import evaluate_edits


def test_counterfact_metrics_before_editing(toy_model, toy_world):
    model, tok = toy_model
    records = toy_world.counterfact_records()[:30]
    ev = evaluate_edits(model, tok, records, batch_size=64)
    table = ev.per_edit
    assert len(table) == 30 and set(ev.summary) == {"es", "ps", "ns"}
    assert {"case_id", "es", "ps", "ns", "p_new", "p_true", "nll_new", "nll_true", "n_neighbors"} <= set(table.columns)
    # The model knows its facts: the true target wins everywhere before any edit.
    assert ev.summary["es"] <= 0.05 and ev.summary["ps"] <= 0.05 and ev.summary["ns"] >= 0.95
    assert (table["p_true"] > table["p_new"]).mean() >= 0.95 and table["p_true"].between(0, 1).all()
    # Neighbors that another record of the batch edits are left out of NS (their answer is meant to change).
    full = evaluate_edits(model, tok, records, batch_size=64, exclude_edited_neighbors=False)
    assert (full.per_edit["n_neighbors"] >= table["n_neighbors"]).all()
    assert full.per_edit["n_neighbors"].sum() > table["n_neighbors"].sum()


def test_zsre_style_metrics_are_token_accuracies(toy_model, toy_world):
    model, tok = toy_model
    records = convert_zsre(toy_world.zsre_rows()[:20], target="memit")
    assert all(r.target_true is None for r in records)
    ev = evaluate_edits(model, tok, records)
    table = ev.per_edit
    assert set(table["style"]) == {"zsre"}
    # MEMIT's zsRE convention edits towards the true answer, which the toy model already knows.
    assert ev.summary["es"] >= 0.95 and ev.summary["ps"] >= 0.9 and ev.summary["ns"] >= 0.9
    assert table["p_true"].isna().all() if "p_true" in table else True
    assert not math.isnan(ev.summary["ns"])
