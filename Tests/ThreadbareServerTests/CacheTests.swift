import Foundation
import Testing
@testable import ThreadbareServer

@Suite("The bounded LRU cache")
struct CacheTests {
    private func entry(_ bytes: Int) -> CacheEntry {
        CacheEntry(value: [UInt8](repeating: 1, count: bytes), contentType: "application/octet-stream")
    }

    @Test func canonicallyEquivalentKeysAreDifferentKeys() {
        // "é" precomposed (2 bytes) and "e" + combining acute (3 bytes) are equal as Swift
        // Strings; as cache keys they are two keys with their own sizes.
        let cache = LRUCache(maxEntries: 10, maxBytes: 100)
        #expect(cache.put(CacheKey("e\u{0301}"), entry(1)) == .created)
        #expect(cache.put(CacheKey("\u{00E9}"), entry(1)) == .created)
        #expect(cache.statistics.entries == 2)
        #expect(cache.statistics.bytes == 3 + 1 + 2 + 1)
        let removed = cache.remove(CacheKey("e\u{0301}"))
        #expect(removed)
        #expect(cache.statistics.bytes == 2 + 1)
    }

    @Test func smallByteBudgetStillStoresEntries() throws {
        let cache = ShardedCache(maxEntries: 10_000, maxBytes: 10)
        #expect(try cache.put(CacheKey("k"), entry(5)) == .created)
        #expect(cache.maxEntryBytes == 10)
    }

