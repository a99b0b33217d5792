import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// CPython's GIL, the "new GIL" of Python/ceval_gil.c (3.2 and later), for handler threads.
///
/// - A thread that wants the lock waits on a condition variable for at most one switch
///   interval. If that wait timed out, the lock is still held and it has not changed hands
///   meanwhile (the switch number did not move), it asks the holder to drop the lock. Any other
///   outcome starts a whole new interval. So a thread that keeps computing is asked only after
///   a full interval (one that lets go and takes the lock back itself keeps the switch number,
///   as in CPython, and may be asked sooner).
/// - The holder looks for that request only at check points (`checkpoint`, once per unit of
///   `/cpu` work): code between them is never preempted.
/// - A holder that lets go while a drop request is pending, at a check point or around I/O,
///   waits until another thread has taken the lock, so it cannot take it straight back and
///   void the request (CPython's FORCE_SWITCHING). A release nobody asked for does not wait.
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

    /// `switchInterval` is clamped to 1 µs – 1 hour (CPython's floor is 1 µs). Below about 50 µs
    /// Linux's timer slack, not the interval, decides how long a timed wait really lasts.
    public init(switchInterval: Duration, statistics: LockStatistics) {
        let interval = min(max(switchInterval, .microseconds(1)), .seconds(3_600))
        self.switchInterval = interval
        self.statistics = statistics
        let (seconds, attoseconds) = interval.components
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
            // The request is one flag: a second waiter repeating it is not a new request.
            if timedOut && locked && switchNumber == saved && !dropRequested.exchange(true, ordering: .relaxed) {
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
        drop()
    }

    @inline(__always)
    public func checkpoint() -> UInt64 {
        guard dropRequested.load(ordering: .relaxed) else { return 0 }
        let started = MonotonicClock.now()
        drop()
        _ = acquire()
        return MonotonicClock.now() - started
    }

    private func drop() {
        let me = UInt(pthread_self())
        precondition(lastHolder.load(ordering: .relaxed) == me,
                     "GlobalInterpreterLock released by a thread that does not hold it")
        // Accounted while still held, so the statistics never see two holders at once.
        statistics.recordRelease(held: MonotonicClock.now() - takenAt)
        pthread_mutex_lock(mutex)
        precondition(locked, "GlobalInterpreterLock released while not held")
        // Waiters set the request and takers clear it, both under `mutex`: read here, it is
        // exactly the request made of this holder. Its waiter is still in `acquire` and will
        // take the lock, so the wait below ends.
        let requested = dropRequested.load(ordering: .relaxed)
        locked = false
        pthread_cond_signal(lockReleased)
        pthread_mutex_unlock(mutex)
        guard requested else { return }
        statistics.recordDropHonoured()
        pthread_mutex_lock(switchMutex)
        // CPython waits once and tolerates a spurious wake-up; waiting until someone else has
        // really taken the lock makes "cannot take it straight back" hold without exception.
        if lastHolder.load(ordering: .relaxed) == me {
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
