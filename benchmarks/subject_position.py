"""Where does the toy model read a fact: at the subject's last token (as MEMIT assumes for real
LMs) or at the prompt's last token? Measured for the default word-level tokenizer (one token per
country/city/company name) and for the sub-word alternative (names split into syllable pieces,
``build_subword_tokenizer``), on the same world and model config.

    python benchmarks/subject_position.py                           # configs/tiny.yaml, ~10-15 min on 2 busy cores
    python benchmarks/subject_position.py --config configs/toy.yaml --edits 100 1000

Per tokenizer: recall; a swap test per block (replace block l's output at one position of a
prompt about subject A by its output at the same position of the same relation's prompt about B;
"-> B" is how often the first answer token becomes B's object's: 100 % means the fact is read
from that position's state at that block); ROME-style causal tracing of the MLP at the subject's
last token (``trace_mlp``, window 1); MEMIT ES/PS/NS with fact_token subject_last and last.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from editdecay.config import load_config  # noqa: E402
from editdecay.editing.common import encode, fill, hidden_of, hooks, replace_hidden  # noqa: E402
from editdecay.editing.hparams import resolve_hparams  # noqa: E402
from editdecay.editing.registry import get_editor, run_edits  # noqa: E402
from editdecay.editing.stats import second_moments  # noqa: E402
from editdecay.editing.trace import trace_mlp  # noqa: E402
from editdecay.metrics.edit import evaluate_edits  # noqa: E402
from editdecay.world.facts import RELATIONS, World  # noqa: E402
from editdecay.world.toy import build_subword_tokenizer, build_toy_model, ensure_toy_model, read_report, toy_key  # noqa: E402


def subword_model(cfg) -> Path:
    """The same recipe with the sub-word tokenizer, cached beside (never instead of) the default."""
    final = Path(cfg.cache_dir) / "toy-subword" / toy_key(cfg.world, cfg.model.toy)
    if not final.is_dir():
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_toy_model(cfg.world, cfg.model.toy, tmp, tokenizer_builder=build_subword_tokenizer)
        tmp.rename(final)
    return final


@torch.no_grad()
def swap_rates(model, tok, world: World, fact_token: str, pairs_per_relation: int = 15) -> list[float]:
    rng = random.Random(0)
    pairs = []
    for rel in RELATIONS:
        facts = world.facts_of(rel.relation_id)
        for _ in range(pairs_per_relation):
            a, b = rng.sample(facts, 2)
            if a.object != b.object:
                pairs.append((a, b))
    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    rates = []
    for block in blocks:
        flips = 0
        for a, b in pairs:
            ea = encode(tok, *fill(a.relation.templates[0], a.subject), fact_token=fact_token)
            eb = encode(tok, *fill(b.relation.templates[0], b.subject), fact_token=fact_token)
            kept = {}

            def grab(_m, _i, out):
                kept["h"] = hidden_of(out)[0, eb.lookup].clone()

            def put(_m, _i, out):
                h = hidden_of(out).clone()
                h[0, ea.lookup] = kept["h"]
                return replace_hidden(out, h)

            with hooks([block.register_forward_hook(grab)]):
                model(torch.tensor([eb.ids]))
            with hooks([block.register_forward_hook(put)]):
                top = int(model(torch.tensor([ea.ids])).logits[0, -1].argmax())
            flips += top == tok(" " + b.object, add_special_tokens=False)["input_ids"][0]
        rates.append(flips / len(pairs))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    ap.add_argument("--edits", type=int, nargs="+", default=[100])
    ap.add_argument("--subject-layers", default="[0,1]", help="edit.layers for the subject_last rows")
    ap.add_argument("overrides", nargs="*", help="extra config overrides, key=value")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = load_config(args.config, args.overrides)
    world = World(cfg.world)
    records = world.counterfact_records()
    for name, model_dir in (("word-level", ensure_toy_model(cfg)), ("sub-word", subword_model(cfg))):
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        r = read_report(model_dir)
        per_subject = sum(len(tok.tokenize(f.subject)) for f in world.facts) / len(world.facts)
        print(f"# {name} tokenizer ({model_dir}): {per_subject:.2f} tokens per subject, recall canonical "
              f"{r.canonical:.1%} paraphrase {r.paraphrase:.1%}, built in {r.build_seconds:.0f} s", flush=True)
        for fact_token in ("subject_last", "last"):
            rates = swap_rates(model, tok, world, fact_token)
            print(f"  swap at {fact_token:>12}: " + "  ".join(f"block {i} -> B {x:4.0%}" for i, x in enumerate(rates)), flush=True)
        trace = trace_mlp(model, tok, records[:40], window=1, n_noise=5)
        print(f"  trace (MLP at subject last, window 1, 40 records): p clean {trace.clean_prob:.3f}, corrupted "
              f"{trace.corrupted_prob:.3f}, indirect effect " + " ".join(f"{x:+.3f}" for x in trace.indirect_effect), flush=True)
        for fact_token, layers in (("subject_last", args.subject_layers), ("last", None)):
            for n in args.edits:
                ov = [*args.overrides, "edit.method=memit", f"edit.num_edits={n}", f"edit.fact_token={fact_token}"]
                ov += [f"edit.layers={layers}"] if layers else []
                run_cfg = load_config(args.config, ov)
                model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
                hp = resolve_hparams(model, run_cfg.edit)
                moments = second_moments(model, tok, run_cfg, list(hp.layers), progress=False)
                batch = records[:n]
                t0 = time.perf_counter()
                run_edits(get_editor("memit", hp), model, tok, batch, moments, run_cfg.edit.chunk_size)
                s = evaluate_edits(model, tok, batch, run_cfg.eval.batch_size).summary
                print(f"  memit {n:5d} edits, {fact_token:>12} layers {list(hp.layers)} λ {hp.mom2_weight:g}: "
                      f"ES {s['es']:.1%} PS {s['ps']:.1%} NS {s['ns']:.1%} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
