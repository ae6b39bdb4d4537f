"""The documented cluster path on one machine: `ray start --head` + a second node on 127.0.0.1,
`ray job submit` with sweeps/cluster/runtime_env.yaml of a tiny sweep logging into an MLflow
server; every trial FINISHED, then this cluster's processes (and only them) stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO, TEST_CACHE, free_port

pytestmark = pytest.mark.slow  # two Ray nodes and a job: ~2 minutes on 2 busy cores

RAY = str(Path(sys.executable).parent / "ray")
SMALL = {"edit.num_edits": 20, "finetune.max_steps": 12, "finetune.curve_every": 4, "eval.ds_max_examples": 40,
         "tracking.curve_edits": 10, "tracking.log_weights": "none"}  # as test_sweep.py: shares its stage cache


def _ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


def _ray_start(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run([RAY, "start", "--num-cpus", "1", "--disable-usage-stats", *args], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _ours(temp_dir: str) -> list[psutil.Process]:
    """Processes of this cluster: every Ray process names its session directory, under our temp dir.
    Other Ray clusters on the machine (other test runs) are left alone; `ray stop` would kill them."""
    mine: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in (p.info["cmdline"] or [])):
                # with their children: workers rename themselves (ray::IDLE) and lose the path
                for q in [p, *p.children(recursive=True)]:
                    if q.status() != psutil.STATUS_ZOMBIE:
                        mine[q.pid] = q
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return list(mine.values())


def _stop(temp_dir: str) -> list[int]:
    procs = _ours(temp_dir)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    return [p.pid for p in procs]


@pytest.fixture(scope="module")
def submitted_job(tmp_path_factory, mlflow_server, toy_model_dir):
    root = tmp_path_factory.mktemp("job")
    # Short paths: Ray's socket paths must fit 107 chars. One per node: nodes sharing a temp dir share
    # runtime_resources/, and the second node's agent deleted the job's working_dir under the driver.
    temp_dirs = [tempfile.mkdtemp(prefix="edr", dir="/tmp") for _ in range(2)]
    gcs, dash, client, agent_a, agent_b, agent_grpc_a, agent_grpc_b = _ports(7)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Ray 2.60 turns on token auth when ~/.ray/auth_token exists (any earlier local ray.init writes
    # one), and then the second node's `ray start` is refused: this loopback-only cluster opts out.
    env["RAY_AUTH_MODE"] = "disabled"
    sweep = {"name": "cluster-job", "base": str(REPO / "configs" / "tiny.yaml"), "experiment": "cluster-job",
             "overrides": {"cache_dir": str(TEST_CACHE), **SMALL},
             "axes": {"finetune.method": ["lora", "dora"]}, "resources": {"cpu": 1}, "max_concurrent_trials": 2}
    file = root / "cluster-job.yaml"
    file.write_text(yaml.safe_dump(sweep, sort_keys=False))
    started = time.monotonic()
    try:
        _ray_start("--head", f"--port={gcs}", f"--temp-dir={temp_dirs[0]}", "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
                   f"--dashboard-agent-listen-port={agent_a}", f"--dashboard-agent-grpc-port={agent_grpc_a}",
                   "--node-ip-address=127.0.0.1", env=env)
        _ray_start(f"--address=127.0.0.1:{gcs}", f"--temp-dir={temp_dirs[1]}", f"--dashboard-agent-listen-port={agent_b}",
                   f"--dashboard-agent-grpc-port={agent_grpc_b}", "--node-ip-address=127.0.0.1", env=env)
        job = subprocess.run(
            [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--runtime-env",
             "sweeps/cluster/runtime_env.yaml", "--", sys.executable, "-m", "editdecay", "sweep", str(file),
             "--storage", str(root / "st"), "--tracking-uri", mlflow_server],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        nodes = subprocess.run([sys.executable, "-c", "import ray, json; ray.init(address='127.0.0.1:%d', "
                                "log_to_driver=False); print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() "
                                "if n['Alive'])))" % gcs], env=env, capture_output=True, text=True, timeout=120)
    finally:
        stopped = [pid for d in temp_dirs for pid in _stop(d)]
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
    return {"job": job, "nodes": nodes.stdout.strip().splitlines()[-1] if nodes.stdout.strip() else "[]",
            "stopped": stopped, "temp_dirs": temp_dirs, "seconds": time.monotonic() - started}


def test_job_submitted_sweep_finishes_every_trial_on_the_two_nodes(submitted_job, mlflow_server):
    import json

    job = submitted_job["job"]
    assert job.returncode == 0 and "2 of 2 trials finished" in job.stdout, job.stdout[-3000:] + job.stderr[-2000:]
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("cluster-job")
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if "editdecay.trial_id" in r.data.tags]
    assert sorted(r.data.tags["editdecay.trial_id"] for r in trials) == ["dora", "lora"]
    assert all(r.info.status == "FINISHED" for r in runs)  # the trials and the sweep's parent run
    assert {r.data.tags["editdecay.node_id"] for r in trials} <= set(json.loads(submitted_job["nodes"]))
    assert len(json.loads(submitted_job["nodes"])) == 2


def test_cluster_is_stopped_afterwards(submitted_job):
    assert submitted_job["stopped"]  # we found this cluster's processes by its temp dir
    assert all(_ours(d) == [] for d in submitted_job["temp_dirs"])
    assert all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
               for pid in submitted_job["stopped"])
