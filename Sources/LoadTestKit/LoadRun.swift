import Foundation

/// A run: `threads` workers, the connections (and in the open model the rate) spread across
/// them, results merged.
public enum LoadRun {
    public struct Summary: Sendable {
        public var results: Results
        /// The measured time (warm-up excluded), in seconds.
        public var duration: Double
        public var requestsPerSecond: Double { duration > 0 ? Double(results.completed) / duration : 0 }
    }

    /// Runs `plan`: the open model when it has a rate (shared evenly by the threads), the
    /// closed model otherwise.
    public static func run(_ plan: LoadPlan) throws -> Summary {
        let threads = max(1, min(plan.threads, plan.connections))
        let startAt = MonotonicClock.now()
        let workers = try (0..<threads).map { index in
            let share = plan.connections / threads + (index < plan.connections % threads ? 1 : 0)
            return try LoadWorker(plan: plan, connections: share, rate: plan.rate.map { $0 * Double(share) / Double(plan.connections) },
                                  startAt: startAt)
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
        group.wait()
        var merged = Results()
        for worker in workers { merged.merge(worker.results) }
        return Summary(results: merged, duration: plan.duration)
    }

    /// Before the run: one connection attempt (retried a few times), so an unreachable target
    /// is a clear error rather than a run full of connect errors.
    public static func checkReachable(_ target: Target, attempts: Int = 3) throws {
        var lastError = ""
        for attempt in 0..<attempts {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(target.host, String(target.port), &hints, &list)
            guard rc == 0, let info = list else {
                throw LoadError("cannot resolve \(target.host): \(String(cString: gai_strerror(rc)))")
            }
            defer { freeaddrinfo(list) }
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, 0)
            if fd >= 0 {
                let connected = connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0
                lastError = String(cString: strerror(errno))
                close(fd)
                if connected { return }
            }
            if attempt < attempts - 1 { usleep(200_000) }
        }
        throw LoadError("cannot connect to \(target.host):\(target.port): \(lastError)")
    }
}
