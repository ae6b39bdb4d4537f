"""The editor protocol, the edit result, and the registry of editors.

A new editor is one new file with a class that follows :class:`Editor` plus one entry in
:data:`EDITORS`. An editor makes a *session* on a model; a session edits batches of records in
place and returns an :class:`EditResult` per batch. State that must carry between sequential
batches (AlphaEdit's K_pK_pᵀ) lives in the session, so it never leaks into another session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from editdecay.data.records import EditRecord
from editdecay.editing.common import EditError
from editdecay.editing.deltas import EditDeltas, WeightSnapshot
from editdecay.editing.hparams import EditHparams


@dataclass
class EditResult:
    method: str
    n_edits: int
    deltas: EditDeltas
    snapshot: WeightSnapshot  # the weights before these edits: revert() restores them bit for bit
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    norms: dict[str, float] = field(default_factory=dict)  # ‖Δ‖_F per layer, mean ‖δ‖ of z

    def revert(self, model: torch.nn.Module) -> None:
        self.snapshot.restore(model)

    def __add__(self, later: "EditResult") -> "EditResult":
        """This result followed by a later one (sequential chunks): one delta, the first snapshot."""
        timings = {k: self.timings.get(k, 0.0) + later.timings.get(k, 0.0) for k in {*self.timings, *later.timings}}
        deltas = self.deltas + later.deltas
        norms = {f"delta.layer{layer}": n for layer, n in deltas.norms().items()}
        return EditResult(self.method, self.n_edits + later.n_edits, deltas, self.snapshot, timings, norms)


class EditSession(Protocol):
    # targets: the z stage's editdecay.editing.targets.Targets for these records (None: compute z)
    def edit(self, records: Sequence[EditRecord], targets=None) -> EditResult: ...


class Editor(Protocol):
    name: str

    def __init__(self, hparams: EditHparams) -> None: ...

    def session(self, model: torch.nn.Module, tokenizer, second_moments: dict[int, torch.Tensor]) -> EditSession: ...


def _memit() -> type:
    from editdecay.editing.memit import MemitEditor

    return MemitEditor


def _alphaedit() -> type:
    from editdecay.editing.alphaedit import AlphaEditEditor

    return AlphaEditEditor


# name -> a function returning the editor class (imported lazily: a registry lookup loads one file).
EDITORS: dict[str, Callable[[], type]] = {"memit": _memit, "alphaedit": _alphaedit}


def get_editor(name: str, hparams: EditHparams) -> Editor:
    if name not in EDITORS:
        raise EditError(f"edit.method: unknown editor {name!r}; available: {', '.join(EDITORS)}")
    return EDITORS[name]()(hparams)


def run_edits(editor: Editor, model: torch.nn.Module, tokenizer, records: Sequence[EditRecord],
              second_moments: dict[int, torch.Tensor], chunk_size: int | None = None, targets=None) -> EditResult:
    """Edit in one batch (``chunk_size`` None) or sequentially in chunks, all in one session.
    ``targets``: z precomputed by the z stage (one batch only: a later chunk's z depends on the
    edits before it).

    On an error in a later chunk the earlier chunks are reverted too: nothing half-written.
    """
    if not records:
        raise EditError("no edit records to apply")
    size = chunk_size or len(records)
    if targets is not None and size < len(records):
        raise EditError(f"precomputed target vectors z need one batch; edit.chunk_size={chunk_size} splits "
                        f"{len(records)} edits (each chunk's z is read from the model the chunks before edited)")
    session = editor.session(model, tokenizer, second_moments)
    total: EditResult | None = None
    start = time.perf_counter()
    try:
        for i in range(0, len(records), size):
            result = session.edit(records[i : i + size], targets) if targets is not None else session.edit(records[i : i + size])
            total = result if total is None else total + result
    except BaseException:
        if total is not None:
            total.revert(model)
        raise
    assert total is not None
    if size < len(records):
        # Sequential chunks round differently from their summed delta; re-applying the sum makes the
        # edited model exactly base + deltas, the model every later stage rebuilds from the deltas file.
        total.revert(model)
        total.deltas.apply(model)
    total.timings["total"] = time.perf_counter() - start
    return total
