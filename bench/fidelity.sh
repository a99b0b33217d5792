#!/usr/bin/env bash
# fidelity.sh - does each mode behave like the CPython server it models?
#
# Runs bench/fidelity.yaml against four modes and their counterparts, with loadtest compare and
# loadtest/python/targets.yaml:
#   gil ↔ gunicorn gthread (1 worker × 8 threads)   prefork ↔ gunicorn sync (one worker per core)
#   async ↔ uvicorn (1 worker)                      prefork-async ↔ gunicorn + uvicorn workers
# then the three convoys again with the switch interval at 1 ms for gil and gthread
# (THREADBARE_SWITCH_INTERVAL_MS, and sys.setswitchinterval through SWITCH_INTERVAL_MS in the
# reference app).
#
# One /cpu unit costs the same CPU time on both sides: `threadbare cpu-unit` measures
# Threadbare's and the reference app calibrates to it (CPU_UNIT_NS). The suite is written in
# units of 1 µs; it is rescaled to this machine's unit, so work=5000 is 5 ms of CPU here too.
#
# A mode and its counterpart run side by side, each scenario on one and then the other, and
# every convoy runs ROUNDS times (the median), because this machine's speed drifts by 2× within
# minutes. gil also runs with `dispatch: direct` (the model before the convoy fix) as a target
# of its own, so the ratios before and after the fix come from the same minutes.
#
# Prints, per pair: the rate of requests with no work at one connection (what the server itself
# costs), CPU scaling (4 connections over 1), I/O req/s at 64 connections, the convoy's quick p50
# and p99 beside 1, 2 and 4 CPU connections, the mixed SLA capacity and memory per process;
# Threadbare's figure, CPython's, and their ratio. The goal is every ratio within 0.75–1.33;
# README "Against real CPython" says why the others are not.
#
# Sets up its own virtual environment (make python-venv). About 8 minutes on 2 cores.
# Usage: bench/fidelity.sh     env: ROUNDS (convoy repetitions, default 2), OUT (default
# .build/fidelity)
BENCH=fidelity
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "$BENCH: $*" >&2; exit 1; }
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
RELEASE=(-c release --static-swift-stdlib)
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-.build/fidelity}
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || die "ROUNDS must be 1 to 99, got '$ROUNDS'"

make -s python-venv || die "could not set up the Python virtual environment"
"$SWIFT" build "${RELEASE[@]}" --product threadbare >/dev/null || die "swift build failed"
"$SWIFT" build "${RELEASE[@]}" --product loadtest >/dev/null || die "swift build failed"
BIN=$("$SWIFT" build "${RELEASE[@]}" --show-bin-path)
rm -rf "$OUT"
mkdir -p "$OUT"

echo "machine: $(nproc) cores, $(uname -m); $(.build/python/bin/python --version), $(.build/python/bin/python -c "import gunicorn, uvicorn; print('gunicorn', gunicorn.__version__ + ', uvicorn', uvicorn.__version__)")"
unit=$("$BIN/threadbare" cpu-unit)
echo "one /cpu unit: $unit ns (threadbare cpu-unit), passed to the reference app as CPU_UNIT_NS"
# compare passes it on rather than measuring again, so the suite and the targets use one figure.
export CPU_UNIT_NS=$unit

# The suite at this machine's unit, with its convoys repeated.
python3 - "$unit" "$ROUNDS" bench/fidelity.yaml >"$OUT/suite.yaml" <<'EOF'
import re, sys
unit, rounds, path = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
text = open(path).read()
text = re.sub(r"\b(work|compute)=(\d+)", lambda m: f"{m.group(1)}={round(int(m.group(2)) * 1000 / unit) if int(m.group(2)) else 0}", text)
head, _, rest = text.partition("\nscenarios:\n")
blocks = re.split(r"\n(?=  - name: )", "\n" + rest)
out = []
for block in filter(str.strip, blocks):
    found = re.search(r"- name: (\S+)", block)
    name = found.group(1) if found else ""
    if name.startswith("convoy-"):
        out += [block.replace(f"- name: {name}", f"- name: {name}-r{r}", 1) for r in range(1, rounds + 1)]
    else:
        out.append(block)
print(head + "\nscenarios:\n" + "\n".join(b.strip("\n") for b in out))
EOF
cat >"$OUT/before.yaml" <<EOF
# gil as it was before the convoy fix: requests handed to the handler threads by the loop.
targets:
  - name: gil-direct
    counterpart: gil
    command: $BIN/threadbare serve --config config/gil.yaml --set dispatch=direct --host 127.0.0.1 --port {port}
    ready_path: /health
EOF

started=$SECONDS
# Exit status 1 means something was not measured; the tables say what, so go on.
"$BIN/loadtest" compare --quick --suite "$OUT/suite.yaml" --modes gil,prefork,async,prefork-async \
    --targets loadtest/python/targets.yaml --targets "$OUT/before.yaml" \
    --out "$OUT/switch-5ms" >"$OUT/switch-5ms.txt" 2>"$OUT/switch-5ms.log" || true
