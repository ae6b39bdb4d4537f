"""Layer statistics: stop-at-layer equals the full pass, resume equals one pass, cache checks."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from editdecay.config import load_config
from editdecay.editing.common import EditError
from editdecay.editing.stats import Partial, StatsKey, accumulate_second_moments, load_corpus, second_moments, token_batches

from conftest import REPO


def test_token_batches_respect_the_budget_and_cover_every_text():
    lengths = [5, 17, 3, 9, 9, 30, 1]
    batches = token_batches(lengths, batch_tokens=32)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 32 or len(b) == 1 for b in batches)


def test_stop_early_equals_full_forward_and_resume_equals_one_pass(toy_model, toy_world):
    model, tok = toy_model
    texts = toy_world.corpus(epoch_seed=3)[:24]
    kw = dict(max_length=64, dtype=torch.float64, batch_tokens=384, progress=False)
    early = accumulate_second_moments(model, tok, texts, [0, 2], stop_early=True, **kw)
    full = accumulate_second_moments(model, tok, texts, [0, 2], stop_early=False, **kw)
    assert early.count == full.count > 0
    for layer in (0, 2):
        torch.testing.assert_close(early.sums[layer], full.sums[layer])
    # Interrupt after 2 batches (simulated by a checkpoint copy), then resume from it.
    saved: list[Partial] = []

    def checkpoint(state: Partial) -> None:
        if not saved:
            saved.append(Partial({k: v.clone() for k, v in state.sums.items()}, state.count, state.batches_done))

    accumulate_second_moments(model, tok, texts, [0, 2], on_checkpoint=checkpoint, save_every=2, **kw)
    assert saved and saved[0].batches_done == 2
    resumed = accumulate_second_moments(model, tok, texts, [0, 2], resume=saved[0], **kw)
    assert resumed.count == full.count
    for layer in (0, 2):
        torch.testing.assert_close(resumed.sums[layer], full.sums[layer])


def test_second_moments_are_cached_and_a_foreign_cache_file_is_refused(toy_model, tmp_path):
    model, tok = toy_model
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={tmp_path}", "edit.stats.n_samples=50",
                                                       "edit.stats.dtype=float64"])
    first = second_moments(model, tok, cfg, [1, 2], progress=False)
    files = sorted((tmp_path / "stats").rglob("layer*.safetensors"))
    assert [f.name for f in files] == ["layer1.safetensors", "layer2.safetensors"]
    assert not list((tmp_path / "stats").rglob("partial-*"))
    C = first[1]
    assert C.dtype == torch.float64 and torch.allclose(C, C.T) and torch.linalg.eigvalsh(C).min() > -1e-8
    again = second_moments(model, tok, cfg, [1], progress=False)
    assert torch.equal(again[1], C)
    # A file from another model at this path (copied, or the model changed under the same key).
    with safe_open(str(files[0]), framework="pt") as f:
        meta = dict(f.metadata())
    save_file({"mom2": C}, str(files[0]), metadata={**meta, "fingerprint": "0" * 64})
    with pytest.raises(EditError) as err:
        second_moments(model, tok, cfg, [1], progress=False)
    assert "another model" in str(err.value) and "\n" not in str(err.value)


def test_partial_sum_on_disk_is_resumed(toy_model, tmp_path):
    model, tok = toy_model
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={tmp_path}", "edit.stats.n_samples=80",
                                                       "edit.stats.batch_tokens=256", "edit.stats.save_every=1"])
    calls = {"n": 0}
    original = model.forward

    def crash_after_three(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(*a, **k)

    model.forward = crash_after_three
    with pytest.raises(KeyboardInterrupt):
        second_moments(model, tok, cfg, [1], progress=False)
    partials = list((tmp_path / "stats").rglob("partial-*.safetensors"))
    assert len(partials) == 1 and not list((tmp_path / "stats").rglob("layer*.safetensors"))
    model.forward = original
    resumed = second_moments(model, tok, cfg, [1], progress=False)[1]
    corpus = load_corpus(cfg)
    ref = accumulate_second_moments(model, tok, corpus.texts, [1], max_length=cfg.edit.stats.max_length,
                                    batch_tokens=256, progress=False)
    torch.testing.assert_close(resumed, ref.sums[1] / ref.count)
    assert not list((tmp_path / "stats").rglob("partial-*"))
    key_dirs = list((tmp_path / "stats").glob("*/*"))
    assert len(key_dirs) == 1 and "n80-len128-float32" in key_dirs[0].name
    assert isinstance(StatsKey("f", "c", 1, 2, "float32").metadata(0), dict)
