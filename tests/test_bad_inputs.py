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


@pytest.mark.parametrize("margin, message", [
    ("abc", "--margin must be a number between 0 and 1"),
    ("0", "--margin must be a difference in rate between 0 and 1 (exclusive)"),
    ("-0.05", "--margin must be a difference in rate between 0 and 1 (exclusive)"),
    ("1", "--margin must be a difference in rate between 0 and 1 (exclusive)"),
    ("5", "--margin must be a difference in rate between 0 and 1 (exclusive)"),  # a percentage, not a rate
    ("nan", "--margin must be a difference in rate between 0 and 1 (exclusive)"),
    ("inf", "--margin must be a difference in rate between 0 and 1 (exclusive)"),
])
def test_report_bad_margin_fails_before_reading_mlflow(margin, message, store, tmp_path, capsys):
    out = tmp_path / "report"
    code, lines, _ = run_cli(capsys, "report", "--sweep", "smoke-12345678", "--out", str(out), "--tracking-uri", store,
                             "--margin", margin)
    assert_one_line(code, lines, 2, message)
    assert not out.exists() and runs_of(store) == []  # nothing written, the store not even created


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


# ------------------------------------------------------------------------------------------------
# The rest of the corpus (issue 24): every case fails before a run exists, in one line, with the
# right exit status, no traceback, and nothing written outside --out.


def files_under(root: Path) -> dict[str, int]:
    """Every file and directory under ``root`` with its mtime: what a command must leave as it was."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """A working directory of its own, so 'nothing touched' covers the current directory too."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


def run_clean(capsys, *argv: str) -> tuple[int, list[str], str]:
    """``run_cli`` that also asserts there is no traceback and at most one ``editdecay`` line."""
    from editdecay.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out, captured.err[-3000:]
    return code, error_lines(captured.err), captured.out


def _write_gguf(path: Path) -> bytes:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("w", np.ones((32, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _records(path: Path, ids: list) -> Path:
    path.write_text("\n".join(json.dumps({"case_id": i, "subject": f"S{n}", "prompt": "{} lives in", "target_new": "X",
                                          "target_true": None}) for n, i in enumerate(ids)) + "\n")
    return path


def bad_input(case: str, root: Path) -> list[str]:
    """The overrides of one preflight case, with whatever files it needs made under ``root``."""
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    if case == "bert":
        (bad / "bert").mkdir()
        (bad / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"],
                                                              "num_hidden_layers": 2}))
        (bad / "bert" / "vocab.txt").write_text("[PAD]\n")
        return [f"model.name={bad / 'bert'}"]
    if case == "malformed_config":
        (bad / "m").mkdir()
        (bad / "m" / "config.json").write_text('{"model_type": "gpt2", ')
        return [f"model.name={bad / 'm'}"]
    if case in ("random_gguf", "empty_gguf", "truncated_gguf"):
        path = bad / f"{case}.gguf"
        if case == "random_gguf":
            path.write_bytes(os.urandom(4096))
        elif case == "empty_gguf":
            path.write_bytes(b"")
        else:
            whole = _write_gguf(path)
            path.write_bytes(whole[: len(whole) - 100])
        return [f"model.name={path}"]
    if case == "duplicate_ids":
        return ["data.source=records", f"data.path={_records(bad / 'dup.jsonl', [1, 2, 1])}"]
    if case == "num_edits_too_large":
        return ["data.source=records", f"data.path={_records(bad / 'three.jsonl', [1, 2, 3])}", "edit.num_edits=4"]
    if case == "cuda_without_gpu":
        return ["model.device=cuda"]
    if case == "fp16_on_cpu":
        return ["model.device=cpu", "finetune.precision=fp16"]
    if case == "micro_batch":
        return ["finetune.batch_size=10", "finetune.micro_batch_size=4"]
    if case == "offline_hub_id":
        return ["model.name=nobody-editdecay/no-such-model"]
    raise KeyError(case)


PREFLIGHT_CASES = {
    "bert": "is a 'bert' model (BertForMaskedLM), not a causal LM",
    "malformed_config": "config.json is not valid JSON",
    "random_gguf": "is not a GGUF file",
    "empty_gguf": "too short for a GGUF file",
    "truncated_gguf": "is a damaged GGUF file",
    "duplicate_ids": "case_id repeated: 1",
    "num_edits_too_large": "edit.num_edits=4 but the edit dataset (records) has only 3 records",
    "cuda_without_gpu": "model.device: 'cuda' was asked for",
    "fp16_on_cpu": "finetune.precision=fp16 needs a CUDA GPU but model.device is cpu",
    "micro_batch": "finetune.batch_size=10 is not a multiple of micro_batch_size",
    "offline_hub_id": "not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
}


def _skip_if_gpu(case: str) -> None:
    if case == "cuda_without_gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")


