import CLibevent
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One thread, one event_base, one evhttp.
///
/// evhttp is not thread-safe (libevent #1001, #883, #991), so everything that touches `base`,
/// `http` or an evhttp request runs on this loop's thread. Other threads reach the loop in one
/// way only: they leave a reply in the outbox, or set a flag, and ring the loop's doorbell, an
/// eventfd the loop polls like any socket. libevent is never called from another thread, so
/// its bases run without locks (`evthread_use_pthreads` cost 2% of /health throughput).
final class EventLoop: @unchecked Sendable {
    let index: Int
    let base: OpaquePointer
    let http: OpaquePointer
    private let service: any HTTPService
    private let headLimits: RequestHeadLimits
    let maxConnections: Int
    let maxHeaderBytes: Int
    let keepAlive: Bool
    let acceptsUpTo: Int?
    let logger = Logger(label: "threadbare.http")
    let inFlight: SharedCounter
    let counters: HTTPCounters
    /// Added to every answer, after the service's own headers.
    private let fixedHeaders: [(name: String, value: String)]
    private let tick: (@Sendable () -> Void)?
    private var tickEvent: OpaquePointer?

    // Cross-thread state.
    private let outbox = Locked<[LoopMail]>([])
    private let drainRequested = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    /// Set on the loop once draining has removed the listener and every connection it accepted
    /// is counted open: from then on the open-connection count can only fall.
    private let acceptingStopped = Atomic<Bool>(false)
    private let doorbell: Int32
    private var doorbellEvent: OpaquePointer?
    private var thread: OSThread?
    private let threadID = Atomic<UInt>(0)

    // Loop-confined state (the connection and deadline extensions use it too).
    var boundSocket: OpaquePointer?
    private var spareBatch: [LoopMail] = []
    /// `LoopHandle.callLater` jobs waiting for their time.
    var timers: [ObjectIdentifier: LoopTimer] = [:]
    /// When the loop came back from waiting on its sockets and began this turn's callbacks
    /// (0 between turns): noted by the first callback of the turn that reads the clock.
    private var turnStartedAt: UInt64 = 0
    var draining = false
    var connections: ConnectionTable
    /// Bufferevents of connections accepted in this turn of the loop, which evhttp has yet to
    /// finish setting up; each holds a reference so it outlives an early close.
    var newcomers: [OpaquePointer] = []
    var spareNewcomers: [OpaquePointer] = []
    var adoptEvent: OpaquePointer?
    /// Accepting pauses while accept(2) fails (out of descriptors), then retries.
    var resumeAcceptingEvent: OpaquePointer?
    var acceptPausesThisEpisode = 0
    /// Accepting pauses while the loop holds `acceptsUpTo` connections.
    var acceptPausedWhileBusy = false
    /// `request_timeout` as a libevent common timeout: every deadline has the same length, so
    /// libevent keeps their timers in one queue in arming order instead of its heap.
    var requestTimeout: UnsafePointer<timeval>?
    /// `request_read_timeout`, likewise.
    var requestReadTimeout: UnsafePointer<timeval>?
    /// `tick`, if given, runs on this loop's thread once a second: a heartbeat that stops when
    /// the loop stops turning.
    init(index: Int, of loopCount: Int, listeningFD: Int32, limits: HTTPLimits, service: any HTTPService,
         counters: HTTPCounters, fixedHeaders: [(name: String, value: String)] = [], tick: (@Sendable () -> Void)? = nil) throws {
        connections = ConnectionTable(loopIndex: index, loopCount: loopCount)
        self.counters = counters
        inFlight = counters.inFlight
        self.fixedHeaders = fixedHeaders
        self.tick = tick
        doorbell = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard doorbell >= 0 else { throw SocketError(description: "eventfd failed: \(String(cString: strerror(errno)))") }
        guard let base = Self.makeBase() else { throw SocketError(description: "event_base_new_with_config failed") }
        guard let http = evhttp_new(base) else { throw SocketError(description: "evhttp_new failed") }
        self.index = index
        self.base = base
        self.http = http
        self.service = service
        headLimits = limits.head
        maxConnections = limits.maxConnections
        maxHeaderBytes = limits.maxHeaderBytes
        keepAlive = limits.keepAlive
        acceptsUpTo = limits.acceptsUpTo
        requestTimeout = Self.commonTimeout(base, seconds: limits.requestTimeoutSeconds)
        requestReadTimeout = Self.commonTimeout(base, seconds: limits.requestReadTimeoutSeconds)

        evhttp_set_max_headers_size(http, limits.maxHeaderBytes)
        evhttp_set_max_body_size(http, limits.maxBodyBytes)
        var timeout = timeval(seconds: limits.timeoutSeconds)
        evhttp_set_timeout_tv(http, &timeout)
        evhttp_set_allowed_methods(http, HTTPMethod.evhttpMask)

        let this = Unmanaged.passUnretained(self).toOpaque()
        evhttp_set_gencb(http, { request, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().receive(request!)
        }, this)
        doorbellEvent = event_new(base, doorbell, Int16(EV_READ | EV_PERSIST), { _, _, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().answerDoorbell()
        }, this)
        event_add(doorbellEvent, nil)
        if tick != nil {
            tickEvent = event_new(base, -1, Int16(EV_PERSIST), { _, _, arg in
                Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().tick?()
            }, this)
            var second = timeval(tv_sec: 1, tv_usec: 0)
            event_add(tickEvent, &second)
        }
        guard let bound = evhttp_accept_socket_with_handle(http, listeningFD) else {
            throw SocketError(description: "evhttp_accept_socket failed on fd \(listeningFD)")
        }
        boundSocket = bound
        watchConnections(bound: bound)
    }

