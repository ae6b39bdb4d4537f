"""The fine-tuning recipe: model directory in, fine-tuned model (or adapter) directory out.

Top to bottom: resolve the recipe and check the config (nothing touched yet) → load the model →
resolve layers → build the data → wrap in adapters (LoRA/DoRA) or freeze blocks (full) → HF
``Trainer`` (with DeepSpeed for full FT) → save → rename into place.

The run writes into ``.<out>.partial`` beside ``out_dir`` and renames it when complete, so
``out_dir`` is never half-written; an existing ``out_dir`` is replaced only if editdecay wrote it
(:func:`editdecay.io.check_output_dir`). An interrupted run leaves the partial directory with the
Trainer's checkpoints and a resume key (a hash of everything that determines the training run);
running again with the same ``out_dir`` resumes from the last checkpoint only if the key matches,
else it logs a warning and starts fresh. A NaN/inf loss fails the run (``NonFiniteLossError``).

Output directory::

    adapter/        PEFT adapter (adapter_config.json, adapter_model.safetensors) + tokenizer   (lora, dora)
    merged/         adapter merged into the base model (finetune.merge)                        (lora, dora)
    model/          the fine-tuned model (model.safetensors, config, tokenizer)                (full, weights="full")
    blocks.safetensors  the trained parameters, by name; the model is the start model with these
                    tensors copied in (bit-exact; :func:`apply_finetuned`)                (full; alone with weights="blocks")
    metrics.json    losses, tokens/s, parameter counts, layers, recipe
    trainer_log.json  the Trainer's log history;  decay_curve.{json,csv} when an evaluate_fn is given
    config.yaml     the resolved trial config
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from editdecay.config import TrialConfig, to_yaml
from editdecay.finetune.adapters import apply_adapters
from editdecay.finetune.callbacks import DecayCurveCallback, EvaluateFn, NonFiniteLossError, NonFiniteLossGuard
from editdecay.finetune.data import build_finetune_data
from editdecay.finetune.distributed import (check_precision, deepspeed_config, deepspeed_session, is_main_process,
                                            world_size, zero_stage)
from editdecay.finetune.layers import freeze_for_full_ft, resolve_layers
from editdecay.finetune.recipe import Recipe, resolve_recipe
from editdecay.io import (OUTPUT_MARKER, OutputDirError, atomic_write_json, atomic_write_text, check_output_dir,
                          mark_output_dir, replace_directory)

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    out_dir: Path
    method: str
    layers: list[int]
    model_path: Path  # adapter/ (lora, dora) or model/ (full): what the next stage loads
    merged_path: Path | None
    metrics: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def partial_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial"


def finetune(cfg: TrialConfig, model_dir: str | Path | None, out_dir: str | Path, evaluate_fn: EvaluateFn | None = None,
             edited_layers: list[int] | None = None, *, model=None, tokenizer=None, deltas: str | Path | None = None,
             weights: str = "full") -> FinetuneResult:
    """Fine-tune the model in ``model_dir`` as ``cfg.finetune`` says; write ``out_dir``.

    ``evaluate_fn(model) -> {metric: value}`` is called every ``finetune.curve_every`` steps (the
    decay curve); ``edited_layers`` overrides ``cfg.edit.layers`` for ``finetune.layers=edited``.
    ``model``/``tokenizer``: start from this in-memory model instead of loading ``model_dir``; it is
    returned to the caller bit for bit as it was (PEFT adapters are unloaded, trained blocks restored;
    DeepSpeed, which takes over the module it trains, gets a copy). ``deltas``: an edit's
    ``deltas.safetensors`` applied after loading ``model_dir`` (the edited model without a saved copy).
    ``weights``: for full FT, save the whole model (``"full"``, ``model/``) or only the trained
    parameters (``"blocks"``, ``blocks.safetensors``).
    """
    ft = cfg.finetune
    out_dir = Path(out_dir)
    # Everything checkable without the model, before anything is loaded or written.
    check_output_dir(out_dir, "output directory")
    check_precision(ft.precision)
    ds_config = deepspeed_config(ft.deepspeed) if ft.method == "full" else None
    recipe = resolve_recipe(ft, world_size())

    from editdecay.models import load_model

    restore = None
    if model is None:
        model, tokenizer = load_model(cfg.model, model_dir)
        if deltas is not None:
            from editdecay.editing.deltas import EditDeltas

            EditDeltas.load(deltas).apply(model)
    else:
        tokenizer = copy.deepcopy(tokenizer)  # training pads right; the caller's tokenizer stays as it was
        if ft.method == "full" and ds_config is not None:
            model = copy.deepcopy(model)  # DeepSpeed flattens, casts and hooks the module it trains
        else:
            restore = _InMemoryRestore(model)
    try:
        return _finetune_model(cfg, model, tokenizer, out_dir, evaluate_fn, edited_layers, ds_config, recipe, weights,
                               restore)
    finally:
        if restore is not None:
            restore.restore()


def _finetune_model(cfg, model, tokenizer, out_dir: Path, evaluate_fn, edited_layers, ds_config, recipe: Recipe,
                    weights: str, restore: "_InMemoryRestore | None") -> FinetuneResult:
    ft = cfg.finetune
    layers = resolve_layers(ft.layers, model, cfg.edit, edited_layers)
    resume_key = _resume_key(cfg, model, layers)
    tokenizer.padding_side = "right"  # training pads right; generation (DS eval) pads left
    data = build_finetune_data(ft.data, tokenizer, model.config.model_type, recipe.cutoff_len, cfg.seed, cfg.world)
    if getattr(model, "loss_type", "") is None:
        # transformers reads the loss from the class name; GPT2LMHeadModel names none, so it warns and
        # falls back to the causal-LM loss. Every model trained here is a causal LM: say so.
        model.loss_type = "ForCausalLM"

    if ft.method == "full":
        n_trainable = freeze_for_full_ft(model, layers, ft.train_extra)
        if restore is not None:
            restore.keep_trained(model)
    else:
        # The adapters' random init draws from the global RNG: seed it here, or the init (and with it
        # the trial's numbers) depends on whatever ran before in the process (the Trainer seeds only
        # later, when it is built).
        from transformers import set_seed

        set_seed(cfg.seed)
        model = apply_adapters(model, ft, recipe, layers)
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    log.info("finetune %s on layers %s: %s trainable of %s parameters, %d train / %d val examples (%s template)",
             ft.method, layers, f"{n_trainable:,}", f"{n_total:,}", len(data.train), len(data.val), data.template)

    work = partial_dir(out_dir)
    if is_main_process():
        _prepare_work(work, resume_key, ft.resume)
    with deepspeed_session(ds_config is not None):
        trainer, curve_cb = _build_trainer(cfg, recipe, model, tokenizer, data, work, ds_config, evaluate_fn)
        resume = _last_checkpoint(work / "checkpoints") if ft.resume else None
        if resume:
            log.info("resuming from %s", resume)
        start = time.perf_counter()
        try:
            out = trainer.train(resume_from_checkpoint=resume)
            if not math.isfinite(float(out.training_loss)):
                raise NonFiniteLossError(f"fine-tuning diverged: the mean training loss is {out.training_loss} "
                                         f"(lr {recipe.lr:g}); lower finetune.lr")
        except NonFiniteLossError:
            if is_main_process():  # its checkpoints hold a diverged run: nothing worth resuming
                shutil.rmtree(work, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        eval_metrics = trainer.evaluate() if data.val else {}

        model_path, merged_path = _save(trainer, tokenizer, ft.method, ft.merge, work, weights, zero_stage(ds_config) == 3)
        metrics = _metrics(trainer, out, eval_metrics, data, recipe, layers, n_trainable, n_total, seconds)
        curve = curve_cb.curve if curve_cb else []
        if is_main_process():
            atomic_write_json(work / "metrics.json", metrics)
            atomic_write_json(work / "trainer_log.json", trainer.state.log_history)
            atomic_write_text(work / "config.yaml", to_yaml(cfg, redact=True))
            if curve_cb:
                curve_cb.save(work)
            if not ft.keep_checkpoints:
                shutil.rmtree(work / "checkpoints", ignore_errors=True)
            (work / RESUME_KEY_FILE).unlink(missing_ok=True)
            replace_directory(work, out_dir)
        trainer.accelerator.wait_for_everyone()  # other ranks return only once the directory is in place
    log.info("finetune done: loss %.4f -> %.4f in %.0f s; wrote %s", metrics["first_loss"], metrics["last_loss"],
             seconds, out_dir)
    rel = lambda p: out_dir / p.relative_to(work) if p is not None else None  # noqa: E731
    return FinetuneResult(out_dir=out_dir, method=ft.method, layers=layers, model_path=rel(model_path),
                          merged_path=rel(merged_path), metrics=metrics, curve=curve)


RESUME_KEY_FILE = "resume_key.json"


def _resume_key(cfg: TrialConfig, model, layers: list[int]) -> str:
    """What determines the training run: a checkpoint is resumed only by the config that wrote it.
    Knobs that do not change the trained weights (resume, checkpoint keeping, logging) are left out."""
    from editdecay.config import stable_hash
    from editdecay.models import model_fingerprint
    from editdecay.pipeline.cache import input_file_digests

    ft = cfg.finetune.model_dump(mode="json")
    for knob in ("resume", "keep_checkpoints", "keep_weights", "logging_steps", "save_strategy", "save_steps"):
        ft.pop(knob, None)
    files = input_file_digests(cfg)
    return stable_hash({"finetune": ft, "seed": cfg.seed, "world": cfg.world.model_dump(mode="json"),
                        "layers": list(layers), "model": model_fingerprint(model),
                        "ft_data": files["ft_data"], "deepspeed": files["deepspeed"]}, length=16)


def _prepare_work(work: Path, resume_key: str, resume: bool) -> None:
    """The partial directory, marked as ours and holding the resume key; checkpoints of another
    config (or any, with ``finetune.resume=false``) are discarded with a warning, never resumed."""
    import json

    if work.exists():
        if not (work / OUTPUT_MARKER).is_file() and any(work.iterdir()):
            raise OutputDirError(f"{work} exists and was not written by editdecay; move it away and run again")
        try:
            recorded = json.loads((work / RESUME_KEY_FILE).read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None
        if recorded != resume_key or not resume:
            if (work / "checkpoints").exists():
                why = "finetune.resume=false" if not resume else "they were written by another config (finetune.*, seed, model or data differ)"
                log.warning("finetune: discarding the checkpoints in %s: %s; training starts fresh", work, why)
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    mark_output_dir(work)
    atomic_write_json(work / RESUME_KEY_FILE, {"key": resume_key})


def training_arguments(cfg: TrialConfig, recipe: Recipe, output_dir: Path, ds_config: dict | None, has_val: bool):
    """The Trainer's arguments for a recipe (also used by the benchmark's bare-Trainer baseline)."""
    from transformers import TrainingArguments

    ft = cfg.finetune
    use_cpu = cfg.model.device == "cpu" or not torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=recipe.lr,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps if recipe.max_steps is not None else -1,
        per_device_train_batch_size=recipe.micro_batch_size,
        per_device_eval_batch_size=recipe.micro_batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        # transformers 5: one field, an int is steps, a float in [0, 1) a ratio of the total.
        warmup_steps=recipe.warmup_ratio if recipe.warmup_ratio > 0 else recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        lr_scheduler_type="linear",
        logging_steps=ft.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN/inf loss must reach the log, where NonFiniteLossGuard fails the run
        save_strategy="no" if ft.save_strategy == "none" else ft.save_strategy,
        save_steps=ft.save_steps,
        save_total_limit=2,
        eval_strategy="epoch" if has_val else "no",
        bf16=ft.precision == "bf16",
        fp16=ft.precision == "fp16",
        use_cpu=use_cpu,
        deepspeed=ds_config,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",  # tracking (MLflow) is the pipeline's job, not the Trainer's
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
    )


def _build_trainer(cfg, recipe, model, tokenizer, data, work: Path, ds_config, evaluate_fn):
    from transformers import DataCollatorForSeq2Seq, Trainer

    args = training_arguments(cfg, recipe, work / "checkpoints", ds_config, bool(data.val))
    callbacks = [NonFiniteLossGuard(recipe.lr)]
    curve_cb = None
    if evaluate_fn is not None:
        every = cfg.finetune.curve_every or max(1, _total_steps(len(data.train), recipe) // 10)
        curve_cb = DecayCurveCallback(evaluate_fn, every, zero3=zero_stage(ds_config) == 3)
        callbacks.append(curve_cb)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")
    trainer = Trainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.val or None,
                      data_collator=collator, processing_class=tokenizer, callbacks=callbacks)
    return trainer, curve_cb


def _total_steps(n_train: int, recipe: Recipe) -> int:
    if recipe.max_steps is not None:
        return recipe.max_steps
    return max(1, math.ceil(n_train / recipe.batch_size) * math.ceil(recipe.epochs))


def _last_checkpoint(ckpt_dir: Path) -> str | None:
    if not ckpt_dir.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(ckpt_dir))


def _save(trainer, tokenizer, method: str, merge: bool, work: Path, weights: str = "full",
          zero3: bool = False) -> tuple[Path, Path | None]:
    if method == "full":
        # The trained blocks always (what a trial derives the model from, in memory); the whole model too
        # unless only the blocks are wanted.
        blocks = trained_parameters(trainer.model, zero3)  # collective under ZeRO-3
        if is_main_process():
            from safetensors.torch import save_file

            save_file(blocks, str(work / BLOCKS_FILE))
        if weights == "blocks":
            return work / BLOCKS_FILE, None
        path = work / "model"
        trainer.save_model(str(path))  # collective under ZeRO-3: gathers the 16-bit weights
        if is_main_process():
            tokenizer.save_pretrained(path)
            (path / "training_args.bin").unlink(missing_ok=True)
        return path, None
    path, merged = work / "adapter", None
    if is_main_process():
        trainer.model.save_pretrained(path)  # PEFT's standard adapter layout
        tokenizer.save_pretrained(path)
        if merge:
            merged = work / "merged"
            # Merging writes into the base weights: merge a copy, the caller may still hold the base.
            copy.deepcopy(trainer.model).merge_and_unload().save_pretrained(merged)
            tokenizer.save_pretrained(merged)
    elif merge:
        merged = work / "merged"
    return path, merged


def _metrics(trainer, out, eval_metrics, data, recipe: Recipe, layers, n_trainable, n_total, seconds) -> dict[str, Any]:
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    epochs_done = float(trainer.state.epoch or 0.0)
    tokens = data.n_train_tokens * epochs_done  # real (unpadded) tokens seen
    metrics: dict[str, Any] = {
        "train_loss": float(out.training_loss),
        "first_loss": float(losses[0]) if losses else float("nan"),
        "last_loss": float(losses[-1]) if losses else float("nan"),
        "steps": int(trainer.state.global_step),
        "epochs": epochs_done,
        "train_seconds": round(seconds, 3),
        "train_tokens_per_s": round(tokens / max(float(out.metrics.get("train_runtime", seconds)), 1e-9), 1),
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_dropped": data.n_dropped,
        "n_truncated": data.n_truncated,
        "trainable_params": int(n_trainable),
        "total_params": int(n_total),
        "layers": list(layers),
        "template": data.template,
        "recipe": recipe.to_dict(),
    }
    if "eval_loss" in eval_metrics:
        metrics["eval_loss"] = float(eval_metrics["eval_loss"])
    return metrics


BLOCKS_FILE = "blocks.safetensors"


def trained_parameters(model, zero3: bool = False) -> dict[str, torch.Tensor]:
    """The parameters that require grad, by name, as CPU copies (gathered first under ZeRO-3)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params.values())):
            return {name: p.detach().cpu().clone().contiguous() for name, p in params.items()}
    return {name: p.detach().cpu().clone().contiguous() for name, p in params.items()}


