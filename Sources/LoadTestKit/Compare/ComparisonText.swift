import Foundation

/// The comparison as a reader takes it in: per scenario, a table of every mode's figures with
/// its headline's ratio to the best mode's, and one sentence naming the winner and why, built
/// from the same numbers.
extension Comparison {
    public func text() -> String {
        var blocks: [String] = []
        for scenario in scenarios {
            var lines = ["## \(scenario.title)" + (scenario.question.isEmpty ? "" : " — \(scenario.question)")]
            lines.append(contentsOf: table(scenario))
            if let sentence = verdict(scenario) { lines.append(sentence) }
            lines.append(contentsOf: memoryNotes(scenario))
            lines.append(contentsOf: amdahlNote(scenario))
            blocks.append(lines.joined(separator: "\n"))
        }
        let pairs = counterparts()
        if !pairs.isEmpty { blocks.append(pairs.joined(separator: "\n")) }
        let stops = modes.compactMap { mode in mode.external?.stop.map { "\(mode.mode) \($0)." } }
        if !stops.isEmpty { blocks.append(stops.joined(separator: "\n")) }
        let missing = modes.filter { $0.failure != nil }
        if !missing.isEmpty {
            blocks.append(missing.map { "\($0.mode) was not measured: \($0.failure!)" }.joined(separator: "\n"))
        }
        return blocks.joined(separator: "\n\n")
    }

    /// Each external target beside its counterpart mode: every scenario's headline for both
    /// and their ratio, mode over target (1.00 is a faithful model).
    func counterparts() -> [String] {
        var cells: [[String]] = [["scenario", "figure", "mode", "value", "counterpart", "value", "mode / counterpart"]]
        for target in modes {
            guard let counterpart = target.external?.counterpart, let mode = modes.first(where: { $0.mode == counterpart }) else { continue }
            for scenario in scenarios {
                guard let ours = mode.outcome(scenario.name), let theirs = target.outcome(scenario.name) else { continue }
                let f = { (value: Double?) in value.map { Self.format($0) } ?? "—" }
                let ratio = ours.headlineValue.flatMap { value in theirs.headlineValue.map { $0 == 0 ? "—" : String(format: "%.2f", value / $0) } } ?? "—"
                let unit = ours.headline.unit.isEmpty || ours.headline.label.contains(ours.headline.unit) ? "" : " \(ours.headline.unit)"
                cells.append([scenario.name, ours.headline.label + unit, mode.mode, f(ours.headlineValue), target.mode, f(theirs.headlineValue), ratio])
            }
        }
        guard cells.count > 1 else { return [] }
        return ["## Against their counterparts — does each mode behave like the server it models?"]
            + Self.aligned(cells, leftAligned: [0, 1, 2, 4])
    }

    /// The modes that measured `scenario`, with their outcomes.
    func measured(_ scenario: String) -> [(mode: String, outcome: ScenarioOutcome)] {
        modes.compactMap { mode in mode.outcome(scenario).map { (mode.mode, $0) } }
    }

    /// The modes with a headline value for `scenario`, best first.
    func ranked(_ scenario: String) -> [(mode: String, outcome: ScenarioOutcome, value: Double)] {
        let entries = measured(scenario).compactMap { entry in entry.outcome.headlineValue.map { (entry.mode, entry.outcome, $0) } }
        guard let higher = entries.first?.1.higherIsBetter else { return [] }
        // Stable, so of equal values the mode run first stays first.
        return entries.enumerated().sorted { left, right in
            left.element.2 == right.element.2 ? left.offset < right.offset
                : (higher ? left.element.2 > right.element.2 : left.element.2 < right.element.2)
        }.map(\.element)
    }

    func best(_ scenario: String) -> (mode: String, outcome: ScenarioOutcome, value: Double)? {
        ranked(scenario).first
    }

    func worst(_ scenario: String) -> (mode: String, outcome: ScenarioOutcome, value: Double)? {
        // Of equal worst values, the first run, as min/max would pick.
        let all = ranked(scenario)
        return all.first { $0.value == all.last?.value }
    }

