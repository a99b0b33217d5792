import Foundation
import Testing
@testable import ThreadbareServer
#if canImport(Glibc)
import Glibc
#endif

/// One behaviour suite, run against every backend `cache.backend` can name.
@Suite("Cache backends behave alike")
struct CacheBackendTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case local, shm
        var testDescription: String { rawValue }

        func make(maxEntries: Int, maxBytes: Int) throws -> any CacheBackend {
            switch self {
            case .local: ShardedCache(maxEntries: maxEntries, maxBytes: maxBytes)
            case .shm: try SharedMemoryCache(maxEntries: maxEntries, maxBytes: maxBytes)
            }
        }
    }

    static func entry(_ text: String, type: String = "text/plain") -> CacheEntry {
        CacheEntry(value: Array(text.utf8), contentType: type)
    }

    @Test(arguments: Backend.allCases)
    func storesReplacesReadsAndRemoves(backend: Backend) throws {
        let cache = try backend.make(maxEntries: 100, maxBytes: 100_000)
        #expect(cache.name == backend.rawValue)
        #expect(cache.get(CacheKey("k")) == nil)
        #expect(cache.put(CacheKey("k"), Self.entry("hello"), timeToLive: 0) == .created)
        #expect(cache.put(CacheKey("k"), Self.entry("hi", type: "text/x-greeting"), timeToLive: 0) == .replaced)
        #expect(cache.get(CacheKey("k")) == Self.entry("hi", type: "text/x-greeting"))
        #expect(cache.put(CacheKey("empty"), CacheEntry(value: [], contentType: ""), timeToLive: 0) == .created)
        #expect(cache.get(CacheKey("empty")) == CacheEntry(value: [], contentType: ""))
        var figures = cache.statistics
        #expect(figures.entries == 2 && figures.bytes == 1 + 2 + 5)
        #expect(figures.hits == 2 && figures.misses == 1)
        #expect(cache.remove(CacheKey("k")))
        #expect(!cache.remove(CacheKey("k")))
        #expect(cache.get(CacheKey("k")) == nil)
        figures = cache.statistics
        #expect(figures.entries == 1 && figures.bytes == 5)
        #expect(cache.processStatistics.hits == 2, "one process: its part is the whole")
    }

    @Test(arguments: Backend.allCases)
    func entriesExpireAfterTheirTimeToLive(backend: Backend) throws {
        let cache = try backend.make(maxEntries: 100, maxBytes: 100_000)
        _ = cache.put(CacheKey("brief"), Self.entry("x"), timeToLive: 1)
        _ = cache.put(CacheKey("lasting"), Self.entry("y"), timeToLive: 0)
        _ = cache.put(CacheKey("later"), Self.entry("z"), timeToLive: 3_600)
        #expect(cache.get(CacheKey("brief")) != nil)
        Thread.sleep(forTimeInterval: 1.1)
        #expect(cache.get(CacheKey("brief")) == nil)
        #expect(cache.get(CacheKey("lasting")) != nil && cache.get(CacheKey("later")) != nil)
        let figures = cache.statistics
        #expect(figures.expirations == 1 && figures.entries == 2)
        #expect(figures.hits == 3 && figures.misses == 1, "an expired entry is a miss")
    }

    /// Seven entries fit one shard of the local cache and one bucket of the shared one, where
    /// both keep exact LRU order.
    @Test(arguments: Backend.allCases)
    func evictsTheLeastRecentlyUsed(backend: Backend) throws {
        let cache = try backend.make(maxEntries: 7, maxBytes: 7 * 1_024)
        for index in 0..<7 { #expect(cache.put(CacheKey("k\(index)"), Self.entry("v"), timeToLive: 0) == .created) }
        _ = cache.get(CacheKey("k0"))
        _ = cache.put(CacheKey("k7"), Self.entry("v"), timeToLive: 0)
        #expect(cache.get(CacheKey("k1")) == nil)
        #expect([0, 2, 3, 4, 5, 6, 7].allSatisfy { cache.get(CacheKey("k\($0)")) != nil })
        #expect(cache.statistics.evictions == 1 && cache.statistics.entries == 7)
    }

    @Test(arguments: Backend.allCases)
    func refusesAnEntryLargerThanItAllows(backend: Backend) throws {
        let cache = try backend.make(maxEntries: 10, maxBytes: 4_096)
        _ = cache.put(CacheKey("a"), Self.entry("1"), timeToLive: 0)
        let tooBig = CacheEntry(value: [UInt8](repeating: 7, count: cache.maxEntryBytes + 1), contentType: "")
        #expect(cache.put(CacheKey("big"), tooBig, timeToLive: 0) == .tooLarge)
        #expect(cache.get(CacheKey("a")) != nil, "a refused entry evicts nothing")
    }

    /// Many threads on one cache: under `swift test --sanitize=thread` this is the race check.
    @Test(arguments: Backend.allCases)
    func concurrentUseKeepsCountsConsistent(backend: Backend) async throws {
        let cache = try backend.make(maxEntries: 512, maxBytes: 1 << 20)
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for step in 0..<2_000 {
                        let key = CacheKey("k\((worker * 7 + step) % 700)")
                        switch step % 4 {
                        case 0: _ = cache.put(key, CacheEntry(value: Array(key.bytes), contentType: "x"), timeToLive: 0)
                        case 1: _ = cache.remove(key)
                        default: if let found = cache.get(key) { #expect(found.value == key.bytes) }
                        }
                    }
                }
            }
        }
        let statistics = cache.statistics
        #expect(statistics.entries <= cache.maxEntries)
        #expect(statistics.hits + statistics.misses == 8 * 1_000)
    }
}

@Suite("The shared-memory cache survives its writers")
struct SharedMemoryCacheTests {
    /// A writer that dies holding a bucket's lock in the middle of a value: the next user gets
    /// the lock (robust mutex), the half-written slot is dropped, the old value stands.
    @Test func aWriterDyingMidWriteLeavesTheOldValueAndNoLock() throws {
        let cache = try SharedMemoryCache(maxEntries: 64, maxBytes: 64 * 4_096)
        let old = CacheEntry(value: Array(repeating: 1, count: 1_000), contentType: "old")
        #expect(cache.put(CacheKey("k"), old) == .created)
        cache.midWrite = { pthread_exit(nil) }
        let writer = try OSThread(name: "dies") {
            _ = cache.put(CacheKey("k"), CacheEntry(value: Array(repeating: 2, count: 1_000), contentType: "new"))
        }
        writer.join()
        cache.midWrite = nil
        #expect(cache.get(CacheKey("k")) == old)
        #expect(cache.repairs == 1)
        #expect(cache.statistics.entries == 1 && cache.statistics.bytes == 1 + 1_000)
        #expect(cache.put(CacheKey("k"), CacheEntry(value: [3], contentType: "after")) == .replaced)
        #expect(cache.get(CacheKey("k"))?.value == [3])
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
