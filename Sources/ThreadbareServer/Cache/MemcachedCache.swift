import Synchronization

/// `cache.backend: memcached`: the entries live in a pool of memcached servers, as a Python
/// service moves shared state out of its processes; every lookup pays a round trip and the
/// encoding. Each key lives on one server, chosen as libmemcached's ketama chooses it
/// (`KetamaRing`), so pylibmc clients with `ketama: True` on the same list share the entries.
/// Each server is a `MemcachedNode` with connections of its own; a prefork master opens none,
/// so no socket is shared across a fork. The protocol itself is `MemcachedCommand`'s.
///
/// One server down costs the keys it holds: their reads and writes answer 503 naming it (a
/// read-through computes and answers without storing), every other key is served, and the
/// server is tried again as requests come. Keys are not moved to the others meanwhile, as
/// libmemcached does not move them unless told to eject servers.
///
/// Eviction and expiry are memcached's: LRU under its memory limit (`-m`), TTLs as given.
public final class MemcachedCache: CacheBackend {
    let nodes: [MemcachedNode]
    private let ring: KetamaRing
    private let hits = Atomic<Int>(0)
    private let misses = Atomic<Int>(0)

    /// memcached's default item size limit (`-I 1m`), less the item's own overhead; a larger
    /// item is refused by memcached and answered 413.
    public var maxEntryBytes: Int { MemcachedCommand.maxEntryBytes }
    public var name: String { "memcached" }
    public var isSharedByProcesses: Bool { true }
    public var countsReadsPerProcess: Bool { true }
    public var blocksOnNetwork: Bool { true }
    public var entryLimit: Int? { nil }
    public var byteLimit: Int? {
        let limit = nodes.reduce(0) { $0 + $1.memoryLimit }
        return limit > 0 ? limit : nil
    }

    public var details: [(String, JSONValue)] {
        [("reachable", .bool(isReachable)), ("servers", .array(nodes.map(\.json)))]
    }

    /// False while any server of the pool cannot be reached.
    public var isReachable: Bool { nodes.allSatisfy(\.isReachable) }

    /// `servers` are `host:port` (a missing port is 11211, an IPv6 host in brackets), in the
    /// order the other clients of the pool list them: the order decides nothing but ties, yet
    /// the host must be written the same way (`localhost` and `127.0.0.1` are different points).
    public init(servers: [String], connections: Int, timeoutMilliseconds: Int) throws {
        let parsed = try Self.parse(servers)
        nodes = parsed.map { MemcachedNode(host: $0.host, port: $0.port, connections: connections, timeoutMilliseconds: timeoutMilliseconds) }
        ring = KetamaRing(servers: parsed)
    }

    /// A pool's list: at least one server, none twice.
    static func parse(_ servers: [String]) throws -> [(host: String, port: Int)] {
        guard !servers.isEmpty else { throw CacheSetupError(description: "cache.memcached: no servers given") }
        var parsed: [(host: String, port: Int)] = []
        for server in servers {
            let address = try parse(server)
            guard !parsed.contains(where: { $0 == address }) else {
                throw CacheSetupError(description: "cache.memcached: \(server) is listed twice")
            }
            parsed.append(address)
        }
        return parsed
    }

