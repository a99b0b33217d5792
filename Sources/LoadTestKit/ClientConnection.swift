import CLibevent
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// One keep-alive connection of a load thread: a non-blocking socket with a read event that
/// stays registered for the connection's life, and a write event added only while a connect
/// or a partial write waits. A request is written straight from the read callback that
/// completed the previous one, so a keep-alive request costs one send, one read and no
/// epoll_ctl. Everything here runs on the owning worker's thread.
///
/// An https connection runs OpenSSL over the same socket and events: a handshake after the
/// connect (resuming the worker's last session when there is one), then SSL_write and SSL_read
/// where plain HTTP has send and read.
final class ClientConnection {
    enum Phase {
        case closed, connecting, handshaking, writing, reading, idle
    }

    unowned let worker: LoadWorker
    private(set) var phase = Phase.closed
    private var socket: Int32 = -1
    /// The connection's TLS session (an SSL*), https only.
    private var tls: OpaquePointer?
    /// An SSL_read wanted the socket writable (a key update with a full send buffer): the
    /// write event's callback reads again.
    private var readWantsWrite = false
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    /// A connect that failed at once; reported a moment later by the worker (`failLater`), so
    /// a refused port cannot recurse through fail → next request → connect.
    private var immediateConnectError: Int32 = 0

    private(set) var parser = ResponseParser()
    /// The request on this connection: its endpoint, when it was due, when it was sent.
    private(set) var endpoint = 0
    private(set) var intendedAt: UInt64 = 0
    private(set) var sentAt: UInt64 = 0
    private var request = UnsafeRawBufferPointer(start: nil, count: 0)
    private var written = 0

    init(worker: LoadWorker) {
        self.worker = worker
    }

    /// A templated request's bytes, rendered here for each send (kept until it is written).
    private var scratch = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    deinit {
        close()
        scratch.deallocate()
    }

