"""Edit datasets -> EditRecord: the real zsRE sample, CounterFact/MCF fixtures in the exact ROME
schema, our own record shape, ``datasets``-read files, and one-line errors for bad input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from editdecay.config import DataConfig
from editdecay.data.edits import convert_counterfact, convert_records, convert_zsre, load_edit_file
from editdecay.data.records import EditRecord, records_to_jsonl
from editdecay.errors import DataError

REPO = Path(__file__).resolve().parents[1]
ZSRE_SAMPLE = REPO / "data" / "zsre" / "zsre_sample.json"

# Facts about the 400-record sample, checked against the file in test_zsre_sample_facts.
EMPTY_ALT = [54, 103]
ALT_EQUALS_ANSWER = [73, 164, 217, 384, 395, 396]
LEADING_SPACE_ALT = [19, 20, 41, 50, 51, 104, 264, 274, 275]

# Three CounterFact records in the exact ROME schema (counterfact.json), prompt lists shortened.
COUNTERFACT_ROWS: list[dict[str, Any]] = [
    {
        "case_id": 0,
        "pararel_idx": 2796,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "relation_id": "P103",
            "target_new": {"str": "English", "id": "Q1860"},
            "target_true": {"str": "French", "id": "Q150"},
            "subject": "Danielle Darrieux",
        },
        "paraphrase_prompts": [
            "Shayna does this and Yossel goes still and dies. Danielle Darrieux, a native",
            "An album was recorded for Capitol Nashville but never released. Danielle Darrieux spoke the language",
        ],
        "neighborhood_prompts": [
            "The mother tongue of Léon Blum is",
            "The native language of Montesquieu is",
            "François Bayrou, a native",
        ],
        "attribute_prompts": ["J. R. R. Tolkien is a native speaker of", "The mother tongue of Douglas Adams is"],
        "generation_prompts": ["Danielle Darrieux's mother tongue is", "Where Danielle Darrieux is from, people speak the language of"],
    },
    {
        "case_id": 1,
        "pararel_idx": 1052,
        "requested_rewrite": {
            "prompt": "The official religion of {} is",
            "relation_id": "P140",
            "target_new": {"str": "Islam", "id": "Q432"},
            "target_true": {"str": "Christianity", "id": "Q5043"},
            "subject": "Edwin of Northumbria",
        },
        "paraphrase_prompts": ["Edwin of Northumbria is affiliated with the religion"],
        "neighborhood_prompts": ["Charlemagne follows the religion of", "Clovis I is affiliated with the religion"],
        "attribute_prompts": ["Abdullah of Saudi Arabia is affiliated with the religion"],
        "generation_prompts": ["Edwin of Northumbria's religious values strongly emphasize"],
    },
    {
        "case_id": 2,
        "pararel_idx": 5734,
        "requested_rewrite": {
            "prompt": "{}, the",
            "relation_id": "P1303",
            "target_new": {"str": "piano", "id": "Q5994"},
            "target_true": {"str": "guitar", "id": "Q6607"},
            "subject": "Toko Yasuda",
        },
        "paraphrase_prompts": ["Toko Yasuda produces the most amazing music on the"],
        "neighborhood_prompts": ["Jimi Hendrix, performing on the"],
        "attribute_prompts": ["Glenn Gould plays the"],
        "generation_prompts": ["Toko Yasuda is known for"],
    },
]

# MultiCounterFact (multi_counterfact.json) has the same schema; different cases.
MCF_ROWS: list[dict[str, Any]] = [
    {
        "case_id": 4,
        "pararel_idx": 11640,
        "requested_rewrite": {
            "prompt": "{} is created by",
            "relation_id": "P176",
            "target_new": {"str": "Google", "id": "Q95"},
            "target_true": {"str": "Apple", "id": "Q312"},
            "subject": "Apple A5",
        },
        "paraphrase_prompts": ["Apple A5 is developed by"],
        "neighborhood_prompts": ["iPod Classic, created by", "iPhone 4, developed by"],
        "attribute_prompts": ["Google Nexus One is created by"],
        "generation_prompts": ["Apple A5 is sold by"],
    },
    {
        "case_id": 7,
        "pararel_idx": 14768,
        "requested_rewrite": {
            "prompt": "{} is a citizen of",
            "relation_id": "P27",
            "target_new": {"str": "Italy", "id": "Q38"},
            "target_true": {"str": "Sweden", "id": "Q34"},
            "subject": "Anaal Nathrakh",
        },
        "paraphrase_prompts": ["Anaal Nathrakh holds a citizenship from"],
        "neighborhood_prompts": ["Greta Garbo is a citizen of"],
        "attribute_prompts": ["Dante Alighieri is a citizen of"],
        "generation_prompts": ["Anaal Nathrakh's passport says"],
    },
]


@pytest.fixture(scope="module")
def zsre_rows() -> list[dict[str, Any]]:
    assert ZSRE_SAMPLE.is_file(), f"the vendored zsRE sample is missing: {ZSRE_SAMPLE} (see data/zsre/README.md)"
    return json.loads(ZSRE_SAMPLE.read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def load(source: str, path: Path, **kw: Any) -> list[EditRecord]:
    return load_edit_file(DataConfig(source=source, path=str(path), **kw), hf_cache_dir=path.parent / "hf-cache")


def same(a: list[EditRecord], b: list[EditRecord]) -> None:
    assert a == b
    assert [r.meta for r in a] == [r.meta for r in b]  # meta is outside EditRecord equality


# --------------------------------------------------------------------------------------------
# zsRE: the real sample


def test_zsre_sample_facts(zsre_rows):
    """The counts the rest of the file relies on, read off the data."""
    assert len(zsre_rows) == 400
    assert [i for i, r in enumerate(zsre_rows) if not r["alt"].strip()] == EMPTY_ALT
    assert [i for i, r in enumerate(zsre_rows) if r["alt"] and r["alt"].strip() == r["answers"][0].strip()] == ALT_EQUALS_ANSWER
    assert [i for i, r in enumerate(zsre_rows) if r["alt"][:1] == " "] == LEADING_SPACE_ALT
    assert len({r["subject"] for r in zsre_rows}) == 211


def test_zsre_sample_loads_memit(zsre_rows):
    records = load_edit_file(DataConfig(source="zsre", path=str(ZSRE_SAMPLE)))

    assert len(records) == 400
    first = records[0]
    assert first.case_id == 0
    assert first.subject == "Watts Humphrey" == zsre_rows[0]["subject"]
    assert first.prompt == "What university did {} attend?"
    assert first.rewrite_prompt == zsre_rows[0]["src"]
    assert first.target_new == "Illinois Institute of Technology" == zsre_rows[0]["answers"][0]
    assert first.target_true is None
    assert first.paraphrase_prompts == ("What university did Watts Humphrey take part in?",)
    # MEMIT's dsets/zsre.py scores NS on loc + "?"; the file's NQ questions have none.
    assert first.neighborhood_prompts == ("nq question: who played desmond doss father in hacksaw ridge?",)
    assert first.neighborhood_answers == ("Hugo Weaving",)
    assert first.style == "zsre" and first.relation_id is None
    assert first.meta == {"alt": "University of Michigan", "answers": ["Illinois Institute of Technology"], "pred": "Trinity College"}

    assert [r.case_id for r in records] == list(range(400))
    assert all(r.prompt.count("{}") == 1 for r in records)
    assert [r.rewrite_prompt for r in records] == [row["src"] for row in zsre_rows]
    assert [r.target_new for r in records] == [row["answers"][0] for row in zsre_rows]
    targets = [r.target_new for r in records] + [r.meta["alt"] for r in records] + [a for r in records for a in r.neighborhood_answers]
    assert not [t for t in targets if t != t.strip()]
    # Repeated subjects stay separate records (different questions about the same entity).
    assert len({r.subject for r in records}) == 211
    assert [r.subject for r in records[4:10]] == ["Lahti Town Hall"] * 6
    assert len({r.prompt for r in records[4:10]}) == 6
    # Unicode survives, NFC; other text is kept as written (the double space in record 217).
    assert records[103].subject == "Margit Nünke" and records[103].prompt == "What gender is {} of?"
    assert records[38].subject == "Carolina Rodríguez"
    assert all(unicodedata.is_normalized("NFC", r.rewrite_prompt) for r in records)
    assert records[217].prompt == "What kind of  occupation does {} have?"
    # Records with several answers keep them all in meta; the edit target is the first.
    assert records[215].target_new == "Alan Thicke" and len(records[215].meta["answers"]) == 6


def test_zsre_sample_easyedit_error_names_record_and_field():
    cfg = DataConfig(source="zsre", path=str(ZSRE_SAMPLE), zsre_target="easyedit")
    with pytest.raises(DataError, match=r"^zsre record 54: field 'alt': is empty"):
        load_edit_file(cfg)


def test_zsre_sample_easyedit_skip(zsre_rows, caplog):
    cfg = DataConfig(source="zsre", path=str(ZSRE_SAMPLE), zsre_target="easyedit", on_bad_record="skip")
    with caplog.at_level(logging.WARNING, logger="editdecay.data.edits"):
        records = load_edit_file(cfg)

    bad = EMPTY_ALT + ALT_EQUALS_ANSWER
    assert len(records) == 400 - len(bad) == 392
    assert sorted(set(range(400)) - {r.case_id for r in records}) == sorted(bad)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "skipped 8 of 400" in text
    assert "record 54: field 'alt': is empty" in text
    assert "record 73: field 'target_new': equals target_true ('1958')" in text

    by_id = {r.case_id: r for r in records}
    assert by_id[0].target_new == "University of Michigan" and by_id[0].target_true == "Illinois Institute of Technology"
    assert by_id[19].target_new == "Clairmont-Mayer" == zsre_rows[19]["alt"].strip()  # leading space stripped
    assert all(r.target_new != r.target_true for r in records)


def test_zsre_case_id_field_and_first_occurrence_only():
    row = {
        "case_id": "q-17", "subject": "Io", "src": "Which planet does Io orbit, and is Io volcanic?",
        "rephrase": "Io is a moon of which planet?", "alt": " Saturn", "answers": ["Jupiter"],
        "loc": "nq question: who wrote hamlet", "loc_ans": " William Shakespeare ",
    }
    (rec,) = convert_zsre([row], target="easyedit")
    assert rec.case_id == "q-17"
    assert rec.prompt == "Which planet does {} orbit, and is Io volcanic?"
    assert (rec.target_new, rec.target_true) == ("Saturn", "Jupiter")
    assert rec.neighborhood_answers == ("William Shakespeare",)
    decomposed = dict(row, subject="Nu\u0308nke", src="Where was Nu\u0308nke born?")
    assert convert_zsre([decomposed])[0].subject == "Nünke"  # NFC


# --------------------------------------------------------------------------------------------
# CounterFact / MultiCounterFact


def test_counterfact_maps_every_field(tmp_path):
    records = load("counterfact", write_json(tmp_path / "counterfact.json", COUNTERFACT_ROWS))

    assert len(records) == 3
    r = records[0]
    assert r.case_id == 0
    assert r.subject == "Danielle Darrieux"
    assert r.prompt == "The mother tongue of {} is"
    assert r.rewrite_prompt == "The mother tongue of Danielle Darrieux is"
    assert (r.target_new, r.target_true) == ("English", "French")
    assert r.relation_id == "P103"
    assert r.style == "counterfact"
    assert r.paraphrase_prompts == tuple(COUNTERFACT_ROWS[0]["paraphrase_prompts"])
    assert r.neighborhood_prompts == tuple(COUNTERFACT_ROWS[0]["neighborhood_prompts"])
    assert r.neighborhood_answers == ("French", "French", "French")  # neighbours keep the true target
    assert r.attribute_prompts == tuple(COUNTERFACT_ROWS[0]["attribute_prompts"])
    assert r.meta == {
        "target_new_id": "Q1860",
        "target_true_id": "Q150",
        "pararel_idx": 2796,
        "generation_prompts": COUNTERFACT_ROWS[0]["generation_prompts"],
    }
    assert [x.relation_id for x in records] == ["P103", "P140", "P1303"]
    assert records[2].rewrite_prompt == "Toko Yasuda, the"
    assert records[1].neighborhood_answers == ("Christianity", "Christianity")


def test_mcf_source(tmp_path):
    records = load("mcf", write_json(tmp_path / "multi_counterfact.json", MCF_ROWS))
    assert [r.case_id for r in records] == [4, 7]
    assert [(r.subject, r.target_new, r.target_true) for r in records] == [
        ("Apple A5", "Google", "Apple"),
        ("Anaal Nathrakh", "Italy", "Sweden"),
    ]
    assert records[0].neighborhood_answers == ("Apple", "Apple")
    assert records[1].meta["target_new_id"] == "Q38"
    bad = [MCF_ROWS[0], dict(MCF_ROWS[1], requested_rewrite=dict(MCF_ROWS[1]["requested_rewrite"], prompt="A citizen of"))]
    with pytest.raises(DataError, match=r"^mcf record 1: field 'prompt': must contain exactly one '\{\}'"):
        load("mcf", write_json(tmp_path / "bad.json", bad))


COUNTERFACT_SAMPLE = REPO / "data" / "counterfact" / "counterfact_sample.json"


def test_real_counterfact_sample_loads(tmp_path):
    """The vendored 300 real CounterFact records (data/counterfact/README.md) through the loader."""
    records = load("counterfact", COUNTERFACT_SAMPLE)
    assert len(records) == 300
    first = records[0]
    assert (first.case_id, first.subject, first.rewrite_prompt, first.target_new, first.target_true) == (
        0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "English", "French")
    assert first.paraphrase_prompts == ("Where Danielle Darrieux is from, people speak the language of",)
    assert first.neighborhood_prompts == ("Michel Rocard is a native speaker of",)
    ids = [r.case_id for r in records]
    assert ids == sorted(set(ids)) and ids[-1] == 673  # CounterFact's own case ids, in file order
    assert len({r.subject for r in records}) == 300
    for r in records:
        assert r.style == "counterfact" and r.prompt.count("{}") == 1
        assert r.subject in r.rewrite_prompt and r.target_new != r.target_true
        assert len(r.paraphrase_prompts) == 1 and r.neighborhood_answers == (r.target_true,)
    # Read as a Hugging Face `datasets` JSON file in the same format, it gives the same records
    # (a copy: `load` puts the datasets cache beside the file).
    copy = tmp_path / "counterfact_sample.json"
    copy.write_bytes(COUNTERFACT_SAMPLE.read_bytes())
    same(load("hf", copy, hf_format="counterfact"), records)


# --------------------------------------------------------------------------------------------
# Our own record shape


def test_records_jsonl_roundtrip(tmp_path):
    original = convert_counterfact(COUNTERFACT_ROWS) + convert_zsre(json.loads(ZSRE_SAMPLE.read_text(encoding="utf-8"))[:20])
    path = tmp_path / "edits.jsonl"
    path.write_text(records_to_jsonl(original), encoding="utf-8")
    same(load("records", path), original)
    # The same shape as one JSON array.
    same(load("records", write_json(tmp_path / "edits.json", [r.to_dict() for r in original])), original)


# --------------------------------------------------------------------------------------------
# source: hf (real `datasets` on local files)


def test_zsre_loc_question_mark_matches_reference_or_is_kept_on_request(zsre_rows):
    with_mark = load_edit_file(DataConfig(source="zsre", path=str(ZSRE_SAMPLE)))
    as_written = load_edit_file(DataConfig(source="zsre", path=str(ZSRE_SAMPLE), zsre_loc_question_mark=False))
    assert [r.neighborhood_prompts[0] for r in as_written] == [row["loc"] for row in zsre_rows]
    assert [r.neighborhood_prompts[0] for r in with_mark] == [row["loc"] + "?" for row in zsre_rows]
    # a loc that is already a question keeps its single "?" (the fact world's probes are)
    (rec,) = convert_zsre([dict(zsre_rows[0], loc="nq question: who wrote hamlet?")])
    assert rec.neighborhood_prompts == ("nq question: who wrote hamlet?",)


def test_hf_local_jsonl_counterfact(tmp_path):
    path = write_jsonl(tmp_path / "cf.jsonl", COUNTERFACT_ROWS)
    records = load("hf", path, hf_format="counterfact")
    same(records, convert_counterfact(COUNTERFACT_ROWS))


def test_hf_local_directory(tmp_path):
    data = tmp_path / "mcf-dataset"
    data.mkdir()
    write_jsonl(data / "train.jsonl", MCF_ROWS)
    same(load("hf", data, hf_format="counterfact"), convert_counterfact(MCF_ROWS))


def test_hf_local_parquet_counterfact_and_records(tmp_path):
    cf_path = tmp_path / "cf.parquet"
    pd.DataFrame(COUNTERFACT_ROWS + MCF_ROWS).to_parquet(cf_path)
    same(load("hf", cf_path, hf_format="counterfact"), convert_counterfact(COUNTERFACT_ROWS + MCF_ROWS))

    original = convert_counterfact(COUNTERFACT_ROWS)
    rec_path = tmp_path / "records.parquet"
    pd.DataFrame([r.to_dict() for r in original]).to_parquet(rec_path)
    same(load("hf", rec_path, hf_format="records"), original)


def test_hf_local_zsre_jsonl_split(tmp_path, zsre_rows):
    path = write_jsonl(tmp_path / "zsre.jsonl", zsre_rows[:30])
    records = load("hf", path, hf_format="zsre", hf_split="train[:10]")
    same(records, convert_zsre(zsre_rows[:10]))


def test_hf_hub_id_offline_is_one_line_error(tmp_path):
    """No network: a hub id fails with one line, no traceback (run offline, as a user would)."""
    script = textwrap.dedent(
        f"""
        from editdecay.config import DataConfig
        from editdecay.data.edits import load_edit_file
        from editdecay.errors import DataError
        try:
            load_edit_file(DataConfig(source="hf", path="azhx/counterfact"), hf_cache_dir={str(tmp_path)!r})
        except DataError as err:
            print("DataError:", err)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO / "src"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("DataError: data.path: cannot load 'azhx/counterfact' from the Hugging Face Hub")
    assert "Traceback" not in out.stderr


