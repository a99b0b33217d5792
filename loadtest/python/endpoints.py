"""Threadbare's endpoints, written once for the WSGI and the ASGI app.

A handler answers at once, or says what it waits on, as Threadbare's handlers do: the WSGI
app (gunicorn's sync and gthread workers) blocks its thread for a wait, the ASGI app (uvicorn)
awaits it on the event loop. Same paths, parameters, answers and error messages as Threadbare;
`/cpu`'s result differs, being another computation of the same cost.
"""

import json
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from urllib.parse import parse_qsl

from scoreboard import Scoreboard
from work import Calibration

IO_MAX_MS = 10_000
CPU_MAX_WORK = 1_000_000
MAX_KEY_BYTES = 250
MAX_TTL = 30 * 24 * 3600


class Answer:
    def __init__(self, status, body, content_type="application/json", headers=()):
        self.status, self.body, self.content_type, self.headers = status, body, content_type, list(headers)


class Waits:
    """Wait ms milliseconds (a query, a call to another service), then answer with then()."""

    def __init__(self, milliseconds, then):
        self.milliseconds, self.then = milliseconds, then


class Offloads:
    """run_in_executor on an event loop; on a handler thread, simply run."""

    def __init__(self, run):
        self.run = run


class RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def json_answer(value, status=200, headers=()):
    return Answer(status, json.dumps(value, separators=(",", ":")).encode(), headers=headers)


class Query:
    def __init__(self, text):
        try:
            self.pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
        except UnicodeDecodeError:
            raise RequestError(400, "malformed query string")
        if any("\0" in name or "\0" in value for name, value in self.pairs):
            raise RequestError(400, "malformed query string")

    def allow_only(self, known):
        for name, _ in self.pairs:
            if name not in known:
                raise RequestError(400, f"unknown query parameter '{name[:64]}'")

    def has(self, name):
        return any(key == name for key, _ in self.pairs)

    def integer(self, name, low, high, default=None):
        found = [value for key, value in self.pairs if key == name]
        if len(found) > 1:
            raise RequestError(400, f"query parameter '{name}' is given more than once")
        if not found:
            if default is not None:
                return default
            raise RequestError(400, f"missing query parameter '{name}'")
        text = found[0]
        # As Swift's Int(): an optional sign and ASCII digits, nothing else.
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise RequestError(400, f"query parameter '{name}' must be an integer, got '{text[:64]}'")
        value = int(text)
        if not low <= value <= high:
            raise RequestError(400, f"query parameter '{name}' must be between {low} and {high}, got {value}")
        return value

    def fraction(self, name, default):
        """A share from 0 to 1 in decimal digits (0.9, 1, .5), as Threadbare reads one."""
        found = [value for key, value in self.pairs if key == name]
        if len(found) > 1:
            raise RequestError(400, f"query parameter '{name}' is given more than once")
        if not found:
            return default
        text = found[0]
        if not re.fullmatch(r"[0-9]*\.?[0-9]*", text) or text in ("", "."):
            raise RequestError(400, f"query parameter '{name}' must be a decimal from 0 to 1, got '{text[:64]}'")
        if not 0 <= float(text) <= 1:
            raise RequestError(400, f"query parameter '{name}' must be from 0 to 1, got {text[:64]}")
        return float(text)


