import DequeModule
#if canImport(Glibc)
import Glibc
#endif

/// A fixed set of handler threads taking work from one bounded queue.
///
/// Handler threads are separate from loop threads so a handler may block (the I/O endpoint)
/// without stalling a loop. The queue is bounded so overload becomes a prompt 503, not memory
/// growth and ever-longer waits.
///
/// Wake-ups follow one rule: at most one sleeping thread is being woken at any moment, and a
/// thread that wakes and finds more work queued wakes the next. A burst of N jobs therefore
/// costs one futex wake per thread actually needed, not N: on a loaded core the first thread
/// often drains the burst before a second could even be scheduled, while on idle cores the
/// chain still brings every thread in within a few microseconds.
public final class HandlerPool: @unchecked Sendable {
    public typealias Job = @Sendable () -> Void

    // Guarded by `mutex`.
    private var jobs: Deque<Job>
    private var sleeping = 0
    private var waking = false

    private let limit: Int
    public let threadCount: Int
    private let mutex: UnsafeMutablePointer<pthread_mutex_t> = .allocate(capacity: 1)
    private let workAvailable: UnsafeMutablePointer<pthread_cond_t> = .allocate(capacity: 1)
    private var threads: [OSThread] = []
    private let name: String

    /// Threads are named `name-0`, `name-1`, … (as `top -H` and debuggers show them).
    /// `startingOnFirstJob`: none exists until work arrives, as asyncio makes its default
    /// executor on the first `run_in_executor`.
    public init(threads count: Int, queueLimit: Int, name: String = "tb-handler", startingOnFirstJob: Bool = false) throws {
        precondition(count >= 1 && queueLimit >= 1)
        limit = queueLimit
        threadCount = count
        self.name = name
        jobs = Deque(minimumCapacity: min(queueLimit, 4096))
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(workAvailable, nil)
        if !startingOnFirstJob { try startThreads() }
    }

    /// Runs only for a pool whose threads never started (each thread holds its pool): one whose
    /// first job never came.
    deinit {
        pthread_cond_destroy(workAvailable)
        pthread_mutex_destroy(mutex)
        workAvailable.deallocate()
        mutex.deallocate()
    }

    /// Called once, before any job is queued, or with `mutex` held.
    private func startThreads() throws {
        threads = try (0..<threadCount).map { index in
            try OSThread(name: "\(name)-\(index)") { [self] in self.run() }
        }
    }

    /// Queues `job`; false when the queue is full (or no thread could be started for it).
    public func submit(_ job: @escaping Job) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        guard jobs.count < limit else { return false }
        if threads.isEmpty {
            guard (try? startThreads()) != nil else { return false }
        }
        jobs.append(job)
        wakeOneIfNeeded()
        return true
    }

    /// Jobs waiting for a handler thread.
    public var depth: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return jobs.count
    }

    /// Called with `mutex` held.
    private func wakeOneIfNeeded() {
        guard !jobs.isEmpty, sleeping > 0, !waking else { return }
        waking = true
        pthread_cond_signal(workAvailable)
    }

    private func run() {
        pthread_mutex_lock(mutex)
        while true {
            while jobs.isEmpty {
                sleeping += 1
                pthread_cond_wait(workAvailable, mutex)
                sleeping -= 1
                // Whoever wakes (signalled or spuriously) ends the current wake-up; if more work
                // is queued it passes the baton on below.
                waking = false
            }
            let job = jobs.removeFirst()
            wakeOneIfNeeded()
            pthread_mutex_unlock(mutex)
            job()
            pthread_mutex_lock(mutex)
        }
    }
}