@pytest.mark.parametrize("case", list(PREFLIGHT_CASES))
def test_trial_preflight_stops_before_a_run(case, sandbox, store, capsys, monkeypatch):
    """Each of these used to fail 11-28 s in, after creating a FAILED run (a traceback for the GGUFs)."""
    _skip_if_gpu(case)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = bad_input(case, sandbox)
    before = files_under(sandbox)
    start = time.perf_counter()
    code, lines, _ = run_clean(capsys, "trial", TINY, f"cache_dir={sandbox / 'cache'}", f"tracking.uri={store}", *overrides)
    assert_one_line(code, lines, 2, PREFLIGHT_CASES[case])
    assert time.perf_counter() - start < 20
    assert runs_of(store) == [] and files_under(sandbox) == before  # no run, no store, no cache, nothing else


STAGE_COMMANDS = {"edit": ["edit", TINY, "--out"], "stats": ["stats", TINY], "finetune": ["finetune", TINY, "--out"],
                  "evaluate": ["evaluate", TINY, "--out"], "trace": ["trace", TINY, "--out"], "prepare": ["prepare", TINY]}


@pytest.mark.parametrize("command, case", [(c, k) for c in STAGE_COMMANDS for k in ("bert", "truncated_gguf")]
                         + [("edit", "duplicate_ids"), ("edit", "num_edits_too_large"), ("finetune", "micro_batch"),
                            ("finetune", "fp16_on_cpu"), ("trace", "cuda_without_gpu"), ("prepare", "random_gguf")])
def test_stage_commands_run_the_preflight(command, case, sandbox, capsys):
    """Overrides after the options (``edit CONFIG --out D key=value``) are accepted, and checked."""
    _skip_if_gpu(case)
    argv = list(STAGE_COMMANDS[command])
    out = sandbox / "out"
    if argv[-1] == "--out":
        argv.append(str(out))
    overrides = bad_input(case, sandbox)
    before = files_under(sandbox)
    code, lines, _ = run_clean(capsys, *argv, f"cache_dir={sandbox / 'cache'}", *overrides)
    assert_one_line(code, lines, 2, PREFLIGHT_CASES[case])
    assert files_under(sandbox) == before and not out.exists()


@pytest.mark.parametrize("case", ["duplicate_ids", "num_edits_too_large", "cuda_without_gpu"])
def test_sweep_preflight_covers_every_grid_point_before_ray(case, sandbox, store, capsys):
    """A bad value in one grid point fails the sweep in one line before Ray starts (was: Ray, retries, rc 1 after 129 s).
    model.device=cuda is judged by the sweep's per-trial GPUs (resources.gpu: 0 here), not the driver's."""
    import ray

    overrides = bad_input(case, sandbox)
    sweep = sandbox / "bad.yaml"
    sweep.write_text(f"name: bad\nbase: {TINY}\noverrides:\n  cache_dir: {sandbox / 'cache'}\n"
                     + "".join(f"  {o.split('=', 1)[0]}: {o.split('=', 1)[1]}\n" for o in overrides)
                     + "axes:\n  edit.method: [memit, alphaedit]\nresources:\n  cpu: 1\n  gpu: 0\n")
    before = files_under(sandbox)
    code, lines, _ = run_clean(capsys, "sweep", str(sweep), "--storage", str(sandbox / "state"), "--tracking-uri", store)
    message = "the sweep reserves no GPU per trial" if case == "cuda_without_gpu" else PREFLIGHT_CASES[case]
    assert_one_line(code, lines, 2, message)
    assert "trial memit" in lines[0] and not ray.is_initialized() and runs_of(store) == []
    assert files_under(sandbox) == before


