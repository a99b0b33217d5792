"""The /cpu unit in pure Python, calibrated to cost what one unit costs Threadbare.

Threadbare's unit is a fixed number of SplitMix64 rounds in compiled code (about 1 us). The
same rounds in Python would cost a hundred times more, so the suite's sizes would mean
something else here. Instead a unit is as many iterations of a pure-Python loop as take the
same CPU time, measured when the process starts: `work=5000` then costs about 5 ms on both.

The loop holds the GIL and lets it go only when the interpreter's eval breaker asks, as any
Python code does. `release=1` is a C extension that releases the GIL for its loop: hashlib
hashing a large buffer (it lets go of the GIL above 2 KiB), calibrated the same way, and
`native=F` mixes the two a step at a time.
"""

import hashlib
import os
import sys
import time

MASK = (1 << 64) - 1
# Units per step of native=F work: Threadbare's WorkEndpoints.nativeStepUnits.
NATIVE_STEP_UNITS = 100

# What one unit costs Threadbare on this machine, in nanoseconds: `threadbare cpu-unit` prints
# it, and loadtest compare passes it to every target it starts.
DEFAULT_UNIT_NS = 1000.0


def spin(iterations, state):
    """A serial chain of 64-bit multiply-adds: nothing to skip, nothing to vectorise."""
    for _ in range(iterations):
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK
    return state


_RELEASE_CHUNK = memoryview(bytes(1 << 20))


def hash_released(byte_count):
    """Hashes byte_count bytes in 1 MiB chunks; hashlib releases the GIL for each chunk."""
    digest = hashlib.sha256()
    while byte_count > 0:
        size = min(byte_count, len(_RELEASE_CHUNK))
        # hashlib keeps the GIL for data under 2 KiB: a short tail is padded to keep it released.
        digest.update(_RELEASE_CHUNK[:max(size, 4096)])
        byte_count -= size
    return int.from_bytes(digest.digest()[:8], "little")


def _median_seconds(run, repeats=9):
    """The median of several runs. Not the fastest: on a shared machine (this one's hypervisor
    steals up to half its time) the fastest run is rarer than what requests will meet, and
    `threadbare cpu-unit` takes the median too, so both sides are measured alike."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


class Calibration:
    """How many loop iterations and hashed bytes make one unit, measured at start."""

    def __init__(self, unit_ns=None):
        configured = os.environ.get("CPU_UNIT_NS")
        if unit_ns is not None:
            self.unit_ns, self.source = float(unit_ns), "argument"
        elif configured:
            try:
                self.unit_ns = float(configured)
            except ValueError:
                sys.exit(f"CPU_UNIT_NS must be a number of nanoseconds, got {configured!r}")
            if not 1 <= self.unit_ns <= 1_000_000:
                sys.exit(f"CPU_UNIT_NS must be between 1 and 1000000 ns, got {configured}")
            self.source = "CPU_UNIT_NS"
        else:
            self.unit_ns, self.source = DEFAULT_UNIT_NS, "default (CPU_UNIT_NS not set)"
        iterations = 20_000
        self.ns_per_iteration = _median_seconds(lambda: spin(iterations, 1)) * 1e9 / iterations
        hashed = 2 << 20
        self.ns_per_hashed_byte = _median_seconds(lambda: hash_released(hashed), repeats=5) * 1e9 / hashed
        self.iterations_per_unit = self.unit_ns / self.ns_per_iteration
        self.bytes_per_unit = self.unit_ns / self.ns_per_hashed_byte

    def compute(self, units):
        """units of work holding the GIL; returns the final state."""
        return spin(round(units * self.iterations_per_unit), 0x9E3779B97F4A7C15 ^ units)

    def compute_released(self, units):
        """units of work with the GIL released."""
        return hash_released(round(units * self.bytes_per_unit))

    def compute_mixed(self, units, native):
        """units of work, the share `native` in hashlib with the GIL released and the rest in
        Python, 100 units a step as Threadbare's native=F: each step computes its Python share,
        then hashes its native share, and takes the GIL back to go on. All-native is one call."""
        native_units = round(units * native)
        python_units = units - native_units
        if native_units == 0:
            return self.compute(units)
        if python_units == 0:
            return self.compute_released(units)
        steps = -(-units // NATIVE_STEP_UNITS)
        state = 0
        for step in range(steps):
            share = lambda total: total * (step + 1) // steps - total * step // steps
            state = (state ^ self.compute(share(python_units))) * 0x100000001B3 & MASK
            if share(native_units):
                state = (state ^ self.compute_released(share(native_units))) * 0x100000001B3 & MASK
        return state

    def describe(self):
        return {
            "unit_ns": self.unit_ns,
            "unit_ns_source": self.source,
            "iterations_per_unit": round(self.iterations_per_unit, 3),
            "ns_per_iteration": round(self.ns_per_iteration, 3),
            "released_bytes_per_unit": round(self.bytes_per_unit, 1),
        }

    def summary(self):
        return (f"one /cpu unit = {self.iterations_per_unit:.1f} Python loop iterations "
                f"({self.ns_per_iteration:.1f} ns each) = {self.unit_ns:.0f} ns, from {self.source}")
