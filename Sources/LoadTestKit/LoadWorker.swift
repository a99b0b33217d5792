import CLibevent
#if canImport(Glibc)
import Glibc
#endif

/// What a run sends and for how long.
public struct LoadPlan: Sendable {
    public var target: Target
    public var connections: Int
    public var threads: Int
    public var duration: Double
    public var warmup: Double
    public var timeout: Double
    /// Requests per second over all threads: the open model. nil: the closed model.
    public var rate: Double?
    public var method = "GET"
    public var headers: [(name: String, value: String)] = []
    public var body: [UInt8] = []

    public init(target: Target, connections: Int, threads: Int, duration: Double, warmup: Double = 0, timeout: Double = 5) {
        self.target = target
        self.connections = connections
        self.threads = threads
        self.duration = duration
        self.warmup = warmup
        self.timeout = timeout
    }
}

/// One load thread: its own event base and keep-alive connections; libevent's evhttp parses
/// the answers (status, headers, Content-Length and chunked bodies). Everything here runs on
/// the worker's thread.
///
/// Closed model: each connection sends its next request as soon as the previous one is
/// answered. Open model (wrk2's): requests have intended send times on a fixed schedule, and a
/// request waits for a free connection if none is; its latency runs from the intended time
/// (corrected for coordinated omission), and from the actual send in a second histogram, so a
/// stall shows its whole effect in the first and hides in the second.
final class LoadWorker: @unchecked Sendable {
    final class Connection {
        unowned let worker: LoadWorker
        let handle: OpaquePointer
        var sentAt: UInt64 = 0
        var intendedAt: UInt64 = 0
        var outstanding = false
        var answered = false
        var failure: String?

        init(worker: LoadWorker, handle: OpaquePointer) {
            self.worker = worker
            self.handle = handle
        }
    }

    let plan: LoadPlan
    private let base: OpaquePointer
    private var connections: [Connection] = []
    private(set) var results = Results()
    private let measureFrom: UInt64
    private let deadline: UInt64
    private let method: evhttp_cmd_type

    /// Open model: nanoseconds between intended sends on this thread, the next intended time,
    /// and the intended times still waiting for a free connection.
    private let interval: UInt64?
    private var nextIntended: UInt64 = 0
    private var backlog: [UInt64] = []
    private var idle: [Connection] = []
    private var ticker: OpaquePointer?

    init(plan: LoadPlan, connections count: Int, rate: Double?, startAt: UInt64) throws {
        interval = rate.map { UInt64(max(1, (1e9 / $0).rounded())) }
        nextIntended = startAt
        self.plan = plan
        // A precise timer (timerfd): the open model sends on a microsecond schedule, and
        // epoll_wait alone rounds timeouts to milliseconds.
        guard let config = event_config_new() else { throw LoadError("event_config_new failed") }
        defer { event_config_free(config) }
        event_config_set_flag(config, Int32(EVENT_BASE_FLAG_PRECISE_TIMER.rawValue))
        guard let base = event_base_new_with_config(config) else { throw LoadError("event_base_new failed") }
        self.base = base
        measureFrom = startAt + UInt64(plan.warmup * 1e9)
        deadline = measureFrom + UInt64(plan.duration * 1e9)
        method = Self.command(plan.method)
        for _ in 0..<count {
            guard let handle = evhttp_connection_base_new(base, nil, plan.target.host, plan.target.port) else {
                throw LoadError("cannot create a connection to \(plan.target.host):\(plan.target.port)")
            }
            var timeout = timeval(tv_sec: Int(plan.timeout), tv_usec: Int((plan.timeout - plan.timeout.rounded(.down)) * 1e6))
            evhttp_connection_set_timeout_tv(handle, &timeout)
            connections.append(Connection(worker: self, handle: handle))
        }
    }

    deinit {
        for connection in connections { evhttp_connection_free(connection.handle) }
        event_base_free(base)
    }

    static func command(_ method: String) -> evhttp_cmd_type {
        switch method {
        case "HEAD": EVHTTP_REQ_HEAD
        case "POST": EVHTTP_REQ_POST
        case "PUT": EVHTTP_REQ_PUT
        case "DELETE": EVHTTP_REQ_DELETE
        case "OPTIONS": EVHTTP_REQ_OPTIONS
        case "PATCH": EVHTTP_REQ_PATCH
        default: EVHTTP_REQ_GET
        }
    }

