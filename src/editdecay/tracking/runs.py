"""MLflow runs for trials. With ``tracking/server.py``, the only place that imports mlflow.

We use ``MlflowClient`` with explicit run ids, not the fluent API: the fluent API keeps the active
run in process-global state, and Ray reuses worker processes, so one trial's run would leak into
the next. A run is always ended: FINISHED, FAILED (with the traceback as an artifact) or KILLED.

Tracking URI: ``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``, else the embedded default,
``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlruns`` — no server needed.
"""

from __future__ import annotations

import functools
import getpass
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
import warnings
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
from editdecay.tracking.views import compare_view_tag

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
# The UI opens an experiment on the view its kind names; without the tag MLflow 3 guesses, and
# guessed an empty GenAI overview for ours. Training runs belong on the runs table.
EXPERIMENT_KIND = "custom_model_development"
PACKAGES = ("editdecay", "torch", "transformers", "peft", "deepspeed", "datasets", "mlflow", "ray")


class TrackingError(EditDecayError):
    """The tracking server or store cannot be used."""


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """For an http(s) server: one clear line within ``timeout`` seconds if it does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(_health_request(uri), timeout=timeout) as resp:
            if resp.status == 200:
                return
            raise TrackingError(f"tracking server {redact_uri(uri)} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError, ValueError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"tracking server {redact_uri(uri)} is unreachable ({reason}); start it with `editdecay server` "
                            "or unset MLFLOW_TRACKING_URI to use the embedded sqlite store") from None


def _health_request(uri: str) -> urllib.request.Request:
    """GET <uri>/health with the real credentials: ``user:pass@`` in the URI becomes a Basic auth
    header, as MLflow's client sends it (urllib would take ``user:pass@host`` for the host name).
    Only messages show the URI redacted; the connection always uses it as given."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    headers = {}
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return urllib.request.Request(urlunsplit(parts).rstrip("/") + "/health", headers=headers)


