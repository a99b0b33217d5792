/// `cache.preload`: the data a service computes when it starts (a configuration map, a model,
/// a lookup table) and then only reads. In prefork it is made before the fork, so the workers
/// begin by sharing its pages, and whether they keep sharing them is what `refcount_touch`
/// shows.
enum CachePreload {
    static func key(_ index: Int) -> CacheKey { CacheKey("preload-\(index)") }

    /// Bytes that differ from entry to entry, so no page of them is a copy of another.
    static func value(_ index: Int, bytes: Int) -> [UInt8] {
        var state = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<bytes).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    static func fill(_ cache: any CacheBackend, entries: Int, valueBytes: Int) throws {
        for index in 0..<entries {
            let entry = CacheEntry(value: value(index, bytes: valueBytes), contentType: "application/octet-stream")
            let outcome: CachePutOutcome
            do {
                outcome = try cache.put(key(index), entry, timeToLive: 0)
            } catch {
                throw CacheSetupError(description: "cache.preload: \(error.message)")
            }
            guard outcome != .tooLarge else {
                throw CacheSetupError(description: "cache.preload: an entry of \(valueBytes) bytes is larger than the cache allows per entry (\(cache.maxEntryBytes))")
            }
        }
    }
}
