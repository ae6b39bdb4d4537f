"""MLflow tracking against a real server on 127.0.0.1 and the embedded sqlite default."""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from editdecay.config import flatten, load_config, stable_hash
from editdecay.tracking.runs import TrackingError, resolve_tracking_uri, tracked_run
from editdecay.tracking.server import start_server

from conftest import free_port


def test_run_logs_params_metrics_steps_artifacts(mlflow_server, tmp_path):
    cfg = load_config(None, ["edit.num_edits=7"])
    artifact = tmp_path / "per_edit.csv"
    artifact.write_text("case_id,es\n1,1\n")
    with tracked_run("editdecay-test", "trial-a", params=flatten(cfg), tags={"editdecay.config_hash": stable_hash(cfg)},
                     tracking_uri=mlflow_server) as run:
        run.log_metrics({"edit.es": 0.95, "edit.ps": 0.8})
        for step, es in [(0, 0.95), (10, 0.7), (20, 0.5)]:
            run.log_metrics({"curve.es": es}, step=step)
        run.log_artifact(artifact, "tables")
        run.log_dict(cfg.model_dump(mode="json"), "config.json")
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["editdecay-test"], filter_string="params.`edit.num_edits` = '7'")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED" and row["metrics.edit.es"] == pytest.approx(0.95)
    assert row["params.edit.method"] == "memit" and row["tags.editdecay.config_hash"] == stable_hash(cfg)
    assert row["tags.editdecay.version.torch"].startswith("2.13")
    client = MlflowClient(mlflow_server)
    curve = client.get_metric_history(run.run_id, "curve.es")
    assert [(m.step, m.value) for m in curve] == [(0, 0.95), (10, 0.7), (20, 0.5)]
    # Artifacts round-trip through the server's proxy.
    local = mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="tables/per_edit.csv",
                                                dst_path=str(tmp_path / "dl"), tracking_uri=mlflow_server)
    assert open(local).read() == "case_id,es\n1,1\n"


def test_failed_run_ends_failed_with_traceback(mlflow_server, tmp_path):
    with pytest.raises(RuntimeError, match="injected fault"):
        with tracked_run("editdecay-test", "trial-fails", tracking_uri=mlflow_server) as run:
            raise RuntimeError("injected fault in fine-tuning")
    client = MlflowClient(mlflow_server)
    assert client.get_run(run.run_id).info.status == "FAILED"
    text = mlflow.artifacts.load_text(f"runs:/{run.run_id}/error/traceback.txt")
    assert "RuntimeError: injected fault in fine-tuning" in text


def test_nested_runs(mlflow_server):
    with tracked_run("editdecay-test", "sweep", tracking_uri=mlflow_server) as parent:
        with tracked_run("editdecay-test", "child", tracking_uri=mlflow_server, parent_run_id=parent.run_id) as child:
            pass
    client = MlflowClient(mlflow_server)
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id


def test_deleted_experiment_clash_is_one_line(mlflow_server):
    client = MlflowClient(mlflow_server)
    exp_id = client.create_experiment("editdecay-deleted")
    client.delete_experiment(exp_id)
    with pytest.raises(TrackingError, match="exists but is deleted; restore it"):
        with tracked_run("editdecay-deleted", "x", tracking_uri=mlflow_server):
            pass


def test_unreachable_server_fails_fast():
    start = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable") as info:
        with tracked_run("x", "y", tracking_uri=f"http://127.0.0.1:{free_port()}"):
            pytest.fail("the run must not start")
    assert time.monotonic() - start < 10 and "\n" not in str(info.value)


def test_embedded_sqlite_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracked_run("embedded", "r") as run:
        run.log_metrics({"ds.acc": 0.5})
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run.run_id).data.metrics["ds.acc"] == 0.5


def test_server_refuses_unwritable_root(tmp_path):
    from editdecay.errors import EditDecayError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EditDecayError):
        start_server(blocker / "sub", port=free_port())


def test_unwritable_embedded_artifact_root_is_refused_before_the_run(tmp_path):
    """The experiment's artifact root is a file, not a directory: one line, and no run is created."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    client = MlflowClient(uri)
    client.create_experiment("blocked", artifact_location=str(blocker / "artifacts"))
    with pytest.raises(TrackingError, match="not writable"):
        with tracked_run("blocked", "x", tracking_uri=uri):
            pass
    exp = client.get_experiment_by_name("blocked")
    assert client.search_runs([exp.experiment_id]) == []
