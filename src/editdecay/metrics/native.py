"""The intrinsic-knowledge control: does the model's own, unedited knowledge survive fine-tuning?

Every trial holds apart a fixed set of *native facts*: records of the same edit dataset that are
not in the edit batch (the first ``eval.native_facts`` of the records outside it). They are never
edited; each is asked with its rewrite prompt and scored by the rule that scores an edit, mirrored,
so "edits survive X, native facts survive Y" compares like with like:

- CounterFact style: the fact is *known* when its true answer (``target_true``) beats the record's
  counterfactual (``target_new``) by mean per-token NLL — ES's rule with the two answers swapped,
  and NS's rule. (A rule on the top-1 token alone would also count facts as lost whenever
  fine-tuning shifts which *word* follows the prompt — measured on the toy: after the downstream
  task, "The capital of X is" continues with a kind word — while ES, which compares two answers,
  does not see that shift.)
- zsRE style (MEMIT's convention: ``target_new`` is the true answer, there is no alternative): known
  when every answer token is the top-1 prediction (teacher forced), zsRE's success rule.

The per-fact table also keeps the top-1 rule (``top1``: every true-answer token is the argmax) for
both styles; ``<group>.native.top1`` is its accuracy.

Only facts the base model knows count: ``native.retention`` is the fraction of them still known
after KE→FT, ``native.retention_ftonly`` after FT-only, ``native.retention_edit`` after editing
alone (the edit's collateral damage). Next to ``survival.survival`` a trial thus says "edits
survive X, the model's own facts survive Y" (the peer study, arXiv 2507.14198, reports edited
knowledge decays faster than intrinsic knowledge). ``<group>.native.acc`` is each group's accuracy
on all native facts, known by the base model or not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from editdecay.data.records import EditRecord

GROUPS = ("base", "ftonly", "edit", "ft")


def native_answer(record: EditRecord) -> str:
    """The record's true answer: ``target_true``, or ``target_new`` where the dataset has no true
    target (zsRE, MEMIT convention: the edit target *is* the true answer)."""
    return record.target_true if record.target_true is not None else record.target_new


def native_records(batch: Sequence[EditRecord], rest: Sequence[EditRecord], n: int) -> list[EditRecord]:
    """The first ``n`` records of ``rest`` (the dataset without the edit batch), leaving out any that
    ask the same prompt of the same subject as an edit (its answer is meant to change) — fewer than
    ``n`` where the dataset runs out."""
    edited = {r.rewrite_prompt for r in batch}
    return [r for r in rest[:n] if r.rewrite_prompt not in edited]


def evaluate_native(model, tokenizer, records: Sequence[EditRecord], batch_size: int = 32) -> pd.DataFrame:
    """One row per native fact: whether the model knows it (``known``), the answer's mean NLL and
    token accuracy."""
    from editdecay.metrics.scoring import score_targets  # torch: only where a model is scored

    columns = ["case_id", "subject", "prompt", "answer", "known", "top1", "nll", "nll_alternative", "token_accuracy"]
    if not records:
        return pd.DataFrame(columns=columns)
    prompts = [r.rewrite_prompt for r in records]
    answers = [native_answer(r) for r in records]
    # CounterFact records also score their counterfactual, in the same batched call.
    rivals = [(i, r.target_new) for i, r in enumerate(records) if r.target_true is not None]
    scores = score_targets(model, tokenizer, prompts + [prompts[i] for i, _ in rivals],
                           answers + [alt for _, alt in rivals], batch_size=batch_size)
    alternative = {i: s for (i, _), s in zip(rivals, scores[len(records):])}
    rows = []
    for i, (r, p, a, s) in enumerate(zip(records, prompts, answers, scores)):
        alt = alternative.get(i)
        rows.append({"case_id": str(r.case_id), "subject": r.subject, "prompt": p, "answer": a,
                     "known": s.nll < alt.nll if alt is not None else s.all_correct, "top1": s.all_correct,
                     "nll": s.nll, "nll_alternative": alt.nll if alt is not None else math.nan,
                     "token_accuracy": s.token_accuracy})
    return pd.DataFrame(rows, columns=columns)


def native_summary(tables: Mapping[str, pd.DataFrame | None]) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics and the per-fact table (``known_<group>``, ``nll_<group>`` side by side) from each
    group's :func:`evaluate_native` table; ``tables["base"]`` defines which facts are known.
    Retention is NaN where the base model knows none of the facts (no denominator)."""
    base = tables.get("base")
    if base is None:
        raise ValueError("the native-fact control needs the base model's table")
    per_fact = base[["case_id", "subject", "prompt", "answer"]].copy()
    metrics: dict[str, float] = {"native.n_facts": float(len(base))}
    for group in GROUPS:
        table = tables.get(group)
        if table is None:
            continue
        if list(table["case_id"]) != list(base["case_id"]):
            raise ValueError(f"native facts of group {group} differ from the base model's")
        per_fact[f"known_{group}"] = table["known"].astype(bool).to_numpy()
        per_fact[f"top1_{group}"] = table["top1"].astype(bool).to_numpy()
        per_fact[f"nll_{group}"] = table["nll"].to_numpy()
        metrics[f"{group}.native.acc"] = float(per_fact[f"known_{group}"].mean()) if len(table) else math.nan
        metrics[f"{group}.native.top1"] = float(per_fact[f"top1_{group}"].mean()) if len(table) else math.nan
    known = per_fact["known_base"]
    metrics["native.n_known"] = float(known.sum())
    for group, name in (("edit", "native.retention_edit"), ("ftonly", "native.retention_ftonly"),
                        ("ft", "native.retention")):
        if f"known_{group}" in per_fact:
            still = per_fact.loc[known, f"known_{group}"]
            metrics[name] = float(still.mean()) if len(still) else math.nan
    return metrics, per_fact
