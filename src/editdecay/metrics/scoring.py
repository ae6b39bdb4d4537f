"""Teacher-forced scoring of a target continuation after a prompt, batched and padding-correct.

The one primitive every edit metric rests on (DESIGN "Definitions"): for ``prompt`` and
``target`` we need the mean per-token NLL of the target (CounterFact-style ES/PS/NS compare these)
and whether each target token is the model's top-1 prediction (zsRE-style accuracy, toy recall).

Tokenisation: the prompt and ``prompt + " " + target`` are tokenised as one string and the target
tokens are found by character offsets, so byte-level BPE (GPT-2: " Paris" is one token),
SentencePiece (Llama-2) and BOS-adding tokenizers (Llama, the toy world) all work the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editdecay.errors import DataError


@dataclass(frozen=True)
class TargetScore:
    nll: float  # mean per-token negative log-likelihood of the target
    token_correct: tuple[bool, ...]  # top-1 == target token, per target token

    @property
    def all_correct(self) -> bool:
        return all(self.token_correct)

    @property
    def token_accuracy(self) -> float:
        return sum(self.token_correct) / len(self.token_correct)


def encode_with_target(tokenizer, prompt: str, target: str) -> tuple[list[int], int]:
    """Token ids of ``prompt + " " + target`` and how many of them (the tail) belong to the target."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer (offsets are needed)")
    target = target.strip()
    if not target:
        raise DataError(f"target {target!r} tokenises to nothing after prompt {prompt!r} (it is empty)")
    text = f"{prompt.rstrip()} {target}"
    boundary = len(prompt.rstrip())
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    offsets = enc["offset_mapping"]
    # Special tokens (BOS) report (0, 0); target tokens start at or after the space before it.
    n_target = sum(1 for start, end in offsets if end > start and start >= boundary)
    if n_target == 0:
        raise DataError(f"target {target!r} tokenises to nothing after prompt {prompt!r}")
    return list(enc["input_ids"]), n_target


def score_targets(model, tokenizer, prompts: list[str], targets: list[str], batch_size: int = 32) -> list[TargetScore]:
    """Score each (prompt, target) pair; right-padded batches, logits read only at real positions.

    Runs in eval mode (no dropout) and restores the model's mode after, so a training callback
    can call it mid-training.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _score(model, tokenizer, prompts, targets, batch_size)
    finally:
        model.train(was_training)


def encode_targets(tokenizer, prompts: list[str], targets: list[str]) -> list[tuple[list[int], int]]:
    """:func:`encode_with_target` for each pair: what :func:`score_encoded` scores. An evaluation
    repeated on the same pairs (the decay curve) encodes them once."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    return [encode_with_target(tokenizer, p, t) for p, t in zip(prompts, targets)]


def score_encoded(model, tokenizer, encoded: list[tuple[list[int], int]], batch_size: int = 32) -> list[TargetScore]:
    """:func:`score_targets` on pairs already encoded by :func:`encode_targets`: the same batches,
    the same numbers."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _score_encoded(model, tokenizer, encoded, batch_size)
    finally:
        model.train(was_training)


def _score(model, tokenizer, prompts: list[str], targets: list[str], batch_size: int) -> list[TargetScore]:
    return _score_encoded(model, tokenizer, encode_targets(tokenizer, prompts, targets), batch_size)


def _score_encoded(model, tokenizer, encoded: list[tuple[list[int], int]], batch_size: int) -> list[TargetScore]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    # Sort by length so each batch pads little; restore the order at the end.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    by_index: dict[int, TargetScore] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [encoded[i][0] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        for row, i in enumerate(idx):
            seq, n_target = encoded[i]
            end = len(seq)
            positions = torch.arange(end - n_target - 1, end - 1, device=logits.device)
            wanted = torch.tensor(seq[end - n_target :], device=logits.device)
            step_logits = logits[row, positions]
            logprobs = torch.log_softmax(step_logits, dim=-1).gather(1, wanted[:, None]).squeeze(1)
            correct = (step_logits.argmax(-1) == wanted).tolist()
            by_index[i] = TargetScore(nll=float(-logprobs.mean()), token_correct=tuple(bool(c) for c in correct))
    return [by_index[i] for i in range(len(encoded))]
