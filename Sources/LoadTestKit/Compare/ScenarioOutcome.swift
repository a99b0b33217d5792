import Foundation

/// What one suite scenario measured against one mode: a row of figures (the same measures for
/// every mode), the one figure modes are ranked on, and every load run's report.
public struct ScenarioOutcome: Codable, Sendable {
    /// What a figure measures. The tables, sentences and charts ask for measures, never for
    /// labels, and read a measure's connections or rate from the measure itself.
    public enum Measure: Codable, Hashable, Sendable {
        /// 2xx answers per second: at a number of connections, or over the whole load.
        case throughput(connections: Int?)
        case p99(connections: Int?)
        case lockShare(connections: Int)
        case scaling
        case quickP50, quickP99, quickLockWait, quickLoopWait, busyThroughput
        /// The highest rate the search found within the SLA, and the p99 there.
        case sustained, p99AtSustained
        case processes, idleRSS, loadedRSS, idleOwn, loadedOwn
        case hitRatio, entries
        /// Rate at a scenario's connections over the rate at one, with `percent`% of the work native.
        case nativeSpeedup(percent: Int, connections: Int)

        /// The column heading.
        public var label: String {
            switch self {
            case .throughput(let connections?): "req/s @\(connections)"
            case .throughput(nil): "req/s"
            case .p99(let connections?): "p99 @\(connections)"
            case .p99(nil): "p99"
            case .lockShare(let connections): "lock wait @\(connections)"
            case .scaling: "scaling"
            case .quickP50: "quick p50"
            case .quickP99: "quick p99"
            case .quickLockWait: "quick lock wait"
            case .quickLoopWait: "quick loop wait"
            case .busyThroughput: "busy req/s"
            case .sustained: "sustained"
            case .p99AtSustained: "p99 there"
            case .processes: "processes"
            case .idleRSS: "idle RSS"
            case .loadedRSS: "loaded RSS"
            case .idleOwn: "idle own"
            case .loadedOwn: "loaded own"
            case .hitRatio: "hit ratio"
            case .entries: "entries"
            case .nativeSpeedup(let percent, _): "native \(Comparison.share(Double(percent) / 100))"
            }
        }

        public var unit: String {
            switch self {
            case .throughput, .busyThroughput, .sustained: "req/s"
            case .p99, .quickP50, .quickP99, .quickLockWait, .quickLoopWait, .p99AtSustained: "ms"
            case .lockShare, .hitRatio: "%"
            case .scaling, .nativeSpeedup: "×"
            case .idleRSS, .loadedRSS, .idleOwn, .loadedOwn: "MB"
            case .processes, .entries: ""
            }
        }
    }

    public struct Figure: Codable, Sendable {
        public var measure: Measure
        /// nil: not measured (no rate within the SLA, or no Server-Timing to read).
        public var value: Double?

        public init(_ measure: Measure, _ value: Double?) {
            self.measure = measure
            self.value = value
        }

        public var label: String { measure.label }
        public var unit: String { measure.unit }

        /// Whether a heading can leave the unit out: none, a ratio, or the label says it.
        var namesItsUnit: Bool { unit.isEmpty || unit == "×" || label.contains(unit) }

        /// The value as a table shows it: counts whole, "—" when not measured.
        var cell: String { value.map { unit.isEmpty ? String(Int($0)) : Comparison.format($0) } ?? "—" }
    }

    public var scenario: String
    public var figures: [Figure]
    /// The figure modes are ranked on.
    public var headline: Measure
    public var higherIsBetter: Bool
    public var reports: [Report]
    /// Where a request's time went, in mean ms, in the run that explains the outcome (the most
    /// connections, the quick probe, the step that missed the SLA): `loop` waited for the
    /// event loop, `queue` for a handler thread, `lock` waited for, the handler's own `work`,
    /// and the `rest` of the client's latency.
    /// Empty without Server-Timing.
    public var serverTimeMs: [String: Double] = [:]
    /// What a number alone does not say, such as why a capacity step missed the SLA.
    public var note: String?

