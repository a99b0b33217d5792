/// Where `/cache` keeps its entries (`cache.backend`): `local`, each process's own memory
/// shared by its threads (`ShardedCache`); `shm`, one segment every prefork worker maps
/// (`SharedMemoryCache`); or `memcached`, a memcached server over TCP (`MemcachedCache`).
/// Handlers see only this.
public protocol CacheBackend: AnyObject, Sendable {
    /// The `cache.backend` value.
    var name: String { get }
    /// The bounds eviction keeps to; nil where the backend has none of its own to report.
    var entryLimit: Int? { get }
    var byteLimit: Int? { get }
    /// The largest key plus value (plus content type, where it is stored with them) one entry may have.
    var maxEntryBytes: Int { get }
    /// True when every process (and every domain) of the server sees the same entries, so
    /// per-worker figures are not summed into a total.
    var isSharedByProcesses: Bool { get }
    /// True when the whole cache's hits and misses are this process's reads only, to be summed
    /// over the workers: memcached's own counts take in every client's reads.
    var countsReadsPerProcess: Bool { get }
    /// True when an operation waits on the network: handlers then release the interpreter
    /// lock around it, as CPython's socket calls release the GIL.
    var blocksOnNetwork: Bool { get }

    /// What reading an entry writes into it, and the count of such writes; nil where a read
    /// gets a copy of its own (memcached), which no other thread shares.
    var referenceCounts: ReferenceCountTally? { get }

    /// A live entry, or nil (an expired one counts as a miss and an expiration, and is
    /// dropped), read `touches` times by the handler, as a handler walking the object reads it.
    func get(_ key: CacheKey, touches: Int) throws(CacheFailure) -> CacheEntry?
    /// `timeToLive` in seconds; 0 keeps the entry until it is evicted or removed.
    func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int) throws(CacheFailure) -> CachePutOutcome
    func remove(_ key: CacheKey) throws(CacheFailure) -> Bool
    /// The whole cache's figures.
    var statistics: CacheStatistics { get throws(CacheFailure) }
    /// This process's part, cheaply enough to publish after every request and without waiting
    /// on anything: the hits, misses, evictions and expirations its own requests caused, with
    /// the entries and bytes it last saw.
    var processStatistics: CacheStatistics { get }
    /// Figures of this backend alone, for `GET /cache`.
    var details: [(String, JSONValue)] { get }
    /// On an event loop's thread: starts `operation` there and calls `completion` on that thread
    /// with its outcome, without blocking it. A backend in memory does the operation at once
    /// (the default); memcached sends it on the loop's own connections.
    func start(_ operation: CacheOperation, on loop: LoopHandle,
               completion: @escaping @Sendable (Result<CacheOutcome, CacheFailure>) -> Void)
}

extension CacheBackend {
    public var countsReadsPerProcess: Bool { false }

    /// Read once, as a handler that returns the value does.
    public func get(_ key: CacheKey) throws(CacheFailure) -> CacheEntry? {
        try get(key, touches: 1)
    }
}

/// Why a cache operation could not be done: the HTTP status and the reason.
public struct CacheFailure: Error, Sendable {
    public let status: Int
    public let message: String
    /// The cache answers, but every connection to it stayed busy: overload, not an outage, so a
    /// read-through must not compute around it (that would add to the overload).
    public let connectionsBusy: Bool

    public init(_ status: Int, _ message: String, connectionsBusy: Bool = false) {
        self.status = status
        self.message = message
        self.connectionsBusy = connectionsBusy
    }
}

/// A cache that cannot be made as configured.
public struct CacheSetupError: Error, CustomStringConvertible {
    public let description: String
}

public enum CachePutOutcome: Sendable, Equatable { case created, replaced, tooLarge }

/// A cache key: exact bytes, as memcached compares them. Not `String`, whose equality is
/// Unicode canonical equivalence: "é" (2 bytes) and "e" + U+0301 (3 bytes) would be one key with
/// two sizes, and the byte accounting would drift.
public struct CacheKey: Hashable, Sendable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ text: String) { bytes = Array(text.utf8) }

    /// FNV-1a: the same in every process, unlike Swift's per-process seeded `Hasher`, so a
    /// shared segment's buckets and an inherited cache's index agree across fork.
    public var stableHash: UInt64 {
        bytes.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01B3 }
    }
}

/// One entry: the stored bytes and the content type they were stored with.
public struct CacheEntry: Sendable, Equatable {
    public var value: [UInt8]
    public var contentType: String

    public init(value: [UInt8], contentType: String) {
        self.value = value
        self.contentType = contentType
    }
}

public struct CacheStatistics: Sendable, Equatable {
    public var entries = 0
    public var bytes = 0
    public var hits = 0
    public var misses = 0
    public var evictions = 0
    public var expirations = 0

    /// Sums shards, domains or workers.
    public static func += (total: inout CacheStatistics, part: CacheStatistics) {
        total.entries += part.entries
        total.bytes += part.bytes
        total.hits += part.hits
        total.misses += part.misses
        total.evictions += part.evictions
        total.expirations += part.expirations
    }
}

/// When an entry stored now with `timeToLive` seconds expires, on CLOCK_MONOTONIC (one clock
/// for every process on the machine, so shared entries expire alike everywhere); 0 for never.
func expiry(timeToLive: Int, now: UInt64) -> UInt64 {
    timeToLive > 0 ? now + UInt64(timeToLive) * 1_000_000_000 : 0
}
