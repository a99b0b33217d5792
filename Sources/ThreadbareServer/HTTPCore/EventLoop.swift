import CLibevent
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One thread, one event_base, one evhttp.
///
/// evhttp is not thread-safe (libevent #1001, #883, #991), so everything that touches `base`,
/// `http` or an evhttp request runs on this loop's thread. Other threads reach the loop in two
/// ways only, both through `event_active`, which libevent makes thread-safe once
/// `evthread_use_pthreads` has run: `post` (a finished reply) and `beginDraining`/`stop`.
final class EventLoop: @unchecked Sendable {
    let index: Int
    private let base: OpaquePointer
    private let http: OpaquePointer
    private let service: any HTTPService
    private let inFlight: SharedCounter

    // Cross-thread state.
    private let outbox = Locked<[PendingReply]>([])
    private let drainRequested = Atomic<Bool>(false)
    private var wakeEvent: OpaquePointer?
    private var controlEvent: OpaquePointer?
    private var thread: OSThread?
    private let threadID = Atomic<UInt>(0)

    // Loop-confined state.
    private var boundSocket: OpaquePointer?
    private var spareBatch: [PendingReply] = []
    private var draining = false
    /// Connections whose current request has not been answered yet. HTTP/1.1 without pipelining
    /// has at most one such request per connection; tracking the connection rather than the
    /// request lets the close callback settle a request whose client vanished.
    private var unanswered = Set<OpaquePointer>()

    init(index: Int, listeningFD: Int32, limits: HTTPLimits, service: any HTTPService, inFlight: SharedCounter) throws {
        Libevent.enableThreads()
        guard let base = event_base_new() else { throw SocketError(description: "event_base_new failed") }
        guard let http = evhttp_new(base) else { throw SocketError(description: "evhttp_new failed") }
        self.index = index
        self.base = base
        self.http = http
        self.service = service
        self.inFlight = inFlight

        evhttp_set_max_headers_size(http, limits.maxHeaderBytes)
        evhttp_set_max_body_size(http, limits.maxBodyBytes)
        var timeout = timeval(
            tv_sec: Int(limits.timeoutSeconds),
            tv_usec: Int((limits.timeoutSeconds - limits.timeoutSeconds.rounded(.down)) * 1_000_000))
        evhttp_set_timeout_tv(http, &timeout)
        evhttp_set_allowed_methods(http, HTTPMethod.evhttpMask)

        let this = Unmanaged.passUnretained(self).toOpaque()
        evhttp_set_gencb(http, { request, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().receive(request!)
        }, this)
        wakeEvent = event_new(base, -1, 0, { _, _, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().flushOutbox()
        }, this)
        controlEvent = event_new(base, -1, 0, { _, _, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().applyControl()
        }, this)
        guard let bound = evhttp_accept_socket_with_handle(http, listeningFD) else {
            throw SocketError(description: "evhttp_accept_socket failed on fd \(listeningFD)")
        }
        boundSocket = bound
    }

    func start() {
        let this = self
        thread = OSThread(name: "tb-loop-\(index)") {
            this.threadID.store(UInt(pthread_self()), ordering: .releasing)
            // Without NO_EXIT_ON_EMPTY the loop would return as soon as draining removes the
            // listener while replies are still to come through the outbox.
            event_base_loop(this.base, EVLOOP_NO_EXIT_ON_EMPTY)
        }
    }

    var isCurrentThread: Bool {
        threadID.load(ordering: .acquiring) == UInt(pthread_self())
    }

    // MARK: Cross-thread entry points

    /// Queues a finished reply for this loop. Only the post that finds the outbox empty wakes
    /// the loop, so one wake-up sends every reply that arrived meanwhile.
    func post(_ reply: PendingReply) {
        let wasEmpty = outbox.withLock { pending in
            pending.append(reply)
            return pending.count == 1
        }
        if wasEmpty { event_active(wakeEvent, 0, 0) }
    }

    /// Stop accepting new connections; replies from now on ask clients to close.
    func beginDraining() {
        drainRequested.store(true, ordering: .releasing)
        event_active(controlEvent, 0, 0)
    }

