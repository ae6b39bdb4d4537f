"""Causal tracing (editdecay trace) on the toy, and the named offline corpora for layer statistics."""

from __future__ import annotations

import json
import sys

import pytest

from editdecay.errors import DataError

from conftest import REPO, TEST_CACHE


def test_trace_cli_writes_the_curve_and_a_proposal(toy_model_dir, tmp_path, capsys):
    from editdecay.cli import main

    out = tmp_path / "trace"
    assert main(["trace", str(REPO / "configs" / "tiny.yaml"), f"cache_dir={TEST_CACHE}", "--records", "6",
                 "--noise-samples", "3", "--window", "1", "--n-layers", "2", "--out", str(out)]) == 0
    result = json.loads((out / "trace.json").read_text())
    n = len(result["indirect_effect"])
    assert n == 4 and len(result["proposed_layers"]) == 2
    # Corrupting the subject destroys the recall the clean prompt has: the trace has something to restore.
    assert result["clean_prob"] > result["corrupted_prob"] + 0.3
    assert (out / "trace.csv").read_text().splitlines()[0] == "layer,indirect_effect"
    assert (out / "trace.png").stat().st_size > 1000
    assert "proposal    edit.layers=" in capsys.readouterr().out


def test_propose_layers_takes_the_window_with_the_largest_effect():
    from editdecay.editing.trace import TraceResult, propose_layers

    ie = [0.0, 0.1, 0.5, 0.4, 0.05, 0.0]
    r = TraceResult(layers=list(range(6)), indirect_effect=ie, per_record=[ie], clean_prob=1, corrupted_prob=0, window=1)
    assert propose_layers(r, 2) == [2, 3] and propose_layers(r, 3) == [1, 2, 3]


def test_python_docstrings_corpus_is_deterministic_english():
    from editdecay.editing.corpora import python_docstrings

    cid, texts = python_docstrings(200)
    assert cid == "python-docstrings-" + ".".join(map(str, sys.version_info[:3]))
    assert len(texts) == 200 and python_docstrings(200) == (cid, texts)
    assert all(len(t.split()) >= 8 for t in texts)


def test_wordnet_corpus_names_its_package_when_missing(monkeypatch, tmp_path):
    from editdecay.editing import corpora

    monkeypatch.setattr(corpora, "WORDNET_DIR", tmp_path)
    with pytest.raises(DataError, match=r"^edit\.stats\.corpus: 'wordnet-glosses' needs WordNet.*apt-get install wordnet-base"):
        corpora.wordnet_glosses(10)


def test_wordnet_glosses_when_installed():
    from editdecay.editing.corpora import WORDNET_DIR, wordnet_glosses

    if not (WORDNET_DIR / "data.noun").is_file():
        pytest.skip("WordNet is not installed here (apt-get install wordnet-base); .ci/run installs it")
    cid, texts = wordnet_glosses(1000)
    assert cid.startswith("wordnet-glosses-") and len(texts) == 1000 and wordnet_glosses(1000) == (cid, texts)
    assert all(": " in t and t.endswith(".") for t in texts)


def test_a_missing_gguf_file_fails_in_one_line(tmp_path):
    from editdecay.errors import ModelLoadError
    from editdecay.model_sources import prepared_model_dir

    with pytest.raises(ModelLoadError, match=r"^model\.name: GGUF file .* does not exist"):
        prepared_model_dir(str(tmp_path / "x.gguf"), tmp_path)
    assert prepared_model_dir("gpt2-xl", tmp_path) is None  # hub ids are loaded as they are
