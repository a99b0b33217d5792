import CLibevent

/// What other objects may do with an event loop: the few calls any thread may make, and the
/// ones an executor makes on the loop's own thread (which check it in debug builds). The
/// loop itself, its base and its evhttp stay inside `EventLoop`.
public struct LoopHandle: Sendable {
    let loop: EventLoop

    /// The loop's position among its server's loops.
    public var index: Int { loop.index }

    /// True on the loop's own thread.
    public var isCurrent: Bool { loop.isCurrentThread }

    /// From any thread: runs `job` on the loop's thread soon, after the replies already posted
    /// (asyncio's `call_soon_threadsafe`).
    public func callSoonThreadsafe(_ job: @escaping @Sendable () -> Void) {
        loop.post(.job(job))
    }

    /// On the loop's thread: runs `job` there once `milliseconds` have passed, holding no thread
    /// meanwhile (asyncio's `call_later`).
    public func callLater(milliseconds: Int, _ job: @escaping @Sendable () -> Void) {
        loop.assertOnLoop()
        loop.callLater(milliseconds: milliseconds, job)
    }

    /// On the loop's thread: how long, at `now`, the loop has been running callbacks in its
    /// current turn, since it last came back from waiting on its sockets. A request the loop
    /// started on now waited that long for the loop.
    public func busyThisTurn(now: UInt64) -> UInt64 {
        loop.assertOnLoop()
        return loop.busyThisTurn(now: now)
    }
}

/// One `callLater` job and its libevent timer; the loop keeps it until it fires, or frees it
/// with the loop.
final class LoopTimer {
    /// The loop outlives its timers: it frees those still pending when it goes.
    unowned(unsafe) let loop: EventLoop
    let job: @Sendable () -> Void
    var event: OpaquePointer?

    init(loop: EventLoop, job: @escaping @Sendable () -> Void) {
        self.loop = loop
        self.job = job
    }
}

/// What other threads leave in a loop's outbox.
enum LoopMail: Sendable {
    case reply(PendingReply)
    case job(@Sendable () -> Void)
}

extension EventLoop {
    func callLater(milliseconds: Int, _ job: @escaping @Sendable () -> Void) {
        let timer = LoopTimer(loop: self, job: job)
        timer.event = event_new(base, -1, 0, { _, _, arg in
            let timer = Unmanaged<LoopTimer>.fromOpaque(arg!).takeUnretainedValue()
            timer.loop.fire(timer)
        }, Unmanaged.passUnretained(timer).toOpaque())
        // Out of memory: the job runs now rather than never.
        guard timer.event != nil else { return job() }
        timers[ObjectIdentifier(timer)] = timer
        var length = timeval(seconds: Double(milliseconds) / 1_000)
        event_add(timer.event, &length)
    }

    private func fire(_ timer: LoopTimer) {
        timers[ObjectIdentifier(timer)] = nil
        event_free(timer.event)
        timer.event = nil
        markTurn()
        timer.job()
    }

    /// Frees the timers still pending; on the loop's thread or once it is done.
    func freeTimers() {
        for timer in timers.values {
            if let event = timer.event { event_free(event) }
        }
        timers.removeAll()
    }
}
