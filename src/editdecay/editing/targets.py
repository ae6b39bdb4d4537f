"""The z stage: MEMIT's / AlphaEdit's target value vectors, computed once and shared.

z (:func:`editdecay.editing.memit.compute_zs`) depends on the model, the records, the z layer
(the last edited layer) and the z hyperparameters — steps, lr, norm clamp, KL factor, weight decay,
the context templates, the fact token and the early-stop loss — and on nothing the editor or its
update adds: λ (``mom2_weight``), AlphaEdit's α and null-space threshold, the layer statistics and
the other edited layers only act after z is fixed. So MEMIT and AlphaEdit on the same records,
and every λ / α / threshold, read one z; a real-model sweep computes each z once (the pipeline keys
the ``z`` stage by :func:`z_params`).

How z is computed in memory (``z_batch_size``, ``z_max_tokens``, ``reuse_prefix``) changes no
result beyond float rounding and is left out of the key. With sequential editing
(``edit.chunk_size`` below the number of edits) a later chunk's z is read from the model the
earlier chunks edited, which depends on the editor: such edits compute z inside the editor.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

from editdecay.data.records import EditRecord
from editdecay.editing.common import EditError
from editdecay.editing.hparams import EditHparams

# What z depends on besides the model, the records and the z layer (max of the edited layers).
Z_FIELDS = ("v_num_grad_steps", "v_lr", "clamp_norm_factor", "kl_factor", "v_weight_decay", "n_context_templates",
            "context_template_length", "template_seed", "fact_token", "z_stop_loss")


def z_params(hp: EditHparams) -> dict[str, Any]:
    """The hyperparameters that determine z (the z stage's key, with the model and the records)."""
    return {"z_layer": max(hp.layers), **{name: getattr(hp, name) for name in Z_FIELDS}}


@dataclass
class Targets:
    """z for a list of records (row i: ``case_ids[i]``), with what its optimisation reported."""

    z: torch.Tensor  # [n, d_model], float32
    info: dict[str, float] = field(default_factory=dict)  # z.delta_norm, z.final_loss, z.steps, ...
    case_ids: list[Any] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # z_params of the hyperparameters used
    seconds: float = 0.0

    @property
    def pair(self) -> tuple[torch.Tensor, dict[str, float]]:
        """``(z, info)``: what ``MemitSession.edit(records, targets)`` takes."""
        return self.z, self.info

    def check(self, records: Sequence[EditRecord], hp: EditHparams) -> None:
        """Refuse z computed for other records or other z hyperparameters."""
        if [r.case_id for r in records] != self.case_ids:
            raise EditError(f"the target vectors z were computed for {len(self.case_ids)} other records "
                            f"(case ids {self.case_ids[:3]}...), not these {len(records)}")
        if self.params and self.params != z_params(hp):
            raise EditError(f"the target vectors z were computed with other z hyperparameters: {self.params} "
                            f"!= {z_params(hp)}")

    def save(self, directory: Path) -> None:
        save_file({"z": self.z.detach().float().cpu().contiguous()}, str(Path(directory) / "z.safetensors"))
        (Path(directory) / "z.json").write_text(json.dumps(
            {"info": self.info, "case_ids": self.case_ids, "params": self.params, "seconds": self.seconds},
            indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> "Targets":
        record = json.loads((Path(directory) / "z.json").read_text())
        z = load_file(str(Path(directory) / "z.safetensors"))["z"].to(device)
        return cls(z, record["info"], record["case_ids"], record["params"], record["seconds"])


def compute_targets(model: torch.nn.Module, tokenizer, records: Sequence[EditRecord], hp: EditHparams) -> Targets:
    """z for ``records`` on ``model`` (the context templates are generated from the model, seeded)."""
    from editdecay.editing.memit import compute_zs, context_templates

    records = list(records)
    if not records:
        raise EditError("no edit records to compute target vectors for")
    start = time.perf_counter()
    templates = context_templates(model, tokenizer, hp.n_context_templates, hp.context_template_length, hp.template_seed)
    z, info = compute_zs(model, tokenizer, records, hp, templates)
    return Targets(z, info, [r.case_id for r in records], z_params(hp), time.perf_counter() - start)