    /// Runs until the deadline; then counts what is still unanswered.
    func run() {
        if interval != nil {
            idle = connections
            // Wakes at each intended send time (see sendDue), which sends or queues what is due.
            ticker = event_new(base, -1, 0, { _, _, arg in
                Unmanaged<LoadWorker>.fromOpaque(arg!).takeUnretainedValue().sendDue()
            }, Unmanaged.passUnretained(self).toOpaque())
            sendDue()
        } else {
            for connection in connections { send(on: connection, intendedAt: MonotonicClock.now()) }
        }
        let stopper = event_new(base, -1, 0, { _, _, arg in
            event_base_loopbreak(OpaquePointer(arg!))
        }, UnsafeMutableRawPointer(base))
        let remaining = deadline > MonotonicClock.now() ? deadline - MonotonicClock.now() : 0
        var wait = timeval(tv_sec: Int(remaining / 1_000_000_000), tv_usec: Int(remaining % 1_000_000_000 / 1000))
        event_add(stopper, &wait)
        event_base_dispatch(base)
        event_free(stopper)
        if let ticker { event_free(ticker) }
        results.inFlightAtEnd = connections.filter { $0.outstanding && $0.intendedAt >= measureFrom }.count
            + backlog.filter { $0 >= measureFrom }.count
    }

    private func sendDue() {
        guard let interval else { return }
        let now = MonotonicClock.now()
        while !backlog.isEmpty, let connection = idle.popLast() {
            send(on: connection, intendedAt: backlog.removeFirst())
        }
        while nextIntended <= now && nextIntended < deadline {
            if backlog.isEmpty, let connection = idle.popLast() {
                send(on: connection, intendedAt: nextIntended)
            } else {
                // No free connection at its time: it waits, and the wait is part of its latency.
                backlog.append(nextIntended)
                if nextIntended >= measureFrom { results.lateSends += 1 }
            }
            nextIntended += interval
        }
        if let ticker, nextIntended < deadline {
            let wait = nextIntended > now ? nextIntended - now : 0
            var until = timeval(tv_sec: Int(wait / 1_000_000_000), tv_usec: Int(wait % 1_000_000_000 / 1000))
            event_add(ticker, &until)
        }
    }

    private func send(on connection: Connection, intendedAt: UInt64) {
        let arg = Unmanaged.passUnretained(connection).toOpaque()
        guard let request = evhttp_request_new({ request, arg in
            let connection = Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue()
            connection.worker.answered(request, on: connection)
        }, arg) else { return }
        evhttp_request_set_error_cb(request) { error, arg in
            let connection = Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue()
            connection.failure = switch error {
            case EVREQ_HTTP_TIMEOUT: "timeout"
            case EVREQ_HTTP_EOF: connection.answered ? "read" : "connect"
            case EVREQ_HTTP_REQUEST_CANCEL: nil
            default: "bad_response"
            }
        }
        let headers = evhttp_request_get_output_headers(request)
        evhttp_add_header(headers, "Host", plan.target.hostHeader)
        for header in plan.headers { evhttp_add_header(headers, header.name, header.value) }
        if !plan.body.isEmpty {
            plan.body.withUnsafeBytes { _ = evbuffer_add(evhttp_request_get_output_buffer(request), $0.baseAddress, $0.count) }
        }
        connection.failure = nil
        connection.outstanding = true
        connection.sentAt = MonotonicClock.now()
        connection.intendedAt = intendedAt
        if evhttp_make_request(connection.handle, request, method, plan.target.pathAndQuery) != 0 {
            connection.outstanding = false
            if intendedAt >= measureFrom { results.count(error: "write") }
            if interval != nil { idle.append(connection) }
        }
    }

    private func answered(_ request: UnsafeMutablePointer<evhttp_request>?, on connection: Connection) {
        let now = MonotonicClock.now()
        connection.outstanding = false
        let measured = connection.intendedAt >= measureFrom && now <= deadline
        let status = request.map { Int(evhttp_request_get_response_code($0)) } ?? 0
        if status == 0 {
            if measured { results.count(error: connection.failure ?? "read") }
        } else {
            connection.answered = true
            if measured {
                results.completed += 1
                results.recordLatency((now - connection.intendedAt) / 1000)
                if interval != nil { results.recordUncorrected((now - connection.sentAt) / 1000) }
                if !(200..<300).contains(status) { results.count(error: "status_\(status)") }
                if let request, let timing = evhttp_find_header(evhttp_request_get_input_headers(request), "Server-Timing") {
                    for metric in serverTimingDurations(String(cString: timing)) {
                        results.recordServerTiming(metric.name, milliseconds: metric.milliseconds)
                    }
                }
            }
        }
        guard now < deadline else { return }
        if interval != nil {
            idle.append(connection)
            sendDue()
        } else {
            send(on: connection, intendedAt: now)
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
