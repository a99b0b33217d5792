import Foundation

/// The highest open-model rate that meets a set of objectives: the knee of the latency curve,
/// which users otherwise find by hand with a ladder of rates. Short steps, each with its own
/// warm-up: up by doubling from `startRate` until a step misses, then bisecting between the
/// last rate met and the first missed until they are within `precision` of each other.
///
/// A step that falls behind its schedule (fewer than `keepUp` of the requests due were sent
/// and ended, or were on their way at the end) misses even if its latency looks fine: the
/// server did not keep up. Requests still waiting for a free connection at the end were not.
public struct KneeSearch: Sendable {
    public var plan: LoadPlan
    public var objectives: [Objective]
    public var startRate: Double
    public var highestRate: Double
    public var precision: Double
    public var keepUp: Double
    /// After a missed step, wait for the server to finish what the step left it (off in tests
    /// that measure no server).
    public var settles = true

    public init(plan: LoadPlan, objectives: [Objective], startRate: Double = 100, highestRate: Double = 1_000_000,
                precision: Double = 0.05, keepUp: Double = 0.95) {
        self.plan = plan
        self.objectives = objectives
        self.startRate = startRate
        self.highestRate = highestRate
        self.precision = precision
        self.keepUp = keepUp
    }

    public struct Step: Codable, Sendable {
        public var rate: Double
        public var rps: Double
        public var requests: Int
        public var errors: Int
        public var p50Ms: Double
        public var p99Ms: Double
        /// The share of the requests due that were sent and ended within the step, or were on
        /// their way at its end.
        public var keptUp: Double
        public var met: Bool
        public var slo: [Objective.Outcome]

        enum CodingKeys: String, CodingKey {
            case rate, rps, requests, errors, met, slo
            case p50Ms = "p50_ms", p99Ms = "p99_ms", keptUp = "kept_up"
        }

        public var text: String {
            let missed = slo.filter { !$0.met }.map(\.objective)
            let reason = met ? "met"
                : missed.isEmpty ? String(format: "MISSED: fell behind (%.1f%% of the requests due kept to the schedule)", keptUp * 100)
                : "MISSED " + missed.joined(separator: ", ")
            return String(format: "%10.1f %10.1f %9.3f %9.3f %7d  ", rate, rps, p50Ms, p99Ms, errors) + reason
        }

        public static let header = "    rate/s      req/s    p50 ms    p99 ms  errors  verdict"

        /// The lowest rate a search tried.
        public static func lowestTried(_ outcome: Outcome) -> String {
            String(format: "%.1f", outcome.steps.map(\.rate).min() ?? 0)
        }
    }

    public struct Outcome: Codable, Sendable {
        /// The highest rate met; nil when even the lowest rate tried missed.
        public var maxRate: Double?
        /// The rate met was the highest allowed: the true knee is above it.
        public var atCeiling: Bool
        public var steps: [Step]

        enum CodingKeys: String, CodingKey {
            case steps
            case maxRate = "max_rate", atCeiling = "at_ceiling"
        }

        public func json() -> String {
            Report.encode(self)
        }
    }

    /// Runs the search, calling `step` after each one; `measure` runs a step's plan (the real
    /// engine unless a test gives another).
    public func run(step report: (Step) -> Void = { _ in },
                    measure: (LoadPlan) throws -> LoadRun.Summary = { try LoadRun.run($0) }) throws -> Outcome {
        var steps: [Step] = []
        func attempt(_ rate: Double) throws -> Bool {
            var stepPlan = plan
            stepPlan.rate = rate
            let summary = try measure(stepPlan)
            let outcomes = Objective.judge(objectives, endpoints: plan.endpoints, summary: summary)
            let due = rate * summary.duration
            // A slow server's last requests are still on their way at the end: on schedule.
            let onSchedule = summary.results.attempts + summary.results.inFlightAtEnd - summary.results.backlogAtEnd
            let keptUp = due > 0 ? min(1, Double(onSchedule) / due) : 1
            let latency = Report.Percentiles(summary.results.latency)
            let step = Step(rate: rate, rps: summary.requestsPerSecond, requests: summary.results.completed,
                            errors: summary.results.errorTotal, p50Ms: latency.p50, p99Ms: latency.p99,
                            keptUp: keptUp, met: outcomes.allSatisfy(\.met) && keptUp >= keepUp, slo: outcomes)
            steps.append(step)
            report(step)
            // An overloaded server still holds the requests of the connections the step closed:
            // let it finish them, so that the next step does not start behind. They were sent
            // at most one per connection, so they end within the server's own latency (from
            // the actual send), not the corrected one, which counts the client's queue too.
            if !step.met && settles {
                let served = summary.results.uncorrected.totalCount > 0 ? Double(summary.results.uncorrected.valueAtPercentile(99)) / 1e6 : plan.timeout
                Thread.sleep(forTimeInterval: min(plan.timeout, max(0.2, served)))
            }
            return step.met
        }
        var met: Double?
        var missed: Double?
        var rate = min(startRate, highestRate)
        // Up by doubling until a step misses (or down by halving if the first does).
        if try attempt(rate) {
            met = rate
            while rate < highestRate {
                rate = min(rate * 2, highestRate)
                if try attempt(rate) { met = rate } else {
                    missed = rate
                    break
                }
            }
            if missed == nil { return Outcome(maxRate: met, atCeiling: true, steps: steps) }
        } else {
            missed = rate
            while met == nil && rate / 2 >= Self.lowestRate {
                rate /= 2
                if try attempt(rate) { met = rate } else { missed = rate }
            }
        }
        guard var low = met, var high = missed else { return Outcome(maxRate: nil, atCeiling: false, steps: steps) }
        while (high - low) / low > precision {
            let middle = (low + high) / 2
            if try attempt(middle) { low = middle } else { high = middle }
        }
        return Outcome(maxRate: low, atCeiling: false, steps: steps)
    }

    /// Below one request a second a step of a few seconds measures nothing.
    static let lowestRate = 1.0
}
