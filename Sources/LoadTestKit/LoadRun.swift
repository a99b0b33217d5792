import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A run: `threads` workers, the connections (and in the open model the rate) spread across
/// them, results merged per endpoint and in total.
public enum LoadRun {
    public struct Summary: Sendable {
        /// All endpoints together.
        public var results: Results
        /// One per endpoint, in the plan's order.
        public var endpoints: [Results]
        /// The measured time (warm-up excluded), in seconds.
        public var duration: Double
        /// The run in intervals of `LoadPlan.interval`, all endpoints together.
        public var intervals: [IntervalSummary]?
        /// When the measurement began (the warm-up's end), in seconds since the epoch.
        public var startedAt: Double

        public init(endpoints: [Results], duration: Double, intervals: [IntervalSummary]? = nil, startedAt: Double = 0) {
            self.endpoints = endpoints
            self.duration = duration
            self.intervals = intervals
            self.startedAt = startedAt
            results = Results()
            for endpoint in endpoints { results.merge(endpoint) }
        }

        public var requestsPerSecond: Double { duration > 0 ? Double(results.completed) / duration : 0 }
    }

    /// Runs `plan`: the open model when it has a rate (shared by the threads as their
    /// connections are), the closed model otherwise. `progress`, if given, is called on this
    /// thread about once a second with the time since the start and everything measured so far;
    /// `interval`, with each interval as it ends (all threads' slices merged), in order, and
    /// when measuring began (seconds since the epoch).
    public static func run(_ plan: LoadPlan, progress: ((_ elapsed: Double, _ soFar: Results) -> Void)? = nil,
                           interval: ((IntervalSlice, _ startedAt: Double) -> Void)? = nil) throws -> Summary {
        let address = try ResolvedAddress(plan.target)
        let tls = plan.target.secure ? try TLSContext(plan.tls) : nil
        let threads = plan.effectiveThreads
        let startAt = MonotonicClock.now()
        let startedAt = Date().timeIntervalSince1970 + plan.warmup
        let workers = try (0..<threads).map { index in
            let share = plan.connections / threads + (index < plan.connections % threads ? 1 : 0)
            return try LoadWorker(plan: plan, address: address, connections: share,
                                  rate: plan.rate.map { $0 * Double(share) / Double(plan.connections) }, startAt: startAt,
                                  watched: progress != nil, tls: tls)
        }
        let group = DispatchGroup()
        for worker in workers {
            group.enter()
            let thread = Thread {
                worker.run()
                group.leave()
            }
            thread.start()
        }
        let clock = plan.intervalClock
        let collector = IntervalCollector(recorders: workers.map(\.intervals), clock: clock,
                                          endpoints: plan.endpoints.count, openModel: plan.rate != nil)
        var summaries: [IntervalSummary] = []
        func collectIntervals() {
            for slice in collector.collect() {
                summaries.append(IntervalSummary(slice, start: clock.start(slice.index), length: clock.length(slice.index)))
                interval?(slice, startedAt)
            }
        }
        var lastProgress = startAt
        // Intervals are taken a few times a second, so that a long run holds only a few.
        while group.wait(timeout: .now() + min(0.25, plan.interval / 2)) == .timedOut {
            collectIntervals()
            if let progress, MonotonicClock.now() - lastProgress >= 1_000_000_000 {
                lastProgress = MonotonicClock.now()
                var soFar = Results()
                for worker in workers { worker.progress.withLock { soFar.merge($0) } }
                progress(Double(lastProgress - startAt) / 1e9, soFar)
            }
        }
        collectIntervals()
        var endpoints = plan.endpoints.map { _ in Results() }
        for worker in workers {
            for (index, results) in worker.results.enumerated() { endpoints[index].merge(results) }
        }
        return Summary(endpoints: endpoints, duration: plan.duration, intervals: summaries, startedAt: startedAt)
    }

    /// Before the run: one connection attempt (retried a few times), so an unreachable target
    /// is a clear error rather than a run full of connect errors; for https, one handshake, so
    /// that an untrusted certificate is too.
    public static func checkReachable(_ target: Target, tls options: TLSOptions = TLSOptions(), attempts: Int = 3) throws {
        let address = try ResolvedAddress(target)
        let tls = target.secure ? try TLSContext(options) : nil
        var lastError = ""
        for attempt in 0..<attempts {
            let fd = address.makeSocket()
            if fd >= 0 {
                let connected = address.withSockaddr { connect(fd, $0, $1) } == 0
                lastError = String(cString: strerror(errno))
                defer { close(fd) }
                if connected {
                    try tls?.check(socket: fd, host: target.host)
                    return
                }
            }
            if attempt < attempts - 1 { usleep(200_000) }
        }
        throw LoadError("cannot connect to \(target.host):\(target.port): \(lastError)")
    }
}