    /// The loop's thread holds the loop until it ends, so this runs only once the thread is
    /// done (or never started): the events this loop made are freed with nothing to race.
    deinit {
        for event in [doorbellEvent, tickEvent, adoptEvent, resumeAcceptingEvent] {
            if let event { event_free(event) }
        }
        freeTimers()
        close(doorbell)
    }

    /// A timer length libevent keeps in one queue for all its timers, or nil for 0 (no limit).
    private static func commonTimeout(_ base: OpaquePointer, seconds: Double) -> UnsafePointer<timeval>? {
        guard seconds > 0 else { return nil }
        var length = timeval(seconds: seconds)
        return event_base_init_common_timeout(base, &length)
    }

    /// An epoll base that batches its epoll_ctl changes. evhttp turns reading off and writing on
    /// and back again for every request; with the changelist, libevent applies only the net
    /// change once per loop iteration, so a keep-alive request costs two epoll_ctl calls instead
    /// of four (+20% /health throughput on plain C evhttp here, see bench/http_core.sh). The
    /// flag's one hazard, fds duplicated with dup(), does not arise: every fd a loop watches is
    /// its own.
    private static func makeBase() -> OpaquePointer? {
        guard let config = event_config_new() else { return nil }
        defer { event_config_free(config) }
        event_config_set_flag(config, Int32(EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST.rawValue))
        return event_base_new_with_config(config)
    }

    func start() throws {
        let this = self
        thread = try OSThread(name: "tb-loop-\(index)") {
            this.threadID.store(UInt(pthread_self()), ordering: .releasing)
            this.run()
        }
    }

    /// One turn at a time: wait for sockets and timers, run every callback that is due, then
    /// tell the service the turn is over. The doorbell stays registered, so the loop keeps
    /// running after draining removes the listener, until `stop` asks it to end.
    private func run() {
        let handle = LoopHandle(loop: self)
        while !stopRequested.load(ordering: .acquiring) {
            let failed = event_base_loop(base, EVLOOP_ONCE) < 0
            turnStartedAt = 0
            // Also on the way out: a loop thread must not end holding its lock.
            service.loopTurnEnded(handle)
            if failed {
                logger.critical("event_base_loop failed; the loop stops")
                return
            }
        }
    }

    var isCurrentThread: Bool {
        threadID.load(ordering: .acquiring) == UInt(pthread_self())
    }

    /// Loop-confined state is touched only on the loop's thread (checked in debug builds).
    @inline(__always)
    func assertOnLoop() {
        #if DEBUG
        precondition(isCurrentThread, "an event loop's own state touched from another thread")
        #endif
    }

    /// Notes the start of the turn, if this is its first callback to look.
    func markTurn(now: UInt64 = MonotonicClock.now()) {
        if turnStartedAt == 0 { turnStartedAt = now }
    }

    /// The first callback of a turn to ask marks the turn's start, so whatever it runs counts
    /// for the callbacks after it (a memcached reply, a timer, a deadline).
    func busyThisTurn(now: UInt64) -> UInt64 {
        markTurn(now: now)
        return now < turnStartedAt ? 0 : now - turnStartedAt
    }

