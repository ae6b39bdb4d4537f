"""Edit quality on a real pretrained LLM: SmolLM2-135M-Instruct (configs/smollm2.yaml), real zsRE.

Computes the target vectors z once (they depend on neither λ nor the editor), then applies MEMIT
at several λ (edit.mom2_weight) and AlphaEdit, reverting the weights in between, and prints
ES/PS/NS per setting with the time each part took. The numbers behind the smollm2-135m row of
src/editdecay/editing/hparams.py (benchmarks/README.md).

    python benchmarks/smollm2_edit.py --records 50 [--templates 5] [--steps 25] [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50)
    ap.add_argument("--templates", type=int, default=None, help="edit.n_context_templates (default: the row's)")
    ap.add_argument("--steps", type=int, default=None, help="edit.v_num_grad_steps (default: the row's)")
    ap.add_argument("--lambdas", default="15000,5000,1500,500")
    ap.add_argument("--z-cache", default=None, help="save z here, or reuse it if the file exists (same settings)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    import torch

    from editdecay.config import load_config
    from editdecay.editing.alphaedit import AlphaEditSession
    from editdecay.editing.hparams import resolve_hparams
    from editdecay.editing.memit import MemitSession, compute_zs
    from editdecay.editing.run import edit_records, load_for_editing
    from editdecay.editing.stats import second_moments
    from editdecay.metrics.edit import evaluate_edits

    overrides = [f"edit.num_edits={args.records}", *args.overrides]
    if args.templates is not None:
        overrides.append(f"edit.n_context_templates={args.templates}")
    if args.steps is not None:
        overrides.append(f"edit.v_num_grad_steps={args.steps}")
    cfg = load_config(REPO / "configs" / "smollm2.yaml", overrides)
    records = edit_records(cfg)
    model, tokenizer = load_for_editing(cfg)
    hp = resolve_hparams(model, cfg.edit)
    print(f"smollm2-135m, {len(records)} real zsRE edits, layers {list(hp.layers)}, v_lr {hp.v_lr}, clamp "
          f"{hp.clamp_norm_factor}, wd {hp.v_weight_decay}, {hp.n_context_templates} templates, {hp.v_num_grad_steps} z steps, "
          f"stats {cfg.edit.stats.corpus} × {cfg.edit.stats.n_samples}", flush=True)
    t = time.perf_counter()
    moments = second_moments(model, tokenizer, cfg, list(hp.layers))
    t_stats = time.perf_counter() - t
    t = time.perf_counter()
    base = evaluate_edits(model, tokenizer, records, batch_size=cfg.eval.batch_size).summary
    t_eval = time.perf_counter() - t
    session = MemitSession(model, tokenizer, hp, moments)
    t = time.perf_counter()
    if args.z_cache and Path(args.z_cache).is_file():
        targets = torch.load(args.z_cache)
    else:
        targets = compute_zs(model, tokenizer, records, hp, session.templates)
        if args.z_cache:
            torch.save(targets, args.z_cache)
    t_z = time.perf_counter() - t
    print(f"stats {t_stats:.0f} s, evaluation {t_eval:.1f} s, z {t_z:.0f} s (loss {targets[1]['z.final_loss']:.3f})")
    print(f"{'editor':<10} {'lambda':>7} {'ES':>6} {'PS':>6} {'NS':>6} {'update s':>9}")
    print(f"{'base':<10} {'-':>7} {base['es']:6.1%} {base['ps']:6.1%} {base['ns']:6.1%}")
    settings = [("memit", float(lam)) for lam in args.lambdas.split(",")] + [("alphaedit", hp.mom2_weight)]
    for editor, lam in settings:
        cls = MemitSession if editor == "memit" else AlphaEditSession
        s = cls(model, tokenizer, dataclasses.replace(hp, mom2_weight=lam), moments)
        t = time.perf_counter()
        result = s.edit(records, targets)
        t_update = time.perf_counter() - t
        after = evaluate_edits(model, tokenizer, records, batch_size=cfg.eval.batch_size).summary
        result.revert(model)
        print(f"{editor:<10} {lam if editor == 'memit' else '-':>7} {after['es']:6.1%} {after['ps']:6.1%} "
              f"{after['ns']:6.1%} {t_update:9.1f}", flush=True)


if __name__ == "__main__":
    main()
