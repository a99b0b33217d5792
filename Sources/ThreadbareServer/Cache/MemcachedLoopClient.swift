import CLibevent
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// memcached from an event loop, without blocking it (aiomcache's way): up to `capacity`
/// non-blocking connections owned by one loop thread, each a bufferevent on the loop's base. An
/// operation takes an idle connection, opens one, or waits its turn for one; its reply is parsed
/// as it arrives and the completion runs on the loop. Every operation has the timeout to connect,
/// write and read. As with the blocking pool, a connection that fails is closed, a failure on a
/// reused one drops the idle ones and tries once more on a new connection, and after a failed
/// connect operations fail at once for a short while. An operation that waited the timeout for
/// a connection fails with 503, as the blocking pool's does.
///
/// Everything here runs on its loop's thread.
final class MemcachedLoopClient: @unchecked Sendable {
    typealias Completion = @Sendable (Result<MemcachedReply, CacheFailure>) -> Void

    /// Unowned: the loop outlives the cache's clients for the process's life, and a strong
    /// reference would close a cycle (loop → service → cache → client → loop).
    private unowned(unsafe) let loop: EventLoop
    private let host: String
    private let port: Int
    private let capacity: Int
    private let timeout: timeval
    private let reachability: MemcachedReachability
    private var idle: [MemcachedLoopConnection] = []
    private var open = 0
    private var waiting: [(command: MemcachedCommand, since: UInt64, completion: Completion)] = []
    private let timeoutNanoseconds: UInt64
    private var lastConnectFailure: (at: UInt64, failure: CacheFailure)?
    /// The address, resolved at the first connect and kept: a lookup blocks, so the loop makes
    /// it once (none at all for a numeric host).
    private var address: MemcachedAddress?

    init(loop: LoopHandle, host: String, port: Int, capacity: Int, timeoutMilliseconds: Int, reachability: MemcachedReachability) {
        self.loop = loop.loop
        timeoutNanoseconds = UInt64(timeoutMilliseconds) * 1_000_000
        self.host = host
        self.port = port
        self.capacity = capacity
        self.reachability = reachability
        timeout = timeval(seconds: Double(timeoutMilliseconds) / 1_000)
    }

    deinit {
        for connection in idle { connection.close() }
    }

    func run(_ command: MemcachedCommand, completion: @escaping Completion) {
        loop.assertOnLoop()
        // A connection memcached closed while it was idle.
        while let last = idle.last, last.isDead {
            idle.removeLast()
            last.close()
            open -= 1
        }
        if let connection = idle.popLast() {
            exchange(command, on: connection, reused: true, completion)
        } else if open < capacity {
            connectAndRun(command, completion)
        } else {
            waiting.append((command, MonotonicClock.now(), completion))
        }
    }

    private func connectAndRun(_ command: MemcachedCommand, _ completion: @escaping Completion) {
        if let (at, failure) = lastConnectFailure, MonotonicClock.now() - at < MemcachedConnectionPool.retryAfterFailureNanoseconds {
            return completion(.failure(failure))
        }
        let connection: MemcachedLoopConnection
        do {
            connection = try MemcachedLoopConnection(base: loop.base, address: try resolved(), timeout: timeout,
                                                     describing: "\(host):\(port)")
        } catch {
            connectFailed(error)
            return completion(.failure(error))
        }
        open += 1
        connection.onConnect = { [self] failure in
            if let failure {
                open -= 1
                connectFailed(failure)
                completion(.failure(failure))
                serveWaiting()
            } else {
                lastConnectFailure = nil
                reachability.set(true)
                exchange(command, on: connection, reused: false, completion)
            }
        }
    }

    private func connectFailed(_ failure: CacheFailure) {
        lastConnectFailure = (MonotonicClock.now(), failure)
        reachability.set(false)
    }

    private func exchange(_ command: MemcachedCommand, on connection: MemcachedLoopConnection, reused: Bool, _ completion: @escaping Completion) {
        connection.exchange(command) { [self] result in
            switch result {
            case .success(let reply):
                idle.append(connection)
                completion(.success(reply))
            case .failure(let failure):
                open -= 1
                connection.close()
                if reused && failure.status == 503 {
                    // A memcached that restarted left the idle connections dead too.
                    open -= idle.count
                    for stale in idle { stale.close() }
                    idle.removeAll()
                    connectAndRun(command, completion)
                } else {
                    completion(.failure(failure))
                }
            }
            serveWaiting()
        }
    }

    private func serveWaiting() {
        while !waiting.isEmpty && (!idle.isEmpty || open < capacity) {
            let next = waiting.removeFirst()
            guard MonotonicClock.now() - next.since < timeoutNanoseconds else {
                next.completion(.failure(CacheFailure(503, "all \(capacity) memcached connections of this loop stayed busy for \(timeoutNanoseconds / 1_000_000) ms", connectionsBusy: true)))
                continue
            }
            run(next.command, completion: next.completion)
        }
    }