    // MARK: Cross-thread entry points

    /// Queues a finished reply, or a job, for this loop. Only the post that finds the outbox empty wakes
    /// the loop, so one wake-up sends every reply that arrived meanwhile.
    func post(_ mail: LoopMail) {
        let wasEmpty = outbox.withLock { pending in
            pending.append(mail)
            return pending.count == 1
        }
        if wasEmpty { ringDoorbell() }
    }

    /// Stop accepting new connections; replies from now on ask clients to close.
    /// How long a keep-alive connection may stay silent once the server is draining.
    static let drainingIdleSeconds: Int32 = 1

    func beginDraining() {
        drainRequested.store(true, ordering: .releasing)
        ringDoorbell()
    }

    /// True once the loop accepts no more and counts every connection it accepted.
    var hasStoppedAccepting: Bool { acceptingStopped.load(ordering: .acquiring) }

    /// Called by adoption: the last newcomers of a draining loop are counted now.
    func noteAdoptedWhileDraining() {
        if draining { acceptingStopped.store(true, ordering: .releasing) }
    }

    /// Ends the loop after the replies already posted, and waits for the thread.
    func stop() {
        stopRequested.store(true, ordering: .releasing)
        ringDoorbell()
        thread?.join()
    }

    private func ringDoorbell() {
        var one: UInt64 = 1
        // EAGAIN means the counter is already non-zero: the loop will wake anyway.
        _ = write(doorbell, &one, MemoryLayout<UInt64>.size)
    }

    // MARK: Loop thread

