"""Does fine-tuning teach the toy's downstream task, and what does it cost the model's own facts?

For each fine-tuning setting, the project's own ``finetune`` (the recipe a trial runs) trains the
unedited toy model; every ``--every`` steps the model is measured on the downstream test rows (DS,
``eval.ds_*`` of the config) and on ``--facts`` of the world's CounterFact-style records, as the
trial's native-fact control scores them (``metrics/native.py``): ``known`` (the true answer beats
the record's counterfactual, the rule ES uses) and ``top1`` (every true-answer token is the argmax,
the toy build's recall rule). Step 0 is the base model.

    python benchmarks/downstream_task.py [CONFIG] [--methods lora full] [--layers all edited non_edited]
        [--steps 80] [--every 20] [--seeds 0 1] [--facts 300] [key=value ...]

The config (default configs/toy.yaml) builds the toy model on first use. Full fine-tuning runs as
in a trial (DeepSpeed ZeRO-2 on CPU unless ``finetune.deepspeed=none``).
"""

from __future__ import annotations

import argparse
import logging
import os
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
    parser.add_argument("--facts", type=int, default=300, help="edit-dataset records scored as facts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from editdecay.config import load_config
    from editdecay.finetune.run import finetune
    from editdecay.data.edits import load_edit_dataset
    from editdecay.metrics.downstream import evaluate_configured
    from editdecay.metrics.native import evaluate_native
    from editdecay.models import load_model, resolve_model_path

    base_cfg = load_config(args.config, args.overrides)
    model_dir = resolve_model_path(base_cfg)
    model, tokenizer = load_model(base_cfg.model, model_dir)
    records = load_edit_dataset(base_cfg)[: args.facts]

    def measure(cfg, m) -> dict[str, float]:
        native = evaluate_native(m, tokenizer, records, cfg.eval.batch_size)
        return {"ds": evaluate_configured(cfg, m, tokenizer).acc, "known": native["known"].mean(),
                "top1": native["top1"].mean()}

    with torch.no_grad():
        base = measure(base_cfg, model)
    print(f"{'method':>6} {'layers':>10} {'seed':>4}  DS, facts known, facts top-1 at steps 0, {args.every}, ..., "
          f"{args.steps}   (seconds)")
    print(f"{'base':>6} {'-':>10} {'-':>4}  DS {base['ds']:.3f}  known {base['known']:.3f}  top1 {base['top1']:.3f}")
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
                cols = {k: " ".join(f"{c[k]:.2f}" for c in curve) for k in ("ds", "known", "top1")}  # from step 0
                print(f"{method:>6} {layers:>10} {seed:>4}  DS {cols['ds']}  known {cols['known']}  top1 {cols['top1']}"
                      f"  ({seconds:.0f})", flush=True)


if __name__ == "__main__":
    main()
