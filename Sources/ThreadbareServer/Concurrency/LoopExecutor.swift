/// Handler code on the event-loop thread that read the request, as asyncio runs coroutines
/// (uvicorn; granian's loop per thread when the lock is `none`).
///
/// - The loop thread holds its domain's lock from the first handler of a turn until the turn
///   ends and the loop goes back to waiting on its sockets, as an asyncio loop holds the GIL
///   between `select` calls. Between handlers it passes a check point, as the eval loop does.
/// - Waiting (`HandlerResult.waits`) is a loop timer: it holds no thread, so any number of
///   requests can wait at once.
/// - Computing holds the loop: every request on it waits until the computation is done, which
///   `Server-Timing: loop` shows.
/// - `offloads` is `run_in_executor`: the work goes to the domain's pool, whose threads take the
///   same lock. The loop is free meanwhile; the result comes back to the loop, which answers.
/// - A deadline can answer only between handlers: a computation on the loop runs to its end,
///   as `asyncio.wait_for` cannot interrupt a coroutine that does not yield.
final class LoopExecutor: HandlerExecutor {
    private let rules: ExecutionRules
    /// Each loop's hold on its domain's lock, by loop index; each touched only by its loop.
    private let holds: [LoopLockHold]

    /// With one domain every loop takes its lock; with several, loop N is interpreter N.
    init(rules: ExecutionRules, loops: Int) {
        self.rules = rules
        holds = (0..<loops).map { index in LoopLockHold(domain: rules.domains[index % rules.domains.count]) }
    }

    func execute(_ job: HandlerJob, reply: ReplyHandle) {
        let hold = holds[reply.loop.index]
        var timing = ServerTiming(loop: reply.loop.busyThisTurn(now: MonotonicClock.now()))
        let result = step(hold, &timing, deadline: nil) { context throws(RequestError) in try job.handle(job.request, context) }
        // The common case answers at once and keeps nothing.
        if case .response(let response) = result {
            rules.answer(job, response, reply, timing, domain: hold.domain)
            return
        }
        proceed(LoopRequestProgress(job: job, reply: reply, timing: timing), hold, result)
    }

    func loopTurnEnded(_ loop: LoopHandle) {
        holds[loop.index].letGo()
    }

    /// One stretch of handler code on the loop, under the loop's hold on the lock.
    private func step(_ hold: LoopLockHold, _ timing: inout ServerTiming, deadline: ReplyDeadline?,
                      _ body: HandlerResult.Continuation) -> HandlerResult {
        let waitedBefore = hold.session.waited
        let started = MonotonicClock.now()
        hold.take()
        let result = rules.run(body, rules.context(hold.session, hold.domain, deadline))
        timing.lock += hold.session.waited - waitedBefore
        timing.app += MonotonicClock.now() - started
        return result
    }

    private func proceed(_ progress: LoopRequestProgress, _ hold: LoopLockHold, _ result: HandlerResult) {
        switch result {
        case .response(let response):
            guard rules.stillWanted(progress.reply) else { return }
            rules.answer(progress.job, response, progress.reply, progress.timing, domain: hold.domain)
        case .waits(let milliseconds, let then):
            suspend(progress)
            let waitStarted = MonotonicClock.now()
            progress.reply.loop.callLater(milliseconds: milliseconds) { [self] in
                progress.timing.app += MonotonicClock.now() - waitStarted
                resume(progress, hold, then)
            }
        case .awaitsCache(let operation, let then):
            let cache = hold.domain.cache
            // A backend in memory answers before `start` returns; only a wait on the network
            // lets go of the loop, and only that needs the deadline.
            if cache.blocksOnNetwork { suspend(progress) }
            let waitStarted = MonotonicClock.now()
            cache.start(operation, on: progress.reply.loop) { [self] outcome in
                progress.timing.app += MonotonicClock.now() - waitStarted
                let next: HandlerResult.Continuation = { context throws(RequestError) in try then(outcome, context) }
                if cache.blocksOnNetwork {
                    resume(progress, hold, next)
                } else {
                    proceed(progress, hold, step(hold, &progress.timing, deadline: progress.reply.deadline, next))
                }
            }
        case .offloads(let work):
            suspend(progress)
            let handedOver = MonotonicClock.now()
            let accepted = hold.domain.pool.submit { [self] in
                offloaded(progress, hold, work, handedOver: handedOver)
            }
            if !accepted { rules.refuseQueueFull(progress.job, progress.reply) }
        }
    }

    /// Before the request first lets go of the loop: its deadline, from here on.
    private func suspend(_ progress: LoopRequestProgress) {
        if progress.reply.deadline == nil {
            progress.reply = rules.armDeadline(progress.reply, progress.job)
        }
    }

    /// Back on the loop after a wait, once the loop is free.
    private func resume(_ progress: LoopRequestProgress, _ hold: LoopLockHold, _ body: HandlerResult.Continuation) {
        if rules.expiredBeforeStart(progress.reply) { return }
        progress.timing.loop += progress.reply.loop.busyThisTurn(now: MonotonicClock.now())
        proceed(progress, hold, step(hold, &progress.timing, deadline: progress.reply.deadline, body))
    }

    /// On a pool thread: the work under the domain's lock, as an executor thread takes the GIL;
    /// its result goes back to the loop.
    private func offloaded(_ progress: LoopRequestProgress, _ hold: LoopLockHold, _ work: HandlerResult.Continuation,
                           handedOver: UInt64) {
        let started = MonotonicClock.now()
        if rules.expiredBeforeStart(progress.reply) { return }
        let session = LockSession(lock: hold.domain.lock)
        session.acquire()
        let result = rules.run(work, rules.context(session, hold.domain, progress.reply.deadline))
        session.release()
        let finished = MonotonicClock.now()
        progress.timing.queue += started - handedOver
        progress.timing.lock += session.waited
        progress.timing.app += finished - started
        progress.reply.loop.callSoonThreadsafe { [self] in
            let back = MonotonicClock.now()
            progress.timing.app += back - finished
            progress.timing.loop += progress.reply.loop.busyThisTurn(now: back)
            proceed(progress, hold, result)
        }
    }
}

/// A request between stretches of handler code on the loop: what it has spent so far. Made on
/// the loop; a pool thread or a timer carries it on, one at a time, and every handover goes
/// through the loop's outbox lock or its own thread.
final class LoopRequestProgress: @unchecked Sendable {
    let job: HandlerJob
    var reply: ReplyHandle
    var timing: ServerTiming

    init(job: HandlerJob, reply: ReplyHandle, timing: ServerTiming) {
        self.job = job
        self.reply = reply
        self.timing = timing
    }
}

/// One loop thread's hold on its domain's lock: taken by the first handler of a turn, kept
/// through the turn (with a check point between handlers), let go as the turn ends.
final class LoopLockHold: @unchecked Sendable {
    let domain: InterpreterDomain
    /// The loop thread's thread state, in CPython's terms.
    let session: LockSession
    private var held = false

    init(domain: InterpreterDomain) {
        self.domain = domain
        session = LockSession(lock: domain.lock)
    }

    func take() {
        if held {
            session.checkpoint()
        } else {
            session.acquire()
            held = true
        }
    }

    func letGo() {
        guard held else { return }
        held = false
        session.release()
    }
}
