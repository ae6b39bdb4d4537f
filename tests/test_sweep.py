"""Sweeps: grid expansion, a real Ray Tune sweep against a real MLflow server, kill + resume,
failures and retries, a two-node local Ray cluster, and one-line errors for bad input.

Real trials on the tiny model keep this file to a few minutes on 2 cores: small edit counts, short
fine-tuning, 1 CPU per trial, 2 trials at a time, and module fixtures that share one sweep across
several assertions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from editdecay import cli
from editdecay.errors import ConfigError
from editdecay.sweep.grid import load_sweep

from conftest import REPO, TEST_CACHE, free_port

# Small but real trials (as in test_trial.py).
SMALL = {"edit.num_edits": 20, "finetune.max_steps": 12, "finetune.curve_every": 4, "eval.ds_max_examples": 40,
         "tracking.curve_edits": 10, "tracking.log_weights": "none"}


def write_sweep(path: Path, name: str, axes: dict, *, cache_dir: Path = TEST_CACHE, **extra) -> Path:
    spec = {"name": name, "base": str(REPO / "configs" / "tiny.yaml"), "experiment": name,
            "overrides": {"cache_dir": str(cache_dir), **SMALL, **extra.pop("overrides", {})},
            "axes": axes, "resources": {"cpu": 1}, "max_concurrent_trials": 2, **extra}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep_cli(*args: str) -> int:
    return cli.main(["sweep", *map(str, args)])


def trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if "editdecay.trial_id" in r.data.tags]


def cold_cache(root: Path) -> Path:
    """A stage cache with nothing built, sharing only the tiny toy model and its second moments."""
    root.mkdir(parents=True, exist_ok=True)
    for shared in ("toy", "stats"):
        (TEST_CACHE / shared).mkdir(parents=True, exist_ok=True)
        (root / shared).symlink_to(TEST_CACHE / shared)
    return root


# ------------------------------------------------------------------------------------------------
# Grid expansion (no Ray, no MLflow)


def test_grid_axes_exclusions_inclusions_and_seeds(tmp_path):
    file = write_sweep(tmp_path / "g.yaml", "grid", {
        "edit.method": ["memit", "alphaedit"],
        "finetune.method": ["none", "lora", "full"],
        "finetune.layers": ["all", "edited"],
        "data": {"cf": {"data.world_format": "counterfact"}, "zsre": {"data.world_format": "zsre"}},
    }, exclude=[{"finetune.method": "none", "finetune.layers": "edited"},
                {"edit.method": "alphaedit", "data": "zsre", "finetune.method": ["lora", "full"]}],
        include=[{"edit.method": "memit", "finetune.method": "dora", "edit.num_edits": 10}], seeds=[0, 1])
    sweep = load_sweep(file)
    # 2*3*2*2 = 24, minus none×edited (2*1*1*2 = 4), minus alphaedit×zsre×{lora,full} (1*1*2... = 4) = 16 per seed,
    # plus one include per seed.
    assert len(sweep.trials) == (24 - 4 - 4 + 1) * 2
    ids = [t.trial_id for t in sweep.trials]
    assert len(set(ids)) == len(ids) and "memit-lora-edited-zsre-s1" in ids
    by_id = {t.trial_id: t for t in sweep.trials}
    t = by_id["memit-lora-edited-zsre-s1"]
    assert (t.config.seed, t.config.data.world_format, t.config.finetune.layers) == (1, "zsre", "edited")
    assert not any(t.axes.get("finetune.method") == "none" and t.axes.get("finetune.layers") == "edited"
                   for t in sweep.trials)
    inc = [t for t in sweep.trials if t.config.finetune.method == "dora"]
    assert sorted(t.config.seed for t in inc) == [0, 1] and all(t.config.edit.num_edits == 10 for t in inc)
    # Trials run elsewhere (Ray workers): paths and the tracking URI are absolute, the hash is run_trial's.
    assert Path(t.config.cache_dir).is_absolute() and t.config.tracking.uri.startswith("sqlite:////")
    from editdecay.config import stable_hash

    assert t.config_hash == stable_hash(t.config)
    # Same file, same grid hash; one changed value changes exactly the trials it touches.
    assert load_sweep(file).grid_hash() == sweep.grid_hash()


def test_dry_run_prints_the_table_and_touches_nothing(tmp_path):
    code = ("import sys; from editdecay import cli; rc = cli.main(['sweep', sys.argv[1], '--dry-run']); "
            "assert 'ray' not in sys.modules and 'mlflow' not in sys.modules, 'imported'; sys.exit(rc)")
    counts = {"smoke": 70, "smoke_tiny": 8, "paper": 3600, "selective_layers": 60}
    for name, n in counts.items():
        out = subprocess.run([sys.executable, "-c", code, str(REPO / "sweeps" / f"{name}.yaml")], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().endswith(f"{n} trials") and f"{n} trials, grid hash" in out.stdout
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns, no Tune state
    smoke = subprocess.run([sys.executable, "-m", "editdecay", "sweep", str(REPO / "sweeps" / "smoke.yaml"),
                                  "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "alphaedit-none-all" in smoke.stdout and "memit-none-edited" not in smoke.stdout


# ------------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing started


def one_line_error(capsys, rc: int) -> str:
    """The one error line (Ray may print its own notices on stderr first, e.g. about token auth)."""
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("editdecay: error:")]
    assert rc == 2 and len(ours) == 1 and err.rstrip().endswith(ours[0]) and "Traceback" not in err, err
    return ours[0]


def test_unknown_axis_key_and_empty_grid_fail_in_one_line(tmp_path, capsys):
    bad = write_sweep(tmp_path / "bad.yaml", "bad", {"finetune.methd": ["lora"]})
    err = one_line_error(capsys, sweep_cli(bad, "--dry-run"))
    assert "finetune.methd" in err and "allowed here" in err
    empty = write_sweep(tmp_path / "empty.yaml", "empty", {"finetune.method": ["lora", "dora"]},
                        exclude=[{"finetune.method": ["lora", "dora"]}])
    err = one_line_error(capsys, sweep_cli(empty, "--storage", tmp_path / "st"))
    assert "grid is empty" in err
    extra = tmp_path / "extra.yaml"
    extra.write_text("name: x\naxes: {seed: [0]}\nresource: {cpu: 1}\n")
    assert "unknown key 'resource'" in one_line_error(capsys, sweep_cli(extra, "--dry-run"))
    assert not (tmp_path / "st").exists()


def test_more_gpus_than_the_cluster_has_and_dead_address(tmp_path, capsys, mlflow_server):
    gpu = write_sweep(tmp_path / "gpu.yaml", "gpu-check", {"finetune.method": ["lora"]}, resources={"cpu": 1, "gpu": 4})
    err = one_line_error(capsys, sweep_cli(gpu, "--storage", tmp_path / "st", "--tracking-uri", mlflow_server))
    assert "4 GPUs per trial" in err and "resources.gpu" in err
    assert MlflowClient(mlflow_server).get_experiment_by_name("gpu-check") is None
    assert not (tmp_path / "st" / "gpu-check").exists()

    start = time.monotonic()
    dead = f"127.0.0.1:{free_port()}"
    err = one_line_error(capsys, sweep_cli(gpu, "--address", dead, "--storage", tmp_path / "st",
                                           "--tracking-uri", mlflow_server, "--connect-timeout", "3"))
    assert dead in err and "does not answer" in err and time.monotonic() - start < 15


# ------------------------------------------------------------------------------------------------
# A real sweep, killed with SIGKILL after its first finished trial, then resumed


def start_sweep(file: Path, storage: Path, uri: str, log: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    return subprocess.Popen([sys.executable, "-m", "editdecay", "sweep", str(file), "--storage", str(storage),
                             "--tracking-uri", uri, *extra], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            cwd=file.parent, env=env, start_new_session=True)  # own process group: killpg


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, mlflow_server, toy_model_dir):
    root = tmp_path_factory.mktemp("resume")
    cache = cold_cache(root / "cache")  # cold stages: trials take long enough to be killed mid-sweep
    file = write_sweep(root / "resume.yaml", "sweep-resume", {"finetune.method": ["lora", "dora"]}, cache_dir=cache,
                       seeds=[0, 1])
    proc = start_sweep(file, root / "st", mlflow_server, root / "first.log")
    deadline = time.monotonic() + 240
    before: list = []
    while time.monotonic() < deadline and proc.poll() is None:
        before = [r for r in trial_runs(mlflow_server, "sweep-resume") if r.info.status == "FINISHED"]
        if before:
            break
        time.sleep(0.5)
    assert before, (root / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(2)
    at_kill = {r.info.run_id: r.info.status for r in trial_runs(mlflow_server, "sweep-resume")}
    resumed = subprocess.run([sys.executable, "-m", "editdecay", "sweep", str(file), "--storage", str(root / "st"),
                              "--tracking-uri", mlflow_server, "--resume"], capture_output=True, text=True,
                             cwd=root, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    state = json.loads((root / "st" / "sweep-resume" / "editdecay_sweep.json").read_text())
    return {"file": file, "root": root, "at_kill": at_kill, "finished_before": {r.info.run_id for r in before},
            "out": resumed.stdout, "state": state, "runs": trial_runs(mlflow_server, "sweep-resume")}


def test_sweep_runs_are_nested_under_the_sweep_run_with_params_and_metrics(killed_and_resumed, mlflow_server):
    state, runs = killed_and_resumed["state"], killed_and_resumed["runs"]
    client = MlflowClient(mlflow_server)
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["editdecay.kind"] == "sweep"
    assert parent.data.metrics["sweep.n_finished"] == 4
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert {r.data.tags["editdecay.trial_id"] for r in finished} == {"lora-s0", "lora-s1", "dora-s0", "dora-s1"}
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == state["parent_run_id"]
        assert r.data.tags["editdecay.sweep"] == state["sweep_id"]
        assert r.data.tags["editdecay.config_hash"] == state["trials"][r.data.tags["editdecay.trial_id"]]
    for r in finished:
        assert r.data.params["finetune.method"] == r.data.tags["editdecay.axis.finetune.method"]
        assert r.data.params["seed"] == r.data.tags["editdecay.axis.seed"]
        assert {"edit.es", "ft.es", "survival.efr", "ft.ds.acc"} <= set(r.data.metrics)
    out = killed_and_resumed["out"]  # the summary table, then where to look
    assert "efr" in out and "4 of 4 trials finished" in out and f"MLflow: open {mlflow_server}" in out


def test_resume_finishes_each_trial_exactly_once_without_rerunning_finished_ones(killed_and_resumed):
    runs, at_kill = killed_and_resumed["runs"], killed_and_resumed["at_kill"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 4 and len({r.data.tags["editdecay.trial_id"] for r in finished}) == 4
    # The runs that had finished before SIGKILL are still the FINISHED ones for their trials.
    assert killed_and_resumed["finished_before"] <= {r.info.run_id for r in finished}
    # Runs the dead driver left RUNNING were ended KILLED, and their trials ran again.
    for run_id, status in at_kill.items():
        final = next(r for r in runs if r.info.run_id == run_id)
        if status == "RUNNING":
            assert final.info.status == "KILLED"
        else:
            assert final.info.status == status
    assert any(s == "RUNNING" for s in at_kill.values()) == ("KILLED" in killed_and_resumed["out"])
    # Stage cache: trials run after the resume reused the edit stage built before the kill.
    after = [r for r in finished if r.info.run_id not in at_kill]
    assert after and all("edit" not in r.data.tags["editdecay.cache_misses"].split(",") for r in after)
    misses = [m for r in finished for m in r.data.tags["editdecay.cache_misses"].split(",") if m == "edit"]
    assert len(misses) <= 1  # E edit settings (here 1) are built E times, not once per FT setting


def test_resume_refuses_a_changed_sweep_file(killed_and_resumed, mlflow_server, capsys):
    file = killed_and_resumed["file"]
    spec = yaml.safe_load(file.read_text())
    spec["axes"]["finetune.method"] = ["lora", "full"]
    spec["overrides"]["finetune.max_steps"] = 11
    changed = file.with_name("changed.yaml")
    changed.write_text(yaml.safe_dump(spec, sort_keys=False))
    n_before = len(trial_runs(mlflow_server, "sweep-resume"))
    err = one_line_error(capsys, sweep_cli(changed, "--storage", killed_and_resumed["root"] / "st",
                                           "--tracking-uri", mlflow_server, "--resume"))
    assert "sweep file changed" in err and "changed lora-s0, lora-s1" in err and "added full-s0" in err
    assert "removed dora-s0" in err
    assert len(trial_runs(mlflow_server, "sweep-resume")) == n_before


# ------------------------------------------------------------------------------------------------
# Two-node local Ray cluster, with one trial that fails and is retried


@pytest.fixture(scope="module")
def two_node_sweep(tmp_path_factory, mlflow_server, toy_model_dir):
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("cluster")
    broken = root / "ft.jsonl"
    broken.write_text(json.dumps({"instruction": "say hi", "input": ""}) + "\n")  # no "output": FT fails
    file = write_sweep(root / "cluster.yaml", "sweep-cluster", {
        "edit.method": ["memit", "alphaedit"],
        "ftdata": {"good": {}, "broken": {"finetune.data.source": "file", "finetune.data.path": str(broken)}}},
        max_failures=1, cache_dir=cold_cache(root / "cache"))  # one cache dir for both nodes, nothing built yet
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        node_ids = {node.node_id for node in cluster.list_all_nodes()}
        rc = sweep_cli(file, "--address", cluster.address, "--storage", root / "st", "--tracking-uri", mlflow_server)
    finally:
        cluster.shutdown()
    return {"rc": rc, "runs": trial_runs(mlflow_server, "sweep-cluster"), "nodes": node_ids}


def test_trials_ran_on_both_nodes(two_node_sweep):
    nodes = {r.data.tags["editdecay.node_id"] for r in two_node_sweep["runs"]}
    assert nodes == two_node_sweep["nodes"] and len(nodes) == 2


def test_trials_on_two_nodes_share_one_stage_cache(two_node_sweep):
    """The sweep's cache_dir is one directory for both Ray nodes (docs/sweeps.md): the FT-only stage
    the two good trials share is built by one and reused by the other, never built twice."""
    good = [r for r in two_node_sweep["runs"] if r.info.status == "FINISHED"]
    keys = [json.loads(r.data.tags["editdecay.stage_keys"]) for r in good]
    assert len(good) == 2 and keys[0]["finetune.ftonly"] == keys[1]["finetune.ftonly"]
    ft_misses = sum(r.data.tags["editdecay.cache_misses"].split(",").count("finetune") for r in good)
    assert ft_misses == 3  # each trial's own KE→FT stage, and the shared FT-only stage once


def test_failing_trial_is_retried_then_failed_with_traceback_and_others_finish(two_node_sweep, mlflow_server):
    runs = two_node_sweep["runs"]
    assert two_node_sweep["rc"] == 1  # the sweep reports its failures in its exit code
    by_trial: dict[str, list] = {}
    for r in runs:
        by_trial.setdefault(r.data.tags["editdecay.trial_id"], []).append(r)
    assert sorted(by_trial) == ["alphaedit-broken", "alphaedit-good", "memit-broken", "memit-good"]
    for good in ("memit-good", "alphaedit-good"):
        assert [r.info.status for r in by_trial[good]] == ["FINISHED"]
    for bad in ("memit-broken", "alphaedit-broken"):
        attempts = by_trial[bad]
        assert [r.info.status for r in attempts] == ["FAILED", "FAILED"]  # 1 + max_failures attempts
        mlflow.set_tracking_uri(mlflow_server)
        text = mlflow.artifacts.load_text(f"runs:/{attempts[0].info.run_id}/error/traceback.txt")
        assert "Traceback" in text and "output" in text


def test_sweep_with_failed_trials_ends_its_parent_run_failed_with_counts(two_node_sweep, mlflow_server):
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("sweep-cluster")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`editdecay.kind` = 'sweep'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["sweep.n_failed"] == 2 and parent.data.metrics["sweep.n_finished"] == 2
    assert parent.data.tags["editdecay.n_failed"] == "2" and parent.data.tags["editdecay.n_finished"] == "2"
