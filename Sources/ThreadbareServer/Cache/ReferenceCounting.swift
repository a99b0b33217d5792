import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// `cache.refcount`: what reading a cached object writes into it. A Python handler that reads
/// an object takes a reference to it and gives it back, and which counter that writes, if
/// any, depends on the build and the object:
/// - `immortal`: nothing. The count is only read, to see the object is immortal (3.12's
///   immortal objects; 3.13t and 3.14t make more of them, and defer counts on others).
/// - `plain`: a plain increment and decrement of `ob_refcnt`, as a GIL build makes them under
///   its lock. A write all the same: a prefork worker's read copies the page it inherited.
/// - `atomic`: a free-threaded build's biased reference counting (PEP 703). The thread that
///   made the object counts plainly in its own field; every other thread increments and
///   decrements the shared field atomically, so threads reading one object fight over the
///   cache line that holds its header.
///
/// `gc.freeze()` in a forked worker does not make objects immortal: it keeps the collector's
/// own writes off them, and reads still write counts.
public enum ReferenceCounting: String, Sendable, CaseIterable {
    case immortal, plain, atomic

    /// What `times` reads of the object at `header` wrote.
    @discardableResult
    func read(_ header: ObjectHeader, times: Int) -> ReferenceWrites {
        guard self == .atomic else { return read(count: header.local, times: times) }
        // Biased: the owner's own count is written plainly, everyone else's atomically.
        let ownsIt = header.owner == UInt(bitPattern: Int(bitPattern: UInt(pthread_self())))
        return ownsIt ? ReferenceCounting.plain.read(count: header.local, times: times) : read(count: header.shared, times: times)
    }

    /// `times` reads writing `count` as this model does: an object with one count field (a
    /// shared-memory slot, which no thread owns).
    func read(count: UnsafeAtomic<Int>, times: Int) -> ReferenceWrites {
        switch self {
        case .immortal:
            var seen = 0
            for _ in 0..<times { seen |= count.load(ordering: .relaxed) }
            // Used, so the reads stay; a count is never negative.
            if seen < 0 { count.store(0, ordering: .relaxed) }
            return ReferenceWrites()
        case .plain:
            Self.countPlainly(count, times: times)
            return ReferenceWrites(plain: times)
        case .atomic:
            for _ in 0..<times {
                count.wrappingIncrement(ordering: .relaxed)
                count.wrappingDecrement(ordering: .relaxed)
            }
            return ReferenceWrites(atomic: times)
        }
    }

    /// Up and down again, as Py_INCREF and Py_DECREF do: a load and a store each, relaxed
    /// atomics only so the compiler keeps every one (only one thread writes this field).
    private static func countPlainly(_ field: UnsafeAtomic<Int>, times: Int) {
        for _ in 0..<times {
            field.store(field.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            field.store(field.load(ordering: .relaxed) &- 1, ordering: .relaxed)
        }
    }
}

/// Count writes made by reads: plain (a GIL build's, or a free-threaded owner's) and atomic.
public struct ReferenceWrites: Sendable, Equatable {
    public var plain = 0
    public var atomic = 0
}

/// The counting fields at the start of an object, laid out as in a free-threaded PyObject:
/// the thread that made it, its own count (`ob_refcnt` in a GIL build), and the count other
/// threads share. Three words, so one cache line holds them all and the bytes after them.
struct ObjectHeader {
    static let bytes = 3 * MemoryLayout<Int>.stride

    let owner: UInt
    let local: UnsafeAtomic<Int>
    let shared: UnsafeAtomic<Int>

    /// The header at `base`, as `initialize` left it.
    init(at base: UnsafeMutableRawPointer) {
        owner = base.load(as: UInt.self)
        local = UnsafeAtomic(at: (base + MemoryLayout<Int>.stride).assumingMemoryBound(to: UnsafeAtomic<Int>.Storage.self))
        shared = UnsafeAtomic(at: (base + 2 * MemoryLayout<Int>.stride).assumingMemoryBound(to: UnsafeAtomic<Int>.Storage.self))
    }

    /// A new object's header, made by the calling thread, holding one reference.
    static func initialize(at base: UnsafeMutableRawPointer) {
        base.storeBytes(of: UInt(bitPattern: Int(bitPattern: UInt(pthread_self()))), as: UInt.self)
        (base + MemoryLayout<Int>.stride).storeBytes(of: 1, as: Int.self)
        (base + 2 * MemoryLayout<Int>.stride).storeBytes(of: 0, as: Int.self)
    }
}

/// A process's tally of the counts its cache reads wrote, for `GET /cache`.
public final class ReferenceCountTally: Sendable {
    public let model: ReferenceCounting
    private let plain = SharedCounter(), atomic = SharedCounter()

    public init(model: ReferenceCounting) {
        self.model = model
    }

    /// Once per request, whatever its reads: the tally adds no contention of its own per read.
    func add(_ writes: ReferenceWrites) {
        if writes.plain > 0 { plain.add(writes.plain) }
        if writes.atomic > 0 { atomic.add(writes.atomic) }
    }

    public var writes: ReferenceWrites { ReferenceWrites(plain: plain.current, atomic: atomic.current) }

    var json: JSONValue {
        ["model": .string(model.rawValue), "plain_writes": .integer(plain.current), "atomic_writes": .integer(atomic.current)]
    }
}
