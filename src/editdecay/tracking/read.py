"""Read a sweep back out of MLflow for the report: trial runs, their per-edit results, decay curves.

The report (``editdecay.report``) never imports mlflow; it gets plain dataclasses and DataFrames
from here. What a trial logs today (``pipeline/trial.py``) and what we read:

- params: the flattened trial config (``edit.method``, ``finetune.method``, ``finetune.layers``, ``seed``, …)
- ``results/per_edit.csv``: one row per edit, ES/PS/NS of every group side by side
  (``es_base``, ``es_edit``, ``es_ftonly``, ``es_ft``, …) and ``flipped``
- ``results/native_facts.csv``: one row per native (never edited) fact, ``known_<group>`` side by
  side (optional: runs from before the native-fact control have none)
- ``edits/records.jsonl``: the edit records (for the relation of each case id); read once per
  distinct edit set (the ``records`` stage key), not once per run
- ``ds/<group>/ds_predictions.json``: the downstream answers per test row (task, gold, pred) of each
  evaluated group (base, edit, ftonly, ft), for DS intervals over rows and paired DS tests
- metrics: ``<group>.ds.acc`` and the decay curve ``curve.es`` by step

Selection: a sweep id (the ``editdecay.sweep`` tag; the sweep's parent run carries
``editdecay.kind = sweep``) or an experiment plus an MLflow filter string. Bad selections raise
:class:`ReportInputError` (one line, exit 2) naming the cause.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from editdecay.errors import EditDecayError
from editdecay.tracking import redact_uri, resolve_tracking_uri
from editdecay.tracking.runs import check_reachable

PER_EDIT_ARTIFACT = "results/per_edit.csv"
NATIVE_ARTIFACT = "results/native_facts.csv"
RECORDS_ARTIFACT = "edits/records.jsonl"
DS_PREDICTIONS_ARTIFACT = "ds/{group}/ds_predictions.json"
DS_GROUPS = ("base", "edit", "ftonly", "ft")
CURVE_METRIC = "curve.es"
SWEEP_STATE_FILE = "editdecay_sweep.json"  # written by sweep/runner.py into the sweep's storage dir
# Parallel artifact reads: a remote server answers one request per round trip.
READ_THREADS = 8
# One progress bar per downloaded file would bury the report's own lines.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class ReportInputError(EditDecayError):
    """The runs the report was asked for cannot be found or do not belong together."""


@dataclass
class TrialRun:
    """One trial run as the report sees it."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    per_edit: pd.DataFrame | None = field(default=None, repr=False)
    native: pd.DataFrame | None = field(default=None, repr=False)  # per native fact; None if not logged
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, curve.es)
    problem: str | None = None  # why this run's per-edit results are not usable
    start_time: int = 0  # ms since the epoch (MLflow's run start): the latest of a trial's repeats wins
    # group -> one row per DS test row (task, gold, pred), in the evaluation's row order; absent groups
    # (no fine-tuning, or runs from before the answers were logged) are missing
    ds_predictions: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)


@dataclass
class SweepRuns:
    """The selected runs and where they came from."""

    description: str  # "sweep smoke-1a2b3c4d" or "experiment 'x', filter '...'"
    tracking_uri: str
    experiment: str
    experiment_id: str
    sweep_id: str | None
    parent_run_id: str | None  # where the report's files are logged (None: no single parent)
    trials: list[TrialRun]
    expected_trials: int | None = None  # from the sweep parent run's params, when known
    missing: list[dict[str, str]] = field(default_factory=list)  # trial ids the sweep planned but never ran


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        try:
            page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000,
                                      order_by=["attributes.start_time ASC"], page_token=token)
        except MlflowException as err:
            raise ReportInputError(f"filter {filter_string!r} is not a valid MLflow filter string: "
                                   f"{str(err).splitlines()[0]}") from None
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _all_experiments(client: MlflowClient) -> dict[str, str]:
    """Active experiments: id -> name."""
    out, token = {}, None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        out.update({e.experiment_id: e.name for e in page})
        token = page.token
        if not token:
            return out


