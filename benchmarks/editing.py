"""Editing-engine speed: edits/s (batched z vs the reference's one-request loop) and statistics
tokens/s (stop at the last needed layer vs a full forward pass), measured in one run.

    python benchmarks/editing.py            # CPU, ~3-5 min on 2 cores
    python benchmarks/editing.py --quick    # a smoke run

Models are random-init GPT-2-architecture models over the default fact world's tokenizer (1,060
facts, so 1,000 distinct edits exist); random weights cost the same to edit as trained ones and
never stop z early, so every request runs every step (the worst case, equal for both designs).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time

import torch
from transformers import AutoModelForCausalLM, GPT2Config

from editdecay.config import WorldConfig
from editdecay.editing.hparams import EditHparams
from editdecay.editing.memit import compute_zs, context_templates
from editdecay.editing.registry import get_editor
from editdecay.editing.stats import accumulate_second_moments
from editdecay.world.facts import World
from editdecay.world.toy import build_tokenizer


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_gpt2(vocab: int, n_layer: int, width: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_embd=width, n_layer=n_layer, n_head=4, n_positions=256,
                     bos_token_id=2, eos_token_id=2, pad_token_id=0)
    return AutoModelForCausalLM.from_config(cfg).to(device).eval()


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def bench_edits(model, tok, records, counts, loop_counts, steps: int) -> None:
    hp = EditHparams(layers=(1, 2), mom2_weight=3000.0, v_num_grad_steps=steps, v_lr=0.5, clamp_norm_factor=4.0,
                     v_weight_decay=0.05, n_context_templates=5, context_template_length=6, fact_token="last")
    texts = World(WorldConfig()).corpus(epoch_seed=0)
    C = accumulate_second_moments(model, tok, texts[:400], list(hp.layers), progress=False)
    moments = {layer: s / C.count for layer, s in C.sums.items()}
    templates = context_templates(model, tok, hp.n_context_templates, hp.context_template_length)
    print(f"\n## Edits per second (MEMIT, {steps} z steps, layers {list(hp.layers)}, {len(templates)} templates)")
    print(f"ours: up to {hp.z_batch_size} requests per forward/backward, blocks up to the z layer computed once;")
    print("reference design: one request per forward/backward, the whole model every step")
    print(f"{'edits':>6} {'ours z s':>12} {'reference z s':>10} {'z speedup':>10} {'full edit s':>12} {'edits/s':>9}")
    for n in counts:
        batch = records[:n]
        _, t_batched = timed(lambda: compute_zs(model, tok, batch, hp, templates))
        t_loop = None
        if n in loop_counts:  # the reference's design: one request per forward/backward, no prefix reuse
            one = dataclasses.replace(hp, z_batch_size=1, reuse_prefix=False)
            _, t_loop = timed(lambda: compute_zs(model, tok, batch, one, templates))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        result, t_edit = timed(lambda: get_editor("memit", hp).edit(model, tok, batch, moments))
        result.revert(model)
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        loop = f"{t_loop:10.2f} {t_loop / t_batched:9.1f}x" if t_loop else f"{'-':>10} {'-':>10}"
        print(f"{n:6d} {t_batched:12.2f} {loop} {t_edit:12.2f} {n / t_edit:9.1f}   peak RSS {peak_rss_mb():.0f} MB")


def bench_stats(model, tok, layers: list[int], n_texts: int) -> None:
    texts = World(WorldConfig()).corpus(epoch_seed=1)[:n_texts]
    print(f"\n## Statistics: layers {layers} of a {model.config.n_layer}-layer model, {len(texts)} texts")
    rates = {}
    accumulate_second_moments(model, tok, texts[:20], layers, progress=False)  # warm-up
    for stop in (True, False):
        state, t = timed(lambda: accumulate_second_moments(model, tok, texts, layers, stop_early=stop, progress=False,
                                                           batch_tokens=8192))
        rates[stop] = state.count / t
        print(f"  {'stop at layer ' + str(max(layers)) if stop else 'full forward':>18}: {state.count} tokens in "
              f"{t:.2f} s = {rates[stop]:,.0f} tokens/s   peak RSS {peak_rss_mb():.0f} MB")
    print(f"  stop-at-layer speedup: {rates[True] / rates[False]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    world = World(WorldConfig())
    tok = build_tokenizer(world)
    records = world.counterfact_records()
    print(f"# editing benchmark on {args.device}: {len(records)} world facts, vocab {len(tok)}, torch {torch.__version__}")
    model = random_gpt2(len(tok), 4, 128, args.device)
    if args.quick:
        bench_edits(model, tok, records, counts=[10], loop_counts=[10], steps=3)
        bench_stats(random_gpt2(len(tok), 12, 256, args.device), tok, [3, 4, 5], 100)
        return
    bench_edits(model, tok, records, counts=[10, 100, 1000], loop_counts=[10, 100], steps=10)
    bench_stats(random_gpt2(len(tok), 12, 256, args.device), tok, [3, 4, 5], 1000)


if __name__ == "__main__":
    main()
