"""The documented cluster path on one machine, with the parts that must survive `ray up` / `ray down`:

- a real PostgreSQL as MLflow's backend store and a local directory as its artifact root (S3 on AWS),
  served by `editdecay server` as the cluster file's systemd unit runs it (the database URL in
  MLFLOW_BACKEND_STORE_URI); its mlflow killed once and restarted by the server's supervisor, and a
  second copy refused;
- `ray start --head` + a second node on 127.0.0.1 with token authentication, as Ray 2.60 sets up by
  default; a driver holding another token is told so in one line;
- `ray job submit` with the runtime_env of sweeps/cluster/runtime_env.yaml (EDITDECAY_HOME set, no
  --storage, no cache_dir): the job is stopped after its first trial finished, submitted again with
  --resume, and ends with every trial FINISHED, its stages reused from the lasting cache;
- afterwards this cluster's processes (and only them) stopped.
One cluster for all of it: starting Ray and MLflow is most of the cost on 2 cores."""

from __future__ import annotations

import json
import os
import re
import secrets
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

import pgcluster
from conftest import REPO, TEST_CACHE, free_port

pytestmark = pytest.mark.slow  # PostgreSQL, MLflow, two Ray nodes, two jobs: ~4-5 minutes on 2 busy cores

RAY = str(Path(sys.executable).parent / "ray")
SMALL = {"edit.num_edits": 20, "finetune.max_steps": 12, "finetune.curve_every": 4, "eval.ds_max_examples": 40,
         "tracking.curve_edits": 10, "tracking.log_weights": "none"}  # as test_sweep.py
TRIALS = ["lora", "dora"]


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


def _wait_healthy(url: str, timeout: float) -> float:
    from editdecay.tracking.server import wait_healthy

    start = time.monotonic()
    wait_healthy(url, timeout=timeout)
    return time.monotonic() - start


def _mlflow_child(server: subprocess.Popen) -> psutil.Process:
    kids = [c for c in psutil.Process(server.pid).children() if "mlflow" in " ".join(c.cmdline())]
    assert len(kids) == 1, kids
    return kids[0]


