"""What a trial prints: our own lines, no third-party warnings (DeepSpeed guessing its accelerator,
MLflow inferring a schema or resolving a path two ways, transformers/PEFT deprecations), and rates a
reader can use."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

# A warnings.warn line ("file.py:12: UserWarning: ..."), DeepSpeed's "[WARNING]", transformers'
# "[transformers] ..." and any WARNING log record of a logger that is not ours.
THIRD_PARTY_WARNING = re.compile(r"\w+Warning: |\[WARNING\]|\[transformers\]|^\S+ WARNING (?!editdecay)")


def third_party_warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if THIRD_PARTY_WARNING.search(line)]


def test_the_pattern_catches_the_warnings_trials_used_to_print():
    seen = ("[2026-12-07 21:07:31,141] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.",
            ".venv/lib/python3.11/site-packages/mlflow/types/utils.py:440: UserWarning: Hint: Inferred schema contains "
            "integer column(s).",
            "modeling_utils.py:3312: FutureWarning: `is_gradient_checkpointing` is deprecated",
            "[transformers] `loss_type=None` was set in the config but it is unrecognized.",
            "21:19:27 WARNING accelerate.utils: something")
    assert third_party_warnings("\n".join(seen)) == list(seen)
    ours = "21:19:27 WARNING editdecay.metrics.survival: no edit succeeded after editing (6 edits)"
    assert third_party_warnings(ours) == []


@pytest.mark.slow
def test_a_tiny_trial_prints_no_third_party_warning(toy_model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DS_ACCELERATOR", None)  # the trial must name it itself
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "editdecay", "trial", str(REPO / "configs" / "tiny.yaml"), f"model.name={toy_model_dir}",
         f"cache_dir={tmp_path / 'cache'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "edit.num_edits=4",
         "finetune.max_steps=2", "eval.ds_max_examples=4", "eval.native_facts=20", "tracking.curve_edits=2",
         "tracking.log_weights=none", "edit.stats.n_samples=100"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=840)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert third_party_warnings(proc.stderr) == [] and third_party_warnings(proc.stdout) == []
    # The control and the survival line are there, with what they were computed from.
    assert re.search(r"native   retention \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] after KE->FT .*; 20 facts the base model "
                     r"knows, found in \d+ tried", proc.stdout), proc.stdout
    assert "decrease = (ES edit - ES ft) / ES edit" in proc.stdout


@pytest.mark.parametrize("count, seconds, text", [
    (20, 2.0, "10 edits/s"),
    (1, 1.0, "1 edits/s"),
    (20, 870.0, "1.38 edits/min"),  # 0.023 edits/s, once printed as "(0.0 edits/s)"
    (1, 95.0, "95 s/edit"),
    (3, 300.0, "100 s/edit"),
])
def test_rates_are_printed_in_a_unit_that_shows_them(count, seconds, text):
    from editdecay.cli import rate

    assert rate(count, seconds, "edit") == text


def test_sigterm_of_the_edit_command_names_no_run_it_does_not_have(toy_model_dir, tmp_path):
    """``editdecay edit`` tracks no MLflow run: its SIGTERM message must not claim runs were ended."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "editdecay", "edit", str(REPO / "configs" / "tiny.yaml"),
                             f"model.name={toy_model_dir}", f"cache_dir={tmp_path / 'cache'}", "edit.num_edits=4",
                             "--out", str(tmp_path / "edit")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not (tmp_path / "cache").exists():
            time.sleep(0.2)  # the command is past its imports and working
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("editdecay:")]
    assert lines == ["editdecay: terminated (SIGTERM)"], err[-2000:]
    assert not (tmp_path / "edit").exists()
