"""LoRA and DoRA through PEFT, on the architecture table's target modules and the chosen layers.

The study's code put adapters only on the attention modules of the chosen layers in its
selective runs; here every target module of the chosen layers gets one by default
(``finetune.attention_only: true`` reproduces the paper's choice, ``finetune.target_modules``
names any set).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from editdecay.arch import arch_for
from editdecay.config import FinetuneConfig
from editdecay.errors import ConfigError
from editdecay.finetune.recipe import Recipe


def target_modules(model, cfg: FinetuneConfig) -> list[str]:
    """Leaf module names to adapt: explicit, or the table's PEFT targets (attention-only if asked)."""
    spec = arch_for(model)
    targets = list(cfg.target_modules) if cfg.target_modules is not None else list(spec.peft_targets)
    if cfg.attention_only:
        targets = [t for t in targets if t in spec.attn_modules]
        if not targets:
            raise ConfigError(
                f"finetune.attention_only: none of the target modules is an attention module of "
                f"{spec.model_type} (attention modules: {', '.join(spec.attn_modules)})"
            )
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in leaves]
    if unknown or not targets:
        raise ConfigError(
            f"finetune.target_modules: {', '.join(unknown) or '(empty)'} not found in this {spec.model_type} model; "
            f"e.g. {', '.join(spec.attn_modules + spec.mlp_modules)}"
        )
    return targets


def apply_adapters(model: torch.nn.Module, cfg: FinetuneConfig, recipe: Recipe, layers: Sequence[int]):
    """Wrap ``model`` in a PEFT model with LoRA (or DoRA) adapters on ``layers`` only."""
    from peft import LoraConfig, get_peft_model

    spec = arch_for(model)
    lora_cfg = LoraConfig(
        task_type="CAUSAL_LM",
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=target_modules(model, cfg),
        use_dora=recipe.method == "dora",
        # GPT-2's Conv1D stores weights [in, out]; PEFT must transpose its update to match.
        fan_in_fan_out=spec.out_is_conv1d,
        layers_to_transform=list(layers),
        # PEFT finds the layer index after this ModuleList name ("h" in transformer.h.3.attn.c_attn).
        layers_pattern=spec.blocks.rsplit(".", 1)[-1],
        bias="none",
    )
    with peft_wrapping():
        return get_peft_model(model, lora_cfg)


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around PEFT wrapping a model (``get_peft_model``, ``PeftModel.from_pretrained``): PEFT 0.21
    reads ``model.is_gradient_checkpointing``, which transformers 5 deprecated with a FutureWarning
    ("use ``is_activation_checkpointing``") addressed to PEFT — we pass nothing that could avoid it.
    That one warning is ignored here, for these calls only; every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def adapted_layers(peft_model) -> set[int]:
    """Block indices that carry a trainable adapter parameter (for checks and reports)."""
    spec = arch_for(peft_model.get_base_model())
    prefix = spec.blocks + "."
    found: set[int] = set()
    for name, p in peft_model.get_base_model().named_parameters():
        if p.requires_grad and prefix in name:
            found.add(int(name.split(prefix, 1)[1].split(".", 1)[0]))
    return found
