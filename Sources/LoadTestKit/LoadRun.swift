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

        public init(endpoints: [Results], duration: Double) {
            self.endpoints = endpoints
            self.duration = duration
            results = Results()
            for endpoint in endpoints { results.merge(endpoint) }
        }

        public var requestsPerSecond: Double { duration > 0 ? Double(results.completed) / duration : 0 }
    }

    /// Runs `plan`: the open model when it has a rate (shared by the threads as their
    /// connections are), the closed model otherwise. `progress`, if given, is called on this
    /// thread about once a second with the time since the start and everything measured so far.
    public static func run(_ plan: LoadPlan, progress: ((_ elapsed: Double, _ soFar: Results) -> Void)? = nil) throws -> Summary {
        let address = try ResolvedAddress(plan.target)
        let threads = plan.effectiveThreads
        let startAt = MonotonicClock.now()
        let workers = try (0..<threads).map { index in
            let share = plan.connections / threads + (index < plan.connections % threads ? 1 : 0)
            return try LoadWorker(plan: plan, address: address, connections: share,
                                  rate: plan.rate.map { $0 * Double(share) / Double(plan.connections) }, startAt: startAt,
                                  watched: progress != nil)
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
        if let progress {
            while group.wait(timeout: .now() + 1) == .timedOut {
                var soFar = Results()
                for worker in workers { worker.progress.withLock { soFar.merge($0) } }
                progress(Double(MonotonicClock.now() - startAt) / 1e9, soFar)
            }
        } else {
            group.wait()
        }
        var endpoints = plan.endpoints.map { _ in Results() }
        for worker in workers {
            for (index, results) in worker.results.enumerated() { endpoints[index].merge(results) }
        }
        return Summary(endpoints: endpoints, duration: plan.duration)
    }

    /// Before the run: one connection attempt (retried a few times), so an unreachable target
    /// is a clear error rather than a run full of connect errors.
    public static func checkReachable(_ target: Target, attempts: Int = 3) throws {
        let address = try ResolvedAddress(target)
        var lastError = ""
        for attempt in 0..<attempts {
            let fd = address.makeSocket()
            if fd >= 0 {
                let connected = address.withSockaddr { connect(fd, $0, $1) } == 0
                lastError = String(cString: strerror(errno))
                close(fd)
                if connected { return }
            }
            if attempt < attempts - 1 { usleep(200_000) }
        }
        throw LoadError("cannot connect to \(target.host):\(target.port): \(lastError)")
    }
}
