"""The intrinsic-knowledge control: does the model's own, unedited knowledge survive fine-tuning?

Every trial holds apart a set of *native facts* the base model knows and nobody edits. They are
chosen in three steps (:func:`native_pool`, :func:`select_known`):

1. **The pool**: the edit dataset's records outside the edit batch, in dataset order, then (with
   ``eval.native_pool: [records, neighborhood]``) the neighborhood probes of those records (zsRE:
   the NQ ``loc`` questions; CounterFact: prompts about other subjects), as zsRE-style facts.
2. **Disjoint from the edits and the fine-tuning data**: a candidate is left out, and counted under
   its reason (``native.excluded.<reason>``), when it

   - ``subject``: has the subject of an edit (zsRE asks several questions per subject, CounterFact
     shares subjects between relations; MEMIT's edit rewrites what the subject's last token recalls);
   - ``subject_answer``: states an edited fact under a variant of the subject's name — the same
     answer, and one subject contains the other (``USS Leedstown`` / ``USS Leedstown (APA-56)``);
   - ``paraphrase``: asks one of an edit's questions (its rewrite prompt or a paraphrase, compared
     case- and punctuation-insensitively), or mentions an edited subject, or is mentioned by one;
   - ``probe``: is one of the edits' neighborhood probes (NS measures what the edit does to those);
   - ``finetune``: asks a question of the fine-tuning data (fine-tuning would teach it).
3. **Known by the base model**, by the rule that scores an edit (mirrored), scored in pool order
   until ``eval.native_facts`` are known or the pool is exhausted. ``native.n_tried`` says how many
   candidates that took. Fewer than ``eval.native_min_facts`` known: the control is *missing*
   (:attr:`NativeControl.missing`, a reason, never a retention of 0 or 1).

The rules, mirrored so "edits survive X, native facts survive Y" compares like with like:

- CounterFact style: the fact is *known* when its true answer (``target_true``) beats the record's
  counterfactual (``target_new``) by mean per-token NLL — ES's rule with the two answers swapped,
  and NS's rule. (A rule on the top-1 token alone would also count facts as lost whenever
  fine-tuning shifts which *word* follows the prompt — measured on the toy: after the downstream
  task, "The capital of X is" continues with a kind word — while ES, which compares two answers,
  does not see that shift.)
- zsRE style (MEMIT's convention: ``target_new`` is the true answer, there is no alternative): known
  when every answer token is the top-1 prediction (teacher forced), zsRE's success rule — the
  trial's rule for a successful edit (ES of 1).

The per-fact table also keeps the top-1 rule (``top1``: every true-answer token is the argmax) for
both styles; ``<group>.native.top1`` is its accuracy.

``native.retention`` is the fraction of the native facts still known after KE→FT (with a 95 % Wilson
interval, ``native.retention_ci_low``/``_high``), ``native.retention_ftonly`` after FT-only,
``native.retention_edit`` after editing alone (the edit's collateral damage). Next to
``survival.survival`` a trial thus says "edits survive X, the model's own facts survive Y" (the peer
study, arXiv 2507.14198, reports edited knowledge decays faster than intrinsic knowledge).
``<group>.native.acc`` is each group's accuracy on the native facts.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from editdecay.data.records import EditRecord

GROUPS = ("base", "ftonly", "edit", "ft")


def native_answer(record: EditRecord) -> str:
    """The record's true answer: ``target_true``, or ``target_new`` where the dataset has no true
    target (zsRE, MEMIT convention: the edit target *is* the true answer)."""
    return record.target_true if record.target_true is not None else record.target_new


EXCLUSION_REASONS = ("subject", "subject_answer", "paraphrase", "probe", "finetune")
# What "known" means (metrics/edit.py's success rules, mirrored); part of the native stage's cache key.
KNOWN_RULE = "counterfact: nll(true) < nll(new); zsre: every answer token top-1"


def question_key(text: str) -> str:
    """A question as compared for overlap: Unicode NFKC, case-folded, whitespace collapsed, zsRE's
    ``nq question:`` prefix and surrounding punctuation removed."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    text = text.removeprefix("nq question:").strip()
    return text.strip(" ?.!:;,'\"")


def _mentions(names: Iterable[str]) -> re.Pattern | None:
    """One pattern that finds any of ``names`` as whole words (longest first)."""
    keys = sorted({k for k in names if k}, key=len, reverse=True)
    if not keys:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, keys)) + r")(?!\w)")


@dataclass
class NativePool:
    """The candidates for native facts, disjoint from the edits (and the fine-tuning data), in pool
    order; ``excluded`` counts the ones left out, by reason (:data:`EXCLUSION_REASONS`)."""

    candidates: list[EditRecord]
    excluded: dict[str, int]