def test_hf_missing_local_file(tmp_path):
    with pytest.raises(DataError, match=r"^data\.path: file not found: .*nope\.parquet$"):
        load("hf", tmp_path / "nope.parquet")


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file and line, or the record and field


def test_malformed_jsonl_line_number(tmp_path):
    path = tmp_path / "edits.jsonl"
    good = json.dumps(EditRecord(0, "Io", "{} orbits", "Saturn", "Jupiter").to_dict())
    path.write_text(f"{good}\n\n" + '{"case_id": 1 "subject": "Io"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load("records", path)
    assert str(err.value) == f"{path}:3: malformed JSON (Expecting ',' delimiter)"


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"^data\.path: file not found: .*missing\.json$"):
        load("zsre", tmp_path / "missing.json")


def test_zsre_subject_not_in_src(zsre_rows):
    rows = [zsre_rows[0], dict(zsre_rows[1], subject="Foo")]
    with pytest.raises(DataError) as err:
        convert_zsre(rows)
    assert str(err.value) == (
        "zsre record 1: field 'subject': 'Foo' does not occur in src 'Which family does Ramalinaceae belong to?'"
    )


def test_empty_targets(zsre_rows):
    with pytest.raises(DataError, match=r"^zsre record 0: field 'answers': is empty$"):
        convert_zsre([dict(zsre_rows[0], answers=[])])
    with pytest.raises(DataError, match=r"^zsre record 0: field 'answers': answers\[0\] is empty$"):
        convert_zsre([dict(zsre_rows[0], answers=["  "])])
    row = json.loads(json.dumps(COUNTERFACT_ROWS[1]))
    row["requested_rewrite"]["target_new"]["str"] = " "
    with pytest.raises(DataError, match=r"^counterfact record 1: field 'requested_rewrite\.target_new\.str': is empty$"):
        convert_counterfact([COUNTERFACT_ROWS[0], row])