def _trial_runs(url: str, status: str | None = None) -> list:
    """Trial runs of the cluster's sweep so far (none while the server is down)."""
    try:
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("cluster-job")
        if exp is None:
            return []
        runs = client.search_runs([exp.experiment_id], f"attributes.status = '{status}'" if status else "")
    except Exception:  # the server is being restarted
        return []
    return [r for r in runs if "editdecay.trial_id" in r.data.tags]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, toy_model_dir):
    why = pgcluster.unavailable()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("job")
    # Short paths: Ray's socket paths must fit 107 chars. One per node: nodes sharing a temp dir share
    # runtime_resources/, and the second node's agent deleted the job's working_dir under the driver.
    temp_dirs = [tempfile.mkdtemp(prefix="edr", dir="/tmp") for _ in range(2)]
    gcs, dash, client, agent_a, agent_b, agent_grpc_a, agent_grpc_b, pg_port, mlflow_port = _ports(9)
    token = root / "auth_token"
    token.write_text(secrets.token_hex(16))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "RAY_AUTH_TOKEN", "EDITDECAY_HOME",
                        "EDITDECAY_CACHE", "MLFLOW_BACKEND_STORE_URI")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # Token authentication, as Ray 2.60 turns on by default; the token in a file of our own, so that a
    # ~/.ray/auth_token on this machine plays no part.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    # EDITDECAY_HOME as the runtime_env sets it; the toy model (and HF models) come from the test cache,
    # built once per machine; stages and statistics start empty here, so reuse is this cluster's own.
    home = root / "home"
    (home / "cache").mkdir(parents=True)
    for sub in ("toy", "models"):
        if (TEST_CACHE / sub).exists():
            (home / "cache" / sub).symlink_to((TEST_CACHE / sub).resolve())
    runtime_env = yaml.safe_load((REPO / "sweeps" / "cluster" / "runtime_env.yaml").read_text())
    assert "EDITDECAY_HOME" in runtime_env["env_vars"]  # the documented file sets it
    runtime_env["env_vars"]["EDITDECAY_HOME"] = str(home)
    (root / "runtime_env.yaml").write_text(yaml.safe_dump(runtime_env))
    sweep = {"name": "cluster-job", "base": str(REPO / "configs" / "tiny.yaml"), "experiment": "cluster-job",
             "overrides": SMALL, "axes": {"finetune.method": TRIALS}, "resources": {"cpu": 1},
             "max_concurrent_trials": 1}  # one at a time: stopping after the first leaves the second unfinished
    file = root / "cluster-job.yaml"
    file.write_text(yaml.safe_dump(sweep, sort_keys=False))
    url = f"http://127.0.0.1:{mlflow_port}"
    out: dict = {"temp_dirs": temp_dirs, "home": home, "url": url, "root": root}
    pg = server = None
    started = time.monotonic()
    try:
        pg = pgcluster.start_postgres(pg_port)
        out["pg_url"] = pg.url
        # As the cluster file's systemd unit runs it: the database URL in the environment, not in argv.
        server_env = {**env, "MLFLOW_BACKEND_STORE_URI": pg.url}
        server = subprocess.Popen([sys.executable, "-m", "editdecay", "server", "--root", str(root / "server"),
                                   "--port", str(mlflow_port), "--artifacts-destination", str(root / "artifacts")],
                                  env=server_env, stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        # Ray starts while mlflow creates its schema in PostgreSQL.
        _ray_start("--head", f"--port={gcs}", f"--temp-dir={temp_dirs[0]}", "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
                   f"--dashboard-agent-listen-port={agent_a}", f"--dashboard-agent-grpc-port={agent_grpc_a}",
                   "--node-ip-address=127.0.0.1", env=env)
        _ray_start(f"--address=127.0.0.1:{gcs}", f"--temp-dir={temp_dirs[1]}", f"--dashboard-agent-listen-port={agent_b}",
                   f"--dashboard-agent-grpc-port={agent_grpc_b}", "--node-ip-address=127.0.0.1", env=env)
        _wait_healthy(url, 240)
        out["argv_has_password"] = any(pg.password in " ".join(p.cmdline())
                                       for p in [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)])

        submit = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--runtime-env", str(root / "runtime_env.yaml")]
        sweep_cmd = ["--", "python", "-m", "editdecay", "sweep", str(file), "--tracking-uri", url]
        first = subprocess.run([*submit, "--no-wait", *sweep_cmd], cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=180)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
        job_id = re.search(r"raysubmit_\w+", first.stdout + first.stderr).group(0)
        # Meanwhile: a driver on this machine holding another token (as with a stale ~/.ray/auth_token).
        wrong = {**{k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}, "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        mismatch = subprocess.Popen([sys.executable, "-m", "editdecay", "sweep", str(file), "--address", f"127.0.0.1:{gcs}",
                                     "--tracking-uri", f"sqlite:///{root / 'other.db'}", "--storage", str(root / "other")],
                                    env=wrong, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The supervisor, under load: once a trial is logging, mlflow is killed; the trials' and the
        # driver's requests wait (MLflow's client retries) until the supervisor has served it again.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not _trial_runs(url):
            time.sleep(2)
        mlflow_proc = _mlflow_child(server)
        os.killpg(mlflow_proc.pid, signal.SIGKILL)
        second = subprocess.Popen([sys.executable, "-m", "editdecay", "server", "--root", str(root / "server"), "--port",
                                   str(free_port())], env=server_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        out["restart_seconds"] = _wait_healthy(url, 300)
        out["restarted"] = _mlflow_child(server).pid != mlflow_proc.pid and server.poll() is None
        while time.monotonic() < deadline and not _trial_runs(url, "FINISHED"):
            time.sleep(2)
        out["finished_before_stop"] = sorted(r.data.tags["editdecay.trial_id"] for r in _trial_runs(url, "FINISHED"))
        subprocess.run([RAY, "job", "stop", "--address", f"http://127.0.0.1:{dash}", job_id], env=env,
                       capture_output=True, text=True, timeout=120)
        status = subprocess.run([RAY, "job", "status", "--address", f"http://127.0.0.1:{dash}", job_id], env=env,
                                capture_output=True, text=True, timeout=60)
        out["first_status"] = status.stdout + status.stderr
        out["first_logs"] = subprocess.run([RAY, "job", "logs", "--address", f"http://127.0.0.1:{dash}", job_id], env=env,
                                           capture_output=True, text=True, timeout=60).stdout
        out["second"] = second.communicate(timeout=120) + (second.returncode,)
        out["mismatch"] = mismatch.communicate(timeout=300) + (mismatch.returncode,)
        out["job"] = subprocess.run([*submit, *sweep_cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True,
                                    timeout=600)
        nodes = subprocess.run([sys.executable, "-c", "import ray, json; ray.init(address='127.0.0.1:%d', "
                                "log_to_driver=False); print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() "
                                "if n['Alive'])))" % gcs], env=env, capture_output=True, text=True, timeout=120)
        out["nodes"] = nodes.stdout.strip().splitlines()[-1] if nodes.stdout.strip() else "[]"
        out["runs"] = MlflowClient(url).search_runs([MlflowClient(url).get_experiment_by_name("cluster-job").experiment_id])
        import psycopg2

        with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:
            cur.execute("select r.status, count(*) from runs r join experiments e on r.experiment_id = e.experiment_id "
                        "where e.name = 'cluster-job' group by r.status")
            out["pg_runs"] = dict(cur.fetchall())
        out["artifact_files"] = [p for p in (root / "artifacts").rglob("*") if p.is_file()]
    finally:
        out["stopped"] = [pid for d in temp_dirs for pid in _stop(d)]
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                out["server_exit"] = server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        if pg is not None:
            pg.stop()
        out["seconds"] = time.monotonic() - started
    return out


def _context(cluster) -> str:
    job = cluster["job"]
    return (f"\nfirst job: {cluster['first_status'][-500:]}\n{cluster['first_logs'][-3000:]}\nresumed job:\n"
            f"{job.stdout[-3000:]}\n{job.stderr[-2000:]}")


def test_stopped_job_resumed_finishes_every_trial_once(cluster):
    job = cluster["job"]
    assert cluster["finished_before_stop"], "no trial finished in the first job" + _context(cluster)
    assert "was stopped" in cluster["first_status"], _context(cluster)
    # the sweep's progress line: ended/total, elapsed, estimated time left
    assert re.search(r"done +\S+ .*\(1/2 ended, \S+ elapsed, ~\S+ left\)", cluster["first_logs"]), _context(cluster)
    assert job.returncode == 0 and f"{len(TRIALS)} of {len(TRIALS)} trials finished" in job.stdout, _context(cluster)
    trials = [r for r in cluster["runs"] if "editdecay.trial_id" in r.data.tags]
    finished = sorted(r.data.tags["editdecay.trial_id"] for r in trials if r.info.status == "FINISHED")
    assert finished == sorted(TRIALS), _context(cluster)  # each trial once: none ran twice to the end
    parents = [r for r in cluster["runs"] if r.data.tags.get("editdecay.kind") == "sweep"]
    assert [p.info.status for p in parents] == ["FINISHED"]  # the same parent run, reopened by --resume
    assert len(json.loads(cluster["nodes"])) == 2
    assert {r.data.tags["editdecay.node_id"] for r in trials} <= set(json.loads(cluster["nodes"]))


def test_resumed_job_reuses_the_lasting_cache_and_state(cluster):
    """No --storage and no cache_dir: both under EDITDECAY_HOME, not in Ray's per-upload working dir."""
    home = cluster["home"]
    state = home / "sweep-results" / "cluster-job" / "editdecay_sweep.json"
    assert state.is_file(), _context(cluster)
    assert (home / "sweep-results" / "cluster-job" / "summary.txt").is_file()
    later = [r for r in cluster["runs"] if r.info.status == "FINISHED" and "editdecay.trial_id" in r.data.tags
             and r.data.tags["editdecay.trial_id"] not in cluster["finished_before_stop"]]
    assert later, _context(cluster)
    for run in later:  # built by the first job: the edit (and the statistics it needs) and the base evaluation
        assert "edit" in run.data.tags["editdecay.cache_hits"].split(","), run.data.tags
    assert (home / "cache" / "stages" / "edit").is_dir()  # the stages the jobs built: in the lasting cache


def test_runs_are_in_postgresql_and_artifacts_in_the_artifact_root(cluster):
    assert cluster["pg_runs"].get("FINISHED", 0) >= len(TRIALS) + 1, cluster["pg_runs"]  # trials + parent
    assert any(p.name == "summary.txt" for p in cluster["artifact_files"])
    assert not cluster["argv_has_password"]  # the URL travels in the environment only


def test_server_is_supervised_and_single(cluster):
    assert cluster["restarted"], (cluster["root"] / "server.log").read_text()[-3000:]
    _, stderr, code = cluster["second"]
    assert code == 2 and "already runs for --root" in stderr, stderr[-2000:]
    assert cluster.get("server_exit") in (None, 143)  # SIGTERM: 128 + 15, as every command (docs/failures.md)


def test_auth_token_mismatch_is_told_in_one_line(cluster):
    _, stderr, code = cluster["mismatch"]
    errors = [line for line in stderr.splitlines() if line.startswith("editdecay: error:")]
    assert code == 2 and len(errors) == 1, stderr[-3000:]
    assert "refused this machine's auth token" in errors[0] and "RAY_AUTH_TOKEN" in errors[0]
    assert "Traceback" not in stderr


def test_cluster_is_stopped_afterwards(cluster):
    assert cluster["stopped"]  # we found this cluster's processes by its temp dir
    assert all(_ours(d) == [] for d in cluster["temp_dirs"])
    assert all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
               for pid in cluster["stopped"])
