"""DeepSpeed for full fine-tuning, on GPUs as on a cluster and on CPU over gloo.

What we learned running DeepSpeed 0.19 under the HF Trainer on a CPU-only machine:

- DeepSpeed picks its CPU accelerator by itself when no GPU is found (``DS_ACCELERATOR=cpu``
  makes that explicit; we set it only when CUDA is absent) and talks gloo.
- The Trainer only enables DeepSpeed when a process group can be made, so a single process needs
  ``MASTER_ADDR/MASTER_PORT/RANK/LOCAL_RANK/WORLD_SIZE``; we set them (on a free port) unless a
  launcher (torchrun, ``deepspeed``) already did, and restore them afterwards.
- Its torch comm backend JIT-compiles a shared-memory all-reduce op (``deepspeed_shm_comm``, ~50 s
  with g++ the first time, then cached in ``~/.cache/torch_extensions``). gloo does the same job,
  so on CPU we mark the op incompatible (``deepspeed.ops.__compatible_ops__`` is the documented
  hook: edits to that dict persist) and nothing is compiled.
- No ``optimizer`` block in the JSON + ``zero_force_ds_cpu_optimizer: false``: the Trainer builds
  torch AdamW and DeepSpeed wraps it, so ``cpu_adam`` is never JIT-compiled (also with offload).
- fp16 needs a GPU (DeepSpeed's loss scaler and the CPU kernels lack it): refused in one line.
  bf16 works on CPU (``"bf16": {"enabled": "auto"}`` follows ``TrainingArguments.bf16``).
- The process group must be destroyed at the end (else gloo aborts at interpreter exit about one
  run in ten), and the Trainer's global DeepSpeed config (``HfDeepSpeedConfig`` weakref, which makes
  later ``from_pretrained`` calls think ZeRO-3 is on) and accelerate's ``PartialState`` singleton
  must be reset, and DeepSpeed's cached process groups released (``deepspeed.comm.destroy_process_group``),
  and ``ACCELERATE_USE_DEEPSPEED`` removed from the environment, or a second run in the same
  process (Ray reuses workers) inherits the first one's dead state.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from editdecay.errors import ConfigError

DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "deepspeed"
DEEPSPEED_PRESETS = ("zero2", "zero3", "zero2_offload", "zero3_offload")
_DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
# Set by TrainingArguments/Accelerator when DeepSpeed is on and never unset: left behind, the next
# Trainer in this process (a LoRA run, say) would try to start DeepSpeed too.
_LEAKED_VARS = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE", "DS_ACCELERATOR")


def deepspeed_config(name: str) -> dict[str, Any] | None:
    """The DeepSpeed JSON for ``finetune.deepspeed`` (a preset name or a path); None for ``none``."""
    if name == "none":
        return None
    path = DEEPSPEED_CONFIG_DIR / f"{name}.json" if name in DEEPSPEED_PRESETS else Path(name).expanduser()
    if not path.is_file():
        where = f"preset file {path} is missing" if name in DEEPSPEED_PRESETS else f"'{name}' is not a file"
        raise ConfigError(f"finetune.deepspeed: {where}; allowed: none, {', '.join(DEEPSPEED_PRESETS)} or a JSON path")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"finetune.deepspeed: {path}: invalid JSON ({err.msg} at line {err.lineno})") from None


def zero_stage(ds_config: dict[str, Any] | None) -> int:
    return int((ds_config or {}).get("zero_optimization", {}).get("stage", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_precision(precision: str) -> None:
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("finetune.precision=fp16 needs a CUDA GPU (fp16 training is not supported on CPU); use bf16 or fp32")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def deepspeed_session(enabled: bool) -> Iterator[None]:
    """Everything DeepSpeed under the Trainer needs around one run, and a clean teardown."""
    if not enabled:
        yield
        return
    saved = {k: os.environ.get(k) for k in (*_DIST_VARS, *_LEAKED_VARS)}
    if "RANK" not in os.environ:  # no launcher: one process is the whole world
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # gloo instead of a JIT-built op
    try:
        yield
    finally:
        import torch.distributed as dist
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        if dist.is_available() and dist.is_initialized():
            import deepspeed.comm.comm as ds_comm  # the module that holds the live backend (cdb)

            # DeepSpeed's own teardown also drops the groups it cached (world clone, data parallel
            # group); torch's alone leaves them dangling and the next run in this process fails.
            if ds_comm.cdb is not None:
                ds_comm.destroy_process_group()
            else:
                dist.destroy_process_group()
        unset_hf_deepspeed_config()
        try:
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
        except Exception:  # older accelerate: nothing to reset
            pass
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
