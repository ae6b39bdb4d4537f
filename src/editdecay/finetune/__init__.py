"""Fine-tuning after editing: full parameters (HF Trainer + DeepSpeed), LoRA and DoRA (PEFT),
all or selected layers, with a decay curve of the edits during training.

Entry point: :func:`editdecay.finetune.run.finetune`.
"""

from importlib import import_module

# Imported on first use: the preflight reads finetune.recipe (batch arithmetic) before torch and
# transformers, which run/callbacks pull in, are imported.
_EXPORTS = {"DecayCurveCallback": "callbacks", "resolve_layers": "layers", "Recipe": "recipe",
            "resolve_recipe": "recipe", "FinetuneResult": "run", "finetune": "run"}

__all__ = ["DecayCurveCallback", "FinetuneResult", "Recipe", "finetune", "resolve_layers", "resolve_recipe"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"editdecay.finetune.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'editdecay.finetune' has no attribute {name!r}")
