#if canImport(Glibc)
import Glibc
#endif

/// One blocking TCP connection to memcached, used by one handler thread at a time (the pool
/// hands it out). Every read and write has the pool's timeout, so a memcached that stops
/// answering costs a request that long, never a thread.
final class MemcachedConnection {
    private let fd: Int32
    private let address: String
    private var input = MemcachedInput()

    /// Connects with `timeoutMilliseconds` (a non-blocking connect and poll), then sets the
    /// socket blocking with that timeout on every read and write.
    init(host: String, port: Int, timeoutMilliseconds: Int) throws(CacheFailure) {
        address = "\(host):\(port)"
        let resolved = try MemcachedAddress.resolve(host: host, port: port)
        // A local until every way to fail is behind us: an init that throws once every
        // property is set runs deinit, and a second close would close whatever descriptor
        // another thread (the loop accepting a client) had been given that number meanwhile.
        let fd = socket(resolved.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw CacheFailure(503, "memcached: cannot open a socket: \(String(cString: strerror(errno)))") }
        if resolved.withSockaddr({ connect(fd, $0, $1) }) != 0 {
            guard errno == EINPROGRESS else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw CacheFailure(503, "memcached at \(host):\(port) is unreachable: \(reason)")
            }
            var waiting = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            let ready = poll(&waiting, 1, Int32(timeoutMilliseconds))
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            guard ready == 1, error == 0 else {
                close(fd)
                let reason = ready == 0 ? "no connection within \(timeoutMilliseconds) ms" : String(cString: strerror(error))
                throw CacheFailure(503, "memcached at \(host):\(port) is unreachable: \(reason)")
            }
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: (timeoutMilliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends `command` and reads until its reply is whole, following a reply that asks for
    /// another command.
    func run(_ command: MemcachedCommand) throws(CacheFailure) -> MemcachedReply {
        var command = command
        while true {
            try send(command.request)
            var reply = try command.parse(&input)
            while reply == nil {
                try fill()
                reply = try command.parse(&input)
            }
            guard case .next(let following) = reply! else { return reply! }
            command = following
        }
    }

    private func send(_ bytes: [UInt8]) throws(CacheFailure) {
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw failure("write") }
            sent += count
        }
    }

    private func fill() throws(CacheFailure) {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        guard count > 0 else { throw count == 0 ? CacheFailure(503, "memcached at \(address) closed the connection") : failure("read") }
        chunk.withUnsafeBytes { input.append(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
    }

    private func failure(_ operation: String) -> CacheFailure {
        let reason = errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : String(cString: strerror(errno))
        return CacheFailure(503, "memcached at \(address): \(operation) failed: \(reason)")
    }
}

/// Where memcached listens, resolved: what the blocking and the loop's connections connect to.
struct MemcachedAddress: Sendable {
    let family: Int32
    /// A `sockaddr` of its family.
    let bytes: [UInt8]

    static func resolve(host: String, port: Int) throws(CacheFailure) -> MemcachedAddress {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &found)
        guard status == 0, let first = found else {
            throw CacheFailure(503, "memcached at \(host):\(port): cannot resolve the host: \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(found) }
        return MemcachedAddress(family: first.pointee.ai_family,
                                bytes: Array(UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen))))
    }

    func withSockaddr<Result>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Result) -> Result {
        bytes.withUnsafeBytes { raw in body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count)) }
    }
}

/// A few connections to memcached per process, reused across requests. A request takes an idle
/// one, or opens one while fewer than `capacity` exist, or waits up to the timeout for one to
/// come back. A connection that failed is closed, not returned, so a memcached that restarts is
/// reached again by the next request. After a failed connect, requests fail at once for a
/// short while instead of each waiting for its own connect to fail.
final class MemcachedConnectionPool: @unchecked Sendable {
    let host: String
    let port: Int
    let capacity: Int
    let timeoutMilliseconds: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let returned = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var idle: [MemcachedConnection] = []
    private var open = 0
    /// The last connect failure and when it happened (CLOCK_MONOTONIC ns).
    private var lastFailure: (at: UInt64, failure: CacheFailure)?
    static let retryAfterFailureNanoseconds: UInt64 = 100_000_000

    init(host: String, port: Int, capacity: Int, timeoutMilliseconds: Int) {
        self.host = host
        self.port = port
        self.capacity = capacity
        self.timeoutMilliseconds = timeoutMilliseconds
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(returned, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(returned)
        pthread_mutex_destroy(mutex)
        returned.deallocate()
        mutex.deallocate()
    }

    /// True when the last connect failed and no connect has succeeded since.
    var isUnreachable: Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return lastFailure != nil
    }

    /// Runs `body` on a connection. A connection that had been idle may have been closed by a
    /// memcached that restarted meanwhile: when one fails, the other idle ones are closed too
    /// and `body` runs once more on a new connection.
    func withConnection<Result>(_ body: (MemcachedConnection) throws(CacheFailure) -> Result) throws(CacheFailure) -> Result {
        var (connection, reused) = try take()
        while true {
            do {
                let result = try body(connection)
                give(back: connection, healthy: true)
                return result
            } catch {
                give(back: connection, healthy: false)
                guard reused else { throw error }
                dropIdle()
                (connection, reused) = try take()
            }
        }
    }

    private func dropIdle() {
        pthread_mutex_lock(mutex)
        let stale = idle
        idle.removeAll()
        open -= stale.count
        pthread_mutex_unlock(mutex)
    }

    /// A connection, and whether it had served before.
    private func take() throws(CacheFailure) -> (MemcachedConnection, Bool) {
        pthread_mutex_lock(mutex)
        let deadline = MonotonicClock.now() + UInt64(timeoutMilliseconds) * 1_000_000
        while idle.isEmpty && open == capacity {
            var until = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
            if pthread_cond_timedwait(returned, mutex, &until) == ETIMEDOUT && idle.isEmpty && open == capacity {
                pthread_mutex_unlock(mutex)
                throw CacheFailure(503, "all \(capacity) memcached connections of this process stayed busy for \(timeoutMilliseconds) ms", connectionsBusy: true)
            }
        }
        if let connection = idle.popLast() {
            pthread_mutex_unlock(mutex)
            return (connection, true)
        }
        if let (at, failure) = lastFailure, MonotonicClock.now() - at < Self.retryAfterFailureNanoseconds {
            pthread_mutex_unlock(mutex)
            throw failure
        }
        open += 1
        pthread_mutex_unlock(mutex)
        do {
            let connection = try MemcachedConnection(host: host, port: port, timeoutMilliseconds: timeoutMilliseconds)
            pthread_mutex_lock(mutex)
            lastFailure = nil
            pthread_mutex_unlock(mutex)
            return (connection, false)
        } catch {
            pthread_mutex_lock(mutex)
            open -= 1
            lastFailure = (MonotonicClock.now(), error)
            pthread_cond_signal(returned)
            pthread_mutex_unlock(mutex)
            throw error
        }
    }

    private func give(back connection: MemcachedConnection, healthy: Bool) {
        pthread_mutex_lock(mutex)
        if healthy { idle.append(connection) } else { open -= 1 }
        pthread_cond_signal(returned)
        pthread_mutex_unlock(mutex)
    }
}
