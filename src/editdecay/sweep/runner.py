"""Run a sweep with Ray Tune: one Tune trial per expanded grid point, one MLflow run per trial,
all nested under one parent run for the sweep. The only module that imports Ray.

Order of work, so that bad input fails before anything starts: validate and expand the sweep
(:mod:`editdecay.sweep.grid`) → check the state directory (``--resume`` / changed file) → check
the tracking store answers → connect to Ray (a cluster address is probed over TCP first, so a dead
one fails in seconds instead of hanging) → check the cluster can hold one trial → parent run →
``Tuner.fit``.

Tracking store, decided by measurement (``/tmp`` stress test, 4 and 8 processes each creating 6
runs with 150 params and 600 metric points): on an existing sqlite store, concurrent writers saw
no "database is locked" (0 errors out of 48 runs); on a *fresh* store, 21 of 24 runs failed while
the processes raced to create the schema (``table _alembic_tmp_experiments already exists``). So
trials write to the embedded sqlite store directly, and the driver creates the store, experiment
and parent run before any trial starts. No local server is started: it would also put a
per-sweep port into every trial's tracking URI and so into its config hash. A multi-node cluster
cannot share a sqlite file: point trials at an ``editdecay server --host 0.0.0.0`` URL
(``docs/sweeps.md``).

Resume: Tune's ``Tuner.restore`` reschedules the trials its saved state did not record as done;
its state is saved every few seconds, so a trial that finished just before the driver died may be
scheduled again. The trial function therefore first asks MLflow for a FINISHED run with this
sweep's id, this trial id and this config hash, and returns that run's metrics instead of running
(no trial runs twice, no duplicate FINISHED runs). Runs left RUNNING by the dead driver are marked
KILLED before anything is rescheduled. A file lock on the state directory makes sure no other
driver is still running the sweep when we do that.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import ray
from filelock import FileLock, Timeout
from ray import tune

from editdecay.errors import ConfigError, EditDecayError
from editdecay.io import atomic_write_json, atomic_write_text
from editdecay.sweep.grid import Sweep, format_table
from editdecay.tracking import redact_uri

STATE_FILE = "editdecay_sweep.json"
# What the sweep prints per trial: edit success before and after FT, the flip ratio, DS of the base
# model, of FT alone and of KE→FT (FT-only vs base shows whether fine-tuning taught the task), and the
# intrinsic-knowledge control (native facts still known after KE→FT).
SUMMARY_METRICS = ("edit.es", "ft.es", "survival.efr", "base.ds.acc", "ftonly.ds.acc", "ft.ds.acc", "native.retention")
SUMMARY_HEADERS = ("edit.es", "ft.es", "efr", "ds base", "ds ftonly", "ds", "native")


@dataclass
class SweepOutcome:
    sweep_id: str
    parent_run_id: str
    tracking_uri: str
    experiment: str
    rows: list[dict[str, Any]]  # one per trial: id, status, axis values, summary metrics, run id

    @property
    def n_failed(self) -> int:
        """Trials that ran and did not finish (FAILED, KILLED); never-started ones are not failures."""
        return sum(1 for r in self.rows if r["status"] not in ("FINISHED", "NOT RUN"))

    @property
    def n_not_run(self) -> int:
        """Trials that never started (the sweep was stopped first, e.g. by Ctrl-C)."""
        return sum(1 for r in self.rows if r["status"] == "NOT RUN")


# ------------------------------------------------------------------------------------------------
# Driver


def run_sweep(sweep: Sweep, *, storage: str | os.PathLike = "sweep-results", address: str | None = None,
              resume: bool = False, fresh: bool = False, max_concurrent: int | None = None,
              connect_timeout: float = 5.0, autoscaler_config: str | os.PathLike | None = None,
              out=None) -> SweepOutcome:
    from editdecay.tracking.runs import check_reachable, ensure_experiment, tracked_run

    out = out or sys.stdout  # looked up per call: a test harness may swap sys.stdout

    from editdecay.sweep.capacity import load_autoscaler_config

    state_dir = Path(storage).resolve() / sweep.name
    uri, experiment = _tracking_of(sweep)
    autoscaler = load_autoscaler_config(autoscaler_config)  # a bad --autoscaler-config fails before anything starts
    state = _check_state(sweep, state_dir, resume=resume, fresh=fresh)
    _check_trials(sweep)
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state_dir) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise EditDecayError(f"sweep '{sweep.name}' is already running from {state_dir} (lock {lock.lock_file}); "
                             "wait for it, or use another --storage") from None
    try:
        check_reachable(uri)
        started_ray = _connect(address or os.environ.get("RAY_ADDRESS"), connect_timeout)
        try:
            _check_capacity(sweep, autoscaler, out)
            ensure_experiment(uri, experiment)
            if state is not None:  # resume: same parent run, stale trial runs ended first
                _end_stale_runs(uri, experiment, state["sweep_id"], out)
                from editdecay.tracking.runs import reopened_run

                parent_cm = reopened_run(state["parent_run_id"], uri)
                sweep_id = state["sweep_id"]
            else:
                if fresh and state_dir.exists():
                    _discard_state(state_dir, uri, experiment, out)
                sweep_id = f"{sweep.name}-{uuid.uuid4().hex[:8]}"
                parent_cm = tracked_run(experiment, sweep.name, params=_sweep_params(sweep),
                                        tags={"editdecay.sweep": sweep_id, "editdecay.kind": "sweep",
                                              "editdecay.grid_hash": sweep.grid_hash()}, tracking_uri=uri)
            with parent_cm as parent:
                state = {"sweep_id": sweep_id, "parent_run_id": parent.run_id, "tracking_uri": uri,
                         "experiment": experiment, "file": str(sweep.file.resolve()), "grid_hash": sweep.grid_hash(),
                         "trials": sweep.trial_hashes()}
                atomic_write_json(state_dir / STATE_FILE, {**state, "tracking_uri": redact_uri(uri)})
                parent.log_text(sweep.file.read_text(), "sweep.yaml")
                print(f"editdecay sweep '{sweep.name}': {len(sweep.trials)} trials, parent run {parent.run_id} "
                      f"in experiment '{experiment}' ({redact_uri(uri)})", file=out, flush=True)
                try:
                    _fit(sweep, state_dir, state, resume=resume, max_concurrent=max_concurrent)
                finally:
                    # Tune stops (Ctrl-C, SIGTERM) by killing trial actors: their runs cannot end themselves.
                    if started_ray:
                        ray.shutdown()
                        started_ray = False
                    _end_stale_runs(uri, experiment, sweep_id, out, reason="sweep stopped before this trial ended")
                outcome = _outcome(sweep, state)
                parent.log_metrics({"sweep.n_trials": len(sweep.trials), "sweep.n_finished":
                                    len(sweep.trials) - outcome.n_failed - outcome.n_not_run,
                                    "sweep.n_failed": outcome.n_failed, "sweep.n_not_run": outcome.n_not_run})
                parent.log_text(summary_table(outcome, sweep) + "\n\n" + seed_summary_table(outcome), "summary.txt")
                n_finished = len(sweep.trials) - outcome.n_failed - outcome.n_not_run
                parent.set_tags({"editdecay.n_finished": n_finished, "editdecay.n_failed": outcome.n_failed,
                                 "editdecay.n_not_run": outcome.n_not_run})
                if outcome.n_failed or outcome.n_not_run:  # the UI's status column must not call such a sweep FINISHED
                    parent.end_status = "FAILED"
            return outcome
        finally:
            if started_ray:
                ray.shutdown()
    finally:
        lock.release()


def _tracking_of(sweep: Sweep) -> tuple[str, str]:
    uris = {t.config.tracking.uri for t in sweep.trials}
    experiments = {t.config.tracking.experiment for t in sweep.trials}
    if len(uris) != 1 or len(experiments) != 1:
        raise ConfigError(f"sweep {sweep.file}: every trial must log to one tracking.uri and tracking.experiment "
                          f"(got {sorted(map(str, uris))}, {sorted(experiments)}); do not make them axes")
    uri = uris.pop()
    assert uri is not None  # resolved by grid.resolve_local_paths
    return uri, experiments.pop()


def _check_state(sweep: Sweep, state_dir: Path, *, resume: bool, fresh: bool) -> dict[str, Any] | None:
    """On resume, the stored state (refusing a changed sweep file); else None (refusing to clobber)."""
    import json

    file = state_dir / STATE_FILE
    if resume and fresh:
        raise ConfigError("--resume and --fresh contradict each other; give one")
    if not resume:
        if file.is_file() and not fresh:
            raise EditDecayError(f"sweep '{sweep.name}' already has state in {state_dir}; finish it with --resume, "
                                 "start over with --fresh, or use another --storage")
        return None
    if not file.is_file():
        raise EditDecayError(f"nothing to resume: no sweep state at {file}; run without --resume first "
                             "(same --storage)")
    try:
        state = json.loads(file.read_text())
        state["grid_hash"], state["sweep_id"], state["parent_run_id"], state["trials"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError):
        raise EditDecayError(f"sweep state {file} is damaged (not the JSON the driver writes); start over with "
                             "--fresh, or restore the file") from None
    if state["grid_hash"] != sweep.grid_hash():
        raise ConfigError(f"sweep file changed since the run being resumed: {_grid_diff(state['trials'], sweep.trial_hashes())}"
                          "; restore the file, or start over with --fresh")
    return state


def _check_trials(sweep: Sweep) -> None:
    """Every trial's files and layer ranges, before Ray starts: a bad value fails the sweep once,
    in one line naming the trial, instead of failing (and being retried) in every trial."""
    from editdecay.preflight import check_trial_inputs

    memo: dict = {}  # each dataset read, the hub probed, once for all trials
    for t in sweep.trials:
        try:
            check_trial_inputs(t.config, gpus=sweep.spec.resources.gpu, memo=memo)
        except EditDecayError as err:
            raise type(err)(f"sweep {sweep.file}, trial {t.trial_id}: {err}") from None


def _grid_diff(old: dict[str, str], new: dict[str, str]) -> str:
    changed = [t for t in new if t in old and old[t] != new[t]]
    added = [t for t in new if t not in old]
    removed = [t for t in old if t not in new]
    parts = [f"{label} {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}"
             for label, ids in (("changed", changed), ("added", added), ("removed", removed)) if ids]
    return "; ".join(parts) or "resources changed"


def _sweep_params(sweep: Sweep) -> dict[str, Any]:
    return {"sweep.name": sweep.name, "sweep.file": str(sweep.file), "sweep.n_trials": len(sweep.trials),
            "sweep.axes": ",".join(sweep.axis_names), "sweep.max_concurrent_trials": sweep.spec.max_concurrent_trials,
            "sweep.max_failures": sweep.spec.max_failures,
            **{f"sweep.resources.{k}": v for k, v in sweep.spec.resources.model_dump().items()}}


def _discard_state(state_dir: Path, uri: str, experiment: str, out) -> None:
    """``--fresh``: end the previous sweep's runs left RUNNING (its driver is gone: we hold the
    lock), then remove its state directory — only if it is one (it holds our state file)."""
    import json

    file = state_dir / STATE_FILE
    if not file.is_file():
        if any(state_dir.iterdir()):
            raise EditDecayError(f"--fresh: {state_dir} is not a sweep state directory (no {STATE_FILE}); "
                                 "move it away or use another --storage")
        return
    try:
        old_id = json.loads(file.read_text())["sweep_id"]
    except (OSError, ValueError, KeyError, TypeError):
        old_id = None
    if old_id:
        _end_stale_runs(uri, experiment, old_id, out, include_parent=True,
                        reason="sweep restarted with --fresh; this run's driver was gone")
    shutil.rmtree(state_dir)


def _end_stale_runs(uri: str, experiment: str, sweep_id: str, out, include_parent: bool = False,
                    reason: str = "sweep driver died; re-run on --resume") -> None:
    from editdecay.tracking.runs import mark_runs_terminated, search_runs_by_tags

    stale = search_runs_by_tags(uri, experiment, {"editdecay.sweep": sweep_id}, statuses=("RUNNING", "SCHEDULED"))
    stale = [r for r in stale if include_parent or r.tags.get("editdecay.kind") != "sweep"]
    if stale:
        mark_runs_terminated(uri, [r.run_id for r in stale], "KILLED", reason=reason)
        print(f"  marked {len(stale)} run(s) left RUNNING as KILLED ({reason}): "
              f"{', '.join(r.tags.get('editdecay.trial_id', r.run_id) for r in stale)}", file=out, flush=True)


# ------------------------------------------------------------------------------------------------
# Ray


def _connect(address: str | None, timeout: float) -> bool:
    """Connect to (or start) Ray; True if we did so (and so must shut it down)."""
    if ray.is_initialized():
        return False
    if address and address != "auto":
        _probe(address, timeout)
        _check_auth(address)
    # Trials' own output goes to their logs: the terminal shows our progress lines and Tune's table.
    previous = signal.getsignal(signal.SIGTERM)
    ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    if callable(previous) and threading.current_thread() is threading.main_thread():
        # ray.init replaces it with sys.exit(15), which aborted the driver (134) mid-fit; ours ends the
        # trials' runs KILLED and exits 143 with the "terminated" line, as every other command.
        signal.signal(signal.SIGTERM, previous)
    return True


def _probe(address: str, timeout: float) -> None:
    """A dead address fails in ``timeout`` seconds here; ``ray.init`` would retry for minutes."""
    parsed = urlparse(address if "://" in address else f"ray-gcs://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    if not host:
        raise EditDecayError(f"Ray address '{address}' is not host:port or ray://host:port; fix --address / RAY_ADDRESS")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as err:
        raise EditDecayError(f"Ray cluster at {address} does not answer ({err.strerror or err}) within {timeout:.0f} s; "
                             "check --address / RAY_ADDRESS, or leave both unset to run locally") from None


def _check_auth(address: str) -> None:
    """A cluster with token authentication refuses a node or driver whose token differs (Ray 2.60 turns
    it on whenever ``~/.ray/auth_token`` exists); ``ray.init`` then retries for about a minute and ends
    in a traceback. One GCS request with the token ``ray.init`` would use tells within a second."""
    if "://" in address and not address.startswith("ray-gcs://"):
        return  # ray:// (Ray Client) goes through its own server
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)  # what ray.init does first
    try:
        GcsClient(address=address.removeprefix("ray-gcs://"))
    except AuthenticationError:
        raise EditDecayError(f"Ray cluster at {address} refused this machine's auth token ({_token_source()}); "
                             "fix: copy the head's ~/.ray/auth_token here (or export RAY_AUTH_TOKEN=<the head's token>), "
                             "or start every node and this driver with RAY_AUTH_MODE=disabled on a private network") from None
    except Exception:  # anything else: ray.init reports it as it always has
        return


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "from RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"from RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file():
        return f"from {token}"
    return f"none: no {token}, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"


def _check_capacity(sweep: Sweep, autoscaler: dict[str, Any] | None, out) -> None:
    """Refuse a trial that can never fit; warn and let trials queue when the autoscaler can add what is missing."""
    from editdecay.sweep.capacity import decide, reported_autoscaler_config

    res = sweep.spec.resources
    need = {"CPU": res.total_cpus(), "GPU": res.total_gpus()}
    have = ray.cluster_resources()
    if all(v <= have.get(k, 0.0) + 1e-9 for k, v in need.items()):
        return
    autoscaler = autoscaler or reported_autoscaler_config()
    verdict = decide(need, have, autoscaler, what=f"sweep {sweep.file}", single_node=res.workers == 0)
    if verdict.action == "refuse":
        raise ConfigError(verdict.message)
    print(f"  warning: {verdict.message}", file=out, flush=True)


def trial_resources(sweep: Sweep) -> dict[str, float] | tune.PlacementGroupFactory:
    """Per-trial reservation: plain CPUs/GPUs, or a placement group when the trial has workers."""
    res = sweep.spec.resources
    if res.workers == 0:
        return {"cpu": res.cpu, "gpu": res.gpu}
    bundles = [{"CPU": res.cpu, "GPU": res.gpu}] + [{"CPU": res.worker_cpu, "GPU": res.worker_gpu}] * res.workers
    return tune.PlacementGroupFactory([{k: v for k, v in b.items() if v} or {"CPU": 0.01} for b in bundles],
                                      strategy=res.strategy)


def _fit(sweep: Sweep, state_dir: Path, state: dict[str, Any], *, resume: bool, max_concurrent: int | None) -> None:
    payloads = {t.trial_id: {"config": t.config.model_dump(mode="json"), "axes": t.axes, "config_hash": t.config_hash}
                for t in sweep.trials}
    context = {"sweep_id": state["sweep_id"], "parent_run_id": state["parent_run_id"], "tracking_uri": state["tracking_uri"],
               "experiment": state["experiment"], "threads": sweep.spec.resources.threads()}
    trainable = tune.with_resources(tune.with_parameters(trial_function, trials=payloads, context=context),
                                    trial_resources(sweep))
    param_space = {"trial_id": tune.grid_search([t.trial_id for t in sweep.trials])}
    # Ctrl-C takes the SIGTERM path (KeyboardInterrupt through fit: runs KILLED, exit 130) instead of
    # Tune's own handler, which returned from fit as if the sweep had ended and exited 1.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if resume and tune.Tuner.can_restore(str(state_dir)):
        tuner = tune.Tuner.restore(str(state_dir), trainable, resume_unfinished=True, restart_errored=True,
                                   param_space=param_space)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            # reuse_actors: a new trial reuses a finished trial's worker process, saving the torch /
            # transformers imports (benchmarks/sweep.py, 6 tiny trials: 38.8 s -> 24.4 s). Safe because
            # trials keep no module-global state (docs/architecture.md, Conventions).
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or sweep.spec.max_concurrent_trials,
                                        reuse_actors=True,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(name=sweep.name, storage_path=str(state_dir.parent), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
                                      callbacks=[ProgressLines(len(sweep.trials))]))
    tuner.fit()


def _trial_name(trial) -> str:
    return str(trial.config["trial_id"])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressLines(tune.Callback):
    """One line per trial event (start, retry, finish, failure): readable in a log file and over ssh.
    Finish and failure lines end with the sweep's progress: trials ended, time elapsed, and the time
    left estimated from the rate so far (ended trials per wall-clock second, so concurrency counts);
    while nothing ends, a status line every ``every`` seconds says what is running.
    Writes to whatever ``sys.stdout`` is at the time: Tune pickles its callbacks with the run config."""

    def __init__(self, total: int, every: float = 300.0) -> None:
        self.total, self.every = total, every
        self.setup()

    def setup(self, **info):
        """Start of a run, also of a resumed one (Tune restores this callback pickled, clock and all)."""
        self.done, self.ended_before, self.start = 0, None, time.monotonic()
        self.last = self.start

    def _line(self, text: str) -> None:
        self.last = time.monotonic()
        print(f"  [{self.last - self.start:6.0f} s] {text}", file=sys.stdout, flush=True)

    def _seen(self, trials) -> None:
        if self.ended_before is None:  # a resumed sweep: trials its saved state already had ended
            self.ended_before = sum(t.status in ("TERMINATED", "ERROR") for t in trials)

    def progress(self) -> str:
        """``ended/total, elapsed, ~left``: the rate is this driver's (ended here / its elapsed time)."""
        elapsed = time.monotonic() - self.start
        ended = (self.ended_before or 0) + self.done
        text = f"{ended}/{self.total} ended, {_duration(elapsed)} elapsed"
        if self.done and ended < self.total:
            text += f", ~{_duration(elapsed / self.done * (self.total - ended))} left"
        return text

    def on_step_end(self, iteration, trials, **info):
        self._seen(trials)
        if time.monotonic() - self.last >= self.every:
            running = [t.config["trial_id"] for t in trials if t.status == "RUNNING"]
            self._line(f"running {', '.join(running[:6]) or '-'}{' ...' if len(running) > 6 else ''}  ({self.progress()})")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._seen(trials)
        self._line(f"start   {trial.config['trial_id']}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._line(f"retry   {trial.config['trial_id']} (attempt failed; retrying)")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._seen(trials)
        self.done += 1
        r = trial.last_result or {}
        efr = r.get("survival.efr", float("nan"))
        efr_text = "-" if math.isnan(efr) else f"{efr:.3f}"  # no fine-tuning, or no edit succeeded
        self._line(f"done    {trial.config['trial_id']}  efr {efr_text}  run {r.get('run_id', '?')}  ({self.progress()})")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._seen(trials)
        self.done += 1
        self._line(f"FAILED  {trial.config['trial_id']}  ({self.progress()})")


# ------------------------------------------------------------------------------------------------
# The trial function (runs in a Ray worker; everything it needs comes in as arguments)


def trial_function(config: dict[str, Any], trials: dict[str, Any], context: dict[str, Any]) -> None:
    import torch

    from editdecay.config import TrialConfig
    from editdecay.pipeline.trial import run_trial
    from editdecay.tracking.runs import search_runs_by_tags

    torch.set_num_threads(int(context["threads"]))  # Ray reserves this many CPUs; torch would take all
    trial_id = config["trial_id"]
    payload = trials[trial_id]
    ident = {"editdecay.sweep": context["sweep_id"], "editdecay.trial_id": trial_id,
             "editdecay.config_hash": payload["config_hash"]}
    done = search_runs_by_tags(context["tracking_uri"], context["experiment"], ident, statuses=("FINISHED",))
    if done:  # finished before the previous driver died; Tune's saved state did not know yet
        tune.report({**done[0].metrics, "run_id": done[0].run_id, "reused_run": 1, "edit_builds": 0})
        return
    cfg = TrialConfig.model_validate(payload["config"])
    tags = {**ident, "editdecay.node_id": ray.get_runtime_context().get_node_id(),
            "mlflow.source.name": f"editdecay sweep {context['sweep_id']}",  # not Ray's default_worker.py
            **{f"editdecay.axis.{k}": v for k, v in payload["axes"].items()}}
    result = run_trial(cfg, parent_run_id=context["parent_run_id"], run_name=trial_id, tags=tags)
    metrics = {k: v for k, v in result.metrics.items() if not math.isnan(v)}
    tune.report({**metrics, "run_id": result.run_id, "reused_run": 0, "edit_builds": result.cache_misses.count("edit"),
                 "cache_misses": ",".join(result.cache_misses), "trial.seconds": result.seconds})


# ------------------------------------------------------------------------------------------------
# Summary


def _outcome(sweep: Sweep, state: dict[str, Any]) -> SweepOutcome:
    """Per trial: its FINISHED run if any, else its latest run — read back from MLflow, not Tune."""
    from editdecay.tracking.runs import search_runs_by_tags

    runs = search_runs_by_tags(state["tracking_uri"], state["experiment"], {"editdecay.sweep": state["sweep_id"]})
    rows = []
    for t in sweep.trials:
        mine = [r for r in runs if r.tags.get("editdecay.trial_id") == t.trial_id]
        finished = [r for r in mine if r.status == "FINISHED"]
        run = finished[0] if finished else (mine[-1] if mine else None)
        rows.append({"trial_id": t.trial_id, "status": run.status if run else "NOT RUN",
                     "run_id": run.run_id if run else "", "attempts": len(mine),
                     "edit.method": t.config.edit.method, "finetune.method": t.config.finetune.method,
                     "finetune.layers": str(t.config.finetune.layers), "seed": t.config.seed,
                     **{m: (run.metrics.get(m, math.nan) if run else math.nan) for m in SUMMARY_METRICS}})
    return SweepOutcome(state["sweep_id"], state["parent_run_id"], state["tracking_uri"], state["experiment"], rows)


def summary_table(outcome: SweepOutcome, sweep: Sweep) -> str:
    headers = ["trial", "edit", "ft", "layers", *SUMMARY_HEADERS, "status"]
    fmt = lambda v: "-" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"  # noqa: E731
    rows = [[r["trial_id"], r["edit.method"], r["finetune.method"], r["finetune.layers"],
             *(fmt(r[m]) for m in SUMMARY_METRICS), r["status"]] for r in outcome.rows]
    return format_table(headers, rows)


def seed_summary_table(outcome: SweepOutcome) -> str:
    """The per-trial table aggregated over seeds: mean ± sample sd across seeds of finished trials.
    Per-edit CIs and paired tests are the report's job (``editdecay report``)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in outcome.rows:
        groups.setdefault((r["edit.method"], r["finetune.method"], r["finetune.layers"]), []).append(r)

    def cell(rows: list[dict[str, Any]], metric: str) -> str:
        values = [r[metric] for r in rows if r["status"] == "FINISHED" and not math.isnan(r.get(metric, math.nan))]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return f"{mean:.3f} ± {sd:.3f}"

    headers = ["edit", "ft", "layers", "seeds", *(f"{m} (mean ± sd)" for m in SUMMARY_HEADERS)]
    rows = [[*key, f"{sum(r['status'] == 'FINISHED' for r in rows)}/{len(rows)}",
             *(cell(rows, m) for m in SUMMARY_METRICS)] for key, rows in groups.items()]
    return format_table(headers, rows)


def where_to_look(outcome: SweepOutcome) -> str:
    uri = redact_uri(outcome.tracking_uri)
    ui = f"open {uri}" if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"
    return (f"MLflow: {ui}  → experiment '{outcome.experiment}', parent run {outcome.parent_run_id} "
            f"(trials nested under it; filter tags.`editdecay.sweep` = '{outcome.sweep_id}')")


def write_summary(outcome: SweepOutcome, sweep: Sweep, state_dir: Path) -> Path:
    return atomic_write_text(state_dir / "summary.txt", summary_table(outcome, sweep) + "\n\n" + seed_summary_table(outcome) + "\n")
