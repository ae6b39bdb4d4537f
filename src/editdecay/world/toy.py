"""The toy model: a small causal LM trained on the fact world until it really knows its facts.

``ensure_toy_model`` is the recipe, top to bottom: generate the world → train a word-level
tokenizer in-process → train a GPT-2- (or Llama-) architecture LM on the world's corpus →
measure recall → ``save_pretrained`` into a cache directory keyed by the hash of the world and
model configs. The directory is built under a temporary name and renamed when complete, under a
file lock, so concurrent trials (Ray workers) build it once and nobody sees a half-written model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from editdecay.accelerators import name_deepspeed_accelerator

name_deepspeed_accelerator()  # before transformers imports DeepSpeed, which warns when it has to guess

from filelock import FileLock  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast, get_cosine_schedule_with_warmup  # noqa: E402

from editdecay.config import ToyModelConfig, TrialConfig, WorldConfig, stable_hash
from editdecay.io import umask_tree
from editdecay.metrics.scoring import score_targets
from editdecay.world.facts import _ONSETS, _SUFFIX, _VOWELS, BOS, INSTRUMENTS, OCCUPATIONS, World

log = logging.getLogger(__name__)

# Bump when the recipe changes in a way that changes the trained model: old caches are not reused.
# 2: trained single-threaded with deterministic algorithms (bit-identical at any thread count).
# 3: the downstream task became world_kind (the vocabulary, read from every world text, changed).
RECIPE_VERSION = 3
PAD, UNK = "[PAD]", "[UNK]"


@dataclass(frozen=True)
class RecallReport:
    n_facts: int
    canonical: float  # top-1 recall of the object on the canonical template
    paraphrase: float  # ... on the other statement templates
    question: float  # ... after the zsRE-style question
    build_seconds: float
    n_parameters: int
    arch: str


# Toy fields added after recipe 3 enter the key only when set away from their default: a config that
# does not use them builds the same weights as before and keeps its cached model's key.
_KEYED_WHEN_SET = {"grad_shards": 1}


def toy_key(world_cfg: WorldConfig, toy_cfg: ToyModelConfig) -> str:
    toy = toy_cfg.model_dump(mode="json")
    for name, default in _KEYED_WHEN_SET.items():
        if toy[name] == default:
            del toy[name]
    return stable_hash({"world": world_cfg.model_dump(mode="json"), "toy": toy, "recipe": RECIPE_VERSION})


def toy_dir(cfg: TrialConfig) -> Path:
    return Path(cfg.cache_dir) / "toy" / toy_key(cfg.world, cfg.model.toy)


def ensure_toy_model(cfg: TrialConfig, force: bool = False) -> Path:
    """The toy model's directory (``from_pretrained``-loadable), built if missing."""
    final = toy_dir(cfg)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir() and not force:
            return final
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build_toy_model(cfg.world, cfg.model.toy, tmp)
            umask_tree(tmp)  # a shared cache: readable as the umask allows (safetensors writes 0600)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_report(model_dir: Path) -> RecallReport:
    path = Path(model_dir) / "recall.json"
    try:
        return RecallReport(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        from editdecay.errors import DataError

        raise DataError(f"{path} is missing or damaged; rebuild the toy model with `editdecay prepare --force`") from None


@contextmanager
def deterministic_cpu():
    """One intra-op thread and deterministic algorithms for the block, restored afterwards.

    Float sums are not associative: a matmul split over 2 or 16 threads adds in another order, and
    40 epochs of training turn last-bit differences into another model (measured before this:
    recall 99.9 % vs 100 % and every edit metric moved). One thread makes the order fixed. What
    stays machine-dependent: another CPU instruction set (AVX2 vs AVX-512 kernels) or another
    torch build may still round differently; the test checks thread counts on one machine.
    """
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)


