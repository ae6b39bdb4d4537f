"""Downstream accuracy: answer extraction per task format, generation and log-likelihood modes."""

from __future__ import annotations

import json

import pytest

from editdecay.errors import DataError
from editdecay.metrics.downstream import (DownstreamResult, candidates_for, evaluate_downstream, extract_answer,
                                          limit_per_task, load_ds_rows)


@pytest.mark.parametrize("task, generation, expected", [
    ("boolq", "the correct answer is true", "true"),
    ("boolq", "false. Or maybe true", "false"),  # the first match wins, as in LLM-Adapters
    ("piqa", "the correct answer is solution2</s>", "solution2"),
    ("social_i_qa", "the correct answer is answer5", "answer5"),
    ("ARC-Challenge", "answer3 is right", "answer3"),
    ("ARC-Easy", "the correct answer is answer1", "answer1"),
    ("openbookqa", "Answer: answer4", "answer4"),
    ("hellaswag", "the correct answer is answer2", "answer2"),
    ("winogrande", "the correct answer is option1", "option1"),
    ("world_kind", "the correct answer is musical instrument", "musical instrument"),
    ("world_kind", "  city or country", "city"),
    # Malformed generations: nothing to match means a wrong answer, never a crash.
    ("boolq", "", ""),
    ("boolq", "TRUE", ""),  # case-sensitive, like the original evaluation
    ("piqa", "solution 1", ""),
    ("winogrande", "the answer is option", ""),
    ("hellaswag", "the correct answer is answer5", ""),  # HellaSwag has four endings
    ("ARC-Easy", "\n\n### Response:\n", ""),
    ("world_kind", "answer", ""),
])
def test_extract_answer(task, generation, expected):
    assert extract_answer(task, generation) == expected


def test_ds_acc_is_the_mean_over_tasks():
    result = DownstreamResult(per_task={"boolq": 0.2, "piqa": 0.6}, n={"boolq": 10, "piqa": 30}, mode="loglik")
    assert result.metrics() == {"ds.acc": pytest.approx(0.4), "ds.boolq": 0.2, "ds.piqa": 0.6}


def test_unknown_task_uses_gold_family():
    assert candidates_for("mytask", "option2") == ("option1", "option2")
    assert extract_answer("mytask", "the correct answer is answer3", gold="answer1") == "answer3"
    with pytest.raises(DataError, match="unknown answer format"):
        candidates_for("mytask", "Paris")


def test_ds_rows_from_files(tmp_path, tiny_cfg):
    from editdecay.config import EvalConfig

    for task in ("boolq", "piqa"):
        (tmp_path / task).mkdir()
        (tmp_path / task / "test.json").write_text(json.dumps(
            [{"instruction": f"q{i}", "input": "", "output": "x", "answer": "true"} for i in range(5)]))
    rows = load_ds_rows(EvalConfig(ds_source="file", ds_path=str(tmp_path), ds_max_examples=2))
    assert [r["task"] for r in rows] == ["boolq", "boolq", "piqa", "piqa"]
    world = load_ds_rows(EvalConfig(ds_max_examples=3), tiny_cfg.world)
    assert len(world) == 3 and {r["task"] for r in world} == {"world_kind"}
    assert len(limit_per_task(world, None)) == 3


def test_loglik_and_generate_modes(toy_model, tiny_cfg):
    model, tok = toy_model
    rows = load_ds_rows(tiny_cfg.eval.model_copy(update={"ds_max_examples": 4}), tiny_cfg.world)
    ll = evaluate_downstream(model, tok, rows, "qa", mode="loglik", batch_size=3)
    assert set(ll.per_task) == {"world_kind"} and ll.n == {"world_kind": 4}
    assert all(p["pred"] in candidates_for(p["task"]) for p in ll.predictions)  # loglik always picks a candidate
    metrics = ll.metrics()
    assert metrics["ds.acc"] == pytest.approx(metrics["ds.world_kind"])

    model.train()
    gen = evaluate_downstream(model, tok, rows[:3], "qa", mode="generate", batch_size=3,
                              generation_kwargs={"max_new_tokens": 4})
    assert model.training  # mode restored
    assert len(gen.predictions) == 3 and all(isinstance(p["generation"], str) for p in gen.predictions)


def test_left_padded_batches_match_single_rows(toy_model, tiny_cfg):
    """Batched generation (left padding) gives what each row gives alone."""
    model, tok = toy_model
    rows = load_ds_rows(tiny_cfg.eval.model_copy(update={"ds_max_examples": 2}), tiny_cfg.world)
    kwargs = {"max_new_tokens": 6, "num_beams": 1}
    batched = evaluate_downstream(model, tok, rows, "alpaca", mode="generate", batch_size=len(rows), generation_kwargs=kwargs)
    for row, pred in zip(rows, batched.predictions):
        alone = evaluate_downstream(model, tok, [row], "alpaca", mode="generate", batch_size=1, generation_kwargs=kwargs)
        assert alone.predictions[0]["generation"] == pred["generation"]