class EditedFacts:
    """What the edit batch touches, to test a candidate against (see the module docstring)."""

    def __init__(self, batch: Sequence[EditRecord], finetune_questions: Iterable[str] = ()):
        self.subjects = {question_key(r.subject) for r in batch}
        self.answers: dict[str, set[str]] = {}  # answer -> the edited subjects it belongs to
        for r in batch:
            for answer in {r.target_new, *([r.target_true] if r.target_true else [])}:
                self.answers.setdefault(question_key(answer), set()).add(question_key(r.subject))
        self.questions = {question_key(p) for r in batch for p in (r.rewrite_prompt, *r.paraphrase_prompts)}
        self.edit_text = "\n".join(sorted(self.questions))
        self.subject_pattern = _mentions(self.subjects)
        self.probes = {question_key(p) for r in batch for p in r.neighborhood_prompts}
        self.finetune = {question_key(q) for q in finetune_questions if q}

    def overlap(self, candidate: EditRecord) -> str | None:
        """The first reason ``candidate`` cannot be a native fact, or None."""
        subject = question_key(candidate.subject)
        if subject in self.subjects:
            return "subject"
        for edited in self.answers.get(question_key(native_answer(candidate)), ()):
            if _contains(subject, edited) or _contains(edited, subject):
                return "subject_answer"
        questions = {question_key(p) for p in (candidate.rewrite_prompt, *candidate.paraphrase_prompts)}
        if questions & self.questions:
            return "paraphrase"
        if self.subject_pattern is not None and any(self.subject_pattern.search(q) for q in questions):
            return "paraphrase"  # it asks about an edited subject under another subject name
        if _contains(self.edit_text, subject):
            return "paraphrase"  # an edit's question is about this candidate's subject
        if questions & self.probes:
            return "probe"
        if questions & self.finetune:
            return "finetune"
        return None


def _contains(text: str, name: str) -> bool:
    # The plain substring test first: cheap, and most candidates fail it (CounterFact: 20k of them).
    return bool(name) and name in text and re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text) is not None


def neighborhood_facts(records: Sequence[EditRecord]) -> list[EditRecord]:
    """The neighborhood probes of ``records`` with their answers, as zsRE-style facts (the probe is
    the whole question; zsRE: the NQ ``loc`` question, scored as NS scores it)."""
    facts, seen = [], set()
    for r in records:
        for j, (prompt, answer) in enumerate(zip(r.neighborhood_prompts, r.neighborhood_answers)):
            if question_key(prompt) in seen:
                continue
            seen.add(question_key(prompt))
            facts.append(EditRecord(case_id=f"nb:{r.case_id}:{j}", subject=prompt, prompt="{}", target_new=answer,
                                    style="zsre"))
    return facts


def native_pool(batch: Sequence[EditRecord], candidates: Sequence[EditRecord],
                finetune_questions: Iterable[str] = ()) -> NativePool:
    """``candidates`` (in order) without those that overlap the edit batch or ask a fine-tuning
    question (:class:`EditedFacts`); a case_id of the batch, or seen before, is skipped too."""
    edited = EditedFacts(batch, finetune_questions)
    seen = {str(r.case_id) for r in batch}
    kept, excluded = [], dict.fromkeys(EXCLUSION_REASONS, 0)
    for r in candidates:
        if str(r.case_id) in seen:
            continue
        seen.add(str(r.case_id))
        reason = edited.overlap(r)
        if reason is None:
            kept.append(r)
        else:
            excluded[reason] += 1
    return NativePool(kept, excluded)


@dataclass
class NativeControl:
    """The selected native facts and how they were found: ``tried`` candidates of the ``pool``
    scored on the base model (in order, until ``wanted`` were known), ``missing`` the reason the
    control is not reported (fewer known than ``minimum``), or None."""

    records: list[EditRecord]
    tried: int
    pool: int
    wanted: int
    minimum: int
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def missing(self) -> str | None:
        if self.wanted == 0:
            return "eval.native_facts is 0"
        if len(self.records) >= self.minimum:
            return None
        return (f"the base model knows {len(self.records)} of the {self.tried} candidate facts tried "
                f"(fewer than eval.native_min_facts={self.minimum}; the pool had {self.pool} facts disjoint "
                "from the edits); widen eval.native_pool or lower eval.native_min_facts")

    @property
    def facts(self) -> list[EditRecord]:
        """The facts to score in every group: none when the control is missing."""
        return [] if self.missing else self.records

    def metrics(self) -> dict[str, float]:
        return {"native.n_found": float(len(self.records)), "native.n_tried": float(self.tried),
                "native.n_pool": float(self.pool),
                **{f"native.excluded.{k}": float(v) for k, v in self.excluded.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"case_ids": [str(r.case_id) for r in self.records], "tried": self.tried, "pool": self.pool,
                "wanted": self.wanted, "minimum": self.minimum, "excluded": self.excluded}


def select_known(candidates: Sequence[EditRecord], known: Callable[[Sequence[EditRecord]], Sequence[bool]],
                 n: int, chunk: int = 64) -> tuple[list[EditRecord], int]:
    """The first ``n`` candidates (in order) that ``known`` accepts, and how many were tried to find
    them (all, when fewer exist). ``known`` scores a chunk at a time; the answer does not depend on
    the chunk size."""
    found: list[EditRecord] = []
    for start in range(0, len(candidates), chunk):
        part = candidates[start:start + chunk]
        for i, (r, ok) in enumerate(zip(part, known(part))):
            if ok:
                found.append(r)
                if len(found) == n:
                    return found, start + i + 1
    return found, len(candidates)


def native_records(batch: Sequence[EditRecord], rest: Sequence[EditRecord], n: int) -> list[EditRecord]:
    """The first ``n`` records of ``rest`` disjoint from the batch (:func:`native_pool`), unscored:
    where the base model's knowledge is not asked (tests, a quick look at the pool)."""
    return native_pool(batch, rest).candidates[:n]


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
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = wilson_interval(int(still.sum()), len(still))
    return metrics, per_fact


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k`` of ``n`` (scipy); NaN without observations."""
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
