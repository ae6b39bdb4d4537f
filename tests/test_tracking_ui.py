"""What a researcher sees in the MLflow UI, read back through ``MlflowClient``: one run per
``mlflow run -e trial``, no null hyperparameter, per-step training curves, datasets, the Trainer log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from editdecay.config import flatten, load_config
from editdecay.finetune.recipe import PRESETS

from conftest import REPO, TEST_CACHE

# The same trial as test_trial.py, so the two share the stage cache.
TRIAL = ["edit.num_edits=20", "finetune.max_steps=12", "finetune.curve_every=4", "eval.ds_max_examples=40",
         "tracking.curve_edits=10"]
# Null in configs/tiny.yaml but not hyperparameters: locations that do not apply to generated data.
NOT_HYPERPARAMETERS = {"model.revision", "data.path", "edit.stats.dataset_config", "finetune.data.path", "eval.ds_path",
                       "eval.native_path",
                       "tracking.uri"}
EXPERIMENT = "ui-trials"

pytestmark = pytest.mark.slow  # `mlflow run` of a tiny trial: ~90 s on 2 busy cores


@pytest.fixture(scope="module")
def project_run(mlflow_server, toy_model_dir):
    """``mlflow run . -e trial`` against the test server: (client, the runs it left, the config)."""
    overrides = [f"cache_dir={TEST_CACHE}", *TRIAL, f"tracking.experiment={EXPERIMENT}"]  # = --experiment-name
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "true",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "trial", "--env-manager", "local",
                           "--experiment-name", EXPERIMENT, "-P", "config=configs/tiny.yaml",
                           "-P", f"overrides={' '.join(overrides)}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments],
                              filter_string="tags.`mlflow.project.entryPoint` = 'trial'")
    return client, runs, load_config(REPO / "configs" / "tiny.yaml", overrides)


def test_one_command_one_run(project_run):
    client, runs, _ = project_run
    assert len(runs) == 1  # not an empty project run in "Default" plus the trial's own
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert "editdecay.config_hash" in run.data.tags and "edit.es" in run.data.metrics


def test_every_hyperparameter_the_recipe_used_has_a_value(project_run):
    _, runs, cfg = project_run
    params = runs[0].data.params
    nulls = [k for k, v in flatten(cfg).items() if v is None and k not in NOT_HYPERPARAMETERS]
    assert "finetune.lr" in nulls and "edit.v_lr" in nulls  # the preset and the editing table filled these
    missing = [k for k in nulls if params.get(f"resolved.{k}") in (None, "", "null", "None")]
    assert missing == []
    toy_peft = PRESETS["toy"]["peft"]
    assert float(params["resolved.finetune.lr"]) == toy_peft["lr"] and int(params["resolved.finetune.lora_r"]) == toy_peft["lora_r"]
    assert json.loads(params["resolved.edit.layers"]) == [1, 2]  # the editing table's toy row
    assert int(params["resolved.finetune.max_steps"]) == 12


def test_training_curves_trainer_log_datasets_and_ui_defaults(project_run, tmp_path):
    client, runs, _ = project_run
    run = runs[0]
    for group in ("ft", "ftonly"):
        loss = client.get_metric_history(run.info.run_id, f"{group}.train.loss")
        assert len({m.step for m in loss}) >= 2, loss  # a curve, not a summary number
        assert client.get_metric_history(run.info.run_id, f"{group}.train.lr")
        assert client.get_metric_history(run.info.run_id, f"{group}.train.grad_norm")
    artifacts = {a.path for d in ("finetune/ft", "finetune/ftonly", "results") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"finetune/ft/trainer_log.json", "finetune/ftonly/trainer_log.json", "results/per_edit.csv",
            "results/per_edit_table.json"} <= artifacts
    contexts = {i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for i in run.inputs.dataset_inputs}
    assert contexts == {"edits-world": "edit", "finetune-world": "train"}
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"]
    exp_tags = client.get_experiment(run.info.experiment_id).tags
    assert exp_tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
    view = json.loads(exp_tags["mlflow.sharedViewState.editdecay-compare-survival"])  # the saved view
    state = json.loads(view["state"])
    assert state["groupBy"]["groupByKeys"] == [{"mode": "param", "groupByData": "finetune.method"},
                                               {"mode": "param", "groupByData": "finetune.layers"}]
    assert state["searchFilter"] == "params.`finetune.method` != 'none'"
    assert state["compareRunCharts"][0]["type"] == "PARALLEL" and state["compareRunCharts"][0]["selectedMetrics"] == ["survival.efr"]
    assert any(k.startswith("system/") for k in run.data.metrics)  # psutil is pinned


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless chromium not installed")
def test_saved_view_opens_charts_on_parallel_coordinates_of_survival(project_run, mlflow_server, tmp_path):
    """The saved view's chart view in a real browser: the parallel-coordinates card draws (it does not
    over grouped string params), ends in survival.efr, and the FT-none filter and two-key grouping hold."""
    import time

    sys.path.insert(0, str(REPO / "scripts"))
    from ui_screenshots import UI_SETTINGS, Chromium

    from editdecay.tracking.views import view_url

    client, runs, _ = project_run
    browser = Chromium(shutil.which("chromium"), str(tmp_path / "profile"))
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.send("Emulation.setDeviceMetricsOverride", session, width=1600, height=1000, deviceScaleFactor=1, mobile=False)
        browser.send("Page.navigate", session, url=mlflow_server + "/")
        time.sleep(5)
        browser.send("Runtime.evaluate", session, expression="".join(
            f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in UI_SETTINGS.items()))
        browser.send("Page.navigate", session, url=view_url(mlflow_server, runs[0].info.experiment_id, charts=True))
        text, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline and "Parallel" not in text:
            time.sleep(3)
            text = browser.send("Runtime.evaluate", session, expression="document.body.innerText")["result"].get("value", "")
        time.sleep(3)
        text = browser.send("Runtime.evaluate", session, expression="document.body.innerText")["result"].get("value", "")
    finally:
        browser.close()
    assert "Parallel Coordinates" in text, text[:2000]
    assert "does not support aggregated" not in text
    assert "Group by: finetune.method" in text and "survival.efr" in text
