#if canImport(Glibc)
import Glibc
#endif

/// A bounded least-recently-used map, not thread-safe: `ShardedCache` guards each one.
///
/// Each entry's key, content type and value live in one allocation of their own, outside Swift's
/// reference counting (`StoredEntry`); nodes and the index hold only plain words. So reading an
/// entry writes nothing near its bytes, unless `refcountTouch` asks it to, and that choice alone
/// decides whether a prefork worker's reads copy the pages it inherited (see `StoredEntry`).
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
    /// Every read writes the count in the entry's header, as CPython's reference counting
    /// writes every object it touches.
    let refcountTouch: Bool
    private var index: [UInt64: Int] = [:]
    private var nodes: [Node] = []
    private var freeSlots: [Int] = []
    private var newest = -1
    private var oldest = -1
    private(set) var statistics = CacheStatistics()

    init(maxEntries: Int, maxBytes: Int, refcountTouch: Bool = false) {
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        self.refcountTouch = refcountTouch
    }

    deinit {
        var slot = newest
        while slot >= 0 {
            nodes[slot].stored.deallocate()
            slot = nodes[slot].older
        }
    }

    func get(_ key: CacheKey, now: UInt64 = MonotonicClock.now()) -> CacheEntry? {
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
        if refcountTouch { nodes[slot].stored.touch() }
        return nodes[slot].stored.entry
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
/// whose first word counts references, then the data.
///
/// A prefork worker inherits its master's preloaded entries copy-on-write. Whether it keeps
/// sharing those pages depends on whether reading an entry writes to it: CPython's reference
/// counting does (every read of an object increments and decrements `ob_refcnt`), CPython
/// 3.13t's immortal objects do not. Swift's own reference counting would write too, so the
/// bytes are kept out of it: reads copy them out and write nothing, unless `touch` is called.
struct StoredEntry {
    private let base: UnsafeMutableRawPointer

    private struct Header {
        var references: Int
        var keyLength: Int32
        var contentTypeLength: Int32
        var valueLength: Int
    }

    init(key: [UInt8], entry: CacheEntry) {
        let contentType = Array(entry.contentType.utf8)
        let header = Header(references: 1, keyLength: Int32(key.count), contentTypeLength: Int32(contentType.count),
                            valueLength: entry.value.count)
        base = .allocate(byteCount: MemoryLayout<Header>.stride + key.count + contentType.count + entry.value.count,
                         alignment: MemoryLayout<Header>.alignment)
        base.storeBytes(of: header, as: Header.self)
        var cursor = base + MemoryLayout<Header>.stride
        for part in [key, contentType, entry.value] {
            part.withUnsafeBytes { if let start = $0.baseAddress { cursor.copyMemory(from: start, byteCount: $0.count) } }
            cursor += part.count
        }
    }

    func deallocate() { base.deallocate() }

    private var header: Header { base.load(as: Header.self) }

    /// Key plus value bytes, as the cache's budget counts them.
    var size: Int { Int(header.keyLength) + header.valueLength }

    func hasKey(_ key: [UInt8]) -> Bool {
        let length = Int(header.keyLength)
        guard length == key.count else { return false }
        return key.withUnsafeBytes { length == 0 || memcmp(base + MemoryLayout<Header>.stride, $0.baseAddress!, length) == 0 }
    }

    var entry: CacheEntry {
        let header = self.header
        let start = base + MemoryLayout<Header>.stride + Int(header.keyLength)
        let contentType = String(decoding: UnsafeRawBufferPointer(start: start, count: Int(header.contentTypeLength)), as: UTF8.self)
        let value = Array(UnsafeRawBufferPointer(start: start + Int(header.contentTypeLength), count: header.valueLength))
        return CacheEntry(value: value, contentType: contentType)
    }

    /// A read as CPython makes it: the reference count goes up (and, when the reader is done,
    /// down again; the page is dirty either way, so once is enough).
    func touch() {
        base.storeBytes(of: base.load(as: Int.self) &+ 1, as: Int.self)
    }
}
