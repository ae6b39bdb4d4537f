"""The speed work of issue 23 changes no number: each shortcut is checked against the way it replaced.

- The decay curve tokenises its prompts once (``EditEvaluator``) instead of on every evaluation.
- The smoke sweep fine-tunes without Trainer checkpoints (``finetune.save_strategy: none``): a
  small trial's per-edit table, decay curve and metrics are the same as with checkpoints.
- The toy model's batch gradient can be computed as row slices in parallel threads
  (``model.toy.grad_shards``): the same gradient up to float summation order.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from editdecay.config import load_config
from editdecay.metrics.edit import EditEvaluator, evaluate_edits

from conftest import REPO, TEST_CACHE


def test_curve_evaluator_tokenises_once_and_scores_like_a_fresh_evaluation(toy_model, toy_world):
    model, tok = toy_model
    records = toy_world.counterfact_records()[:12]
    evaluate = EditEvaluator(tok, records, batch_size=8)
    pd.testing.assert_frame_equal(evaluate(model).per_edit, evaluate_edits(model, tok, records, 8).per_edit)
    with torch.no_grad():  # a changed model (as during fine-tuning): the prepared prompts score it afresh
        model.transformer.h[1].mlp.c_proj.weight.mul_(0.5)
    again = evaluate(model)
    pd.testing.assert_frame_equal(again.per_edit, evaluate_edits(model, tok, records, 8).per_edit)
    assert again.summary == evaluate_edits(model, tok, records, 8).summary


def test_trial_without_checkpoints_has_the_same_per_edit_table_curve_and_metrics(tmp_path, toy_model_dir):
    from editdecay.pipeline.trial import UntrackedRun, trial_recipe

    cache = tmp_path / "cache"
    for shared in ("toy", "stats"):
        (TEST_CACHE / shared).mkdir(parents=True, exist_ok=True)
        cache.mkdir(exist_ok=True)
        (cache / shared).symlink_to(TEST_CACHE / shared)
    small = ["edit.num_edits=10", "finetune.max_steps=6", "finetune.curve_every=2", "eval.ds_max_examples=20",
             "tracking.curve_edits=5", "eval.native_facts=10", "eval.native_min_facts=10", f"cache_dir={cache}"]
    results = {}
    # Checkpoints every 2 steps (what save_strategy=epoch does at each epoch's end) against none; the
    # two share the edit stage and the base/edit evaluations, each fine-tunes on its own.
    for strategy in (["finetune.save_strategy=steps", "finetune.save_steps=2"], ["finetune.save_strategy=none"]):
        cfg = load_config(REPO / "configs" / "tiny.yaml", [*small, *strategy])
        results[strategy[0]] = trial_recipe(cfg, UntrackedRun())
    with_ckpt, without = results.values()
    assert with_ckpt.stage_keys["finetune.ft"] != without.stage_keys["finetune.ft"]  # really two fine-tunings
    pd.testing.assert_frame_equal(with_ckpt.per_edit, without.per_edit)
    assert with_ckpt.metrics.keys() == without.metrics.keys()
    for name, value in with_ckpt.metrics.items():
        assert value == without.metrics[name] or (math.isnan(value) and math.isnan(without.metrics[name])), name


def test_sharded_batch_gradient_is_the_batch_gradient(tiny_cfg):
    from concurrent.futures import ThreadPoolExecutor

    from editdecay.world.facts import World
    from editdecay.world.toy import _epoch_blocks, build_model, build_tokenizer, deterministic_cpu, sharded_backward

    world = World(tiny_cfg.world)
    tok = build_tokenizer(world)
    toy = tiny_cfg.model.toy
    batch = _epoch_blocks(world, tok, 0, toy, {})[:7]  # an odd batch: slices of 4 and 3 rows
    model = build_model(toy, tok)
    params = list(model.parameters())
    with deterministic_cpu():
        whole = model(input_ids=batch, labels=batch).loss
        whole.backward()
        expected = [p.grad.clone() for p in params]
        model.zero_grad(set_to_none=True)
        with ThreadPoolExecutor(2) as pool:
            loss = sharded_backward(model, params, batch, 2, pool)
    assert float(loss) == pytest.approx(float(whole), rel=1e-5)
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
