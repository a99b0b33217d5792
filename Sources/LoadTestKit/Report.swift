import Foundation
import Histogram

/// The results as people and programs read them: a wrk-like text summary, and JSON whose
/// schema the README documents.
public struct Report: Codable, Sendable {
    public struct Percentiles: Codable, Sendable {
        public var p50, p75, p90, p99, p999, p9999, max, mean, stdev: Double
        public var count: UInt64

        /// From a histogram in microseconds, to milliseconds.
        init(_ histogram: Histogram<UInt64>) {
            func ms(_ value: UInt64) -> Double { Double(value) / 1000 }
            count = histogram.totalCount
            guard count > 0 else {
                p50 = 0; p75 = 0; p90 = 0; p99 = 0; p999 = 0; p9999 = 0; max = 0; mean = 0; stdev = 0
                return
            }
            p50 = ms(histogram.valueAtPercentile(50))
            p75 = ms(histogram.valueAtPercentile(75))
            p90 = ms(histogram.valueAtPercentile(90))
            p99 = ms(histogram.valueAtPercentile(99))
            p999 = ms(histogram.valueAtPercentile(99.9))
            p9999 = ms(histogram.valueAtPercentile(99.99))
            // The largest value recorded, at full precision: never dropped, never rounded down.
            max = ms(histogram.max)
            mean = histogram.mean / 1000
            stdev = histogram.stdDeviation / 1000
        }
    }

    public var url: String
    public var model: String
    public var connections: Int
    public var threads: Int
    public var requests: Int
    public var durationS: Double
    public var rps: Double
    public var errors: [String: Int]
    public var inFlightAtEnd: Int
    public var latencyMs: Percentiles
    /// Open model: latency from the actual send, which hides the waits of a stall.
    public var latencyUncorrectedMs: Percentiles?
    /// Open model: requests that could not be sent at their intended time.
    public var lateSends: Int?
    public var rate: Double?
    public var serverTiming: [String: Percentiles]

    enum CodingKeys: String, CodingKey {
        case url, model, connections, threads, requests, rps, errors, rate
        case latencyUncorrectedMs = "latency_uncorrected_ms", lateSends = "late_sends"
        case durationS = "duration_s", inFlightAtEnd = "in_flight_at_end", latencyMs = "latency_ms", serverTiming = "server_timing"
    }

    public init(url: String, plan: LoadPlan, summary: LoadRun.Summary) {
        self.url = url
        model = plan.rate == nil ? "closed" : "open"
        rate = plan.rate
        if plan.rate != nil {
            latencyUncorrectedMs = Percentiles(summary.results.uncorrected)
            lateSends = summary.results.lateSends
        }
        connections = plan.connections
        threads = max(1, min(plan.threads, plan.connections))
        requests = summary.results.completed
        durationS = summary.duration
        rps = summary.requestsPerSecond
        errors = summary.results.errors
        errors["total"] = summary.results.errorTotal
        inFlightAtEnd = summary.results.inFlightAtEnd
        latencyMs = Percentiles(summary.results.latency)
        serverTiming = summary.results.serverTiming.mapValues(Percentiles.init)
    }

    /// HdrHistogram's percentile distribution of the (corrected) latency, in milliseconds: the
    /// text format HdrHistogram's plotter loads.
    public static func hgrm(_ summary: LoadRun.Summary) -> String {
        var text = ""
        summary.results.latency.outputPercentileDistribution(to: &text, outputValueUnitScalingRatio: 1000)
        return text
    }

    public func json() -> String {
        Self.encode(self)
    }

    /// A phased run: `{"phases": [one report per phase]}`.
    public static func json(phases: [Report]) -> String {
        encode(["phases": phases])
    }

    private static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
    }

    public func text() -> String {
        func row(_ name: String, _ p: Percentiles) -> String {
            name.padding(toLength: 10, withPad: " ", startingAt: 0)
                + String(format: " p50 %8.3f  p90 %8.3f  p99 %8.3f  p99.9 %8.3f  max %8.3f ms  (mean %.3f, stdev %.3f)",
                         p.p50, p.p90, p.p99, p.p999, p.max, p.mean, p.stdev)
        }
        var lines = [
            "\(durationS)s \(model)-model run @ \(url)" + (rate.map { String(format: ", %.0f requests/s scheduled", $0) } ?? ""),
            "  \(threads) threads and \(connections) connections",
            "  " + row(rate == nil ? "latency" : "corrected", latencyMs),
        ]
        if let latencyUncorrectedMs {
            lines.append("  " + row("uncorrect.", latencyUncorrectedMs))
        }
        if let lateSends, lateSends > 0 {
            lines.append("  \(lateSends) requests waited for a free connection past their send time")
        }
        if !serverTiming.isEmpty {
            lines.append("  server timing (Server-Timing header):")
            for name in serverTiming.keys.sorted() { lines.append("    " + row(name, serverTiming[name]!)) }
        }
        lines.append(String(format: "  %d requests in %.2fs; %.2f requests/sec", requests, durationS, rps))
        let kinds = errors.filter { $0.key != "total" && $0.value > 0 }.sorted { $0.key < $1.key }
        if !kinds.isEmpty {
            lines.append("  errors: " + kinds.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if inFlightAtEnd > 0 {
            lines.append("  \(inFlightAtEnd) requests still in flight at the end: neither counted nor errors")
        }
        return lines.joined(separator: "\n")
    }
}