@pytest.mark.parametrize("argv, message", [
    (["trace", TINY, "--records", "0"], "argument --records: 0 is out of range"),
    (["trace", TINY, "--records", "-1"], "argument --records: -1 is out of range"),
    (["trace", TINY, "--noise-samples", "0"], "argument --noise-samples: 0 is out of range"),
    (["trace", TINY, "--n-layers", "0"], "argument --n-layers: 0 is out of range"),
    (["trace", TINY, "--n-layers", "-2"], "argument --n-layers: -2 is out of range"),
    (["trace", TINY, "--window", "0"], "argument --window: 0 is out of range"),
    (["trace", TINY, "--window", "-3"], "argument --window: -3 is out of range"),
    (["trace", TINY, "--n-layers", "9"], "--n-layers 9: the model has 4 layers"),
    (["trace", TINY, "--window", "x"], "argument --window: expected an integer, got 'x'"),
    (["server", "--port", "99999"], "argument --port: 99999 is out of range; allowed: 1..65535"),
    (["server", "--port", "0"], "argument --port: 0 is out of range"),
    (["server", "--workers", "0"], "argument --workers: 0 is out of range"),
    (["sweep", "sweeps/smoke_tiny.yaml", "--max-concurrent", "0"], "argument --max-concurrent: 0 is out of range"),
    (["sweep", "sweeps/smoke_tiny.yaml", "--connect-timeout", "nan"], "argument --connect-timeout: nan is out of range"),
    (["sweep", "sweeps/smoke_tiny.yaml", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["data", TINY, "--show", "-1"], "argument --show: -1 is out of range"),
    (["report", "--group-by"], "argument --group-by: expected one argument"),
    (["config", TINY, "--out", "x"], "unrecognized arguments: --out"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
])
def test_arguments_are_range_checked_by_the_parser(argv, message, sandbox, capsys):
    out = sandbox / "out"
    if argv[0] == "trace":
        argv = [*argv, "--out", str(out), f"cache_dir={sandbox / 'cache'}"]
    before = files_under(sandbox)
    code, lines, _ = run_clean(capsys, *argv)
    assert_one_line(code, lines, 2, message)
    assert files_under(sandbox) == before


@pytest.mark.parametrize("case, message", [
    ("missing", "argument --deltas: {p} does not exist"),
    ("directory", "argument --deltas: {p} is not a file"),
    ("empty", "argument --deltas: {p} is empty"),
    ("truncated", "argument --deltas: {p} is truncated or not a safetensors file"),
    ("garbage", "argument --deltas: {p} is truncated or not a safetensors file"),
])
def test_finetune_deltas_file_is_validated_before_anything_loads(case, message, sandbox, capsys):
    import torch
    from safetensors.torch import save_file

    p = sandbox / "deltas.safetensors"
    if case == "directory":
        p.mkdir()
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        save_file({"layer1.u": torch.ones(64, 2), "layer1.v": torch.ones(64, 2)}, str(p))
        p.write_bytes(p.read_bytes()[:-16])
    elif case == "garbage":
        p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    before = files_under(sandbox)
    code, lines, _ = run_clean(capsys, "finetune", TINY, "--out", str(sandbox / "ft"), "--deltas", str(p))
    assert_one_line(code, lines, 2, message.format(p=p))
    assert files_under(sandbox) == before


def test_overrides_are_accepted_anywhere_on_the_command_line(sandbox, capsys):
    """Was: 'unrecognized arguments' for an override after an option."""
    out = sandbox / "w"
    code, lines, _ = run_clean(capsys, "world", TINY, "--out", str(out), "world.n_downstream=40", "world.seed=3")
    assert code == 0 and not lines and (out / "counterfact.json").is_file()
    code, lines, stdout = run_clean(capsys, "config", "--overrides", "edit.num_edits=7", TINY, "seed=5")
    assert code == 0 and "\nseed: 5\n" in stdout and "num_edits: 7" in stdout
    code, lines, _ = run_clean(capsys, "config", TINY, "--overrides", "seed=1", "not-an-override")
    assert_one_line(code, lines, 2, "argument 'not-an-override': expected key=value after the config file")


def test_out_under_a_file_is_one_line(sandbox, capsys):
    (sandbox / "afile").write_text("x")
    before = files_under(sandbox)
    code, lines, _ = run_clean(capsys, "world", TINY, "--out", str(sandbox / "afile" / "sub"))
    assert_one_line(code, lines, 2, "afile is a file, not a directory")
    assert files_under(sandbox) == before


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask_and_are_still_atomic(umask, file_mode, dir_mode, tmp_path, capsys):
    from editdecay.io import atomic_write_json

    import torch

    from editdecay.editing.deltas import EditDeltas, LayerDelta
    from editdecay.io import atomic_directory

    old = os.umask(umask)
    try:
        code, _, _ = run_clean(capsys, "world", TINY, "world.n_downstream=40", "--out", str(tmp_path / "w"))
        atomic_write_json(tmp_path / "j" / "x.json", {"a": 1})
        with atomic_directory(tmp_path / "w" / "stage") as tmp:  # safetensors itself writes 0600
            EditDeltas({1: LayerDelta(u=torch.ones(4, 1), v=torch.ones(4, 1))}).save(tmp / "deltas.safetensors")
            (tmp / "nested").mkdir()
            (tmp / "nested" / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert code == 0
    assert (tmp_path / "w" / "stage" / "nested").stat().st_mode & 0o777 == dir_mode
    out = tmp_path / "w"
    assert out.stat().st_mode & 0o777 == dir_mode
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {file_mode}, modes
    assert (tmp_path / "j" / "x.json").stat().st_mode & 0o777 == file_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "w"] and not list((tmp_path / "j").glob(".*"))


def test_stage_record_without_a_file_table_is_rebuilt(tmp_path, capsys):
    from editdecay.pipeline.cache import StageCache

    calls: list[int] = []
    first, _ = StageCache(tmp_path).get_or_build("eval", {"x": 1}, _build_counting(calls))
    record = json.loads((first / "stage.json").read_text())
    for files in ([], None, "x", {"metrics.json": 5}):
        (first / "stage.json").write_text(json.dumps({**record, "files": files}))
        capsys.readouterr()
        again, _ = StageCache(tmp_path).get_or_build("eval", {"x": 1}, _build_counting(calls))
        assert again == first and "is corrupt (stage.json has no file table); rebuilding it" in capsys.readouterr().out
    assert len(calls) == 5 and json.loads((first / "stage.json").read_text())["files"] == record["files"]


def test_discarded_checkpoints_name_the_real_reason(tmp_path, caplog):
    from editdecay.finetune.run import RESUME_KEY_FILE, _prepare_work
    from editdecay.io import mark_output_dir

    work = tmp_path / ".ft.partial"
    for key, resume, reason in (("other", True, "written by another config"), ("k", False, "finetune.resume=false")):
        (work / "checkpoints" / "checkpoint-2").mkdir(parents=True, exist_ok=True)
        mark_output_dir(work)
        (work / RESUME_KEY_FILE).write_text(json.dumps({"key": "k"}))
        caplog.clear()
        _prepare_work(work, key, resume)
        assert reason in caplog.text and not (work / "checkpoints").exists()


def test_credentials_in_the_tracking_uri_are_used_to_connect(mlflow_server, sandbox, capsys):
    """http://user:pass@host: the health check used to look up 'user:pass@host' as a host name."""
    from editdecay.tracking.runs import check_reachable

    with_credentials = mlflow_server.replace("http://", "http://bob:s3cret@")
    check_reachable(with_credentials)  # answers: the real URI (credentials as Basic auth) is what connects
    code, lines, out = run_clean(capsys, "report", "--experiment", "no-such-experiment", "--tracking-uri", with_credentials,
                                 "--out", str(sandbox / "r"))
    assert_one_line(code, lines, 2, "experiment 'no-such-experiment' not found at http://bob:***@127.0.0.1")
    assert "s3cret" not in lines[0] + out


def test_server_on_a_busy_port_fails_in_one_line(sandbox, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, lines, _ = run_clean(capsys, "server", "--root", str(sandbox / "srv"), "--port", str(port))
    assert_one_line(code, lines, 2, f"--port {port}: cannot listen on 127.0.0.1:{port}")


def test_server_exits_143_on_sigterm(tmp_path):
    """Was: exit 0. The signal reaches `editdecay server` while it waits on MLflow (no need to wait for
    MLflow to answer: the exit status is decided there); SIGINT takes the same path and gives 130."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "editdecay", "server", "--root", str(tmp_path / "srv"), "--port",
                             str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout.readline().startswith("editdecay server: http://127.0.0.1:")
        time.sleep(2.0)  # the MLflow child is started and the handlers are in place right after that line
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("sig, expected, line", [(signal.SIGTERM, 143, "editdecay: terminated (SIGTERM)")])
def test_sweep_driver_exits_143_on_sigterm_with_its_trials_killed(sig, expected, line, toy_model_dir, tmp_path, store):
    """Was: exit 134 (Ray's own SIGTERM handler aborted the driver) and no 'terminated' line."""
    sweep = tmp_path / "long.yaml"
    sweep.write_text(f"name: long\nbase: {TINY}\noverrides:\n  cache_dir: {tmp_path / 'cache'}\n  model.name: {toy_model_dir}\n"
                     "  edit.method: none\n  finetune.max_steps: 5000\n  eval.ds_max_examples: 8\n"
                     "axes:\n  seed: [0]\nresources:\n  cpu: 1\n  gpu: 0\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = tmp_path / "driver.log"
    proc = subprocess.Popen([sys.executable, "-m", "editdecay", "sweep", str(sweep), "--storage", str(tmp_path / "st"),
                             "--tracking-uri", store], stdout=open(log, "w"), stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "start   " not in log.read_text():
            time.sleep(0.5)  # the store, experiment and parent run exist (reading earlier races its creation)
        while time.monotonic() < deadline and len([r for r in runs_of(store) if r.info.status == "RUNNING"]) < 2:
            time.sleep(1.0)  # the parent and the trial's run exist: the trial is running
        time.sleep(2.0)
        proc.send_signal(sig)
        err = proc.communicate(timeout=180)[1]
    finally:
        proc.kill()
    assert proc.returncode == expected and line in err and "Traceback" not in err, err[-3000:]
    assert sorted(r.info.status for r in runs_of(store)) == ["KILLED", "KILLED"]


def _log_trial_run(client, exp_id: str, status: str, **params) -> str:
    """A trial run as pipeline/trial.py leaves it: the flattened config as params, per_edit.csv."""
    base = {"name": "t", "seed": "0", "model.name": "toy", "model.toy.arch": "gpt2", "edit.method": "memit",
            "data.source": "world", "data.world_format": "counterfact", "edit.num_edits": "4", "finetune.method": "lora",
            "finetune.layers": "all", "finetune.lr": "0.001", "cache_dir": "/somewhere", "tracking.uri": "sqlite:///x"}
    run = client.create_run(exp_id, run_name="t")
    for key, value in {**base, **params}.items():
        client.log_param(run.info.run_id, key, value)
    if status == "FINISHED":
        rows = ["case_id,es_base,ps_base,ns_base,es_edit,ps_edit,ns_edit,es_ftonly,ps_ftonly,ns_ftonly,es_ft,ps_ft,ns_ft,flipped"]
        rows += [f"{i},0.0,0.0,1.0,1.0,1.0,1.0,0.0,0.0,1.0,{i % 2}.0,0.5,1.0,{i % 2 == 0}" for i in range(4)]
        client.log_text(run.info.run_id, "\n".join(rows) + "\n", "results/per_edit.csv")
        client.log_metric(run.info.run_id, "survival.efr", 0.5)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_report_never_pools_different_configs_and_lists_unused_runs(sandbox, store, capsys):
    """Plain trial runs of different configs were pooled as one setting (the same edits counted n times),
    and FAILED / KILLED runs were neither used nor listed."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    exp = client.create_experiment("pool")
    low = _log_trial_run(client, exp, "FINISHED")
    low_again = _log_trial_run(client, exp, "FINISHED", name="t2", cache_dir="/elsewhere")  # same config: a duplicate
    high = _log_trial_run(client, exp, "FINISHED", **{"finetune.lr": "0.003"})
    failed = _log_trial_run(client, exp, "FAILED")
    killed = _log_trial_run(client, exp, "KILLED", seed="1")
    out = sandbox / "report"
    args = ["report", "--experiment", "pool", "--tracking-uri", store, "--out", str(out), "--no-log"]
    code, lines, _ = run_clean(capsys, *args)
    assert_one_line(code, lines, 2, "different configs: finetune.lr (0.001 vs 0.003)")
    assert "--group-by finetune.lr" in lines[0] and not out.exists()
    code, lines, _ = run_clean(capsys, *args, "--group-by", "no.such.key")
    assert_one_line(code, lines, 2, "--group-by no.such.key: not a config key")
    code, lines, stdout = run_clean(capsys, *args, "--group-by", "finetune.lr")
    assert code == 0 and not lines, lines
    assert "2 of 5 runs used" in stdout
    unused = {line.split()[2]: line for line in stdout.splitlines() if line.startswith("  unused")}
    assert set(unused) == {low, failed, killed}, stdout
    assert f"duplicate of run {low_again}" in unused[low] and "FAILED" in unused[failed] and "KILLED" in unused[killed]
    tables = (out / "tables.md").read_text()
    assert "[finetune.lr=0.001]" in tables and "[finetune.lr=0.003]" in tables  # separate row groups, never pooled

    from editdecay.report.data import GROUP_PARAM, select_runs
    from editdecay.tracking.read import read_experiment

    runs = read_experiment("pool", tracking_uri=store)
    select_runs(runs, ["config"])
    used = {t.run_id: t.params[GROUP_PARAM] for t in runs.trials if not t.problem}
    assert set(used) == {low_again, high} and len(set(used.values())) == 2 and all(g.startswith("config ") for g in used.values())


def test_damaged_metadata_files_are_one_line(sandbox, capsys):
    """Files the tool reads back: a finetune output's adapter_config.json, the toy model's recall.json,
    a converted model's provenance.json."""
    from editdecay.errors import DataError
    from editdecay.model_sources import read_provenance
    from editdecay.world.toy import read_report

    ft = sandbox / "ft"
    (ft / "adapter").mkdir(parents=True)
    (ft / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": ')
    before = files_under(sandbox)
    code, lines, _ = run_clean(capsys, "evaluate", TINY, "--model", str(ft), f"cache_dir={sandbox / 'cache'}")
    assert_one_line(code, lines, 2, "adapter_config.json is damaged or names no base model")
    assert files_under(sandbox) == before
    (sandbox / "toy").mkdir()
    (sandbox / "toy" / "recall.json").write_text("[1, 2")
    (sandbox / "toy" / "provenance.json").write_text("{")
    with pytest.raises(DataError, match="recall.json is missing or damaged; rebuild the toy model"):
        read_report(sandbox / "toy")
    assert read_provenance(sandbox / "toy") is None


@pytest.mark.parametrize("file", sorted(p.name for p in (REPO / "sweeps").glob("*.yaml")))
def test_every_shipped_sweep_reports_without_group_by(file):
    """The pooling rule refuses only real differences: within one report setting, the trials of every
    sweep file differ in their seed alone (params as pipeline/trial.py logs them)."""
    from editdecay.pipeline.trial import trial_params
    from editdecay.report.data import select_runs
    from editdecay.sweep.grid import load_sweep
    from editdecay.tracking.read import SweepRuns, TrialRun

    sweep = load_sweep(REPO / "sweeps" / file, resolve_paths=False)
    trials = [TrialRun(t.trial_id, t.trial_id, "FINISHED", "1",
                       {k: v if isinstance(v, str) else json.dumps(v) for k, v in trial_params(t.config).items()},
                       {"editdecay.trial_id": t.trial_id}, {}) for t in sweep.trials]
    select_runs(SweepRuns(file, "sqlite://", "e", "1", None, None, trials))
    assert not [t.problem for t in trials if t.problem]


# Issue 25: the server's store options, and paths under a Ray job (one line, exit 2, before mlflow starts)


@pytest.mark.parametrize("argv, needle", [
    (["--backend-store-uri", "htp://db.example:5432/mlflow"], "--backend-store-uri htp://db.example:5432/mlflow: expected a database URL"),
    (["--backend-store-uri", "postgresql://mlflow:secret@db.example:5432/mlflow", "--artifacts-destination", "s4://bucket/x"],
     "--artifacts-destination s4://bucket/x: unknown scheme 's4'"),
])
def test_server_store_options_are_one_line(tmp_path, capsys, argv, needle):
    code, lines, _ = run_cli(capsys, "server", "--root", str(tmp_path / "srv"), "--port", str(free_port()), *argv)
    assert_one_line(code, lines, 2, needle)
    assert "secret" not in lines[0]
    assert not (tmp_path / "srv").exists()  # refused before the root or any process was made


def test_server_backend_from_the_environment_is_checked_too(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "mongodb://u:pw@h/db")
    from editdecay.cli import build_parser  # the default is read when the parser is built

    args = build_parser().parse_args(["server", "--root", str(tmp_path / "srv")])
    assert args.backend_store_uri == "mongodb://u:pw@h/db"
    code, lines, _ = run_cli(capsys, "server", "--root", str(tmp_path / "srv"), "--port", str(free_port()))
    assert_one_line(code, lines, 2, "expected a database URL")
    assert "pw@" not in lines[0]


def test_second_server_on_one_root_is_refused_in_one_line(tmp_path, capsys):
    from filelock import FileLock

    root = tmp_path / "srv"
    root.mkdir()
    (root / "server.json").write_text(json.dumps({"pid": 4242, "url": "http://127.0.0.1:5000"}))
    with FileLock(str(root / "server.lock")):  # held as a running `editdecay server` holds it
        code, lines, _ = run_cli(capsys, "server", "--root", str(root), "--port", str(free_port()))
    assert_one_line(code, lines, 2, "already runs for --root")
    assert "pid 4242" in lines[0]
