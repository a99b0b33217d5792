/// The lock a handler thread holds while it runs handler code, as a CPython thread holds its
/// interpreter's GIL while it runs bytecode.
///
/// Handler threads call `acquire` before handler code and `release` after it; long-running
/// handler code calls `checkpoint` where CPython's eval loop would look at its eval breaker;
/// blocking calls run inside `withReleased`, CPython's Py_BEGIN/END_ALLOW_THREADS.
public protocol InterpreterLock: AnyObject, Sendable {
    func acquire()
    func release()
    /// A place where the holder may be asked to let another thread run.
    func checkpoint()
}

extension InterpreterLock {
    /// Runs `body` (a blocking call) without the lock, and takes it back afterwards.
    public func withReleased<T>(_ body: () throws -> T) rethrows -> T {
        release()
        defer { acquire() }
        return try body()
    }
}

/// Free threading: no global lock at all. Every operation is an empty call, so `none` costs
/// nothing measurable next to the handler work around it.
public final class NoInterpreterLock: InterpreterLock {
    public init() {}
    @inline(__always) public func acquire() {}
    @inline(__always) public func release() {}
    @inline(__always) public func checkpoint() {}
}
