"""Write data/ds/wordnet_define.jsonl: a real 4-way multiple-choice downstream task from WordNet 3.0.

Each row asks which of four WordNet definitions belongs to a noun; the three distractors are
definitions of other nouns, drawn with a fixed seed. LLM-Adapters' row shape (instruction, input,
output, answer) and answer format (answer1..4), so DS scores it like the study's commonsense tasks.
Needs the Debian package wordnet-base (/usr/share/wordnet). Usage: python scripts/make_wordnet_ds.py [N]
"""

import json
import random
import sys
from pathlib import Path

WORDNET = Path("/usr/share/wordnet/data.noun")
OUT = Path(__file__).resolve().parents[1] / "data" / "ds" / "wordnet_define.jsonl"


def main(n: int = 200) -> None:
    entries = []
    for line in WORDNET.read_text(encoding="utf-8").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        fields = head.split()
        lemma = fields[4].replace("_", " ")
        definition = gloss.split(";")[0].strip()
        # single-word, lowercase, common-looking nouns with a short definition: a fair question
        if lemma.isalpha() and lemma.islower() and 4 <= len(lemma) <= 12 and 20 <= len(definition) <= 90:
            entries.append((lemma, definition))
    rng = random.Random(0)
    rng.shuffle(entries)
    seen, rows = set(), []
    for lemma, definition in entries:
        if lemma in seen:
            continue
        seen.add(lemma)
        distractors = [d for _, d in rng.sample(entries, 3)]
        options = distractors + [definition]
        rng.shuffle(options)
        gold = f"answer{options.index(definition) + 1}"
        listing = "\n".join(f"Answer{i + 1}: {opt}" for i, opt in enumerate(options))
        rows.append({
            "instruction": f"Which is the meaning of the word '{lemma}'?\n\n{listing}\n\n"
                           "Answer format: answer1/answer2/answer3/answer4",
            "input": "", "output": f"the correct answer is {gold}", "answer": gold, "task": "wordnet_define",
        })
        if len(rows) == n:
            break
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
