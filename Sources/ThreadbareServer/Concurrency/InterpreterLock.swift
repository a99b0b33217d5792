/// The lock a handler thread holds while it runs handler code, as a CPython thread holds its
/// interpreter's GIL while it runs bytecode.
///
/// Handler threads call `acquire` before handler code and `release` after it; long-running
/// handler code calls `checkpoint` where CPython's eval loop would look at its eval breaker;
/// blocking calls run with the lock released, CPython's Py_BEGIN/END_ALLOW_THREADS. Handlers
/// use it through their request's `LockSession`, which adds up the waiting.
public protocol InterpreterLock: AnyObject, Sendable {
    var statistics: LockStatistics { get }
    /// Takes the lock; returns the nanoseconds spent waiting for it.
    func acquire() -> UInt64
    func release()
    /// A place where the holder may be asked to let another thread run. Returns the
    /// nanoseconds spent without the lock (0 when it was not asked).
    func checkpoint() -> UInt64
}

/// Free threading: no global lock at all. Acquiring never waits; it only counts, with two
/// atomics and no mutex, so `/stats` can show how many threads ran handler code at once.
public final class NoInterpreterLock: InterpreterLock {
    public let statistics: LockStatistics

    public init(statistics: LockStatistics) {
        self.statistics = statistics
    }

    public func acquire() -> UInt64 {
        statistics.recordEntry()
        return 0
    }

    public func release() {
        statistics.recordExit()
    }

    @inline(__always) public func checkpoint() -> UInt64 { 0 }
}
