"""MLflow runs for trials. With ``tracking/server.py``, the only place that imports mlflow.

We use ``MlflowClient`` with explicit run ids, not the fluent API: the fluent API keeps the active
run in process-global state, and Ray reuses worker processes, so one trial's run would leak into
the next. A run is always ended: FINISHED, FAILED (with the traceback as an artifact) or KILLED.

Tracking URI: ``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``, else the embedded default,
``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlruns`` — no server needed.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from editdecay.errors import EditDecayError
from editdecay.tracking import redact_uri, resolve_tracking_uri  # also imported from here by callers

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
PACKAGES = ("editdecay", "torch", "transformers", "peft", "deepspeed", "datasets", "mlflow", "ray")


class TrackingError(EditDecayError):
    """The tracking server or store cannot be used."""


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """For an http(s) server: one clear line within ``timeout`` seconds if it does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return
            raise TrackingError(f"tracking server {redact_uri(uri)} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"tracking server {redact_uri(uri)} is unreachable ({reason}); start it with `editdecay server` "
                            "or unset MLFLOW_TRACKING_URI to use the embedded sqlite store") from None


def get_experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name)
        except MlflowException as err:
            raise TrackingError(f"cannot create experiment '{name}': {str(err).splitlines()[0]}") from None
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"experiment '{name}' exists but is deleted; restore it (mlflow experiments restore "
                            f"--experiment-id {exp.experiment_id}) or choose another experiment name")
    return exp.experiment_id


def check_artifact_root(client: MlflowClient, experiment_id: str) -> None:
    """A local artifact root must be writable before the trial computes anything it would lose."""
    location = client.get_experiment(experiment_id).artifact_location
    if location.startswith("file://"):
        location = location[len("file://"):]
    elif "://" in location:  # mlflow-artifacts:, s3:, …: the server or the store checks it
        return
    root = Path(location)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrackingError(f"artifact root {root} of experiment {experiment_id} is not writable ({err.strerror}); "
                            "fix its permissions or use another tracking.experiment / tracking.uri") from None


def environment_tags() -> dict[str, str]:
    tags = {"editdecay.host": platform.node(), "editdecay.python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            tags[f"editdecay.version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
        if commit:
            tags["mlflow.source.git.commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


@dataclass
class Tracker:
    """Handle on one run: everything goes through the client with this run's id."""

    client: MlflowClient
    run_id: str
    experiment_id: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)


@contextmanager
def tracked_run(experiment: str, run_name: str, *, params: Mapping[str, Any] | None = None,
                tags: Mapping[str, Any] | None = None, tracking_uri: str | None = None,
                parent_run_id: str | None = None) -> Iterator[Tracker]:
    """Start a run, yield a :class:`Tracker`, and always end it (FAILED + traceback on error)."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = get_experiment_id(client, experiment)
    check_artifact_root(client, experiment_id)
    all_tags = {**environment_tags(), **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    try:
        run = client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    except MlflowException as err:
        raise TrackingError(f"cannot start a run in experiment '{experiment}' at {redact_uri(uri)}: {str(err).splitlines()[0]}") from None
    tracker = Tracker(client, run.info.run_id, experiment_id)
    with _ended_as_it_went(tracker):
        if params:
            tracker.log_params(params)
        yield tracker


@contextmanager
def _ended_as_it_went(tracker: "Tracker") -> Iterator[None]:
    """End the run FINISHED, KILLED (Ctrl-C) or FAILED with the traceback as an artifact: never RUNNING."""
    status = "FINISHED"
    try:
        yield
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        try:
            tracker.log_text(traceback.format_exc(), "error/traceback.txt")
        except Exception:  # the original error matters more than a failed upload
            pass
        raise
    finally:
        tracker.client.set_terminated(tracker.run_id, status=status)


# ------------------------------------------------------------------------------------------------
# Sweeps: find trial runs by tag, clean up after a killed sweep, reopen the sweep's parent run


@dataclass
class RunInfo:
    """What the sweep runner needs to know about one run, without handing out MLflow objects."""

    run_id: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def search_runs_by_tags(tracking_uri: str, experiment: str, tags: Mapping[str, str],
                        statuses: tuple[str, ...] = ()) -> list[RunInfo]:
    """Runs of ``experiment`` carrying every tag in ``tags`` (and one of ``statuses`` if given), oldest first."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    filters = [f"tags.`{k}` = {_quote(str(v))}" for k, v in tags.items()]
    runs: list[RunInfo] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=" and ".join(filters), max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for r in page:
            if statuses and r.info.status not in statuses:
                continue
            runs.append(RunInfo(r.info.run_id, r.info.status, dict(r.data.tags), dict(r.data.params),
                                dict(r.data.metrics), r.info.start_time or 0))
        token = page.token
        if not token:
            return runs


def mark_runs_terminated(tracking_uri: str, run_ids: list[str], status: str = "KILLED", reason: str = "") -> None:
    """End runs left RUNNING by a process that died (SIGKILL, node loss): they will never end themselves."""
    client = MlflowClient(tracking_uri=tracking_uri)
    for run_id in run_ids:
        if reason:
            client.set_tag(run_id, "editdecay.end_reason", reason)
        client.set_terminated(run_id, status=status)


def ensure_experiment(tracking_uri: str, experiment: str) -> str:
    """Create the experiment (and the store's schema) once, from one process, before trials start:
    measured on sqlite, concurrent first use of a fresh store races on schema creation."""
    check_reachable(tracking_uri)
    return get_experiment_id(MlflowClient(tracking_uri=tracking_uri), experiment)


@contextmanager
def reopened_run(run_id: str, tracking_uri: str) -> Iterator[Tracker]:
    """Mark an ended (or stale RUNNING) run RUNNING again, yield it, and end it like ``tracked_run``.

    Used on ``--resume``: the sweep keeps one parent run across restarts, so its trials stay nested
    under it in the UI.
    """
    check_reachable(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise TrackingError(f"cannot reopen run {run_id} at {redact_uri(tracking_uri)}: {str(err).splitlines()[0]}") from None
    client.update_run(run_id, status="RUNNING")
    tracker = Tracker(client, run_id, run.info.experiment_id)
    with _ended_as_it_went(tracker):
        yield tracker
