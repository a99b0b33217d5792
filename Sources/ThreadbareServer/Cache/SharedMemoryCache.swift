import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// `cache.backend: shm`: one cache in a shared anonymous mapping, made before the prefork
/// master forks, so every worker (and every replacement, forked later from the same master)
/// reads and writes the same entries, as uWSGI's cache2 and nginx's shared zones do.
///
/// Layout: the keys hash (`stableHash`, the same in every process) to buckets of `ways` fixed-size
/// slots. A slot holds a reference count (written by reads as `cache.refcount` says, like
/// `StoredEntry`'s; here the page is shared, so the write costs no copy), the key, the content
/// type and the value, so an entry larger than a slot is refused (413), and a bucket keeps at most `ways - 1` entries: the free way is where the
/// next write goes. Eviction is LRU within the bucket (a per-bucket use counter), which is
/// approximate LRU overall, like memcached's per-slab LRUs.
///
/// A worker can die anywhere, SIGKILL included, so nothing may stay locked or half-written:
/// - each bucket has a robust, process-shared pthread mutex: when its holder dies the kernel
///   marks it, and the next process to lock it gets EOWNERDEAD, repairs the bucket, and marks
///   the mutex consistent. A repairer that dies too leaves EOWNERDEAD for the next; repairing
///   twice is harmless.
/// - a write never touches a live entry: it fills a free slot marked `writing`, marks it
///   `valid` (release ordering, after the bytes), and only then frees the entry it replaces.
///   Repair frees `writing` slots and, for a key left valid twice, keeps the later version; a
///   death mid-write therefore leaves the old value or the new, never a mix.
/// - the bucket's entry and byte counts are recomputed by the repair, so they cannot drift.
/// - cache-wide counters (hits, misses, evictions, expirations, repairs) are atomic words
///   updated without a lock; a death costs at most the one increment it was making.
public final class SharedMemoryCache: CacheBackend, @unchecked Sendable {
    static let ways = 8
    static let minimumSlotBytes = 256
    static let maxContentTypeBytes = 255
    /// The reference count at the start of each slot's bytes.
    static let referenceBytes = 8

    private typealias Word = UnsafeAtomic<Int>.Storage

    private enum SlotState: Int { case free = 0, writing, valid }

    private struct Header {
        var hits: Word
        var misses: Word
        var evictions: Word
        var expirations: Word
        var repairs: Word
    }

    private struct Bucket {
        var mutex: pthread_mutex_t
        /// Atomic so /cache can sum them without taking every lock; written under the mutex.
        var entries: Word
        var bytes: Word
        /// Counts uses of the bucket: a slot's `lastUsed` and `version` are readings of it.
        var clock: UInt64
    }

    private struct Slot {
        var state: Word
        var hash: UInt64
        var version: UInt64
        var lastUsed: UInt64
        /// CLOCK_MONOTONIC nanoseconds; 0 never.
        var expiresAt: UInt64
        var keyLength: UInt32
        var contentTypeLength: UInt32
        var valueLength: UInt32
    }

    public let maxEntries: Int
    public let maxBytes: Int
    /// Reference count, key, content type and value, per slot.
    public let slotBytes: Int
    public let referenceCounts: ReferenceCountTally?
    public var name: String { "shm" }
    public var isSharedByProcesses: Bool { true }
    public var blocksOnNetwork: Bool { false }
    public var maxEntryBytes: Int { slotBytes - Self.referenceBytes }
    public var entryLimit: Int? { maxEntries }
    public var byteLimit: Int? { maxBytes }
    public var details: [(String, JSONValue)] { [("slot_bytes", .integer(slotBytes)), ("repairs", .integer(repairs))] }

    private let bucketCount: Int
    private let mappedBytes: Int
    private let header: UnsafeMutablePointer<Header>
    private let buckets: UnsafeMutablePointer<Bucket>
    private let slots: UnsafeMutablePointer<Slot>
    private let payload: UnsafeMutableRawPointer
    /// This process's own counts (its memory is private after fork).
    private let local: UnsafeMutablePointer<Header>
    /// The entries and bytes `statistics` last summed, in this process.
    private let lastSeen = ManagedAtomic<Int>(0)
    private let lastSeenBytes = ManagedAtomic<Int>(0)

    /// Test hook: runs in the middle of copying a value, with the bucket locked and the slot
    /// marked `writing`; a test makes the writing thread die there.
    nonisolated(unsafe) var midWrite: (() -> Void)?

