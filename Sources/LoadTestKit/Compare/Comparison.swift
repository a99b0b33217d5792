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
        public var mode: String
        /// Why the mode could not be measured at all (it did not start).
        public var failure: String?
        public var idleMemory: ServerMemory?
        public var outcomes: [ScenarioOutcome]
        /// Scenario name → why it could not be measured.
        public var scenarioFailures: [String: String]

        enum CodingKeys: String, CodingKey {
            case mode, failure, outcomes
            case idleMemory = "idle_memory", scenarioFailures = "scenario_failures"
        }

        public func outcome(_ scenario: String) -> ScenarioOutcome? {
            outcomes.first { $0.scenario == scenario }
        }
    }

    public var timing: String
    public var cores: Int
    public var scenarios: [ScenarioInfo]
    public var modes: [ModeResult]

    public struct Options: Sendable {
        public var modes: [String]
        public var suite: Suite
        public var full: Bool
        /// The threadbare executable and the directory of its per-mode config files.
        public var binary: String
        public var configDirectory: String
        /// Server logs go here.
        public var logDirectory: URL

        public init(modes: [String], suite: Suite, full: Bool, binary: String, configDirectory: String, logDirectory: URL) {
            self.modes = modes
            self.suite = suite
            self.full = full
            self.binary = binary
            self.configDirectory = configDirectory
            self.logDirectory = logDirectory
        }
    }

    /// Runs the comparison; `say` hears what is happening, a line at a time.
    public static func run(_ options: Options, say: (String) -> Void) -> Comparison {
        let timing = options.full ? options.suite.full : options.suite.quick
        var results: [ModeResult] = []
        for mode in options.modes {
            var result = ModeResult(mode: mode, outcomes: [], scenarioFailures: [:])
            let config = URL(fileURLWithPath: options.configDirectory).appendingPathComponent("\(mode).yaml").path
            let log = options.logDirectory.appendingPathComponent("\(mode).log")
            let server: ServerUnderTest
            do {
                server = try ServerUnderTest(mode: mode, binary: options.binary, config: config, log: log)
            } catch {
                say("\(mode): \(error)")
                result.failure = "\(error)"
                results.append(result)
                continue
            }
            // Idle: started and settled, before any load.
            Thread.sleep(forTimeInterval: 0.3)
            let idle = server.memory()
            result.idleMemory = idle
            say("\(mode): listening on \(server.target.hostHeader), \(idle.processes) process\(idle.processes == 1 ? "" : "es")")
            for entry in options.suite.scenarios {
                if let exit = server.exit {
                    // Died during an earlier scenario: nothing after it is measured.
                    result.scenarioFailures[entry.name] = "the server \(exit) before this scenario"
                    continue
                }
                server.settle()
                let started = Date()
                do {
                    let outcome = try ScenarioOutcome.measure(entry, on: server, timing: timing, idleMemory: idle)
                    result.outcomes.append(outcome)
                    let headline = outcome.headlineValue.map { Self.format($0) } ?? "—"
                    say(String(format: "%@: %@ done in %.1fs (%@ %@)", mode, entry.name, Date().timeIntervalSince(started), outcome.headline.label, headline))
                } catch {
                    result.scenarioFailures[entry.name] = "\(error)"
                    say("\(mode): \(entry.name) failed: \(error)")
                }
                // Figures taken while the server was dying are not its figures, and a failure
                // then is the death's.
                if let exit = server.exit {
                    result.outcomes.removeAll { $0.scenario == entry.name }
                    result.scenarioFailures[entry.name] = "the server \(exit) during this scenario"
                    say("\(mode): the server \(exit) during \(entry.name)")
                }
            }
            server.stop()
            results.append(result)
        }
        return Comparison(
            timing: options.full ? "full" : "quick", cores: ProcessInfo.processInfo.activeProcessorCount,
            scenarios: options.suite.scenarios.map { entry in
                var sla: Double?
                if case .capacity(_, _, _, let limit) = entry.kind { sla = limit }
                return ScenarioInfo(name: entry.name, title: entry.title, question: entry.question, kind: entry.kind.name, slaP99Milliseconds: sla)
            },
            modes: results)
    }

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    /// Stops the server being measured, if any: for a signal handler when compare is
    /// interrupted, so no server is left listening.
    public static func stopRunningServer() {
        if let pid = ServerUnderTest.running.withLock({ $0 }) { kill(pid, SIGTERM) }
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
