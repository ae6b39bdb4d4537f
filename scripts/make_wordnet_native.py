"""Write data/native/wordnet_facts.jsonl: native (never edited) facts from WordNet 3.0 noun definitions.

The native-fact control (src/editdecay/metrics/native.py) needs facts a small real model knows; a
135M model knows none of the vendored zsRE answers by zsRE's rule (every answer token top-1). Word
meanings it does know. Each row is one CounterFact-style record in our own record shape: the noun
is the subject, ``The word '{}' means`` the prompt, its WordNet definition the true answer and the
definition of another noun of about the same length the counterfactual (``target_new``), so
"known" is CounterFact's rule: the true definition beats the other by mean per-token NLL.
Nouns of data/ds/wordnet_define.jsonl (the downstream task) are left out; the selection rule is
that of scripts/make_wordnet_ds.py. Needs the Debian package wordnet-base (/usr/share/wordnet).
Usage: python scripts/make_wordnet_native.py [N]
"""

import json
import random
import re
import sys
from pathlib import Path

WORDNET = Path("/usr/share/wordnet/data.noun")
REPO = Path(__file__).resolve().parents[1]
DS = REPO / "data" / "ds" / "wordnet_define.jsonl"
OUT = REPO / "data" / "native" / "wordnet_facts.jsonl"


def main(n: int = 400) -> None:
    ds_words = {re.search(r"the word '([^']+)'", json.loads(line)["instruction"]).group(1)
                for line in DS.read_text(encoding="utf-8").splitlines() if line.strip()}
    entries, seen = [], set()
    for line in WORDNET.read_text(encoding="utf-8").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        lemma = head.split()[4].replace("_", " ")
        definition = gloss.split(";")[0].strip()
        # the DS task's rule for a fair question: single-word, lowercase nouns with a short definition
        if lemma.isalpha() and lemma.islower() and 4 <= len(lemma) <= 12 and 20 <= len(definition) <= 90:
            entries.append((lemma, definition))
    rng = random.Random(0)
    rng.shuffle(entries)
    rows = []
    for lemma, definition in entries:
        if lemma in seen or lemma in ds_words:
            continue
        seen.add(lemma)
        # The counterfactual: of 20 other definitions drawn, the one closest in length (mean NLL
        # favours short, generic text; a length-matched rival keeps the comparison about meaning).
        others = [d for w, d in rng.sample(entries, 20) if w != lemma and d != definition]
        rival = min(others, key=lambda d: abs(len(d.split()) - len(definition.split())))
        rows.append({"case_id": f"wordnet:{lemma}", "subject": lemma, "prompt": "The word '{}' means",
                     "target_new": rival, "target_true": definition, "style": "counterfact"})
        if len(rows) == n:
            break
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} facts to {OUT}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
