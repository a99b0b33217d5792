/// What a handler may use: the process's lock, its cache, the endpoint limits, and the
/// server's own figures for the introspection endpoints.
public struct HandlerContext: Sendable {
    public let lock: any InterpreterLock
    public let cache: ShardedCache
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
    public let accounting: RequestAccounting
    public let inFlight: SharedCounter
    let startedAt = MonotonicClock.now()
    let queueDepth: @Sendable () -> Int
    let routes: [Route]

    init(mode: Mode, loops: Int, accounting: RequestAccounting, inFlight: SharedCounter,
         queueDepth: @escaping @Sendable () -> Int, routes: [Route]) {
        self.mode = mode
        self.loops = loops
        self.accounting = accounting
        self.inFlight = inFlight
        self.queueDepth = queueDepth
        self.routes = routes
    }

    var uptimeSeconds: Double { Double(MonotonicClock.elapsed(since: startedAt)) / 1e9 }
}
