"""Downstream accuracy (DS): the study's commonsense evaluation, and a faster log-likelihood mode.

``generate`` (the paper's way, LLM-Adapters' ``commonsense_evaluate.py``): render the prompt with
the fine-tuning template, decode with beams 4 / temperature 0.1 / top-p 0.75 / top-k 40 / 32 new
tokens (``do_sample`` off, as there: beam search, the sampling knobs are inert), and take the first
match of the task's answer regex in the generation. Prompts are left-padded so every row's
generation starts right after its own prompt. A generation without a match counts as wrong.

``loglik``: score each candidate answer's response ("the correct answer is answer2") by its summed
log-probability after the prompt and pick the best: no decoding, one forward pass per candidate.

Tasks and their answer formats (regexes as in LLM-Adapters, case-sensitive like the original):
boolq true/false, piqa solution1/2, siqa/ARC/OBQA answer1..5, hellaswag answer1..4, winogrande
option1/2; the fact world's ``world_kind`` (one of nine kind words: country, city, ...). Unknown
tasks get the pattern from the gold label's family (``answerN``, ``optionN``, ``solutionN``, true/false).
Result keys follow the project's names: ``ds.acc`` (mean over tasks) and ``ds.<task>``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from editdecay.errors import DataError
from editdecay.world.facts import KIND_WORDS

# The paper's decoding (LLM-Adapters commonsense_evaluate.py).
GENERATION_KWARGS = dict(num_beams=4, temperature=0.1, top_p=0.75, top_k=40, max_new_tokens=32, do_sample=False)

_ANSWERS_4 = ("answer1", "answer2", "answer3", "answer4")
_ANSWERS_5 = _ANSWERS_4 + ("answer5",)
TASK_CANDIDATES: dict[str, tuple[str, ...]] = {
    "boolq": ("true", "false"),
    "piqa": ("solution1", "solution2"),
    "social_i_qa": _ANSWERS_5,
    "siqa": _ANSWERS_5,
    "ARC-Challenge": _ANSWERS_5,
    "ARC-Easy": _ANSWERS_5,
    "openbookqa": _ANSWERS_5,
    "hellaswag": _ANSWERS_4,
    "winogrande": ("option1", "option2"),
    "world_kind": tuple(KIND_WORDS.values()),
}
_FAMILIES = (("answer", _ANSWERS_5), ("option", ("option1", "option2")), ("solution", ("solution1", "solution2")))


def candidates_for(task: str, gold: str = "") -> tuple[str, ...]:
    """The answer strings a task's generations are matched against."""
    if task in TASK_CANDIDATES:
        return TASK_CANDIDATES[task]
    gold = gold.strip()
    if gold in ("true", "false"):
        return ("true", "false")
    for prefix, cands in _FAMILIES:
        if gold.startswith(prefix):
            return cands
    raise DataError(f"downstream task '{task}': unknown answer format for gold answer {gold!r}")


def extract_answer(task: str, generation: str, gold: str = "") -> str:
    """The first candidate answer in the generation, '' when there is none (a wrong answer)."""
    pattern = "|".join(re.escape(c) for c in sorted(candidates_for(task, gold), key=len, reverse=True))
    found = re.findall(pattern, generation.strip())
    return found[0] if found else ""


# --------------------------------------------------------------------------------------------
# Data


def load_ds_rows(eval_cfg, world_cfg=None) -> list[dict[str, Any]]:
    """DS test rows (instruction, input, output, answer, task) from the eval config."""
    if eval_cfg.ds_source == "world":
        from editdecay.world.facts import World

        rows = World(world_cfg).downstream()["test"]
    else:
        if not eval_cfg.ds_path:
            raise DataError("eval.ds_path is required when eval.ds_source is 'file'")
        rows = _read_ds_path(Path(eval_cfg.ds_path))
    return limit_per_task(rows, eval_cfg.ds_max_examples)


def _read_ds_path(path: Path) -> list[dict[str, Any]]:
    """A JSON/JSONL file with a ``task`` field, or LLM-Adapters' ``dataset/<task>/test.json`` tree."""
    if path.is_dir():
        rows = []
        for test in sorted(path.glob("*/test.json")):
            rows += [{**r, "task": test.parent.name} for r in _read_json(test)]
        if not rows:
            raise DataError(f"eval.ds_path: directory {path} has no <task>/test.json files")
        return rows
    if not path.is_file():
        raise DataError(f"eval.ds_path: '{path}' does not exist")
    rows = _read_json(path)
    if rows and "task" not in rows[0]:
        rows = [{**r, "task": path.stem} for r in rows]
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"eval.ds_path: {path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or "instruction" not in r or "answer" not in r:
            raise DataError(f"eval.ds_path: {path} row {i}: needs 'instruction' and 'answer' fields")
    return rows


