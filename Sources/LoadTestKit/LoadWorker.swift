import CLibevent
import COpenSSL
import DequeModule
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a run sends and for how long.
public struct LoadPlan: Sendable {
    /// One or more, all on the same host and port (the connections are shared).
    public private(set) var endpoints: [Endpoint]
    public var connections: Int
    public var threads: Int
    public var duration: Double
    public var warmup: Double
    public var timeout: Double
    /// Requests per second over all threads: the open model. nil: the closed model.
    public var rate: Double?
    /// The length of each interval the run is also measured in (`--interval`), in seconds.
    public var interval: Double = 1
    /// How https connections check the server: every endpoint's the same, as they share connections.
    public var tls: TLSOptions {
        get { endpoints[0].tls }
        set { for index in endpoints.indices { endpoints[index].tls = newValue } }
    }

    public init(endpoints: [Endpoint], connections: Int, threads: Int, duration: Double, warmup: Double = 0, timeout: Double = 5) throws(LoadError) {
        guard let first = endpoints.first else { throw LoadError("no URL to load") }
        for endpoint in endpoints where endpoint.target.host != first.target.host || endpoint.target.port != first.target.port
            || endpoint.target.secure != first.target.secure {
            throw LoadError("every URL must be on the same scheme, host and port (\(first.name) and \(endpoint.name) are not): connections are shared")
        }
        if let problem = endpoints.lazy.compactMap(\.problem).first { throw LoadError(problem) }
        guard endpoints.allSatisfy({ $0.tls == first.tls }) else { throw LoadError("every URL must check the server's certificate the same way: connections are shared") }
        self.endpoints = endpoints
        self.connections = connections
        self.threads = threads
        self.duration = duration
        self.warmup = warmup
        self.timeout = timeout
    }

    public var target: Target { endpoints[0].target }
    public var intervalClock: IntervalClock { IntervalClock(length: interval, duration: duration) }
    /// Never more threads than connections.
    public var effectiveThreads: Int { max(1, min(threads, connections)) }
}

/// One load thread: its own event base and keep-alive connections, and one Results per
/// endpoint. Everything here runs on the worker's thread.
///
/// Closed model: each connection sends its next request as soon as the previous one is
/// answered. Open model (wrk2's): requests have intended send times on a fixed schedule, and a
/// request waits for a free connection if none is; its latency runs from the intended time
/// (corrected for coordinated omission), and from the actual send in a second histogram, so a
/// stall shows its whole effect in the first and hides in the second. A request's endpoint is
/// chosen by weight when it is due.
final class LoadWorker: @unchecked Sendable {
    let plan: LoadPlan
    let base: OpaquePointer
    let address: ResolvedAddress
    /// Every connection reads into this, one at a time.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    private(set) var results: [Results]
    private var connections: [ClientConnection] = []
    private let requests: [UnsafeMutableRawBufferPointer]
    /// Endpoints with `{key}`: their request around the key, and this thread's key draws.
    private let templates: [(prefix: [UInt8], suffix: [UInt8])?]
    private var samplers: [KeySampler?]
    private let expectsBody: [Bool]
    private var rotation: WeightedRotation
    private let measureFrom: UInt64
    private let deadline: UInt64
    private let timeout: UInt64

    /// Open model: nanoseconds between intended sends on this thread, the next intended time,
    /// and the requests still waiting for a free connection.
    private let interval: UInt64?
    private var nextIntended: UInt64 = 0
    private var backlog = Deque<(intendedAt: UInt64, endpoint: Int)>()
    private var idle: [ClientConnection] = []
    private var ticker: OpaquePointer?
    private var sendingDue = false
    private var failing: [ClientConnection] = []
    private var failer: OpaquePointer?
    /// For the live progress line: this thread's results so far (all endpoints together),
    /// copied here once a second by its own loop when `watched`. Not an Optional: testing an
    /// optional Mutex reads the lock word without the lock, which is a data race.
    let progress = Mutex(Results())
    private let watched: Bool
    let intervals: IntervalRecorder
    private var intervalTimer: OpaquePointer?
    /// https: the run's OpenSSL context, and the last session the server gave this thread's
    /// connections (an SSL_SESSION*), which the next one it opens resumes.
    let tls: TLSContext?
    private(set) var resumable: OpaquePointer?

