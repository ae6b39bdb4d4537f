"""A real, throw-away PostgreSQL for tests (Debian package ``postgresql``): ``initdb`` into a temporary
directory, ``pg_ctl start`` on 127.0.0.1 and a free port, a password-protected role and database,
stopped and removed afterwards. PostgreSQL refuses to run as root: as root it runs as the
``postgres`` system user the package creates."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def pg_bin() -> Path | None:
    """The directory holding initdb/pg_ctl (Debian keeps them out of PATH), or None."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("pg_ctl")  # other systems: initdb and createdb beside it (links resolved)
    return Path(found).resolve().parent if found else None


def unavailable() -> str | None:
    """Why a PostgreSQL cannot be started here (for a skip), or None."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


@dataclass
class Postgres:
    root: Path
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        env = {**os.environ, "PGPASSWORD": self.password, "LC_ALL": "C.UTF-8"}
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        return proc

    def start(self) -> None:
        b = pg_bin()
        data = self.root / "data"
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run(str(b / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        # Loopback TCP only; the socket in our own directory (not /run/postgresql, which may not exist).
        self._run(str(b / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self._run(str(b / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database)

    def stop(self) -> None:
        try:
            self._run(str(pg_bin() / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(port: int, database: str = "mlflow") -> Postgres:
    # Not under pytest's tmp_path: its parents are 0700 root, which the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="edpg", dir="/tmp"))
    os.chmod(root, 0o755)
    pg = Postgres(root, port, "editdecay", secrets.token_hex(12), database)
    try:
        pg.start()
    except BaseException:
        try:
            pg.stop()  # a server that started before createdb failed
        except Exception:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return pg