    @Test func evictsLeastRecentlyUsedByCount() {
        let cache = LRUCache(maxEntries: 3, maxBytes: 1_000)
        for key in ["a", "b", "c"] { #expect(cache.put(CacheKey(key), entry(1)) == .created) }
        _ = cache.get(CacheKey("a"))
        _ = cache.put(CacheKey("d"), entry(1))
        #expect(cache.get(CacheKey("b")) == nil)
        #expect(cache.get(CacheKey("a")) != nil && cache.get(CacheKey("c")) != nil && cache.get(CacheKey("d")) != nil)
        #expect(cache.statistics.evictions == 1)
        #expect(cache.statistics.entries == 3)
    }

    @Test func evictsByBytesAndCountsKeyPlusValue() {
        let cache = LRUCache(maxEntries: 100, maxBytes: 30)
        _ = cache.put(CacheKey("a"), entry(9))  // 10 bytes
        _ = cache.put(CacheKey("b"), entry(9))
        _ = cache.put(CacheKey("c"), entry(9))
        #expect(cache.statistics.bytes == 30)
        _ = cache.put(CacheKey("d"), entry(4))  // 5 more: "a" must go
        #expect(cache.get(CacheKey("a")) == nil)
        #expect(cache.statistics.bytes == 25)
    }

    @Test func replacingAdjustsBytesAndKeepsCount() {
        let cache = LRUCache(maxEntries: 10, maxBytes: 100)
        #expect(cache.put(CacheKey("k"), entry(10)) == .created)
        #expect(cache.put(CacheKey("k"), entry(3)) == .replaced)
        #expect(cache.statistics.entries == 1)
        #expect(cache.statistics.bytes == 4)
        #expect(cache.get(CacheKey("k"))?.value.count == 3)
    }

    @Test func refusesAnEntryLargerThanTheWholeCache() {
        let cache = LRUCache(maxEntries: 10, maxBytes: 8)
        _ = cache.put(CacheKey("a"), entry(2))
        #expect(cache.put(CacheKey("big"), entry(6)) == .tooLarge)
        #expect(cache.get(CacheKey("a")) != nil, "a refused entry evicts nothing")
    }

    @Test func removeAndReuseSlots() {
        let cache = LRUCache(maxEntries: 2, maxBytes: 100)
        for round in 0..<50 {
            _ = cache.put(CacheKey("k\(round)"), entry(1))
            if round % 3 == 0 { cache.remove(CacheKey("k\(round)")) }
        }
        #expect(cache.statistics.entries <= 2)
        #expect(cache.statistics.hits + cache.statistics.misses == 0)
    }

    @Test func hitsAndMisses() {
        let cache = LRUCache(maxEntries: 2, maxBytes: 100)
        _ = cache.put(CacheKey("a"), entry(1))
        _ = cache.get(CacheKey("a"))
        _ = cache.get(CacheKey("zz"))
        #expect(cache.statistics.hits == 1)
        #expect(cache.statistics.misses == 1)
    }

    @Test func shardsAddUpToTheConfiguredBudget() throws {
        let cache = ShardedCache(maxEntries: 1_000, maxBytes: 1_000_000)
        for index in 0..<5_000 { _ = try cache.put(CacheKey("key-\(index)"), entry(10)) }
        #expect(cache.statistics.entries == 1_000)
        let small = ShardedCache(maxEntries: 5, maxBytes: 1_000)
        for index in 0..<20 { _ = try small.put(CacheKey("key-\(index)"), entry(1)) }
        #expect(small.statistics.entries == 5)
        // Below 128 entries one shard keeps LRU exact: the last five stored are the ones kept.
        #expect(try (15..<20).allSatisfy { try small.get(CacheKey("key-\($0)")) != nil })
    }

    /// Start-up data is read without a lock and never evicted: a cache full of other entries
    /// still has it, and it cannot be replaced or removed.
    @Test func startupDataStaysOutsideTheBudgetAndIsReadOnly() throws {
        let cache = ShardedCache(maxEntries: 5, maxBytes: 1_000, startup: StartupData(entries: 3, valueBytes: 16))
        for index in 0..<20 { _ = try cache.put(CacheKey("key-\(index)"), entry(1)) }
        #expect(cache.statistics.entries == 5)
        #expect(try cache.get(CacheKey("preload-2"))?.value.count == 16)
        #expect(try cache.get(CacheKey("preload-3")) == nil)
        #expect(try cache.get(CacheKey("preload-02")) == nil, "only the name the preload gave it")
        #expect(throws: CacheFailure.self) { try cache.put(CacheKey("preload-0"), entry(1)) }
        #expect(throws: CacheFailure.self) { try cache.remove(CacheKey("preload-1")) }
    }

    /// `touches` reads of an entry write as many counts under plain and atomic and none under
    /// immortal; atomic writes the owner's count plainly (biased counting, PEP 703).
    @Test func readsWriteTheCountsTheModelSays() throws {
        for model in ReferenceCounting.allCases {
            let cache = ShardedCache(maxEntries: 10, maxBytes: 1_000, counting: model, startup: StartupData(entries: 1, valueBytes: 8))
            _ = try cache.put(CacheKey("mine"), entry(4))
            _ = cache.get(CacheKey("mine"), touches: 7)
            // Start-up data was made by this thread too; another thread is not its owner.
            let other = Thread { _ = cache.get(CacheKey("preload-0"), touches: 5) }
            other.start()
            while !other.isFinished { usleep(1_000) }
            let counts = cache.referenceCounts!.writes
            let expected: (plain: Int, atomic: Int) = switch model {
            case .immortal: (0, 0)
            case .plain: (12, 0)
            case .atomic: (7, 5)
            }
            #expect(counts == ReferenceWrites(plain: expected.plain, atomic: expected.atomic), "\(model)")
        }
    }
}

@Suite("The bearer token")
struct BearerTokenTests {
    @Test func admitsExactlyBearerAndTheToken() throws {
        let token = try #require(BearerToken("abc"))
        #expect(token.admits("Bearer abc"))
        for wrong in [nil, "", "Bearer ab", "Bearer abcd", "bearer abc", "Bearer abd", "abc", "Bearer  abc"] as [String?] {
            #expect(!token.admits(wrong), "\(wrong ?? "nil")")
        }
        #expect(BearerToken("") == nil, "an empty token means no authentication")
    }
}
