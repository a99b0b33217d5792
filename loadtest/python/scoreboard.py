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
import sys
import tempfile
import threading

FIELDS = ("requests", "in_flight", "hits", "misses", "entries", "bytes", "evictions", "expirations")
# pid, its start time (so a reused pid is not taken for the worker that had it), the figures.
_SLOT = struct.Struct("<qq" + "q" * len(FIELDS))
_SLOTS = 128


def _started(pid):
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _group():
    """Who started this server's workers: gunicorn's arbiter or uvicorn's supervisor, whose
    workers count together; a single-process server counts alone."""
    if os.environ.get("SCOREBOARD_GROUP"):
        return os.environ["SCOREBOARD_GROUP"]
    import multiprocessing
    if "gunicorn" in os.path.basename(sys.argv[0] if sys.argv else "") or multiprocessing.parent_process() is not None:
        return str(os.getppid())
    return str(os.getpid())


class Scoreboard:
    def __init__(self):
        # The workers' parent: gunicorn's arbiter, uvicorn's supervisor, or whoever started a
        # single-process server. SCOREBOARD_GROUP names it explicitly.
        group = _group()
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        self.path = os.path.join(directory, f"threadbare-reference-{os.getuid()}-{group}.board")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            os.ftruncate(self.fd, max(os.fstat(self.fd).st_size, _SLOT.size * _SLOTS))
            self.map = mmap.mmap(self.fd, _SLOT.size * _SLOTS)
            self.offset = self._claim()
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.values = dict.fromkeys(FIELDS, 0)
        self.released = False
        # gthread's handler threads count at once; += is not atomic under the GIL.
        self._lock = threading.Lock()
        self._publish()

    def _claim(self):
        """A slot that is free or was left by a process that has died."""
        self.pid, self.started = os.getpid(), _started(os.getpid()) or 0
        for index in range(_SLOTS):
            offset = index * _SLOT.size
            owner, started = _SLOT.unpack_from(self.map, offset)[:2]
            if owner == 0 or not self._alive(owner, started):
                _SLOT.pack_into(self.map, offset, self.pid, self.started, *([0] * len(FIELDS)))
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

    @staticmethod
    def _alive(pid, started):
        return _started(pid) == started

    def _publish(self):
        _SLOT.pack_into(self.map, self.offset, self.pid, self.started, *(self.values[name] for name in FIELDS))

    def workers(self):
        """Every live worker's figures, this one's included."""
        found = []
        for index in range(_SLOTS):
            pid, started, *values = _SLOT.unpack_from(self.map, index * _SLOT.size)
            if pid and self._alive(pid, started):
                found.append({"pid": pid, **dict(zip(FIELDS, values))})
        return found

    def total(self):
        workers = self.workers()
        return {name: sum(worker[name] for worker in workers) for name in FIELDS}, workers

    def release(self):
        """At exit: the slot is free for the next worker, and the last one out removes the file.
        Only once: by a second call the slot may be another worker's."""
        if self.released:
            return
        self.released = True
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            _SLOT.pack_into(self.map, self.offset, 0, 0, *([0] * len(FIELDS)))
            others = any(self._alive(*_SLOT.unpack_from(self.map, index * _SLOT.size)[:2])
                         for index in range(_SLOTS) if _SLOT.unpack_from(self.map, index * _SLOT.size)[0])
            if not others:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
