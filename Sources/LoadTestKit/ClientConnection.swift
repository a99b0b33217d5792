import CLibevent
#if canImport(Glibc)
import Glibc
#endif

/// One keep-alive connection of a load thread: a non-blocking socket with a read event that
/// stays registered for the connection's life, and a write event added only while a connect
/// or a partial write waits. A request is written straight from the read callback that
/// completed the previous one, so a keep-alive request costs one send, one read and no
/// epoll_ctl. Everything here runs on the owning worker's thread.
final class ClientConnection {
    enum Phase {
        case closed, connecting, writing, reading, idle
    }

    unowned let worker: LoadWorker
    private(set) var phase = Phase.closed
    private var socket: Int32 = -1
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
    var busy: Bool { phase == .connecting || phase == .writing || phase == .reading }

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

    /// Why the request failed, as an error kind: the caller counts it.
    func fail(_ kind: String) {
        close()
        worker.failed(self, kind: kind)
    }

    func close() {
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
            phase = .writing
        }
        flush()
    }

    private func flush() {
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

    private func readable() {
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

    private func complete(keepOpen: Bool) {
        // An answer that came before the whole request was written (a 413, say) leaves the
        // rest unsent: that connection cannot carry another request.
        if keepOpen && written == request.count { phase = .idle } else { close() }
        worker.answered(self)
    }
}