def _client(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ReportInputError(f"tracking store {uri} does not exist; pass --tracking-uri (or set MLFLOW_TRACKING_URI) "
                               "to the store the sweep logged to")
    return MlflowClient(tracking_uri=uri), uri


def sweep_state(path: str | os.PathLike) -> dict | None:
    """The sweep runner's state file in a storage dir (``sweep-results/smoke``), if ``path`` is one."""
    p = Path(path)
    file = p / SWEEP_STATE_FILE if p.is_dir() else p
    if file.name == SWEEP_STATE_FILE and file.is_file():
        try:
            state = json.loads(file.read_text())
            if isinstance(state, dict) and isinstance(state.get("sweep_id"), str) and isinstance(state.get("tracking_uri"), str):
                return state
        except (OSError, ValueError):
            pass
        raise ReportInputError(f"{file} is not a readable sweep state (damaged or edited); pass the sweep id "
                               "(tag editdecay.sweep) with --sweep and the store with --tracking-uri instead")
    return None


def read_sweep(sweep: str, *, tracking_uri: str | None = None, experiment: str | None = None) -> SweepRuns:
    """Every trial run tagged ``editdecay.sweep = sweep`` (an id, or a sweep storage dir holding its state)."""
    state = sweep_state(sweep)
    if state is None and ("/" in sweep or os.sep in sweep):
        raise ReportInputError(f"no sweep state ({SWEEP_STATE_FILE}) in '{sweep}'; run the sweep with that --storage "
                               "first, or pass the sweep id (tag editdecay.sweep)")
    if state is not None:
        stored = state["tracking_uri"]
        if not tracking_uri and "***" in stored:  # the state file never holds credentials (sweep/runner.py)
            tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not tracking_uri:
                raise ReportInputError(f"the sweep state in '{sweep}' names the tracking store {stored} with its "
                                       "credentials removed; pass --tracking-uri (or MLFLOW_TRACKING_URI) with them")
        sweep, tracking_uri = state["sweep_id"], tracking_uri or stored
    client, uri = _client(tracking_uri)
    experiments = _all_experiments(client)
    found = _search(client, list(experiments), f"tags.`editdecay.sweep` = {_quote(sweep)}") if experiments else []
    if not found:
        raise ReportInputError(f"unknown sweep id '{sweep}': no run at {redact_uri(uri)} is tagged editdecay.sweep='{sweep}' "
                               "(the id is printed by `editdecay sweep` and tagged on its parent run)")
    parents = [r for r in found if r.data.tags.get("editdecay.kind") == "sweep"]
    trials = [r for r in found if r.data.tags.get("editdecay.kind") != "sweep"]
    exp_ids = {r.info.experiment_id for r in found}
    if len(exp_ids) > 1:
        names = sorted(experiments.get(e, e) for e in exp_ids)
        raise ReportInputError(f"sweep '{sweep}' has runs in several experiments ({', '.join(names)}); "
                               "select one with --experiment NAME --filter \"tags.`editdecay.sweep` = '…'\"")
    exp_id = exp_ids.pop()
    if experiment is not None and experiments.get(exp_id) != experiment:
        raise ReportInputError(f"sweep '{sweep}' ran in experiment '{experiments.get(exp_id)}', not '{experiment}'; "
                               "drop --experiment or name that one")
    if not trials:
        raise ReportInputError(f"sweep '{sweep}' has a parent run but no trial runs yet; run or resume the sweep first")
    parent = parents[0] if parents else None
    expected = None
    planned: list[str] = []
    if parent is not None:
        expected = _int(parent.data.params.get("sweep.n_trials"))
        planned = _planned_trials(client, parent)
    runs = SweepRuns(f"sweep {sweep}", uri, experiments[exp_id], exp_id, sweep,
                     parent.info.run_id if parent else None, _load_trials(client, trials), expected)
    seen = {t.tags.get("editdecay.trial_id") for t in runs.trials}
    runs.missing = [{"trial_id": t, "status": "NOT RUN"} for t in planned if t not in seen]
    return runs


def read_experiment(experiment: str, filter_string: str = "", *, tracking_uri: str | None = None) -> SweepRuns:
    """Trial runs of ``experiment`` matching ``filter_string`` (sweep parent runs left out)."""
    client, uri = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    experiments = _all_experiments(client)
    if exp is None or exp.lifecycle_stage == "deleted":
        known = ", ".join(sorted(experiments.values())[:8]) or "(none)"
        raise ReportInputError(f"experiment '{experiment}' not found at {redact_uri(uri)}; known experiments: {known}")
    found = [r for r in _search(client, [exp.experiment_id], filter_string)
             if r.data.tags.get("editdecay.kind") != "sweep"]
    if not found:
        elsewhere = _search(client, [e for e in experiments if e != exp.experiment_id], filter_string) if filter_string else []
        elsewhere = [r for r in elsewhere if r.data.tags.get("editdecay.kind") != "sweep"]
        if elsewhere:
            other = sorted({experiments[r.info.experiment_id] for r in elsewhere})
            raise ReportInputError(f"filter {filter_string!r} matches no run of experiment '{experiment}', but "
                                   f"{len(elsewhere)} run(s) from another experiment ({', '.join(other)}); "
                                   "use --experiment with that name")
        raise ReportInputError(f"filter {filter_string!r} matches no trial run of experiment '{experiment}'; "
                               "loosen the filter (an empty filter takes every run)")
    parents = {r.data.tags.get("mlflow.parentRunId") for r in found}
    sweeps = {r.data.tags.get("editdecay.sweep") for r in found}
    parent = parents.pop() if len(parents) == 1 else None
    sweep_id = sweeps.pop() if len(sweeps) == 1 else None
    desc = f"experiment '{experiment}'" + (f", filter {filter_string!r}" if filter_string else "")
    return SweepRuns(desc, uri, experiment, exp.experiment_id, sweep_id, parent, _load_trials(client, found))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _planned_trials(client: MlflowClient, parent) -> list[str]:
    """Trial ids the sweep file expands to (a trial that never started has no run to say it is
    missing): the file the parent run names if it is still there, else its ``sweep.yaml`` artifact."""
    from editdecay.sweep.grid import load_sweep

    candidates = [parent.data.params.get("sweep.file")]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for candidate in candidates:
                if candidate and Path(candidate).is_file():
                    return [t.trial_id for t in load_sweep(candidate, resolve_paths=False).trials]
            path = client.download_artifacts(parent.info.run_id, "sweep.yaml", tmp)
            return [t.trial_id for t in load_sweep(path, resolve_paths=False).trials]
    except Exception:  # a sweep file that no longer expands (moved base config): missing runs go unlisted
        return []


def _load_trials(client: MlflowClient, runs: list) -> list[TrialRun]:
    trials = [TrialRun(r.info.run_id, r.info.run_name or r.info.run_id, r.info.status, r.info.experiment_id,
                       dict(r.data.params), dict(r.data.tags), dict(r.data.metrics),
                       start_time=int(r.info.start_time or 0)) for r in runs]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        list(pool.map(lambda t: _load_results(client, t), trials))
    relations = _relations(client, trials)
    for t in trials:
        if t.per_edit is not None:
            key = _records_key(t)
            rel = relations.get(key) or {}
            t.per_edit["relation"] = t.per_edit["case_id"].astype(str).map(rel).fillna("-")
    return trials


def _load_results(client: MlflowClient, trial: TrialRun) -> None:
    if trial.status != "FINISHED":
        trial.problem = f"run {trial.status}"
        return
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(trial.run_id, PER_EDIT_ARTIFACT, tmp)
            trial.per_edit = pd.read_csv(path)
    except (MlflowException, OSError) as err:
        trial.problem = f"no {PER_EDIT_ARTIFACT} ({str(err).splitlines()[0][:120]})"
        return
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trial.native = pd.read_csv(client.download_artifacts(trial.run_id, NATIVE_ARTIFACT, tmp))
    except (MlflowException, OSError):
        trial.native = None  # logged only since the native-fact control exists; the report goes on without
    try:  # one listing instead of a failed download per group for runs that logged no answers
        logged = {Path(f.path).name for f in client.list_artifacts(trial.run_id, "ds")}
    except (MlflowException, OSError):
        logged = set()
    for group in DS_GROUPS:
        if group not in logged:
            continue
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(trial.run_id, DS_PREDICTIONS_ARTIFACT.format(group=group), tmp)
                rows = json.loads(Path(path).read_text())
        except (MlflowException, OSError, json.JSONDecodeError):
            continue  # logged only since the answers are kept; the report falls back to the DS metric
        trial.ds_predictions[group] = pd.DataFrame(rows, columns=["task", "gold", "pred"])
    if CURVE_METRIC in trial.metrics:
        history = client.get_metric_history(trial.run_id, CURVE_METRIC)
        trial.curve = sorted((int(m.step), float(m.value)) for m in history)


def _records_key(trial: TrialRun) -> str:
    try:
        return json.loads(trial.tags.get("editdecay.stage_keys", "{}")).get("records") or trial.run_id
    except json.JSONDecodeError:
        return trial.run_id


def _relations(client: MlflowClient, trials: list[TrialRun]) -> dict[str, dict[str, str]]:
    """case id -> relation id, per distinct edit set (read from one run that logged it)."""
    by_key: dict[str, str] = {}
    for t in trials:
        if t.per_edit is not None:
            by_key.setdefault(_records_key(t), t.run_id)

    def read(item: tuple[str, str]) -> tuple[str, dict[str, str]]:
        key, run_id = item
        try:
            with tempfile.TemporaryDirectory() as tmp:
                text = Path(client.download_artifacts(run_id, RECORDS_ARTIFACT, tmp)).read_text()
        except (MlflowException, OSError):
            return key, {}
        rows = [json.loads(line) for line in io.StringIO(text) if line.strip()]
        return key, {str(r.get("case_id")): r.get("relation_id") or "-" for r in rows}

    with ThreadPoolExecutor(READ_THREADS) as pool:
        return dict(pool.map(read, by_key.items()))


def log_report_artifacts(tracking_uri: str, run_id: str, out_dir: str | os.PathLike, artifact_path: str = "report") -> None:
    """The report's files as artifacts of the sweep's parent run (it may have ended: artifacts can still be added)."""
    MlflowClient(tracking_uri=tracking_uri).log_artifacts(run_id, str(out_dir), artifact_path)