    enum CodingKeys: String, CodingKey {
        case scenario, figures, headline, reports, note
        case higherIsBetter = "higher_is_better", serverTimeMs = "server_time_ms"
    }

    public func value(_ measure: Measure) -> Double? {
        figures.first { $0.measure == measure }?.value
    }

    public var headlineValue: Double? { value(headline) }

    /// The scaling figures' connection counts and rates, in the order they ran.
    var throughputByConnections: [(connections: Int, value: Double?)] {
        figures.compactMap { figure in
            guard case .throughput(let connections?) = figure.measure else { return nil }
            return (connections, figure.value)
        }
    }

    /// The capacity search's steps, by offered rate, and their p99s.
    var p99ByRate: [(rate: Double, p99: Double)] {
        reports.compactMap { report in report.rate.map { ($0, report.measured.latencyMs.p99) } }.sorted { $0.rate < $1.rate }
    }
}

extension ScenarioOutcome {
    /// Measures `entry` against `server`: every load from one client thread, which loadtest's
    /// engine can spare on a small machine (a request costs it less CPU than the server).
    static func measure(_ entry: Suite.Entry, on server: ServerUnderTest, timing: Suite.Timing,
                        idleMemory: ServerMemory) throws -> ScenarioOutcome {
        switch entry.kind {
        case .scaling(let endpoint, let connections):
            return try scaling(entry.name, endpoint.on(server), connections: connections, timing: timing)
        case .convoy(let probe, let rate, let probeConnections, let background, let backgroundConnections):
            return try convoy(entry.name, probe: probe.on(server), rate: rate, probeConnections: probeConnections,
                              background: background.on(server), backgroundConnections: backgroundConnections, timing: timing)
        case .capacity(let endpoints, let search, let connections, let sla):
            return try capacity(entry.name, endpoints.map { $0.on(server) }, search: search, connections: connections,
                                slaMilliseconds: sla, timing: timing)
        case .memory(let endpoint, let connections):
            return try memory(entry.name, endpoint.on(server), connections: connections, timing: timing,
                              server: server, idle: idleMemory)
        case .cache(let endpoint, let connections):
            return try cache(entry.name, endpoint.on(server), connections: connections, timing: timing, server: server)
        case .native(let endpoint, let shares, let connections):
            return try native(entry.name, endpoint.on(server), shares: shares, connections: connections, timing: timing)
        case .hot(let endpoint, let connections):
            var outcome = try scaling(entry.name, endpoint.on(server), connections: connections, timing: timing)
            outcome.note = referenceCounting(server).map { "cache.refcount: \($0)" }
            return outcome
        }
    }

    /// What the server's cache reads write (`GET /cache`'s refcount model), if it says.
    private static func referenceCounting(_ server: ServerUnderTest) -> String? {
        guard let body = server.get("/cache"), let stats = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
        return (stats["refcount"] as? [String: Any])?["model"] as? String
    }

    /// Amdahl's law: the speedup on `cores` of work whose share `native` runs in parallel.
    public static func amdahl(native: Double, cores: Int) -> Double {
        1 / ((1 - native) + native / Double(max(1, cores)))
    }

    /// Each share at one connection and at `connections`: the speedup between them. The share
    /// just under 1 is the headline: wholly native work scales with or without a lock.
    private static func native(_ name: String, _ endpoint: Endpoint, shares: [Double], connections: Int,
                               timing: Suite.Timing) throws -> ScenarioOutcome {
        var figures: [Figure] = [], reports: [Report] = []
        var explaining: [String: Double] = [:]
        let headline = shares.last { $0 < 1 } ?? shares[shares.count - 1]
        for share in shares {
            let separator = endpoint.target.pathAndQuery.contains("?") ? "&" : "?"
            var shared = endpoint
            shared.target = try Target(url: "\(endpoint.target.origin)\(endpoint.target.pathAndQuery)\(separator)native=\(Comparison.share(share))")
            shared.name = endpoint.name + "\(separator)native=\(Comparison.share(share))"
            let alone = try load([shared], connections: 1, timing: timing)
            let together = try load([shared], connections: connections, timing: timing)
            reports += [alone, together]
            let first = successRate(alone)
            figures.append(Figure(.nativeSpeedup(percent: Int((share * 100).rounded()), connections: connections), first > 0 ? successRate(together) / first : nil))
            if share == headline { explaining = serverTime(together) }
        }
        return ScenarioOutcome(scenario: name, figures: figures, headline: .nativeSpeedup(percent: Int((headline * 100).rounded()), connections: connections),
                               higherIsBetter: true, reports: reports, serverTimeMs: explaining)
    }

