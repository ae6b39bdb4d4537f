"""The fact world: deterministic, well-formed, and written in the real datasets' formats."""

from __future__ import annotations

import json
from collections import Counter

from editdecay.config import WorldConfig
from editdecay.world.export import export_world
from editdecay.metrics.downstream import candidates_for
from editdecay.world.facts import KIND_WORDS, RELATIONS, World


def test_world_is_deterministic_from_its_seed():
    a, b, c = World(WorldConfig(seed=3)), World(WorldConfig(seed=3)), World(WorldConfig(seed=4))
    assert [(f.subject, f.relation.relation_id, f.object) for f in a.facts] == [
        (f.subject, f.relation.relation_id, f.object) for f in b.facts]
    assert a.entities["country"] != c.entities["country"]
    assert a.counterfact_records() == b.counterfact_records()


def test_relations_and_templates():
    assert len(RELATIONS) >= 8
    assert len({r.relation_id for r in RELATIONS}) == len(RELATIONS)
    for rel in RELATIONS:
        assert len(rel.templates) >= 4, rel.name
        assert all(t.count("{}") == 1 for t in rel.templates + rel.questions), rel.name


def test_facts_have_one_object_per_subject_and_relation(toy_world):
    keys = Counter((f.subject, f.relation.relation_id) for f in toy_world.facts)
    assert max(keys.values()) == 1
    capitals = [f.object for f in toy_world.facts_of("P36")]
    assert len(set(capitals)) == len(capitals)  # unique relation: every country its own capital
    names = [n for names in toy_world.entities.values() for n in names]
    assert len(names) == len(set(names))  # no name means two things


def test_counterfact_records(toy_world):
    records = toy_world.counterfact_records()
    assert len(records) == len(toy_world.facts)
    assert {r.relation_id for r in records[:40]} >= {"P36", "P106"}  # the fixed shuffle mixes relations
    truth = {(f.subject, f.relation.relation_id): f.object for f in toy_world.facts}
    canonical = {f.relation.templates[0].format(f.subject): f.object for f in toy_world.facts}
    for r in records:
        assert r.target_new != r.target_true
        assert truth[(r.subject, r.relation_id)] == r.target_true
        assert len(r.paraphrase_prompts) >= 3 and all(r.subject in p for p in r.paraphrase_prompts)
        assert r.neighborhood_prompts and len(r.neighborhood_prompts) == len(r.neighborhood_answers)
        for prompt, answer in zip(r.neighborhood_prompts, r.neighborhood_answers):
            assert r.subject not in prompt and answer != r.target_new
            assert canonical[prompt] == answer  # neighbors keep their own true answers


def test_downstream_task_is_commonsense_format(toy_world):
    ds = toy_world.downstream()
    assert ds["train"] and ds["test"]
    for row in ds["train"][:50] + ds["test"][:50]:
        assert set(row) == {"task", "instruction", "input", "output", "answer"}
        assert row["output"] == f"the correct answer is {row['answer']}"
        assert row["answer"] in candidates_for("world_kind")
        name = row["instruction"].rsplit("what kind of thing is ", 1)[1].rstrip("?")
        assert KIND_WORDS[toy_world.kind_of[name]] == row["answer"]  # the answer is the entity's kind
    assert {r["task"] for r in ds["test"]} == {"world_kind"}
    assert len({r["answer"] for r in ds["test"]}) == len(KIND_WORDS)  # every kind is asked about
    train_q = {r["instruction"] for r in ds["train"]}
    assert not any(r["instruction"] in train_q for r in ds["test"])  # test entities are held out


def test_export_writes_real_formats(tmp_path, tiny_cfg):
    written = export_world(tiny_cfg.world, tmp_path / "world")
    cf = json.loads(written["counterfact"].read_text())
    assert cf[0]["requested_rewrite"]["prompt"].count("{}") == 1
    assert set(cf[0]["requested_rewrite"]["target_new"]) == {"str"}
    zsre = json.loads(written["zsre"].read_text())
    assert set(zsre[0]) >= {"subject", "src", "rephrase", "alt", "answers", "loc", "loc_ans"}
    assert zsre[0]["loc"].startswith("nq question: ")
    assert written["corpus"].read_text().count("\n") > 10
    assert not [p for p in (tmp_path).iterdir() if p.name.endswith(".tmp")]  # nothing half-written
