"""The intrinsic-knowledge control (metrics/native.py): which facts, how they are scored, retention."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from editdecay.data.records import EditRecord
from editdecay.metrics.native import evaluate_native, native_answer, native_records, native_summary


def record(i: int, subject: str, target_true: str | None = "Paris", prompt: str = "The capital of {} is") -> EditRecord:
    return EditRecord(case_id=i, subject=subject, prompt=prompt, target_new="Rome", target_true=target_true,
                      style="counterfact" if target_true else "zsre")


def test_native_records_follow_the_batch_and_skip_edited_prompts():
    data = [record(0, "A"), record(1, "B"), record(2, "A"), record(3, "C"), record(4, "D")]
    # Record 2 asks what edit 0 changes: its answer is meant to change, so it is no control.
    assert [r.case_id for r in native_records(data[:2], data[2:], 2)] == [3]
    assert [r.case_id for r in native_records(data[:2], data[2:], 10)] == [3, 4]  # the dataset runs out
    assert native_records(data, [], 10) == []


def test_native_answer_is_the_true_answer_in_both_styles():
    assert native_answer(record(0, "A")) == "Paris"
    assert native_answer(record(0, "A", target_true=None)) == "Rome"  # zsRE (MEMIT): target_new is the truth


def table(known: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({"case_id": [str(i) for i in range(len(known))], "subject": "s", "prompt": "p", "answer": "a",
                         "known": known, "top1": known, "nll": 0.5, "token_accuracy": [float(k) for k in known]})


def test_retention_counts_only_facts_the_base_model_knows():
    metrics, per_fact = native_summary({"base": table([True, True, True, False]), "edit": table([True, True, True, True]),
                                        "ftonly": table([True, False, True, True]), "ft": table([False, False, True, True])})
    assert metrics["native.n_facts"] == 4 and metrics["native.n_known"] == 3
    assert metrics["base.native.acc"] == 0.75 and metrics["ft.native.acc"] == 0.5
    assert metrics["native.retention_edit"] == 1.0
    assert metrics["native.retention_ftonly"] == pytest.approx(2 / 3)
    assert metrics["native.retention"] == pytest.approx(1 / 3)  # the unknown fact learnt by FT does not count
    assert list(per_fact.columns[:4]) == ["case_id", "subject", "prompt", "answer"]
    assert per_fact["known_ft"].tolist() == [False, False, True, True]
    # Nothing known: no denominator, NaN (not a perfect 1.0); groups not run are simply absent.
    metrics, _ = native_summary({"base": table([False, False]), "ft": table([False, True])})
    assert math.isnan(metrics["native.retention"]) and "native.retention_ftonly" not in metrics


def test_groups_must_score_the_same_facts():
    with pytest.raises(ValueError, match="native facts of group ft"):
        native_summary({"base": table([True, True]), "ft": table([True])})


def test_toy_model_knows_its_native_facts_and_noise_destroys_them(toy_model, tiny_cfg):
    from editdecay.editing.run import split_edit_dataset

    model, tokenizer = toy_model
    facts = native_records(*split_edit_dataset(tiny_cfg), tiny_cfg.eval.native_facts)
    assert len(facts) == tiny_cfg.eval.native_facts
    base = evaluate_native(model, tokenizer, facts)
    assert base["known"].mean() >= 0.9 and base["top1"].mean() >= 0.9  # the toy recalls its facts (>99 % measured)
    # CounterFact-style facts: known = the true answer beats the record's counterfactual (ES's rule, mirrored).
    assert (base["known"] == (base["nll"] < base["nll_alternative"])).all()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * p.std())
    metrics, _ = native_summary({"base": base, "ftonly": evaluate_native(model, tokenizer, facts)})
    # Noise as large as the weights: the two-answer rule falls toward its chance level of 1/2 (0.62
    # measured), the top-1 rule to 0.
    assert metrics["native.retention_ftonly"] < 0.75 and metrics["ftonly.native.top1"] < 0.1
