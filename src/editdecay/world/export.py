"""Write the fact world's datasets as ordinary files, in the formats the real datasets use.

The edit sets come out in CounterFact (ROME/MEMIT) and zsRE (MEND-eval) JSON, and the downstream
task in the Commonsense-170k instruction format, so every loader reads them exactly as it reads
the real thing.
"""

from __future__ import annotations

from pathlib import Path

from editdecay.config import WorldConfig
from editdecay.io import atomic_directory, atomic_write_json, atomic_write_text
from editdecay.world.facts import World


def counterfact_rows(world: World) -> list[dict]:
    """The world's CounterFact-style edits in the ROME/MEMIT JSON schema."""
    rows = []
    for r in world.counterfact_records():
        rows.append({
            "case_id": r.case_id,
            "requested_rewrite": {"prompt": r.prompt, "subject": r.subject, "relation_id": r.relation_id,
                                  "target_new": {"str": r.target_new}, "target_true": {"str": r.target_true}},
            "paraphrase_prompts": list(r.paraphrase_prompts),
            "neighborhood_prompts": list(r.neighborhood_prompts),
            "attribute_prompts": list(r.attribute_prompts),
        })
    return rows


def export_world(cfg: WorldConfig, out: Path) -> dict[str, Path]:
    world = World(cfg)
    names = {
        "counterfact": "counterfact.json",
        "zsre": "zsre_mend_eval.json",
        "downstream_train": "downstream_train.json",
        "downstream_test": "downstream_test.json",
        "corpus": "corpus.txt",
        "world_config": "world_config.json",
    }
    downstream = world.downstream()
    with atomic_directory(out) as tmp:
        atomic_write_json(tmp / names["counterfact"], counterfact_rows(world))
        atomic_write_json(tmp / names["zsre"], world.zsre_rows())
        atomic_write_json(tmp / names["downstream_train"], downstream["train"])
        atomic_write_json(tmp / names["downstream_test"], downstream["test"])
        atomic_write_text(tmp / names["corpus"], "\n".join(world.corpus(epoch_seed=0)) + "\n")
        atomic_write_text(tmp / names["world_config"], cfg.model_dump_json(indent=2) + "\n")
    return {k: out / v for k, v in names.items()}
