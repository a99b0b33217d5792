#!/usr/bin/env bash
# fidelity.sh - does each mode behave like the CPython server it models?
#
# Runs bench/fidelity.yaml against four modes and their counterparts in one run, with
# loadtest compare and loadtest/python/targets.yaml:
#   gil ↔ gunicorn gthread (1 worker × 8 threads)   prefork ↔ gunicorn sync (one worker per core)
#   async ↔ uvicorn (1 worker)                      prefork-async ↔ gunicorn + uvicorn workers
# and the convoy again with the switch interval at 1 ms for gil and gthread
# (switch_interval_ms on Threadbare, sys.setswitchinterval through SWITCH_INTERVAL_MS in the
# reference app). One /cpu unit costs the same CPU time on both sides: compare measures
# Threadbare's with `threadbare cpu-unit` and the reference app calibrates to it.
#
# Prints, per pair: CPU scaling (rate at 4 connections over 1), I/O req/s at 64 connections,
# the convoy's quick p50 and p99 beside 1, 2 and 4 CPU connections, the mixed SLA capacity and
# memory per process; Threadbare's figure, CPython's, and their ratio. The goal is every ratio
# within 0.75–1.33; README "Against real CPython" says why the ones outside are.
#
# Sets up its own virtual environment (make python-venv). About 7 minutes on 2 cores.
# Usage: bench/fidelity.sh     env: LENGTH (quick | full, default quick), OUT (default
# .build/fidelity), BEFORE (a results directory of an earlier run, printed beside this one)
BENCH=fidelity
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "$BENCH: $*" >&2; exit 1; }
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
RELEASE=(-c release --static-swift-stdlib)
LENGTH=${LENGTH:-quick}
OUT=${OUT:-.build/fidelity}
[[ $LENGTH == quick || $LENGTH == full ]] || die "LENGTH must be quick or full, got '$LENGTH'"

make -s python-venv || die "could not set up the Python virtual environment"
"$SWIFT" build "${RELEASE[@]}" --product threadbare >/dev/null || die "swift build failed"
"$SWIFT" build "${RELEASE[@]}" --product loadtest >/dev/null || die "swift build failed"
BIN=$("$SWIFT" build "${RELEASE[@]}" --show-bin-path)
mkdir -p "$OUT"

echo "machine: $(nproc) cores, $(uname -m); $(.build/python/bin/python --version), $(.build/python/bin/python -c "import gunicorn, uvicorn; print('gunicorn', gunicorn.__version__ + ', uvicorn', uvicorn.__version__)")"
unit=$("$BIN/threadbare" cpu-unit)
echo "one /cpu unit: $unit ns (threadbare cpu-unit), passed to the reference app as CPU_UNIT_NS"
export CPU_UNIT_NS=$unit

started=$SECONDS
# Exit status 1 means something was not measured; the table says what, so go on.
CPU_UNIT_NS=$unit "$BIN/loadtest" compare "--$LENGTH" --suite bench/fidelity.yaml --modes gil,prefork,async,prefork-async \
    --targets loadtest/python/targets.yaml --out "$OUT/switch-5ms" >"$OUT/switch-5ms.txt" 2>"$OUT/switch-5ms.log" || true
SWITCH_INTERVAL_MS=1 "$BIN/loadtest" compare "--$LENGTH" --suite bench/fidelity.yaml --scenarios convoy-1,convoy-2,convoy-4 \
    --modes gil --set switch_interval_ms=1 --targets loadtest/python/targets.yaml \
    --out "$OUT/switch-1ms" >"$OUT/switch-1ms.txt" 2>"$OUT/switch-1ms.log" || true
echo "measured in $((SECONDS - started)) s; compare's own tables: $OUT/switch-5ms.txt, $OUT/switch-1ms.txt"
echo

python3 - "$OUT" "${BEFORE:-}" <<'EOF'
import json, os, sys

out, before = sys.argv[1], sys.argv[2]
PAIRS = [("gil", "gunicorn-gthread"), ("prefork", "gunicorn-sync"), ("async", "uvicorn"), ("prefork-async", "gunicorn-uvicorn")]

def load(directory, run):
    path = os.path.join(directory, run, "compare.json")
    if not os.path.exists(path):
        return {}
    return {mode["mode"]: mode for mode in json.load(open(path))["modes"]}

def figure(modes, name, scenario, measure):
    mode = modes.get(name)
    if mode is None:
        return None
    for outcome in mode["outcomes"]:
        if outcome["scenario"] == scenario:
            for entry in outcome["figures"]:
                if entry["measure"] == measure:
                    return entry.get("value")
    return None

def per_process(modes, name):
    memory = figure(modes, name, "memory", {"loadedOwn": {}})
    processes = figure(modes, name, "memory", {"processes": {}})
    return memory / processes if memory is not None and processes else None

def scaling(modes, name):
    one = figure(modes, name, "cpu", {"throughput": {"connections": 1}})
    four = figure(modes, name, "cpu", {"throughput": {"connections": 4}})
    return four / one if one and four is not None else None

def rows(directory):
    five, one = load(directory, "switch-5ms"), load(directory, "switch-1ms")
    table = []
    for mode, target in PAIRS:
        measures = [("CPU scaling 4 / 1 conn", "×", lambda m, n: scaling(m, n), five),
                    ("I/O req/s @64", "req/s", lambda m, n: figure(m, n, "io", {"throughput": {"connections": 64}}), five)]
        for run, label in ((five, "5 ms"), (one, "1 ms")):
            if mode != "gil" and run is one:
                continue
            for cpu in (1, 2, 4):
                for measure, name in (({"quickP50": {}}, "p50"), ({"quickP99": {}}, "p99")):
                    measures.append((f"convoy {cpu} CPU, {name}, switch {label}", "ms",
                                     lambda m, n, s=f"convoy-{cpu}", x=measure: figure(m, n, s, x), run))
        measures += [("mixed: sustained at p99 ≤ 50 ms", "req/s", lambda m, n: figure(m, n, "mixed", {"sustained": {}}), five),
                     ("memory per process, own MB", "MB", per_process, five)]
        for label, unit, read, run in measures:
            table.append((mode, target, label, unit, read(run, mode), read(run, target)))
    return table

def cell(value):
    if value is None:
        return "—"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"

def ratio(ours, theirs):
    return ours / theirs if ours is not None and theirs else None

now = rows(out)
earlier = {(r[0], r[2]): r for r in rows(before)} if before else {}
header = ["pair", "figure", "Threadbare", "CPython", "ratio", "in 0.75–1.33"]
if earlier:
    header.insert(4, "ratio before")
lines = [header]
for mode, target, label, unit, ours, theirs in now:
    value = ratio(ours, theirs)
    row = [f"{mode} ↔ {target}", f"{label}", cell(ours), cell(theirs), cell(value),
           "—" if value is None else ("yes" if 0.75 <= value <= 1.33 else "NO")]
    if earlier:
        old = earlier.get((mode, label))
        row.insert(4, cell(ratio(old[4], old[5])) if old else "—")
    lines.append(row)
widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
for index, line in enumerate(lines):
    print("  ".join(text.ljust(widths[i]) if i < 2 else text.rjust(widths[i]) for i, text in enumerate(line)))
    if index == 0:
        print("-" * (sum(widths) + 2 * (len(widths) - 1)))
inside = sum(1 for r in now if (v := ratio(r[4], r[5])) is not None and 0.75 <= v <= 1.33)
measured = sum(1 for r in now if ratio(r[4], r[5]) is not None)
print(f"\n{inside} of {measured} ratios within 0.75–1.33 (ratio: Threadbare over CPython).")
EOF
