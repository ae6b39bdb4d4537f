"""The tracked trial end to end on the toy model, against a real MLflow server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from editdecay.config import load_config
from editdecay.pipeline.trial import run_trial

from conftest import REPO, TEST_CACHE

# Small but real: 20 edits, a short LoRA run with the decay curve, DS on a subset.
TRIAL = ["edit.num_edits=20", "finetune.max_steps=12", "finetune.curve_every=4", "eval.ds_max_examples=40",
         "tracking.curve_edits=10"]


def test_trial_logs_everything_and_second_run_reuses_every_stage(mlflow_server, tmp_path, toy_model_dir):
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={TEST_CACHE}", *TRIAL, f"tracking.uri={mlflow_server}",
                                                       "tracking.experiment=trials"])
    first = run_trial(cfg, force=False)
    m = first.metrics
    # The edits took (MEMIT at 20 edits on the tiny model: ES 0.85, measured; the editing goals are
    # tested at 100 edits in test_editing_goals.py) and the four groups were all evaluated.
    assert m["base.es"] < 0.3 and m["edit.es"] >= 0.75
    for group in ("base", "ftonly", "edit", "ft"):
        assert 0.0 <= m[f"{group}.ds.acc"] <= 1.0 and f"{group}.ns" in m
    assert 0.0 <= m["survival.efr"] <= 1.0 and m["survival.survival"] == pytest.approx(1 - m["survival.efr"])
    # The intrinsic-knowledge control: 50 unedited facts, known by the base model, scored in every group.
    assert m["native.n_facts"] == 50 and m["base.native.acc"] >= 0.9 and m["native.n_known"] >= 45
    for name in ("native.retention", "native.retention_ftonly", "native.retention_edit", "ft.native.acc"):
        assert 0.0 <= m[name] <= 1.0

    client = MlflowClient(mlflow_server)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["edit.method"] == "memit" and run.data.params["finetune.method"] == "lora"
    assert run.data.metrics["edit.es"] == pytest.approx(m["edit.es"])
    assert json.loads(run.data.tags["editdecay.stage_keys"]) == first.stage_keys
    curve = client.get_metric_history(first.run_id, "curve.es")
    assert [c.step for c in curve] == sorted(c.step for c in curve) and len(curve) >= 3
    mlflow.set_tracking_uri(mlflow_server)
    found = mlflow.search_runs(experiment_names=["trials"], filter_string="metrics.`survival.efr` >= 0")
    assert first.run_id in set(found["run_id"])
    # Artifacts reload: the per-edit table, the records, the deltas.
    dl = mlflow.artifacts.download_artifacts(run_id=first.run_id, dst_path=str(tmp_path / "dl"), tracking_uri=mlflow_server)
    table = pd.read_csv(os.path.join(dl, "results", "per_edit.csv"))
    assert len(table) == 20 and {"es_base", "es_edit", "es_ft", "flipped"} <= set(table.columns)
    native = pd.read_csv(os.path.join(dl, "results", "native_facts.csv"))
    assert len(native) == 50 and {f"known_{g}" for g in ("base", "ftonly", "edit", "ft")} <= set(native.columns)
    assert not set(native["case_id"].astype(str)) & set(table["case_id"].astype(str))  # never edited
    assert sum(1 for _ in open(os.path.join(dl, "edits", "records.jsonl"))) == 20
    from editdecay.editing.deltas import EditDeltas

    assert EditDeltas.load(os.path.join(dl, "edit", "deltas.safetensors")).norms()
    assert os.path.isfile(os.path.join(dl, "finetune", "ft", "adapter", "adapter_config.json"))

    second = run_trial(cfg)
    assert second.cache_misses == [] and len(second.cache_hits) == len(first.cache_hits) + len(first.cache_misses)
    assert second.metrics["survival.efr"] == m["survival.efr"] and second.run_id != first.run_id


def test_z_is_built_once_for_both_editors_and_a_lambda_change_rebuilds_only_the_update(tmp_path, toy_model_dir):
    """The z stage (editing/targets.py): MEMIT and AlphaEdit on the same records read one z; λ is
    an update hyperparameter (edit stage only); a z hyperparameter makes a new z."""
    (tmp_path / "toy").symlink_to(TEST_CACHE.resolve() / "toy")  # the toy model; every stage built fresh here
    base = [f"cache_dir={tmp_path}", "edit.num_edits=6", "edit.v_num_grad_steps=4", "finetune.method=none",
            "eval.ds_max_examples=4", "eval.native_facts=0", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    trial = lambda *extra: run_trial(load_config(REPO / "configs" / "tiny.yaml", [*base, *extra]))  # noqa: E731
    memit = trial("edit.method=memit")
    alpha = trial("edit.method=alphaedit")
    lam = trial("edit.method=memit", "edit.mom2_weight=500")
    lr = trial("edit.method=memit", "edit.v_lr=0.2")
    assert "z" in memit.cache_misses and "edit" in memit.cache_misses
    for shared in (alpha, lam):
        assert "z" in shared.cache_hits and "z" not in shared.cache_misses and "edit" in shared.cache_misses
        assert shared.stage_keys["z"] == memit.stage_keys["z"] and shared.stage_keys["edit"] != memit.stage_keys["edit"]
    assert "z" in lr.cache_misses and lr.stage_keys["z"] != memit.stage_keys["z"]
    assert len(list((tmp_path / "stages" / "z").glob("*/z.safetensors"))) == 2
    # The edits took with the shared z (MEMIT at 6 edits, 4 z steps on the tiny model).
    assert memit.metrics["edit.es"] > memit.metrics["base.es"] and alpha.metrics["edit.es"] > alpha.metrics["base.es"]


@pytest.mark.slow
def test_destructive_finetuning_lowers_native_retention(mlflow_server, toy_model_dir):
    # LoRA at lr 0.3 for 12 steps wrecks the model: the control must see the model's own facts go.
    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"cache_dir={TEST_CACHE}", *TRIAL, f"tracking.uri={mlflow_server}", "tracking.experiment=native",
        "edit.method=none", "finetune.lr=0.3"])
    m = run_trial(cfg).metrics
    # The two-answer rule's chance level is 1/2; the top-1 rule has none to fall back on.
    assert m["base.native.acc"] >= 0.9 and m["native.retention_ftonly"] < 0.75 and m["ftonly.native.top1"] < 0.5
    assert "native.retention" not in m  # no KE→FT group without an editor


def test_injected_fault_in_finetuning_ends_failed(tmp_path, mlflow_server, toy_model_dir):
    broken = tmp_path / "ft.jsonl"
    broken.write_text(json.dumps({"instruction": "say hi", "input": ""}) + "\n")  # no "output": fails inside FT
    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"cache_dir={TEST_CACHE}", *TRIAL, f"tracking.uri={mlflow_server}", "tracking.experiment=faults",
        "finetune.data.source=file", f"finetune.data.path={broken}"])
    from editdecay.errors import EditDecayError

    with pytest.raises(EditDecayError):
        run_trial(cfg)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("faults")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    text = mlflow.artifacts.load_text(f"runs:/{runs[0].info.run_id}/error/traceback.txt")
    assert "Traceback" in text and "output" in text


def test_mlflow_run_trial_entry_point_with_embedded_store(tmp_path, toy_model_dir):
    """`mlflow run . -e trial --env-manager local` end to end, into the embedded sqlite default."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    overrides = " ".join([f"cache_dir={TEST_CACHE}", *TRIAL, "edit.method=alphaedit", "finetune.method=dora",
                          f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "trial", "--env-manager", "local",
         "-P", f"config={REPO / 'configs' / 'tiny.yaml'}", "-P", f"overrides={overrides}"],
        capture_output=True, text=True, cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "survival" in out.stdout and "ES" in out.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # No --experiment-name: `mlflow run` made its run in Default, and the trial logged into it (one
    # command, one run; no empty project run beside a trial in 'editdecay').
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and "survival.efr" in runs[0].data.metrics
    assert runs[0].data.params["edit.method"] == "alphaedit" and runs[0].data.tags["mlflow.project.entryPoint"] == "trial"
    assert client.get_experiment(runs[0].info.experiment_id).name == "Default"


def test_evaluate_command_writes_metrics_whole(tmp_path, toy_model_dir, capsys):
    from editdecay.cli import main

    out = tmp_path / "eval"
    args = [str(REPO / "configs" / "tiny.yaml"), f"cache_dir={TEST_CACHE}", "edit.num_edits=10", "eval.ds_max_examples=20"]
    assert main(["evaluate", *args, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"es", "ps", "ns", "ds.acc"} <= set(metrics) and metrics["es"] < 0.3 and metrics["ns"] > 0.7
    assert len(pd.read_parquet(out / "per_edit.parquet")) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]  # no temporary directory left behind
    # A bad key: one line, exit 2, nothing written.
    assert main(["evaluate", *args, "eval.ds_mode=guess", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists() and "eval.ds_mode" in capsys.readouterr().err
