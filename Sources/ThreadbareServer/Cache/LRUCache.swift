#if canImport(Glibc)
import Glibc
#endif

/// A bounded least-recently-used map, not thread-safe: `ShardedCache` guards each one.
///
/// Each entry's key, content type and value live in one allocation of their own, outside Swift's
/// reference counting (`StoredEntry`); nodes and the index hold only plain words. So reading an
/// entry writes nothing near its bytes but the counts `cache.refcount` says, and that choice
/// alone decides whether a prefork worker's reads copy the pages it inherited (see `StoredEntry`).
///
/// Nodes live in an array and are linked into a recency list by index, so a hit moves an entry
/// to the front without allocating. The index maps a key's stable hash to the first node with
/// that hash; nodes whose keys share a hash are chained. An entry's size is its key's bytes
/// plus its value's. Expired entries go when they are read (a miss and an expiration) or reach
/// the LRU end, as in memcached; until then they count in `entries`.
final class LRUCache {
    private struct Node {
        var stored: StoredEntry
        var hash: UInt64
        /// CLOCK_MONOTONIC nanoseconds; 0 never.
        var expiresAt: UInt64
        var newer = -1
        var older = -1
        /// The next node whose key has the same hash.
        var sameHash = -1
    }

    let maxEntries: Int
    let maxBytes: Int
    /// What a read writes in the entry's header.
    let counting: ReferenceCounting
    private var index: [UInt64: Int] = [:]
    private var nodes: [Node] = []
    private var freeSlots: [Int] = []
    private var newest = -1
    private var oldest = -1
    private(set) var statistics = CacheStatistics()

    init(maxEntries: Int, maxBytes: Int, counting: ReferenceCounting = .immortal) {
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        self.counting = counting
    }

    deinit {
        var slot = newest
        while slot >= 0 {
            nodes[slot].stored.deallocate()
            slot = nodes[slot].older
        }
    }

    /// A live entry, read `touches` times: under its shard's mutex, since an entry may be
    /// evicted or replaced the moment it is let go.
    func get(_ key: CacheKey, touches: Int = 1, writes: inout ReferenceWrites, now: UInt64 = MonotonicClock.now()) -> CacheEntry? {
        guard let slot = find(key, hash: key.stableHash) else {
            statistics.misses += 1
            return nil
        }
        if nodes[slot].expiresAt != 0 && now >= nodes[slot].expiresAt {
            remove(slot: slot)
            statistics.expirations += 1
            statistics.misses += 1
            return nil
        }
        statistics.hits += 1
        moveToFront(slot)
        writes = nodes[slot].stored.read(times: touches, counting)
        return nodes[slot].stored.entry
    }

    /// The same, read once, for callers that do not count the writes.
    func get(_ key: CacheKey, now: UInt64 = MonotonicClock.now()) -> CacheEntry? {
        var writes = ReferenceWrites()
        return get(key, writes: &writes, now: now)
    }

