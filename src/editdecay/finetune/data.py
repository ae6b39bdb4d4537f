"""Fine-tuning data: rows in, tokenised ``input_ids`` / ``attention_mask`` / ``labels`` out.

Every source is first turned into instruction rows (``instruction``, ``input``, ``output``,
``answer``, optional ``task``) — the Commonsense-170k / LLM-Adapters format the study trains on —
then rendered with a prompt template and tokenised:

- ``alpaca``: LLM-Adapters' "Below is an instruction … ### Instruction: … ### Response:" (Llama-style);
- ``qa``: "Question: … Answer: …" (GPT-style; GPT-2 and GPT-J never saw the Alpaca headers).

Prompt and response are tokenised separately and concatenated, so the prompt/response boundary is
exact for every tokenizer (no BPE merge across it) and ``labels`` are -100 on exactly the prompt
tokens unless ``train_on_inputs``. The downstream evaluation renders prompts with the same code.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editdecay.config import FinetuneDataConfig, WorldConfig
from editdecay.errors import DataError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the causal-LM loss skips

# LLM-Adapters' generate_prompt (finetune.py / commonsense_evaluate.py), without its stray indentation.
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

# Prompt style by model family for template=auto. A prompt convention rather than an architecture
# fact, so it lives here and not in arch.py: GPT-2/GPT-J are plain LMs, Llama-likes follow Alpaca.
QA_STYLE_FAMILIES = frozenset({"gpt2", "gptj"})

_REQUIRED = {
    "instruction": ("instruction", "output"),
    "hotpotqa": ("question", "answer"),
    "prompt_completion": ("prompt", "completion"),
}


@dataclass(frozen=True)
class FinetuneData:
    train: list[dict[str, list[int]]]
    val: list[dict[str, list[int]]]
    template: str
    n_rows: int
    n_dropped: int  # too long (too_long=drop)
    n_truncated: int  # response cut by cutoff_len

    @property
    def n_train_tokens(self) -> int:
        return sum(len(x["input_ids"]) for x in self.train)


# --------------------------------------------------------------------------------------------
# Templates


def resolve_template(template: str, model_type: str) -> str:
    if template != "auto":
        return template
    return "qa" if model_type in QA_STYLE_FAMILIES else "alpaca"


def render_prompt(row: dict[str, Any], template: str) -> str:
    """The prompt text (everything before the response) of an instruction row."""
    if "prompt" in row and "instruction" not in row:  # prompt_completion rows are used verbatim
        return str(row["prompt"])
    instruction, extra = str(row["instruction"]), str(row.get("input") or "")
    if template == "alpaca":
        if extra:
            return ALPACA_WITH_INPUT.format(instruction=instruction, input=extra)
        return ALPACA_NO_INPUT.format(instruction=instruction)
    if template == "qa":
        body = f"{instruction}\n{extra}" if extra else instruction
        return f"Question: {body}\nAnswer:"
    raise DataError(f"finetune.data.template: unknown template '{template}'; allowed: auto, alpaca, qa")


def render_response(row: dict[str, Any], template: str) -> str:
    text = str(row["completion"] if "completion" in row and "output" not in row else row["output"])
    # Alpaca's prompt ends with a newline; "Answer:" needs the space a GPT-style LM expects.
    return text if template == "alpaca" or text.startswith((" ", "\n")) else f" {text}"


def encode_pair(tokenizer, prompt: str, response: str | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids with the tokenizer's special prefix, response ids + eos); response may be None."""
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if response is None:
        return prompt_ids, []
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
    return prompt_ids, response_ids


# --------------------------------------------------------------------------------------------
# Rows


