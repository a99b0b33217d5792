import Foundation

/// `loadtest compare`: each mode in turn is started from its config file, measured with every
/// scenario of the suite, and stopped; the results, and any mode that would not start or
/// scenario that failed, go into one record.
public struct Comparison: Codable, Sendable {
    public struct ScenarioInfo: Codable, Sendable {
        public var name, title, question: String
        public var kind: ScenarioKind
        /// Capacity scenarios: the p99 their rates are held to.
        public var slaP99Milliseconds: Double?

        enum CodingKeys: String, CodingKey {
            case name, title, question, kind
            case slaP99Milliseconds = "sla_p99_ms"
        }
    }

    public struct ModeResult: Codable, Sendable {
        /// The mode, or an external target's name.
        public var mode: String
        /// Why the mode could not be measured at all (it did not start).
        public var failure: String?
        public var idleMemory: ServerMemory?
        public var outcomes: [ScenarioOutcome]
        /// Scenario name → why it could not be measured.
        public var scenarioFailures: [String: String]
        /// Set for an external target: what ran, beside which mode, and how it stopped.
        public var external: ExternalRun?

        enum CodingKeys: String, CodingKey {
            case mode, failure, outcomes, external
            case idleMemory = "idle_memory", scenarioFailures = "scenario_failures"
        }

        public func outcome(_ scenario: String) -> ScenarioOutcome? {
            outcomes.first { $0.scenario == scenario }
        }
    }

    public struct ExternalRun: Codable, Sendable {
        public var counterpart: String?
        public var command: String
        /// How it stopped: on SIGTERM and how fast, or killed.
        public var stop: String?
    }

    public var timing: String
    public var cores: Int
    public var scenarios: [ScenarioInfo]
    public var modes: [ModeResult]
    /// The suite's `server:` settings every mode ran with.
    public var serverSettings: [String: String]?

    enum CodingKeys: String, CodingKey {
        case timing, cores, scenarios, modes
        case serverSettings = "server_settings"
    }

    public struct Options: Sendable {
        public var modes: [String]
        public var suite: Suite
        public var full: Bool
        /// The threadbare executable and the directory of its per-mode config files.
        public var binary: String
        public var configDirectory: String
        /// Server logs go here.
        public var logDirectory: URL
        /// Added to every mode's `threadbare serve` command line (`--set KEY=VALUE`).
        public var serverArguments: [String]
        /// Servers that are not Threadbare, each run after its counterpart mode (the rest at
        /// the end), with `targetEnvironment` added to what their commands see.
        public var targets: [ExternalTarget]
        public var targetEnvironment: [String: String]

        public init(modes: [String], suite: Suite, full: Bool, binary: String, configDirectory: String, logDirectory: URL,
                    serverArguments: [String] = [], targets: [ExternalTarget] = [], targetEnvironment: [String: String] = [:]) {
            self.serverArguments = serverArguments
            self.modes = modes
            self.suite = suite
            self.full = full
            self.binary = binary
            self.configDirectory = configDirectory
            self.logDirectory = logDirectory
            self.targets = targets
            self.targetEnvironment = targetEnvironment
        }

        /// Modes and targets in the order they run, in groups that run side by side: each mode
        /// with the targets that are its counterparts, then every other target on its own.
        var runGroups: [[Entrant]] {
            let placed = { (target: ExternalTarget) in target.counterpart.map { modes.contains($0) } ?? false }
            return modes.map { mode in [Entrant.mode(mode)] + targets.filter { $0.counterpart == mode }.map(Entrant.external) }
                + targets.filter { !placed($0) }.map { [Entrant.external($0)] }
        }
    }

    enum Entrant {
        case mode(String)
        case external(ExternalTarget)

        var name: String {
            switch self {
            case .mode(let mode): mode
            case .external(let target): target.name
            }
        }

        /// What an external target's record starts with; nil for a mode.
        var run: ExternalRun? {
            guard case .external(let target) = self else { return nil }
            return ExternalRun(counterpart: target.counterpart, command: target.command)
        }

        func start(_ options: Options, log: URL) throws -> ServerUnderTest {
            switch self {
            case .mode(let mode):
                let config = URL(fileURLWithPath: options.configDirectory).appendingPathComponent("\(mode).yaml").path
                // The suite's settings first, so compare's own --set can override them.
                let settings = options.suite.serverSettings.flatMap { ["--set", "\($0.key)=\($0.value)"] }
                return try ServerUnderTest(mode: mode, binary: options.binary, config: config, arguments: settings + options.serverArguments, log: log)
            case .external(let target):
                // The suite's settings as the environment a reference app reads: cache.preload
                // is CACHE_PRELOAD.
                let settings = Dictionary(options.suite.serverSettings.map { setting in
                    (setting.key.uppercased().replacingOccurrences(of: ".", with: "_"), setting.value)
                }, uniquingKeysWith: { $1 })
                return try ServerUnderTest(external: target, environment: options.targetEnvironment.merging(settings) { $1 }, log: log)
            }
        }
    }

