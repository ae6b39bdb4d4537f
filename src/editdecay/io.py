"""Files are written whole or not at all: write to a temporary name beside the target, then rename.

Permissions follow the umask, as ``open()`` and ``mkdir`` would give: ``tempfile`` creates its
files 0600 and directories 0700, so the temporary is widened to ``0666 & ~umask`` (files) or
``0777 & ~umask`` (directories) before it is renamed into place — a shared report or cache is
readable by whoever the umask allows (0644 / 0755 under the usual 022).

Output directories are never someone else's: every directory the tool writes carries a marker file
(:data:`OUTPUT_MARKER`), and an existing directory is replaced only if it has one (or is empty).
``.``, ``/``, the home directory and any directory above the current one are always refused.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from editdecay.errors import EditDecayError

OUTPUT_MARKER = ".editdecay-output"


class OutputDirError(EditDecayError):
    """An output directory the tool would have to replace is not one it wrote."""


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse to write (and so replace) ``path`` unless it is new, empty, or written by this tool."""
    path = Path(path)
    target = path.expanduser().resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if target == Path(target.anchor) or target == home or target == cwd or target in cwd.parents:
        name = "the current directory" if target == cwd else ("your home directory" if target == home
                                                              else "a directory above the current one")
        raise OutputDirError(f"{what} {path}: refusing to replace {name}; give a new directory, e.g. {what} out")
    for parent in target.parents:  # the nearest existing ancestor must be a directory we can write into
        if parent.exists():
            if not parent.is_dir():
                raise OutputDirError(f"{what} {path}: {parent} is a file, not a directory; give a path under a directory")
            if not os.access(parent, os.W_OK | os.X_OK) and not target.exists():
                raise OutputDirError(f"{what} {path}: {parent} is not writable; give a directory you can write to")
            break
    if target.exists():
        if not target.is_dir():
            raise OutputDirError(f"{what} {path}: is a file, not a directory; give a new directory")
        if (target / OUTPUT_MARKER).is_file():
            return target
        if any(target.iterdir()):
            raise OutputDirError(f"{what} {path}: directory exists, is not empty and was not written by editdecay "
                                 f"(no {OUTPUT_MARKER}); give a new or empty directory, or remove it yourself")
    return target


def mark_output_dir(path: str | os.PathLike) -> None:
    """Mark ``path`` as written by editdecay, so a later run may replace it."""
    (Path(path) / OUTPUT_MARKER).write_text("written by editdecay; a later run may replace this directory\n")


def replace_directory(tmp: Path, path: Path) -> None:
    """Put the finished directory ``tmp`` at ``path``; an old ``path`` (checked: ours) goes away
    only after the new one is in place, and a crash in between leaves one of the two whole."""
    check_output_dir(path, "output directory")
    umask_tree(tmp)
    if path.exists():
        old = path.parent / f".{path.name}.{tmp_tag()}.old.tmp"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def current_umask() -> int:
    """The process umask, read without changing it where Linux lets us (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not atomic across threads, but brief)
    os.umask(mask)
    return mask


def umask_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()`` / ``mkdir`` would have (tempfile uses 0600 / 0700)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def umask_tree(root: str | os.PathLike) -> None:
    """:func:`umask_mode` for ``root`` and everything under it, before it is renamed into place:
    libraries write some files owner-only whatever the umask (safetensors: 0600). Executable files
    stay executable."""
    mask = current_umask()
    for path in (Path(root), *Path(root).rglob("*")):
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, 0o777 & ~mask)
        else:
            os.chmod(path, (0o777 if path.stat().st_mode & 0o100 else 0o666) & ~mask)


def tmp_tag() -> str:
    """Host and process id in temporary names: a later run can tell whose leftover it is."""
    return f"{socket.gethostname()}-{os.getpid()}"


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp_path)`` writes the whole file under a temporary name beside ``path``; it then
    replaces ``path`` in one rename, or is removed if anything failed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        umask_mode(tmp)
        write(tmp)
        umask_mode(tmp)  # again: a writer may replace the file (safetensors creates it 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write_with(path, write)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block completes.

    ``path`` must be new, empty or marked as ours (:func:`check_output_dir`), checked before the
    block runs; the result carries the marker."""
    path = Path(path)
    check_output_dir(path, "output directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{tmp_tag()}.", suffix=".tmp"))
    try:
        yield tmp
        mark_output_dir(tmp)
        replace_directory(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
