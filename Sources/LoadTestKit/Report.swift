import Foundation
import Histogram

/// The results as people and programs read them: a wrk-like text summary, and JSON whose
/// schema the README documents. The run's totals sit at the top level; `endpoints` repeats
/// the same measurements per URL.
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

    /// What was measured, for the whole run or one endpoint.
    public struct Measurements: Codable, Sendable {
        public var requests: Int
        public var rps: Double
        public var errors: [String: Int]
        public var inFlightAtEnd: Int
        public var latencyMs: Percentiles
        /// Open model: latency from the actual send, which hides the waits of a stall.
        public var latencyUncorrectedMs: Percentiles?
        /// Open model: requests that could not be sent at their intended time.
        public var lateSends: Int?
        public var serverTiming: [String: Percentiles]
        /// What the first error of a kind said, where it said more than its kind (TLS).
        public var errorReasons: [String: String]?
        /// https: the handshakes after the warm-up, and how many resumed a session.
        public var tls: TLSCounts?

        public struct TLSCounts: Codable, Sendable {
            public var handshakes: Int
            public var resumed: Int
        }

        enum CodingKeys: String, CodingKey {
            case requests, rps, errors, tls
            case errorReasons = "error_reasons"
            case latencyUncorrectedMs = "latency_uncorrected_ms", lateSends = "late_sends"
            case inFlightAtEnd = "in_flight_at_end", latencyMs = "latency_ms", serverTiming = "server_timing"
        }

        init(_ results: Results, duration: Double, openModel: Bool, secure: Bool = false) {
            requests = results.completed
            rps = duration > 0 ? Double(results.completed) / duration : 0
            errors = results.errors
            errors["total"] = results.errorTotal
            inFlightAtEnd = results.inFlightAtEnd
            latencyMs = Percentiles(results.latency)
            if openModel {
                latencyUncorrectedMs = Percentiles(results.uncorrected)
                lateSends = results.lateSends
            }
            serverTiming = results.serverTiming.mapValues(Percentiles.init)
            errorReasons = results.errorReasons.isEmpty ? nil : results.errorReasons
            tls = secure ? TLSCounts(handshakes: results.tlsHandshakes, resumed: results.tlsResumed) : nil
        }
    }

    public struct EndpointReport: Codable, Sendable {
        public var url: String
        public var method: String
        public var weight: Int
        public var measured: Measurements

        enum CodingKeys: String, CodingKey { case url, method, weight }

        init(url: String, method: String, weight: Int, measured: Measurements) {
            self.url = url
            self.method = method
            self.weight = weight
            self.measured = measured
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            url = try container.decode(String.self, forKey: .url)
            method = try container.decode(String.self, forKey: .method)
            weight = try container.decode(Int.self, forKey: .weight)
            measured = try Measurements(from: decoder)
        }

        /// Flat: the endpoint's own fields beside its measurements.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(url, forKey: .url)
            try container.encode(method, forKey: .method)
            try container.encode(weight, forKey: .weight)
            try measured.encode(to: encoder)
        }
    }

    public var url: String
    public var model: String
    public var connections: Int
    public var threads: Int
    public var durationS: Double
    public var rate: Double?
    public var measured: Measurements
    public var endpoints: [EndpointReport]
    /// Each objective (`--slo`, a scenario's `slo:`) with its measured value and whether it
    /// was met; nil when none was set.
    public var slo: [Objective.Outcome]?
    /// The run second by second (`--interval`); nil when not kept.
    public var intervals: [IntervalSummary]?
    /// The latency's percentile distribution (HdrHistogram's .hgrm text), when kept; not part
    /// of the JSON.
    public var distribution: String?

    enum CodingKeys: String, CodingKey {
        case url, model, connections, threads, rate, endpoints, slo, intervals
        case durationS = "duration_s"
    }

    public init(plan: LoadPlan, summary: LoadRun.Summary, objectives: [Objective] = []) {
        let open = plan.rate != nil
        url = plan.endpoints.count == 1 ? plan.endpoints[0].name : "\(plan.endpoints.count) endpoints"
        model = open ? "open" : "closed"
        rate = plan.rate
        connections = plan.connections
        threads = plan.effectiveThreads
        durationS = summary.duration
        let secure = plan.target.secure
        measured = Measurements(summary.results, duration: summary.duration, openModel: open, secure: secure)
        endpoints = zip(plan.endpoints, summary.endpoints).map { endpoint, results in
            EndpointReport(url: endpoint.name, method: endpoint.method, weight: endpoint.weight,
                           measured: Measurements(results, duration: summary.duration, openModel: open, secure: secure))
        }
        slo = objectives.isEmpty ? nil : Objective.judge(objectives, endpoints: plan.endpoints, summary: summary)
        intervals = summary.intervals
    }

    /// Whether every objective was met (true when there are none).
    public var metObjectives: Bool { slo?.allSatisfy(\.met) ?? true }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        url = try container.decode(String.self, forKey: .url)
        model = try container.decode(String.self, forKey: .model)
        connections = try container.decode(Int.self, forKey: .connections)
        threads = try container.decode(Int.self, forKey: .threads)
        durationS = try container.decode(Double.self, forKey: .durationS)
        rate = try container.decodeIfPresent(Double.self, forKey: .rate)
        endpoints = try container.decode([EndpointReport].self, forKey: .endpoints)
        slo = try container.decodeIfPresent([Objective.Outcome].self, forKey: .slo)
        intervals = try container.decodeIfPresent([IntervalSummary].self, forKey: .intervals)
        measured = try Measurements(from: decoder)
    }

    /// Flat: the run's own fields beside its total measurements.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(url, forKey: .url)
        try container.encode(model, forKey: .model)
        try container.encode(connections, forKey: .connections)
        try container.encode(threads, forKey: .threads)
        try container.encode(durationS, forKey: .durationS)
        try container.encodeIfPresent(rate, forKey: .rate)
        try container.encode(endpoints, forKey: .endpoints)
        try container.encodeIfPresent(slo, forKey: .slo)
        try container.encodeIfPresent(intervals, forKey: .intervals)
        try measured.encode(to: encoder)
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

    /// Pretty-printed JSON with sorted keys, as every loadtest command prints it.
    static func encode(_ value: some Encodable) -> String {
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
            "  " + row(rate == nil ? "latency" : "corrected", measured.latencyMs),
        ]
        if let uncorrected = measured.latencyUncorrectedMs {
            lines.append("  " + row("uncorrect.", uncorrected))
        }
        if let lateSends = measured.lateSends, lateSends > 0 {
            lines.append("  \(lateSends) requests waited for a free connection past their send time")
        }
        if !measured.serverTiming.isEmpty {
            lines.append("  server timing (Server-Timing header):")
            for name in measured.serverTiming.keys.sorted() { lines.append("    " + row(name, measured.serverTiming[name]!)) }
        }
        lines.append(String(format: "  %d requests in %.2fs; %.2f requests/sec", measured.requests, durationS, measured.rps))
        if let errors = Self.errorText(measured.errors, reasons: measured.errorReasons) { lines.append("  errors: " + errors) }
        if let tls = measured.tls { lines.append("  TLS: \(tls.handshakes) handshakes, \(tls.resumed) of them resumed sessions") }
        if measured.inFlightAtEnd > 0 {
            lines.append("  \(measured.inFlightAtEnd) requests still in flight at the end: neither counted nor errors")
        }
        if endpoints.count > 1 {
            let names = endpoints.map { "\($0.method) \($0.url)" }
            let width = max(10, names.map(\.count).max() ?? 0)
            lines.append("  by endpoint:")
            lines.append("    " + "endpoint".padding(toLength: width, withPad: " ", startingAt: 0)
                         + "   weight    requests    req/s   p50 ms   p99 ms   max ms  errors")
            for (endpoint, name) in zip(endpoints, names) {
                let m = endpoint.measured
                lines.append("    " + name.padding(toLength: width, withPad: " ", startingAt: 0)
                             + String(format: " %8d  %10d %8.1f %8.3f %8.3f %8.3f  ", endpoint.weight, m.requests, m.rps,
                                      m.latencyMs.p50, m.latencyMs.p99, m.latencyMs.max)
                             + (Self.errorText(m.errors) ?? "0"))
            }
        }
        if let slo {
            lines.append("  objectives: " + (metObjectives ? "all met" : "\(slo.count { !$0.met }) of \(slo.count) missed"))
            for outcome in slo { lines.append("    " + outcome.text) }
        }
        return lines.joined(separator: "\n")
    }

    private static func errorText(_ errors: [String: Int], reasons: [String: String]? = nil) -> String? {
        let kinds = errors.filter { $0.key != "total" && $0.value > 0 }.sorted { $0.key < $1.key }
        return kinds.isEmpty ? nil : kinds.map { "\($0.key) \($0.value)" + (reasons?[$0.key].map { " (\($0))" } ?? "") }.joined(separator: ", ")
    }
}
