"""Where state that must outlast one process goes by default: the stage cache (``cache_dir``), a
sweep's Tune state and summary (``--storage``) and the embedded sqlite store.

Relative defaults (``.cache/editdecay``, ``sweep-results``, ``./mlflow.db``) resolve against the
working directory. Under ``ray job submit --runtime-env`` that is Ray's unpacked copy of the
checkout (``…/runtime_resources/working_dir_files/_ray_pkg_<hash>/``): a new one per upload, cleaned
up by Ray, so every job rebuilt the toy model and the statistics, and ``--resume`` depended on Ray
not having deleted the old copy. ``EDITDECAY_HOME`` names a directory that lasts (set it in the
runtime_env, sweeps/cluster/runtime_env.yaml); under a Ray job without it, ``~/editdecay-state`` is
used. Explicit settings (``cache_dir=``, ``EDITDECAY_CACHE``, ``--storage``, a tracking URI) win.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "EDITDECAY_HOME"
RAY_JOB_DEFAULT = "~/editdecay-state"


def in_ray_job_working_dir(cwd: Path | None = None) -> bool:
    """Is ``cwd`` a runtime_env working_dir Ray unpacked (temporary, per upload)?"""
    parts = (cwd or Path.cwd()).parts
    return "working_dir_files" in parts or any(p.startswith("_ray_pkg_") for p in parts)


def state_home(cwd: Path | None = None) -> Path | None:
    """``EDITDECAY_HOME``, else ``~/editdecay-state`` under a Ray job's working dir, else None (the cwd)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser().resolve()
    if in_ray_job_working_dir(cwd):
        return Path(RAY_JOB_DEFAULT).expanduser()
    return None


def default_cache_dir() -> str:
    explicit = os.environ.get("EDITDECAY_CACHE")
    if explicit:
        return explicit
    home = state_home()
    return str(home / "cache") if home else ".cache/editdecay"


def default_storage() -> str:
    home = state_home()
    return str(home / "sweep-results") if home else "sweep-results"


def default_store_dir(cwd: Path | None = None) -> Path:
    """The directory of the embedded ``mlflow.db`` (and ``mlruns``) when no tracking URI is given."""
    home = state_home(cwd)
    if home is None:
        return cwd or Path.cwd()
    home.mkdir(parents=True, exist_ok=True)
    return home
