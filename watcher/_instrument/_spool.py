"""The spool: export requests the daemon could not take, kept on disk, one file each, until re-sent."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["Spool", "endpoint_dir"]

_SUFFIX = ".otlp"
_TEMP = ".tmp-"
_LOCK = ".replay.lock"
_STALE_TEMP_S = 600.0


def endpoint_dir(root: Path, endpoint: str) -> Path:
    """The spool directory under `root` for `endpoint`: readable, and distinct for every URL.

    Spans are only ever re-sent to the endpoint they were meant for: a spool shared by
    applications that talk to different daemons must not mix them.
    """
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", endpoint.split("://", 1)[-1]).strip("_")[:60]
    return root / f"{readable}-{hashlib.sha256(endpoint.encode()).hexdigest()[:8]}"


class Spool:
    """A directory of encoded OTLP export requests, oldest first by name, at most `max_bytes` in all.

    Used by two threads at once (the exporter adds, the replayer removes) and shared by
    processes: a file appears whole (written under a temporary name, then renamed), so a reader
    never sees half a request, and a process killed mid-write leaves only a temporary file,
    removed once stale. Replays take turns through a lock file (`turn()`), so two processes never
    send the same file. The size bound counts every process's files: the directory is rescanned
    every `rescan_s`, and this process's own writes and removals are counted in between (so what
    other processes wrote meanwhile may pass it a little). Files survive the process, not the
    machine: nothing is fsynced. Nothing here runs on the application's thread: the exporter and
    the replayer call it.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        *,
        rescan_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._rescan_s = rescan_s
        self._clock = clock
        self._used = 0
        self._scanned_at: float | None = None
        self._names = itertools.count()

    def add(self, data: bytes) -> bool:
        """Keeps one export request; False (and nothing written) when it would pass the bound.

        Raises OSError when the directory cannot be written.
        """
        if self._used_bytes() + len(data) > self.max_bytes:
            return False
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._names):06d}"
        temp = self.path / f"{_TEMP}{name}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out:
            out.write(data)
        temp.rename(self.path / f"{name}{_SUFFIX}")
        self._used += len(data)
        return True

    def waiting(self) -> list[Path]:
        """The requests kept, oldest first."""
        try:
            names = [name for name in os.listdir(self.path) if name.endswith(_SUFFIX)]
        except FileNotFoundError:
            return []
        return [self.path / name for name in sorted(names)]

    def read(self, path: Path) -> bytes | None:
        """The request in `path`; None when it is gone (another process re-sent it)."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, path: Path) -> None:
        """Forgets a request that was delivered (or that the daemon refused for good)."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        self._used = max(0, self._used - size)

    @contextlib.contextmanager
    def turn(self) -> Iterator[bool]:
        """Yields True while this caller alone may replay the directory, False when another holds the turn.

        The turn is a `flock` on a lock file: the kernel releases it when its holder dies. It is
        unlocked explicitly, since a forked child may hold a copy of the descriptor.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _used_bytes(self) -> int:
        now = self._clock()
        if self._scanned_at is None or now - self._scanned_at >= self._rescan_s:
            self._used = self._scan()
            self._scanned_at = now
        return self._used

    def _scan(self) -> int:
        """Bytes held by every process's files; temporary files left by a killed writer are removed when stale."""
        total = 0
        stale_before = time.time() - _STALE_TEMP_S
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return 0
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                info = entry.stat()
                if entry.name.startswith(_TEMP) and info.st_mtime < stale_before:
                    os.unlink(entry.path)
                    continue
                total += info.st_size
        return total
