"""Write data/counterfact/counterfact_sample.json: the first N real CounterFact records in ROME's schema.

The source is EasyEdit's release of CounterFact (``counterfact-edit.json``: flat rows with
``case_id, prompt, subject, target_new, ground_truth, rephrase_prompt, locality_prompt,
locality_ground_truth``), as vendored in github.com/Jometeorie/KnowledgeSpread (see
data/counterfact/README.md for the commit). No copy of ROME's own ``counterfact.json`` is
available offline, so each row is put back into ROME's ``requested_rewrite`` schema, field by
field and nothing invented:

    requested_rewrite.prompt       prompt with the first occurrence of subject replaced by "{}"
    requested_rewrite.subject      subject
    requested_rewrite.target_new   {"str": target_new}
    requested_rewrite.target_true  {"str": ground_truth}
    paraphrase_prompts             [rephrase_prompt]
    neighborhood_prompts           [locality_prompt]   (its answer is target_true, as in CounterFact)
    case_id                        case_id (CounterFact's own)

A row whose prompt does not contain its subject, or whose locality answer differs from its true
target (CounterFact's neighbourhood prompts share the true target), is left out and counted.

    python scripts/vendor_counterfact.py SOURCE.json [--n 300] [--out data/counterfact/counterfact_sample.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rome_row(row: dict) -> dict | None:
    subject, prompt = row["subject"], row["prompt"]
    if subject not in prompt or row["locality_ground_truth"] != row["ground_truth"]:
        return None
    return {
        "case_id": row["case_id"],
        "requested_rewrite": {
            "prompt": prompt.replace(subject, "{}", 1),
            "subject": subject,
            "target_new": {"str": row["target_new"]},
            "target_true": {"str": row["ground_truth"]},
        },
        "paraphrase_prompts": [row["rephrase_prompt"]],
        "neighborhood_prompts": [row["locality_prompt"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", default=str(REPO / "data" / "counterfact" / "counterfact_sample.json"))
    args = ap.parse_args()
    raw = Path(args.source).read_bytes()
    rows = json.loads(raw)
    out, skipped = [], 0
    for row in rows:
        if len(out) == args.n:
            break
        converted = rome_row(row)
        if converted is None:
            skipped += 1
        else:
            out.append(converted)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"source sha256 {hashlib.sha256(raw).hexdigest()}, {len(rows)} rows; wrote {len(out)} records "
          f"(skipped {skipped}) to {args.out}")


if __name__ == "__main__":
    main()
