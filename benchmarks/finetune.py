"""Fine-tuning throughput: editdecay's recipe versus a bare ``transformers.Trainer``, in one run.

Same model (the tiny toy model), same tokenised data, same batch, same number of steps; the bare
baseline gets the data our recipe built (so tokenisation is not timed in either) and plain
``TrainingArguments``. Tokens/s counts real (unpadded) tokens per second of ``train_runtime``.
Alternating order, best of ``--repeats`` per side, because the CPU is shared and noisy.

    python benchmarks/finetune.py [--methods lora full] [--steps 30] [--repeats 2]
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


def bare_trainer_tokens_per_s(cfg, model_dir: Path, method: str, steps: int, work: Path) -> float:
    """The baseline: model + PEFT (if any) + Trainer, nothing of ours in the loop."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from editdecay.finetune.data import build_finetune_data
    from editdecay.finetune.recipe import resolve_recipe

    recipe = resolve_recipe(cfg.finetune)
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = build_finetune_data(cfg.finetune.data, tok, "gpt2", recipe.cutoff_len, cfg.seed, cfg.world)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if method != "full":
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                                                 lora_dropout=recipe.lora_dropout, target_modules=["c_attn"],
                                                 fan_in_fan_out=True, use_dora=method == "dora"))
    args = TrainingArguments(output_dir=str(work), per_device_train_batch_size=recipe.micro_batch_size,
                             gradient_accumulation_steps=recipe.grad_accum, learning_rate=recipe.lr, max_steps=steps,
                             use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no",
                             disable_tqdm=True, logging_steps=10**6, remove_unused_columns=False, seed=cfg.seed)
    trainer = Trainer(model=model, args=args, train_dataset=data.train,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    out = trainer.train()
    return data.n_train_tokens * float(trainer.state.epoch) / out.metrics["train_runtime"]


def ours_tokens_per_s(cfg, model_dir: Path, work: Path) -> float:
    from editdecay.finetune.run import finetune

    return finetune(cfg, model_dir, work / "out").metrics["train_tokens_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "dora", "full"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("transformers", "editdecay"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    from editdecay.config import load_config
    from editdecay.world.toy import ensure_toy_model

    cache = os.environ.get("EDITDECAY_TEST_CACHE", str(REPO / ".cache" / "editdecay-test"))
    start = time.perf_counter()
    rows = []
    for method in args.methods:
        # Full FT compares the plain-Trainer path (deepspeed=none): the bare baseline has no
        # DeepSpeed; ZeRO-2 on one CPU process is measured separately below.
        cfg = load_config(REPO / "configs" / "tiny.yaml", [
            f"cache_dir={cache}", f"finetune.method={method}", f"finetune.max_steps={args.steps}",
            "finetune.save_strategy=none", "finetune.logging_steps=1000000", "finetune.deepspeed=none"])
        model_dir = ensure_toy_model(cfg)
        ours, bare = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeats):
                ours.append(ours_tokens_per_s(cfg, model_dir, Path(tmp) / f"o{i}"))
                bare.append(bare_trainer_tokens_per_s(cfg, model_dir, method, args.steps, Path(tmp) / f"b{i}"))
            ds = None
            if method == "full":
                ds_cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"deepspeed": "zero2"})})
                ds = max(ours_tokens_per_s(ds_cfg, model_dir, Path(tmp) / f"z{i}") for i in range(args.repeats))
        rows.append((method, max(ours), max(bare), ds))
    print(f"fine-tuning throughput, toy model (tiny.yaml), {args.steps} steps, best of {args.repeats}")
    print(f"{'method':8s} {'editdecay tok/s':>16s} {'bare Trainer tok/s':>19s} {'ratio':>7s} {'ZeRO-2 tok/s':>13s}")
    for method, ours, bare, ds in rows:
        ds_text = f"{ds:13.0f}" if ds is not None else f"{'-':>13s}"
        print(f"{method:8s} {ours:16.0f} {bare:19.0f} {ours / bare:6.2f}x {ds_text}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
