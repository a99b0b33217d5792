import ArgumentParser
import Foundation
import LoadTestKit

@main
struct LoadTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadtest",
        abstract: "Measure an HTTP server's throughput and latency, and read its Server-Timing.",
        subcommands: [Run.self, RunScenario.self, Knee.self, Merge.self, Compare.self])

    /// Usage errors (a bad flag, a bad URL, a bad scenario) exit 2, as the rest of
    /// Threadbare's commands do; a missed objective (--slo) exits 1.
    static func main() {
        // A server that closes mid-request must be an error to count, not a signal that ends the run.
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let exit as ExitCode {
            Foundation.exit(exit.rawValue)
        } catch {
            if exitCode(for: error) == .success { self.exit(withError: error) }
            FileHandle.standardError.write(Data(("loadtest: " + fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
    }
}

/// A duration: "10s", "500ms", "2m", or plain seconds.
struct Duration: ExpressibleByArgument {
    let seconds: Double

    init?(argument: String) {
        guard let seconds = Seconds.parse(argument) else { return nil }
        self.seconds = seconds
    }
}

/// A comma-separated list of numbers, one per phase: `-c 1,2,4,8`, `--rate 100,200,400`.
struct Phases<Number: LosslessStringConvertible & Comparable & Sendable>: ExpressibleByArgument, Sendable {
    let values: [Number]

    init?(argument: String) {
        let parsed = argument.split(separator: ",", omittingEmptySubsequences: false).map { Number(String($0)) }
        guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }) else { return nil }
        values = parsed.map { $0! }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load one or more URLs: closed model (-c connections, each sending its next request when the last is answered), or open model at a fixed --rate.")

    @OptionGroup var requests: RequestOptions
    @Option(name: .short, help: "Connections; a list such as 1,2,4,8 runs one phase per value.") var c: Phases<Int> = Phases(argument: "8")!
    @Option(name: .short, help: "Duration of the measured run, e.g. 10s.") var d: Duration = Duration(argument: "10s")!
    @Option(help: "Open model: requests per second in total, on a fixed schedule; latency counts from each request's intended send time. A list such as 100,200,400 runs one phase per rate.") var rate: Phases<Double>?
    @Option(help: "Warm-up before measuring, e.g. 2s.") var warmup: Duration = Duration(argument: "0")!
    @OptionGroup var output: OutputOptions

    func validate() throws {
        for connections in c.values where connections < 1 { throw ValidationError("-c must be at least 1, got \(connections)") }
        if c.values.count > 1 && (rate?.values.count ?? 1) > 1 {
            throw ValidationError("phases vary -c or --rate, not both")
        }
        guard d.seconds > 0 else { throw ValidationError("-d must be longer than 0") }
        for rate in rate?.values ?? [] where !(rate.isFinite && rate > 0 && rate <= 10_000_000) {
            throw ValidationError("--rate must be from above 0 to 10000000, got \(rate)")
        }
    }

    func run() throws {
        let plan = try requests.plan(connections: c.values[0], duration: d.seconds, warmup: warmup.seconds)
        // One phase per listed connection count or rate, each with its own warm-up and results.
        let phases: [LoadPlan] = if let rates = rate?.values, rates.count > 1 {
            rates.map { rate in with(plan) { $0.rate = rate } }
        } else {
            c.values.map { connections in with(plan) { $0.connections = connections; $0.rate = rate?.values[0] } }
        }
        try output.execute(phases)
    }
}

/// What is sent, the same for `run` and `knee`: the URLs and their method, headers and body.
struct RequestOptions: ParsableArguments {
    @Argument(help: "http[s]://HOST[:PORT]/PATH, optionally =WEIGHT; several share the load by weight.") var urls: [String] = []
    @Option(help: "Another URL[=WEIGHT] (repeatable): every URL has its own results, and the requests are split by weight.") var url: [String] = []
    @Option(name: .short, help: "Threads (each its own event loop).") var t: Int = 1
    @Option(help: "A request unanswered this long is a timeout error.") var timeout: Duration = Duration(argument: "5s")!
    @Option(name: .short, help: "Method.") var X: String = "GET"
    @Option(name: .short, help: "Header 'Name: value' (repeatable).") var H: [String] = []
    @Option(help: "Request body, or @FILE.") var body: String?
    @Option(help: "{key} in a URL stands for one of this many keys (0 …), drawn for each request.") var keys: Int?
    @Option(help: "With --keys: draw keys by Zipf's law with this exponent (a few hot keys, a long tail); 0 is uniform.") var zipf: Double = 0
    @OptionGroup var tls: TLSFlags

    func validate() throws {
        guard !(urls + url).isEmpty else { throw ValidationError("give at least one URL") }
        guard t >= 1 else { throw ValidationError("-t must be at least 1, got \(t)") }
        guard timeout.seconds > 0 else { throw ValidationError("--timeout must be longer than 0") }
        if let keys, !KeySpace.counts.contains(keys) { throw ValidationError("--keys must be from 1 to \(KeySpace.counts.upperBound), got \(keys)") }
        guard zipf.isFinite && (0...10).contains(zipf) else { throw ValidationError("--zipf must be from 0 to 10, got \(zipf)") }
        guard Endpoint.methods.contains(X) else { throw ValidationError("-X must be one of \(Endpoint.methods.joined(separator: ", ")), got \(X)") }
        for header in H {
            guard let colon = header.firstIndex(of: ":") else { throw ValidationError("-H expects 'Name: value', got '\(header)'") }
            if let problem = Endpoint.problem(withHeader: header[..<colon].trimmingCharacters(in: .whitespaces)) {
                throw ValidationError("-H: \(problem)")
            }
        }
    }

    func plan(connections: Int, duration: Double, warmup: Double) throws -> LoadPlan {
        let headers = H.map { header in
            let colon = header.firstIndex(of: ":")!
            return (name: String(header[..<colon]).trimmingCharacters(in: .whitespaces),
                    value: String(header[header.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        var requestBody: [UInt8] = []
        if let body {
            if body.hasPrefix("@") {
                guard let data = FileManager.default.contents(atPath: String(body.dropFirst())) else {
                    throw ValidationError("--body: cannot read \(body.dropFirst())")
                }
                requestBody = Array(data)
            } else {
                requestBody = Array(body.utf8)
            }
        }
        do {
            let endpoints = try (urls + url).map { text in
                var endpoint = try Endpoint(weightedURL: text)
                endpoint.method = X
                endpoint.headers = headers
                endpoint.body = requestBody
                if let keys, endpoint.target.pathAndQuery.contains(KeySpace.placeholder) {
                    endpoint.keys = KeySpace(count: keys, zipfExponent: zipf)
                }
                return endpoint
            }
            var plan = try LoadPlan(endpoints: endpoints, connections: connections, threads: t, duration: duration,
                                    warmup: warmup, timeout: timeout.seconds)
            plan.tls = tls.options
            return plan
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

/// How https:// URLs check the server, the same for every command that sends.
struct TLSFlags: ParsableArguments {
    @Option(help: ArgumentHelp("https: trust the certificates in this PEM file instead of the system's.", valueName: "FILE")) var cacert: String?
    @Flag(name: [.customShort("k"), .long], help: "https: do not check the server's certificate or name.") var insecure = false

    func validate() throws {
        if let cacert, !FileManager.default.isReadableFile(atPath: cacert) { throw ValidationError("--cacert: cannot read \(cacert)") }
        if cacert != nil && insecure { throw ValidationError("--cacert and --insecure contradict each other: give one") }
    }

    var options: TLSOptions { TLSOptions(caFile: cacert, insecure: insecure) }
}

struct RunScenario: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scenario",
        abstract: "Run a scenario file (YAML): a target, phases, and weighted endpoints with their methods, headers and bodies. loadtest/ has examples.")

    @Argument(help: "The scenario file.") var file: String
    @Option(help: "Send to this server instead of the file's target, e.g. http://127.0.0.1:9000.") var target: String?
    @OptionGroup var tls: TLSFlags
    @OptionGroup var output: OutputOptions

    func run() throws {
        let scenario: Scenario
        do { scenario = try Scenario.load(path: file, target: target) } catch { throw ValidationError("\(error)") }
        try output.execute(scenario.phases.map { with($0) { $0.tls = tls.options } }, objectives: scenario.objectives)
    }
}

/// The objectives a run is judged by (`--slo`, repeatable), the same for every command.
struct ObjectiveOptions: ParsableArguments {
    @Option(name: .customLong("slo"), help: ArgumentHelp(
        "An objective the run must meet, or loadtest exits 1 (repeatable): p99<50ms, p50<5ms, max<1s, mean<20ms, errors<1%, errors<10, rps>1000; ENDPOINT:p99<5ms judges one endpoint (its URL or path).",
        valueName: "EXPR")) var slo: [String] = []

    func validate() throws {
        _ = try objectives()
    }

    func objectives() throws -> [Objective] {
        do { return try slo.map { text throws(Objective.Invalid) in try Objective(parsing: text) } } catch {
            throw ValidationError("--slo: \(error)")
        }
    }
}

/// How results are shown, the same for `run` and `scenario`.
struct OutputOptions: ParsableArguments {
    @Flag(help: "JSON instead of text (the schema is in the README).") var json = false
    @Option(help: "Also write the latency's percentile distribution (HdrHistogram .hgrm, milliseconds) to this file.") var hgrm: String?
    @Flag(help: "No live progress line (it is shown only when stdout is a terminal anyway).") var quiet = false
    @OptionGroup var objectives: ObjectiveOptions
    @Option(help: "The length of each interval of the run over time (--json's intervals, --interval-log), e.g. 1s.") var interval: Duration = Duration(argument: "1s")!
    @Option(help: ArgumentHelp("Write the run as an HdrHistogram interval log (.hlog): a histogram per interval, per endpoint and in total, corrected and uncorrected; values in microseconds. With several phases, FILE gets each phase's number (run.1.hlog, …). loadtest merge reads these.", valueName: "FILE")) var intervalLog: String?

    func validate() throws {
        guard interval.seconds >= 0.01 else { throw ValidationError("--interval must be at least 10ms") }
    }

    /// Where phase `index` of `count` writes its interval log.
    func intervalLogPath(phase index: Int, of count: Int) -> String? {
        guard let intervalLog else { return nil }
        guard count > 1 else { return intervalLog }
        let url = URL(fileURLWithPath: intervalLog)
        let stem = url.deletingPathExtension().path, suffix = url.pathExtension.isEmpty ? "" : "." + url.pathExtension
        return "\(stem).\(index + 1)\(suffix)"
    }

    /// Checks the target is there, runs the phases one after another and prints the results;
    /// exits 1 when a phase missed an objective. `objectives` are a scenario's own, which
    /// --slo adds to.
    func execute(_ phases: [LoadPlan], objectives fileObjectives: [Objective] = []) throws {
        let objectives = fileObjectives + (try self.objectives.objectives())
        if let problem = Objective.problem(objectives, endpoints: phases[0].endpoints) { throw ValidationError(problem) }
        let phases = phases.map { with($0) { $0.interval = interval.seconds } }
        let writers: [IntervalLog.Writer?]
        do {
            writers = try phases.enumerated().map { index, phase throws(LoadError) in
                try intervalLogPath(phase: index, of: phases.count).map { path throws(LoadError) in try IntervalLog.Writer(path: path, plan: phase) }
            }
        } catch {
            throw ValidationError("\(error)")
        }
        do {
            try LoadRun.checkReachable(phases[0].target, tls: phases[0].tls)
        } catch {
            FileHandle.standardError.write(Data("loadtest: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let progress = !quiet && isatty(STDOUT_FILENO) == 1 ? ProgressLine() : nil
        var reports: [Report] = []
        var summaries: [LoadRun.Summary] = []
        for (index, phase) in phases.enumerated() {
            let writer = writers[index]
            let summary = try LoadRun.run(phase, progress: progress.map { line in
                { elapsed, soFar in line.show(elapsed: elapsed, warmup: phase.warmup, soFar: soFar) }
            }, interval: writer.map { writer in { slice, startedAt in writer.write(slice, startedAt: startedAt) } })
            writer?.finish(summary)
            progress?.clear()
            summaries.append(summary)
            reports.append(Report(plan: phase, summary: summary, objectives: objectives))
            if !json {
                if phases.count > 1 { print("phase \(index + 1)/\(phases.count)") }
                print(reports[index].text())
            }
        }
        if json { print(reports.count == 1 ? reports[0].json() : Report.json(phases: reports)) }
        if let hgrm {
            // A phased run writes the last phase's distribution.
            guard FileManager.default.createFile(atPath: hgrm, contents: Data(Report.hgrm(summaries[summaries.count - 1]).utf8)) else {
                FileHandle.standardError.write(Data("loadtest: --hgrm: cannot write \(hgrm)\n".utf8))
                throw ExitCode(2)
            }
        }
        if !reports.allSatisfy(\.metObjectives) { throw ExitCode(1) }
    }
}

/// One line on the terminal, rewritten in place once a second, as oha and vegeta show a run.
struct ProgressLine {
    func show(elapsed: Double, warmup: Double, soFar: Results) {
        let measuring = elapsed - warmup
        let text = measuring <= 0
            ? String(format: "  %5.1fs  warming up", elapsed)
            : String(format: "  %5.1fs  %10.0f req/s  %d errors  p99 %.3f ms", elapsed, Double(soFar.completed) / measuring,
                     soFar.errorTotal, Double(soFar.latency.totalCount > 0 ? soFar.latency.valueAtPercentile(99) : 0) / 1000)
        print("\r\u{1B}[K" + text, terminator: "")
        fflush(nil)
    }

    func clear() {
        print("\r\u{1B}[K", terminator: "")
        fflush(nil)
    }
}

func with<T>(_ value: T, _ change: (inout T) -> Void) -> T {
    var copy = value
    change(&copy)
    return copy
}
