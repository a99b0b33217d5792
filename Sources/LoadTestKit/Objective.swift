import Foundation

/// A service-level objective a run must meet, as k6's thresholds are: `p99<50ms`, `p50<5ms`,
/// `max<1s`, `mean<=20ms`, `errors<1%`, `errors<10`, `rps>1000`. Written `ENDPOINT:OBJECTIVE`
/// (`/cache/{key}:p99<5ms`), it judges that endpoint alone; otherwise the whole run.
///
/// Latency is the corrected one in the open model (from each request's intended send time),
/// so an objective cannot be met by a stall that an uncorrected tool would hide.
public struct Objective: Sendable, Equatable, CustomStringConvertible {
    public enum Metric: Sendable, Equatable {
        /// Latency at a percentile from above 0 to 100, or its maximum or mean; in milliseconds.
        case percentile(Double), max, mean
        /// Errors (every kind, non-2xx answers included) as a share of the requests, from 0 to 1.
        case errorShare
        /// Errors as a count.
        case errorCount
        /// Answered requests per second.
        case rps
    }

    public enum Comparison: String, Sendable, CaseIterable {
        // Longest first, so that "<=" is not read as "<" and a value "=5ms".
        case atMost = "<=", atLeast = ">=", below = "<", above = ">"

        func holds(_ value: Double, _ threshold: Double) -> Bool {
            switch self {
            case .below: value < threshold
            case .atMost: value <= threshold
            case .above: value > threshold
            case .atLeast: value >= threshold
            }
        }
    }

    /// The endpoint it judges, as written (its URL or path); nil for the whole run.
    public var endpoint: String?
    /// Under a scenario's endpoint: that endpoint's place in the list, which two endpoints
    /// with one path (a GET and a PUT) cannot confuse.
    public var endpointIndex: Int?
    public var metric: Metric
    public var comparison: Comparison
    /// In the metric's unit: milliseconds, a share from 0 to 1, a count or requests per second.
    public var threshold: Double
    /// The objective as the user wrote it, without its endpoint.
    public let expression: String

    /// As reports show it: `ENDPOINT:` and the expression.
    public var description: String { (endpoint.map { $0 + ":" } ?? "") + expression }

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    static let expected = "expected METRIC<VALUE or METRIC>VALUE, such as p99<50ms, p50<5ms, max<1s, mean<20ms, errors<1%, errors<10 or rps>1000, optionally ENDPOINT: before it"

    public init(parsing text: String) throws(Invalid) {
        var objective = Substring(text.trimmingCharacters(in: .whitespaces))
        // The endpoint is everything before the last colon: URLs have colons, objectives none.
        if let colon = objective.lastIndex(of: ":") {
            let name = objective[..<colon].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else { throw Invalid(description: "'\(text)': no endpoint before ':'; \(Self.expected)") }
            endpoint = name
            objective = objective[objective.index(after: colon)...]
        }
        expression = objective.trimmingCharacters(in: .whitespaces)
        objective = Substring(objective.filter { !$0.isWhitespace })
        guard let (comparison, range) = Comparison.allCases.lazy.compactMap({ comparison in
            objective.range(of: comparison.rawValue).map { (comparison, $0) }
        }).first else {
            throw Invalid(description: "'\(text)': no < or > in it; \(Self.expected)")
        }
        self.comparison = comparison
        let name = objective[..<range.lowerBound].lowercased(), value = objective[range.upperBound...]
        guard !value.isEmpty else { throw Invalid(description: "'\(text)': no value after \(comparison.rawValue); \(Self.expected)") }
        switch name {
        case "max", "p100":
            metric = .max
            threshold = try Self.milliseconds(value, text)
        case "mean", "avg":
            metric = .mean
            threshold = try Self.milliseconds(value, text)
        case "errors":
            if value.hasSuffix("%") {
                guard let percent = Double(value.dropLast()), percent.isFinite, (0...100).contains(percent) else {
                    throw Invalid(description: "'\(text)': the error share must be a percentage from 0% to 100%, such as errors<1%")
                }
                metric = .errorShare
                threshold = percent / 100
            } else {
                guard let count = Double(value), count.isFinite, count >= 0, count == count.rounded() else {
                    throw Invalid(description: "'\(text)': errors are a share or a whole count, such as errors<1% or errors<10")
                }
                metric = .errorCount
                threshold = count
            }
        case "rps":
            guard let rate = Double(value), rate.isFinite, rate >= 0 else {
                throw Invalid(description: "'\(text)': rps is a number of requests per second, such as rps>1000")
            }
            metric = .rps
            threshold = rate
        default:
            guard name.hasPrefix("p"), let percentile = Double(name.dropFirst()), percentile > 0, percentile <= 100 else {
                throw Invalid(description: "'\(text)': unknown metric '\(name)'; \(Self.expected)")
            }
            metric = .percentile(percentile)
            threshold = try Self.milliseconds(value, text)
        }
    }

