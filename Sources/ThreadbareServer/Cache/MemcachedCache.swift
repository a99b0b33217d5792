import Synchronization

/// `cache.backend: memcached`: the entries live in a memcached server, as a Python service
/// moves shared state out of its processes; every lookup pays a round trip and the encoding.
/// Each process has its own small pool of blocking connections for handler threads
/// (`MemcachedConnectionPool`) and, on each event loop that uses it, a pool of non-blocking ones
/// (`MemcachedLoopClient`); a prefork master opens none, so no socket is shared across a fork.
/// The protocol itself is `MemcachedCommand`'s.
///
/// Eviction and expiry are memcached's: LRU under its memory limit (`-m`), TTLs as given.
public final class MemcachedCache: CacheBackend {
    public let host: String
    public let port: Int
    private let pool: MemcachedConnectionPool
    private let connectionsPerLoop: Int
    private let timeoutMilliseconds: Int
    private let reachability = MemcachedReachability()
    /// By loop index; each client is used on its loop's thread only.
    private let loopClients = Locked<[Int: MemcachedLoopClient]>([:])
    private let hits = Atomic<Int>(0)
    private let misses = Atomic<Int>(0)
    /// The server's figures from the last `stats` this process read.
    private let lastSeen = Locked(CacheStatistics())
    private let memoryLimit = Atomic<Int>(0)

    /// memcached's default item size limit (`-I 1m`), less the item's own overhead and the
    /// content-type header; a larger item is refused by memcached and answered 413.
    public var maxEntryBytes: Int { MemcachedCommand.maxEntryBytes }
    public var name: String { "memcached" }
    public var isSharedByProcesses: Bool { true }
    public var blocksOnNetwork: Bool { true }
    public var entryLimit: Int? { nil }
    public var byteLimit: Int? {
        let limit = memoryLimit.load(ordering: .relaxed)
        return limit > 0 ? limit : nil
    }

    public var details: [(String, JSONValue)] {
        [("address", .string("\(host):\(port)")), ("reachable", .bool(isReachable))]
    }

    /// False from a failed connect, on a thread or a loop, until the next one that succeeds.
    public var isReachable: Bool { !pool.isUnreachable && reachability.isReachable }

    /// `address` is `host:port`; the port is required.
    public init(address: String, connections: Int, timeoutMilliseconds: Int) throws {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (1...65_535).contains(port), colon != address.startIndex else {
            throw CacheSetupError(description: "cache.memcached: expected host:port, got '\(address)'")
        }
        host = String(address[..<colon]).trimmingBrackets
        self.port = port
        pool = MemcachedConnectionPool(host: host, port: port, capacity: connections, timeoutMilliseconds: timeoutMilliseconds)
        connectionsPerLoop = connections
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// Each value arrives as a copy of the request's own: nothing another thread shares.
    public var referenceCounts: ReferenceCountTally? { nil }

    public func get(_ key: CacheKey, touches: Int) throws(CacheFailure) -> CacheEntry? {
        guard case .entry(let entry) = try perform(.get(key, touches: touches)) else { throw Self.unexpected("a reply to mg") }
        return entry
    }

    public func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int) throws(CacheFailure) -> CachePutOutcome {
        guard case .stored(let outcome) = try perform(.put(key, entry, timeToLive: timeToLive)) else { throw Self.unexpected("a reply to ms") }
        return outcome
    }

    public func remove(_ key: CacheKey) throws(CacheFailure) -> Bool {
        guard case .removed(let removed) = try perform(.remove(key)) else { throw Self.unexpected("a reply to md") }
        return removed
    }

    public var statistics: CacheStatistics {
        get throws(CacheFailure) {
            guard case .statistics(let statistics) = try perform(.statistics) else { throw Self.unexpected("a reply to stats") }
            return statistics
        }
    }

    /// On a handler thread: the operation over a pooled blocking connection.
    public func perform(_ operation: CacheOperation) throws(CacheFailure) -> CacheOutcome {
        let command = try MemcachedCommand.make(operation)
        if let answer = try command.answerWithoutSending() { return try settle(answer) }
        return try settle(try pool.withConnection { connection throws(CacheFailure) in try connection.run(command) })
    }

    /// On a loop: the operation over that loop's non-blocking connections.
    public func start(_ operation: CacheOperation, on loop: LoopHandle,
                      completion: @escaping @Sendable (Result<CacheOutcome, CacheFailure>) -> Void) {
        let command: MemcachedCommand
        do {
            command = try MemcachedCommand.make(operation)
            if let answer = try command.answerWithoutSending() { return completion(.success(try settle(answer))) }
        } catch {
            return completion(.failure(error))
        }
        client(for: loop).run(command) { [self] reply in
            completion(reply.flatMap { reply in Result { () throws(CacheFailure) in try settle(reply) } })
        }
    }

    private func client(for loop: LoopHandle) -> MemcachedLoopClient {
        loopClients.withLock { clients in
            if let client = clients[loop.index] { return client }
            let client = MemcachedLoopClient(loop: loop, host: host, port: port, capacity: connectionsPerLoop,
                                             timeoutMilliseconds: timeoutMilliseconds, reachability: reachability)
            clients[loop.index] = client
            return client
        }
    }

    /// Counts a read's hit or miss, and keeps what `stats` said.
    private func settle(_ reply: MemcachedReply) throws(CacheFailure) -> CacheOutcome {
        switch reply {
        case .outcome(.entry(let entry)):
            if entry == nil { misses.add(1, ordering: .relaxed) } else { hits.add(1, ordering: .relaxed) }
            return .entry(entry)
        case .outcome(let outcome):
            return outcome
        case .figures(let figures):
            let statistics = CacheStatistics(
                entries: figures["curr_items"] ?? 0, bytes: figures["bytes"] ?? 0,
                hits: figures["get_hits"] ?? 0, misses: figures["get_misses"] ?? 0, evictions: figures["evictions"] ?? 0,
                expirations: (figures["reclaimed"] ?? 0) + (figures["crawler_reclaimed"] ?? 0))
            lastSeen.withLock { $0 = statistics }
            memoryLimit.store(figures["limit_maxbytes"] ?? 0, ordering: .relaxed)
            return .statistics(statistics)
        case .next:
            throw Self.unexpected("an unfinished exchange")
        }
    }

    public var processStatistics: CacheStatistics {
        var figures = lastSeen.withLock { $0 }
        figures.hits = hits.load(ordering: .relaxed)
        figures.misses = misses.load(ordering: .relaxed)
        // Evictions and expirations happen inside memcached, to no one process.
        figures.evictions = 0
        figures.expirations = 0
        return figures
    }

    private static func unexpected(_ what: String) -> CacheFailure {
        CacheFailure(502, "memcached: expected \(what)")
    }
}

private extension String {
    /// `[::1]` names the IPv6 host `::1`.
    var trimmingBrackets: String { hasPrefix("[") && hasSuffix("]") ? String(dropFirst().dropLast()) : self }
}