    /// `prefix`, the key in decimal, `suffix`: into this connection's own buffer.
    /// Runs for every templated request, so the digits go straight into the buffer.
    func render(_ prefix: [UInt8], _ key: Int, _ suffix: [UInt8]) -> UnsafeRawBufferPointer {
        var digitCount = 1
        var rest = key / 10
        while rest > 0 {
            digitCount += 1
            rest /= 10
        }
        let length = prefix.count + digitCount + suffix.count
        if scratch.count < length {
            scratch.deallocate()
            scratch = .allocate(byteCount: length + 32, alignment: 1)
        }
        prefix.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: scratch[..<prefix.count]).copyMemory(from: $0) }
        rest = key
        for position in stride(from: prefix.count + digitCount - 1, through: prefix.count, by: -1) {
            scratch[position] = UInt8(0x30 + rest % 10)
            rest /= 10
        }
        suffix.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: scratch[(prefix.count + digitCount)..<length]).copyMemory(from: $0) }
        return UnsafeRawBufferPointer(rebasing: scratch[..<length])
    }

    /// Whether a request is on it: sent or being sent, not yet answered.
    var busy: Bool { phase == .connecting || phase == .handshaking || phase == .writing || phase == .reading }

    func send(endpoint: Int, request: UnsafeRawBufferPointer, expectsBody: Bool, intendedAt: UInt64, now: UInt64) {
        self.endpoint = endpoint
        self.request = request
        self.intendedAt = intendedAt
        sentAt = now
        written = 0
        parser.reset(expectingBody: expectsBody)
        if socket < 0 {
            open()
        } else {
            phase = .writing
            flush()
        }
    }

    /// Why the request failed, as an error kind (and what OpenSSL said, for TLS): the caller
    /// counts it.
    func fail(_ kind: String, reason: String? = nil) {
        close()
        worker.failed(self, kind: kind, reason: reason)
    }

    func close() {
        if let tls {
            // close_notify, written and not waited for: without it OpenSSL would also mark
            // the session unfit to resume.
            if SSL_is_init_finished(tls) == 1 { _ = SSL_shutdown(tls) }
            SSL_free(tls)
            ERR_clear_error()
            self.tls = nil
        }
        readWantsWrite = false
        if let readEvent { event_free(readEvent) }
        if let writeEvent { event_free(writeEvent) }
        readEvent = nil
        writeEvent = nil
        if socket >= 0 { Glibc.close(socket) }
        socket = -1
        phase = .closed
    }

    // MARK: Events

    private func open() {
        phase = .connecting
        socket = worker.address.makeSocket(flags: Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
        guard socket >= 0 else {
            immediateConnectError = errno
            return failSoon()
        }
        var on: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        let this = Unmanaged.passUnretained(self).toOpaque()
        readEvent = event_new(worker.base, socket, Int16(EV_READ | EV_PERSIST), { _, _, arg in
            Unmanaged<ClientConnection>.fromOpaque(arg!).takeUnretainedValue().readable()
        }, this)
        writeEvent = event_new(worker.base, socket, Int16(EV_WRITE), { _, _, arg in
            Unmanaged<ClientConnection>.fromOpaque(arg!).takeUnretainedValue().writable()
        }, this)
        let rc = worker.address.withSockaddr { connect(socket, $0, $1) }
        if rc != 0 && errno != EINPROGRESS {
            immediateConnectError = errno
            return failSoon()
        }
        event_add(writeEvent, nil)
    }

    private func failSoon() {
        // Not busy meanwhile, so the timeout sweep leaves it to the report below.
        phase = .closed
        worker.failLater(self)
    }

    /// Reports a connect that failed at once (see `immediateConnectError`).
    func reportImmediateFailure() {
        guard immediateConnectError != 0 else { return }
        immediateConnectError = 0
        fail("connect")
    }

    private func writable() {
        if phase == .connecting {
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(socket, SOL_SOCKET, SO_ERROR, &error, &length)
            guard error == 0 else { return fail("connect") }
            event_add(readEvent, nil)
            if let context = worker.tls {
                tls = context.session(on: socket, host: worker.plan.target.host, resuming: worker.resumable)
                guard let tls else { return fail("tls_handshake", reason: TLSContext.lastError()) }
                _ = threadbare_ssl_set_owner(tls, Unmanaged.passUnretained(self).toOpaque())
                phase = .handshaking
                return handshake()
            }
            phase = .writing
        }
        if phase == .handshaking { return handshake() }
        if readWantsWrite, let tls {
            readWantsWrite = false
            return readableTLS(tls)
        }
        flush()
    }

    /// Drives the TLS handshake as far as the socket allows; the read event (registered) or
    /// the write event (added here) brings it back.
    private func handshake() {
        guard let tls else { return }
        let result = SSL_do_handshake(tls)
        if result == 1 {
            worker.handshook(self, resumed: SSL_session_reused(tls) == 1)
            phase = .writing
            return flush()
        }
        switch SSL_get_error(tls, result) {
        case SSL_ERROR_WANT_READ:
            return
        case SSL_ERROR_WANT_WRITE:
            event_add(writeEvent, nil)
        default:
            let (kind, reason) = worker.tls!.failure(of: tls, result: result)
            fail(kind, reason: reason)
        }
    }

    private func flush() {
        if let tls { return flushTLS(tls) }
        while written < request.count {
            // MSG_NOSIGNAL: a peer that has closed gives EPIPE, not a SIGPIPE that ends the run.
            let count = Glibc.send(socket, request.baseAddress! + written, request.count - written, Int32(MSG_NOSIGNAL))
            if count > 0 {
                written += count
            } else if count < 0 && errno == EINTR {
                continue
            } else if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                event_add(writeEvent, nil)
                return
            } else {
                return fail("write")
            }
        }
        if phase == .writing { phase = .reading }
    }

    private func flushTLS(_ tls: OpaquePointer) {
        while written < request.count {
            let count = SSL_write(tls, request.baseAddress! + written, Int32(request.count - written))
            if count > 0 {
                written += Int(count)
                continue
            }
            switch SSL_get_error(tls, count) {
            case SSL_ERROR_WANT_WRITE:
                event_add(writeEvent, nil)
                return
            case SSL_ERROR_WANT_READ:
                // TLS wants the peer's bytes first: the read event comes back here.
                return
            default:
                ERR_clear_error()
                return fail("write")
            }
        }
        if phase == .writing { phase = .reading }
    }

    private func readable() {
        if let tls { return readableTLS(tls) }
        let buffer = worker.readBuffer
        let count = Glibc.read(socket, buffer.baseAddress!, buffer.count)
        if count < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
            return busy ? fail("read") : close()
        }
        guard busy else {
            // The server closed (or wrote to) a connection with no request on it: an idle
            // keep-alive connection timing out. The next request opens a new one.
            return close()
        }
        if count == 0 {
            if parser.finishAtClose() { return complete(keepOpen: false) }
            // Cut short: a response begun and never finished, or none at all.
            return fail(parser.started ? "bad_response" : "read")
        }
        let (used, outcome) = parser.consume(UnsafeRawBufferPointer(start: buffer.baseAddress, count: count))
        switch outcome {
        case .needMore:
            return
        case .malformed:
            fail("bad_response")
        case .complete:
            // Bytes after a whole response, with no request asking for them, leave the
            // connection in an unknown state: the answer counts, the connection does not stay.
            complete(keepOpen: parser.keepAlive && used == count)
        }
    }

    /// SSL_read until OpenSSL wants more from the socket: it may hold a whole record's bytes
    /// that epoll cannot see, so one read per event would leave an answer waiting.
    private func readableTLS(_ tls: OpaquePointer) {
        if phase == .handshaking { return handshake() }
        if phase == .writing {
            // Writing may have waited on the peer's bytes; then, as in plain HTTP, an answer
            // that comes before the whole request (a 413) is read rather than left to spin.
            flushTLS(tls)
            guard self.tls == tls, busy else { return }
        }
        let buffer = worker.readBuffer
        while true {
            let count = SSL_read(tls, buffer.baseAddress!, Int32(buffer.count))
            if count > 0 {
                guard busy else { return close() }
                let (used, outcome) = parser.consume(UnsafeRawBufferPointer(start: buffer.baseAddress, count: Int(count)))
                switch outcome {
                case .needMore: continue
                case .malformed: return fail("bad_response")
                case .complete: return complete(keepOpen: parser.keepAlive && used == Int(count) && SSL_pending(tls) == 0)
                }
            }
            switch SSL_get_error(tls, count) {
            case SSL_ERROR_WANT_READ:
                // All read: an answer's next bytes, or only a session ticket, are yet to come.
                return
            case SSL_ERROR_WANT_WRITE:
                readWantsWrite = true
                event_add(writeEvent, nil)
                return
            case SSL_ERROR_ZERO_RETURN:
                guard busy else { return close() }
                if parser.finishAtClose() { return complete(keepOpen: false) }
                return fail(parser.started ? "bad_response" : "read")
            default:
                ERR_clear_error()
                return busy ? fail("read") : close()
            }
        }
    }

    private func complete(keepOpen: Bool) {
        // An answer that came before the whole request was written (a 413, say) leaves the
        // rest unsent: that connection cannot carry another request.
        if keepOpen && written == request.count { phase = .idle } else { close() }
        worker.answered(self)
    }
}
