import Atomics
import Logging
import ProcessInspection
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One shared-memory segment the prefork master maps before it forks, with a slot per worker:
/// the way Apache's scoreboard and gunicorn's heartbeat files let a master see its workers, and
/// let any worker describe all of them. Every field is an atomic word, so the master and the
/// workers read and write it without a lock that a dying process could leave held.
public final class Scoreboard: @unchecked Sendable {
    public enum State: Int, Sendable {
        /// `retiring`: serving, and asking the master for a replacement.
        case empty = 0, booting, ready, retiring, stopping

        public var name: String {
            switch self {
            case .empty: "empty"
            case .booting: "booting"
            case .ready: "ready"
            case .retiring: "retiring"
            case .stopping: "stopping"
            }
        }
    }

    /// Slots in the segment; `workers` and TTIN are limited to it.
    public static let capacity = 256
    static let bootErrorBytes = 240

    /// swift-atomics' storage for one atomic Int, which can live in shared memory.
    private typealias Word = UnsafeAtomic<Int>.Storage

    private struct Slot {
        var pid: Word
        var state: Word
        /// Wall-clock seconds since the epoch when the worker was forked.
        var startedAt: Word
        /// Monotonic nanoseconds of the worker loop's last beat.
        var heartbeat: Word
        var requests: Word
        /// Published by the worker once a second.
        var connections: Word
        var cacheEntries: Word
        var cacheBytes: Word
        var cacheHits: Word
        var cacheMisses: Word
        var cacheEvictions: Word
        var cacheExpirations: Word
        /// Why the worker could not boot, NUL-terminated; written just before it exits.
        var bootError: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                        UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                        UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    }

    private let slots: UnsafeMutablePointer<Slot>
    private let bytes: Int

    public init() throws {
        bytes = MemoryLayout<Slot>.stride * Self.capacity
        guard let mapping = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0),
              mapping != MAP_FAILED else {
            throw SocketError(description: "cannot map the worker scoreboard: \(String(cString: strerror(errno)))")
        }
        // A fresh anonymous mapping is zero-filled: every slot is empty, every counter 0.
        slots = mapping.bindMemory(to: Slot.self, capacity: Self.capacity)
    }

    deinit {
        munmap(slots, bytes)
    }

    private func atomic(_ slot: Int, _ field: KeyPath<Slot, Word>) -> UnsafeAtomic<Int> {
        precondition((0..<Self.capacity).contains(slot))
        let offset = MemoryLayout<Slot>.offset(of: field)!
        let pointer = (UnsafeMutableRawPointer(slots + slot) + offset).assumingMemoryBound(to: Word.self)
        return UnsafeAtomic(at: pointer)
    }

    // MARK: The master

    /// Claims `slot` for a worker about to be forked.
    func prepare(slot: Int) {
        atomic(slot, \.pid).store(0, ordering: .relaxed)
        for field in Self.publishedFields + [\Slot.requests] {
            atomic(slot, field).store(0, ordering: .relaxed)
        }
        atomic(slot, \.heartbeat).store(Int(MonotonicClock.now()), ordering: .relaxed)
        atomic(slot, \.startedAt).store(time(nil), ordering: .relaxed)
        _ = withUnsafeMutableBytes(of: &slots[slot].bootError) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
        atomic(slot, \.state).store(State.booting.rawValue, ordering: .releasing)
    }

    func setPID(_ pid: Int32, slot: Int) {
        atomic(slot, \.pid).store(Int(pid), ordering: .relaxed)
    }

    func clear(slot: Int) {
        atomic(slot, \.state).store(State.empty.rawValue, ordering: .releasing)
        atomic(slot, \.pid).store(0, ordering: .relaxed)
    }

    /// What the worker in `slot` wrote before it exited, if anything.
    func bootError(slot: Int) -> String? {
        let text = withUnsafeBytes(of: &slots[slot].bootError) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return text.isEmpty ? nil : text
    }

    /// The figures a worker publishes, in `publish` order.
    private static var publishedFields: [KeyPath<Slot, Word>] {
        [\.connections, \.cacheEntries, \.cacheBytes, \.cacheHits, \.cacheMisses, \.cacheEvictions, \.cacheExpirations]
    }

    // MARK: Either side

    public func state(slot: Int) -> State {
        State(rawValue: atomic(slot, \.state).load(ordering: .acquiring)) ?? .empty
    }

    public func setState(_ state: State, slot: Int) {
        atomic(slot, \.state).store(state.rawValue, ordering: .releasing)
    }

    /// Moves `slot` to `state` only from one of `from`; false if it was in another state.
    @discardableResult
    public func transition(slot: Int, from: [State], to state: State) -> Bool {
        let word = atomic(slot, \.state)
        var current = word.load(ordering: .acquiring)
        while let known = State(rawValue: current), from.contains(known) {
            let (exchanged, original) = word.compareExchange(expected: current, desired: state.rawValue, ordering: .sequentiallyConsistent)
            if exchanged { return true }
            current = original
        }
        return false
    }

    public func heartbeat(slot: Int) -> UInt64 {
        UInt64(atomic(slot, \.heartbeat).load(ordering: .relaxed))
    }

    // MARK: The worker

    public func beat(slot: Int) {
        atomic(slot, \.heartbeat).store(Int(MonotonicClock.now()), ordering: .relaxed)
    }

    /// Returns the worker's requests so far.
    @discardableResult
    public func countRequest(slot: Int) -> Int {
        atomic(slot, \.requests).wrappingIncrementThenLoad(ordering: .relaxed)
    }

    func publish(connections: Int, cache: CacheStatistics, slot: Int) {
        let values = [connections, cache.entries, cache.bytes, cache.hits, cache.misses, cache.evictions, cache.expirations]
        for (field, value) in zip(Self.publishedFields, values) {
            atomic(slot, field).store(value, ordering: .relaxed)
        }
    }

    /// Leaves the reason the worker could not boot for the master, which names it when it gives up.
    func recordBootError(_ message: String, slot: Int) {
        withUnsafeMutableBytes(of: &slots[slot].bootError) { buffer in
            let utf8 = Array(message.utf8.prefix(buffer.count - 1))
            buffer.copyBytes(from: utf8)
            buffer[utf8.count] = 0
        }
    }

    // MARK: Reading every worker

    public struct WorkerFigures: Sendable {
        public var slot: Int
        public var pid: Int32
        public var state: State
        public var startedAt: Int
        public var requests: Int
        /// As of the worker's last heartbeat: connections ever opened, and its cache.
        public var connections: Int
        public var cache: CacheStatistics
    }

    public func workers() -> [WorkerFigures] {
        (0..<Self.capacity).compactMap { slot in
            let state = self.state(slot: slot)
            guard state != .empty else { return nil }
            return WorkerFigures(
                slot: slot, pid: Int32(atomic(slot, \.pid).load(ordering: .relaxed)), state: state,
                startedAt: atomic(slot, \.startedAt).load(ordering: .relaxed),
                requests: atomic(slot, \.requests).load(ordering: .relaxed),
                connections: atomic(slot, \.connections).load(ordering: .relaxed),
                cache: CacheStatistics(
                    entries: atomic(slot, \.cacheEntries).load(ordering: .relaxed), bytes: atomic(slot, \.cacheBytes).load(ordering: .relaxed),
                    hits: atomic(slot, \.cacheHits).load(ordering: .relaxed), misses: atomic(slot, \.cacheMisses).load(ordering: .relaxed),
                    evictions: atomic(slot, \.cacheEvictions).load(ordering: .relaxed),
                    expirations: atomic(slot, \.cacheExpirations).load(ordering: .relaxed)))
        }
    }
}

