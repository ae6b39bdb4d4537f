"""The AWS cluster file as `ray up` would take it, checked offline: Ray's own schema validation, and
that its setup installs the pinned stack for the Python it installs (the pins resolve for that
Python, as for the minimum pyproject.toml states)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO

CLUSTER_FILE = REPO / "sweeps" / "cluster" / "aws-gpu.yaml"
PIP = [sys.executable, "-m", "pip"]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pins(*extras: str) -> list[str]:
    project = _project()
    deps = list(project["dependencies"]) + [d for e in extras for d in project["optional-dependencies"][e]]
    return list(dict.fromkeys(d.split(";")[0].strip() for d in deps))


def _minimum_python() -> str:
    spec = _project()["requires-python"]
    match = re.fullmatch(r">=\s*(3\.\d+)", spec.strip())
    assert match, f"requires-python {spec!r}: expected '>=3.X'"
    return match.group(1)


def _cluster_python(config: dict) -> str:
    """The Python the setup commands make the venv with (``python3.X -m venv``)."""
    found = {m for cmd in config["setup_commands"] for m in re.findall(r"python(3\.\d+) -m venv", cmd)}
    assert len(found) == 1, f"setup_commands should make the venv with one python3.X, found {found}"
    return found.pop()


def _resolve(python: str, pins: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """pip's resolution of ``pins`` for ``python`` on this platform, installing nothing: wheels only
    (what a node without compilers gets), no dependencies (their own pins are the packages' business)."""
    return subprocess.run([*PIP, "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
                           "--disable-pip-version-check", "--python-version", python, "--only-binary=:all:",
                           "--target", str(tmp_path / f"py{python}"), *pins],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def index_reachable():
    probe = subprocess.run([*PIP, "download", "--no-deps", "--quiet", "--disable-pip-version-check", "-d",
                            "/tmp/editdecay-pip-probe", "tqdm==4.70.1"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"package index unreachable (pip download tqdm: {probe.stderr.strip().splitlines()[-1:]})")


def test_cluster_file_passes_rays_schema_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER_FILE.read_text())
    validate_config(prepare_config(config))  # what `ray up` runs before it contacts AWS


def test_cluster_file_installs_a_python_the_pins_support():
    config = yaml.safe_load(CLUSTER_FILE.read_text())
    python = _cluster_python(config)
    assert tuple(map(int, python.split("."))) >= tuple(map(int, _minimum_python().split(".")))
    setup = "\n".join(config["setup_commands"])
    assert f"python{python}-venv" in setup  # Debian/Ubuntu split venv out of the interpreter package
    assert '/home/ubuntu/venv/bin/pip install -q -e "/home/ubuntu/editdecay[cluster]"' in setup


def test_cluster_file_keeps_the_store_off_the_head():
    """The MLflow server's store is a database and an object store named in SSM, served by a systemd
    unit; nothing in the file puts runs on the head's disk or starts the server with nohup."""
    config = yaml.safe_load(CLUSTER_FILE.read_text())
    head = "\n".join(config["head_setup_commands"] + config["head_start_ray_commands"])
    assert "MLFLOW_BACKEND_STORE_URI" in head and "MLFLOW_ARTIFACTS_DESTINATION" in head
    assert "Restart=always" in head and "systemctl enable --now editdecay-mlflow" in head
    assert "nohup" not in head and "mlflow.db" not in head


@pytest.mark.parametrize("which", ["minimum", "cluster"])
def test_pins_resolve_for_the_python(which, index_reachable, tmp_path):
    python = _minimum_python() if which == "minimum" else _cluster_python(yaml.safe_load(CLUSTER_FILE.read_text()))
    if which == "cluster" and python == _minimum_python():
        pytest.skip(f"the cluster installs Python {python}, the stated minimum: checked by the other case")
    # torch: its 2.13.0 wheels cover 3.10-3.14 and weigh ~200 MB to resolve; deepspeed ships an sdist only
    # (pure Python, built at install): checked by name below.
    wheels = [p for p in _pins("cluster") if not p.startswith(("torch==", "deepspeed=="))]
    proc = _resolve(python, wheels, tmp_path)
    lines = [line for line in proc.stderr.splitlines() if "is ignored" not in line]  # pip's notes on absent local indexes
    assert proc.returncode == 0, f"pins do not resolve for Python {python}: " + "\n".join(lines[-6:])
    versions = subprocess.run([*PIP, "index", "versions", "deepspeed", "--python-version", python,
                               "--disable-pip-version-check"], capture_output=True, text=True, timeout=120)
    deepspeed = next(p for p in _pins() if p.startswith("deepspeed=="))
    assert deepspeed.split("==")[1] in versions.stdout, versions.stdout[-500:] + versions.stderr[-500:]


def test_python_310_cannot_install_the_pins(index_reachable, tmp_path):
    """Why the minimum is 3.11: the numpy and pandas pins have no 3.10 wheels."""
    pins = [p for p in _pins() if p.startswith(("numpy==", "pandas=="))]
    assert len(pins) == 2
    assert _resolve("3.10", pins, tmp_path).returncode != 0
