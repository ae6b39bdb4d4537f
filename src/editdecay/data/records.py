"""One record type for every edit dataset (CounterFact, MultiCounterFact, zsRE, our own JSONL).

An :class:`EditRecord` asks the model to map ``prompt.format(subject)`` to ``target_new`` instead
of ``target_true``. ``style`` says which metric family evaluates it (see DESIGN: CounterFact style
compares target probabilities; zsRE style uses teacher-forced token accuracy).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Style = Literal["counterfact", "zsre"]


class RecordError(ValueError):
    """A record is invalid; ``field`` names the offending field. Loaders add the record index."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"field '{field_name}': {message}")
        self.field = field_name


@dataclass(frozen=True)
class EditRecord:
    case_id: int | str
    subject: str
    prompt: str  # template with exactly one "{}" where the subject goes
    target_new: str
    target_true: str | None = None  # None where the dataset has no true target (zsRE, MEMIT convention)
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    neighborhood_answers: tuple[str, ...] = ()  # expected answer for each neighborhood prompt
    relation_id: str | None = None
    style: Style = "counterfact"
    attribute_prompts: tuple[str, ...] = ()  # CounterFact: other subjects that truly have target_new
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("paraphrase_prompts", "neighborhood_prompts", "neighborhood_answers", "attribute_prompts"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise RecordError(name, "must be a list of strings, got a single string")
            object.__setattr__(self, name, tuple(value))
        self.validate()

    # The rewrite prompt with the subject filled in, e.g. "The capital of Veloria is".
    @property
    def rewrite_prompt(self) -> str:
        return self.prompt.replace("{}", self.subject, 1)

    def validate(self) -> None:
        if not isinstance(self.subject, str) or not self.subject.strip():
            raise RecordError("subject", "is empty")
        if not isinstance(self.prompt, str) or self.prompt.count("{}") != 1:
            n = self.prompt.count("{}") if isinstance(self.prompt, str) else 0
            raise RecordError("prompt", f"must contain exactly one '{{}}' for the subject, found {n}: {self.prompt!r}")
        if not isinstance(self.target_new, str) or not self.target_new.strip():
            raise RecordError("target_new", "is empty")
        if self.target_true is not None and (not isinstance(self.target_true, str) or not self.target_true.strip()):
            raise RecordError("target_true", "is empty (use null when the dataset has no true target)")
        if self.target_true is not None and self.target_new.strip() == self.target_true.strip():
            raise RecordError("target_new", f"equals target_true ({self.target_new!r}): the edit would change nothing")
        if len(self.neighborhood_answers) != len(self.neighborhood_prompts):
            raise RecordError(
                "neighborhood_answers",
                f"has {len(self.neighborhood_answers)} entries for {len(self.neighborhood_prompts)} neighborhood prompts",
            )
        for i, p in enumerate(self.paraphrase_prompts + self.neighborhood_prompts):
            if not isinstance(p, str) or not p.strip():
                raise RecordError("paraphrase_prompts" if i < len(self.paraphrase_prompts) else "neighborhood_prompts", f"entry {i} is empty")
        if self.style not in ("counterfact", "zsre"):
            raise RecordError("style", f"must be 'counterfact' or 'zsre', got {self.style!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EditRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecordError(unknown[0], f"unknown field; allowed: {', '.join(sorted(known))}")
        for required in ("case_id", "subject", "prompt", "target_new"):
            if required not in d:
                raise RecordError(required, "is missing")
        return cls(**d)


def records_to_jsonl(records: list[EditRecord]) -> str:
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