    /// A load's plan: one client thread, a 10 s timeout, and ten intervals a run, so that the
    /// report can draw the run over time.
    private static func stepPlan(_ endpoints: [Endpoint], connections: Int, rate: Double? = nil, timing: Suite.Timing) throws -> LoadPlan {
        var plan = try LoadPlan(endpoints: endpoints, connections: connections, threads: 1, duration: timing.duration,
                                warmup: timing.warmup, timeout: 10)
        plan.rate = rate
        plan.interval = max(0.01, timing.duration / 10)
        return plan
    }

    private static func load(_ endpoints: [Endpoint], connections: Int, rate: Double? = nil, timing: Suite.Timing) throws -> Report {
        let plan = try stepPlan(endpoints, connections: connections, rate: rate, timing: timing)
        let summary = try LoadRun.run(plan)
        guard summary.results.completed > 0 else {
            let errors = summary.results.errors.sorted { $0.value > $1.value }.prefix(3).map { "\($0.key) ×\($0.value)" }
            throw LoadError("no request to \(endpoints.map(\.name).joined(separator: ", ")) was answered"
                            + (errors.isEmpty ? "" : " (\(errors.joined(separator: ", ")))"))
        }
        var report = Report(plan: plan, summary: summary)
        report.distribution = Report.hgrm(summary)
        return report
    }

    /// From Server-Timing's means. Threadbare's `app` is the whole handler time and its `lock`
    /// a part of it, so the handler's own work is app − lock; `loop` and `queue` come before the
    /// handler; the rest is the client's mean latency beyond them (the network, time the
    /// request sat in its socket while the loop was busy, the client).
    static func serverTime(_ report: Report) -> [String: Double] {
        let timing = report.measured.serverTiming.mapValues(\.mean)
        guard let app = timing["app"] else { return [:] }
        let loop = timing["loop"] ?? 0, queue = timing["queue"] ?? 0, lock = min(timing["lock"] ?? 0, app)
        return ["loop": loop, "queue": queue, "lock": lock, "work": app - lock,
                "rest": max(0, report.measured.latencyMs.mean - loop - queue - app)]
    }

    /// The parts of `serverTime` spent in the server, in the order a request meets them.
    static let serverParts = ["loop", "queue", "lock", "work"]

    /// Answers that were 2xx, per second: a server that fails fast must not look fast.
    static func successRate(_ report: Report) -> Double {
        report.measured.rps * Double(report.measured.requests - statusErrors(report)) / Double(max(1, report.measured.requests))
    }

    static func statusErrors(_ report: Report) -> Int {
        report.measured.errors.filter { $0.key.hasPrefix("status_") }.values.reduce(0, +)
    }

    /// The share of the server's time (queue + handler) spent waiting for the lock, in
    /// percent; nil without Server-Timing.
    static func lockShare(_ report: Report) -> Double? {
        let time = serverTime(report)
        guard let lock = time["lock"] else { return nil }
        let total = serverParts.compactMap { time[$0] }.reduce(0, +)
        return total > 0 ? 100 * lock / total : 0
    }

    private static func scaling(_ name: String, _ endpoint: Endpoint, connections: [Int], timing: Suite.Timing) throws -> ScenarioOutcome {
        let reports = try connections.map { try load([endpoint], connections: $0, timing: timing) }
        var figures = zip(connections, reports).map { Figure(.throughput(connections: $0), successRate($1)) }
        let last = reports[reports.count - 1], most = connections[connections.count - 1]
        figures.append(Figure(.p99(connections: most), last.measured.latencyMs.p99))
        figures.append(Figure(.lockShare(connections: most), lockShare(last)))
        let first = successRate(reports[0])
        figures.append(Figure(.scaling, first > 0 ? successRate(last) / first : nil))
        return ScenarioOutcome(scenario: name, figures: figures, headline: .throughput(connections: most), higherIsBetter: true, reports: reports,
                               serverTimeMs: serverTime(last))
    }

