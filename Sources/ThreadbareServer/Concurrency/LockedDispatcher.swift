import DequeModule
#if canImport(Glibc)
import Glibc
#endif

/// How requests reach handler threads (`dispatch`).
public enum DispatchModel: String, Sendable, CaseIterable {
    /// Through a dispatcher thread that must hold the lock to hand them over, as a threaded
    /// server written in Python does (gunicorn gthread, waitress, cheroot).
    case locked
    /// Straight from the loop thread that read them, with no lock, as a server written in C
    /// does (uWSGI's and mod_wsgi's threads).
    case direct
}

/// The thread of a threaded Python server that hands requests to its handler threads, and
/// must hold the GIL to do it: gunicorn gthread's main thread, which wakes from `select`,
/// takes the GIL, submits each readable connection to the thread pool, and later takes it
/// again to put a finished connection back in its poller (`finish_request`). waitress and
/// cheroot are built the same way.
///
/// Every wake-up takes the lock once for everything queued meanwhile. So each request costs one
/// more contended take before its handler thread can wait for the lock itself, and every
/// finished request one more short hold in the lock's queue. That is what keeps CPU-bound
/// threads in CPython from all waiting to compute at once, and what a quick request pays for
/// its hand-over (bench/fidelity.sh; README, "Against real CPython").
final class LockedDispatcher: @unchecked Sendable {
    /// Runs with the lock held, given how long the dispatcher waited for it.
    typealias Handover = @Sendable (_ lockWait: UInt64) -> Void

    private let lock: any InterpreterLock
    // Guarded by `mutex`; nil is a finished request to tidy up.
    private var queued: Deque<Handover?> = []
    /// The dispatcher's own: the batch being handed over, swapped with `queued` so neither
    /// is reallocated per wake-up.
    private var batch: Deque<Handover?> = []
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    init(lock: any InterpreterLock, name: String) throws {
        self.lock = lock
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        // Runs for the life of the process, as the handler threads do.
        _ = try OSThread(name: name) { [self] in run() }
    }

    /// From a loop thread: `handover` runs on the dispatcher, under the lock.
    func dispatch(_ handover: @escaping Handover) {
        post(handover)
    }

    /// Requests waiting for the dispatcher to hand them over: part of the queue `/stats` shows.
    var depth: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return queued.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
    }

    /// From a handler thread, once its reply is sent.
    func requestFinished() {
        post(nil)
    }

    private func post(_ item: Handover?) {
        pthread_mutex_lock(mutex)
        queued.append(item)
        pthread_cond_signal(wake)
        pthread_mutex_unlock(mutex)
    }

    private func run() {
        pthread_mutex_lock(mutex)
        while true {
            // Waiting here is `select`: the lock is not held.
            while queued.isEmpty { pthread_cond_wait(wake, mutex) }
            swap(&batch, &queued)
            pthread_mutex_unlock(mutex)
            let waited = lock.acquire()
            for handover in batch { handover?(waited) }
            lock.release()
            batch.removeAll(keepingCapacity: true)
            pthread_mutex_lock(mutex)
        }
    }
}
