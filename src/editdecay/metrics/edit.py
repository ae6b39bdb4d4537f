"""Per-edit efficacy (ES), paraphrase (PS) and neighborhood (NS) success, batched.

CounterFact style (``target_true`` given), as the ROME/MEMIT evaluation: every prompt compares the
mean per-token NLL of two targets. ES: target_new beats target_true after the rewrite prompt; PS:
the same on each paraphrase (averaged per edit); NS: on each neighborhood prompt its own answer
(``neighborhood_answers``; in CounterFact always target_true) beats target_new. The probabilities
exp(−mean NLL) are reported too.

zsRE style (``target_true`` None, MEMIT's convention): teacher-forced top-1 token accuracy of
target_new after the question (ES) and its paraphrase (PS), and of the NQ answer after the ``loc``
probe (NS).

All prompts of all records go through one :func:`~editdecay.metrics.scoring.score_targets` call
(length-sorted, right-padded, BOS-aware tokenisation by character offsets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from editdecay.data.records import EditRecord
from editdecay.metrics.scoring import TargetScore, encode_targets, score_encoded

SUMMARY_METRICS = ("es", "ps", "ns")


@dataclass
class EditEval:
    per_edit: pd.DataFrame  # one row per edit
    summary: dict[str, float]  # es, ps, ns: means over edits (fractions in [0, 1])


def evaluate_edits(model, tokenizer, records: Sequence[EditRecord], batch_size: int = 32,
                   exclude_edited_neighbors: bool = True) -> EditEval:
    """Score every record; ``exclude_edited_neighbors`` leaves out neighborhood prompts about a
    subject that another record of the same batch edits with the same prompt (its answer is meant
    to change; in the small fact world a third of a 100-edit batch's neighbors are such)."""
    return EditEvaluator(tokenizer, records, batch_size, exclude_edited_neighbors)(model)


class EditEvaluator:
    """:func:`evaluate_edits` split in two: the prompts are laid out and tokenised once, here, and
    each call scores them on a model. The decay curve evaluates the same edits a dozen times."""

    def __init__(self, tokenizer, records: Sequence[EditRecord], batch_size: int = 32,
                 exclude_edited_neighbors: bool = True) -> None:
        self.tokenizer, self.records, self.batch_size = tokenizer, list(records), batch_size
        prompts, targets, self.keys = _layout(self.records, exclude_edited_neighbors)
        self.encoded = encode_targets(tokenizer, prompts, targets)

    def __call__(self, model) -> EditEval:
        scores = score_encoded(model, self.tokenizer, self.encoded, batch_size=self.batch_size) if self.encoded else []
        return _tabulate(self.records, dict(zip(self.keys, scores)))


def _layout(records: Sequence[EditRecord], exclude_edited_neighbors: bool
            ) -> tuple[list[str], list[str], list[tuple[int, str, str]]]:
    """Every scored (prompt, target) pair of the records, and its (record index, field, which target)."""
    edited_prompts = {r.rewrite_prompt for r in records} if exclude_edited_neighbors else set()
    prompts: list[str] = []
    targets: list[str] = []
    # (record index, field, which target) for every scored pair, to put the scores back.
    keys: list[tuple[int, str, str]] = []

    def add(i: int, field: str, prompt: str, target: str, which: str) -> None:
        prompts.append(prompt)
        targets.append(target)
        keys.append((i, field, which))

    for i, r in enumerate(records):
        cf = r.target_true is not None
        add(i, "rewrite", r.rewrite_prompt, r.target_new, "new")
        if cf:
            add(i, "rewrite", r.rewrite_prompt, r.target_true, "true")
        for j, p in enumerate(r.paraphrase_prompts):
            add(i, f"para{j}", p, r.target_new, "new")
            if cf:
                add(i, f"para{j}", p, r.target_true, "true")
        for j, (p, answer) in enumerate(zip(r.neighborhood_prompts, r.neighborhood_answers)):
            if p in edited_prompts:
                continue
            add(i, f"nb{j}", p, answer, "true")
            if cf:
                add(i, f"nb{j}", p, r.target_new, "new")
    return prompts, targets, keys


def _tabulate(records: Sequence[EditRecord], by: dict[tuple[int, str, str], TargetScore]) -> EditEval:
    rows = []
    for i, r in enumerate(records):
        cf = r.target_true is not None
        row: dict[str, object] = {"case_id": str(r.case_id), "subject": r.subject, "style": "counterfact" if cf else "zsre",
                                  "target_new": r.target_new, "target_true": r.target_true}
        paras = [f"para{j}" for j in range(len(r.paraphrase_prompts))]
        nbs = [f"nb{j}" for j in range(len(r.neighborhood_prompts)) if (i, f"nb{j}", "true") in by]
        row["n_neighbors"] = len(nbs)
        if cf:
            new, true = by[(i, "rewrite", "new")], by[(i, "rewrite", "true")]
            row.update(es=float(new.nll < true.nll), p_new=float(np.exp(-new.nll)), p_true=float(np.exp(-true.nll)),
                       nll_new=new.nll, nll_true=true.nll)
            row["ps"] = _mean([float(by[(i, k, "new")].nll < by[(i, k, "true")].nll) for k in paras])
            row["ps_p_new"] = _mean([float(np.exp(-by[(i, k, "new")].nll)) for k in paras])
            row["ns"] = _mean([float(by[(i, k, "true")].nll < by[(i, k, "new")].nll) for k in nbs])
            row["ns_p_true"] = _mean([float(np.exp(-by[(i, k, "true")].nll)) for k in nbs])
        else:
            new = by[(i, "rewrite", "new")]
            row.update(es=new.token_accuracy, p_new=float(np.exp(-new.nll)), nll_new=new.nll)
            row["ps"] = _mean([by[(i, k, "new")].token_accuracy for k in paras])
            row["ns"] = _mean([by[(i, k, "true")].token_accuracy for k in nbs])
        rows.append(row)
    table = pd.DataFrame(rows)
    summary = {m: float(table[m].mean(skipna=True)) if len(table) and table[m].notna().any() else float("nan")
               for m in SUMMARY_METRICS}
    return EditEval(table, summary)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