    /// `host:port`, `host` (port 11211) or `[v6]:port`, as pylibmc reads a server.
    static func parse(_ server: String) throws -> (host: String, port: Int) {
        var host = Substring(server), portText: Substring?
        if server.hasPrefix("[") {
            guard let close = server.firstIndex(of: "]") else {
                throw CacheSetupError(description: "cache.memcached: '\(server)': an IPv6 address in brackets lacks its ]")
            }
            host = server[server.index(after: server.startIndex)..<close]
            let rest = server[server.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw CacheSetupError(description: "cache.memcached: expected [host]:port, got '\(server)'") }
                portText = rest.dropFirst()
            }
        } else if let colon = server.firstIndex(of: ":") {
            host = server[..<colon]
            portText = server[server.index(after: colon)...]
        }
        let port = portText.map { Int($0) } ?? KetamaRing.defaultPort
        guard !host.isEmpty, !host.contains(where: { $0.isWhitespace || $0 == "," || $0 == "[" || $0 == "]" }), let port,
              (1...65_535).contains(port) else {
            throw CacheSetupError(description: "cache.memcached: expected host:port, got '\(server)'")
        }
        return (String(host), port)
    }

    /// The server that holds `key`.
    func node(for key: CacheKey) -> MemcachedNode { nodes[ring.server(for: key.bytes)] }

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

    /// On a handler thread: the operation over a pooled blocking connection to the key's
    /// server; the figures from every server.
    public func perform(_ operation: CacheOperation) throws(CacheFailure) -> CacheOutcome {
        guard let key = operation.key else {
            return try total(nodes.map { node in Result { () throws(CacheFailure) in try node.perform(MemcachedCommand.statistics) } })
        }
        let command = try MemcachedCommand.make(operation)
        if let answer = try command.answerWithoutSending() { return try settle(answer) }
        return try settle(try node(for: key).perform(command))
    }

    /// On a loop: the operation over that loop's non-blocking connections.
    public func start(_ operation: CacheOperation, on loop: LoopHandle,
                      completion: @escaping @Sendable (Result<CacheOutcome, CacheFailure>) -> Void) {
        guard let key = operation.key else { return gatherStatistics(on: loop, completion: completion) }
        let command: MemcachedCommand
        do {
            command = try MemcachedCommand.make(operation)
            if let answer = try command.answerWithoutSending() { return completion(.success(try settle(answer))) }
        } catch {
            return completion(.failure(error))
        }
        node(for: key).start(command, on: loop) { [self] reply in
            completion(reply.flatMap { reply in Result { () throws(CacheFailure) in try settle(reply) } })
        }
    }

    /// `stats` from every server at once, on the loop; the completion runs when the last answers.
    private func gatherStatistics(on loop: LoopHandle, completion: @escaping @Sendable (Result<CacheOutcome, CacheFailure>) -> Void) {
        let replies = Locked([Result<MemcachedReply, CacheFailure>?](repeating: nil, count: nodes.count))
        for (index, node) in nodes.enumerated() {
            node.start(MemcachedCommand.statistics, on: loop) { [self] reply in
                let all = replies.withLock { replies -> [Result<MemcachedReply, CacheFailure>]? in
                    // A server's answer counts once: a second would answer the request twice.
                    guard replies[index] == nil else { return nil }
                    replies[index] = reply
                    return replies.allSatisfy { $0 != nil } ? replies.map { $0! } : nil
                }
                if let all { completion(Result { () throws(CacheFailure) in try total(all) }) }
            }
        }
    }

    /// The pool's figures: the sum over the servers that answered, each server's kept for
    /// `details`. Only when none answers is it a failure.
    private func total(_ replies: [Result<MemcachedReply, CacheFailure>]) throws(CacheFailure) -> CacheOutcome {
        var sum = CacheStatistics()
        var failures: [CacheFailure] = []
        for (node, reply) in zip(nodes, replies) {
            switch reply {
            case .success(.figures(let figures)):
                let statistics = CacheStatistics(
                    entries: figures["curr_items"] ?? 0, bytes: figures["bytes"] ?? 0,
                    hits: figures["get_hits"] ?? 0, misses: figures["get_misses"] ?? 0, evictions: figures["evictions"] ?? 0,
                    expirations: (figures["reclaimed"] ?? 0) + (figures["crawler_reclaimed"] ?? 0))
                node.note(statistics, limit: figures["limit_maxbytes"] ?? 0)
                sum += statistics
            case .success:
                let failure = Self.unexpected("a reply to stats")
                node.note(failure)
                failures.append(failure)
            case .failure(let failure):
                node.note(failure)
                failures.append(failure)
            }
        }
        if failures.count == nodes.count, let first = failures.first {
            throw nodes.count == 1 ? first : CacheFailure(first.status, failures.map(\.message).joined(separator: "; "))
        }
        // memcached's get_hits count every client's reads, and this process's content-type
        // note lookups too; the hit ratio is of this process's own reads (each server's own
        // figures are in `details`).
        sum.hits = hits.load(ordering: .relaxed)
        sum.misses = misses.load(ordering: .relaxed)
        return .statistics(sum)
    }

    /// Counts a read's hit or miss.
    private func settle(_ reply: MemcachedReply) throws(CacheFailure) -> CacheOutcome {
        switch reply {
        case .outcome(.entry(let entry)):
            if entry == nil { misses.add(1, ordering: .relaxed) } else { hits.add(1, ordering: .relaxed) }
            return .entry(entry)
        case .outcome(let outcome):
            return outcome
        case .figures:
            throw Self.unexpected("a reply to a key's operation")
        case .next:
            throw Self.unexpected("an unfinished exchange")
        }
    }

    public var processStatistics: CacheStatistics {
        var figures = CacheStatistics()
        for node in nodes { figures += node.figures }
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

extension CacheOperation {
    /// The key the operation is about; nil for the whole cache's figures.
    var key: CacheKey? {
        switch self {
        case .get(let key, _), .put(let key, _, _), .remove(let key): key
        case .statistics: nil
        }
    }
}
