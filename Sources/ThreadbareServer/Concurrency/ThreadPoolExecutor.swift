#if canImport(Glibc)
import Glibc
#endif

/// Handler threads behind a bounded queue, as a threaded WSGI server runs its application
/// (gunicorn's gthread worker). A connection stays in one domain for its whole life, as a
/// connection stays with the interpreter that accepted it; connections take turns, in the
/// order the loops see them.
final class ThreadPoolExecutor: HandlerExecutor {
    private let rules: ExecutionRules

    init(rules: ExecutionRules) {
        self.rules = rules
    }

    func execute(_ job: HandlerJob, reply: ReplyHandle) {
        let domains = rules.domains
        let domain = domains.count == 1 ? domains[0] : domains[job.request.connection % domains.count]
        let handedOver = MonotonicClock.now()
        let loopWait = reply.loop.busyThisTurn(now: handedOver)
        let reply = rules.armDeadline(reply, job)
        guard let dispatcher = domain.dispatcher else {
            submit(job, to: domain, handedOver: handedOver, loopWait: loopWait, dispatchWait: 0, reply)
            return
        }
        dispatcher.dispatch { [self] waited in
            submit(job, to: domain, handedOver: handedOver, loopWait: loopWait, dispatchWait: waited, reply)
        }
    }

    private func submit(_ job: HandlerJob, to domain: InterpreterDomain, handedOver: UInt64, loopWait: UInt64, dispatchWait: UInt64,
                        _ reply: ReplyHandle) {
        let accepted = domain.pool.submit { [self] in
            run(job, in: domain, handedOver: handedOver, loopWait: loopWait, dispatchWait: dispatchWait, reply)
        }
        guard !accepted else { return }
        // Handed over by a dispatcher, the request may have had its 504 meanwhile: answer it once.
        if let deadline = reply.deadline, !deadline.claimForAnswer() { return }
        rules.refuseQueueFull(job, reply)
    }

    func loopTurnEnded(_ loop: LoopHandle) {}

    /// On a handler thread: the request's code and its accounting run under its domain's lock.
    /// The reply is sent with the lock released, as a Python server's `socket.send` releases
    /// the GIL, and the thread takes the lock back afterwards, as Python code resumes after
    /// `send` returns. A request therefore takes the lock at least twice, and waits for it each
    /// time while another thread is busy computing.
    ///
    /// With a dispatcher, the lock it waited for to hand the request over counts as the
    /// request's: in `lock`, and in `app` rather than `queue`, as Python code of the server.
    private func run(_ job: HandlerJob, in domain: InterpreterDomain, handedOver: UInt64, loopWait: UInt64, dispatchWait: UInt64,
                     _ reply: ReplyHandle) {
        let started = MonotonicClock.now()
        // Expired while queued: the client has its 504 and the work is not started.
        if rules.expiredBeforeStart(reply) {
            domain.dispatcher?.requestFinished()
            return
        }
        let session = LockSession(lock: domain.lock)
        session.acquire()
        let context = rules.context(session, domain, reply.deadline)
        var result = rules.run({ context throws(RequestError) in try job.handle(job.request, context) }, context)
        while true {
            switch result {
            case .response(let response):
                let finished = MonotonicClock.now()
                guard rules.stillWanted(reply) else {
                    session.release()
                    domain.dispatcher?.requestFinished()
                    return
                }
                job.accounting.record(response, nanoseconds: finished - job.request.receivedAt)
                session.release()
                // The hand-over's lock wait happened while queued: it moves from queue to lock.
                let queued = started - handedOver, handoverWait = min(queued, dispatchWait)
                reply.send(rules.named(response, domain),
                           timing: ServerTiming(queue: queued - handoverWait, app: finished - started + handoverWait,
                                                lock: session.waited + handoverWait, loop: loopWait))
                session.acquire()
                session.release()
                // gthread's finish_request: the main thread takes the GIL to put the connection
                // back in its poller.
                domain.dispatcher?.requestFinished()
                return
            case .waits(let milliseconds, let then):
                // A blocking call releases the interpreter lock, as CPython does around system calls.
                session.withReleased { sleepBlocking(milliseconds: milliseconds) }
                result = rules.run(then, context)
            case .offloads(let work):
                // Already off any loop: the work runs here, as a pool would run it.
                result = rules.run(work, context)
            case .awaitsCache(let operation, let then):
                let cache = context.cache
                let perform = { Result { () throws(CacheFailure) in try cache.perform(operation) } }
                // Waiting on memcached lets go of the lock, as CPython's socket calls do.
                let outcome = cache.blocksOnNetwork ? session.withReleased(perform) : perform()
                result = rules.run({ context throws(RequestError) in try then(outcome, context) }, context)
            }
        }
    }
}

/// nanosleep, resumed after signals until the whole time has passed.
func sleepBlocking(milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR {
        request = remaining
    }
}
