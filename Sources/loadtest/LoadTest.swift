import ArgumentParser
import Foundation
import LoadTestKit

@main
struct LoadTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadtest",
        abstract: "Measure an HTTP server's throughput and latency, and read its Server-Timing.",
        subcommands: [Run.self])

    /// Usage errors (a bad flag, a bad URL) exit 2, as the rest of Threadbare's commands do.
    static func main() {
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

/// "10s", "500ms", "2m", or plain seconds.
struct Seconds: ExpressibleByArgument {
    let value: Double

    init?(argument: String) {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where argument.hasSuffix(suffix) {
            guard let number = Double(argument.dropLast(suffix.count)), number.isFinite, number >= 0 else { return nil }
            value = number * scale
            return
        }
        guard let number = Double(argument), number.isFinite, number >= 0 else { return nil }
        value = number
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
        abstract: "Load one URL: closed model (-c connections, each sending its next request when the last is answered), or open model at a fixed --rate.")

    @Argument(help: "http://HOST[:PORT]/PATH") var url: String
    @Option(name: .short, help: "Connections; a list such as 1,2,4,8 runs one phase per value.") var c: Phases<Int> = Phases(argument: "8")!
    @Option(name: .short, help: "Duration of the measured run, e.g. 10s.") var d: Seconds = Seconds(argument: "10s")!
    @Option(name: .short, help: "Threads (each its own event loop).") var t: Int = 1
    @Option(help: "Open model: requests per second in total, on a fixed schedule; latency counts from each request's intended send time. A list such as 100,200,400 runs one phase per rate.") var rate: Phases<Double>?
    @Option(help: "Warm-up before measuring, e.g. 2s.") var warmup: Seconds = Seconds(argument: "0")!
    @Option(help: "A request unanswered this long is a timeout error.") var timeout: Seconds = Seconds(argument: "5s")!
    @Option(name: .short, help: "Method.") var X: String = "GET"
    @Option(name: .short, help: "Header 'Name: value' (repeatable).") var H: [String] = []
    @Option(help: "Request body, or @FILE.") var body: String?
    @Flag(help: "JSON instead of text.") var json = false
    @Option(help: "Also write the latency's percentile distribution (HdrHistogram .hgrm, milliseconds) to this file.") var hgrm: String?

    func validate() throws {
        for connections in c.values where connections < 1 { throw ValidationError("-c must be at least 1, got \(connections)") }
        if c.values.count > 1 && (rate?.values.count ?? 1) > 1 {
            throw ValidationError("phases vary -c or --rate, not both")
        }
        guard t >= 1 else { throw ValidationError("-t must be at least 1, got \(t)") }
        guard d.value > 0 else { throw ValidationError("-d must be longer than 0") }
        guard timeout.value > 0 else { throw ValidationError("--timeout must be longer than 0") }
        for rate in rate?.values ?? [] where !(rate.isFinite && rate > 0 && rate <= 10_000_000) {
            throw ValidationError("--rate must be from above 0 to 10000000, got \(rate)")
        }
        let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]
        guard methods.contains(X) else { throw ValidationError("-X must be one of \(methods.joined(separator: ", ")), got \(X)") }
        for header in H where !header.contains(":") { throw ValidationError("-H expects 'Name: value', got '\(header)'") }
    }

    func run() throws {
        let target: Target
        do { target = try Target(url: url) } catch { throw ValidationError("\(error)") }
        var plan = LoadPlan(target: target, connections: c.values[0], threads: t, duration: d.value, warmup: warmup.value, timeout: timeout.value)
        plan.method = X
        plan.headers = H.map { header in
            let colon = header.firstIndex(of: ":")!
            return (String(header[..<colon]).trimmingCharacters(in: .whitespaces),
                    String(header[header.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        if let body {
            if body.hasPrefix("@") {
                guard let data = FileManager.default.contents(atPath: String(body.dropFirst())) else {
                    throw ValidationError("--body: cannot read \(body.dropFirst())")
                }
                plan.body = Array(data)
            } else {
                plan.body = Array(body.utf8)
            }
        }
        do {
            try LoadRun.checkReachable(target)
        } catch {
            FileHandle.standardError.write(Data("loadtest: \(error)\n".utf8))
            throw ExitCode(2)
        }
        // One phase per listed connection count or rate, each with its own warm-up and results.
        let phases: [LoadPlan] = if let rates = rate?.values, rates.count > 1 {
            rates.map { rate in with(plan) { $0.rate = rate } }
        } else {
            c.values.map { connections in with(plan) { $0.connections = connections; $0.rate = rate?.values[0] } }
        }
        var reports: [Report] = []
        var summaries: [LoadRun.Summary] = []
        for (index, phase) in phases.enumerated() {
            let summary = try LoadRun.run(phase)
            summaries.append(summary)
            reports.append(Report(url: url, plan: phase, summary: summary))
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
    }
}

func with<T>(_ value: T, _ change: (inout T) -> Void) -> T {
    var copy = value
    change(&copy)
    return copy
}
