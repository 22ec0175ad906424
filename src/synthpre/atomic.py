"""Atomic file output: write to a temporary name beside the target, then rename.

A job killed half-way leaves only a ``.tmp-*`` file, never a half-written output that
Snakemake (or a resumed job) could take as finished.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent,
                               suffix=target.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are shared like any file
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException as err:
        full = isinstance(err, Exception) and _disk_full(err, target.parent)  # before unlink
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if full:
            raise OSError(errno.ENOSPC, f"no space left on device writing {target} (nothing "
                          f"was written there; free space and rerun)") from err
        raise


def _disk_full(err: Exception, folder: Path) -> bool:
    """Whether writing failed for want of space: ENOSPC, or a library's own message for it
    (torch.save says only 'basic_ios::clear: iostream error'; h5py 'Can't write data'), told
    by the folder's file system having no block left for this user."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(target: str | os.PathLike, obj) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """Parse a JSON output of an earlier stage; a missing or broken file names itself."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid {what} ({err})") from err


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, owner: str):
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) while the body runs, so two
    processes (an orphaned job and its rerun) never write the same folder. POSIX record locks
    are released by the kernel when the holder dies, so a killed job leaves no stale lock."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    handle = open(path, "a+")
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown process"
        handle.close()
        raise ValueError(f"{folder} is being written by another {owner} ({holder}, lock "
                         f"{path}); stop that one first, or wait for it") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()
