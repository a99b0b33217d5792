import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The HTTP machinery: `loops` event loops, each on its own SO_REUSEPORT socket, all feeding one
/// `HTTPService`. It knows nothing of endpoints.
public final class HTTPServer: Sendable {
    public let host: String
    public let port: Int
    private let loops: [EventLoop]
    private let counters: HTTPCounters

    /// `counters` are kept over all loops. `fixedHeaders` go on every answer; `tick` runs once
    /// a second on the first loop.
    public init(sockets: ListeningSockets, limits: HTTPLimits, service: any HTTPService, counters: HTTPCounters,
                fixedHeaders: [(name: String, value: String)] = [], tick: (@Sendable () -> Void)? = nil) throws {
        self.counters = counters
        self.host = sockets.host
        self.port = sockets.port
        self.loops = try sockets.fds.enumerated().map { index, fd in
            try EventLoop(index: index, of: sockets.fds.count, listeningFD: fd, limits: limits, service: service,
                          counters: counters, fixedHeaders: fixedHeaders, tick: index == 0 ? tick : nil)
        }
    }

    public var inFlight: Int { counters.inFlight.current }

    public func start() throws {
        try loops.forEach { try $0.start() }
    }

    /// Graceful stop: close the listening sockets, let in-flight requests finish and keep-alive
    /// clients leave (each connection's next answer asks it to close; one silent for a second is
    /// closed) for at most `timeout` seconds, then end the loops. A client that is sending its
    /// next request as the server stops thus gets an answer instead of a reset, and so does one
    /// that connected just before and sends its first request within that second. Returns the
    /// number of requests cut off.
    @discardableResult
    public func shutdown(gracefulTimeout timeout: Double) -> Int {
        loops.forEach { $0.beginDraining() }
        let started = MonotonicClock.now()
        let deadline = started + UInt64(max(0, timeout) * 1e9)
        // Until a loop has taken its listener away, it may still accept a connection that no
        // count shows yet; stopping then would close it unanswered (a reset, seen about once
        // in a thousand requests across prefork reloads).
        while !loops.allSatisfy(\.hasStoppedAccepting) && MonotonicClock.now() < deadline {
            usleep(1_000)
        }
        func busy() -> Bool { inFlight > 0 || counters.openConnections.current > 0 }
        while busy() && MonotonicClock.now() < deadline {
            usleep(5_000)
        }
        let cutOff = inFlight
        loops.forEach { $0.stop() }
        return cutOff
    }
}

/// What the loops count together: requests read and not yet fully answered, client connections
/// open now (from accept to close), connections ever accepted, those refused for
/// `max_connections`, the times accepting paused because accept(2) failed, and connections closed
/// for sending a request too slowly.
public final class HTTPCounters: Sendable {
    public let inFlight = SharedCounter()
    /// The most requests ever in flight at once.
    public let mostInFlight = SharedCounter()
    public let openConnections = SharedCounter()
    public let acceptedConnections = SharedCounter()
    public let refusedConnections = SharedCounter()
    public let acceptPauses = SharedCounter()
    public let readTimeouts = SharedCounter()
    /// Messages refused for their framing or syntax (RFC 9112), by the rule they broke.
    public let framingRefusals = Dictionary(uniqueKeysWithValues: RequestFraming.Reason.allCases.map { ($0, SharedCounter()) })
    public init() {}
}

/// A heap-allocated atomic counter that several objects share.
public final class SharedCounter: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    public func add(_ delta: Int) { value.add(delta, ordering: .relaxed) }
    /// Adds one and returns the new value.
    public func increment() -> Int { value.add(1, ordering: .relaxed).newValue }
    /// Keeps the larger of the current value and `candidate`: a high-water mark.
    public func raise(to candidate: Int) {
        var current = value.load(ordering: .relaxed)
        while candidate > current {
            let (exchanged, seen) = value.compareExchange(expected: current, desired: candidate, ordering: .relaxed)
            if exchanged { return }
            current = seen
        }
    }
    public func subtract(_ delta: Int) { value.subtract(delta, ordering: .relaxed) }
    public var current: Int { value.load(ordering: .relaxed) }
}
