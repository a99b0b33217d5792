/// One server of the memcached pool: a few blocking connections for handler threads
/// (`MemcachedConnectionPool`) and, on each event loop that uses it, non-blocking ones of its own
/// (`MemcachedLoopClient`). A server that cannot be reached costs the keys it holds and nothing
/// else: its failures are its own, and it is retried as requests come.
final class MemcachedNode: Sendable {
    /// `host:port` as the pool lists it.
    let address: String
    let host: String
    let port: Int
    private let pool: MemcachedConnectionPool
    private let connectionsPerLoop: Int
    private let timeoutMilliseconds: Int
    private let reachability = MemcachedReachability()
    /// By loop index; each client is used on its loop's thread only.
    private let loopClients = Locked<[Int: MemcachedLoopClient]>([:])
    /// The server's figures from the last `stats` this process read, and why the last one failed.
    private let lastSeen = Locked<(figures: CacheStatistics, limit: Int, failure: String?)>((CacheStatistics(), 0, nil))

    init(host: String, port: Int, connections: Int, timeoutMilliseconds: Int) {
        self.host = host
        self.port = port
        address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        pool = MemcachedConnectionPool(host: host, port: port, capacity: connections, timeoutMilliseconds: timeoutMilliseconds)
        connectionsPerLoop = connections
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// False from a failed connect, on a thread or a loop, until the next one that succeeds.
    var isReachable: Bool { !pool.isUnreachable && reachability.isReachable }

    /// On a handler thread, over a pooled blocking connection.
    func perform(_ command: MemcachedCommand) throws(CacheFailure) -> MemcachedReply {
        try pool.withConnection { connection throws(CacheFailure) in try connection.run(command) }
    }

    /// On a loop, over that loop's non-blocking connections.
    func start(_ command: MemcachedCommand, on loop: LoopHandle,
               completion: @escaping @Sendable (Result<MemcachedReply, CacheFailure>) -> Void) {
        let client = loopClients.withLock { clients in
            if let client = clients[loop.index] { return client }
            let client = MemcachedLoopClient(loop: loop, host: host, port: port, capacity: connectionsPerLoop,
                                             timeoutMilliseconds: timeoutMilliseconds, reachability: reachability)
            clients[loop.index] = client
            return client
        }
        client.run(command, completion: completion)
    }

    /// Keeps what `stats` said, or that it failed.
    func note(_ figures: CacheStatistics, limit: Int) { lastSeen.withLock { $0 = (figures, limit, nil) } }
    func note(_ failure: CacheFailure) { lastSeen.withLock { $0.failure = failure.message } }

    var figures: CacheStatistics { lastSeen.withLock { $0.figures } }
    var memoryLimit: Int { lastSeen.withLock { $0.limit } }

    /// For `GET /cache`: where it is, whether it answers, and its own figures.
    var json: JSONValue {
        let seen = lastSeen.withLock { $0 }
        var object: JSONValue = [
            "address": .string(address), "reachable": .bool(isReachable && seen.failure == nil),
            "entries": .integer(seen.figures.entries), "bytes": .integer(seen.figures.bytes),
            "hits": .integer(seen.figures.hits), "misses": .integer(seen.figures.misses), "evictions": .integer(seen.figures.evictions),
        ]
        if let failure = seen.failure { object = object.adding("error", .string(failure)) }
        return object
    }
}