    /// Maps and initializes the segment: `maxEntries` (rounded up to whole buckets) slots of
    /// `maxBytes / maxEntries` bytes (plus the reference count), at least 256. Untouched pages
    /// cost nothing until written.
    public init(maxEntries: Int, maxBytes: Int, counting: ReferenceCounting = .immortal) throws {
        precondition(maxEntries >= 1 && maxBytes >= 1)
        bucketCount = (maxEntries + Self.ways - 2) / (Self.ways - 1)
        self.maxEntries = bucketCount * (Self.ways - 1)
        self.maxBytes = maxBytes
        referenceCounts = ReferenceCountTally(model: counting)
        slotBytes = max(Self.minimumSlotBytes, (maxBytes / maxEntries + Self.referenceBytes + 63) / 64 * 64)
        let slotCount = bucketCount * Self.ways
        let headerBytes = Self.aligned(MemoryLayout<Header>.stride)
        let bucketBytes = Self.aligned(MemoryLayout<Bucket>.stride * bucketCount)
        let slotHeaderBytes = Self.aligned(MemoryLayout<Slot>.stride * slotCount)
        let (payloadBytes, overflow) = slotBytes.multipliedReportingOverflow(by: slotCount)
        guard !overflow, payloadBytes <= Int.max - headerBytes - bucketBytes - slotHeaderBytes else {
            throw CacheSetupError(description: "cache.max_entries × slot size is too large to map")
        }
        mappedBytes = headerBytes + bucketBytes + slotHeaderBytes + payloadBytes
        guard let mapping = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              mapping != MAP_FAILED else {
            throw CacheSetupError(description: "cannot map a \(mappedBytes / 1_048_576) MiB shared cache: \(String(cString: strerror(errno)))")
        }
        // Zero-filled: every counter 0, every slot free.
        header = mapping.bindMemory(to: Header.self, capacity: 1)
        buckets = (mapping + headerBytes).bindMemory(to: Bucket.self, capacity: bucketCount)
        slots = (mapping + headerBytes + bucketBytes).bindMemory(to: Slot.self, capacity: slotCount)
        payload = mapping + headerBytes + bucketBytes + slotHeaderBytes
        local = .allocate(capacity: 1)
        local.initialize(to: Header(hits: .init(0), misses: .init(0), evictions: .init(0), expirations: .init(0), repairs: .init(0)))

        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        defer { pthread_mutexattr_destroy(&attributes) }
        pthread_mutexattr_setpshared(&attributes, Int32(PTHREAD_PROCESS_SHARED))
        pthread_mutexattr_setrobust(&attributes, Int32(PTHREAD_MUTEX_ROBUST))
        for bucket in 0..<bucketCount {
            pthread_mutex_init(mutex(bucket), &attributes)
        }
    }

    deinit {
        local.deallocate()
        munmap(UnsafeMutableRawPointer(header), mappedBytes)
    }

    private static func aligned(_ bytes: Int) -> Int { (bytes + 63) / 64 * 64 }

    // MARK: CacheBackend

    public func get(_ key: CacheKey, touches: Int) -> CacheEntry? {
        let hash = key.stableHash
        let now = MonotonicClock.now()
        return withBucket(for: hash) { bucket in
            guard let slot = find(key, hash: hash, in: bucket) else {
                count(\.misses)
                return nil
            }
            if slots[slot].expiresAt != 0 && now >= slots[slot].expiresAt {
                free(slot, in: bucket)
                count(\.expirations)
                count(\.misses)
                return nil
            }
            count(\.hits)
            slots[slot].lastUsed = tick(bucket)
            // Under the bucket's mutex: another process may free the slot once it is let go.
            let count = UnsafeAtomic<Int>(at: slotStart(slot).assumingMemoryBound(to: UnsafeAtomic<Int>.Storage.self))
            referenceCounts!.add(referenceCounts!.model.read(count: count, times: touches))
            return read(slot)
        }
    }

