#if canImport(Glibc)
import Glibc
#endif

/// State reachable only through a pthread mutex.
///
/// Swift's `Synchronization.Mutex` locks with futex operations inside the Synchronization
/// module, which ThreadSanitizer does not instrument, so it reports every access such a mutex
/// guards as a race. pthread mutexes are intercepted by TSAN: with this type `make test-tsan`
/// checks the locking that is really there. The uncontended cost is the same futex fast path.
public final class Locked<State>: @unchecked Sendable {
    private var state: State
    private let mutex: UnsafeMutablePointer<pthread_mutex_t> = .allocate(capacity: 1)

    public init(_ initial: State) {
        state = initial
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result>(_ body: (inout State) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }
}
