"""Toy-model benchmark: build time and recall of the default toy model, from scratch.

Also measures training throughput (useful, non-pad tokens per second) of our packed-block
training against the obvious baseline, one padded sentence per row, over the same sentences in
the same run, and prints the ratio; and the packed training step with the batch gradient in one
pass on one thread against ``grad_shards`` row slices in parallel threads (the recipe's
``model.toy.grad_shards``), same blocks, same run, under :func:`deterministic_cpu` as the build.

    python benchmarks/toy_model.py                    # configs/toy.yaml, built in a temp dir
    python benchmarks/toy_model.py configs/tiny.yaml  # the test-suite variant
    python benchmarks/toy_model.py --speed-only       # only the throughput comparisons, no build
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from editdecay.config import load_config
from editdecay.world.facts import World
from editdecay.world.toy import _epoch_blocks, build_model, build_tokenizer, ensure_toy_model, read_report

REPO = Path(__file__).resolve().parents[1]


def throughput(model, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Useful tokens per second over the given (input_ids, attention_mask) batches."""
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    useful = 0
    start = time.perf_counter()
    for ids, mask in batches:
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        useful += int(mask.sum())
    return useful / (time.perf_counter() - start)


def sharded_throughput(model, batches: list[torch.Tensor], shards: int) -> float:
    """Tokens per second of the recipe's training step (grad_shards slices in threads when > 1)."""
    from concurrent.futures import ThreadPoolExecutor

    from editdecay.world.toy import deterministic_cpu, sharded_backward

    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    params = list(model.parameters())
    model.train()
    with deterministic_cpu(), ThreadPoolExecutor(max(shards, 1)) as pool:
        start = time.perf_counter()
        for batch in batches:
            if shards > 1:
                sharded_backward(model, params, batch, shards, pool)
            else:
                model(input_ids=batch, labels=batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            optim.zero_grad(set_to_none=True)
        return sum(b.numel() for b in batches) / (time.perf_counter() - start)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--speed-only"]
    speed_only = len(args) < len(sys.argv) - 1
    config = args[0] if args else str(REPO / "configs" / "toy.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [f"cache_dir={tmp}"])
        print(f"config {config}: world {cfg.world.n_countries}/{cfg.world.n_people}/{cfg.world.n_companies}, "
              f"model {cfg.model.toy.arch} {cfg.model.toy.n_layer}x{cfg.model.toy.n_embd}, {cfg.model.toy.epochs} epochs, "
              f"batch {cfg.model.toy.batch_size}, {torch.get_num_threads()} threads")
        if not speed_only:
            t0 = time.perf_counter()
            report = read_report(ensure_toy_model(cfg))
            print(f"build        {time.perf_counter() - t0:7.1f} s   ({report.n_facts} facts, "
                  f"{report.n_parameters / 1e6:.2f}M params; grad_shards {cfg.model.toy.grad_shards})")
            print(f"recall       canonical {report.canonical:.1%}   paraphrase {report.paraphrase:.1%}   "
                  f"question {report.question:.1%}")

        world = World(cfg.world)
        tok = build_tokenizer(world)
        toy = cfg.model.toy
        n_steps = 20
        blocks = _epoch_blocks(world, tok, 0, toy, {})[: n_steps * toy.batch_size]
        packed = [(b, torch.ones_like(b)) for b in blocks.split(toy.batch_size)]
        # Baseline: the same number of rows, one sentence per row, padded to the longest in the batch.
        sentences = world.statement_sentences()[: n_steps * toy.batch_size]
        padded = []
        for i in range(0, len(sentences), toy.batch_size):
            enc = tok(sentences[i : i + toy.batch_size], padding=True, return_tensors="pt")
            padded.append((enc["input_ids"], enc["attention_mask"]))
        torch.manual_seed(0)
        ours = throughput(build_model(toy, tok), packed)
        torch.manual_seed(0)
        base = throughput(build_model(toy, tok), padded)
        print(f"train tok/s  packed {ours:,.0f}   padded-per-sentence baseline {base:,.0f}   ratio {ours / base:.2f}x")
        shards = max(toy.grad_shards, 2)
        steps = blocks[: (blocks.shape[0] // toy.batch_size) * toy.batch_size].split(toy.batch_size)
        torch.manual_seed(0)
        one = sharded_throughput(build_model(toy, tok), list(steps), 1)
        torch.manual_seed(0)
        sliced = sharded_throughput(build_model(toy, tok), list(steps), shards)
        print(f"build step   1 thread {one:,.0f} tok/s   {shards} slices in {shards} threads {sliced:,.0f} tok/s   "
              f"ratio {sliced / one:.2f}x  (deterministic_cpu, as the build)")


if __name__ == "__main__":
    main()
