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

/// One thread of the closed model: its own event base and keep-alive connections, each sending
/// its next request as soon as the previous one completes. libevent's evhttp parses the
/// answers (status, headers, Content-Length and chunked bodies). Everything here runs on the
/// worker's thread.
final class ClosedLoopWorker: @unchecked Sendable {
    final class Connection {
        unowned let worker: ClosedLoopWorker
        let handle: OpaquePointer
        var sentAt: UInt64 = 0
        var outstanding = false
        var answered = false
        var failure: String?

        init(worker: ClosedLoopWorker, handle: OpaquePointer) {
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

    init(plan: LoadPlan, connections count: Int, startAt: UInt64) throws {
        self.plan = plan
        guard let base = event_base_new() else { throw LoadError("event_base_new failed") }
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
        for connection in connections { send(on: connection) }
        let stopper = event_new(base, -1, 0, { _, _, arg in
            event_base_loopbreak(OpaquePointer(arg!))
        }, UnsafeMutableRawPointer(base))
        let remaining = deadline > MonotonicClock.now() ? deadline - MonotonicClock.now() : 0
        var wait = timeval(tv_sec: Int(remaining / 1_000_000_000), tv_usec: Int(remaining % 1_000_000_000 / 1000))
        event_add(stopper, &wait)
        event_base_dispatch(base)
        event_free(stopper)
        results.inFlightAtEnd = connections.filter { $0.outstanding && $0.sentAt >= measureFrom }.count
    }

    private func send(on connection: Connection) {
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
        if evhttp_make_request(connection.handle, request, method, plan.target.pathAndQuery) != 0 {
            connection.outstanding = false
            if connection.sentAt >= measureFrom { results.count(error: "write") }
        }
    }

    private func answered(_ request: UnsafeMutablePointer<evhttp_request>?, on connection: Connection) {
        let now = MonotonicClock.now()
        connection.outstanding = false
        let measured = connection.sentAt >= measureFrom && now <= deadline
        let status = request.map { Int(evhttp_request_get_response_code($0)) } ?? 0
        if status == 0 {
            if measured { results.count(error: connection.failure ?? "read") }
        } else {
            connection.answered = true
            if measured {
                results.completed += 1
                results.recordLatency((now - connection.sentAt) / 1000)
                if !(200..<300).contains(status) { results.count(error: "status_\(status)") }
                if let request, let timing = evhttp_find_header(evhttp_request_get_input_headers(request), "Server-Timing") {
                    for metric in serverTimingDurations(String(cString: timing)) {
                        results.recordServerTiming(metric.name, milliseconds: metric.milliseconds)
                    }
                }
            }
        }
        if now < deadline { send(on: connection) }
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