    /// The background load connects first, and the probe a moment later; then they run side by
    /// side and end together. The order is fixed because it decides where connections land on a
    /// server whose workers accept from one shared socket: a burst goes to whichever worker wakes
    /// first, and the next connection to one that is not busy computing. Left to a race between
    /// the two load threads, the same server put the probe beside the computing connections in
    /// one run and apart from them in the next.
    private static func convoy(_ name: String, probe: Endpoint, rate: Double, probeConnections: Int, background: Endpoint,
                               backgroundConnections: Int, timing: Suite.Timing) throws -> ScenarioOutcome {
        let headStart = 0.1
        let backgroundTiming = Suite.Timing(duration: timing.duration + headStart, warmup: timing.warmup)
        let busy = BackgroundLoad { try load([background], connections: backgroundConnections, timing: backgroundTiming) }
        Thread.sleep(forTimeInterval: headStart)
        let quick = try load([probe], connections: probeConnections, rate: rate, timing: timing)
        let behind = try busy.wait()
        let figures = [
            Figure(.quickP50, quick.measured.latencyMs.p50),
            Figure(.quickP99, quick.measured.latencyMs.p99),
            Figure(.quickLockWait, quick.measured.serverTiming["lock"]?.mean),
            Figure(.quickLoopWait, quick.measured.serverTiming["loop"]?.mean),
            Figure(.busyThroughput, successRate(behind)),
        ]
        return ScenarioOutcome(scenario: name, figures: figures, headline: .quickP99, higherIsBetter: false, reports: [quick, behind],
                               serverTimeMs: serverTime(quick))
    }

    /// The highest rate within the SLA (p99 under it, at most 1% errors, and 95% of the requests
    /// due answered in their step), searched for as `loadtest knee` does: doubling from the start,
    /// then bisecting to the suite's precision.
    private static func capacity(_ name: String, _ endpoints: [Endpoint], search settings: CapacitySearch, connections: Int,
                                 slaMilliseconds: Double, timing: Suite.Timing) throws -> ScenarioOutcome {
        let plan = try stepPlan(endpoints, connections: connections, timing: timing)
        let objectives = [try Objective(parsing: "p99<=\(slaMilliseconds)ms"), try Objective(parsing: "errors<=1%")]
        let search = KneeSearch(plan: plan, objectives: objectives, startRate: settings.startRate, highestRate: settings.maxRate,
                                precision: settings.precision)
        var reports: [Report] = []
        let outcome = try search.run(measure: { step in
            let summary = try LoadRun.run(step)
            var report = Report(plan: step, summary: summary)
            report.distribution = Report.hgrm(summary)
            reports.append(report)
            return summary
        })
        let best = reports.first { $0.rate == outcome.maxRate }
        // The step just above the rate found says why the search stopped there.
        let firstMiss = zip(outcome.steps, reports).filter { !$0.0.met && $0.0.rate > (outcome.maxRate ?? 0) }.min { $0.0.rate < $1.0.rate }
        var note: String?
        if let (step, report) = firstMiss {
            var misses: [String] = []
            if report.measured.latencyMs.p99 > slaMilliseconds { misses.append("p99 \(Comparison.format(report.measured.latencyMs.p99)) ms") }
            if let errors = step.slo.last, !errors.met {
                let kinds = report.measured.errors.filter { $0.key != "total" }.sorted { $0.value > $1.value }.prefix(2).map { "\($0.key) ×\($0.value)" }
                misses.append("\(Comparison.format(100 * (errors.measured ?? 0)))% errors (\(kinds.joined(separator: ", ")))")
            }
            if step.keptUp < search.keepUp { misses.append("\(Comparison.format(100 * step.keptUp))% of the requests due answered") }
            note = "at \(Comparison.format(step.rate)) req/s: " + misses.joined(separator: ", ")
        } else if outcome.atCeiling {
            note = "met at the search's ceiling, \(Comparison.format(settings.maxRate)) req/s"
        }
        let figures = [Figure(.sustained, outcome.maxRate ?? 0), Figure(.p99AtSustained, best?.measured.latencyMs.p99)]
        return ScenarioOutcome(scenario: name, figures: figures, headline: .sustained, higherIsBetter: true, reports: reports,
                               serverTimeMs: firstMiss.map { serverTime($0.1) } ?? [:], note: note)
    }

