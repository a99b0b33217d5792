/// The process's cache: one per process, shared by all its threads.
///
/// Keys are spread over up to 16 shards by hash, each an `LRUCache` behind its own mutex, so
/// threads touching different keys rarely contend and there is no process-wide lock. The
/// budget (`maxEntries`, `maxBytes`) is split evenly, which makes eviction LRU within a shard
/// (approximate LRU overall, as in memcached's per-slab LRUs). Small caches get fewer shards
/// so their LRU stays exact and an entry as large as a request body still fits a shard: a
/// shard holds at least 64 entries and 1 MiB when the budget allows, else there is one shard.
public final class ShardedCache: CacheBackend {
    private let shards: [Locked<LRUCache>]
    public let maxEntries: Int
    public let maxBytes: Int

    public init(maxEntries: Int, maxBytes: Int, refcountTouch: Bool = false) {
        precondition(maxEntries >= 1 && maxBytes >= 1)
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        let count = max(1, min(16, maxEntries / 64, maxBytes / (1 << 20)))
        shards = (0..<count).map { shard in
            // Spread the remainders so the shards add up to exactly the configured budget.
            Locked(LRUCache(maxEntries: maxEntries / count + (shard < maxEntries % count ? 1 : 0),
                            maxBytes: maxBytes / count + (shard < maxBytes % count ? 1 : 0), refcountTouch: refcountTouch))
        }
    }

    /// The largest key plus value one entry may have.
    public var maxEntryBytes: Int { maxBytes / shards.count }
    public var name: String { "local" }
    public var isSharedByProcesses: Bool { false }
    public var blocksOnNetwork: Bool { false }
    public var entryLimit: Int? { maxEntries }
    public var byteLimit: Int? { maxBytes }
    public var details: [(String, JSONValue)] { [] }

    public func get(_ key: CacheKey) -> CacheEntry? {
        shard(for: key).withLock { $0.get(key) }
    }

    public func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int = 0) -> CachePutOutcome {
        shard(for: key).withLock { $0.put(key, entry, timeToLive: timeToLive) }
    }

    public func remove(_ key: CacheKey) -> Bool {
        shard(for: key).withLock { $0.remove(key) }
    }

    public var statistics: CacheStatistics {
        shards.reduce(into: CacheStatistics()) { total, shard in total += shard.withLock { $0.statistics } }
    }

    public var processStatistics: CacheStatistics { statistics }

    private func shard(for key: CacheKey) -> Locked<LRUCache> {
        shards.count == 1 ? shards[0] : shards[Int(key.stableHash % UInt64(shards.count))]
    }
}