def test_missing_fields(zsre_rows):
    with pytest.raises(DataError, match=r"^zsre record 0: field 'loc': is missing$"):
        convert_zsre([{k: v for k, v in zsre_rows[0].items() if k != "loc"}])
    with pytest.raises(DataError, match=r"^counterfact record 0: field 'requested_rewrite': is missing$"):
        convert_counterfact([{"case_id": 0}])


def test_records_prompt_without_placeholder(tmp_path):
    rows = [
        EditRecord(0, "Io", "{} orbits", "Saturn", "Jupiter").to_dict(),
        dict(EditRecord(1, "Io", "{} orbits", "Saturn", None).to_dict(), prompt="Io orbits"),
    ]
    with pytest.raises(DataError, match=r"^records record 1: field 'prompt': must contain exactly one '\{\}'"):
        load("records", write_jsonl(tmp_path / "edits.jsonl", rows))


def test_top_level_not_a_list(tmp_path):
    path = write_json(tmp_path / "edits.json", {"records": []})
    with pytest.raises(DataError, match=r"edits\.json: the top level must be a JSON array of records, got an object$"):
        load("records", path)


def test_records_unknown_field(tmp_path):
    row = dict(EditRecord(0, "Io", "{} orbits", "Saturn", "Jupiter").to_dict(), confidence=0.9)
    with pytest.raises(DataError, match=r"^records record 0: field 'confidence': unknown field; allowed: "):
        load("records", write_jsonl(tmp_path / "edits.jsonl", [row]))