    /// A request is in flight from here until its answer is written (on_complete) or its
    /// connection closes first (the close callback, which every connection has from its first
    /// request on), so a client that vanishes cannot leak the count.
    private func receive(_ request: UnsafeMutablePointer<evhttp_request>) {
        let receivedAt = MonotonicClock.now()
        markTurn(now: receivedAt)
        var connectionNumber = index
        var overLimit = false
        var framingRefusal: RequestFraming.Violation?
        if let connection = evhttp_request_get_connection(request) {
            let admitted = connections.admit(connection, withRequest: true)
            if admitted.isNew { opened(connection, replacing: admitted.replaced) }
            // A connection first seen here has just been given its read deadline: look again.
            if let entry = admitted.isNew ? connections.entry(for: connection) : admitted.entry {
                connectionNumber = entry.number
                overLimit = entry.overLimit
                framingRefusal = entry.framing?.refusalOfNextRequest()
                entry.readDeadline?.requestRead()
                counters.mostInFlight.raise(to: inFlight.increment())
            }
            evhttp_request_set_on_complete_cb(request, { request, arg in
                guard let connection = evhttp_request_get_connection(request) else { return }
                Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().answered(connection)
            }, Unmanaged.passUnretained(self).toOpaque())
        }

        let method = HTTPMethod(evhttp_request_get_command(request))
        let reply = ReplyHandle(loop: LoopHandle(loop: self), request: LoopConfinedRequest(pointer: request), headOnly: method == .head)
        // Before anything else reads the request: it is the stand-in for one refused unread.
        if let framingRefusal {
            counters.framingRefusals[framingRefusal.reason]?.add(1)
            service.refuse(receivedAt: receivedAt, status: framingRefusal.status, reason: framingRefusal.message, reply: reply)
            return
        }
        guard let method else {
            service.refuse(receivedAt: receivedAt, status: 501, reason: "this request method is not implemented", reply: reply)
            return
        }
        let uri = evhttp_request_get_evhttp_uri(request)
        let path = evhttp_uri_get_path(uri).map { String(cString: $0) } ?? "/"
        let query = evhttp_uri_get_query(uri).map { String(cString: $0) }
        if let refusal = overLimit
            ? (503, "this process already has max_connections (\(maxConnections)) open; retry later")
            : headLimits.violation(of: request, method: method) {
            service.refuse(receivedAt: receivedAt, status: refusal.status, reason: refusal.reason, reply: reply)
            return
        }
        let input = evhttp_request_get_input_buffer(request)
        var body: [UInt8] = []
        var contentType: String?
        let length = evbuffer_get_length(input)
        if length > 0 {
            body = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
                count = Int(evbuffer_copyout(input, buffer.baseAddress, length))
            }
        }
        // Only requests that may carry a body have a content type worth reading (an empty PUT
        // still does); skipping the header scan for GET keeps the common path short.
        if length > 0 || method == .put || method == .post || method == .patch {
            contentType = evhttp_find_header(evhttp_request_get_input_headers(request), "Content-Type")
                .map { String(cString: $0) }
        }
        let authorization = service.readsAuthorization
            ? evhttp_find_header(evhttp_request_get_input_headers(request), "Authorization").map { String(cString: $0) } : nil
        let parsed = HTTPRequest(
            method: method == .head ? .get : method, path: path, query: query,
            contentType: contentType, authorization: authorization, body: body, receivedAt: receivedAt, connection: connectionNumber)
        service.serve(parsed, reply: reply)
    }

    private func answerDoorbell() {
        var count: UInt64 = 0
        _ = read(doorbell, &count, MemoryLayout<UInt64>.size)
        markTurn()
        if drainRequested.load(ordering: .acquiring) && !draining {
            draining = true
            if let boundSocket {
                event_del(resumeAcceptingEvent)
                evhttp_del_accept_socket(http, boundSocket)
                self.boundSocket = nil
            }
            // Busy keep-alive connections end with their next answer (it says Connection:
            // close); idle ones are closed once they have been silent this long.
            for connection in connections.connections {
                evhttp_connection_set_timeout(connection, Self.drainingIdleSeconds)
            }
            // Connections accepted earlier in this turn are counted once adopted, just after.
            if newcomers.isEmpty { acceptingStopped.store(true, ordering: .releasing) }
        }
        flushOutbox()
        if stopRequested.load(ordering: .acquiring) {
            event_base_loopexit(base, nil)
        }
    }

    private func flushOutbox() {
        var batch = spareBatch
        outbox.withLock { swap(&$0, &batch) }
        for mail in batch {
            switch mail {
            case .reply(let reply): sendNow(reply)
            case .job(let job): job()
            }
        }
        batch.removeAll(keepingCapacity: true)
        spareBatch = batch
    }

    func sendNow(_ reply: PendingReply) {
        assertOnLoop()
        if let deadline = reply.deadline { disarm(deadline) }
        let request = reply.request.pointer
        let response = reply.response
        let headers = evhttp_request_get_output_headers(request)
        evhttp_add_header(headers, "Content-Type", response.contentType)
        // evhttp adds Content-Length itself to HTTP/1.1 answers with a body, but not to HEAD,
        // CONNECT or HTTP/1.0 answers: those get ours (evhttp then adds none of its own).
        // 204 carries no body and so no length (RFC 9110 §8.6).
        let evhttpAddsLength = !reply.headOnly && request.pointee.minor >= 1 && request.pointee.type != EVHTTP_REQ_CONNECT
        if response.status != 204 && !evhttpAddsLength {
            evhttp_add_header(headers, "Content-Length", String(response.body.count))
        }
        reply.timing.withHeaderValue { _ = evhttp_add_header(headers, "Server-Timing", $0) }
        for header in response.headers {
            evhttp_add_header(headers, header.name, header.value)
        }
        for header in fixedHeaders {
            evhttp_add_header(headers, header.name, header.value)
        }
        // The connection ends with this answer while draining, without keep-alive, or when the
        // service says so (a refusal). Without the client's own Connection header evhttp adds no
        // "keep-alive" of its own to an HTTP/1.0 answer, so "close" is the only word on it.
        let serviceCloses = response.headers.contains { $0.name == "Connection" && $0.value == "close" }
        if draining || !keepAlive || serviceCloses {
            evhttp_remove_header(evhttp_request_get_input_headers(request), "Connection")
            if !serviceCloses { evhttp_add_header(headers, "Connection", "close") }
        }
        if !reply.headOnly && !response.body.isEmpty {
            response.body.withUnsafeBytes { bytes in
                _ = evbuffer_add(evhttp_request_get_output_buffer(request), bytes.baseAddress, bytes.count)
            }
        }
        // libevent 2.1's table of reason phrases predates 431 (RFC 6585) and would say "Client Error".
        if response.status == 431 {
            evhttp_send_reply(request, 431, "Request Header Fields Too Large", nil)
        } else {
            evhttp_send_reply(request, Int32(response.status), nil, nil)
        }
    }
}
