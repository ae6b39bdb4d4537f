"""The bad-input and fault corpus: every case ends with the right exit code, one line naming the
problem, no MLflow run left RUNNING and nothing that looks like a finished output.

Most cases call ``editdecay.cli.main`` in-process (fast); SIGTERM needs a real process. Trials run
on the toy model by path with a private ``cache_dir`` (so the stage cache starts empty and the toy
model is not rebuilt) and log to a private sqlite store.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port

TINY = str(REPO / "configs" / "tiny.yaml")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("editdecay")]


def run_cli(capsys, *argv: str) -> tuple[int, list[str], str]:
    from editdecay.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, error_lines(captured.err), captured.out


def assert_one_line(code: int, lines: list[str], expected_code: int, message: str) -> None:
    assert code == expected_code and len(lines) == 1 and message in lines[0], (code, lines)


def runs_of(uri: str) -> list:
    """Every run in the store (none if the store was never created)."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def assert_nothing_running(uri: str) -> None:
    assert not [r.info.run_id for r in runs_of(uri) if r.info.status == "RUNNING"]


@pytest.fixture()
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def trial_args(toy_model_dir, cache: Path, uri: str, *overrides: str) -> list[str]:
    return ["trial", TINY, f"model.name={toy_model_dir}", f"cache_dir={cache}", f"tracking.uri={uri}",
            "edit.num_edits=6", "eval.ds_max_examples=20", "tracking.curve_edits=4", "tracking.log_weights=none",
            *overrides]


# ------------------------------------------------------------------------------------------------
# Data loss: --out never replaces a directory editdecay did not write


def test_out_refuses_current_home_root_and_foreign_dirs(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work))
    for out in (".", str(work), "/", str(tmp_path)):
        code, lines, _ = run_cli(capsys, "world", TINY, "--out", out)
        assert_one_line(code, lines, 2, "refusing to replace")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for command in (["world", TINY], ["edit", TINY], ["evaluate", TINY], ["finetune", TINY]):
        code, lines, _ = run_cli(capsys, *command, "--out", str(foreign))
        assert_one_line(code, lines, 2, "was not written by editdecay")
    assert (work / "thesis.tex").read_text() == "years of work" and (foreign / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "work"]  # no temporary leftovers