def load_rows(cfg: FinetuneDataConfig, world_cfg: WorldConfig | None = None) -> list[dict[str, Any]]:
    """Instruction rows from the configured source, checked for the fields their format needs."""
    if cfg.source == "world":
        from editdecay.world.facts import World

        if world_cfg is None:
            raise DataError("finetune.data.source=world needs the trial's world config")
        raw = World(world_cfg).downstream()["train"]
        what = "the fact world's downstream train split"
    else:
        raw = _load_with_datasets(cfg)
        what = f"dataset '{cfg.path}'"
    if not raw:
        raise DataError(f"finetune.data: {what} has no rows")
    missing = [f for f in _REQUIRED[cfg.format] if f not in raw[0]]
    if missing:
        raise DataError(
            f"finetune.data: {what} lacks field(s) {', '.join(missing)} (has: {', '.join(sorted(raw[0]))}); "
            f"format '{cfg.format}' needs {', '.join(_REQUIRED[cfg.format])}"
        )
    rows = [_convert(r, cfg) for r in raw]
    for i, row in enumerate(rows):
        for field in _REQUIRED[cfg.format] if cfg.format == "prompt_completion" else ("instruction", "output"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise DataError(f"finetune.data: {what} row {i}: field '{field}' is missing or empty")
    return rows


def _load_with_datasets(cfg: FinetuneDataConfig) -> list[dict[str, Any]]:
    import datasets

    path = str(cfg.path)
    local = Path(path).expanduser()
    try:
        if cfg.source == "file":
            if not local.exists():
                raise DataError(f"finetune.data.path: '{path}' does not exist")
            if local.is_dir():
                ds = datasets.load_dataset(str(local), split=cfg.split)
            else:
                suffix = local.suffix.lower().lstrip(".")
                builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(suffix)
                if builder is None:
                    raise DataError(f"finetune.data.path: '{path}': unsupported file type '.{suffix}' (json, jsonl, parquet, csv)")
                ds = datasets.load_dataset(builder, data_files=str(local), split="train")
        else:
            ds = datasets.load_dataset(path, split=cfg.split)
    except DataError:
        raise
    except Exception as err:  # datasets raises many types; all mean "cannot read this"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"finetune.data: cannot load '{path}' ({cfg.source}): {first}") from None
    return [dict(r) for r in ds]


def _convert(row: dict[str, Any], cfg: FinetuneDataConfig) -> dict[str, Any]:
    if cfg.format == "instruction":
        return {"instruction": row.get("instruction"), "input": row.get("input") or "", "output": row.get("output"),
                "answer": row.get("answer", ""), "task": row.get("task", "")}
    if cfg.format == "hotpotqa":
        context = _hotpot_context(row.get("context")) if cfg.hotpotqa_context else ""
        answer = str(row.get("answer"))
        return {"instruction": row.get("question"), "input": context, "output": answer, "answer": answer,
                "task": "hotpotqa"}
    return {"prompt": row.get("prompt"), "completion": row.get("completion"), "task": row.get("task", "")}


def _hotpot_context(context: Any) -> str:
    """HotpotQA context as paragraphs; both the original ``[[title, [sents]]]`` and the HF
    ``{"title": [...], "sentences": [[...]]}`` layouts."""
    if not context:
        return ""
    if isinstance(context, dict):
        pairs = list(zip(context.get("title", []), context.get("sentences", [])))
    else:
        pairs = [(c[0], c[1]) for c in context]
    return "\n".join(f"{title}: {''.join(sents) if isinstance(sents, list) else sents}" for title, sents in pairs)


# --------------------------------------------------------------------------------------------
# Tokenised datasets


def encode_row(row: dict[str, Any], tokenizer, template: str, cutoff_len: int, train_on_inputs: bool,
               too_long: str = "error") -> tuple[dict[str, list[int]] | None, int]:
    """One training example and its prompt length; the example is None when the prompt alone does
    not fit ``cutoff_len`` (unless ``too_long='truncate'``: the prompt's head + one response token)."""
    prompt_ids, response_ids = encode_pair(tokenizer, render_prompt(row, template), render_response(row, template))
    n_prompt = len(prompt_ids)
    if n_prompt >= cutoff_len:
        if too_long != "truncate":
            return None, n_prompt
        prompt_ids = prompt_ids[: cutoff_len - 1]
    ids = (prompt_ids + response_ids)[:cutoff_len]
    labels = list(ids) if train_on_inputs else [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids):]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}, n_prompt


def build_finetune_data(cfg: FinetuneDataConfig, tokenizer, model_type: str, cutoff_len: int, seed: int,
                        world_cfg: WorldConfig | None = None) -> FinetuneData:
    """Load, split (seeded), render and tokenise; one-line errors for unusable data."""
    template = resolve_template(cfg.template, model_type)
    rows = load_rows(cfg, world_cfg)
    if cfg.max_examples is not None:
        rows = rows[: cfg.max_examples]
    n_val = int(round(cfg.val_size * len(rows))) if cfg.val_size < 1 else int(cfg.val_size)
    if n_val >= len(rows):
        raise DataError(f"finetune.data.val_size={cfg.val_size} leaves no training rows ({len(rows)} rows)")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    val_idx, train_idx = set(order[:n_val]), order[n_val:]

    def encode_all(indices) -> tuple[list[dict], int, int]:
        out, dropped, truncated = [], 0, 0
        too_long: list[tuple[int, int]] = []  # (row, prompt tokens)
        for i in indices:
            example, n_prompt = encode_row(rows[i], tokenizer, template, cutoff_len, cfg.train_on_inputs, cfg.too_long)
            if example is None:
                if cfg.too_long == "drop":
                    dropped += 1
                else:
                    too_long.append((i, n_prompt))
                continue
            truncated += len(example["input_ids"]) == cutoff_len
            out.append(example)
        if too_long:
            i, n = max(too_long, key=lambda x: x[1])
            raise DataError(
                f"finetune.data.cutoff_len={cutoff_len} is shorter than the prompt of {len(too_long)} example(s) "
                f"(longest: row {i}, {n} tokens); raise cutoff_len or set finetune.data.too_long=drop"
            )
        return out, dropped, truncated

    train, d1, t1 = encode_all(train_idx)
    val, d2, t2 = encode_all(sorted(val_idx))
    if not train:
        raise DataError(f"finetune.data: no training example fits cutoff_len={cutoff_len}")
    if t1 + t2:
        log.info("finetune data: %d example(s) truncated to cutoff_len=%d", t1 + t2, cutoff_len)
    return FinetuneData(train=train, val=val, template=template, n_rows=len(rows), n_dropped=d1 + d2, n_truncated=t1 + t2)
