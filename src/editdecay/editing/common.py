"""What every editor shares: its error type, prompt encoding with the subject located by character
offsets, batch padding, and reading or editing a module's input/output with hooks."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from editdecay.errors import EditDecayError
from editdecay.metrics.scoring import encode_with_target


class EditError(EditDecayError):
    """An edit cannot be made as asked (bad layers, a record the tokenizer cannot place, a non-finite solve)."""


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    lookup: int  # where keys are read and δ is added: the subject's last token, or the prompt's last
    n_target: int = 0  # how many tail tokens of ids are the target (0: no target)


def fill(template: str, subject: str, *, context: str = "{}") -> tuple[str, tuple[int, int]]:
    """``context.format(template.format(subject))`` and the subject's character span in it."""
    if context.count("{}") != 1 or template.count("{}") != 1:
        raise EditError(f"subject {subject!r} not found in prompt {template!r}: the prompt needs exactly one "
                        "'{}' where the subject goes")
    pre = context.index("{}")
    text = context.replace("{}", template, 1)
    start = pre + template.index("{}")
    return text.replace("{}", subject, 1), (start, start + len(subject))


def encode(tokenizer, text: str, span: tuple[int, int], target: str | None = None,
           fact_token: str = "subject_last") -> Encoded:
    """Token ids of ``text`` (+ ``" " + target``) and the lookup index.

    ``fact_token`` is the reference code's ``fact_token`` strategy: ``subject_last`` (MEMIT's
    default: the subject's last token) or ``last`` (the prompt's last token, before the target).

    The target goes through :func:`encode_with_target`, the same tokenisation the metrics use, so an
    edit is trained on exactly the tokens it is scored on.
    """
    if target is not None:
        ids, n_target = encode_with_target(tokenizer, text, target)
        full = f"{text.rstrip()} {target.strip()}"
    else:
        full, n_target = text, 0
    enc = tokenizer(full, return_offsets_mapping=True, add_special_tokens=True)
    if target is None:
        ids = list(enc["input_ids"])
    start, end = span
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    if not inside or start >= len(text):
        raise EditError(f"subject {text[start:end]!r} not found among the tokens of prompt {text!r}")
    if fact_token == "last":
        return Encoded(ids=ids, lookup=len(ids) - n_target - 1, n_target=n_target)
    return Encoded(ids=ids, lookup=inside[-1], n_target=n_target)


def pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (positions stay 0..len-1 for every architecture)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids.to(device), mask.to(device)


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def hidden_of(output):
    """A block's output hidden state, whether the block returns a tensor or a tuple."""
    return output[0] if isinstance(output, tuple) else output


def replace_hidden(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise EditError(f"{what} has {bad} non-finite value(s) (NaN/inf); nothing was written — check the model "
                        "weights, the layer statistics, and lower edit.v_lr or raise edit.mom2_weight")


class _Replay(torch.nn.Module):
    """Stands in for a transformer block whose output cannot change: returns ``output`` as recorded,
    or (``output is None``) passes its input hidden state through in the block's output type."""

    def __init__(self, output, tuple_rest: tuple | None):
        super().__init__()
        self.output = output
        self.tuple_rest = tuple_rest  # a tuple-returning block's other outputs (None: it returns a tensor)

    def forward(self, *args, **kwargs):
        if self.output is not None:
            return self.output
        hidden = args[0] if args else kwargs["hidden_states"]
        return hidden if self.tuple_rest is None else (hidden, *self.tuple_rest)


RowSelect = Callable[[torch.Tensor, int], None]


@contextmanager
def frozen_prefix(model: torch.nn.Module, block_paths: list[str], run_once: Callable[[], None]) -> Iterator[RowSelect]:
    """Blocks ``block_paths[:-1]`` and ``block_paths[-1]`` (the block whose output δ is added to)
    do not depend on δ: run the model once (``run_once``) recording the last one's output, then
    replace the earlier blocks by pass-throughs and the last by a replay of its output, so every z
    step computes only the blocks after it. The reference recomputes them every step; the result is
    the same (tests compare both), the work per step falls by the prefix's share of the layers.
    Hooks registered on the last block's module must be registered on ``model`` after entering.

    Yields ``select(rows, width)``: from then on the replay returns the recorded output of those
    batch rows, cut to the first ``width`` positions (the caller then feeds the same rows and
    width): converged requests leave the batch without recomputing anything."""
    from editdecay.arch import get_module

    recorded: dict[str, object] = {}

    def record(_module, _args, output):
        recorded["out"] = output.detach() if torch.is_tensor(output) else tuple(
            o.detach() if torch.is_tensor(o) else o for o in output)

    last = get_module(model, block_paths[-1])
    with torch.no_grad(), hooks([last.register_forward_hook(record)]):
        run_once()
    out = recorded["out"]
    rest = None if torch.is_tensor(out) else tuple(out[1:])
    hidden = out if torch.is_tensor(out) else out[0]
    replay = _Replay(out, rest)

    def select(rows: torch.Tensor, width: int) -> None:
        part = hidden[rows, :width]
        replay.output = part if rest is None else (part, *rest)

    swapped: list[tuple[torch.nn.ModuleList, int, torch.nn.Module]] = []
    try:
        for i, path in enumerate(block_paths):
            parent_path, index = path.rsplit(".", 1)
            parent = get_module(model, parent_path)
            swapped.append((parent, int(index), parent[int(index)]))
            parent[int(index)] = replay if i == len(block_paths) - 1 else _Replay(None, rest)
        yield select
    finally:
        for parent, index, module in reversed(swapped):
            parent[index] = module