def test_out_replaces_its_own_output(tmp_path, capsys):
    out = tmp_path / "world"
    out.mkdir()  # an empty directory is fine too
    for _ in range(2):
        code, lines, _ = run_cli(capsys, "world", TINY, "world.n_downstream=40", "--out", str(out))
        assert code == 0 and not lines
    assert (out / ".editdecay-output").is_file() and (out / "counterfact.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, capsys):
    """ENOSPC from a real write path: a 64 KiB tmpfs (needs root and mount; skipped otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        code, lines, _ = run_cli(capsys, "world", TINY, "--out", str(disk / "world"))
        assert_one_line(code, lines, 1, "disk full")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------------------------------
# Bad values: one line before anything heavy runs or any run exists


@pytest.mark.parametrize("overrides, message", [
    (["finetune.lr=inf"], "config key 'finetune.lr': input should be a finite number"),
    (["finetune.lr=nan"], "config key 'finetune.lr': input should be a finite number"),
    (["edit.layers=[]"], "config key 'edit.layers'"),
    (["finetune.layers=[]"], "finetune.layers is an empty list"),
    (["tracking.uri=htp://127.0.0.1:5000"], "config key 'tracking.uri': unknown scheme 'htp'"),
    (["model.name=/no/such/model"], "model.name: directory '/no/such/model' does not exist"),
    (["edit.layers=[9]"], "edit.layers: layer 9 is out of range; this model has layers 0..3"),
    (["finetune.layers=[0,7]"], "finetune.layers: layer 7 is out of range"),
    (["data.source=zsre", "data.path=/no/such.json"], "data.path: '/no/such.json' does not exist"),
    (["finetune.data.source=file", "finetune.data.path=/no/ft.jsonl"], "finetune.data.path: '/no/ft.jsonl' does not exist"),
    (["eval.ds_source=file", "eval.ds_path=/no/ds"], "eval.ds_path: '/no/ds' does not exist"),
    (["edit.stats.corpus=/no/corpus.txt"], "edit.stats.corpus: '/no/corpus.txt' does not exist"),
    (["finetune.method=full", "finetune.deepspeed=/no/ds.json"], "finetune.deepspeed: '/no/ds.json' is not a file"),
    (["eval.native_facts=10", "eval.native_min_facts=30"], "eval.native_min_facts=30 is more than eval.native_facts=10"),
    (["eval.native_pool=[records,wordnet]"], "config key 'eval.native_pool.1': got 'wordnet'; allowed: 'records' or"),
    (["eval.native_pool=[records,records]"], "eval.native_pool lists a source twice"),
    (["eval.native_pool=[]"], "eval.native_pool is empty and eval.native_path is not set"),
    (["eval.native_path=/no/facts.jsonl"], "eval.native_path: '/no/facts.jsonl' does not exist"),
])
def test_trial_bad_values_fail_fast_without_a_run(overrides, message, store, tmp_path, capsys):
    start = time.perf_counter()
    code, lines, _ = run_cli(capsys, "trial", TINY, f"cache_dir={tmp_path / 'cache'}", f"tracking.uri={store}", *overrides)
    assert_one_line(code, lines, 2, message)
    assert runs_of(store) == [] and not (tmp_path / "cache").exists()
    assert time.perf_counter() - start < 20  # not after loading a model (was 80-94 s); generous for a busy CI


def test_cache_dir_under_a_file(tmp_path, store, capsys):
    (tmp_path / "file").write_text("x")
    code, lines, _ = run_cli(capsys, "trial", TINY, f"cache_dir={tmp_path / 'file' / 'cache'}", f"tracking.uri={store}")
    assert_one_line(code, lines, 2, "is under a file")
    assert runs_of(store) == []


def test_unknown_tracking_scheme_in_environment(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://bar")
    code, lines, _ = run_cli(capsys, "trial", TINY, f"cache_dir={tmp_path}")
    assert_one_line(code, lines, 2, "MLFLOW_TRACKING_URI: unknown scheme 'foo'")


@pytest.mark.parametrize("ids, named", [([5, 5], "5"), ([5, "5"], "5 and '5'")])
def test_duplicate_case_ids_fail_at_load(ids, named, tmp_path, capsys):
    path = tmp_path / "edits.jsonl"
    path.write_text("\n".join(json.dumps({"case_id": i, "subject": f"S{n}", "prompt": "{} lives in", "target_new": "X",
                                          "target_true": None}) for n, i in enumerate(ids)) + "\n")
    code, lines, _ = run_cli(capsys, "data", "data.source=records", f"data.path={path}")
    assert_one_line(code, lines, 2, f"case_id repeated: {named}")


def test_credentials_never_printed_or_logged(tmp_path, capsys):
    from editdecay.config import load_config, to_yaml
    from editdecay.pipeline.trial import trial_params

    uri = "postgresql://bob:s3cret@db.example:5432/runs"
    code, _, out = run_cli(capsys, "config", TINY, f"tracking.uri={uri}")
    assert code == 0 and "s3cret" not in out and "bob:***@db.example" in out
    cfg = load_config(TINY, [f"tracking.uri={uri}"])
    assert trial_params(cfg)["tracking.uri"] == "postgresql://bob:***@db.example:5432/runs"
    assert "s3cret" not in to_yaml(cfg, redact=True) and cfg.tracking.uri == uri  # the run itself still connects
    code, lines, _ = run_cli(capsys, "trial", TINY, f"cache_dir={tmp_path}", "tracking.uri=http://bob:s3cret@127.0.0.1:9/")
    assert_one_line(code, lines, 2, "tracking server http://bob:***@127.0.0.1:9/ is unreachable")


def test_sweep_checks_every_trial_before_ray_starts(tmp_path, store, capsys):
    import ray

    sweep = tmp_path / "bad.yaml"
    sweep.write_text(f"name: bad\nbase: {TINY}\noverrides:\n  cache_dir: {tmp_path / 'cache'}\n"
                     "axes:\n  finetune.layers: [[0], [0, 9]]\n")
    code, lines, _ = run_cli(capsys, "sweep", str(sweep), "--storage", str(tmp_path / "state"), "--tracking-uri", store)
    assert_one_line(code, lines, 2, "finetune.layers: layer 9 is out of range")
    assert "trial" in lines[0] and not ray.is_initialized() and runs_of(store) == []


# ------------------------------------------------------------------------------------------------
# Stage keys and the stage cache


def test_changing_a_data_file_changes_the_stage_keys(tmp_path):
    from editdecay.config import load_config
    from editdecay.pipeline.cache import StageCache, input_file_digests

    ft_data, corpus, ds = tmp_path / "ft.jsonl", tmp_path / "corpus.txt", tmp_path / "ds.json"
    edits = tmp_path / "edits.json"
    ft_data.write_text('{"instruction": "a", "output": "b"}\n')
    corpus.write_text("one text\n")
    ds.write_text("[]")
    edits.write_text('[{"case_id": 1}]')
    cfg = load_config(TINY, ["data.source=counterfact", f"data.path={edits}", "finetune.data.source=file", f"finetune.data.path={ft_data}", f"edit.stats.corpus={corpus}",
                             "eval.ds_source=file", f"eval.ds_path={ds}", "finetune.method=full", "finetune.deepspeed=zero2"])
    cache = StageCache(tmp_path / "cache")
    before = input_file_digests(cfg)
    assert all(before.values()), before
    for path in (ft_data, corpus, ds, edits):
        key_before = cache.key("finetune", before)
        path.write_text(path.read_text().replace("b", "c").replace("one", "two").replace("[]", "[ ]").replace("1", "2"))
        after = input_file_digests(cfg)
        assert after != before and cache.key("finetune", after) != key_before
        before = after


@pytest.mark.slow
def test_a_trial_rebuilds_finetuning_when_its_data_file_changes_in_place(toy_model_dir, tmp_path, store, capsys):
    """The stale-results case end to end: same path, new content -> new fine-tuning stage, new numbers' source."""
    from editdecay.cli import main

    data = tmp_path / "ft.jsonl"
    cache = tmp_path / "cache"
    args = trial_args(toy_model_dir, cache, store, "edit.method=none", "finetune.max_steps=2", "eval.ds_max_examples=8",
                      "finetune.data.source=file", f"finetune.data.path={data}", "finetune.data.format=prompt_completion")
    keys = []
    for completion in (" Zorbia .", " Quarnia ."):
        data.write_text("\n".join(json.dumps({"prompt": f"Fact {i} is in", "completion": completion}) for i in range(8)))
        assert main(args) == 0
        assert "built: " in capsys.readouterr().out
        (run,) = [r for r in runs_of(store) if r.info.run_id not in {k[0] for k in keys}]
        keys.append((run.info.run_id, json.loads(run.data.tags["editdecay.stage_keys"]), run.data.tags["editdecay.cache_misses"]))
    (_, first, _), (_, second, misses) = keys
    assert first["finetune.ftonly"] != second["finetune.ftonly"] and first["eval.base"] == second["eval.base"]
    assert misses.split(",") == ["finetune", "eval"]  # the base evaluation is reused, the rest is rebuilt
    assert_nothing_running(store)


def _build_counting(calls: list[int]):
    def build(out: Path) -> None:
        calls.append(1)
        (out / "metrics.json").write_text(json.dumps({"es": 1.0}))
        (out / "nested").mkdir()
        (out / "nested" / "weights.bin").write_bytes(b"\x00" * 1000)
    return build


def test_corrupt_cache_entry_is_reported_and_rebuilt(tmp_path, capsys):
    from editdecay.pipeline.cache import StageCache

    calls: list[int] = []
    build = _build_counting(calls)
    first, key = StageCache(tmp_path).get_or_build("eval", {"x": 1}, build)
    record = json.loads((first / "stage.json").read_text())
    assert set(record["files"]) == {"metrics.json", "nested/weights.bin"}
    (first / "nested" / "weights.bin").write_bytes(b"\x00" * 10)  # truncated
    capsys.readouterr()
    cache = StageCache(tmp_path)
    again, _ = cache.get_or_build("eval", {"x": 1}, build)
    assert again == first and calls == [1, 1] and cache.misses == ["eval"]
    assert "is corrupt (nested/weights.bin does not match its recorded checksum); rebuilding" in capsys.readouterr().out
    (first / "metrics.json").unlink()
    StageCache(tmp_path).get_or_build("eval", {"x": 1}, build)
    assert calls == [1, 1, 1]
    cache = StageCache(tmp_path)
    cache.get_or_build("eval", {"x": 1}, build)
    assert calls == [1, 1, 1] and cache.hits == ["eval"]  # whole again


def test_leaked_build_dirs_of_dead_processes_are_collected(tmp_path):
    from editdecay.pipeline.cache import StageCache

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stage_dir = tmp_path / "stages" / "eval"
    stage_dir.mkdir(parents=True)
    leaked = stage_dir / f".abc.{socket.gethostname()}-{dead.pid}.x1y2.tmp"
    live = stage_dir / f".abc.{socket.gethostname()}-{os.getpid()}.x1y2.tmp"
    for d in (leaked, live):
        (d / "model").mkdir(parents=True)
    StageCache(tmp_path).get_or_build("eval", {"x": 1}, _build_counting([]))
    assert not leaked.exists() and live.exists()


def test_corrupt_layer_statistics_are_recomputed_and_force_rebuilds_them(tmp_path, toy_model, tiny_cfg, capsys):
    from editdecay.config import load_config
    from editdecay.editing.stats import second_moments

    model, tokenizer = toy_model
    cfg = load_config(TINY, [f"cache_dir={tmp_path}", "edit.stats.n_samples=64"])
    first = second_moments(model, tokenizer, cfg, [1], progress=False)
    (path,) = tmp_path.rglob("layer1.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    again = second_moments(model, tokenizer, cfg, [1], progress=False)
    assert "are unreadable; recomputing them" in capsys.readouterr().out
    assert (again[1] - first[1]).abs().max() < 1e-5
    stamp = path.stat().st_mtime_ns
    time.sleep(0.01)
    second_moments(model, tokenizer, cfg, [1], progress=False, force=True)
    assert path.stat().st_mtime_ns != stamp


# ------------------------------------------------------------------------------------------------
# Fine-tuning: divergence fails, checkpoints resume only by their own config


@pytest.mark.slow
def test_diverged_finetuning_fails_the_run_and_caches_nothing(toy_model_dir, tmp_path, store, capsys):
    from mlflow.tracking import MlflowClient

    cache = tmp_path / "cache"
    code, lines, _ = run_cli(capsys, *trial_args(toy_model_dir, cache, store, "edit.method=none", "finetune.lr=1e4",
                                                  "finetune.max_steps=8", "finetune.logging_steps=1"))
    assert_one_line(code, lines, 2, "fine-tuning diverged")
    (run,) = runs_of(store)
    assert run.info.status == "FAILED"
    artifacts = [a.path for a in MlflowClient(tracking_uri=store).list_artifacts(run.info.run_id, "error")]
    assert artifacts == ["error/traceback.txt"]
    assert not list((cache / "stages").glob("finetune/*/stage.json"))
    assert not [p for p in (cache / "stages").rglob("*.tmp")]


def test_checkpoint_of_another_config_is_not_resumed(tiny_cfg, toy_model_dir, tmp_path, caplog):
    from editdecay.config import load_config
    from editdecay.finetune.run import finetune, partial_dir

    def cfg(lr: str):
        return load_config(TINY, [f"cache_dir={tiny_cfg.cache_dir}", "finetune.max_steps=4", "finetune.save_strategy=steps",
                                  "finetune.save_steps=2", "finetune.curve_every=1", f"finetune.lr={lr}"])

    out = tmp_path / "ft"
    calls: list[int] = []

    def crash_at_step_3(model):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("killed")
        return {"es": 1.0}

    with pytest.raises(RuntimeError, match="killed"):
        finetune(cfg("0.01"), toy_model_dir, out, evaluate_fn=crash_at_step_3)
    assert (partial_dir(out) / "checkpoints" / "checkpoint-2").is_dir()
    result = finetune(cfg("0.002"), toy_model_dir, out, evaluate_fn=lambda m: {"es": 1.0})
    assert "discarding the checkpoints" in caplog.text
    assert result.curve[0]["step"] < 2 and result.metrics["recipe"]["lr"] == 0.002  # trained from the start
    assert (out / ".editdecay-output").is_file() and not partial_dir(out).exists()


# ------------------------------------------------------------------------------------------------
# Signals and sweeps: no RUNNING orphans


@pytest.mark.slow
def test_sigterm_ends_a_running_trial_killed(toy_model_dir, tmp_path, store):
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "editdecay", *trial_args(
        toy_model_dir, cache, store, "edit.method=none", "finetune.max_steps=5000", "finetune.logging_steps=1")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        for line in proc.stderr:  # the fine-tuning stage has started: the run exists and is RUNNING
            if "finetune lora on layers" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 143, rest[-2000:]
    assert "terminated (SIGTERM)" in rest
    (run,) = runs_of(store)
    assert run.info.status == "KILLED" and f"MLflow run {run.info.run_id} ended KILLED" in rest  # named, as it exists
    assert not list((cache / "stages").glob("finetune/*/stage.json"))  # nothing complete-looking
    assert not [p for p in (cache / "stages").rglob("*.tmp")]  # the build directory went with the run


def test_fresh_ends_the_dead_sweeps_running_runs(tmp_path, store, capsys):
    from mlflow.tracking import MlflowClient

    from editdecay.sweep.runner import STATE_FILE, _discard_state

    client = MlflowClient(tracking_uri=store)
    exp = client.create_experiment("sweeps")
    parent = client.create_run(exp, tags={"editdecay.sweep": "s-old", "editdecay.kind": "sweep"})
    trial = client.create_run(exp, tags={"editdecay.sweep": "s-old", "editdecay.trial_id": "t1"})
    other = client.create_run(exp, tags={"editdecay.sweep": "s-other"})
    state_dir = tmp_path / "state" / "s"
    state_dir.mkdir(parents=True)
    (state_dir / STATE_FILE).write_text(json.dumps({"sweep_id": "s-old"}))
    _discard_state(state_dir, store, "sweeps", sys.stdout)
    status = {r: client.get_run(r.info.run_id).info.status for r in (parent, trial, other)}
    assert [status[parent], status[trial], status[other]] == ["KILLED", "KILLED", "RUNNING"]
    assert not state_dir.exists()
    foreign = tmp_path / "state" / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    from editdecay.errors import EditDecayError

    with pytest.raises(EditDecayError, match="not a sweep state directory"):
        _discard_state(foreign, store, "sweeps", sys.stdout)
    assert (foreign / "keep.txt").exists()


def test_not_run_trials_are_not_failures():
    from editdecay.sweep.runner import SweepOutcome

    outcome = SweepOutcome("s", "p", "u", "e", [{"status": "FINISHED"}, {"status": "KILLED"}, {"status": "NOT RUN"}])
    assert (outcome.n_failed, outcome.n_not_run) == (1, 1)


# ------------------------------------------------------------------------------------------------
# The tracking server for a cluster


def _own_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: never contacted, only routes
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_server_on_all_interfaces_answers_requests_addressed_to_this_machine(tmp_path):
    import urllib.request

    from editdecay.tracking.server import start_server, stop_server

    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    port = free_port()
    proc, _ = start_server(tmp_path / "server", host="0.0.0.0", port=port, log_file=tmp_path / "server.log")
    try:
        url = f"http://{address}:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        with urllib.request.urlopen(url, timeout=30) as resp:  # was: 403 Invalid Host header
            assert resp.status == 200
        req = urllib.request.Request(f"http://{address}:{port}/api/2.0/mlflow/experiments/create", method="POST",
                                     data=json.dumps({"name": "from-ip"}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
    finally:
        stop_server(proc)
