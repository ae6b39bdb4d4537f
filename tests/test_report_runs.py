"""Where a report's files are logged (tracking.runs.log_report), on a real MLflow store: --sweep into
the sweep's parent run; --experiment into a run of its own, never over a sweep's artifacts; under
`mlflow run` into the run it made (so the command leaves no empty run)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from editdecay.tracking.runs import log_report, tracked_run


def _store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracked_run("rep", "smoke", tags={"editdecay.kind": "sweep", "editdecay.sweep": "smoke-1"}, tracking_uri=uri) as parent:
        parent.log_text("the sweep's own report", "report/report.html")
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.html").write_text("a report of a filter")
    return uri, parent.run_id, out


def _artifacts(client, run_id):
    return {f.path for f in client.list_artifacts(run_id, "report")}


def test_experiment_report_gets_a_run_of_its_own(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    uri, parent, out = _store(tmp_path)
    targets = log_report(uri, out, experiment="rep", source="experiment 'rep'", sweep_id="smoke-1",
                         parent_run_id=parent, by_sweep=False)
    client = MlflowClient(uri)
    assert len(targets) == 1 and targets[0] != parent
    run = client.get_run(targets[0])
    assert run.info.status == "FINISHED" and run.data.tags["editdecay.kind"] == "report"
    assert _artifacts(client, targets[0]) == {"report/report.html"}
    # the sweep's own report is untouched
    path = client.download_artifacts(parent, "report/report.html", str(tmp_path / "dl"))
    assert open(path).read() == "the sweep's own report"


def test_sweep_report_goes_to_the_parent_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    uri, parent, out = _store(tmp_path)
    assert log_report(uri, out, experiment="rep", source="sweep smoke-1", sweep_id="smoke-1", parent_run_id=parent,
                      by_sweep=True) == [parent]
    assert len(MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("rep").experiment_id])) == 1


def test_under_mlflow_run_the_project_run_is_the_reports_run(tmp_path, monkeypatch):
    uri, parent, out = _store(tmp_path)
    client = MlflowClient(uri)
    project = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id  # as `mlflow run` does
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    targets = log_report(uri, out, experiment="rep", source="experiment 'rep'", sweep_id=None, parent_run_id=parent,
                         by_sweep=False)
    assert targets == [project]
    assert _artifacts(client, project) == {"report/report.html"}
    assert client.get_run(project).data.tags["editdecay.kind"] == "report"
    everything = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(everything) == 2  # the sweep's parent and the project run: no third, no empty one
