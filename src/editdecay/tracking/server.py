"""A real MLflow tracking server: sqlite backend, proxied artifacts, bound to 127.0.0.1 by default.

Proxied artifacts (``--artifacts-destination``) let remote clients — Ray workers on other nodes —
upload artifacts through the server instead of needing the server's filesystem.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from editdecay.errors import EditDecayError


def server_command(root: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    root = root.resolve()
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
            "--serve-artifacts", "--host", host, "--port", str(port), "--workers", str(workers)]


def check_root(root: Path) -> None:
    probe = root / ".write-test"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise EditDecayError(f"server root {root} is not writable ({err.strerror}); choose another --root") from None


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EditDecayError(f"mlflow server exited with code {proc.returncode} before answering on {url}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise EditDecayError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def start_server(root: Path, host: str = "127.0.0.1", port: int = 5000, log_file: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start the server in the background; return the process and its URL once it answers."""
    check_root(root)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen(server_command(root, host, port), stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ}, start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        wait_healthy(url, proc)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop the server and its gunicorn/uvicorn workers (they share its process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)