    /// Ends the loop after its current iteration and waits for the thread.
    func stop() {
        event_base_loopexit(base, nil)
        thread?.join()
    }

    // MARK: Loop thread

    private func receive(_ request: UnsafeMutablePointer<evhttp_request>) {
        let connection = evhttp_request_get_connection(request)
        if let connection, unanswered.insert(connection).inserted {
            inFlight.add(1)
            evhttp_connection_set_closecb(connection, { connection, arg in
                Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().settle(connection)
            }, Unmanaged.passUnretained(self).toOpaque())
        }
        evhttp_request_set_on_complete_cb(request, { request, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().settle(evhttp_request_get_connection(request))
        }, Unmanaged.passUnretained(self).toOpaque())

        let receivedAt = MonotonicClock.now()
        guard let method = HTTPMethod(evhttp_request_get_command(request)) else {
            evhttp_send_error(request, 501, nil)
            return
        }
        let uri = evhttp_request_get_evhttp_uri(request)
        let path = evhttp_uri_get_path(uri).map { String(cString: $0) } ?? "/"
        let query = evhttp_uri_get_query(uri).map { String(cString: $0) }
        let input = evhttp_request_get_input_buffer(request)
        var body: [UInt8] = []
        var contentType: String?
        let length = evbuffer_get_length(input)
        if length > 0 {
            body = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
                count = Int(evbuffer_copyout(input, buffer.baseAddress, length))
            }
            contentType = evhttp_find_header(evhttp_request_get_input_headers(request), "Content-Type")
                .map { String(cString: $0) }
        }
        let parsed = HTTPRequest(
            method: method == .head ? .get : method, path: path, query: query,
            contentType: contentType, body: body, receivedAt: receivedAt)
        service.serve(parsed, reply: ReplyHandle(
            loop: self, request: LoopConfinedRequest(pointer: request), headOnly: method == .head))
    }

    private func settle(_ connection: OpaquePointer?) {
        guard let connection, unanswered.remove(connection) != nil else { return }
        inFlight.subtract(1)
    }

    private func flushOutbox() {
        var batch = spareBatch
        outbox.withLock { swap(&$0, &batch) }
        for reply in batch { sendNow(reply) }
        batch.removeAll(keepingCapacity: true)
        spareBatch = batch
    }

    private func applyControl() {
        guard drainRequested.load(ordering: .acquiring), !draining else { return }
        draining = true
        if let boundSocket {
            evhttp_del_accept_socket(http, boundSocket)
            self.boundSocket = nil
        }
    }

    func sendNow(_ reply: PendingReply) {
        let request = reply.request.pointer
        let response = reply.response
        let headers = evhttp_request_get_output_headers(request)
        evhttp_add_header(headers, "Content-Type", response.contentType)
        // evhttp adds Content-Length itself to HTTP/1.1 answers that have a body; HEAD and
        // HTTP/1.0 answers need ours. 204 carries no body and so no length (RFC 9110 §8.6).
        if response.status != 204 && (reply.headOnly || request.pointee.minor == 0) {
            evhttp_add_header(headers, "Content-Length", String(response.body.count))
        }
        reply.timing.withHeaderValue { _ = evhttp_add_header(headers, "Server-Timing", $0) }
        for header in response.headers {
            evhttp_add_header(headers, header.name, header.value)
        }
        if draining {
            evhttp_add_header(headers, "Connection", "close")
        }
        if !reply.headOnly && !response.body.isEmpty {
            response.body.withUnsafeBytes { bytes in
                _ = evbuffer_add(evhttp_request_get_output_buffer(request), bytes.baseAddress, bytes.count)
            }
        }
        evhttp_send_reply(request, Int32(response.status), nil, nil)
    }
}

enum Libevent {
    private static let threadsEnabled: Bool = evthread_use_pthreads() == 0

    /// Makes `event_active` and `event_base_loopexit` safe to call from other threads. Must run
    /// before the first event_base is created.
    static func enableThreads() {
        precondition(threadsEnabled, "evthread_use_pthreads failed")
    }
}
