"""The user-facing CLI: commands listed, the main job runs, bad input is one line + exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from editdecay.cli import main

from conftest import REPO, TEST_CACHE, ZSRE_SAMPLE

TINY = str(REPO / "configs" / "tiny.yaml")


def run_cli(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess: what a user sees, tracebacks included."""
    return subprocess.run([sys.executable, "-m", "editdecay", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_help_lists_the_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("prepare", "config", "data", "world"):
        assert command in out.stdout


def test_prepare_prints_recall_meeting_targets(toy_model_dir, capsys):
    assert main(["prepare", TINY, f"cache_dir={TEST_CACHE}", "--json"]) == 0
    out = capsys.readouterr().out
    assert "reusing" in out and "MISSED" not in out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["model_dir"] == str(toy_model_dir) and report["canonical"] >= 0.9


def test_config_command_prints_resolved_config(capsys):
    assert main(["config", TINY, "edit.method=alphaedit", "--overrides", "edit.num_edits=7 finetune.layers=[1]"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# config hash ") and "method: alphaedit" in out and "num_edits: 7" in out


def test_data_command_loads_world_and_vendored_zsre(capsys):
    assert main(["data", TINY]) == 0
    assert capsys.readouterr().out.startswith("262 edit records from source 'world'")
    assert main(["data", "data.source=zsre", f"data.path={ZSRE_SAMPLE}", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("400 edit records from source 'zsre' (211 distinct subjects")


def test_world_command_exports_loadable_files(tmp_path, capsys):
    assert main(["world", TINY, "--out", str(tmp_path / "w")]) == 0
    assert main(["data", "data.source=counterfact", f"data.path={tmp_path / 'w' / 'counterfact.json'}"]) == 0
    assert "262 edit records" in capsys.readouterr().out


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("editdecay: error: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture()
def bad_files(tmp_path):
    jsonl = tmp_path / "edits.jsonl"
    good = {"case_id": 0, "subject": "Veloria", "prompt": "The capital of {} is", "target_new": "Drasten",
            "target_true": "Mirelle"}
    jsonl.write_text(json.dumps(good) + "\n" + json.dumps(good)[:-5] + "\n")
    no_braces = tmp_path / "nobraces.jsonl"
    no_braces.write_text(json.dumps({**good, "prompt": "The capital of Veloria is"}) + "\n")
    empty_target = tmp_path / "empty.jsonl"
    empty_target.write_text(json.dumps({**good, "target_new": " "}) + "\n")
    zsre = tmp_path / "zsre.json"
    zsre.write_text(json.dumps([{"subject": "Lahti Town Hall", "src": "Who designed the museum?", "rephrase": "x?",
                                 "alt": "A", "answers": ["B"], "loc": "nq question: q", "loc_ans": "a"}]))
    return {"jsonl": jsonl, "no_braces": no_braces, "empty_target": empty_target, "zsre": zsre}


def test_bad_input_gives_one_line_and_exit_2(bad_files, tmp_path):
    cases = [
        (("config", TINY, "edit.methd=memit"), ("unknown config key 'edit.methd'", "allowed here: method")),
        (("config", TINY, "edit.num_edits=lots"), ("edit.num_edits", "valid integer")),
        (("config", str(tmp_path / "nope.yaml")), ("file not found",)),
        (("data", "data.source=records", f"data.path={bad_files['jsonl']}"), ("edits.jsonl:2: malformed JSON",)),
        (("data", "data.source=records", f"data.path={bad_files['no_braces']}"), ("record 0", "field 'prompt'")),
        (("data", "data.source=records", f"data.path={bad_files['empty_target']}"), ("record 0", "field 'target_new'", "empty")),
        (("data", "data.source=zsre", f"data.path={bad_files['zsre']}"), ("zsre record 0", "field 'subject'")),
        (("data", "data.source=zsre", f"data.path={tmp_path / 'missing.json'}"), ("data.path: file not found",)),
        (("prepare", TINY, "model.toy.n_head=3"), ("divisible by n_head",)),
        (("prepare", TINY, "stray"), ("argument 'stray'", "key=value")),
    ]
    for args, needles in cases:
        _one_line_error(run_cli(*args), *needles)


def test_mlflow_run_prepare_entry_point(toy_model_dir, tmp_path):
    """`mlflow run . -e prepare --env-manager local` works (the toy model is already cached)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "prepare", "--env-manager", "local",
         "-P", f"config={TINY}", "-P", f"overrides=cache_dir={TEST_CACHE}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "canonical" in out.stdout and str(toy_model_dir) in out.stdout
