"""Does fine-tuning teach the toy's downstream task, and what does it cost the model's own facts?

For each fine-tuning setting, the project's own ``finetune`` (the recipe a trial runs) trains the
unedited toy model; every ``--every`` steps the model is measured on the downstream test rows (DS,
``eval.ds_*`` of the config) and on the world's facts (top-1 recall on the canonical prompt of
``--facts`` facts, the same measure as the toy build's recall report). Step 0 is the base model.

    python benchmarks/downstream_task.py [CONFIG] [--methods lora full] [--layers all edited non_edited]
        [--steps 80] [--every 20] [--seeds 0 1] [--facts 300] [key=value ...]

The config (default configs/toy.yaml) builds the toy model on first use. Full fine-tuning runs as
in a trial (DeepSpeed ZeRO-2 on CPU unless ``finetune.deepspeed=none``).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(REPO / "configs" / "toy.yaml"))
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--methods", nargs="+", default=["lora", "full"])
    parser.add_argument("--layers", nargs="+", default=["all"])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--facts", type=int, default=300, help="facts whose recall is tracked")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from editdecay.config import load_config
    from editdecay.finetune.run import finetune
    from editdecay.metrics.downstream import evaluate_configured
    from editdecay.metrics.scoring import score_targets
    from editdecay.models import load_model, resolve_model_path
    from editdecay.world.facts import World

    base_cfg = load_config(args.config, args.overrides)
    model_dir = resolve_model_path(base_cfg)
    model, tokenizer = load_model(base_cfg.model, model_dir)
    world = World(base_cfg.world)
    facts = random.Random(0).sample(world.facts, min(args.facts, len(world.facts)))
    prompts = [f.relation.templates[0].format(f.subject) for f in facts]
    objects = [f.object for f in facts]

    def measure(cfg, m) -> dict[str, float]:
        ds = evaluate_configured(cfg, m, tokenizer)
        recall = score_targets(m, tokenizer, prompts, objects, cfg.eval.batch_size)
        return {"ds": ds.acc, "recall": sum(s.all_correct for s in recall) / len(recall)}

    with torch.no_grad():
        base = measure(base_cfg, model)
    print(f"{'method':>6} {'layers':>10} {'seed':>4}  DS and fact recall at steps 0, {args.every}, ..., {args.steps}   (s)")
    print(f"{'base':>6} {'-':>10} {'-':>4}  DS {base['ds']:.3f}  recall {base['recall']:.3f}")
    for method in args.methods:
        for layers in args.layers:
            for seed in args.seeds:
                cfg = load_config(args.config, [*args.overrides, f"finetune.method={method}", f"finetune.layers={layers}",
                                                f"finetune.max_steps={args.steps}", f"finetune.curve_every={args.every}",
                                                "finetune.save_strategy=none", f"seed={seed}"])
                curve: list[dict[str, float]] = []
                start = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    finetune(cfg, model_dir, Path(tmp) / "ft", evaluate_fn=lambda m: curve.append(measure(cfg, m)) or {},
                             model=model, tokenizer=tokenizer, weights="blocks")
                seconds = time.perf_counter() - start
                ds = " ".join(f"{c['ds']:.2f}" for c in curve)  # the curve starts at step 0
                recall = " ".join(f"{c['recall']:.2f}" for c in curve)
                print(f"{method:>6} {layers:>10} {seed:>4}  DS {ds}  recall {recall}  ({seconds:.0f})", flush=True)


if __name__ == "__main__":
    main()
