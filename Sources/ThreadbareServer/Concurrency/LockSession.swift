/// One request's use of its domain's lock: what CPython keeps in the thread state a request
/// runs on. It adds up how long the request waited for the lock, for `Server-Timing: lock`.
///
/// A session belongs to the handler thread running its request and is never shared.
public final class LockSession: @unchecked Sendable {
    public let lock: any InterpreterLock
    /// Nanoseconds this request has waited for the lock so far.
    public private(set) var waited: UInt64 = 0

    public init(lock: any InterpreterLock) {
        self.lock = lock
    }

    public func acquire() {
        waited &+= lock.acquire()
    }

    public func release() {
        lock.release()
    }

    /// Once per unit of CPU work: one relaxed atomic load unless the holder is asked to drop.
    @inline(__always)
    public func checkpoint() {
        waited &+= lock.checkpoint()
    }

    /// Runs `body` (a blocking call, or C code that needs no lock) without the lock, and takes
    /// it back afterwards: Py_BEGIN_ALLOW_THREADS … Py_END_ALLOW_THREADS.
    public func withReleased<T>(_ body: () throws -> T) rethrows -> T {
        release()
        let released = MonotonicClock.now()
        defer {
            lock.statistics.recordReleased(nanoseconds: MonotonicClock.now() - released)
            acquire()
        }
        return try body()
    }
}
