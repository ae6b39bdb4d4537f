"""Defaults for lasting state (editdecay.paths): under a Ray job's unpacked working_dir the cache,
the sweep storage and the embedded store go to EDITDECAY_HOME (else ~/editdecay-state), not into
Ray's per-upload copy; elsewhere nothing changes; explicit settings win."""

from __future__ import annotations

from pathlib import Path

import pytest

from editdecay.config import load_config
from editdecay.paths import default_storage
from editdecay.tracking import resolve_tracking_uri


@pytest.fixture()
def clean_env(monkeypatch):
    for var in ("EDITDECAY_HOME", "EDITDECAY_CACHE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_outside_ray_jobs_the_working_directory_as_before(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    assert load_config(None, []).cache_dir == ".cache/editdecay"
    assert default_storage() == "sweep-results"
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_in_a_ray_job_working_dir_state_goes_home(clean_env, tmp_path):
    job_dir = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    job_dir.mkdir(parents=True)
    clean_env.chdir(job_dir)
    clean_env.setenv("HOME", str(tmp_path / "home"))
    home = tmp_path / "home" / "editdecay-state"
    assert load_config(None, []).cache_dir == str(home / "cache")
    assert default_storage() == str(home / "sweep-results")
    assert resolve_tracking_uri() == f"sqlite:///{home / 'mlflow.db'}"
    clean_env.setenv("EDITDECAY_HOME", str(tmp_path / "lasting"))
    assert load_config(None, []).cache_dir == str(tmp_path / "lasting" / "cache")
    assert load_config(None, ["cache_dir=/data/cache"]).cache_dir == "/data/cache"  # explicit wins
    clean_env.setenv("EDITDECAY_CACHE", "/shared/cache")
    assert load_config(None, []).cache_dir == "/shared/cache"
