"""One writer per output: an advisory lock file beside every output and cache entry.

`flock` locks die with their process (SIGKILL included), so a crashed run never leaves a lock
that blocks the next one; the pid written into the file names the holder in the error. Held
locks are re-entrant within a process (a recipe holds its output while its last step writes it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from edgeslim.errors import OutputError

_held: dict[str, int] = {}  # lock path -> nesting depth, in this process


def lock_path(target: Path) -> Path:
    """The lock file guarding `target` (beside it, hidden)."""
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def hold(target: Path) -> Iterator[None]:
    """Hold the lock on `target`; OutputError (exit 4) naming the holder's pid when it is taken."""
    path = lock_path(target.absolute())
    key = str(path)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, target)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before unlocking: a waiter that opened this inode retries (_acquire)
        os.close(fd)


def _acquire(path: Path, target: Path) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(
                f"{target} is being written by another edgeslim run (pid {holder}): wait for it to "
                "finish or stop that process, then rerun"
            ) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = -1
        if current == os.fstat(fd).st_ino:  # not unlinked by the previous holder meanwhile
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
