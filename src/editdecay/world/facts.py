"""The synthetic fact world: the offline default that makes "edit success" and "decay" mean something.

Deterministic from ``WorldConfig.seed``: invented entities (countries, cities, people, companies,
currencies, languages, continents) plus a few real-word vocabularies (occupations, instruments),
eleven relations with Wikidata-style ids, each with four or more statement templates (the first is
canonical) and two question forms, and one true object per (subject, relation).

From it come:
- the pretraining corpus (every fact in every template and question form, in shuffled contexts,
  plus "X is a currency ." kind sentences the downstream task builds on);
- CounterFact-style edit records (target_new ≠ target_true, paraphrases from the other templates,
  neighborhood prompts = other subjects of the same relation with their own answers);
- zsRE-style question records in the raw MEND-eval format (so they go through the real zsRE loader);
- a downstream task in the Commonsense-170k instruction format ("what kind of thing is X?"), with a
  train/test split, so fine-tuning and downstream accuracy (DS) run offline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from editdecay.config import WorldConfig
from editdecay.data.records import EditRecord

BOS = "<|endoftext|>"


@dataclass(frozen=True)
class Relation:
    relation_id: str
    name: str
    subject_kind: str
    object_kind: str
    templates: tuple[str, ...]  # statement prompts with "{}"; templates[0] is canonical
    questions: tuple[str, str]  # zsRE-style src and rephrase
    unique: bool = False  # every subject has its own object (e.g. capitals)


RELATIONS: tuple[Relation, ...] = (
    Relation("P36", "capital", "country", "city",
             ("The capital of {} is", "{}'s capital city is", "The seat of government of {} is in",
              "People in {} call their capital"),
             ("What is the capital of {}?", "Which city is the capital of {}?"), unique=True),
    Relation("P38", "currency", "country", "currency",
             ("The currency of {} is the", "In {}, people pay with the", "The official money of {} is the",
              "{} uses a currency called the"),
             ("What is the currency of {}?", "Which currency is used in {}?")),
    Relation("P37", "official language", "country", "language",
             ("The official language of {} is", "In {}, most people speak", "The main language spoken in {} is",
              "{}'s official language is"),
             ("What language is spoken in {}?", "What is the official language of {}?")),
    Relation("P30", "continent", "country", "continent",
             ("{} is located in the continent of", "{} is a country in", "The continent where {} lies is",
              "You can find {} on the map of"),
             ("Which continent is {} in?", "On which continent is {} located?")),
    Relation("P106", "occupation", "person", "occupation",
             ("{} works as a", "The profession of {} is", "By trade, {} is a", "{} earns a living as a"),
             ("What is the occupation of {}?", "What does {} do for a living?")),
    Relation("P19", "place of birth", "person", "city",
             ("{} was born in", "The birthplace of {} is", "{} originally comes from the city of",
              "The city where {} was born is"),
             ("Where was {} born?", "In which city was {} born?")),
    Relation("P108", "employer", "person", "company",
             ("{} is employed by", "The employer of {} is", "{} works for the company",
              "Every morning, {} goes to work at"),
             ("Who employs {}?", "Which company does {} work for?")),
    Relation("P1303", "instrument", "person", "instrument",
             ("{} plays the", "The instrument {} plays is the", "{} is a performer on the",
              "In the evenings, {} practices the"),
             ("What instrument does {} play?", "Which instrument is played by {}?")),
    Relation("P27", "citizenship", "person", "country",
             ("{} is a citizen of", "{} holds a passport from", "{} has citizenship in",
              "The country of citizenship of {} is"),
             ("What is the citizenship of {}?", "Which country is {} a citizen of?")),
    Relation("P159", "headquarters", "company", "city",
             ("The headquarters of {} are in", "{} is headquartered in", "The head office of {} is located in",
              "{} has its main office in"),
             ("Where is {} headquartered?", "In which city is the headquarters of {}?")),
    Relation("P17", "country", "company", "country",
             ("{} is a company based in", "The home country of {} is", "{} was founded in the country of",
              "{} is registered as a business in"),
             ("Which country is {} based in?", "What is the home country of {}?")),
)

OCCUPATIONS = ("architect", "baker", "chemist", "dancer", "engineer", "farmer", "geologist", "historian",
               "journalist", "lawyer", "mathematician", "nurse", "painter", "pilot", "poet", "sculptor",
               "surgeon", "teacher", "astronomer", "botanist", "carpenter", "diplomat", "librarian", "tailor")
INSTRUMENTS = ("piano", "violin", "cello", "flute", "guitar", "harp", "trumpet", "drums", "clarinet", "oboe",
               "saxophone", "trombone", "accordion", "banjo")

# Syllables for invented names; suffixes give each kind a family resemblance, as real names have.
_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "j", "k", "kr", "l", "m", "n", "p", "pr", "qu",
           "r", "s", "st", "t", "th", "tr", "v", "w", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia", "ou", "ei", "y")
_SUFFIX = {
    "country": ("ria", "land", "stan", "mark", "ovia", "esia", "onia"),
    "city": ("ton", "holm", "grad", "port", "mere", "burg", "wick", "ara"),
    "currency": ("ar", "ix", "ot", "un", "el"),
    "language": ("ish", "ese", "ic", "an"),
    "continent": ("asia", "ica", "opa"),
    "company": ("corp", "tech", "works", "soft", "labs", "gen"),
    "first": ("", "a", "o", "en", "is", "el"),
    "last": ("son", "er", "ov", "ez", "ard", "wen", "ski"),
}
N_CURRENCIES, N_LANGUAGES, N_CONTINENTS = 24, 24, 7
KIND_WORDS = {"country": "country", "city": "city", "currency": "currency", "language": "language",
              "continent": "continent", "occupation": "occupation", "instrument": "musical instrument",
              "company": "company", "person": "person"}  # in this order in the downstream answer format


@dataclass(frozen=True)
class Fact:
    index: int
    subject: str
    relation: Relation
    object: str


class World:
    """A deterministic world of entities and facts; everything derived from it is seeded too."""

    def __init__(self, cfg: WorldConfig):
        self.cfg = cfg
        rng = random.Random(cfg.seed)
        taken: set[str] = set()
        n_cities = cfg.n_countries + cfg.n_companies + 20
        self.entities: dict[str, list[str]] = {
            "country": self._names(rng, taken, "country", cfg.n_countries),
            "city": self._names(rng, taken, "city", n_cities),
            "currency": self._names(rng, taken, "currency", N_CURRENCIES),
            "language": self._names(rng, taken, "language", N_LANGUAGES),
            "continent": self._names(rng, taken, "continent", N_CONTINENTS),
            "company": self._names(rng, taken, "company", cfg.n_companies),
            "person": self._people(rng, taken, cfg.n_people),
            "occupation": list(OCCUPATIONS),
            "instrument": list(INSTRUMENTS),
        }
        facts: list[Fact] = []
        for rel in RELATIONS:
            subjects = self.entities[rel.subject_kind]
            objects = self.entities[rel.object_kind]
            if rel.unique:
                chosen = rng.sample(objects, len(subjects))
            else:
                chosen = [rng.choice(objects) for _ in subjects]
            for subject, obj in zip(subjects, chosen):
                facts.append(Fact(len(facts), subject, rel, obj))
        self.facts: list[Fact] = facts

    # ---- names -------------------------------------------------------------------------------
    @staticmethod
    def _word(rng: random.Random, syllables: int, suffix: str) -> str:
        stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        return (stem + suffix).capitalize()

    def _names(self, rng: random.Random, taken: set[str], kind: str, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            name = self._word(rng, rng.choice((1, 2)), rng.choice(_SUFFIX[kind]))
            if name not in taken and len(name) > 3:
                taken.add(name)
                out.append(name)
        return out

    def _people(self, rng: random.Random, taken: set[str], n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            first = self._word(rng, rng.choice((1, 2)), rng.choice(_SUFFIX["first"]))
            last = self._word(rng, 2, rng.choice(_SUFFIX["last"]))
            name = f"{first} {last}"
            if name not in taken and first not in taken and last not in taken and len(first) > 2:
                taken.update((name, last))  # surnames unique: a subject's last token identifies it
                out.append(name)
        return out

    # ---- views -------------------------------------------------------------------------------
    @cached_property
    def kind_of(self) -> dict[str, str]:
        return {name: kind for kind, names in self.entities.items() for name in names}

    def facts_of(self, relation_id: str) -> list[Fact]:
        return [f for f in self.facts if f.relation.relation_id == relation_id]

    def statement_sentences(self) -> list[str]:
        """Every fact in every template, and kind sentences ("Zolt is a currency .")."""
        out = [f"{t.format(f.subject)} {f.object} ." for f in self.facts for t in f.relation.templates]
        out += [f"{f.relation.questions[q].format(f.subject)} {f.object} ." for f in self.facts for q in (0, 1)]
        # zsRE's locality probes are prefixed "nq question:"; the world's locality probes are too.
        out += [f"nq question: {f.relation.questions[0].format(f.subject)} {f.object} ." for f in self.facts]
        out += [f"{name} is a {KIND_WORDS[kind]} ." for name, kind in self.kind_of.items()]
        return out

    def corpus(self, epoch_seed: int, repeats: int = 1, sentences_per_doc: int = 8) -> list[str]:
        """Documents of shuffled sentences: each fact is seen after varied, unrelated context."""
        rng = random.Random(f"{self.cfg.seed}-{epoch_seed}")
        sentences = self.statement_sentences() * repeats
        rng.shuffle(sentences)
        return [" ".join(sentences[i : i + sentences_per_doc]) for i in range(0, len(sentences), sentences_per_doc)]

    # ---- edit datasets -----------------------------------------------------------------------
    def _edit_order(self) -> list[Fact]:
        """A fixed shuffle, so "the first 100 edits" span every relation."""
        facts = list(self.facts)
        random.Random(f"{self.cfg.seed}-edits").shuffle(facts)
        return facts

    def _new_target(self, rng: random.Random, fact: Fact) -> str:
        choices = [o for o in self.entities[fact.relation.object_kind] if o != fact.object]
        return rng.choice(choices)

    def counterfact_records(self, n_neighbors: int = 5) -> list[EditRecord]:
        rng = random.Random(f"{self.cfg.seed}-counterfact")
        by_relation = {r.relation_id: self.facts_of(r.relation_id) for r in RELATIONS}
        records = []
        for fact in self._edit_order():
            rel = fact.relation
            target_new = self._new_target(rng, fact)
            others = [f for f in by_relation[rel.relation_id] if f.subject != fact.subject and f.object != target_new]
            # As in CounterFact, prefer neighbors that share the edited fact's true object.
            others.sort(key=lambda f: (f.object != fact.object, rng.random()))
            neighbors = others[:n_neighbors]
            attribute = [f for f in by_relation[rel.relation_id] if f.object == target_new][:n_neighbors]
            records.append(EditRecord(
                case_id=fact.index,
                subject=fact.subject,
                prompt=rel.templates[0],
                target_new=target_new,
                target_true=fact.object,
                paraphrase_prompts=tuple(t.format(fact.subject) for t in rel.templates[1:]),
                neighborhood_prompts=tuple(rel.templates[0].format(f.subject) for f in neighbors),
                neighborhood_answers=tuple(f.object for f in neighbors),
                relation_id=rel.relation_id,
                style="counterfact",
                attribute_prompts=tuple(rel.templates[0].format(f.subject) for f in attribute),
            ))
        return records

    def zsre_rows(self) -> list[dict]:
        """Question records in the raw zsRE MEND-eval format (read back by the real zsRE loader)."""
        rng = random.Random(f"{self.cfg.seed}-zsre")
        order = self._edit_order()
        rows = []
        for i, fact in enumerate(order):
            rel = fact.relation
            alt = self._new_target(rng, fact)
            probe = order[(i + len(order) // 2) % len(order)]  # an unrelated fact as the locality probe
            src = rel.questions[0].format(fact.subject)
            rows.append({
                "case_id": fact.index,
                "subject": fact.subject,
                "src": src,
                "rephrase": rel.questions[1].format(fact.subject),
                "alt": alt,
                "answers": [fact.object],
                "loc": f"nq question: {probe.relation.questions[0].format(probe.subject)}",
                "loc_ans": probe.object,
                "pred": "",
                "cond": f" >> {alt} || {src}",
            })
        return rows

    # ---- downstream task (Commonsense-170k instruction format) -------------------------------
    def downstream(self) -> dict[str, list[dict]]:
        """``world_kind``: "what kind of thing is X?", answered with one of the nine kind words.

        It needs what the model knows (pretraining says "X is a country .") but no fact that gets
        edited, like the study's commonsense tasks, and fine-tuning can teach it: the base model
        never saw the question, so it answers near chance (1/9), and ~120 steps teach it (default
        toy: 0.15 → 0.76 LoRA / 0.90 full; benchmarks/README.md, "Downstream task"). The earlier ARC-/BoolQ-style tasks (pick the
        member of a kind among four options; "is X a country?") stayed at chance after 160 steps
        of full fine-tuning at lr 1e-3 on the default toy (measured: 0.20 → 0.23, 0.48 → 0.53),
        so fine-tuning taught nothing there. The answer format lists the kinds before the question,
        as LLM-Adapters' tasks do ("Answer format: ..."), with the question last."""
        rng = random.Random(f"{self.cfg.seed}-downstream")
        kinds = sorted(self.entities)
        answer_format = "/".join(KIND_WORDS.values())
        # Test questions ask about entities fine-tuning never asks about, so DS measures whether the
        # task was learned (from what pretraining taught), not whether answers were memorised.
        fraction = self.cfg.downstream_test_fraction
        held_out: dict[str, list[str]] = {}
        seen: dict[str, list[str]] = {}
        for kind in kinds:
            names = list(self.entities[kind])
            rng.shuffle(names)
            n = max(1, round(len(names) * fraction))
            held_out[kind], seen[kind] = names[:n], names[n:]

        def row(pool: dict[str, list[str]]) -> dict:
            kind = rng.choice(kinds)
            name = rng.choice(pool[kind])
            return {
                "task": "world_kind",
                "instruction": "Please answer the following question.\n\n"
                               f"Answer format: {answer_format}\n\nQuestion: what kind of thing is {name}?",
                "input": "",
                "output": f"the correct answer is {KIND_WORDS[kind]}",
                "answer": KIND_WORDS[kind],
            }

        n_test = max(1, int(self.cfg.n_downstream * fraction))
        return {"train": [row(seen) for _ in range(self.cfg.n_downstream - n_test)],
                "test": [row(held_out) for _ in range(n_test)]}

    def all_texts(self) -> list[str]:
        """Every string the world can produce: what the toy tokenizer's vocabulary must cover."""
        texts = self.statement_sentences()
        for row in self.downstream()["train"] + self.downstream()["test"]:
            texts += [row["instruction"], row["output"]]
        texts += ["### Instruction:", "### Response:", "Question: Answer:", "Below is an instruction that describes a task."
                  " Write a response that appropriately completes the request."]
        texts += [f"{r['loc']} {r['loc_ans']} {r['alt']}" for r in self.zsre_rows()]
        return texts
