import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// CPython's GIL, the "new GIL" of Python/ceval_gil.c (3.2 and later), for handler threads.
///
/// - A thread that wants the lock waits on a condition variable for at most one switch
///   interval. If that wait timed out, the lock is still held and no hand-over happened
///   meanwhile (the switch number did not move), it asks the holder to drop the lock. Any other
///   outcome starts a whole new interval, so a holder is only ever asked after holding the lock
///   for a full interval.
/// - The holder looks for that request only at check points (`checkpoint`, once per unit of
///   `/cpu` work): code between them is never preempted.
/// - A holder that drops because it was asked waits until another thread has taken the lock,
///   so it cannot take it straight back. A voluntary `release` (around blocking I/O) does not
///   wait.
/// - Dropping wakes one waiter; there is no queue and no fairness.
///
/// Thread identity is the pthread, as CPython's is the thread state.
public final class GlobalInterpreterLock: InterpreterLock, @unchecked Sendable {
    public let switchInterval: Duration
    public let statistics: LockStatistics

    // Guarded by `mutex`.
    private var locked = false
    private var switchNumber: UInt64 = 0
    /// When the holder took the lock: written by the taker under `mutex`, read by waiters under
    /// it and by the holder itself.
    private var takenAt: UInt64 = 0

    /// Written under `switchMutex` when taking, read under it by a forced drop; atomic because a
    /// releasing thread also stamps itself here first, as CPython's drop_gil does.
    private let lastHolder = Atomic<UInt>(0)
    /// The drop request. Only the holder reads it, at check points: one relaxed load.
    private let dropRequested = Atomic<Bool>(false)

    private let intervalNanoseconds: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let lockReleased = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let switchMutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let switched = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init(switchInterval: Duration, statistics: LockStatistics) {
        precondition(switchInterval > .zero)
        self.switchInterval = switchInterval
        self.statistics = statistics
        let (seconds, attoseconds) = switchInterval.components
        intervalNanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        pthread_mutex_init(mutex, nil)
        pthread_mutex_init(switchMutex, nil)
        // Deadlines on the monotonic clock, so a wall-clock step cannot stretch an interval.
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(lockReleased, &attributes)
        pthread_condattr_destroy(&attributes)
        pthread_cond_init(switched, nil)
    }

    deinit {
        pthread_cond_destroy(lockReleased)
        pthread_cond_destroy(switched)
        pthread_mutex_destroy(mutex)
        pthread_mutex_destroy(switchMutex)
        for pointer in [UnsafeMutableRawPointer(mutex), UnsafeMutableRawPointer(lockReleased),
                        UnsafeMutableRawPointer(switchMutex), UnsafeMutableRawPointer(switched)] {
            pointer.deallocate()
        }
    }

    public func acquire() -> UInt64 {
        let me = UInt(pthread_self())
        let started = MonotonicClock.now()
        pthread_mutex_lock(mutex)
        while locked {
            let saved = switchNumber
            let timedOut = waitOneInterval()
            if timedOut && locked && switchNumber == saved {
                dropRequested.store(true, ordering: .relaxed)
                statistics.recordDropRequest(holderTenure: MonotonicClock.now() - takenAt)
            }
        }
        pthread_mutex_lock(switchMutex)
        locked = true
        let handover = lastHolder.load(ordering: .relaxed) != me
        if handover {
            lastHolder.store(me, ordering: .relaxed)
            switchNumber += 1
        }
        pthread_cond_signal(switched)
        pthread_mutex_unlock(switchMutex)
        // A request made of the previous holder is void now.
        dropRequested.store(false, ordering: .relaxed)
        let now = MonotonicClock.now()
        takenAt = now
        pthread_mutex_unlock(mutex)
        statistics.recordAcquisition(waited: now - started, handover: handover)
        return now - started
    }

    public func release() {
        drop(forced: false)
    }

    @inline(__always)
    public func checkpoint() -> UInt64 {
        guard dropRequested.load(ordering: .relaxed) else { return 0 }
        let started = MonotonicClock.now()
        drop(forced: true)
        statistics.recordDropHonoured()
        _ = acquire()
        return MonotonicClock.now() - started
    }

    private func drop(forced: Bool) {
        let me = UInt(pthread_self())
        // Accounted while still held, so the statistics never see two holders at once.
        statistics.recordRelease(held: MonotonicClock.now() - takenAt)
        lastHolder.store(me, ordering: .relaxed)
        pthread_mutex_lock(mutex)
        precondition(locked, "GlobalInterpreterLock released by a thread that does not hold it")
        locked = false
        pthread_cond_signal(lockReleased)
        pthread_mutex_unlock(mutex)
        guard forced else { return }
        pthread_mutex_lock(switchMutex)
        // CPython waits once and tolerates a spurious wake-up; waiting until someone else has
        // really taken the lock makes "cannot take it straight back" hold without exception.
        if lastHolder.load(ordering: .relaxed) == me {
            dropRequested.store(false, ordering: .relaxed)
            repeat {
                pthread_cond_wait(switched, switchMutex)
            } while lastHolder.load(ordering: .relaxed) == me
        }
        pthread_mutex_unlock(switchMutex)
    }

    /// Waits on `lockReleased` (with `mutex` held) for at most one interval; true if it timed
    /// out rather than being signalled.
    private func waitOneInterval() -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let nanoseconds = deadline.tv_nsec + intervalNanoseconds
        deadline.tv_sec += nanoseconds / 1_000_000_000
        deadline.tv_nsec = nanoseconds % 1_000_000_000
        return pthread_cond_timedwait(lockReleased, mutex, &deadline) == ETIMEDOUT
    }
}