    /// A latency threshold: a number and its unit (us, ms, s), in milliseconds.
    private static func milliseconds(_ value: Substring, _ text: String) throws(Invalid) -> Double {
        let units: [(suffix: String, milliseconds: Double)] = [("us", 0.001), ("µs", 0.001), ("ms", 1), ("s", 1000), ("m", 60_000)]
        for unit in units where value.hasSuffix(unit.suffix) {
            if let number = Double(value.dropLast(unit.suffix.count)), number.isFinite, number >= 0 {
                return number * unit.milliseconds
            }
            break
        }
        throw Invalid(description: "'\(text)': a latency is a number with its unit, us, ms or s (such as p99<50ms)")
    }

    /// Whether this objective is about `endpoint` (its name as reported, or its path).
    func judges(_ candidate: Endpoint) -> Bool {
        endpoint == candidate.name || endpoint == candidate.target.pathAndQuery
    }

    /// The measured value in the objective's unit; nil when there is nothing to measure it
    /// on (no answered request for a latency), which counts as missed.
    public func measure(_ results: Results, duration: Double) -> Double? {
        switch metric {
        case .percentile(let percentile):
            results.latency.totalCount > 0 ? Double(results.latency.valueAtPercentile(percentile)) / 1000 : nil
        case .max:
            results.latency.totalCount > 0 ? Double(results.latency.max) / 1000 : nil
        case .mean:
            results.latency.totalCount > 0 ? results.latency.mean / 1000 : nil
        case .errorShare:
            results.attempts > 0 ? Double(results.errorTotal) / Double(results.attempts) : nil
        case .errorCount:
            Double(results.errorTotal)
        case .rps:
            duration > 0 ? Double(results.completed) / duration : nil
        }
    }

    /// Judges a run: each objective against the whole run or its endpoint.
    public static func judge(_ objectives: [Objective], endpoints: [Endpoint], summary: LoadRun.Summary) -> [Outcome] {
        objectives.map { objective in
            let results = if let index = objective.endpointIndex, summary.endpoints.indices.contains(index) {
                summary.endpoints[index]
            } else if objective.endpoint != nil {
                zip(endpoints, summary.endpoints).first { objective.judges($0.0) }?.1 ?? Results()
            } else {
                summary.results
            }
            let value = objective.measure(results, duration: summary.duration)
            return Outcome(objective: objective.description, endpoint: objective.endpoint, measured: value,
                           unit: objective.unit, met: value.map { objective.comparison.holds($0, objective.threshold) } ?? false)
        }
    }

    /// Why the objectives cannot judge these endpoints, or nil: each named endpoint must be one of them.
    public static func problem(_ objectives: [Objective], endpoints: [Endpoint]) -> String? {
        for objective in objectives where objective.endpoint != nil && !endpoints.contains(where: objective.judges) {
            return "--slo '\(objective)': no endpoint is '\(objective.endpoint!)'; the endpoints are "
                + endpoints.map { "'\($0.name)'" }.joined(separator: ", ")
        }
        return nil
    }

    var unit: String {
        switch metric {
        case .percentile, .max, .mean: "ms"
        case .errorShare: "share"
        case .errorCount: "errors"
        case .rps: "req/s"
        }
    }

    /// One objective's verdict, as reports show it.
    public struct Outcome: Codable, Sendable, Equatable {
        public var objective: String
        public var endpoint: String?
        /// nil: nothing to measure it on.
        public var measured: Double?
        public var unit: String
        public var met: Bool

        var text: String {
            let value = measured.map { value in
                switch unit {
                case "share": String(format: "%.3f%%", value * 100)
                case "ms": String(format: "%.3f ms", value)
                case "req/s": String(format: "%.1f req/s", value)
                default: String(format: "%.0f", value)
                }
            } ?? "nothing measured"
            return "\(met ? "met   " : "MISSED") \(objective)  (measured \(value))"
        }
    }
}

extension Results {
    /// Requests that ended, answered or failed: the denominator of an error share. A non-2xx
    /// answer is both answered and an error, so only the failures without an answer are added.
    public var attempts: Int {
        completed + errors.reduce(0) { $0 + ($1.key.hasPrefix("status_") ? 0 : $1.value) }
    }
}
