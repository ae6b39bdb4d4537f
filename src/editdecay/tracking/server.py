"""A real MLflow tracking server: sqlite backend, proxied artifacts, bound to 127.0.0.1 by default.

Proxied artifacts (``--artifacts-destination``) let remote clients — Ray workers on other nodes —
upload artifacts through the server instead of needing the server's filesystem.

On a cluster the store must outlive the machine the server runs on: ``backend_store_uri`` takes a
database (``postgresql://user:pw@host/db``, RDS), passed to mlflow through its environment
(``MLFLOW_BACKEND_STORE_URI``) so the password never shows in ``ps``, and ``artifacts_destination``
an object store (``s3://bucket/prefix``). ``--root`` then holds only the lock and the pid file.

``editdecay server`` supervises the mlflow process (:func:`serve_foreground`): one copy per
``--root`` (a second is refused while the first holds ``<root>/server.lock``), and an mlflow that
dies after it has answered once is started again, with backoff; a start that never answers (bad
port, unreachable database) is not retried: its exit status is the command's.

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
                   extra_hosts: list[str] | None = None, backend_store_uri: str | None = None,
                   artifacts_destination: str | None = None) -> list[str]:
    """The mlflow command line. A ``backend_store_uri`` is not in it (it may hold a password): pass
    :func:`server_env` as the process environment."""
    root = root.resolve()
    cmd = [sys.executable, "-m", "mlflow", "server"]
    if not backend_store_uri:
        cmd += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", artifacts_destination or str(root / "artifacts"),
            "--serve-artifacts", "--host", host, "--port", str(port), "--workers", str(workers)]
    if host not in LOOPBACK or extra_hosts:
        names = machine_names(host) + list(extra_hosts or [])
        hosts = [*DEFAULT_ALLOWED_HOSTS, *(h for n in names for h in (_bracket(n), f"{_bracket(n)}:{port}"))]
        origins = [f"{scheme}://{_bracket(n)}:{port}" for n in names for scheme in ("http", "https")]
        cmd += ["--allowed-hosts", ",".join(dict.fromkeys(hosts)), "--cors-allowed-origins", ",".join(origins)]
    return cmd


def server_env(backend_store_uri: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_BACKEND_STORE_URI"}
    if backend_store_uri:
        env["MLFLOW_BACKEND_STORE_URI"] = backend_with_driver(backend_store_uri)  # mlflow server reads it (click envvar)
    return env


def backend_with_driver(uri: str | None) -> str | None:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; we ship psycopg2 (``.[cluster]``), so a
    plain PostgreSQL URL gets the ``+psycopg2`` driver unless psycopg 3 is installed."""
    if not uri or not uri.lower().startswith("postgresql://"):
        return uri
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + uri[len("postgresql://"):]
    return uri


