"""Data-parallel fine-tuning inside one trial: ``finetune.num_processes`` ranks under torchrun.

A sweep trial that reserves N GPUs (``resources.gpu: N`` in the sweep file; Ray sets
``CUDA_VISIBLE_DEVICES`` to them) fine-tunes on all N by launching ``torchrun --standalone
--nproc_per_node=N -m editdecay finetune …`` on its node: DeepSpeed then shards optimizer state
and gradients (ZeRO-2) or parameters too (ZeRO-3) across the ranks, exactly as a command-line run
would. On CPU the ranks talk gloo (how the tests run it). One node per trial: a trial spanning
several nodes would need a Ray Train worker group, which editdecay does not do yet.

The decay curve needs the edit evaluator inside the training loop and is recorded only by
single-process runs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from editdecay.config import TrialConfig, to_yaml
from editdecay.errors import EditDecayError

log = logging.getLogger(__name__)

_RANK_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
              "ACCELERATE_USE_DEEPSPEED")


def finetune_multiprocess(cfg: TrialConfig, model_dir: str | Path, out_dir: str | Path,
                          edited_layers: list[int] | None = None, timeout: float | None = None,
                          deltas: str | Path | None = None, weights: str = "full"):
    """Run :func:`editdecay.finetune.run.finetune` on ``finetune.num_processes`` ranks; its result.
    ``deltas``: the edit's deltas file, applied by each rank to ``model_dir`` (no saved edited copy)."""
    import json

    from editdecay.finetune.run import FinetuneResult

    n = cfg.finetune.num_processes
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    overrides = [f"edit.layers={json.dumps(edited_layers)}"] if edited_layers is not None else []
    extra = ["--deltas", str(deltas)] if deltas is not None else []
    with tempfile.TemporaryDirectory(prefix="editdecay-launch-") as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(to_yaml(cfg), encoding="utf-8")
        log_file = out_dir.parent / f"{out_dir.name}.torchrun.log"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "editdecay", "finetune", str(config_file), *overrides, "--model", str(model_dir), "--out", str(out_dir),
               "--weights", weights, *extra]
        # The ranks get their own rank/world variables from torchrun; ours (a DeepSpeed session
        # in this process, a launcher around it) must not leak into them.
        env = {k: v for k, v in os.environ.items() if k not in _RANK_VARS}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or n) // n)))
        log.info("finetune on %d processes: %s (log %s)", n, " ".join(cmd), log_file)
        with open(log_file, "w") as log_out:
            proc = subprocess.run(cmd, env=env, stdout=log_out, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise EditDecayError(f"finetune on {n} processes failed (exit {proc.returncode}): {tail[0][:300]}; "
                             f"full log: {log_file}")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    from editdecay.finetune.run import BLOCKS_FILE

    full_name = "model" if weights == "full" else BLOCKS_FILE
    model_path = out_dir / (full_name if cfg.finetune.method == "full" else "adapter")
    merged = out_dir / "merged"
    return FinetuneResult(out_dir=out_dir, method=cfg.finetune.method, layers=list(metrics.get("layers", [])),
                          model_path=model_path, merged_path=merged if merged.is_dir() else None, metrics=metrics)
