import DequeModule
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A fixed set of handler threads taking work from one bounded queue.
///
/// Handler threads are separate from loop threads so a handler may block (the I/O endpoint)
/// without stalling a loop. The queue is bounded so overload becomes a prompt 503, not memory
/// growth and ever-longer waits.
public final class HandlerPool: @unchecked Sendable {
    public typealias Job = @Sendable () -> Void

    private let queue: Mutex<Deque<Job>>
    private let limit: Int
    /// Counts queued jobs; handler threads sleep on it.
    private let available: UnsafeMutablePointer<sem_t>
    private var threads: [OSThread] = []

    public init(threads count: Int, queueLimit: Int) {
        precondition(count >= 1 && queueLimit >= 1)
        limit = queueLimit
        queue = Mutex(Deque(minimumCapacity: min(queueLimit, 4096)))
        available = .allocate(capacity: 1)
        sem_init(available, 0, 0)
        threads = (0..<count).map { index in
            OSThread(name: "tb-handler-\(index)") { [self] in self.run() }
        }
    }

    /// Queues `job`; false when the queue is full.
    public func submit(_ job: @escaping Job) -> Bool {
        let accepted = queue.withLock { jobs in
            guard jobs.count < limit else { return false }
            jobs.append(job)
            return true
        }
        if accepted { sem_post(available) }
        return accepted
    }

    /// Jobs waiting for a handler thread.
    public var depth: Int { queue.withLock { $0.count } }

    private func run() {
        while true {
            while sem_wait(available) != 0 {}
            let job = queue.withLock { $0.popFirst() }
            job?()
        }
    }
}
