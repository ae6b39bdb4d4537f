"""The toy model really knows its facts, is cached by config, and scoring is tokenizer-correct."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, PreTrainedTokenizerFast

from editdecay.arch import arch_for, mlp_out_weight_view
from editdecay.config import load_config
from editdecay.errors import DataError
from editdecay.metrics.scoring import encode_with_target, score_targets
from editdecay.world.facts import World
from editdecay.world.toy import ensure_toy_model, evaluate_recall, read_report, toy_dir

from conftest import REPO


def test_tiny_toy_model_recalls_its_facts(toy_model_dir):
    report = read_report(toy_model_dir)
    # The test variant is smaller than the default, but must still know its facts to be edited.
    assert report.canonical >= 0.90, report
    assert report.paraphrase >= 0.70, report
    assert report.n_facts == 262


def test_recall_is_measured_not_stored(toy_model, toy_world, toy_model_dir):
    model, tok = toy_model
    again = evaluate_recall(model, tok, toy_world)
    assert again.canonical == read_report(toy_model_dir).canonical
    # Knowledge is real: scrambling the MLP output projections destroys it.
    with torch.no_grad():
        for layer in range(model.config.n_layer):
            w = mlp_out_weight_view(model, layer)
            w.copy_(w[torch.randperm(w.shape[0])])
    assert evaluate_recall(model, tok, toy_world).canonical < 0.5


def test_cache_is_keyed_by_config_and_reused(tiny_cfg, toy_model_dir):
    assert toy_dir(tiny_cfg) == toy_model_dir
    stamp = (toy_model_dir / "recall.json").stat().st_mtime_ns
    assert ensure_toy_model(tiny_cfg) == toy_model_dir
    assert (toy_model_dir / "recall.json").stat().st_mtime_ns == stamp  # not rebuilt
    other = load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={tiny_cfg.cache_dir}", "world.seed=1"])
    assert toy_dir(other) != toy_model_dir
    assert json.loads((toy_model_dir / "world_config.json").read_text()) == tiny_cfg.world.model_dump(mode="json")


def test_tokenizer_adds_bos_and_roundtrips(toy_model):
    _, tok = toy_model
    ids = tok("The capital of")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.pad_token_id != tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "The capital of"


def test_subword_tokenizer_splits_names_and_covers_the_world(toy_world):
    """The multi-token-subject alternative (benchmarks/subject_position.py): invented names in
    syllable pieces, common words whole, nothing unknown, names decode back to themselves."""
    from editdecay.world.toy import build_subword_tokenizer

    tok = build_subword_tokenizer(toy_world)
    assert all(tok.unk_token_id not in tok(text)["input_ids"] for text in toy_world.all_texts())
    for kind in ("country", "city", "company", "person"):
        for name in toy_world.entities[kind]:
            pieces = tok.tokenize(name)
            assert len(pieces) >= 2 and tok.decode(tok(name, add_special_tokens=False)["input_ids"]) == name, pieces
    assert tok.tokenize("The capital of") == ["The", "capital", "of"]
    assert tok.tokenize(toy_world.entities["occupation"][0]) == [toy_world.entities["occupation"][0]]


def test_llama_variant_builds_and_loads(tmp_path):
    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"cache_dir={tmp_path}", "model.toy.arch=llama", "model.toy.epochs=1", "model.toy.n_layer=2",
        "model.toy.n_embd=64", "world.n_countries=8", "world.n_people=8", "world.n_companies=4", "world.n_downstream=40"])
    path = ensure_toy_model(cfg)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and arch_for(model).mlp_out == "mlp.down_proj"
    assert (path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("toy/*.tmp-*"))  # built under a temporary name, then renamed


@pytest.fixture(scope="module")
def byte_level_bpe():
    """A GPT-2-style byte-level BPE tokenizer trained in-process: ' Paris' carries its space."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    texts = ["The capital of France is Paris.", "The capital of Italy is Rome.", "Paris is in France."] * 20
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def test_target_tokens_found_by_offsets_for_byte_level_bpe(byte_level_bpe):
    tok = byte_level_bpe
    ids, n_target = encode_with_target(tok, "The capital of France is", "Paris")
    assert ids[-n_target:] == tok(" Paris")["input_ids"]
    assert tok.decode(ids[:-n_target]) == "The capital of France is"
    with pytest.raises(DataError, match="tokenises to nothing"):
        encode_with_target(tok, "The capital of France is", "   ")


def test_scoring_is_padding_invariant(byte_level_bpe):
    tok = byte_level_bpe
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok)))
    prompts = ["The capital of France is", "Paris is in", "The capital of Italy is"]
    targets = ["Paris", "France", "Rome"]
    batched = score_targets(model, tok, prompts, targets, batch_size=3)
    single = [score_targets(model, tok, [p], [t], batch_size=1)[0] for p, t in zip(prompts, targets)]
    for b, s in zip(batched, single):
        assert b.nll == pytest.approx(s.nll, abs=1e-5) and b.token_correct == s.token_correct


def test_toy_build_is_bit_identical_at_any_thread_count(tmp_path):
    """The same world and config give the same weights whether torch runs 1 or 2 threads (a short
    build: 1 epoch; the determinism does not depend on how long it trains), with the batch gradient
    in one pass and in 2 parallel slices (``model.toy.grad_shards``)."""
    import hashlib
    import os
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        "from pathlib import Path\n"
        "from editdecay.config import load_config\n"
        "from editdecay.world.toy import build_toy_model\n"
        "for shards in (1, 2):\n"
        f"    cfg = load_config({str(REPO / 'configs' / 'tiny.yaml')!r}, ['model.toy.epochs=1', f'model.toy.grad_shards={{shards}}'])\n"
        "    build_toy_model(cfg.world, cfg.model.toy, Path(sys.argv[2]) / str(shards))\n"
    )
    digests: dict[int, list[str]] = {1: [], 2: []}
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-c", script, str(threads), str(out)], check=True, env=env, timeout=600)
        for shards in (1, 2):
            digests[shards].append(hashlib.sha256((out / str(shards) / "model.safetensors").read_bytes()).hexdigest())
    assert digests[1][0] == digests[1][1] and digests[2][0] == digests[2][1]
    assert digests[1][0] != digests[2][0]  # the slices really ran (their float sums differ in the last bits)


def test_new_toy_fields_enter_the_key_only_when_set(tiny_cfg):
    """A config that does not use ``grad_shards`` keeps the key (and cached model) it had before."""
    from editdecay.world.toy import toy_key

    default = toy_key(tiny_cfg.world, tiny_cfg.model.toy)
    assert default == toy_key(tiny_cfg.world, tiny_cfg.model.toy.model_copy(update={"grad_shards": 1}))
    assert default != toy_key(tiny_cfg.world, tiny_cfg.model.toy.model_copy(update={"grad_shards": 2}))