/// A prefork worker's own slot on its master's scoreboard, and its recycling limits.
public final class ScoreboardSeat: Sendable {
    public let scoreboard: Scoreboard
    public let slot: Int
    /// Requests after which the worker retires (0: never); RSS in bytes likewise.
    let maxRequests: Int
    let maxResidentBytes: Int
    private let retired = Synchronization.Atomic<Bool>(false)

    init(scoreboard: Scoreboard, slot: Int, maxRequests: Int, maxResidentBytes: Int) {
        self.scoreboard = scoreboard
        self.slot = slot
        self.maxRequests = maxRequests
        self.maxResidentBytes = maxResidentBytes
    }

    public func countRequest() {
        let count = scoreboard.countRequest(slot: slot)
        if maxRequests > 0 && count >= maxRequests { retire(because: "served \(count) requests (max_requests)") }
    }

    /// Once a second, from the worker's first loop: the heartbeat, this worker's figures for
    /// the others' /stats and /cache, and the memory limit.
    func beat(publishing status: ServerStatus) {
        scoreboard.beat(slot: slot)
        publish(status)
        if maxResidentBytes > 0 {
            let resident = ProcessMemory.residentBytes()
            if resident > maxResidentBytes { retire(because: "resident memory \(resident / 1_048_576) MiB (max_rss_mb)") }
        }
    }

    /// Also called by the worker answering /stats or /cache, so its own figures are current.
    func publish(_ status: ServerStatus) {
        // Domains share the shm cache: count it once.
        var cache = CacheStatistics()
        for domain in status.domains where domain.index == 0 || !domain.cache.isSharedByProcesses { cache += domain.cache.processStatistics }
        scoreboard.publish(connections: status.counters.acceptedConnections.current, cache: cache, slot: slot)
    }

    /// Leaves as gunicorn's max_requests does, but without failing a request or leaving its
    /// sockets unattended: it keeps serving and asks the master for a replacement; once that
    /// one is ready the master sends TERM, and this worker finishes its requests (answers from
    /// then on say Connection: close) and exits.
    /// A worker asked to retire while it was still booting (a tiny max_requests, a first beat
    /// over max_rss_mb) retires only now, so `retiring` always means "has booted": the master
    /// counts it as ready, and a position recycled at every boot still gets announced.
    ///
    /// The flag and the state are both sequentially consistent, so whichever of this and
    /// `retire` runs second sees what the other did.
    func finishBooting() {
        scoreboard.transition(slot: slot, from: [.booting], to: .ready)
        if retired.load(ordering: .sequentiallyConsistent) {
            scoreboard.transition(slot: slot, from: [.ready], to: .retiring)
        }
    }

    private func retire(because reason: String) {
        guard !retired.exchange(true, ordering: .sequentiallyConsistent) else { return }
        // Not over `stopping`: a worker already told to stop has nothing to ask for.
        scoreboard.transition(slot: slot, from: [.ready], to: .retiring)
        Logger(label: "threadbare").info("worker retiring", metadata: ["pid": "\(getpid())", "reason": "\(reason)"])
    }
}
