/// A cache key: exact bytes, as memcached compares them. Not `String`, whose equality is
/// Unicode canonical equivalence: "é" (2 bytes) and "e" + U+0301 (3 bytes) would be one key with
/// two sizes, and the byte accounting would drift.
public struct CacheKey: Hashable, Sendable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ text: String) { bytes = Array(text.utf8) }
}

/// One entry of the in-process cache.
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

    /// Sums shards, domains or workers.
    public static func += (total: inout CacheStatistics, part: CacheStatistics) {
        total.entries += part.entries
        total.bytes += part.bytes
        total.hits += part.hits
        total.misses += part.misses
        total.evictions += part.evictions
    }
}

/// A bounded least-recently-used map, not thread-safe: `ShardedCache` guards each one.
///
/// Entries live in an array and are linked into a recency list by index, so a hit moves an
/// entry to the front without allocating. An entry's size is its key's bytes plus its value's.
struct LRUCache {
    enum PutOutcome: Equatable { case created, replaced, tooLarge }

    private struct Node {
        var key: CacheKey
        var entry: CacheEntry
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

    mutating func get(_ key: CacheKey) -> CacheEntry? {
        guard let slot = index[key] else {
            statistics.misses += 1
            return nil
        }
        statistics.hits += 1
        moveToFront(slot)
        return nodes[slot].entry
    }

    mutating func put(_ key: CacheKey, _ entry: CacheEntry) -> PutOutcome {
        let size = Self.size(key, entry)
        guard size <= maxBytes, maxEntries > 0 else { return .tooLarge }
        let outcome: PutOutcome
        if let slot = index[key] {
            statistics.bytes += size - Self.size(key, nodes[slot].entry)
            nodes[slot].entry = entry
            moveToFront(slot)
            outcome = .replaced
        } else {
            let node = Node(key: key, entry: entry)
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
            remove(slot: victim)
            statistics.evictions += 1
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
