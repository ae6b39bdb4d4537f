"""Tracking: ``runs.py`` and ``server.py`` are the only modules that import mlflow. This package
module does not, so mlflow-free code (the sweep grid, dry runs) can resolve where runs go."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_tracking_uri(uri: str | None = None, cwd: Path | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else the embedded ``sqlite:///<cwd>/mlflow.db``."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(cwd or Path.cwd()) / 'mlflow.db'}"
