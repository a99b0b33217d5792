"""Counters every worker process of one server can read: Threadbare's prefork scoreboard.

gunicorn and uvicorn start workers that share nothing, so a /stats or /cache request would
see only the worker that answered it. Each worker instead owns one slot of a small file in
/dev/shm, named after the process that started the workers. Only the owner writes a slot;
any worker sums the slots whose process is alive.
"""

import fcntl
import mmap
import os
import struct
import tempfile
import threading

FIELDS = ("requests", "in_flight", "hits", "misses", "entries", "bytes", "evictions", "expirations")
_SLOT = struct.Struct("<q" + "q" * len(FIELDS))
_SLOTS = 128


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Scoreboard:
    def __init__(self):
        # The workers' parent: gunicorn's arbiter, uvicorn's supervisor, or whoever started a
        # single-process server. SCOREBOARD_GROUP names it explicitly.
        group = os.environ.get("SCOREBOARD_GROUP") or str(os.getppid())
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        self.path = os.path.join(directory, f"threadbare-reference-{os.getuid()}-{group}.board")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, max(os.fstat(fd).st_size, _SLOT.size * _SLOTS))
            self.map = mmap.mmap(fd, _SLOT.size * _SLOTS)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self.offset = self._claim()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        self.values = dict.fromkeys(FIELDS, 0)
        # gthread's handler threads count at once; += is not atomic under the GIL.
        self._lock = threading.Lock()
        self._publish()

    def _claim(self):
        """A slot that is free or was left by a process that has died."""
        pid = os.getpid()
        for index in range(_SLOTS):
            offset = index * _SLOT.size
            owner = _SLOT.unpack_from(self.map, offset)[0]
            if owner == 0 or owner == pid or not _alive(owner):
                _SLOT.pack_into(self.map, offset, pid, *([0] * len(FIELDS)))
                return offset
        raise SystemExit(f"{self.path}: all {_SLOTS} worker slots are taken")

    def add(self, field, amount=1):
        with self._lock:
            self.values[field] += amount
            self._publish()

    def set(self, **fields):
        with self._lock:
            self.values.update(fields)
            self._publish()

    def _publish(self):
        _SLOT.pack_into(self.map, self.offset, os.getpid(), *(self.values[name] for name in FIELDS))

    def workers(self):
        """Every live worker's figures, this one's included."""
        found = []
        for index in range(_SLOTS):
            pid, *values = _SLOT.unpack_from(self.map, index * _SLOT.size)
            if pid and _alive(pid):
                found.append({"pid": pid, **dict(zip(FIELDS, values))})
        return found

    def total(self):
        workers = self.workers()
        return {name: sum(worker[name] for worker in workers) for name in FIELDS}, workers

    def release(self):
        """At exit: the slot is free for the next worker."""
        _SLOT.pack_into(self.map, self.offset, 0, *([0] * len(FIELDS)))
