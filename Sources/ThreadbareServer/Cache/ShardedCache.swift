/// The process's cache: one per process, shared by all its threads.
///
/// Keys are spread over up to 16 shards by hash, each an `LRUCache` behind its own mutex, so
/// threads touching different keys rarely contend and there is no process-wide lock. The
/// budget (`maxEntries`, `maxBytes`) is split evenly, which makes eviction LRU within a shard
/// (approximate LRU overall, as in memcached's per-slab LRUs). Small caches get fewer shards
/// so their LRU stays exact and an entry as large as a request body still fits a shard: a
/// shard holds at least 64 entries and 1 MiB when the budget allows, else there is one shard.
///
/// Start-up data (`cache.preload`) is kept apart from the shards: a table made once, before any
/// thread serves (before the fork in prefork), and never changed, so reads take no mutex and
/// nothing is evicted from it, as a module-level dict a service builds at import is read.
public final class ShardedCache: CacheBackend {
    private let shards: [Locked<LRUCache>]
    public let maxEntries: Int
    public let maxBytes: Int
    public let startup: StartupData?
    public let referenceCounts: ReferenceCountTally?
    private let startupReads = SharedCounter()

    public init(maxEntries: Int, maxBytes: Int, counting: ReferenceCounting = .immortal, startup: StartupData? = nil) {
        precondition(maxEntries >= 1 && maxBytes >= 1)
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        self.startup = startup
        referenceCounts = ReferenceCountTally(model: counting)
        let count = max(1, min(16, maxEntries / 64, maxBytes / (1 << 20)))
        shards = (0..<count).map { shard in
            // Spread the remainders so the shards add up to exactly the configured budget.
            Locked(LRUCache(maxEntries: maxEntries / count + (shard < maxEntries % count ? 1 : 0),
                            maxBytes: maxBytes / count + (shard < maxBytes % count ? 1 : 0), counting: counting))
        }
    }

    /// The largest key plus value one entry may have.
    public var maxEntryBytes: Int { maxBytes / shards.count }
    public var name: String { "local" }
    public var isSharedByProcesses: Bool { false }
    public var blocksOnNetwork: Bool { false }
    public var entryLimit: Int? { maxEntries }
    public var byteLimit: Int? { maxBytes }
    public var details: [(String, JSONValue)] {
        [("startup_entries", .integer(startup?.count ?? 0)), ("startup_bytes", .integer(startup?.bytes ?? 0))]
    }

    public func get(_ key: CacheKey, touches: Int) -> CacheEntry? {
        let counting = referenceCounts!.model
        if let startup, let stored = startup.entry(for: key) {
            startupReads.add(1)
            referenceCounts!.add(stored.read(times: touches, counting))
            return stored.entry
        }
        var writes = ReferenceWrites()
        let found = shard(for: key).withLock { $0.get(key, touches: touches, writes: &writes) }
        referenceCounts!.add(writes)
        return found
    }

    public func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int = 0) throws(CacheFailure) -> CachePutOutcome {
        try refuseStartupData(key)
        return shard(for: key).withLock { $0.put(key, entry, timeToLive: timeToLive) }
    }

    public func remove(_ key: CacheKey) throws(CacheFailure) -> Bool {
        try refuseStartupData(key)
        return shard(for: key).withLock { $0.remove(key) }
    }

    /// Start-up data is read-only: threads read it without a lock.
    private func refuseStartupData(_ key: CacheKey) throws(CacheFailure) {
        guard let startup, startup.entry(for: key) != nil else { return }
        throw CacheFailure(409, "\(String(decoding: key.bytes, as: UTF8.self)) is start-up data (cache.preload): read-only while the server runs")
    }

    /// The shards' entries, and every read that found something, start-up data's included.
    public var statistics: CacheStatistics {
        var total = shards.reduce(into: CacheStatistics()) { total, shard in total += shard.withLock { $0.statistics } }
        total.hits += startupReads.current
        return total
    }

    public var processStatistics: CacheStatistics { statistics }

    private func shard(for key: CacheKey) -> Locked<LRUCache> {
        shards.count == 1 ? shards[0] : shards[Int(key.stableHash % UInt64(shards.count))]
    }
}