def get_experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        view_key, view_value = compare_view_tag(int(time.time() * 1000))
        try:  # opens on the runs table, with a saved comparison view in its "Views" menu
            return client.create_experiment(name, tags={"mlflow.experimentKind": EXPERIMENT_KIND, view_key: view_value})
        except MlflowException as err:
            raise TrackingError(f"cannot create experiment '{name}': {str(err).splitlines()[0]}") from None
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"experiment '{name}' exists but is deleted; restore it (mlflow experiments restore "
                            f"--experiment-id {exp.experiment_id}) or choose another experiment name")
    if "mlflow.experimentKind" not in exp.tags:  # made by `mlflow run` or an older editdecay
        client.set_experiment_tag(exp.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
    view_key, view_value = compare_view_tag(int(time.time() * 1000))
    try:
        current = json.loads(exp.tags.get(view_key, "{}")).get("state")
    except ValueError:
        current = None
    if current != json.loads(view_value)["state"]:  # missing, or the view of an older editdecay
        client.set_experiment_tag(exp.experiment_id, view_key, view_value)
    return exp.experiment_id


def check_artifact_root(client: MlflowClient, experiment_id: str) -> None:
    """A local artifact root must be writable before the trial computes anything it would lose."""
    location = client.get_experiment(experiment_id).artifact_location
    if location.startswith("file://"):
        location = location[len("file://"):]
    elif "://" in location or location.split(":", 1)[0] in ("mlflow-artifacts", "dbfs", "runs", "models"):
        return  # mlflow-artifacts:/1 (a proxying server), s3://, …: the server or the store checks it
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
    """Host, Python, package versions, git commit: the same for every run a process starts (a sweep's
    worker runs many trials), so read once per process (package metadata and git cost ~0.1-0.3 s)."""
    return dict(_environment_tags())


@functools.lru_cache(maxsize=1)
def _environment_tags() -> dict[str, str]:
    tags = {"editdecay.host": platform.node(), "editdecay.python": platform.python_version(),
            # The UI's User and Source columns read these; the client API (unlike the fluent one) sets none.
            "mlflow.user": _user(), "mlflow.source.type": "LOCAL",
            "mlflow.source.name": " ".join(["editdecay", *sys.argv[1:2]]) if _is_cli() else Path(sys.argv[0] or "python").name}
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


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return str(os.getuid())


def _is_cli() -> bool:
    argv0 = Path(sys.argv[0] or "")
    return argv0.name == "editdecay" or argv0.parent.name == "editdecay"  # `editdecay …` or `python -m editdecay …`


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


@dataclass
class Tracker:
    """Handle on one run: everything goes through the client with this run's id."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    # How the run ends when its block exits without an error; a sweep whose trials failed sets FAILED.
    end_status: str = "FINISHED"

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

    def log_metric_steps(self, series: Mapping[str, list[tuple[int, float]]]) -> None:
        """Metric histories at once: ``{"ft.train.loss": [(step, value), ...]}`` (the UI's line charts)."""
        now = int(time.time() * 1000)
        items = [Metric(name, float(v), now, int(step)) for name, points in series.items() for step, v in points]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_table(self, table, artifact_file: str) -> None:
        """A DataFrame as an MLflow table (``*.json``): the UI's artifact view shows it as a grid."""
        self.client.log_table(self.run_id, data=table, artifact_file=artifact_file)

    def log_dataset(self, name: str, source: str, context: str, table=None, digest: str | None = None) -> None:
        """One input dataset of the run (the UI's Dataset column and lineage). ``table``: a DataFrame
        to profile (small: the edit records); without it only name, source and ``digest`` are recorded."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        try:
            with warnings.catch_warnings():
                # MLflow registers LocalArtifactDatasetSource twice (for the schemes "" and "file"), so
                # every local path "can be interpreted in multiple ways" — both ways are the same class.
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple",
                                        category=UserWarning)
                src = resolve_dataset_source(source)
        except Exception:  # generated data (the fact world): no file to point at; resolvers raise various errors
            src = CodeDatasetSource({"editdecay.source": source})
        if table is not None:
            dataset = mlflow.data.from_pandas(table, source=src, name=name, digest=digest)
            # Declared, not inferred: inference warns about integer columns on every trial.
            dataset.schema = declared_schema(table)
        else:
            dataset = MetaDataset(src, name=name, digest=digest)
        inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])]
        try:
            self.client.log_inputs(self.run_id, datasets=inputs)
        except MlflowException as err:
            # Concurrent trials logging the same dataset race on the store's unique (experiment, name,
            # digest) row (seen with sqlite behind a server): the loser finds the row on a retry.
            if "UNIQUE" not in str(err) and "IntegrityError" not in str(err):
                raise
            time.sleep(0.5)
            self.client.log_inputs(self.run_id, datasets=inputs)


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
    tracker = _adopt_project_run(client, experiment, run_name, all_tags) if not parent_run_id else None
    if tracker is None:
        try:
            run = client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
        except MlflowException as err:
            raise TrackingError(f"cannot start a run in experiment '{experiment}' at {redact_uri(uri)}: "
                                f"{str(err).splitlines()[0]}") from None
        tracker = Tracker(client, run.info.run_id, experiment_id)
    monitor = _system_metrics(tracker, uri)
    with _ended_as_it_went(tracker):
        try:
            if params:
                tracker.log_params(params)
            yield tracker
        finally:  # its last sample lands before the run ends
            if monitor is not None:
                _finish_system_metrics(monitor)


def _adopt_project_run(client: MlflowClient, experiment: str, run_name: str, tags: Mapping[str, Any]) -> Tracker | None:
    """Under ``mlflow run``, the run it made (``MLFLOW_RUN_ID``), so one command leaves one run.

    Taken once per process: the variable is removed, so the runs of a sweep's trials (Ray workers
    inherit the driver's environment) do not all write into the sweep's run. Adopted only when
    ``mlflow run`` put its run in the configured experiment (``--experiment-name``): runs cannot move
    between experiments, and a sweep's parent must sit beside its trials for the UI to nest them.
    Otherwise the project run gets a note saying where the results went. A run id from another
    store is ignored.
    """
    run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    exp = client.get_experiment(run.info.experiment_id)
    if exp.name != experiment:
        hint = (f"editdecay logs this command into experiment '{experiment}' (run '{run_name}'), not into this run "
                f"in '{exp.name}'; `mlflow run ... --experiment-name {experiment}` makes them one run")
        client.set_tag(run_id, "mlflow.note.content", hint)
        print(f"editdecay: {hint}", file=sys.stderr, flush=True)
        return None
    get_experiment_id(client, exp.name)  # tags its kind and saved view if `mlflow run` created it
    client.update_run(run_id, name=run_name)
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items() if not k.startswith("mlflow.source")])
    return Tracker(client, run_id, run.info.experiment_id)


def _system_metrics(tracker: Tracker, uri: str):
    """CPU/memory/disk/network (and GPU) as ``system/*`` metrics of the run, when psutil is installed.
    ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false`` turns it off."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower() in ("false", "0"):
        return None
    try:
        import psutil  # noqa: F401
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        return None
    monitor = SystemMetricsMonitor(tracker.run_id, tracking_uri=uri)
    monitor.start()
    monitor.editdecay_first_step = getattr(monitor, "_logging_step", None)
    return monitor


def _finish_system_metrics(monitor) -> None:
    """Stop the monitor; a run shorter than its sampling interval (10 s; a trial whose stages are all
    cached takes ~1 s) would otherwise end with no system metrics: publish the sample taken at start."""
    monitor.finish()
    try:
        if getattr(monitor, "_logging_step", None) == monitor.editdecay_first_step:
            metrics = monitor.aggregate_metrics()
            if metrics:
                monitor.publish_metrics(metrics)
                monitor.mlflow_logger.flush()
    except Exception:  # system metrics are a convenience; never fail a run over them
        pass


@contextmanager
def _ended_as_it_went(tracker: "Tracker") -> Iterator[None]:
    """End the run FINISHED, KILLED (Ctrl-C) or FAILED with the traceback as an artifact: never RUNNING."""
    status = None
    try:
        yield
    except KeyboardInterrupt as err:
        status = "KILLED"
        err.killed_runs = [*getattr(err, "killed_runs", []), tracker.run_id]  # for the CLI's message
        raise
    except BaseException:
        status = "FAILED"
        try:
            tracker.log_text(traceback.format_exc(), "error/traceback.txt")
        except Exception:  # the original error matters more than a failed upload
            pass
        raise
    finally:
        # No error: end_status, read now because the block may set it (a sweep with failed trials)
        tracker.client.set_terminated(tracker.run_id, status=status or tracker.end_status)


def declared_schema(table):
    """The MLflow schema of a DataFrame, from its dtypes: integers ``long``, floats ``double``,
    booleans ``boolean``, anything else ``string``; a column with a missing value is optional."""
    from mlflow.types import ColSpec, DataType, Schema

    kinds = {"i": DataType.long, "u": DataType.long, "f": DataType.double, "b": DataType.boolean}
    return Schema([ColSpec(kinds.get(table[c].dtype.kind, DataType.string), str(c),
                           required=not bool(table[c].isna().any())) for c in table.columns])


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


# ------------------------------------------------------------------------------------------------
# `mlflow run`: one command, one run. The project run (MLFLOW_RUN_ID) is made before our command
# starts, in the experiment `mlflow run` chose (--experiment-name, else Default); runs cannot move
# between experiments, so under `mlflow run` that experiment is the one we log to.


def project_run_experiment(tracking_uri: str) -> str | None:
    """Under ``mlflow run``: the name of the experiment holding its run, if that run is in this store."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        return client.get_experiment(client.get_run(run_id).info.experiment_id).name
    except MlflowException:
        return None  # a run id from another store


def log_report(tracking_uri: str, out_dir: str | os.PathLike, *, experiment: str, source: str,
               sweep_id: str | None, parent_run_id: str | None, by_sweep: bool) -> list[str]:
    """Log a report's files as ``report/`` artifacts; returns the run ids they went to.

    ``by_sweep`` (``report --sweep``): the sweep's parent run, its own report. Under ``mlflow run``
    the project run as well (it is the report command's run; nothing else would fill it). Otherwise
    (``report --experiment``): a run of its own in that experiment, never a sweep's parent run, whose
    artifacts are that sweep's."""
    client = MlflowClient(tracking_uri=tracking_uri)
    tags = {"editdecay.kind": "report", "editdecay.report.source": source, **({"editdecay.sweep": sweep_id} if sweep_id else {})}
    targets: list[str] = []
    if by_sweep and parent_run_id:
        client.log_artifacts(parent_run_id, str(out_dir), "report")  # it may have ended: artifacts can still be added
        targets.append(parent_run_id)
    project = os.environ.pop("MLFLOW_RUN_ID", None)
    if project and project not in targets:
        try:
            client.get_run(project)
        except MlflowException:
            project = None
    if project and project not in targets:
        client.update_run(project, name="report")
        client.log_batch(project, tags=[RunTag(k, v) for k, v in {**environment_tags(), **tags}.items()
                                        if not k.startswith("mlflow.source")])
        client.log_artifacts(project, str(out_dir), "report")  # `mlflow run` ends it
        targets.append(project)
    elif not targets:
        with tracked_run(experiment, "report", tags={**tags, "mlflow.note.content": f"editdecay report of {source}"},
                         tracking_uri=tracking_uri) as run:
            run.log_artifact(out_dir, "report")
            targets.append(run.run_id)
    return targets
