"""A trial stores deltas, adapters and trained blocks, not model copies, and loads the base once.

The per-edit table of a trial (in-memory: base → deltas → adapter / trained blocks → revert) is
compared, exactly, with a direct computation the way the old design did it: the edited model saved
with ``save_pretrained`` and reloaded, fine-tuning started from that saved directory, the fine-tuned
model loaded back from disk. Same config, same seed; a difference of one ulp fails the test.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch

from editdecay.config import load_config
from editdecay.pipeline.trial import UntrackedRun, trial_recipe

from conftest import REPO, TEST_CACHE

SMALL = ["edit.num_edits=20", "finetune.max_steps=12", "finetune.curve_every=4", "eval.ds_max_examples=40",
         "tracking.curve_edits=10"]
SETTINGS = {"lora": ["finetune.method=lora"],
            "full_edited": ["finetune.method=full", "finetune.deepspeed=none", "finetune.layers=edited"]}


def direct_per_edit(cfg, work: Path) -> pd.DataFrame:
    """ES/PS/NS of the four groups computed from saved models, as the pre-0.4 trial did."""
    from editdecay.editing.run import apply_edits, edit_records
    from editdecay.finetune.run import finetune, load_finetuned
    from editdecay.metrics.edit import evaluate_edits
    from editdecay.models import load_model, resolve_model_path

    base_dir = resolve_model_path(cfg)
    records = edit_records(cfg)
    evaluate = lambda m, t: evaluate_edits(m, t, records, cfg.eval.batch_size).per_edit  # noqa: E731
    model, tok = load_model(cfg.model, base_dir)
    tables = {"base": evaluate(model, tok)}
    hp, _ = apply_edits(cfg, model, tok, records, progress=False)
    model.save_pretrained(work / "edited", safe_serialization=True)
    tok.save_pretrained(work / "edited")
    tables["edit"] = evaluate(*load_model(cfg.model, work / "edited"))
    curve_tok = copy.deepcopy(tok)
    curve = lambda m: evaluate_edits(m, curve_tok, records[: cfg.tracking.curve_edits], cfg.eval.batch_size).summary  # noqa: E731
    for group, start, curve_fn in (("ftonly", base_dir, None), ("ft", work / "edited", curve)):
        finetune(cfg, start, work / group, evaluate_fn=curve_fn, edited_layers=list(hp.layers))
        tables[group] = evaluate(*load_finetuned(work / group, start, cfg.model))
    return tables


@pytest.mark.slow
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_trial_per_edit_table_equals_the_saved_model_computation(setting, tmp_path, toy_model_dir, monkeypatch):
    import editdecay.models as models

    # Its own stage cache (every stage built by this trial), the layer statistics of the shared one.
    (tmp_path / "cache").mkdir()
    (TEST_CACHE / "stats").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "stats").symlink_to(TEST_CACHE / "stats")
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={tmp_path / 'cache'}", *SMALL, *SETTINGS[setting]])
    loads = []
    real_load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a[1:]) or real_load(*a, **k))
    # The toy model's build lives in the shared test cache; this trial's stages in its own.
    monkeypatch.setattr(models, "resolve_model_path", lambda c: str(toy_model_dir))
    result = trial_recipe(cfg, UntrackedRun())
    assert len(loads) == 1, f"the trial loaded weights {len(loads)} times: {loads}"
    assert sorted(result.cache_misses) == sorted(["eval", "native", "z", "edit", "eval", "finetune", "eval", "finetune", "eval"])

    # What the stages hold: deltas and records, an adapter or the trained blocks; no model copy.
    stages = tmp_path / "cache" / "stages"
    assert not list(stages.rglob("model.safetensors")) and not list(stages.rglob("config.json"))
    (edit_dir,) = [p for p in (stages / "edit").iterdir() if p.is_dir()]
    assert {p.name for p in edit_dir.iterdir()} >= {"deltas.safetensors", "edit.json", "records.jsonl", "stage.json"}
    kept = "adapter/adapter_model.safetensors" if setting == "lora" else "blocks.safetensors"
    ft_dirs = [p for p in (stages / "finetune").iterdir() if p.is_dir()]
    assert len(ft_dirs) == 2 and all((p / "run" / kept).is_file() for p in ft_dirs)

    monkeypatch.setattr(models, "load_model", real_load)
    tables = direct_per_edit(cfg, tmp_path / "direct")
    for group, table in tables.items():
        got = result.per_edit[["case_id", f"es_{group}", f"ps_{group}", f"ns_{group}"]]
        want = table[["case_id", "es", "ps", "ns"]].rename(columns={m: f"{m}_{group}" for m in ("es", "ps", "ns")})
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True)


@pytest.mark.parametrize("method", ["dora", "full_zero2"])
def test_finetuning_an_in_memory_model_gives_it_back_bit_for_bit(method, tmp_path, toy_model):
    """PEFT layers are unloaded, requires_grad and mode restored; DeepSpeed trains a copy."""
    from editdecay.finetune.run import apply_finetuned, finetune

    model, tok = toy_model
    original = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    ft = ["finetune.method=dora"] if method == "dora" else ["finetune.method=full", "finetune.deepspeed=zero2",
                                                            "finetune.layers=[1]"]
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={TEST_CACHE}", "finetune.max_steps=2", *ft])
    result = finetune(cfg, None, tmp_path / "ft", model=model, tokenizer=tok, weights="blocks")
    assert result.metrics["steps"] == 2
    assert dict(model.state_dict()).keys() == original.keys()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags and not model.training
    # The stage's file derives the fine-tuned model in memory, and takes it out again.
    tuned, restore = apply_finetuned(model, tmp_path / "ft")
    changed = [k for k, v in tuned.state_dict().items() if k in original and not torch.equal(v, original[k])]
    assert changed or method == "dora"  # DoRA adds its own parameters; full FT rewrites block 1
    restore()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
