import Foundation
import Testing
@testable import ThreadbareServer
#if canImport(Glibc)
import Glibc
#endif

/// One behaviour suite, run against every backend `cache.backend` can name; memcached is a
/// real one, started for each test.
@Suite("Cache backends behave alike")
struct CacheBackendTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case local, shm, memcached
        var testDescription: String { rawValue }

        /// The cache, and the memcached behind it (kept running while the test holds it).
        func make(maxEntries: Int, maxBytes: Int) throws -> (any CacheBackend, MemcachedServer?) {
            switch self {
            case .local: return (ShardedCache(maxEntries: maxEntries, maxBytes: maxBytes), nil)
            case .shm: return (try SharedMemoryCache(maxEntries: maxEntries, maxBytes: maxBytes), nil)
            case .memcached:
                let server = try MemcachedServer(megabytes: max(4, maxBytes >> 20))
                return (try MemcachedCache(servers: [server.address], connections: 4, timeoutMilliseconds: 2_000), server)
            }
        }
    }

    static func entry(_ text: String, type: String = "text/plain") -> CacheEntry {
        CacheEntry(value: Array(text.utf8), contentType: type)
    }

    @Test(arguments: Backend.allCases)
    func storesReplacesReadsAndRemoves(backend: Backend) throws {
        let (cache, memcached) = try backend.make(maxEntries: 100, maxBytes: 100_000)
        defer { memcached?.stop() }
        #expect(cache.name == backend.rawValue)
        #expect(try cache.get(CacheKey("k")) == nil)
        #expect(try cache.put(CacheKey("k"), Self.entry("hello"), timeToLive: 0) == .created)
        #expect(try cache.put(CacheKey("k"), Self.entry("hi", type: "text/x-greeting"), timeToLive: 0) == .replaced)
        #expect(try cache.get(CacheKey("k")) == Self.entry("hi", type: "text/x-greeting"))
        #expect(try cache.put(CacheKey("empty"), CacheEntry(value: [], contentType: ""), timeToLive: 0) == .created)
        #expect(try cache.get(CacheKey("empty")) == CacheEntry(value: [], contentType: ""))
        #expect(try cache.put(CacheKey("with space é"), Self.entry("spaced"), timeToLive: 0) == .created)
        #expect(try cache.get(CacheKey("with space é"))?.value == Array("spaced".utf8))
        #expect(try cache.remove(CacheKey("with space é")))
        var figures = try cache.statistics
        // memcached keeps each typed value's content type in a note of its own.
        let notes = backend == .memcached ? 2 : 1
        #expect(figures.entries == 2 * notes)
        // memcached counts its own item overhead in bytes.
        #expect(backend == .memcached ? figures.bytes > 1 + 2 + 5 : figures.bytes == 1 + 2 + 5)
        #expect(figures.hits == 3 && figures.misses == 1)
        #expect(try cache.remove(CacheKey("k")))
        #expect(try !cache.remove(CacheKey("k")))
        #expect(try cache.get(CacheKey("k")) == nil)
        figures = try cache.statistics
        #expect(figures.entries == 1 * notes)
        #expect(cache.processStatistics.hits == 3, "one process: its part is the whole")
    }

    @Test(arguments: Backend.allCases)
    func entriesExpireAfterTheirTimeToLive(backend: Backend) throws {
        let (cache, memcached) = try backend.make(maxEntries: 100, maxBytes: 100_000)
        defer { memcached?.stop() }
        _ = try cache.put(CacheKey("brief"), Self.entry("x"), timeToLive: 1)
        _ = try cache.put(CacheKey("lasting"), Self.entry("y"), timeToLive: 0)
        _ = try cache.put(CacheKey("later"), Self.entry("z"), timeToLive: 3_600)
        #expect(try cache.get(CacheKey("brief")) != nil)
        // memcached's clock ticks once a second, so a one-second entry lives up to two.
        Thread.sleep(forTimeInterval: backend == .memcached ? 2.1 : 1.1)
        #expect(try cache.get(CacheKey("brief")) == nil)
        #expect(try cache.get(CacheKey("lasting")) != nil && cache.get(CacheKey("later")) != nil)
        // memcached frees expired items in a maintenance thread of its own, which sleeps up to
        // a second between passes when idle; a loaded CI machine under ASAN has taken over 3 s.
        // memcached: the expired value's note expires with it.
        let notes = backend == .memcached ? 2 : 1
        var figures = try cache.statistics
        for _ in 0..<150 where figures.expirations < notes {
            Thread.sleep(forTimeInterval: 0.1)
            figures = try cache.statistics
        }
        #expect(figures.expirations == notes && figures.entries == 2 * notes, "\(figures)")
        #expect(figures.hits == 3 && figures.misses == 1, "an expired entry is a miss")
    }

    /// Four times what fits, in 100 KiB values: the first are gone, the last are there, and
    /// the evictions are counted.
    @Test(arguments: Backend.allCases)
    func evictsTheOldestUnderItsLimit(backend: Backend) throws {
        let (cache, memcached) = try backend.make(maxEntries: 35, maxBytes: 4 << 20)
        defer { memcached?.stop() }
        let value = [UInt8](repeating: 7, count: 100 * 1_024)
        for index in 0..<160 {
            // Untyped: memcached keeps no content-type note beside the value.
            #expect(try cache.put(CacheKey("k\(index)"), CacheEntry(value: value, contentType: "application/octet-stream"), timeToLive: 0) == .created)
        }
        #expect(try cache.get(CacheKey("k0")) == nil)
        #expect(try cache.get(CacheKey("k159"))?.value == value)
        let figures = try cache.statistics
        #expect(figures.evictions > 0 && figures.entries < 160 && figures.entries + figures.evictions == 160, "\(figures)")
    }

    /// Seven entries fit one shard of the local cache and one bucket of the shared one, where
    /// both keep exact LRU order. (memcached's LRU is its own, segmented into hot, warm and
    /// cold: not this exact order.)
    @Test(arguments: [Backend.local, .shm])
    func evictsTheLeastRecentlyUsed(backend: Backend) throws {
        let (cache, _) = try backend.make(maxEntries: 7, maxBytes: 7 * 1_024)
        for index in 0..<7 { #expect(try cache.put(CacheKey("k\(index)"), Self.entry("v"), timeToLive: 0) == .created) }
        _ = try cache.get(CacheKey("k0"))
        _ = try cache.put(CacheKey("k7"), Self.entry("v"), timeToLive: 0)
        #expect(try cache.get(CacheKey("k1")) == nil)
        #expect(try [0, 2, 3, 4, 5, 6, 7].allSatisfy { try cache.get(CacheKey("k\($0)")) != nil })
        #expect(try cache.statistics.evictions == 1 && cache.statistics.entries == 7)
    }

    @Test(arguments: Backend.allCases)
    func refusesAnEntryLargerThanItAllows(backend: Backend) throws {
        let (cache, memcached) = try backend.make(maxEntries: 10, maxBytes: 4_096)
        defer { memcached?.stop() }
        _ = try cache.put(CacheKey("a"), Self.entry("1"), timeToLive: 0)
        let tooBig = CacheEntry(value: [UInt8](repeating: 7, count: cache.maxEntryBytes + 1), contentType: "")
        #expect(try cache.put(CacheKey("big"), tooBig, timeToLive: 0) == .tooLarge)
        #expect(try cache.get(CacheKey("a")) != nil, "a refused entry evicts nothing")
    }

    /// Many threads on one cache: under `swift test --sanitize=thread` this is the race check.
    @Test(arguments: Backend.allCases)
    func concurrentUseKeepsCountsConsistent(backend: Backend) async throws {
        let (cache, memcached) = try backend.make(maxEntries: 512, maxBytes: 1 << 20)
        defer { memcached?.stop() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for step in 0..<(backend == .memcached ? 500 : 2_000) {
                        let key = CacheKey("k\((worker * 7 + step) % 700)")
                        switch step % 4 {
                        case 0: _ = try cache.put(key, CacheEntry(value: Array(key.bytes), contentType: "x"), timeToLive: 0)
                        case 1: _ = try cache.remove(key)
                        default: if let found = try cache.get(key) { #expect(found.value == key.bytes) }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let statistics = try cache.statistics
        #expect(statistics.entries <= cache.entryLimit ?? .max)
        #expect(statistics.hits + statistics.misses == 8 * (backend == .memcached ? 250 : 1_000))
    }

    /// memcached stopped: every operation is a 503 naming it; started again on the same port:
    /// the same cache object works again, with no restart.
    @Test func memcachedDownIsUnavailableAndComesBack() throws {
        let memcached = try MemcachedServer()
        defer { memcached.stop() }
        let cache = try MemcachedCache(servers: [memcached.address], connections: 2, timeoutMilliseconds: 1_000)
        #expect(try cache.put(CacheKey("k"), Self.entry("v"), timeToLive: 0) == .created)
        memcached.stop()
        for _ in 0..<3 {
            #expect {
                _ = try cache.get(CacheKey("k"))
            } throws: { error in
                let failure = error as? CacheFailure
                return failure?.status == 503 && failure?.message.contains(memcached.address) == true
            }
        }
        #expect(!cache.isReachable)
        try memcached.start()
        Thread.sleep(forTimeInterval: Double(MemcachedConnectionPool.retryAfterFailureNanoseconds) / 1e9)
        #expect(try cache.get(CacheKey("k")) == nil, "a new memcached is empty")
        #expect(try cache.put(CacheKey("k"), Self.entry("v"), timeToLive: 0) == .created)
    }
}

@Suite("The shared-memory cache survives its writers")
struct SharedMemoryCacheTests {
    /// A writer that dies holding a bucket's lock in the middle of a value: the next user gets
    /// the lock (robust mutex), the half-written slot is dropped, the old value stands.
    @Test func aWriterDyingMidWriteLeavesTheOldValueAndNoLock() throws {
        let cache = try SharedMemoryCache(maxEntries: 64, maxBytes: 64 * 4_096)
        let old = CacheEntry(value: Array(repeating: 1, count: 1_000), contentType: "old")
        #expect(try cache.put(CacheKey("k"), old) == .created)
        cache.midWrite = { pthread_exit(nil) }
        let writer = try OSThread(name: "dies") {
            _ = try? cache.put(CacheKey("k"), CacheEntry(value: Array(repeating: 2, count: 1_000), contentType: "new"))
        }
        writer.join()
        cache.midWrite = nil
        #expect(try cache.get(CacheKey("k")) == old)
        #expect(cache.repairs == 1)
        #expect(cache.statistics.entries == 1 && cache.statistics.bytes == 1 + 1_000)
        #expect(try cache.put(CacheKey("k"), CacheEntry(value: [3], contentType: "after")) == .replaced)
        #expect(try cache.get(CacheKey("k"))?.value == [3])
        #expect(cache.repairs == 1, "a repaired lock is consistent again")
    }

    @Test func slotsAreSizedFromTheBudget() throws {
        let cache = try SharedMemoryCache(maxEntries: 1_000, maxBytes: 1_000 * 1_000)
        #expect(cache.slotBytes == 1_024 && cache.maxEntryBytes == 1_024 - SharedMemoryCache.referenceBytes)
        #expect(cache.maxEntries >= 1_000 && cache.maxEntries % 7 == 0)
        let tiny = try SharedMemoryCache(maxEntries: 10, maxBytes: 10)
        #expect(tiny.slotBytes == SharedMemoryCache.minimumSlotBytes)
    }

    @Test func hashIsTheSameInEveryProcess() {
        // FNV-1a's published test vector: a fixed function, not Swift's per-process seed.
        #expect(CacheKey("a").stableHash == 0xaf63_dc4c_8601_ec8c)
    }
}