class Cache:
    """One process's LRU cache, as Threadbare's `local` backend: max_entries, max_bytes, TTLs."""

    def __init__(self, scoreboard, max_entries, max_bytes):
        self.entries = OrderedDict()  # key -> (value, content_type, expires_at or None)
        self.max_entries, self.max_bytes = max_entries, max_bytes
        # As Threadbare's local cache, whose 16 shards each hold a sixteenth of the bytes.
        self.max_entry_bytes = max(1, max_bytes // 16)
        self.bytes = 0
        self.lock = threading.Lock()
        self.board = scoreboard

    @staticmethod
    def _size(key, value):
        return len(key) + len(value)

    def get(self, key):
        with self.lock:
            found = self.entries.get(key)
            if found is not None and found[2] is not None and found[2] <= time.monotonic():
                self._remove(key)
                self.board.add("expirations")
                found = None
            if found is None:
                self.board.add("misses")
                return None
            self.entries.move_to_end(key)
            self.board.add("hits")
            return found

    def put(self, key, value, content_type, ttl):
        """True if it replaced an entry; None if the entry is larger than the cache allows."""
        if self._size(key, value) > self.max_entry_bytes:
            return None
        with self.lock:
            replaced = self._remove(key)
            self.entries[key] = (value, content_type, time.monotonic() + ttl if ttl else None)
            self.bytes += self._size(key, value)
            while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
                oldest = next(iter(self.entries))
                expires = self.entries[oldest][2]
                self._remove(oldest)
                # An expired entry that reaches the eviction end is an expiration, as in memcached.
                self.board.add("expirations" if expires is not None and expires <= time.monotonic() else "evictions")
            self._publish()
            return replaced

    def delete(self, key):
        with self.lock:
            removed = self._remove(key)
            self._publish()
            return removed

    def _remove(self, key):
        found = self.entries.pop(key, None)
        if found is None:
            return False
        self.bytes -= self._size(key, found[0])
        return True

    def _publish(self):
        self.board.set(entries=len(self.entries), bytes=self.bytes)


class Application:
    def __init__(self, server):
        self.server = server
        self.started = time.monotonic()
        interval = os.environ.get("SWITCH_INTERVAL_MS")
        if interval:
            try:
                milliseconds = float(interval)
            except ValueError:
                milliseconds = float("nan")
            # Threadbare's switch_interval_ms range; CPython's own floor is 1 µs.
            if not 0.001 <= milliseconds <= 1000:
                sys.exit(f"SWITCH_INTERVAL_MS must be 0.001 to 1000 milliseconds, got {interval!r}")
            sys.setswitchinterval(milliseconds / 1000)
        self.calibration = Calibration()
        self.board = Scoreboard()
        self.cache = Cache(self.board, _environment_integer("CACHE_MAX_ENTRIES", 10_000, 1, 100_000_000),
                           _environment_integer("CACHE_MAX_BYTES", 64 << 20, 1, 1 << 40))
        # Start-up data, as Threadbare's cache.preload: built once when the app is imported (in
        # each gunicorn worker unless gunicorn runs with --preload), then only read.
        count = _environment_integer("CACHE_PRELOAD", 0, 0, 10_000_000)
        size = _environment_integer("CACHE_PRELOAD_BYTES", 1024, 0, 1 << 20)
        self.startup = {b"preload-%d" % index: os.urandom(size) for index in range(count)}
        self.counts = {}
        self.counts_lock = threading.Lock()
        print(f"threadbare reference app ({server}, pid {os.getpid()}): {self.calibration.summary()}; "
              f"switch interval {sys.getswitchinterval() * 1000:g} ms", file=sys.stderr, flush=True)

    # Counting, around every request.
    def began(self):
        self.board.add("in_flight")

    def ended(self, name, status):
        self.board.add("in_flight", -1)
        self.board.add("requests")
        with self.counts_lock:
            by_status = self.counts.setdefault(name, {})
            by_status[str(status)] = by_status.get(str(status), 0) + 1

    def respond(self, method, path, query, body, content_type):
        """(endpoint name, Answer | Waits | Offloads). `path` is the path's bytes, already
        percent-decoded once by the server (PATH_INFO, or ASGI's raw_path decoded here)."""
        try:
            text = path.decode("latin-1")
            for name, methods, matches, handler in self.routes:
                if matches(text):
                    if method == "HEAD" and "GET" in methods:
                        method = "GET"
                    if method not in methods:
                        allow = ", ".join(methods + (("HEAD",) if "GET" in methods else ()))
                        return "unmatched", json_answer({"error": f"method {method} not allowed here; allowed: {allow}", "status": 405},
                                                        405, [("Allow", allow)])
                    try:
                        return name, handler(self, method, path, Query(query), body, content_type)
                    except RequestError as error:
                        return name, json_answer({"error": error.message, "status": error.status}, error.status)
            return "unmatched", json_answer({"error": "no endpoint at this path; GET / lists them", "status": 404}, 404)
        except Exception as error:  # a bug here must still be an answer, and counted
            return "unmatched", json_answer({"error": f"internal error: {type(error).__name__}", "status": 500}, 500)

    def index(self, method, path, query, body, content_type):
        query.allow_only(())
        return json_answer({"name": "threadbare-reference", "server": self.server, "pid": os.getpid(),
                            "python": sys.version.split()[0], "calibration": self.calibration.describe(),
                            "endpoints": [route[0] for route in self.routes]})

    def health(self, method, path, query, body, content_type):
        return Answer(200, b"ok", "text/plain; charset=utf-8")

    def io(self, method, path, query, body, content_type):
        query.allow_only(("ms",))
        milliseconds = query.integer("ms", 0, IO_MAX_MS)
        return Waits(milliseconds, lambda: json_answer({"slept_ms": milliseconds}))

    def cpu(self, method, path, query, body, content_type):
        query.allow_only(("work", "release", "native", "offload"))
        work = query.integer("work", 0, CPU_MAX_WORK)
        if query.has("release") and query.has("native"):
            raise RequestError(400, "release=1 is native=1: give one of them")
        native = float(query.integer("release", 0, 1)) if query.has("release") else query.fraction("native", 0.0)
        offloads = query.integer("offload", 0, 1, default=0) == 1

        def compute():
            state = self.calibration.compute_mixed(work, native)
            return Answer(200, ('{"work":%d,"result":"%016x"}' % (work, state & 0xFFFFFFFFFFFFFFFF)).encode())
        return Offloads(compute) if offloads else compute()

    def cache_stats(self, method, path, query, body, content_type):
        query.allow_only(())
        total, workers = self.board.total()
        figures = {name: total[name] for name in ("entries", "bytes", "hits", "misses", "evictions", "expirations")}
        limits = {"max_entries": self.cache.max_entries * len(workers), "max_bytes": self.cache.max_bytes * len(workers)}
        answer = {**figures, **limits, "backend": "local", "max_entry_bytes": self.cache.max_entry_bytes}
        if len(workers) > 1:
            each = [{**{name: worker[name] for name in figures}, "pid": worker["pid"]} for worker in workers]
            answer["workers"] = {"each": each, "total": {**figures, **limits}}
        return json_answer(answer)

    def cache_entry(self, method, path, query, body, content_type):
        if method == "PUT":
            query.allow_only(("ttl",))
        elif method == "GET":
            if query.has("ttl") and not query.has("compute"):
                raise RequestError(400, "ttl on a read needs compute: it is how long the value a miss computes is kept")
            query.allow_only(("compute", "ttl", "touches"))
        else:
            query.allow_only(())
        ttl = query.integer("ttl", 0, MAX_TTL) if query.has("ttl") else 0
        key = checked_key(path[len(b"/cache/"):])
        if key in self.startup:
            if method != "GET":
                raise RequestError(409, f"{key.decode()} is start-up data (cache.preload): read-only while the server runs")
            # Each read of the shared object writes its reference count, as any Python read does.
            value = None
            for _ in range(query.integer("touches", 0, CPU_MAX_WORK, default=1)):
                value = self.startup[key]
            return Answer(200, value if value is not None else self.startup[key], "application/octet-stream")
        if method == "PUT":
            replaced = self.cache.put(key, body, content_type or "application/octet-stream", ttl)
            if replaced is None:
                raise RequestError(413, f"entry of {len(key) + len(body)} bytes is larger than the cache allows per entry ({self.cache.max_entry_bytes})")
            return json_answer({"key": key.decode(), "bytes": len(body)}, 200 if replaced else 201)
        if method == "DELETE":
            if not self.cache.delete(key):
                raise RequestError(404, "no cache entry for this key")
            return Answer(204, b"")
        compute = query.integer("compute", 0, CPU_MAX_WORK) if query.has("compute") else None
        found = self.cache.get(key)
        if found is not None:
            return Answer(200, found[0], found[1], [("X-Cache", "hit")] if compute is not None else [])
        if compute is None:
            raise RequestError(404, "no cache entry for this key")
        # Read-through: a miss computes the value as Python code, under the GIL, and stores it.
        value = b"%016x" % (self.calibration.compute(compute) & 0xFFFFFFFFFFFFFFFF)
        self.cache.put(key, value, "text/plain; charset=utf-8", ttl)
        return Answer(200, value, "text/plain; charset=utf-8", [("X-Cache", "miss")])

    def stats(self, method, path, query, body, content_type):
        query.allow_only(())
        total, workers = self.board.total()
        with self.counts_lock:
            counts = json.loads(json.dumps(self.counts))
        answer = {"server": self.server, "pid": os.getpid(), "uptime_s": time.monotonic() - self.started,
                  "requests_total": total["requests"], "in_flight": total["in_flight"],
                  # Requests waiting for a thread are in the server's socket or its executor, where
                  # neither gunicorn nor uvicorn counts them.
                  "queue_depth": 0,
                  "requests": counts, "switch_interval_ms": sys.getswitchinterval() * 1000,
                  "calibration": self.calibration.describe()}
        if len(workers) > 1:
            answer["workers"] = {"count": len(workers), "requests": total["requests"],
                                 "each": [{"pid": worker["pid"], "requests": worker["requests"]} for worker in workers]}
        return json_answer(answer)

    routes = [
        ("index", ("GET",), lambda path: path == "/", index),
        ("health", ("GET",), lambda path: path == "/health", health),
        ("io", ("GET",), lambda path: path == "/io", io),
        ("cpu", ("GET",), lambda path: path == "/cpu", cpu),
        ("cache_stats", ("GET",), lambda path: path == "/cache", cache_stats),
        ("cache", ("GET", "PUT", "DELETE"), lambda path: path.startswith("/cache/"), cache_entry),
        ("stats", ("GET",), lambda path: path == "/stats", stats),
    ]


def _environment_integer(name, default, low, high):
    text = os.environ.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
        sys.exit(f"{name} must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


def checked_key(key):
    """As Threadbare: the percent-decoded rest of the path, 1 to 250 bytes, no control
    characters, valid UTF-8."""
    if not key:
        raise RequestError(400, "empty cache key")
    if len(key) > MAX_KEY_BYTES:
        raise RequestError(400, f"cache key is {len(key)} bytes; the limit is {MAX_KEY_BYTES}")
    if any(byte < 0x20 or byte == 0x7F for byte in key):
        raise RequestError(400, "cache key contains a control character")
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "cache key is not valid UTF-8")
    return key