    /// Runs the comparison; `say` hears what is happening, a line at a time.
    public static func run(_ options: Options, say: (String) -> Void) -> Comparison {
        let timing = options.full ? options.suite.full : options.suite.quick
        var results: [ModeResult] = []
        for group in options.runGroups {
            // Started together, so each scenario runs on a mode and then on its counterparts
            // seconds apart: on a shared machine whose speed drifts, a pair is measured alike.
            var running: [(server: ServerUnderTest, result: Int)] = []
            for entrant in group {
                results.append(ModeResult(mode: entrant.name, outcomes: [], scenarioFailures: [:], external: entrant.run))
                do {
                    running.append((try entrant.start(options, log: options.logDirectory.appendingPathComponent("\(entrant.name).log")),
                                    results.count - 1))
                } catch {
                    say("\(entrant.name): \(error)")
                    results[results.count - 1].failure = "\(error)"
                }
            }
            measure(running.map(\.server), into: &results, at: running.map(\.result), scenarios: options.suite.scenarios,
                    timing: timing, say: say)
            for (server, index) in running {
                let stopped = server.stop()
                if results[index].external != nil {
                    results[index].external?.stop = stopped
                    say("\(server.mode): \(stopped)")
                }
            }
        }
        return Comparison(
            timing: options.full ? "full" : "quick", cores: ProcessInfo.processInfo.activeProcessorCount,
            scenarios: options.suite.scenarios.map { entry in
                var sla: Double?
                if case .capacity(_, _, _, let limit) = entry.kind { sla = limit }
                return ScenarioInfo(name: entry.name, title: entry.title, question: entry.question, kind: entry.kind.name, slaP99Milliseconds: sla)
            },
            modes: results,
            serverSettings: options.suite.serverSettings.isEmpty ? nil
                : Dictionary(options.suite.serverSettings.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 }))
    }

    /// Every scenario against started servers, their idle memory first: each scenario on each
    /// server in turn. `indices` are the servers' places in `results`.
    private static func measure(_ servers: [ServerUnderTest], into results: inout [ModeResult], at indices: [Int], scenarios: [Suite.Entry],
                                timing: Suite.Timing, say: (String) -> Void) {
        guard !servers.isEmpty else { return }
        // Idle: started and settled, before any load.
        Thread.sleep(forTimeInterval: 0.3)
        var idle: [ServerMemory] = []
        for (server, index) in zip(servers, indices) {
            let memory = server.memory()
            idle.append(memory)
            results[index].idleMemory = memory
            say("\(server.mode): listening on \(server.target.hostHeader), \(memory.processes) process\(memory.processes == 1 ? "" : "es")")
        }
        for entry in scenarios {
            for (position, (server, index)) in zip(servers, indices).enumerated() {
                let name = server.mode
                if let exit = server.exit {
                    // Died during an earlier scenario: nothing after it is measured.
                    results[index].scenarioFailures[entry.name] = "the server \(exit) before this scenario"
                    continue
                }
                server.settle()
                let started = Date()
                do {
                    let outcome = try ScenarioOutcome.measure(entry, on: server, timing: timing, idleMemory: idle[position])
                    results[index].outcomes.append(outcome)
                    let headline = outcome.headlineValue.map { Self.format($0) } ?? "—"
                    say(String(format: "%@: %@ done in %.1fs (%@ %@)", name, entry.name, Date().timeIntervalSince(started), outcome.headline.label, headline))
                } catch {
                    results[index].scenarioFailures[entry.name] = "\(error)"
                    say("\(name): \(entry.name) failed: \(error)")
                }
                // Figures taken while the server was dying are not its figures, and a failure
                // then is the death's.
                if let exit = server.exit {
                    results[index].outcomes.removeAll { $0.scenario == entry.name }
                    results[index].scenarioFailures[entry.name] = "the server \(exit) during this scenario"
                    say("\(name): the server \(exit) during \(entry.name)")
                }
            }
        }
    }

    public func json() -> String {
        Report.encode(self)
    }

    /// Stops the server being measured, if any: for a signal handler when compare is
    /// interrupted, so no server is left listening.
    public static func stopRunningServer() {
        for pid in ServerUnderTest.running.withLock({ $0 }) { kill(pid, SIGTERM) }
    }

    /// A share as it was written: 0, 0.5, 0.9, 1.
    static func share(_ value: Double) -> String {
        String(format: "%g", value)
    }

    /// Three significant figures, and no more decimals than a reader wants.
    static func format(_ value: Double) -> String {
        switch abs(value) {
        case 100...: String(format: "%.0f", value)
        case 10...: String(format: "%.1f", value)
        case 1...: String(format: "%.2f", value)
        default: String(format: "%.3f", value)
        }
    }
}