    init(plan: LoadPlan, address: ResolvedAddress, connections count: Int, rate: Double?, startAt: UInt64, watched: Bool = false,
         tls: TLSContext? = nil) throws {
        self.watched = watched
        self.tls = tls
        interval = rate.map { UInt64(max(1, (1e9 / $0).rounded())) }
        nextIntended = startAt
        self.plan = plan
        self.address = address
        // The open model sends on a microsecond schedule, and epoll_wait alone rounds timeouts
        // to milliseconds: a precise timer (timerfd). Not in the closed model, where it would
        // cost a timerfd_settime call per loop iteration for nothing.
        guard let config = event_config_new() else { throw LoadError("event_config_new failed") }
        defer { event_config_free(config) }
        if rate != nil { event_config_set_flag(config, Int32(EVENT_BASE_FLAG_PRECISE_TIMER.rawValue)) }
        guard let base = event_base_new_with_config(config) else { throw LoadError("event_base_new failed") }
        self.base = base
        measureFrom = startAt + UInt64(plan.warmup * 1e9)
        deadline = measureFrom + UInt64(plan.duration * 1e9)
        timeout = UInt64(plan.timeout * 1e9)
        results = plan.endpoints.map { _ in Results() }
        intervals = IntervalRecorder(clock: plan.intervalClock, origin: measureFrom, endpoints: plan.endpoints.count, openModel: rate != nil)
        requests = plan.endpoints.map { endpoint in
            let bytes = endpoint.requestBytes
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return buffer
        }
        expectsBody = plan.endpoints.map { $0.method != "HEAD" }
        templates = plan.endpoints.map(\.requestParts)
        samplers = plan.endpoints.map { endpoint in endpoint.keys.map { KeySampler($0, seed: UInt64.random(in: 1...UInt64.max)) } }
        rotation = WeightedRotation(weights: plan.endpoints.map(\.weight))
        connections = (0..<count).map { _ in ClientConnection(worker: self) }
    }

    deinit {
        for connection in connections { connection.close() }
        connections.removeAll()
        for request in requests { request.deallocate() }
        if let resumable { SSL_SESSION_free(resumable) }
        readBuffer.deallocate()
        event_base_free(base)
    }

    /// Runs until the deadline; then counts what is still unanswered.
    func run() {
        let this = Unmanaged.passUnretained(self).toOpaque()
        failer = event_new(base, -1, 0, { _, _, arg in
            Unmanaged<LoadWorker>.fromOpaque(arg!).takeUnretainedValue().reportFailures()
        }, this)
        // Timeouts are found by a sweep rather than a timer per request, as wrk does.
        let sweeper = event_new(base, -1, Int16(EV_PERSIST), { _, _, arg in
            Unmanaged<LoadWorker>.fromOpaque(arg!).takeUnretainedValue().sweepTimeouts()
        }, this)
        var sweepEvery = timeval(tv_sec: 0, tv_usec: Int(max(0.001, min(plan.timeout / 4, 0.1)) * 1e6))
        event_add(sweeper, &sweepEvery)
        var publisher: OpaquePointer?
        if watched {
            publisher = event_new(base, -1, Int16(EV_PERSIST), { _, _, arg in
                Unmanaged<LoadWorker>.fromOpaque(arg!).takeUnretainedValue().publishProgress()
            }, this)
            var second = timeval(tv_sec: 1, tv_usec: 0)
            event_add(publisher, &second)
        }
        if interval != nil {
            idle = connections
            // Wakes at each intended send time (see sendDue), which sends or queues what is due.
            ticker = event_new(base, -1, 0, { _, _, arg in
                Unmanaged<LoadWorker>.fromOpaque(arg!).takeUnretainedValue().sendDue()
            }, this)
            sendDue()
        } else {
            let now = MonotonicClock.now()
            for connection in connections { issue(on: connection, endpoint: rotation.next(), intendedAt: now, now: now) }
        }
        intervalTimer = event_new(base, -1, 0, { _, _, arg in
            Unmanaged<LoadWorker>.fromOpaque(arg!).takeUnretainedValue().intervalEnded()
        }, this)
        armIntervalTimer()
        let stopper = event_new(base, -1, 0, { _, _, arg in
            event_base_loopbreak(OpaquePointer(arg!))
        }, UnsafeMutableRawPointer(base))
        let remaining = deadline > MonotonicClock.now() ? deadline - MonotonicClock.now() : 0
        var wait = timeval(tv_sec: Int(remaining / 1_000_000_000), tv_usec: Int(remaining % 1_000_000_000 / 1000))
        event_add(stopper, &wait)
        event_base_dispatch(base)
        for event in [stopper, sweeper, ticker, failer, publisher, intervalTimer] { if let event { event_free(event) } }
        ticker = nil
        failer = nil
        intervalTimer = nil
        for connection in connections where connection.busy && counts(connection, now: deadline) {
            results[connection.endpoint].inFlightAtEnd += 1
        }
        for waiting in backlog where waiting.intendedAt >= measureFrom {
            results[waiting.endpoint].inFlightAtEnd += 1
            results[waiting.endpoint].backlogAtEnd += 1
        }
        intervals.finish()
    }