def check_store_options(backend_store_uri: str | None, artifacts_destination: str | None) -> None:
    """One line for a backend or artifact location mlflow cannot use, before anything starts."""
    from urllib.parse import urlsplit

    from editdecay.tracking import redact_uri

    if backend_store_uri:
        scheme = urlsplit(backend_store_uri).scheme.split("+")[0].lower()
        if scheme not in ("postgresql", "mysql", "mssql", "sqlite"):
            raise EditDecayError(f"--backend-store-uri {redact_uri(backend_store_uri)}: expected a database URL "
                                 "(postgresql://user:password@host:5432/mlflow, mysql://..., sqlite:////abs/path/mlflow.db)")
        if scheme == "postgresql":
            import importlib.util

            if not any(importlib.util.find_spec(m) for m in ("psycopg2", "psycopg")):
                raise EditDecayError("--backend-store-uri postgresql://... needs the psycopg2 driver: "
                                     "pip install -e '.[cluster]' (psycopg2-binary)") from None
    if artifacts_destination and "://" in artifacts_destination:
        scheme = urlsplit(artifacts_destination).scheme.lower()
        if scheme not in ("s3", "gs", "wasbs", "hdfs", "file", "ftp", "sftp"):
            raise EditDecayError(f"--artifacts-destination {artifacts_destination}: unknown scheme '{scheme}'; use "
                                 "s3://bucket/prefix, gs://bucket/prefix or a local directory")
        if scheme == "s3":
            try:
                import boto3  # noqa: F401
            except ImportError:
                raise EditDecayError("--artifacts-destination s3://... needs boto3: pip install -e '.[cluster]'") from None


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
                 extra_hosts: list[str] | None = None, backend_store_uri: str | None = None,
                 artifacts_destination: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start the server in the background; return the process and its URL once it answers."""
    check_root(root)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen(server_command(root, host, port, extra_hosts=extra_hosts, backend_store_uri=backend_store_uri,
                                           artifacts_destination=artifacts_destination),
                            stdout=out, stderr=subprocess.STDOUT, env=server_env(backend_store_uri), start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        # A crash ends the wait at once; a slow start does not fail it (mlflow needed > 60 s on 2 cores
        # shared by several test runs).
        wait_healthy(url, proc, timeout=240)
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


LOCK_FILE = "server.lock"
PID_FILE = "server.json"
# Restarts after the server had answered: backoff doubling from 1 s to 30 s; more than MAX_RESTARTS
# within RESTART_WINDOW s means something is wrong for good (the unit's supervisor, systemd, decides then).
MAX_RESTARTS, RESTART_WINDOW = 5, 300.0


def health_url_for(host: str, port: int) -> str:
    local = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{_bracket(local)}:{port}"


def serve_foreground(command: list[str], *, root: Path | None = None, env: dict[str, str] | None = None,
                     health_url: str | None = None, out=None) -> int:
    """Run the server until SIGTERM/SIGINT/SIGHUP reaches us; then stop its whole process group.
    Killing ``editdecay server`` by its PID used to leave mlflow and its workers running.

    With ``root``: refuse to start while another ``editdecay server`` holds ``<root>/server.lock``
    (a second copy would fight the first for the port and the store). With ``health_url``: an mlflow
    that exits after it has answered ``/health`` once is restarted (1, 2, 4 … 30 s apart; at most
    ``MAX_RESTARTS`` in ``RESTART_WINDOW`` s)."""
    import json

    from filelock import FileLock, Timeout

    out = out or sys.stderr
    lock = None
    if root is not None:
        lock = FileLock(str(root / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                other = json.loads((root / PID_FILE).read_text())
                who = f"pid {other['pid']}, {other['url']}"
            except (OSError, ValueError, KeyError):
                who = "pid unknown"
            raise EditDecayError(f"an editdecay server already runs for --root {root} ({who}); stop it first "
                                 "(systemctl stop editdecay-mlflow, or kill that pid) or use another --root") from None
        (root / PID_FILE).write_text(json.dumps({"pid": os.getpid(), "url": health_url or ""}) + "\n")

    def stop(signum, frame):
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    proc = None
    restarts: list[float] = []
    try:
        while True:
            proc = subprocess.Popen(command, start_new_session=True, env=env)
            started = time.monotonic()
            answered = _watch(proc, health_url)
            code = proc.wait()
            if health_url is None or not answered:
                return code  # never served: a start-up failure (port, store) is not retried
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
            if len(restarts) > MAX_RESTARTS:
                print(f"editdecay server: mlflow exited {len(restarts)} times within {RESTART_WINDOW:.0f} s "
                      f"(last code {code}); giving up", file=out, flush=True)
                return code or 1
            delay = min(30.0, 2.0 ** (len(restarts) - 1))
            print(f"editdecay server: mlflow exited with code {code} after {now - started:.0f} s; restarting in "
                  f"{delay:.0f} s (restart {len(restarts)} of at most {MAX_RESTARTS} per {RESTART_WINDOW:.0f} s)",
                  file=out, flush=True)
            stop_server(proc)  # its workers, if the leader alone died
            time.sleep(delay)
    except _Stop as stopped:
        return 128 + stopped.args[0]  # 143 SIGTERM, 130 SIGINT, 129 SIGHUP, as the shell reports a signal
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc is not None:
            stop_server(proc)
        if lock is not None:
            try:
                (root / PID_FILE).unlink()
            except OSError:
                pass
            lock.release()


def _watch(proc: subprocess.Popen, health_url: str | None) -> bool:
    """Wait until ``proc`` answers ``/health`` (True) or exits first (False); then leave it running."""
    if health_url is None:
        return False
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{health_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False