convoys=$(grep -o 'name: convoy-[0-9]*-r[0-9]*' "$OUT/suite.yaml" | sed 's/name: //' | paste -sd, -)
THREADBARE_SWITCH_INTERVAL_MS=1 SWITCH_INTERVAL_MS=1 "$BIN/loadtest" compare --quick --suite "$OUT/suite.yaml" \
    --scenarios "$convoys" --modes gil --targets loadtest/python/targets.yaml --targets "$OUT/before.yaml" \
    --out "$OUT/switch-1ms" >"$OUT/switch-1ms.txt" 2>"$OUT/switch-1ms.log" || true
echo "measured in $((SECONDS - started)) s; compare's own tables: $OUT/switch-5ms.txt, $OUT/switch-1ms.txt"
echo

python3 - "$OUT" <<'EOF'
import json, os, statistics, sys

out = sys.argv[1]
PAIRS = [("gil", "gunicorn-gthread"), ("prefork", "gunicorn-sync"), ("async", "uvicorn"), ("prefork-async", "gunicorn-uvicorn")]
BEFORE = {"gil": "gil-direct"}

def load(run):
    path = os.path.join(out, run, "compare.json")
    return {mode["mode"]: mode for mode in json.load(open(path))["modes"]} if os.path.exists(path) else {}

def figure(modes, name, scenario, measure):
    """The figure, or the median over a scenario's rounds (scenario-r1, scenario-r2, ...)."""
    values = [entry.get("value") for outcome in modes.get(name, {}).get("outcomes", [])
              if outcome["scenario"] == scenario or outcome["scenario"].startswith(scenario + "-r")
              for entry in outcome["figures"] if entry["measure"] == measure]
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None

def per_process(modes, name):
    memory, processes = figure(modes, name, "memory", {"loadedOwn": {}}), figure(modes, name, "memory", {"processes": {}})
    return memory / processes if memory is not None and processes else None

def scaling(modes, name):
    one, four = figure(modes, name, "cpu", {"throughput": {"connections": 1}}), figure(modes, name, "cpu", {"throughput": {"connections": 4}})
    return four / one if one and four is not None else None

five, one = load("switch-5ms"), load("switch-1ms")
rows = []
for mode, target in PAIRS:
    measures = [("no work: req/s at 1 conn", lambda m, n: figure(m, n, "bare", {"throughput": {"connections": 1}}), five),
                ("CPU scaling 4 / 1 conn", scaling, five),
                ("I/O req/s @64", lambda m, n: figure(m, n, "io", {"throughput": {"connections": 64}}), five)]
    for run, label in ((five, "5 ms"), (one, "1 ms")):
        if run is one and mode != "gil":
            continue
        for cpu in (1, 2, 4):
            for measure, name in (({"quickP50": {}}, "p50"), ({"quickP99": {}}, "p99")):
                measures.append((f"convoy {cpu} CPU, {name}, switch {label}",
                                 lambda m, n, s=f"convoy-{cpu}", x=measure: figure(m, n, s, x), run))
    measures += [("mixed: sustained at p99 ≤ 50 ms", lambda m, n: figure(m, n, "mixed", {"sustained": {}}), five),
                 ("memory per process, own MB", per_process, five)]
    for label, read, run in measures:
        before = read(run, BEFORE[mode]) if mode in BEFORE else None
        rows.append((mode, target, label, read(run, mode), read(run, target), before))

def cell(value):
    if value is None:
        return "—"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"

def ratio(ours, theirs):
    return ours / theirs if ours is not None and theirs else None

header = ["pair", "figure", "Threadbare", "CPython", "ratio", "in 0.75–1.33", "gil before fix", "ratio before"]
lines = [header]
for mode, target, label, ours, theirs, before in rows:
    value = ratio(ours, theirs)
    lines.append([f"{mode} ↔ {target}", label, cell(ours), cell(theirs), cell(value),
                  "—" if value is None else ("yes" if 0.75 <= value <= 1.33 else "NO"),
                  cell(before) if mode in BEFORE else "", cell(ratio(before, theirs)) if mode in BEFORE else ""])
widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
for index, line in enumerate(lines):
    print("  ".join(text.ljust(widths[i]) if i < 2 else text.rjust(widths[i]) for i, text in enumerate(line)).rstrip())
    if index == 0:
        print("-" * (sum(widths) + 2 * (len(widths) - 1)))
measured = [ratio(r[3], r[4]) for r in rows if ratio(r[3], r[4]) is not None]
inside = sum(1 for value in measured if 0.75 <= value <= 1.33)
print(f"\n{inside} of {len(measured)} ratios within 0.75–1.33 (ratio: Threadbare over CPython; convoys: the median of their rounds).")
gil = [(ratio(r[3], r[4]), ratio(r[5], r[4])) for r in rows if r[0] == "gil" and r[2].startswith("convoy")]
gil = [(after, before) for after, before in gil if after is not None and before is not None]
if gil:
    print(f"gil's convoy ratios within 0.75–1.33: {sum(1 for a, _ in gil if 0.75 <= a <= 1.33)} of {len(gil)} with dispatch: locked, "
          f"{sum(1 for _, b in gil if 0.75 <= b <= 1.33)} of {len(gil)} with dispatch: direct (before the fix), measured side by side.")
EOF
