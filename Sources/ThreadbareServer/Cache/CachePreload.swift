/// `cache.preload`: the data a service computes when it starts (a configuration map, a model,
/// a lookup table) and then only reads: entries `preload-0` … `preload-N-1`. In prefork it is
/// made before the fork, so the workers begin by sharing its pages, and whether they keep
/// sharing them is what `cache.refcount` shows.
enum CachePreload {
    static let prefix = "preload-"

    static func key(_ index: Int) -> CacheKey { CacheKey(prefix + String(index)) }

    /// The index `key` names, if it is `preload-N` written as `key(N)` writes it.
    static func index(of key: CacheKey) -> Int? {
        let bytes = key.bytes, prefixLength = prefix.utf8.count
        guard bytes.count > prefixLength, bytes.count <= prefixLength + 9, bytes.starts(with: prefix.utf8) else { return nil }
        let digits = bytes[prefixLength...]
        guard digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              digits.first != UInt8(ascii: "0") || digits.count == 1 else { return nil }
        return digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }

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

    static func entry(_ index: Int, valueBytes: Int) -> CacheEntry {
        CacheEntry(value: value(index, bytes: valueBytes), contentType: "application/octet-stream")
    }

    /// Into a cache every process shares (shm, memcached), where start-up data is ordinary
    /// entries under the cache's own budget.
    static func fill(_ cache: any CacheBackend, entries: Int, valueBytes: Int) throws {
        for index in 0..<entries {
            let outcome: CachePutOutcome
            do {
                outcome = try cache.put(key(index), entry(index, valueBytes: valueBytes), timeToLive: 0)
            } catch {
                throw CacheSetupError(description: "cache.preload: \(error.message)")
            }
            guard outcome != .tooLarge else {
                throw CacheSetupError(description: "cache.preload: an entry of \(valueBytes) bytes is larger than the cache allows per entry (\(cache.maxEntryBytes))")
            }
        }
    }
}

/// The local cache's start-up data: every entry an object of its own (`StoredEntry`, as the
/// cache's are), made once and never changed or freed while the server runs, so threads read
/// it without a lock. Outside the cache's budget: nothing evicts it.
public final class StartupData: @unchecked Sendable {
    public let count: Int
    /// Key plus value bytes, as the cache counts its own.
    public let bytes: Int
    private let entries: UnsafeMutablePointer<StoredEntry>

    public init(entries count: Int, valueBytes: Int) {
        self.count = count
        entries = .allocate(capacity: max(1, count))
        var bytes = 0
        for index in 0..<count {
            let key = CachePreload.key(index)
            (entries + index).initialize(to: StoredEntry(key: key.bytes, entry: CachePreload.entry(index, valueBytes: valueBytes)))
            bytes += key.bytes.count + valueBytes
        }
        self.bytes = bytes
    }

    deinit {
        for index in 0..<count { entries[index].deallocate() }
        entries.deallocate()
    }

    func entry(for key: CacheKey) -> StoredEntry? {
        guard let index = CachePreload.index(of: key), index < count else { return nil }
        return entries[index]
    }
}