def test_skip_keeps_good_records_and_all_bad_is_an_error(zsre_rows, caplog):
    rows = [zsre_rows[0], dict(zsre_rows[1], subject="Foo"), "not an object", zsre_rows[2]]
    with caplog.at_level(logging.WARNING, logger="editdecay.data.edits"):
        kept = convert_zsre(rows, on_bad_record="skip")
    assert [r.case_id for r in kept] == [0, 3]
    assert "skipped 2 of 4" in caplog.text and "record 2: field '<record>': must be a JSON object" in caplog.text
    with pytest.raises(DataError, match=r"^zsre: all 2 records are bad; first: record 0: field 'subject'"):
        convert_zsre(rows[1:3], on_bad_record="skip")
    assert convert_records([], on_bad_record="skip") == []


def test_world_source_is_not_read_here():
    with pytest.raises(ValueError, match="world"):
        load_edit_file(DataConfig(source="world"))


def test_random_selection_draws_a_seeded_batch_and_leaves_the_rest_for_controls(tiny_cfg):
    from editdecay.editing.run import edit_records, split_edit_dataset
    from editdecay.metrics.native import native_records

    first = edit_records(tiny_cfg)
    seeded = {s: tiny_cfg.model_copy(update={"seed": s, "edit": tiny_cfg.edit.model_copy(update={"selection": "random"})})
              for s in (0, 1)}
    batch0, rest0 = split_edit_dataset(seeded[0])
    assert len(batch0) == tiny_cfg.edit.num_edits and len(batch0) + len(rest0) == len(first) + len(split_edit_dataset(tiny_cfg)[1])
    assert [r.case_id for r in edit_records(seeded[0])] == [r.case_id for r in batch0]  # the same seed, the same batch
    assert {r.case_id for r in batch0} != {r.case_id for r in edit_records(seeded[1])}  # seeds vary the edits
    assert {r.case_id for r in batch0} != {r.case_id for r in first}
    controls = native_records(batch0, rest0, 10)
    assert controls and not {r.case_id for r in controls} & {r.case_id for r in batch0}
