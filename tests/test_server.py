"""`editdecay server` stops whole: no mlflow process outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from editdecay.tracking.server import wait_healthy

from conftest import REPO, free_port


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow  # the mlflow server takes ~25 s to answer on 2 busy cores
def test_server_stop_leaves_no_child(tmp_path):
    sig = signal.SIGTERM  # SIGINT and SIGHUP go through the same handler
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "editdecay", "server", "--root", str(tmp_path / "store"),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120)
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(children) >= 2  # mlflow and its workers: what used to survive a kill of the PID
        proc.send_signal(sig)  # to editdecay only, as `kill <pid>` does
        assert proc.wait(timeout=30) == 143  # 128 + SIGTERM, as a shell reports it (was 0)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in children if _alive(pid)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
