"""A real MLflow tracking server: sqlite backend, proxied artifacts, bound to 127.0.0.1 by default.

Proxied artifacts (``--artifacts-destination``) let remote clients — Ray workers on other nodes —
upload artifacts through the server instead of needing the server's filesystem.

MLflow 3 answers 403 "Invalid Host header" to requests whose Host header is not localhost or a
private (RFC 1918) address. Bound to a non-loopback address, the server therefore also allows this
machine's own names and addresses (every interface) and whatever ``extra_hosts`` names (a DNS name
of the head node), and accepts browser writes from those origins; everything else stays refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from editdecay.errors import EditDecayError


LOOPBACK = ("127.0.0.1", "localhost", "::1")
# MLflow's own defaults (mlflow/server/security_utils.py), kept when we add names: loopback on any
# port and the private ranges, which is how nodes of a cluster usually address the head.
DEFAULT_ALLOWED_HOSTS = ("localhost:*", "127.0.0.1:*", "[[]::1]:*", "0.0.0.0:*", "192.168.*", "10.*",
                         *(f"172.{i}.*" for i in range(16, 32)), "fc00:*", "fd00:*")


def server_command(root: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
                   extra_hosts: list[str] | None = None) -> list[str]:
    root = root.resolve()
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"),
           "--serve-artifacts", "--host", host, "--port", str(port), "--workers", str(workers)]
    if host not in LOOPBACK or extra_hosts:
        names = machine_names(host) + list(extra_hosts or [])
        hosts = [*DEFAULT_ALLOWED_HOSTS, *(h for n in names for h in (_bracket(n), f"{_bracket(n)}:{port}"))]
        origins = [f"{scheme}://{_bracket(n)}:{port}" for n in names for scheme in ("http", "https")]
        cmd += ["--allowed-hosts", ",".join(dict.fromkeys(hosts)), "--cors-allowed-origins", ",".join(origins)]
    return cmd


def _bracket(name: str) -> str:
    return f"[{name}]" if ":" in name else name  # an IPv6 address in a Host header


def machine_names(host: str) -> list[str]:
    """This machine's host names and the addresses of all its interfaces (or just ``host`` when the
    server binds one specific address): the names clients may put in the Host header."""
    import socket

    names = [socket.gethostname(), socket.getfqdn()]
    if host in ("0.0.0.0", "::", ""):
        try:
            import psutil

            names += [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                      if a.family in (socket.AF_INET, socket.AF_INET6)]
        except ImportError:
            try:
                names += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
            except OSError:
                pass
    else:
        names.append(host)
    return [n for n in dict.fromkeys(names) if n and n not in LOOPBACK]


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


def start_server(root: Path, host: str = "127.0.0.1", port: int = 5000, log_file: Path | None = None,
                 extra_hosts: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start the server in the background; return the process and its URL once it answers."""
    check_root(root)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen(server_command(root, host, port, extra_hosts=extra_hosts), stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ}, start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        wait_healthy(url, proc)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop the server and its gunicorn/uvicorn/job workers: they share its process group (it was
    started in a session of its own), so the whole group is signalled, and SIGKILLed if any member
    outlives ``timeout`` — a worker that outlives the leader would keep the port and the store."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so the group check below sees only the others
        if not _group_alive(proc.pid):
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=timeout)


def _group_alive(pgid: int) -> bool:
    """Any live member left? Zombies do not count: orphaned members are reparented to PID 1, which in
    a container may never reap them, and waiting for those would always run into the timeout."""
    import psutil

    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False


class _Stop(Exception):
    pass


def serve_foreground(command: list[str]) -> int:
    """Run the server until it exits, or until SIGTERM/SIGINT/SIGHUP reaches us; then stop its whole
    process group. Killing ``editdecay server`` by its PID used to leave mlflow and its workers running."""

    def stop(signum, frame):
        raise _Stop(signum)

    proc = subprocess.Popen(command, start_new_session=True)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        return proc.wait()
    except _Stop as stop:
        return 128 + stop.args[0]  # 143 SIGTERM, 130 SIGINT, 129 SIGHUP, as the shell reports a signal
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_server(proc)