    /// Memory sampled two thirds of the way through the load, when every worker is busy.
    private static func memory(_ name: String, _ endpoint: Endpoint, connections: Int, timing: Suite.Timing,
                               server: ServerUnderTest, idle: ServerMemory) throws -> ScenarioOutcome {
        let running = BackgroundLoad { try load([endpoint], connections: connections, timing: timing) }
        Thread.sleep(forTimeInterval: timing.warmup + timing.duration * 2 / 3)
        let loaded = server.memory()
        let report = try running.wait()
        let megabytes = { (bytes: Int) in Double(bytes) / 1_048_576 }
        let figures = [
            Figure(.processes, Double(loaded.processes)),
            Figure(.idleRSS, megabytes(idle.rssBytes)),
            Figure(.loadedRSS, megabytes(loaded.rssBytes)),
            Figure(.idleOwn, megabytes(idle.anonymousPssBytes)),
            Figure(.loadedOwn, megabytes(loaded.anonymousPssBytes)),
            Figure(.throughput(connections: nil), successRate(report)),
        ]
        let each = loaded.anonymousPssByProcess.map { Comparison.format(megabytes($0)) }
        let note = each.count > 1 ? "own MB under load, per process: \(each[0]) (the master), then \(each.dropFirst().joined(separator: ", "))" : nil
        return ScenarioOutcome(scenario: name, figures: figures, headline: .loadedOwn, higherIsBetter: false, reports: [report], note: note)
    }
}

extension ScenarioOutcome {
    /// Hits and misses from the server's /cache before and after the load (warm-up
    /// included: the cache starts cold in every mode). prefork: the sum over its workers;
    /// subinterpreters: the interpreter that answered, whose share of the reads is like the
    /// others'.
    private static func cache(_ name: String, _ endpoint: Endpoint, connections: Int, timing: Suite.Timing,
                              server: ServerUnderTest) throws -> ScenarioOutcome {
        func counts() throws -> (hits: Int, misses: Int, entries: Int) {
            guard let body = server.get("/cache"), var stats = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
                throw LoadError("the server's /cache did not answer")
            }
            if let total = (stats["workers"] as? [String: Any])?["total"] as? [String: Any] { stats = total }
            return (stats["hits"] as? Int ?? 0, stats["misses"] as? Int ?? 0, stats["entries"] as? Int ?? 0)
        }
        let before = try counts()
        let report = try load([endpoint], connections: connections, timing: timing)
        let after = try counts()
        let hits = after.hits - before.hits, misses = after.misses - before.misses
        let figures = [
            Figure(.hitRatio, hits + misses > 0 ? 100 * Double(hits) / Double(hits + misses) : nil),
            Figure(.throughput(connections: nil), successRate(report)),
            Figure(.p99(connections: nil), report.measured.latencyMs.p99),
            Figure(.entries, Double(after.entries)),
        ]
        return ScenarioOutcome(scenario: name, figures: figures, headline: .throughput(connections: nil), higherIsBetter: true, reports: [report],
                               serverTimeMs: serverTime(report))
    }
}

/// A load run on a thread of its own, beside another.
private final class BackgroundLoad: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var outcome: Result<Report, any Error>?

    init(_ body: @escaping @Sendable () throws -> Report) {
        Thread.detachNewThread { [self] in
            outcome = Result { try body() }
            done.signal()
        }
    }

    func wait() throws -> Report {
        done.wait()
        return try outcome!.get()
    }
}