    /// An interval has ended, with or without answers in it: it goes to the run's thread now.
    private func intervalEnded() {
        intervals.roll(to: MonotonicClock.now())
        armIntervalTimer()
    }

    private func armIntervalTimer() {
        guard let intervalTimer else { return }
        let now = MonotonicClock.now(), boundary = intervals.nextBoundary
        guard boundary < deadline else { return }
        // A millisecond late, so that the timer finds the interval ended rather than about to.
        let wait = (boundary > now ? boundary - now : 0) + 1_000_000
        var until = timeval(tv_sec: Int(wait / 1_000_000_000), tv_usec: Int(wait % 1_000_000_000 / 1000))
        event_add(intervalTimer, &until)
    }

    // MARK: Sending

    private func issue(on connection: ClientConnection, endpoint: Int, intendedAt: UInt64, now: UInt64) {
        var request = UnsafeRawBufferPointer(requests[endpoint])
        if let template = templates[endpoint], let key = samplers[endpoint]?.next() {
            request = connection.render(template.prefix, key, template.suffix)
        }
        connection.send(endpoint: endpoint, request: request, expectsBody: expectsBody[endpoint],
                        intendedAt: intendedAt, now: now)
    }

    private func sendDue() {
        // A send that fails at once comes back here through `next`; the outer call, still
        // walking the schedule, gives the freed connection the next due request.
        guard let interval, !sendingDue else { return }
        sendingDue = true
        defer { sendingDue = false }
        let now = MonotonicClock.now()
        while !backlog.isEmpty, let connection = idle.popLast() {
            let waiting = backlog.removeFirst()
            issue(on: connection, endpoint: waiting.endpoint, intendedAt: waiting.intendedAt, now: now)
        }
        while nextIntended <= now && nextIntended < deadline {
            let endpoint = rotation.next()
            if backlog.isEmpty, let connection = idle.popLast() {
                issue(on: connection, endpoint: endpoint, intendedAt: nextIntended, now: now)
            } else {
                // No free connection at its time: it waits, and the wait is part of its latency.
                backlog.append((nextIntended, endpoint))
                if nextIntended >= measureFrom { results[endpoint].lateSends += 1 }
            }
            nextIntended += interval
        }
        if let ticker, nextIntended < deadline {
            let wait = nextIntended > now ? nextIntended - now : 0
            var until = timeval(tv_sec: Int(wait / 1_000_000_000), tv_usec: Int(wait % 1_000_000_000 / 1000))
            event_add(ticker, &until)
        }
    }

    /// After an answer or a failure: the connection's next request (closed model), or back
    /// to the free connections (open model).
    private func next(after connection: ClientConnection, now: UInt64) {
        guard now < deadline else { return }
        if interval != nil {
            idle.append(connection)
            sendDue()
        } else {
            issue(on: connection, endpoint: rotation.next(), intendedAt: now, now: now)
        }
    }

