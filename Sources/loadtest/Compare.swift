import ArgumentParser
import Foundation
import LoadTestKit

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start threadbare in each mode in turn, run the suite against it, and compare the modes side by side.")

    static let knownModes = ["gil", "subinterpreters", "prefork", "nogil", "async", "prefork-async", "nogil-async"]
    /// Every mode but nogil-async: the four threading models and the two asyncio deployments.
    static let defaultModes = ["gil", "subinterpreters", "prefork", "nogil", "async", "prefork-async"]

    @Option(help: "Modes to compare, in order (each is started from CONFIG-DIR/MODE.yaml); known: \(knownModes.joined(separator: ", ")).")
    var modes = defaultModes.joined(separator: ",")
    @Option(help: "The suite file.") var suite = "loadtest/suite.yaml"
    @Option(help: "Scenarios of the suite to run (default: all), e.g. cpu,convoy.") var scenarios: String?
    @Option(help: "Where index.html (the report), compare.json, the .hgrm distributions and the servers' logs go.") var out = "report"
    @Flag(help: "quick: the suite's short timings (make demo); full: its longer, steadier ones.") var length: Length = .quick
    @Option(help: "The threadbare executable (default: the one beside this loadtest).") var threadbare: String?
    @Option(help: "The directory of the per-mode config files.") var configDir = "config"
    @Option(help: "Run nothing: print the tables and write the page again from a compare.json.") var from: String?
    @Option(help: ArgumentHelp("A target file: servers that are not Threadbare, each started from its command and run beside its counterpart mode, if that mode is among --modes (loadtest/python/targets.yaml: the CPython counterparts). May be given more than once.", valueName: "file"))
    var targets: [String] = []
    @Option(name: .customLong("set"), help: ArgumentHelp("Passed to every mode's threadbare serve, e.g. --set switch_interval_ms=1.", valueName: "key=value"))
    var assignments: [String] = []

    enum Length: String, EnumerableFlag {
        case quick, full
    }

    func validate() throws {
        let chosen = modes.split(separator: ",").map(String.init)
        guard !chosen.isEmpty else { throw ValidationError("--modes: name at least one of \(Self.knownModes.joined(separator: ", "))") }
        for mode in chosen where !Self.knownModes.contains(mode) {
            throw ValidationError("--modes: unknown mode '\(mode)'; known: \(Self.knownModes.joined(separator: ", "))")
        }
        guard Set(chosen).count == chosen.count else { throw ValidationError("--modes: a mode is named twice") }
    }

    func run() throws {
        if let from {
            guard let data = FileManager.default.contents(atPath: from) else { throw ValidationError("--from: cannot read \(from)") }
            let comparison: Comparison
            do { comparison = try JSONDecoder().decode(Comparison.self, from: data) } catch {
                throw ValidationError("--from: \(from) is not compare's JSON: \(error)")
            }
            return try publish(comparison, in: URL(fileURLWithPath: out), logs: nil)
        }
        var loaded: Suite
        do { loaded = try Suite.load(path: suite) } catch { throw ValidationError("\(error)") }
        if let scenarios {
            let wanted = scenarios.split(separator: ",").map(String.init)
            guard !wanted.isEmpty else { throw ValidationError("--scenarios: name at least one scenario of the suite") }
            for name in wanted where !loaded.scenarios.contains(where: { $0.name == name }) {
                throw ValidationError("--scenarios: the suite has no '\(name)'; it has \(loaded.scenarios.map(\.name).joined(separator: ", "))")
            }
            loaded.scenarios = loaded.scenarios.filter { wanted.contains($0.name) }
        }
        let binary = threadbare ?? Bundle.main.executableURL!.deletingLastPathComponent().appendingPathComponent("threadbare").path
        var externals: [ExternalTarget] = []
        if !targets.isEmpty {
            for file in targets {
                do { externals += try ExternalTarget.load(path: file) } catch { throw ValidationError("--targets: \(error)") }
            }
            for (index, target) in externals.enumerated() where externals[..<index].contains(where: { $0.name == target.name }) {
                throw ValidationError("--targets: two targets are named '\(target.name)'")
            }
            let modeNames = modes.split(separator: ",").map(String.init)
            for target in externals where modeNames.contains(target.name) || Self.knownModes.contains(target.name) {
                throw ValidationError("--targets: target '\(target.name)' has a mode's name; name it after what it runs")
            }
            for target in externals {
                if let counterpart = target.counterpart, !Self.knownModes.contains(counterpart) {
                    throw ValidationError("--targets: target '\(target.name)': counterpart '\(counterpart)' is not a mode; known: \(Self.knownModes.joined(separator: ", "))")
                }
            }
            // A target comes with its counterpart: --modes gil brings gil's, not prefork's.
            let (kept, left) = (externals.filter { $0.counterpart.map(modeNames.contains) ?? true },
                                externals.filter { !($0.counterpart.map(modeNames.contains) ?? true) })
            for target in left {
                FileHandle.standardError.write(Data("leaving out \(target.name): its counterpart \(target.counterpart!) is not among --modes\n".utf8))
            }
            externals = kept
        }
        for assignment in assignments where !assignment.contains("=") {
            throw ValidationError("--set \(assignment): expected key=value")
        }
        let outDirectory = URL(fileURLWithPath: out)
        let logs = outDirectory.appendingPathComponent("logs")
        do {
            try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        } catch {
            throw ValidationError("--out: cannot create \(logs.path): \(error.localizedDescription)")
        }
        let options = Comparison.Options(modes: modes.split(separator: ",").map(String.init), suite: loaded, full: length == .full,
                                         binary: binary, configDirectory: configDir, logDirectory: logs,
                                         serverArguments: assignments.flatMap { ["--set", $0] },
                                         targets: externals, targetEnvironment: externals.isEmpty ? [:] : unitEnvironment(binary))
        // Ctrl-C or TERM: stop the server being measured (it is in a process group of its own
        // and would not hear it), then leave as an interrupted program does.
        var stoppers: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                Comparison.stopRunningServer()
                Foundation.exit(128 + number)
            }
            source.resume()
            stoppers.append(source)
        }
        defer { stoppers.forEach { $0.cancel() } }
        let started = Date()
        let comparison = Comparison.run(options) { line in
            FileHandle.standardError.write(Data(String(format: "[%5.1fs] %@\n", Date().timeIntervalSince(started), line).utf8))
        }
        try publish(comparison, in: outDirectory, logs: logs)
        try writeDistributions(comparison, in: outDirectory.appendingPathComponent("hgrm"))
        // Every mode and scenario reported above; a script still learns that one was missing.
        if comparison.modes.contains(where: { $0.failure != nil || !$0.scenarioFailures.isEmpty }) { throw ExitCode(1) }
    }

    /// CPU_UNIT_NS for the targets: what one /cpu unit costs Threadbare here, so a
    /// reference app can make its own unit cost the same. Kept if already set.
    private func unitEnvironment(_ binary: String) -> [String: String] {
        if let given = ProcessInfo.processInfo.environment["CPU_UNIT_NS"] {
            FileHandle.standardError.write(Data("one /cpu unit: \(given) ns (CPU_UNIT_NS)\n".utf8))
            return [:]
        }
        let measuring = Process(), output = Pipe()
        measuring.executableURL = URL(fileURLWithPath: binary)
        measuring.arguments = ["cpu-unit"]
        measuring.standardOutput = output
        guard (try? measuring.run()) != nil else {
            FileHandle.standardError.write(Data("cannot run \(binary) cpu-unit: targets calibrate to their own default unit\n".utf8))
            return [:]
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        measuring.waitUntilExit()
        guard measuring.terminationStatus == 0, let nanoseconds = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            FileHandle.standardError.write(Data("\(binary) cpu-unit failed: targets calibrate to their own default unit\n".utf8))
            return [:]
        }
        FileHandle.standardError.write(Data("one /cpu unit: \(nanoseconds) ns on this machine (threadbare cpu-unit), passed to the targets as CPU_UNIT_NS\n".utf8))
        return ["CPU_UNIT_NS": String(nanoseconds)]
    }

    /// Every load run's latency distribution, as MODE-SCENARIO-N-LOAD.hgrm (LOAD: c8 for 8
    /// connections, 500rps for an open-model rate), for HdrHistogram's plotter.
    private func writeDistributions(_ comparison: Comparison, in directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for mode in comparison.modes {
            for outcome in mode.outcomes {
                for (index, report) in outcome.reports.enumerated() {
                    guard let distribution = report.distribution else { continue }
                    let load = report.rate.map { "\(Int($0))rps" } ?? "c\(report.connections)"
                    let file = directory.appendingPathComponent("\(mode.mode)-\(outcome.scenario)-\(index + 1)-\(load).hgrm")
                    guard FileManager.default.createFile(atPath: file.path, contents: Data(distribution.utf8)) else {
                        throw ValidationError("--out: cannot write \(file.path)")
                    }
                }
            }
        }
    }

    /// The tables on stdout; compare.json and index.html in `directory`.
    private func publish(_ comparison: Comparison, in directory: URL, logs: URL?) throws {
        print(comparison.text())
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let json = directory.appendingPathComponent("compare.json"), page = directory.appendingPathComponent("index.html")
        for (file, text) in [(json, comparison.json()), (page, comparison.page())] {
            guard FileManager.default.createFile(atPath: file.path, contents: Data(text.utf8)) else {
                throw ValidationError("--out: cannot write \(file.path)")
            }
        }
        print("\nreport: \(page.path) (open it in a browser); raw results: \(json.path)" + (logs.map { "; server logs: \($0.path)/" } ?? ""))
    }
}
