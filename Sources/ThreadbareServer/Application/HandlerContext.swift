/// What a handler may use: its request's lock session and its domain's cache (the objects of
/// the interpreter it runs in), the endpoint limits, and the server's own figures for the
/// introspection endpoints. Routes placed on the loop run outside every domain and must not
/// touch `lock` or `cache`.
public struct HandlerContext: Sendable {
    public let lock: LockSession
    public let cache: any CacheBackend
    public let limits: EndpointLimits
    public let status: ServerStatus
}

public struct EndpointLimits: Sendable {
    public var ioMaxMilliseconds: Int
    public var cpuMaxWork: Int

    public init(ioMaxMilliseconds: Int, cpuMaxWork: Int) {
        self.ioMaxMilliseconds = ioMaxMilliseconds
        self.cpuMaxWork = cpuMaxWork
    }
}

/// The server's description of itself, read by `GET /`, `/stats` and `/metrics`.
public final class ServerStatus: Sendable {
    public static let version = "0.1.0"

    public let mode: Mode
    public let loops: Int
    public let switchInterval: Duration
    public let metrics: MetricsExport
    public let accounting: RequestAccounting
    public let counters: HTTPCounters
    public let domains: [InterpreterDomain]
    /// In a prefork worker: its slot on the master's scoreboard, where every worker is listed.
    public let seat: ScoreboardSeat?
    let startedAt = MonotonicClock.now()
    let routes: [Route]

    init(mode: Mode, loops: Int, switchInterval: Duration, metrics: MetricsExport, accounting: RequestAccounting,
         counters: HTTPCounters, domains: [InterpreterDomain], seat: ScoreboardSeat?, routes: [Route]) {
        self.seat = seat
        self.mode = mode
        self.loops = loops
        self.switchInterval = switchInterval
        self.metrics = metrics
        self.accounting = accounting
        self.counters = counters
        self.domains = domains
        self.routes = routes
    }

    /// Requests waiting for a handler thread, over all domains.
    func queueDepth() -> Int {
        domains.reduce(0) { $0 + $1.pool.depth }
    }

    var uptimeSeconds: Double { Double(MonotonicClock.elapsed(since: startedAt)) / 1e9 }
}
