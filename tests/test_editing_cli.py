"""``editdecay stats`` and ``editdecay edit`` end to end on the toy model."""

from __future__ import annotations

import json

import pandas as pd

from editdecay.cli import main
from editdecay.editing.deltas import EditDeltas

from conftest import REPO, TEST_CACHE

TINY = str(REPO / "configs" / "tiny.yaml")
COMMON = [f"cache_dir={TEST_CACHE}", "edit.stats.n_samples=600"]


def test_stats_then_edit_write_every_output(toy_model_dir, tmp_path, capsys):
    assert main(["stats", TINY, *COMMON]) == 0
    assert "layer   1  C (512, 512) float32" in capsys.readouterr().out
    out = tmp_path / "edit"
    assert main(["edit", TINY, *COMMON, "edit.num_edits=8", "edit.method=alphaedit", "edit.chunk_size=4",
                 "--out", str(out)]) == 0
    assert "alphaedit, 8 edits" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [".editdecay-output", "config.yaml", "deltas.safetensors", "metrics.json",
                                                     "per_edit.parquet", "records.jsonl"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["edit.n_edits"] == 8 and metrics["edit.es"] >= 0.75 and metrics["base.es"] == 0.0
    table = pd.read_parquet(out / "per_edit.parquet")
    assert len(table) == 8 and {"es", "ps", "ns", "base_es", "p_new"} <= set(table.columns)
    deltas = EditDeltas.load(out / "deltas.safetensors")
    assert sorted(deltas.layers) == [1, 2] and deltas.meta["method"] == "alphaedit"


def test_more_edits_than_records_is_one_line_and_writes_nothing(toy_model_dir, tmp_path, capsys):
    out = tmp_path / "edit"
    assert main(["edit", TINY, *COMMON, "edit.num_edits=1000", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "edit.num_edits=1000" in err and "262 records" in err
    assert not out.exists()
    assert main(["edit", TINY, *COMMON, "edit.layers=[7]", "--out", str(out)]) == 2
    assert "out of range" in capsys.readouterr().err and not out.exists()
