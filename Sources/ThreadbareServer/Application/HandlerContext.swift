/// What every route may use: the endpoint limits and the server's own figures. The server's
/// own routes (health, stats) get only this: they run on the loop, outside every lock domain.
public struct ServerContext: Sendable {
    public let limits: EndpointLimits
    public let status: ServerStatus
    /// What a unit of handler code costs this build of the interpreter.
    public let interpreter: InterpreterCost
}

/// What application code may use besides: its lock session and its domain's cache (the objects
/// of the interpreter it runs in), and its deadline.
public struct HandlerContext: Sendable {
    public let lock: LockSession
    public let cache: any CacheBackend
    public let server: ServerContext
    /// The request's `request_timeout`, if one is set.
    public var deadline: ReplyDeadline?

    public var limits: EndpointLimits { server.limits }
    public var status: ServerStatus { server.status }

    /// Handler code's check point, once per unit of work: CPython's eval breaker, which both
    /// hands the GIL over when asked and raises an asynchronous exception in a thread. Here the
    /// exception is the deadline: a request past it stops computing, and its thread is free.
    @inline(__always)
    public func checkpoint() throws(RequestError) {
        lock.checkpoint()
        if let deadline, deadline.hasExpired {
            throw RequestError(504, "request_timeout passed; the handler stopped at a check point")
        }
    }

    /// `units` of work in Python: holding the lock, at this build's cost per unit, with a check
    /// point after each. Continues the chain `state` when given.
    public func runPython(units: Int, from state: UInt64? = nil) throws(RequestError) -> UInt64 {
        lock.lock.statistics.recordWork(heldUnits: units)
        return try CPUWork.run(units: units, from: state, extraRounds: server.interpreter.extraRounds) { () throws(RequestError) in
            try checkpoint()
        }
    }

    /// `units` of work in a C extension that lets go of the lock for them (hashlib, numpy):
    /// no check points, since nothing needs the lock back until it returns.
    public func runNative(units: Int, from state: UInt64? = nil) -> UInt64 {
        lock.lock.statistics.recordWork(releasedUnits: units)
        return lock.withReleased { CPUWork.run(units: units, from: state) }
    }
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
    /// Requests answered 504 by `request_timeout`, and how many of their handlers have since let
    /// go (finished late, stopped at a check point, or found the request expired in the queue).
    public let requestTimeouts = SharedCounter()
    public let lateHandlersDone = SharedCounter()
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

    /// Requests waiting for a handler thread, or for a dispatcher to hand them over, over all domains.
    func queueDepth() -> Int {
        domains.reduce(0) { $0 + $1.pool.depth + ($1.dispatcher?.depth ?? 0) }
    }

    var uptimeSeconds: Double { Double(MonotonicClock.elapsed(since: startedAt)) / 1e9 }
}