    // MARK: Outcomes

    func answered(_ connection: ClientConnection) {
        let now = MonotonicClock.now()
        if lateForTheDeadline(connection, now: now) { return }
        if counts(connection, now: now) {
            let status = connection.parser.status
            let serverTiming = connection.parser.serverTiming
            let corrected = interval != nil
            let latency = (now - connection.intendedAt) / 1000, uncorrected = (now - connection.sentAt) / 1000
            results[connection.endpoint].record(status: status, latency: latency, uncorrected: corrected ? uncorrected : nil,
                                                serverTiming: serverTiming)
            intervals.answered(endpoint: connection.endpoint, status: status, latency: latency,
                               uncorrected: corrected ? uncorrected : nil, at: now)
        }
        next(after: connection, now: now)
    }

    /// A session the server handed out, which this worker now owns.
    func keep(_ session: OpaquePointer) {
        if let resumable { SSL_SESSION_free(resumable) }
        resumable = session
    }

    /// A TLS handshake finished: a full one, or a resumed session.
    func handshook(_ connection: ClientConnection, resumed: Bool) {
        guard MonotonicClock.now() >= measureFrom else { return }
        results[connection.endpoint].tlsHandshakes += 1
        if resumed { results[connection.endpoint].tlsResumed += 1 }
    }

    func failed(_ connection: ClientConnection, kind: String, reason: String? = nil) {
        let now = MonotonicClock.now()
        if lateForTheDeadline(connection, now: now) { return }
        if counts(connection, now: now) {
            results[connection.endpoint].count(error: kind)
            if let reason, results[connection.endpoint].errorReasons[kind] == nil { results[connection.endpoint].errorReasons[kind] = reason }
            intervals.failed(endpoint: connection.endpoint, kind: kind, at: now)
        }
        next(after: connection, now: now)
    }

    /// An outcome that arrives after the deadline, in the loop pass before the deadline's
    /// timer stops the loop, belongs to a request that was in flight at the deadline.
    private func lateForTheDeadline(_ connection: ClientConnection, now: UInt64) -> Bool {
        guard now > deadline else { return false }
        if counts(connection, now: deadline) { results[connection.endpoint].inFlightAtEnd += 1 }
        return true
    }

    /// Whether an outcome at `now` is part of the measurement. Closed model: everything that
    /// ends after the warm-up, as wrk counts, so a queue filled during the warm-up does not
    /// hide the rate of a short run. Open model: every request due after the warm-up, as the
    /// schedule says, whenever it ends.
    private func counts(_ connection: ClientConnection, now: UInt64) -> Bool {
        interval == nil ? now >= measureFrom : connection.intendedAt >= measureFrom
    }

    /// A connection whose connect failed at once reports it on the next loop iteration.
    /// Not at once but after a millisecond's timer: libevent runs an activated event again in
    /// the same pass, so a refused port (or no file descriptors left) would spin there and
    /// starve the connections that work, and the deadline's timer with them.
    func failLater(_ connection: ClientConnection) {
        failing.append(connection)
        if let failer, event_pending(failer, Int16(EV_TIMEOUT), nil) == 0 {
            var soon = timeval(tv_sec: 0, tv_usec: 1000)
            event_add(failer, &soon)
        }
    }

    private func reportFailures() {
        let due = failing
        failing.removeAll(keepingCapacity: true)
        for connection in due { connection.reportImmediateFailure() }
    }

    private func publishProgress() {
        var total = Results()
        for endpoint in results { total.merge(endpoint) }
        progress.withLock { $0 = total }
    }

    private func sweepTimeouts() {
        let now = MonotonicClock.now()
        // A timeout's failure may send a due request on a connection further down the list,
        // stamped after `now`: that one is not late.
        for connection in connections where connection.busy && now > connection.sentAt && now - connection.sentAt > timeout {
            connection.fail("timeout")
        }
    }
}

public struct LoadError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

enum MonotonicClock {
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
