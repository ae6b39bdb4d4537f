"""Selective fine-tuning: ``finetune.layers`` → concrete block indices, and freezing for full FT.

``all`` | ``edited`` | ``non_edited`` | ``[i, j, …]``. "edited" is the edit config's layers (the
same trial's), or the editor's per-model default when ``edit.layers`` is null, or whatever the
caller passes explicitly (a trial that already knows which layers it edited).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from editdecay.arch import arch_for, check_layers, get_module, num_layers
from editdecay.config import EditConfig
from editdecay.errors import ConfigError


def edited_layers(model, edit: EditConfig | None, explicit: Sequence[int] | None = None) -> list[int]:
    """The layers the trial's editor writes to."""
    if explicit is not None:
        return check_layers(list(explicit), model, key="edited_layers")
    if edit is None or edit.method == "none":
        raise ConfigError(
            "finetune.layers=edited/non_edited needs an edit config (edit.method memit or alphaedit, "
            "optionally edit.layers) or explicit edited layers"
        )
    if edit.layers is not None:
        return check_layers(edit.layers, model, key="edit.layers")
    from editdecay.editing.hparams import default_edit_layers  # the editing engine owns the per-model defaults

    return check_layers(list(default_edit_layers(model)), model, key="edit.layers")


def resolve_layers(selection, model, edit: EditConfig | None = None, explicit_edited: Sequence[int] | None = None) -> list[int]:
    """Sorted block indices to fine-tune; one-line errors for indices the model does not have."""
    n = num_layers(model)
    if selection == "all":
        return list(range(n))
    if selection in ("edited", "non_edited"):
        edited = edited_layers(model, edit, explicit_edited)
        if selection == "edited":
            return edited
        rest = [i for i in range(n) if i not in edited]
        if not rest:
            raise ConfigError(f"finetune.layers=non_edited: every layer ({n}) is edited; nothing is left to fine-tune")
        return rest
    if isinstance(selection, (list, tuple)):
        if not selection:
            raise ConfigError("finetune.layers: an empty list selects nothing; give layer indices or all")
        return check_layers(list(selection), model, key="finetune.layers")
    raise ConfigError(f"finetune.layers: got {selection!r}; allowed: all, edited, non_edited or a list of indices")


def freeze_for_full_ft(model: torch.nn.Module, layers: Sequence[int], train_extra: Sequence[str] = ()) -> int:
    """Full FT of selected blocks: only those blocks' parameters (plus ``train_extra`` of
    embed / final_norm / lm_head) require grad. Returns the trainable parameter count.

    With all layers selected and nothing extra, the embeddings, final norm and head are trainable
    too (plain full fine-tuning); with a subset they stay frozen unless listed in ``train_extra``.
    """
    spec = arch_for(model)
    n = num_layers(model)
    if sorted(layers) == list(range(n)) and not train_extra:
        for p in model.parameters():
            p.requires_grad_(True)
        return sum(p.numel() for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    modules = [get_module(model, spec.block_path(i)) for i in layers]
    paths = {"embed": spec.embed, "final_norm": spec.final_norm, "lm_head": spec.lm_head}
    modules += [get_module(model, paths[name]) for name in train_extra]
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
    # Tied parameters are shared objects: count each once.
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