def limit_per_task(rows: list[dict[str, Any]], n: int | None) -> list[dict[str, Any]]:
    if n is None:
        return list(rows)
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        if seen[r.get("task", "")] < n:
            seen[r.get("task", "")] += 1
            out.append(r)
    return out


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class DownstreamResult:
    per_task: dict[str, float]
    n: dict[str, int]
    mode: str
    predictions: list[dict[str, str]] = field(default_factory=list)  # task, gold, pred, generation

    @property
    def acc(self) -> float:
        """Mean over tasks (the study averages the eight task accuracies)."""
        return sum(self.per_task.values()) / len(self.per_task) if self.per_task else float("nan")

    def metrics(self, prefix: str = "ds") -> dict[str, float]:
        return {f"{prefix}.acc": self.acc, **{f"{prefix}.{t}": v for t, v in sorted(self.per_task.items())}}


def evaluate_downstream(model, tokenizer, rows: list[dict[str, Any]], template: str, mode: str = "loglik",
                        batch_size: int = 8, generation_kwargs: dict | None = None) -> DownstreamResult:
    """Per-task and mean accuracy of ``model`` on instruction rows; restores train/eval mode."""
    if not rows:
        raise DataError("downstream evaluation: no rows")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if mode == "generate":
                preds = _generate(model, tokenizer, rows, template, batch_size, {**GENERATION_KWARGS, **(generation_kwargs or {})})
            elif mode == "loglik":
                preds = _loglik(model, tokenizer, rows, template, batch_size)
            else:
                raise DataError(f"eval.ds_mode: got '{mode}'; allowed: loglik, generate")
    finally:
        model.train(was_training)
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for p in preds:
        total[p["task"]] += 1
        correct[p["task"]] += p["pred"] == p["gold"]
    per_task = {t: correct[t] / total[t] for t in total}
    return DownstreamResult(per_task=per_task, n=dict(total), mode=mode, predictions=preds)


def evaluate_configured(cfg, model, tokenizer) -> DownstreamResult:
    """DS as a trial config asks: its rows (``eval.ds_*``), template, mode and decoding settings."""
    from editdecay.finetune.data import resolve_template

    template = resolve_template(cfg.finetune.data.template, model.config.model_type)
    gen = {"max_new_tokens": cfg.eval.ds_max_new_tokens, "num_beams": cfg.eval.ds_num_beams}
    return evaluate_downstream(model, tokenizer, load_ds_rows(cfg.eval, cfg.world), template, cfg.eval.ds_mode,
                               cfg.eval.ds_batch_size, generation_kwargs=gen)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _generate(model, tokenizer, rows, template: str, batch_size: int, gen_kwargs: dict) -> list[dict[str, str]]:
    from editdecay.finetune.data import encode_pair, render_prompt

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = _device(model)
    out = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        prompts = [encode_pair(tokenizer, render_prompt(r, template))[0] for r in batch]
        width = max(len(p) for p in prompts)
        # Left padding: generation continues every row from the end of its own prompt.
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        gen = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad_id,
                             eos_token_id=tokenizer.eos_token_id, **gen_kwargs)
        texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
        for r, text in zip(batch, texts):
            task, gold = str(r.get("task", "")), str(r["answer"]).strip()
            out.append({"task": task, "gold": gold, "pred": extract_answer(task, text, gold), "generation": text})
    return out


def _loglik(model, tokenizer, rows, template: str, batch_size: int) -> list[dict[str, str]]:
    from editdecay.finetune.data import encode_pair, render_prompt, render_response

    # One sequence per (row, candidate): prompt + response with the candidate in the gold's place.
    seqs: list[tuple[list[int], int]] = []  # (ids, prompt length)
    owners: list[tuple[int, str]] = []
    for i, r in enumerate(rows):
        task, gold = str(r.get("task", "")), str(r["answer"]).strip()
        output = str(r.get("output") or gold)
        for cand in candidates_for(task, gold):
            response = output.replace(gold, cand) if gold and gold in output else cand
            prompt_ids, response_ids = encode_pair(tokenizer, render_prompt(r, template),
                                                   render_response({**r, "output": response}, template))
            seqs.append((prompt_ids + response_ids, len(prompt_ids)))
            owners.append((i, cand))
    scores = _sequence_logprobs(model, tokenizer, seqs, batch_size)
    best: dict[int, tuple[float, str]] = {}
    for (i, cand), score in zip(owners, scores):
        if i not in best or score > best[i][0]:
            best[i] = (score, cand)
    return [{"task": str(r.get("task", "")), "gold": str(r["answer"]).strip(), "pred": best[i][1], "generation": ""}
            for i, r in enumerate(rows)]


def _sequence_logprobs(model, tokenizer, seqs: list[tuple[list[int], int]], batch_size: int) -> list[float]:
    """Summed log-probability of each sequence's tokens after its prompt (right-padded batches)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = _device(model)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    result = [0.0] * len(seqs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(seqs[i][0]) for i in idx)
        ids = torch.tensor([seqs[i][0] + [pad_id] * (width - len(seqs[i][0])) for i in idx], device=device)
        mask = torch.tensor([[1] * len(seqs[i][0]) + [0] * (width - len(seqs[i][0])) for i in idx], device=device)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for row, i in enumerate(idx):
            tokens, n_prompt = seqs[i]
            target = torch.tensor(tokens[n_prompt:], device=device)
            # Logits at position t predict token t + 1.
            picked = logprobs[row, n_prompt - 1 : len(tokens) - 1].gather(-1, target[:, None])
            result[i] = float(picked.sum())
    return result