    private func resolved() throws(CacheFailure) -> MemcachedAddress {
        if let address { return address }
        let resolved = try MemcachedAddress.resolve(host: host, port: port)
        address = resolved
        return resolved
    }
}

/// One non-blocking connection: a bufferevent, its unparsed input, and the exchange in progress.
/// Made, used and closed on its loop's thread only; Sendable so the loop's completions may
/// carry it.
final class MemcachedLoopConnection: @unchecked Sendable {
    private let bufferevent: OpaquePointer
    private var timeout: timeval
    private let describing: String
    private var input = MemcachedInput()
    private var command: MemcachedCommand?
    private var completion: (@Sendable (Result<MemcachedReply, CacheFailure>) -> Void)?
    /// Called once the connect finishes: nil, or why it failed.
    var onConnect: ((CacheFailure?) -> Void)?
    private var closed = false
    /// memcached closed it (or it failed) while it was idle; the client closes it.
    private(set) var isDead = false

    init(base: OpaquePointer, address: MemcachedAddress, timeout: timeval, describing: String) throws(CacheFailure) {
        guard let bufferevent = bufferevent_socket_new(base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else {
            throw CacheFailure(503, "memcached at \(describing): cannot make a connection")
        }
        self.bufferevent = bufferevent
        self.timeout = timeout
        self.describing = describing
        let this = Unmanaged.passUnretained(self).toOpaque()
        bufferevent_setcb(bufferevent, { _, arg in
            Unmanaged<MemcachedLoopConnection>.fromOpaque(arg!).takeUnretainedValue().readable()
        }, nil, { _, events, arg in
            Unmanaged<MemcachedLoopConnection>.fromOpaque(arg!).takeUnretainedValue().happened(events)
        }, this)
        bufferevent_set_timeouts(bufferevent, &self.timeout, &self.timeout)
        let started = address.withSockaddr { bufferevent_socket_connect(bufferevent, $0, Int32($1)) }
        guard started == 0 else {
            bufferevent_free(bufferevent)
            throw CacheFailure(503, "memcached at \(describing) is unreachable: \(String(cString: strerror(errno)))")
        }
        // Retained while the bufferevent can call back; `close` lets go.
        _ = Unmanaged.passRetained(self)
    }

    func exchange(_ command: MemcachedCommand, completion: @escaping @Sendable (Result<MemcachedReply, CacheFailure>) -> Void) {
        self.command = command
        self.completion = completion
        if command.request.isEmpty { return parse() }
        bufferevent_set_timeouts(bufferevent, &timeout, &timeout)
        bufferevent_enable(bufferevent, Int16(EV_READ | EV_WRITE))
        command.request.withUnsafeBytes { _ = bufferevent_write(bufferevent, $0.baseAddress, $0.count) }
    }

    func close() {
        guard !closed else { return }
        closed = true
        bufferevent_setcb(bufferevent, nil, nil, nil, nil)
        bufferevent_free(bufferevent)
        Unmanaged.passUnretained(self).release()
    }

    private func readable() {
        let buffer = bufferevent_get_input(bufferevent)
        let length = evbuffer_get_length(buffer)
        if length > 0, let bytes = evbuffer_pullup(buffer, length) {
            input.append(UnsafeRawBufferPointer(start: bytes, count: length))
            evbuffer_drain(buffer, length)
        }
        parse()
    }

    private func parse() {
        guard let command else { return }
        do {
            guard let reply = try command.parse(&input) else { return }
            if case .next(let following) = reply { return exchange(following, completion: completion!) }
            finish(.success(reply))
        } catch {
            finish(.failure(error))
        }
    }

    private func finish(_ result: Result<MemcachedReply, CacheFailure>) {
        let completion = self.completion
        command = nil
        self.completion = nil
        // Idle: a silent connection must not time out.
        bufferevent_set_timeouts(bufferevent, nil, nil)
        completion?(result)
    }

    private func happened(_ events: Int16) {
        if events & Int16(BEV_EVENT_CONNECTED) != 0 {
            var on: Int32 = 1
            setsockopt(bufferevent_getfd(bufferevent), Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
            let connected = onConnect
            onConnect = nil
            connected?(nil)
            return
        }
        let reason = events & Int16(BEV_EVENT_TIMEOUT) != 0 ? "timed out"
            : events & Int16(BEV_EVENT_EOF) != 0 ? "closed the connection" : String(cString: strerror(errno))
        let failure = CacheFailure(503, "memcached at \(describing): \(reason)")
        if let connected = onConnect {
            onConnect = nil
            close()
            return connected(CacheFailure(503, "memcached at \(describing) is unreachable: \(reason)"))
        }
        guard command != nil else {
            isDead = true
            return
        }
        finish(.failure(failure))
    }
}

/// Whether the last connect, from any thread or loop of this process, reached memcached.
final class MemcachedReachability: Sendable {
    private let reachable = Atomic<Bool>(true)
    func set(_ value: Bool) { reachable.store(value, ordering: .relaxed) }
    var isReachable: Bool { reachable.load(ordering: .relaxed) }
}
