"""Recipe presets: the study's fine-tuning recipes (``paper``) and small toy-friendly ones (``toy``).

A :class:`Recipe` is the fully resolved set of numbers one run uses: every ``finetune.*`` knob the
config leaves ``None`` takes the preset's value. Resolving happens once, before anything is
loaded or written, so a bad combination fails in one line with nothing on disk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from editdecay.config import FinetuneConfig
from editdecay.errors import ConfigError

# The study's recipes (LLM-Adapters for LoRA/DoRA; the full-FT recipe of the paper's appendix).
# micro_batch_size is ours: the paper gives the effective batch; accumulation makes up the rest.
PRESETS: dict[str, dict[str, dict]] = {
    "paper": {
        "peft": dict(lr=2e-4, epochs=3.0, batch_size=16, micro_batch_size=4, cutoff_len=256, warmup_steps=100,
                     warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0, lora_r=32, lora_alpha=64.0,
                     lora_dropout=0.05),
        "full": dict(lr=5e-6, epochs=2.0, batch_size=32, micro_batch_size=4, cutoff_len=256, warmup_steps=0,
                     warmup_ratio=0.1, weight_decay=0.001, max_grad_norm=1.0, lora_r=0, lora_alpha=0.0,
                     lora_dropout=0.0),
    },
    # Toy: the 0.9M-parameter fact-world model learns the downstream task (world_kind) in ~120 steps
    # at these rates (FT-only DS 0.15 → 0.76 LoRA / 0.90 full); LoRA 1e-3 / full 1e-4 reached only
    # ~0.2 in 80 steps, and LoRA 1e-2 / full 1e-3 drop top-1 recall of its facts below 0.2
    # (benchmarks/README.md, "Downstream task").
    "toy": {
        "peft": dict(lr=3e-3, epochs=1.0, batch_size=16, micro_batch_size=16, cutoff_len=128, warmup_steps=5,
                     warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0, lora_r=8, lora_alpha=16.0,
                     lora_dropout=0.05),
        "full": dict(lr=3e-4, epochs=1.0, batch_size=16, micro_batch_size=16, cutoff_len=128, warmup_steps=0,
                     warmup_ratio=0.1, weight_decay=0.001, max_grad_norm=1.0, lora_r=0, lora_alpha=0.0,
                     lora_dropout=0.0),
    },
}


@dataclass(frozen=True)
class Recipe:
    method: str  # full | lora | dora
    lr: float
    epochs: float
    max_steps: int | None
    batch_size: int  # effective batch over all ranks
    micro_batch_size: int
    grad_accum: int
    cutoff_len: int
    warmup_steps: int
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    lora_r: int
    lora_alpha: float
    lora_dropout: float

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_recipe(cfg: FinetuneConfig, world_size: int = 1) -> Recipe:
    """The preset's numbers with the config's explicit values on top; checks batch arithmetic."""
    if cfg.method == "none":
        raise ConfigError("finetune.method is 'none': nothing to fine-tune; choose full, lora or dora")
    family = "full" if cfg.method == "full" else "peft"
    base = PRESETS[cfg.preset][family]
    pick = lambda key: getattr(cfg, key) if getattr(cfg, key) is not None else base[key]  # noqa: E731
    batch, micro = pick("batch_size"), pick("micro_batch_size")
    micro = min(micro, batch) if cfg.micro_batch_size is None else micro  # a small explicit batch just works
    per_step = micro * world_size
    if batch % per_step:
        raise ConfigError(
            f"finetune.batch_size={batch} is not a multiple of micro_batch_size x ranks = {micro} x {world_size}; "
            "the effective batch is reached by gradient accumulation"
        )
    warmup_steps = pick("warmup_steps")
    warmup_ratio = pick("warmup_ratio")
    if cfg.warmup_steps is not None and cfg.warmup_ratio is None:
        warmup_ratio = 0.0  # an explicit step count replaces the preset's ratio
    if cfg.warmup_ratio is not None and cfg.warmup_steps is None:
        warmup_steps = 0
    lora = family == "peft"
    cutoff = cfg.data.cutoff_len if cfg.data.cutoff_len is not None else base["cutoff_len"]
    return Recipe(
        method=cfg.method, lr=float(pick("lr")), epochs=float(pick("epochs")), max_steps=cfg.max_steps,
        batch_size=batch, micro_batch_size=micro, grad_accum=batch // per_step, cutoff_len=cutoff,
        warmup_steps=int(warmup_steps), warmup_ratio=float(warmup_ratio), weight_decay=float(pick("weight_decay")),
        max_grad_norm=float(pick("max_grad_norm")),
        lora_r=int(pick("lora_r")) if lora else 0, lora_alpha=float(pick("lora_alpha")) if lora else 0.0,
        lora_dropout=float(pick("lora_dropout")) if lora else 0.0,
    )
