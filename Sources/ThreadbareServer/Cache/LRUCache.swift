/// A bounded least-recently-used map, not thread-safe: `ShardedCache` guards each one.
///
/// Entries live in an array and are linked into a recency list by index, so a hit moves an
/// entry to the front without allocating. An entry's size is its key's bytes plus its value's.
/// Expired entries go when they are read (a miss and an expiration) or reach the LRU end, as
/// in memcached; until then they count in `entries`.
struct LRUCache {
    private struct Node {
        var key: CacheKey
        var entry: CacheEntry
        /// CLOCK_MONOTONIC nanoseconds; 0 never.
        var expiresAt: UInt64 = 0
        var newer = -1
        var older = -1
    }

    let maxEntries: Int
    let maxBytes: Int
    private var index: [CacheKey: Int] = [:]
    private var nodes: [Node] = []
    private var freeSlots: [Int] = []
    private var newest = -1
    private var oldest = -1
    private(set) var statistics = CacheStatistics()

    init(maxEntries: Int, maxBytes: Int) {
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
    }

    mutating func get(_ key: CacheKey, now: UInt64 = MonotonicClock.now()) -> CacheEntry? {
        guard let slot = index[key] else {
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
        return nodes[slot].entry
    }

    mutating func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int = 0, now: UInt64 = MonotonicClock.now()) -> CachePutOutcome {
        let size = Self.size(key, entry)
        let expiresAt = expiry(timeToLive: timeToLive, now: now)
        guard size <= maxBytes, maxEntries > 0 else { return .tooLarge }
        let outcome: CachePutOutcome
        if let slot = index[key] {
            statistics.bytes += size - Self.size(key, nodes[slot].entry)
            nodes[slot].entry = entry
            nodes[slot].expiresAt = expiresAt
            moveToFront(slot)
            outcome = .replaced
        } else {
            let node = Node(key: key, entry: entry, expiresAt: expiresAt)
            let slot: Int
            if let free = freeSlots.popLast() {
                nodes[free] = node
                slot = free
            } else {
                nodes.append(node)
                slot = nodes.count - 1
            }
            index[key] = slot
            linkAtFront(slot)
            statistics.entries += 1
            statistics.bytes += size
            outcome = .created
        }
        while statistics.entries > maxEntries || statistics.bytes > maxBytes {
            let victim = oldest
            precondition(victim != index[key], "the entry just stored fits, so it is never the victim")
            let expired = nodes[victim].expiresAt != 0 && now >= nodes[victim].expiresAt
            remove(slot: victim)
            if expired { statistics.expirations += 1 } else { statistics.evictions += 1 }
        }
        return outcome
    }

    @discardableResult
    mutating func remove(_ key: CacheKey) -> Bool {
        guard let slot = index[key] else { return false }
        remove(slot: slot)
        return true
    }

    private mutating func remove(slot: Int) {
        let node = nodes[slot]
        unlink(slot)
        index[node.key] = nil
        statistics.entries -= 1
        statistics.bytes -= Self.size(node.key, node.entry)
        // Drop the value now rather than when the slot is reused.
        nodes[slot] = Node(key: CacheKey([]), entry: CacheEntry(value: [], contentType: ""))
        freeSlots.append(slot)
    }

    private static func size(_ key: CacheKey, _ entry: CacheEntry) -> Int {
        key.bytes.count + entry.value.count
    }

    private mutating func moveToFront(_ slot: Int) {
        guard slot != newest else { return }
        unlink(slot)
        linkAtFront(slot)
    }

    private mutating func linkAtFront(_ slot: Int) {
        nodes[slot].newer = -1
        nodes[slot].older = newest
        if newest >= 0 { nodes[newest].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }

    private mutating func unlink(_ slot: Int) {
        let (newer, older) = (nodes[slot].newer, nodes[slot].older)
        if newer >= 0 { nodes[newer].older = older } else { newest = older }
        if older >= 0 { nodes[older].newer = newer } else { oldest = newer }
        nodes[slot].newer = -1
        nodes[slot].older = -1
    }
}
