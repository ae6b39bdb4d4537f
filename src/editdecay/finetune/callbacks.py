"""The decay curve: evaluate the trial's edits every k optimizer steps while fine-tuning runs.

The callback knows nothing about edits: it calls ``evaluate_fn(model) -> {"es": …, "ps": …}``
(the trial passes an ES/PS/NS evaluator over a fixed subset of its edits) at step 0, every
``every`` steps, and at the last step, and keeps one row per call: ``{"step", "epoch", **metrics}``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import TrainerCallback

from editdecay.errors import EditDecayError
from editdecay.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

EvaluateFn = Callable[[torch.nn.Module], dict[str, float]]

CURVE_JSON = "decay_curve.json"
CURVE_CSV = "decay_curve.csv"


class DecayCurveCallback(TrainerCallback):
    def __init__(self, evaluate_fn: EvaluateFn, every: int, zero3: bool = False):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.evaluate_fn = evaluate_fn
        self.every = every
        self.zero3 = zero3  # ZeRO-3 partitions parameters: gather them for the evaluation
        self.curve: list[dict[str, float]] = []

    def _record(self, model: torch.nn.Module, step: int, epoch: float | None) -> None:
        if self.curve and self.curve[-1]["step"] == step:
            return
        start = time.perf_counter()
        was_training = model.training
        model.eval()  # no dropout while measuring; training resumes in train mode
        try:
            with self._gathered(model), torch.no_grad():
                metrics = self.evaluate_fn(model)
        finally:
            model.train(was_training)
        row = {"step": step, "epoch": round(float(epoch or 0.0), 4), **{k: float(v) for k, v in metrics.items()}}
        self.curve.append(row)
        log.info("decay curve step %d: %s (%.1f s)", step,
                 " ".join(f"{k}={v:.3f}" for k, v in metrics.items()), time.perf_counter() - start)

    def _gathered(self, model: torch.nn.Module):
        if not self.zero3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)

    # Resumed runs start past step 0: the curve continues from where training resumes.
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(model, state.global_step, state.epoch)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._record(model, state.global_step, state.epoch)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._record(model, state.global_step, state.epoch)

    def save(self, out_dir: str | Path) -> None:
        """``decay_curve.json`` (list of rows) and ``decay_curve.csv`` in ``out_dir``."""
        out_dir = Path(out_dir)
        atomic_write_json(out_dir / CURVE_JSON, self.curve)
        fields: list[str] = []
        for row in self.curve:
            fields += [k for k in row if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.curve)
        atomic_write_text(out_dir / CURVE_CSV, buf.getvalue())


class NonFiniteLossError(EditDecayError):
    """The training loss became NaN or infinite: the fine-tuned model is garbage, not a result."""


class NonFiniteLossGuard(TrainerCallback):
    """Stop training at the first logged NaN/inf loss (the Trainer's own NaN filter is off, so a
    diverged step reaches the log): a diverged run must fail, never finish as a success."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise NonFiniteLossError(
                    f"fine-tuning diverged: {key} is {value} at step {state.global_step} (lr {self.lr:g}); "
                    "lower finetune.lr (or raise finetune.warmup_steps / lower finetune.max_grad_norm)")