    /// A mode's headline as a multiple of the best mode's, for the tables' last column.
    func ratioToBest(_ outcome: ScenarioOutcome, in scenario: String) -> String {
        guard let best = best(scenario)?.value, best != 0, let value = outcome.headlineValue else { return "—" }
        return String(format: "%.2f×", value / best)
    }

    private func table(_ scenario: ScenarioInfo) -> [String] {
        let rows = measured(scenario.name)
        guard let first = rows.first?.outcome else {
            return ["(no mode measured this)"] + failures(scenario)
        }
        let headers = ["mode"] + first.figures.map { $0.namesItsUnit ? $0.label : "\($0.label) \($0.unit)" } + ["vs best"]
        var cells: [[String]] = [headers]
        for (mode, outcome) in rows {
            cells.append([mode] + outcome.figures.map(\.cell) + [ratioToBest(outcome, in: scenario.name)])
        }
        return Self.aligned(cells, leftAligned: [0]) + failures(scenario)
    }

    /// Rows of cells as text columns: the header, a rule under it, then the rows. Columns in
    /// `leftAligned` hold names; the others hold figures and are aligned right.
    static func aligned(_ cells: [[String]], leftAligned: Set<Int>) -> [String] {
        let widths = cells[0].indices.map { column in cells.map { $0[column].count }.max() ?? 0 }
        let rendered = cells.map { row in
            row.enumerated().map { column, cell in
                leftAligned.contains(column) ? cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[column] - cell.count) + cell
            }.joined(separator: "  ")
        }
        return [rendered[0], String(repeating: "-", count: rendered[0].count)] + rendered.dropFirst()
    }

    /// Memory per process, for the modes with more than one.
    func memoryNotes(_ scenario: ScenarioInfo) -> [String] {
        guard scenario.kind == .memory else { return [] }
        return measured(scenario.name).compactMap { mode, outcome in outcome.note.map { "\(mode): \($0)" } }
    }

    /// What Amdahl's law allows each share of native work, for the native scenario.
    func amdahlNote(_ scenario: ScenarioInfo) -> [String] {
        guard scenario.kind == .native, let outcome = measured(scenario.name).first?.outcome,
              case .nativeSpeedup(_, let connections) = outcome.headline else { return [] }
        let cores = min(connections, self.cores)
        let allowed = outcome.figures.compactMap { figure -> String? in
            guard case .nativeSpeedup(let percent, _) = figure.measure else { return nil }
            return "\(Self.format(ScenarioOutcome.amdahl(native: Double(percent) / 100, cores: cores)))× at native \(Self.share(Double(percent) / 100))"
        }
        return ["Amdahl's law, 1/((1 − F) + F/\(cores)) for \(connections) connections on \(self.cores) cores, allows "
                + allowed.joined(separator: ", ") + "; the lock's own cost comes on top."]
    }

    /// How many processes `mode` ran as, from its idle memory.
    func processCount(_ mode: String) -> Int {
        modes.first { $0.mode == mode }?.idleMemory?.processes ?? 1
    }

    /// The start-up data every mode carried, from the suite's server settings, if any.
    var startupDataMegabytes: Double? {
        guard let settings = serverSettings, let entries = settings["cache.preload"].flatMap(Int.init), entries > 0 else { return nil }
        let bytes = settings["cache.preload_bytes"].flatMap(Int.init) ?? 1024
        return Double(entries * bytes) / 1_048_576
    }

    private func failures(_ scenario: ScenarioInfo) -> [String] {
        modes.compactMap { mode in mode.scenarioFailures[scenario.name].map { "\(mode.mode): failed: \($0)" } }
    }

    /// Why, from the server's own account of a request (Server-Timing means): the wait that
    /// took the largest share, or the work itself when no wait stands out.
    static func whereTimeWent(_ outcome: ScenarioOutcome) -> String {
        let time = outcome.serverTimeMs
        let total = ScenarioOutcome.serverParts.compactMap { time[$0] }.reduce(0, +)
        guard total > 0 else { return "" }
        let share = { (name: String) in 100 * (time[name] ?? 0) / total }
        let waits = [("waiting for the event loop", "loop"), ("queued for a free handler thread", "queue"), ("waiting for the lock", "lock")]
            .filter { share($0.1) >= 20 }.sorted { share($0.1) > share($1.1) }
        guard !waits.isEmpty else {
            return ", and waits little in the server (loop \(format(share("loop")))%, queue \(format(share("queue")))%, lock \(format(share("lock")))%): its limit is the work itself"
        }
        let parts = waits.map { "\(format(share($0.1)))% (mean \(format(time[$0.1]!)) ms) \($0.0)" }
        return ": of its server time per request, " + parts.joined(separator: " and ")
    }

    /// One sentence: who wins this scenario and why, from the figures.
    func verdict(_ scenario: ScenarioInfo) -> String? {
        guard let best = best(scenario.name), let worst = worst(scenario.name) else { return nil }
        let f = Self.format
        // In the order the modes ran, which is the order ties are named in.
        let scored = measured(scenario.name).filter { $0.outcome.headlineValue != nil }
        if scored.count == 1 { return "Only \(best.mode) was measured: \(best.outcome.headline.label) \(f(best.value))." }
        if best.value == worst.value { return "Every mode measured the same \(best.outcome.headline.label): \(f(best.value))." }
        // Every mode that tied for the best is named with it: within 2% for a measured figure,
        // which is this kind of machine's noise, and within the search's precision for capacity.
        let tolerance = scenario.kind == .capacity ? 0.95 : 0.98
        let leaders = scored.filter { entry in
            let value = entry.outcome.headlineValue!
            return best.outcome.higherIsBetter ? value >= tolerance * best.value : value * tolerance <= best.value
        }.map(\.mode)
        let winner = leaders.count == 1 ? best.mode
            : leaders.dropLast().joined(separator: ", ") + " and " + leaders.last! + " (within \(Int(((1 - tolerance) * 100).rounded()))% of each other)"
        let plural = leaders.count > 1
        // With several winners, the figures quoted are the best one's: say whose.
        let whose = plural ? "\(best.mode) " : ""
        switch scenario.kind {
        case .scaling:
            let steps = best.outcome.throughputByConnections.map(\.connections)
            let least = steps.first ?? 1, most = steps.last ?? 1
            let lockWaits = measured(scenario.name).compactMap { $0.outcome.value(.lockShare(connections: most)) }
            if worst.value >= 0.9 * best.value {
                return "Every mode is within 10% at \(most) connections (\(best.mode) \(f(best.value)) req/s, \(worst.mode) \(f(worst.value)))"
                    + (lockWaits.isEmpty ? "." : "; no mode spends more than \(f(lockWaits.max()!))% of its server time waiting for a lock.")
            }
            let bestScaling = best.outcome.value(.scaling).map { "\(f($0))× its rate at \(least)" } ?? ""
            return "\(winner) \(plural ? "win" : "wins"): \(whose)\(f(best.value)) req/s at \(most) connections, \(bestScaling); \(worst.mode) reaches "
                + "\(worst.outcome.value(.scaling).map { "\(f($0))×" } ?? "—") (\(f(worst.value)) req/s)\(Self.whereTimeWent(worst.outcome))."
        case .convoy:
            let busy = best.outcome.value(.busyThroughput).map { " beside \(f($0)) background requests/s" } ?? ""
            return "\(winner) \(plural ? "answer" : "answers") the quick request in p99 \(whose)\(f(best.value)) ms\(busy); \(worst.mode) takes "
                + "\(f(worst.value)) ms (\(f(worst.value / max(best.value, 0.001)))× longer)\(Self.whereTimeWent(worst.outcome))."
        case .capacity:
            // The note says which criterion the first missed step failed.
            let detail = worst.outcome.note.map { " (\($0))" } ?? ""
            let who = plural ? "\(winner) \(leaders.count == 2 ? "both" : "all") sustain the highest rate" : "\(winner) sustains the highest rate"
            return "\(who) within the SLA, \(f(best.value)) req/s; \(worst.mode) sustains \(f(worst.value)) req/s\(detail)."
        case .memory:
            let processes = { (outcome: ScenarioOutcome) in Int(outcome.value(.processes) ?? 1) }
            let count = { (n: Int) in "\(n) process\(n == 1 ? "" : "es")" }
            return "\(winner) \(plural ? "need" : "needs") the least memory of \(plural ? "their" : "its") own under load (anonymous Pss: heap, stacks, copied pages), "
                + "\(whose)\(f(best.value)) MB over \(count(processes(best.outcome))); "
                + "\(worst.mode) needs \(f(worst.value)) MB (\(f(worst.value / max(best.value, 0.001)))×) over \(count(processes(worst.outcome)))."
                + (startupDataMegabytes.map { " Every mode started with \(f($0)) MB of start-up data, made before the fork under a master: one process's threads share one copy, each subinterpreter builds its own, and a worker whose reads write reference counts copies every page it reads." } ?? "")
        case .native:
            guard case .nativeSpeedup(let percent, let connections) = best.outcome.headline else { return nil }
            let share = Double(percent) / 100
            let allowed = ScenarioOutcome.amdahl(native: share, cores: min(connections, cores))
            return "With \(Self.share(100 * share))% of each request's time in a C extension that lets go of the lock (numpy, hashlib) and the rest in Python, "
                + "\(winner) \(plural ? "scale" : "scales") \(whose)\(f(best.value))× from 1 to \(connections) connections, where Amdahl's law allows \(f(allowed))×; "
                + "\(worst.mode) reaches \(f(worst.value))×\(Self.whereTimeWent(worst.outcome)): "
                + ((worst.outcome.serverTimeMs["loop"] ?? 0) > (worst.outcome.serverTimeMs["lock"] ?? 0)
                    ? "an event loop runs the C code itself, so releasing the lock frees nothing the loop's other requests can use."
                    : "every return to Python must take the lock back.")
        case .hot:
            let model = { (outcome: ScenarioOutcome) in outcome.note?.replacingOccurrences(of: "cache.refcount: ", with: "") ?? "" }
            let why = { (mode: String, outcome: ScenarioOutcome) -> String in
                if processCount(mode) > 1 { return "each worker reads a copy of its own" }
                switch model(outcome) {
                case "atomic": return "each read increments and decrements the object's shared reference count atomically, so the cores pass its cache line back and forth"
                case "plain": return "its reads write the count under the lock, one thread at a time"
                case "immortal": return "the object is immortal, so reads write nothing"
                default: return "cache.refcount \(model(outcome))"
                }
            }
            let scale = { (outcome: ScenarioOutcome) in outcome.value(.scaling).map { "\(f($0))×" } ?? "—" }
            let steps = best.outcome.throughputByConnections.map(\.connections)
            return "Every connection reading one shared object, \(winner) \(plural ? "serve" : "serves") the most, \(whose)\(f(best.value)) req/s at \(steps.last ?? 1) connections, "
                + "\(scale(best.outcome)) its rate at \(steps.first ?? 1) (\(why(best.mode, best.outcome))); \(worst.mode) reaches \(scale(worst.outcome)) "
                + "(\(f(worst.value)) req/s): \(why(worst.mode, worst.outcome))."
        case .cache:
            let hits = { (outcome: ScenarioOutcome) in outcome.value(.hitRatio).map { "\(f($0))% of reads hitting" } ?? "no hit ratio" }
            let apart = processCount(worst.mode) > 1 ? ", its \(processCount(worst.mode) - 1) workers each filling a cache of their own" : ""
            return "\(winner) \(plural ? "serve" : "serves") the most, \(whose)\(f(best.value)) req/s with \(hits(best.outcome)); "
                + "\(worst.mode) manages \(f(worst.value)) req/s with \(hits(worst.outcome))\(apart)\(Self.whereTimeWent(worst.outcome))."
        }
    }
}