    public func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int = 0) -> CachePutOutcome {
        let contentType = Array(entry.contentType.utf8)
        guard contentType.count <= Self.maxContentTypeBytes,
              key.bytes.count + contentType.count + entry.value.count <= maxEntryBytes else { return .tooLarge }
        let hash = key.stableHash
        let now = MonotonicClock.now()
        return withBucket(for: hash) { bucket in
            let old = find(key, hash: hash, in: bucket)
            let target = freeWay(in: bucket, sparing: old, now: now)
            write(target, key: key.bytes, hash: hash, contentType: contentType, value: entry.value,
                  expiresAt: expiry(timeToLive: timeToLive, now: now), bucket: bucket)
            atomic(bucket, \.entries).wrappingIncrement(ordering: .relaxed)
            atomic(bucket, \.bytes).wrappingIncrement(by: key.bytes.count + entry.value.count, ordering: .relaxed)
            if let old { free(old, in: bucket) }
            // Keep a way free for the next write.
            while atomic(bucket, \.entries).load(ordering: .relaxed) > Self.ways - 1 {
                evict(leastRecentlyUsedIn: bucket, sparing: target, now: now)
            }
            return old == nil ? .created : .replaced
        }
    }

    public func remove(_ key: CacheKey) -> Bool {
        let hash = key.stableHash
        return withBucket(for: hash) { bucket in
            guard let slot = find(key, hash: hash, in: bucket) else { return false }
            free(slot, in: bucket)
            return true
        }
    }

    /// Sums every bucket's counts: a read of the whole segment, for /cache and /metrics.
    public var statistics: CacheStatistics {
        var figures = counters(header)
        for bucket in 0..<bucketCount {
            figures.entries += atomic(bucket, \.entries).load(ordering: .relaxed)
            figures.bytes += atomic(bucket, \.bytes).load(ordering: .relaxed)
        }
        lastSeen.store(figures.entries, ordering: .relaxed)
        lastSeenBytes.store(figures.bytes, ordering: .relaxed)
        return figures
    }

    /// Without summing the buckets: a prefork worker publishes this after every cache request,
    /// and the entries and bytes are the whole cache's anyway, as last summed.
    public var processStatistics: CacheStatistics {
        var figures = counters(local)
        (figures.entries, figures.bytes) = (lastSeen.load(ordering: .relaxed), lastSeenBytes.load(ordering: .relaxed))
        return figures
    }

    /// Buckets whose lock was found held by a dead process and repaired, since the segment was made.
    public var repairs: Int { UnsafeAtomic<Int>(at: pointer(header, \.repairs)).load(ordering: .relaxed) }

    // MARK: Buckets and slots

    private func withBucket<Result>(for hash: UInt64, _ body: (Int) -> Result) -> Result {
        let bucket = Int(hash % UInt64(bucketCount))
        let status = pthread_mutex_lock(mutex(bucket))
        if status == EOWNERDEAD {
            repair(bucket)
            pthread_mutex_consistent(mutex(bucket))
            UnsafeAtomic<Int>(at: pointer(header, \.repairs)).wrappingIncrement(ordering: .relaxed)
        } else {
            precondition(status == 0, "shared cache bucket lock: \(String(cString: strerror(status)))")
        }
        defer { pthread_mutex_unlock(mutex(bucket)) }
        return body(bucket)
    }

    /// The previous holder died with the lock: whatever it was writing is dropped, a key it
    /// had stored twice keeps its later version, and the counts are taken again.
    private func repair(_ bucket: Int) {
        for slot in ways(of: bucket) where state(slot) == .writing { setState(.free, slot) }
        var newest: [[UInt8]: Int] = [:]
        for slot in ways(of: bucket) where state(slot) == .valid {
            let key = Array(keyBytes(slot))
            guard let other = newest[key] else {
                newest[key] = slot
                continue
            }
            let (keep, drop) = slots[slot].version > slots[other].version ? (slot, other) : (other, slot)
            setState(.free, drop)
            newest[key] = keep
        }
        atomic(bucket, \.entries).store(newest.count, ordering: .relaxed)
        atomic(bucket, \.bytes).store(newest.values.reduce(0) { $0 + Int(slots[$1].keyLength) + Int(slots[$1].valueLength) },
                                      ordering: .relaxed)
    }

    private func find(_ key: CacheKey, hash: UInt64, in bucket: Int) -> Int? {
        ways(of: bucket).first { slot in
            state(slot) == .valid && slots[slot].hash == hash && keyBytes(slot).elementsEqual(key.bytes)
        }
    }

    /// A free way of the bucket, making one (dropping an expired entry, else the least recently
    /// used) when none is left, as after a death between a write and its eviction.
    private func freeWay(in bucket: Int, sparing old: Int?, now: UInt64) -> Int {
        if let free = ways(of: bucket).first(where: { state($0) == .free }) { return free }
        return evict(leastRecentlyUsedIn: bucket, sparing: old, now: now)
    }

    /// Frees the bucket's expired entry, or else its least recently used one; returns its slot.
    @discardableResult
    private func evict(leastRecentlyUsedIn bucket: Int, sparing spared: Int?, now: UInt64) -> Int {
        let candidates = ways(of: bucket).filter { $0 != spared && state($0) == .valid }
        let victim = candidates.first { slots[$0].expiresAt != 0 && now >= slots[$0].expiresAt }
            ?? candidates.min { slots[$0].lastUsed < slots[$1].lastUsed }!
        let expired = slots[victim].expiresAt != 0 && now >= slots[victim].expiresAt
        free(victim, in: bucket)
        count(expired ? \.expirations : \.evictions)
        return victim
    }

    private func write(_ slot: Int, key: [UInt8], hash: UInt64, contentType: [UInt8], value: [UInt8], expiresAt: UInt64, bucket: Int) {
        setState(.writing, slot)
        // The mark must reach memory before any byte of the entry does.
        atomicMemoryFence(ordering: .releasing)
        slotStart(slot).storeBytes(of: 1 as UInt64, as: UInt64.self)
        let bytes = slotStart(slot) + Self.referenceBytes
        key.withUnsafeBytes { bytes.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        contentType.withUnsafeBytes { if $0.count > 0 { (bytes + key.count).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        let valueStart = bytes + key.count + contentType.count
        value.withUnsafeBytes { buffer in
            guard buffer.count > 0 else { return }
            let half = buffer.count / 2
            valueStart.copyMemory(from: buffer.baseAddress!, byteCount: half)
            midWrite?()
            (valueStart + half).copyMemory(from: buffer.baseAddress! + half, byteCount: buffer.count - half)
        }
        slots[slot].hash = hash
        slots[slot].keyLength = UInt32(key.count)
        slots[slot].contentTypeLength = UInt32(contentType.count)
        slots[slot].valueLength = UInt32(value.count)
        slots[slot].expiresAt = expiresAt
        slots[slot].version = tick(bucket)
        slots[slot].lastUsed = slots[slot].version
        UnsafeAtomic<Int>(at: pointer(slots + slot, \.state)).store(SlotState.valid.rawValue, ordering: .releasing)
    }

    private func free(_ slot: Int, in bucket: Int) {
        setState(.free, slot)
        atomic(bucket, \.entries).wrappingDecrement(ordering: .relaxed)
        atomic(bucket, \.bytes).wrappingDecrement(by: Int(slots[slot].keyLength) + Int(slots[slot].valueLength), ordering: .relaxed)
    }

    private func read(_ slot: Int) -> CacheEntry {
        let start = slotStart(slot) + Self.referenceBytes
        let keyLength = Int(slots[slot].keyLength), typeLength = Int(slots[slot].contentTypeLength)
        let contentType = String(decoding: UnsafeRawBufferPointer(start: start + keyLength, count: typeLength), as: UTF8.self)
        let value = Array(UnsafeRawBufferPointer(start: start + keyLength + typeLength, count: Int(slots[slot].valueLength)))
        return CacheEntry(value: value, contentType: contentType)
    }

    private func keyBytes(_ slot: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: slotStart(slot) + Self.referenceBytes, count: Int(slots[slot].keyLength))
    }

    private func slotStart(_ slot: Int) -> UnsafeMutableRawPointer { payload + slot * slotBytes }

    private func ways(of bucket: Int) -> Range<Int> { bucket * Self.ways ..< (bucket + 1) * Self.ways }

    private func tick(_ bucket: Int) -> UInt64 {
        buckets[bucket].clock += 1
        return buckets[bucket].clock
    }

    private func state(_ slot: Int) -> SlotState {
        SlotState(rawValue: UnsafeAtomic<Int>(at: pointer(slots + slot, \.state)).load(ordering: .relaxed)) ?? .free
    }

    private func setState(_ state: SlotState, _ slot: Int) {
        UnsafeAtomic<Int>(at: pointer(slots + slot, \.state)).store(state.rawValue, ordering: .releasing)
    }

    private func mutex(_ bucket: Int) -> UnsafeMutablePointer<pthread_mutex_t> {
        pointer(buckets + bucket, \.mutex)
    }

    private func atomic(_ bucket: Int, _ field: KeyPath<Bucket, Word>) -> UnsafeAtomic<Int> {
        UnsafeAtomic<Int>(at: pointer(buckets + bucket, field))
    }

    private func count(_ field: KeyPath<Header, Word>) {
        UnsafeAtomic<Int>(at: pointer(header, field)).wrappingIncrement(ordering: .relaxed)
        UnsafeAtomic<Int>(at: pointer(local, field)).wrappingIncrement(ordering: .relaxed)
    }

    private func counters(_ header: UnsafeMutablePointer<Header>) -> CacheStatistics {
        func load(_ field: KeyPath<Header, Word>) -> Int { UnsafeAtomic<Int>(at: pointer(header, field)).load(ordering: .relaxed) }
        return CacheStatistics(hits: load(\.hits), misses: load(\.misses), evictions: load(\.evictions), expirations: load(\.expirations))
    }

    private func pointer<Base, Field>(_ base: UnsafeMutablePointer<Base>, _ field: KeyPath<Base, Field>) -> UnsafeMutablePointer<Field> {
        (UnsafeMutableRawPointer(base) + MemoryLayout<Base>.offset(of: field)!).assumingMemoryBound(to: Field.self)
    }
}