class _InMemoryRestore:
    """Puts a caller's model back after training it in place: requires_grad flags, train/eval
    mode, the trained parameters' values (copied before training, only those: the blocks that
    full FT trains; PEFT trains none of the model's own), PEFT layers unloaded."""

    def __init__(self, model) -> None:
        self.model = model
        self.flags = {name: p.requires_grad for name, p in model.named_parameters()}
        self.training = model.training
        self.originals: dict[str, torch.Tensor] = {}

    def keep_trained(self, model) -> None:
        self.originals = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def restore(self) -> None:
        model = self.model
        _unload_peft(model)  # get_peft_model injected its layers into this very model
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, original in self.originals.items():
                params[name].copy_(original)
        for name, p in model.named_parameters():
            p.requires_grad_(self.flags.get(name, False))
            p.grad = None
        model.train(self.training)


def _unload_peft(model) -> None:
    """Replace every PEFT-injected layer in ``model`` by its base layer (weights untouched)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and hasattr(module, "base_layer"):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                pass


def apply_finetuned(model, out_dir: str | Path):
    """Derive the fine-tuned model in memory from the model it started from: the adapter wrapped
    around ``model`` or the trained blocks copied into it. Returns ``(model to evaluate, restore)``;
    ``restore()`` puts ``model`` back bit for bit."""
    out_dir = Path(out_dir)
    if (out_dir / BLOCKS_FILE).is_file():
        from safetensors.torch import load_file

        blocks = load_file(str(out_dir / BLOCKS_FILE))
        params = dict(model.named_parameters())
        originals = {name: params[name].detach().clone() for name in blocks}
        with torch.no_grad():
            for name, t in blocks.items():
                params[name].copy_(t)

        def restore() -> None:
            with torch.no_grad():
                for name, t in originals.items():
                    params[name].copy_(t)

        return model, restore
    adapter = out_dir / "adapter"
    if (adapter / "adapter_config.json").is_file():
        from peft import PeftModel

        from editdecay.finetune.adapters import peft_wrapping

        with peft_wrapping():
            peft_model = PeftModel.from_pretrained(model, adapter).eval()
        return peft_model, lambda: _unload_peft(model)
    from editdecay.errors import DataError

    raise DataError(f"{out_dir}: no adapter/ or {BLOCKS_FILE} to derive the fine-tuned model from")


def load_finetuned(out_dir: str | Path, base_model_dir: str | Path | None = None, model_cfg=None):
    """``(model, tokenizer)`` from a finetune output directory: the full model, the merged model,
    or the base model with the adapter applied (base from the adapter config unless given).
    Loaded through :func:`editdecay.models.load_model`, so ``model_cfg`` (dtype, device) applies
    to fine-tuned models as to every other model."""
    from editdecay.config import ModelConfig
    from editdecay.errors import DataError
    from editdecay.models import load_model

    model_cfg = model_cfg or ModelConfig()
    out_dir = Path(out_dir)
    for sub in ("model", "merged"):
        if (out_dir / sub / "config.json").is_file():
            return load_model(model_cfg, out_dir / sub)
    if (out_dir / BLOCKS_FILE).is_file():
        # The blocks replace only the trained parameters: ``base_model_dir`` must be the model training
        # started from (for a trial's KE→FT stage that is base + deltas, derived in memory by the trial).
        if base_model_dir is None:
            raise DataError(f"{out_dir}: holds only the trained blocks; give the model they were trained from (--base)")
        model, tokenizer = load_model(model_cfg, base_model_dir)
        return apply_finetuned(model, out_dir)[0], tokenizer
    adapter = out_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise DataError(f"{out_dir}: not a finetune output directory (no model/, merged/ or adapter/)")
    from peft import PeftModel

    base = base_model_dir
    if base is None:
        import json

        try:
            base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        except (OSError, ValueError, KeyError, TypeError):
            base = None
        if not isinstance(base, str) or not base:
            raise DataError(f"{adapter / 'adapter_config.json'} is damaged or names no base model "
                            "(base_model_name_or_path); pass --base MODEL_DIR, or fine-tune again")
    model, tokenizer = load_model(model_cfg, base)
    from editdecay.finetune.adapters import peft_wrapping

    with peft_wrapping():
        return PeftModel.from_pretrained(model, adapter).eval(), tokenizer