def build_toy_model(world_cfg: WorldConfig, toy_cfg: ToyModelConfig, out_dir: Path,
                    tokenizer_builder: Callable[[World], PreTrainedTokenizerFast] | None = None) -> RecallReport:
    """``tokenizer_builder``: :func:`build_tokenizer` (the recipe) unless a benchmark asks for another."""
    start = time.perf_counter()
    world = World(world_cfg)
    tokenizer = (tokenizer_builder or build_tokenizer)(world)
    with deterministic_cpu():
        model = train_toy_model(world, tokenizer, toy_cfg)
    report = evaluate_recall(model, tokenizer, world)
    report = RecallReport(**{**asdict(report), "build_seconds": round(time.perf_counter() - start, 1)})
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "recall.json").write_text(json.dumps(asdict(report), indent=2))
    (out_dir / "world_config.json").write_text(world_cfg.model_dump_json(indent=2))
    (out_dir / "toy_config.json").write_text(toy_cfg.model_dump_json(indent=2))
    return report


def build_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the world's closed vocabulary; adds BOS like Llama's tokenizers,
    so the BOS-aware code paths are exercised offline."""
    pre = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for text in world.all_texts():
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    return _fast_tokenizer(models.WordLevel, sorted(words))


def build_subword_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """The multi-token-subject alternative (not the default recipe; benchmarks/subject_position.py):
    common words stay whole, invented names split into the syllable and suffix pieces they were
    generated from ("Maheionia" → "Ma", "##hei", "##onia"; greedy longest match, as WordPiece),
    so a subject's identity is spread over several tokens as in real LMs' sub-word vocabularies.
    Measured on the toy: its facts are still read at the prompt's last token, not the subject's."""
    pre = pre_tokenizers.Whitespace()
    names = {part for name in world.kind_of for part in name.split()} - set(OCCUPATIONS) - set(INSTRUMENTS)
    words: set[str] = set()
    for text in world.all_texts():
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    return _fast_tokenizer(models.WordPiece, sorted((words - names) | set(name_pieces())))


def name_pieces() -> list[str]:
    """Capitalised first syllables ("Zo"), later syllables and kind suffixes as continuations
    ("##ta", "##ria"), and single letters so every capitalised word splits into known pieces."""
    syllables = {onset + vowel for onset in _ONSETS for vowel in _VOWELS}
    suffixes = {suffix for kind in _SUFFIX.values() for suffix in kind if suffix}
    letters = set("abcdefghijklmnopqrstuvwxyz")
    return sorted({s.capitalize() for s in syllables | letters} | {"##" + s for s in syllables | suffixes | letters})


def _fast_tokenizer(model_type, words: list[str]) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate([PAD, UNK, BOS] + words)}
    tk = Tokenizer(model_type(vocab=vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces (and "##" pieces to their word)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=BOS, eos_token=BOS, unk_token=UNK, pad_token=PAD,
                                   model_max_length=1024)


def build_model(cfg: ToyModelConfig, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    if cfg.arch == "gpt2":
        config = GPT2Config(n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, n_positions=cfg.n_positions,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    else:
        config = LlamaConfig(num_hidden_layers=cfg.n_layer, hidden_size=cfg.n_embd, num_attention_heads=cfg.n_head,
                             num_key_value_heads=cfg.n_head, intermediate_size=4 * cfg.n_embd,
                             max_position_embeddings=cfg.n_positions, tie_word_embeddings=True, **common)
    torch.manual_seed(cfg.seed)
    return AutoModelForCausalLM.from_config(config)


def _epoch_blocks(world: World, tokenizer, epoch: int, cfg: ToyModelConfig, cache: dict[str, list[int]]) -> torch.Tensor:
    """Pack one epoch of shuffled documents into [n_blocks, n_positions] token blocks."""
    stream: list[int] = []
    for doc in world.corpus(epoch_seed=epoch, repeats=cfg.repeats):
        ids = cache.get(doc)
        if ids is None:
            ids = tokenizer(doc)["input_ids"]  # starts with BOS
        stream.extend(ids)
    n = len(stream) // cfg.n_positions
    return torch.tensor(stream[: n * cfg.n_positions], dtype=torch.long).view(n, cfg.n_positions)


def train_toy_model(world: World, tokenizer, cfg: ToyModelConfig) -> torch.nn.Module:
    model = build_model(cfg, tokenizer)
    model.train()
    cache: dict[str, list[int]] = {}
    blocks_per_epoch = _epoch_blocks(world, tokenizer, 0, cfg, cache).shape[0]
    steps_per_epoch = math.ceil(blocks_per_epoch / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = get_cosine_schedule_with_warmup(optim, int(cfg.warmup_fraction * total), total)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    params = list(model.parameters())
    pool = ThreadPoolExecutor(cfg.grad_shards, thread_name_prefix="toy-shard") if cfg.grad_shards > 1 else None
    try:
        for epoch in range(cfg.epochs):
            blocks = _epoch_blocks(world, tokenizer, epoch, cfg, cache)
            perm = torch.randperm(blocks.shape[0], generator=gen)
            for i in range(0, blocks.shape[0], cfg.batch_size):
                batch = blocks[perm[i : i + cfg.batch_size]]
                if pool is None:
                    loss = model(input_ids=batch, labels=batch).loss
                    loss.backward()
                else:
                    loss = sharded_backward(model, params, batch, cfg.grad_shards, pool)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
                step += 1
            log.info("toy model epoch %d/%d  step %d/%d  loss %.3f", epoch + 1, cfg.epochs, step, total, loss.item())
    finally:
        if pool is not None:
            pool.shutdown()
    model.eval()
    return model


def sharded_backward(model, params: list[torch.nn.Parameter], batch: torch.Tensor, shards: int,
                     pool: ThreadPoolExecutor) -> torch.Tensor:
    """Set ``p.grad`` to the gradient of the batch's mean loss, computed as ``shards`` row slices in
    parallel threads and summed in slice order; returns the loss.

    Every block has the same length, so the batch mean is the row-weighted sum of the slices' means.
    Each slice runs its ops in its own thread with torch's one intra-op thread (set by
    :func:`deterministic_cpu`, which new threads pick up), so a slice's gradient has the same bits
    whichever thread or core computes it, and the fixed summation order makes the total the same on
    1 core or 16. The threads overlap because torch releases the GIL inside its kernels.
    """
    n = batch.shape[0]
    parts = [part for part in batch.tensor_split(shards) if part.shape[0]]

    def slice_grad(part: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        loss = model(input_ids=part, labels=part).loss * (part.shape[0] / n)
        return loss.detach(), torch.autograd.grad(loss, params)

    results = list(pool.map(slice_grad, parts))
    for j, p in enumerate(params):
        grad = results[0][1][j]
        for _, grads in results[1:]:
            grad = grad + grads[j]
        p.grad = grad
    loss = results[0][0]
    for part_loss, _ in results[1:]:
        loss = loss + part_loss
    return loss


def evaluate_recall(model, tokenizer, world: World, max_facts: int | None = None, batch_size: int = 256) -> RecallReport:
    """Top-1 recall (every target token is the argmax) per prompt family."""
    facts = world.facts
    if max_facts is not None:
        facts = random.Random(0).sample(facts, min(max_facts, len(facts)))

    def recall(prompts_targets: list[tuple[str, str]]) -> float:
        scores = score_targets(model, tokenizer, [p for p, _ in prompts_targets], [t for _, t in prompts_targets], batch_size)
        return sum(s.all_correct for s in scores) / len(scores)

    canonical = recall([(f.relation.templates[0].format(f.subject), f.object) for f in facts])
    paraphrase = recall([(t.format(f.subject), f.object) for f in facts for t in f.relation.templates[1:]])
    question = recall([(f.relation.questions[0].format(f.subject), f.object) for f in facts])
    return RecallReport(n_facts=len(facts), canonical=round(canonical, 4), paraphrase=round(paraphrase, 4),
                        question=round(question, 4), build_seconds=0.0,
                        n_parameters=sum(p.numel() for p in model.parameters()), arch=model.config.model_type)
