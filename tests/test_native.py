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


def test_native_records_follow_the_batch_and_skip_edited_subjects():
    data = [record(0, "A"), record(1, "B"), record(2, "A"), record(3, "C"), record(4, "D"), record(5, "E")]
    # Record 2 asks what edit 0 changes: its answer is meant to change, so it is no control.
    assert [r.case_id for r in native_records(data[:2], data[2:], 2)] == [3, 4]
    assert [r.case_id for r in native_records(data[:2], data[2:], 10)] == [3, 4, 5]  # the dataset runs out
    assert native_records(data, [], 10) == []


def zsre(i, subject: str, question: str, answer: str, paraphrase: str | None = None, loc: str = "nq question: who sang it",
         loc_answer: str = "Abba") -> EditRecord:
    """A zsRE record as the MEMIT convention reads it (target_new is the true answer)."""
    return EditRecord(case_id=i, subject=subject, prompt=question.replace(subject, "{}", 1), target_new=answer,
                      paraphrase_prompts=[paraphrase or question.replace("What", "Which")],
                      neighborhood_prompts=[loc + "?"], neighborhood_answers=[loc_answer], style="zsre")


def test_pool_is_disjoint_by_subject_fact_paraphrase_probe_and_finetuning_data():
    from editdecay.metrics.native import native_pool

    batch = [zsre(0, "Panzer 58", "Which country made Panzer 58?", "Switzerland"),
             zsre(1, "Leedstown", "What class is USS Leedstown?", "Bayfield class"),
             # CounterFact style: Veloria's capital is edited
             EditRecord(case_id=2, subject="Veloria", prompt="The capital of {} is", target_new="Rome", target_true="Paris",
                        neighborhood_prompts=["The capital of Soton is"], neighborhood_answers=["Paris"])]
    candidates = {
        # zsRE repeats a subject with another question (and case or spacing does not hide it)
        "zsre_repeat": zsre(10, "Panzer 58", "Which company built Panzer 58?", "Bern Works"),
        "spelling": zsre(11, "panzer  58", "Who designed panzer  58?", "Hans Meier"),
        # CounterFact shares subjects between relations
        "cf_shared": EditRecord(case_id=12, subject="Veloria", prompt="The language of {} is", target_new="Dutch",
                                target_true="French"),
        # the edited fact again, under a longer name of the subject (same answer)
        "same_fact": zsre(13, "Panzer 58 tank", "Which country made the Panzer 58 tank?", "Switzerland"),
        # an edit's question, asked with another subject string (another answer)
        "same_question": zsre(14, "USS Leedstown", "What class is USS Leedstown?", "attack transport"),
        # asks about an edited subject inside a question about someone else
        "mentions_edit": zsre(15, "Hans Meier", "Which army did Hans Meier supply with Panzer 58?", "Swiss Army"),
        # one of the edits' neighborhood probes: NS measures what the edit does to it
        "probe": EditRecord(case_id=16, subject="Soton", prompt="The capital of {} is", target_new="Rome",
                            target_true="Paris"),
        # a question the fine-tuning data teaches ("nq question:" prefix, case and "?" do not hide it)
        "finetune": zsre(17, "Respect", "Who wrote the song Respect?", "Otis Redding"),
        # shares only an answer with an edit: another fact, a fine control
        "clean_shared_answer": zsre(18, "Mowag Piranha", "Which country made Mowag Piranha?", "Switzerland"),
        "clean": EditRecord(case_id=19, subject="Groustaecorp", prompt="The headquarters of {} are in",
                            target_new="Soton", target_true="Kriport"),
        "edited_itself": batch[0],  # a record of the batch is never its own control
    }
    pool = native_pool(batch, list(candidates.values()), ["NQ question: Who wrote the song Respect"])
    assert [r.case_id for r in pool.candidates] == [18, 19]
    assert pool.excluded == {"subject": 3, "subject_answer": 1, "paraphrase": 2, "probe": 1, "finetune": 1}
    # One at a time: each exclusion comes from the rule it names.
    from editdecay.metrics.native import EditedFacts

    edited = EditedFacts(batch, ["NQ question: Who wrote the song Respect"])
    reasons = {name: edited.overlap(r) for name, r in candidates.items()}
    assert reasons == {"zsre_repeat": "subject", "spelling": "subject", "cf_shared": "subject",
                       "same_fact": "subject_answer", "same_question": "paraphrase", "mentions_edit": "paraphrase",
                       "probe": "probe", "finetune": "finetune", "clean_shared_answer": None, "clean": None,
                       "edited_itself": "subject"}


def test_neighborhood_probes_become_zsre_style_facts_once():
    from editdecay.metrics.native import neighborhood_facts

    a = zsre(0, "Panzer 58", "Which country made Panzer 58?", "Switzerland", loc="nq question: who sang dancing queen")
    b = zsre(1, "Fimpen", "Who directed Fimpen?", "Bo Widerberg", loc="nq question: who sang dancing queen")
    (fact,) = neighborhood_facts([a, b])
    assert fact.rewrite_prompt == "nq question: who sang dancing queen?" and native_answer(fact) == "Abba"
    assert fact.style == "zsre" and fact.case_id == "nb:0:0"


def test_select_known_takes_the_first_known_in_order_whatever_the_chunk():
    from editdecay.metrics.native import select_known

    facts = [record(i, f"S{i}") for i in range(10)]
    knows = {2, 3, 5, 8}
    calls = []

    def known(part):
        calls.append(len(part))
        return [int(r.case_id) in knows for r in part]

    for chunk in (1, 3, 64):
        found, tried = select_known(facts, known, 3, chunk=chunk)
        assert [r.case_id for r in found] == [2, 3, 5] and tried == 6
    calls.clear()
    found, tried = select_known(facts, known, 3, chunk=4)
    assert calls == [4, 4]  # stops scoring once enough are known
    found, tried = select_known(facts, known, 9, chunk=4)
    assert [r.case_id for r in found] == [2, 3, 5, 8] and tried == 10  # the pool is exhausted


def test_too_few_known_facts_make_the_control_missing_never_zero_or_one():
    from editdecay.metrics.native import NativeControl

    facts = [record(i, f"S{i}") for i in range(4)]
    short = NativeControl(facts, tried=400, pool=400, wanted=50, minimum=20, excluded={"subject": 12})
    assert "knows 4 of the 400 candidate facts tried" in short.missing and "eval.native_min_facts=20" in short.missing
    assert short.facts == []  # nothing to score: no retention is computed, so none can read as 0 or 1
    assert short.metrics() == {"native.n_found": 4.0, "native.n_tried": 400.0, "native.n_pool": 400.0,
                               "native.excluded.subject": 12.0}
    enough = NativeControl(facts, tried=9, pool=400, wanted=4, minimum=4)
    assert enough.missing is None and enough.facts == facts
    assert NativeControl([], 0, 0, 0, 20).missing == "eval.native_facts is 0"


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
    # The 95 % Wilson interval of 1 of 3 (statsmodels' proportion_confint gives the same numbers).
    assert (metrics["native.retention_ci_low"], metrics["native.retention_ci_high"]) == pytest.approx((0.0615, 0.7923),
                                                                                                     abs=1e-4)
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
