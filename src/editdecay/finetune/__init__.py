"""Fine-tuning after editing: full parameters (HF Trainer + DeepSpeed), LoRA and DoRA (PEFT),
all or selected layers, with a decay curve of the edits during training.

Entry point: :func:`editdecay.finetune.run.finetune`.
"""

from editdecay.finetune.callbacks import DecayCurveCallback
from editdecay.finetune.layers import resolve_layers
from editdecay.finetune.recipe import Recipe, resolve_recipe
from editdecay.finetune.run import FinetuneResult, finetune

__all__ = ["DecayCurveCallback", "FinetuneResult", "Recipe", "finetune", "resolve_layers", "resolve_recipe"]