    func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int = 0, now: UInt64 = MonotonicClock.now()) -> CachePutOutcome {
        let size = key.bytes.count + entry.value.count
        guard size <= maxBytes, maxEntries > 0 else { return .tooLarge }
        let hash = key.stableHash
        let stored = StoredEntry(key: key.bytes, entry: entry)
        let expiresAt = expiry(timeToLive: timeToLive, now: now)
        let outcome: CachePutOutcome
        let slot: Int
        if let existing = find(key, hash: hash) {
            slot = existing
            statistics.bytes += size - nodes[slot].stored.size
            nodes[slot].stored.deallocate()
            nodes[slot].stored = stored
            nodes[slot].expiresAt = expiresAt
            moveToFront(slot)
            outcome = .replaced
        } else {
            let node = Node(stored: stored, hash: hash, expiresAt: expiresAt, sameHash: index[hash] ?? -1)
            if let free = freeSlots.popLast() {
                nodes[free] = node
                slot = free
            } else {
                nodes.append(node)
                slot = nodes.count - 1
            }
            index[hash] = slot
            linkAtFront(slot)
            statistics.entries += 1
            statistics.bytes += size
            outcome = .created
        }
        while statistics.entries > maxEntries || statistics.bytes > maxBytes {
            let victim = oldest
            precondition(victim != slot, "the entry just stored fits, so it is never the victim")
            let expired = nodes[victim].expiresAt != 0 && now >= nodes[victim].expiresAt
            remove(slot: victim)
            if expired { statistics.expirations += 1 } else { statistics.evictions += 1 }
        }
        return outcome
    }

    @discardableResult
    func remove(_ key: CacheKey) -> Bool {
        guard let slot = find(key, hash: key.stableHash) else { return false }
        remove(slot: slot)
        return true
    }

    private func find(_ key: CacheKey, hash: UInt64) -> Int? {
        var slot = index[hash] ?? -1
        while slot >= 0 {
            if nodes[slot].stored.hasKey(key.bytes) { return slot }
            slot = nodes[slot].sameHash
        }
        return nil
    }

    private func remove(slot: Int) {
        let node = nodes[slot]
        unlink(slot)
        // Out of its hash chain.
        if index[node.hash] == slot {
            index[node.hash] = node.sameHash >= 0 ? node.sameHash : nil
        } else {
            var previous = index[node.hash]!
            while nodes[previous].sameHash != slot { previous = nodes[previous].sameHash }
            nodes[previous].sameHash = node.sameHash
        }
        statistics.entries -= 1
        statistics.bytes -= node.stored.size
        node.stored.deallocate()
        freeSlots.append(slot)
    }

    private func moveToFront(_ slot: Int) {
        guard slot != newest else { return }
        unlink(slot)
        linkAtFront(slot)
    }

    private func linkAtFront(_ slot: Int) {
        nodes[slot].newer = -1
        nodes[slot].older = newest
        if newest >= 0 { nodes[newest].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }

    private func unlink(_ slot: Int) {
        let (newer, older) = (nodes[slot].newer, nodes[slot].older)
        if newer >= 0 { nodes[newer].older = older } else { newest = older }
        if older >= 0 { nodes[older].newer = newer } else { oldest = newer }
        nodes[slot].newer = -1
        nodes[slot].older = -1
    }
}

/// One entry's bytes in a single allocation, laid out as CPython lays out an object: a header
/// whose first words count references (`ObjectHeader`), then the data.
///
/// A prefork worker inherits its master's preloaded entries copy-on-write. Whether it keeps
/// sharing those pages depends on whether reading an entry writes to it (`cache.refcount`).
/// Swift's own reference counting would write too, so the bytes are kept out of it: reads
/// copy them out and write only what `ReferenceCounting.read` writes.
struct StoredEntry {
    private let base: UnsafeMutableRawPointer

    private struct Lengths {
        var keyLength: Int32
        var contentTypeLength: Int32
        var valueLength: Int
    }

    private static let dataOffset = ObjectHeader.bytes + MemoryLayout<Lengths>.stride

    init(key: [UInt8], entry: CacheEntry) {
        let contentType = Array(entry.contentType.utf8)
        base = .allocate(byteCount: Self.dataOffset + key.count + contentType.count + entry.value.count,
                         alignment: MemoryLayout<Int>.alignment)
        ObjectHeader.initialize(at: base)
        (base + ObjectHeader.bytes).storeBytes(
            of: Lengths(keyLength: Int32(key.count), contentTypeLength: Int32(contentType.count), valueLength: entry.value.count),
            as: Lengths.self)
        var cursor = base + Self.dataOffset
        for part in [key, contentType, entry.value] {
            part.withUnsafeBytes { if let start = $0.baseAddress { cursor.copyMemory(from: start, byteCount: $0.count) } }
            cursor += part.count
        }
    }

    func deallocate() { base.deallocate() }

    private var lengths: Lengths { (base + ObjectHeader.bytes).load(as: Lengths.self) }

    /// Key plus value bytes, as the cache's budget counts them.
    var size: Int { Int(lengths.keyLength) + lengths.valueLength }

    func hasKey(_ key: [UInt8]) -> Bool {
        let length = Int(lengths.keyLength)
        guard length == key.count else { return false }
        return key.withUnsafeBytes { length == 0 || memcmp(base + Self.dataOffset, $0.baseAddress!, length) == 0 }
    }

    var entry: CacheEntry {
        let lengths = self.lengths
        let start = base + Self.dataOffset + Int(lengths.keyLength)
        let contentType = String(decoding: UnsafeRawBufferPointer(start: start, count: Int(lengths.contentTypeLength)), as: UTF8.self)
        let value = Array(UnsafeRawBufferPointer(start: start + Int(lengths.contentTypeLength), count: lengths.valueLength))
        return CacheEntry(value: value, contentType: contentType)
    }

    /// `times` reads of this object by handler code, as `counting` makes them.
    func read(times: Int, _ counting: ReferenceCounting) -> ReferenceWrites {
        counting.read(ObjectHeader(at: base), times: times)
    }
}
