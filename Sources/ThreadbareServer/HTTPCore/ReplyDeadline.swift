import CLibevent
import Synchronization

/// The time a handler has to answer, and the race at its end. The loop arms a timer when the
/// request is handed to a handler thread; whichever claims the request first answers it: the
/// handler with its response, or the timer with `lateResponse` (a 504). The loser's answer is
/// dropped, so an evhttp request is answered exactly once. A handler that lost has run past its
/// deadline; it learns so from `hasExpired`, as a Python thread learns of an asynchronous
/// exception at its next check point.
public final class ReplyDeadline: @unchecked Sendable {
    private static let pending: UInt8 = 0, answered: UInt8 = 1, expired: UInt8 = 2
    private let state = Atomic<UInt8>(ReplyDeadline.pending)
    /// Made on the loop thread when the timer wins.
    let lateResponse: @Sendable () -> HTTPResponse
    // Loop-confined: the armed timer, and what it answers.
    var timer: OpaquePointer?
    unowned(unsafe) var loop: EventLoop?
    let request: LoopConfinedRequest
    let headOnly: Bool

    init(request: LoopConfinedRequest, headOnly: Bool, lateResponse: @escaping @Sendable () -> HTTPResponse) {
        self.request = request
        self.headOnly = headOnly
        self.lateResponse = lateResponse
    }

    /// The deadline passed and the client has had its 504.
    public var hasExpired: Bool { state.load(ordering: .relaxed) == Self.expired }

    /// The handler's answer is ready: true if it is still wanted (also when claimed before).
    public func claimForAnswer() -> Bool {
        let (exchanged, current) = state.compareExchange(expected: Self.pending, desired: Self.answered, ordering: .acquiringAndReleasing)
        return exchanged || current == Self.answered
    }

    func claimForExpiry() -> Bool {
        state.compareExchange(expected: Self.pending, desired: Self.expired, ordering: .acquiringAndReleasing).exchanged
    }
}

/// Arming and settling deadlines, on the loop's thread.
extension EventLoop {
    func armDeadline(for request: LoopConfinedRequest, headOnly: Bool,
                     lateResponse: @escaping @Sendable () -> HTTPResponse) -> ReplyDeadline? {
        guard let requestTimeout else { return nil }
        let deadline = ReplyDeadline(request: request, headOnly: headOnly, lateResponse: lateResponse)
        // The timer holds the deadline until it fires or is disarmed.
        let retained = Unmanaged.passRetained(deadline)
        guard let timer = event_new(base, -1, 0, { _, _, arg in
            let deadline = Unmanaged<ReplyDeadline>.fromOpaque(arg!).takeUnretainedValue()
            deadline.loop?.deadlinePassed(deadline)
        }, retained.toOpaque()) else {
            retained.release()
            return nil
        }
        deadline.timer = timer
        deadline.loop = self
        event_add(timer, requestTimeout)
        return deadline
    }

    fileprivate func deadlinePassed(_ deadline: ReplyDeadline) {
        if deadline.claimForExpiry() {
            sendNow(PendingReply(request: deadline.request, response: deadline.lateResponse(), timing: ServerTiming(),
                                 headOnly: deadline.headOnly, deadline: deadline))
        } else {
            disarm(deadline)
        }
    }

    /// Frees the timer and lets go of the deadline; on the loop thread, once per deadline.
    func disarm(_ deadline: ReplyDeadline) {
        guard let timer = deadline.timer else { return }
        deadline.timer = nil
        event_free(timer)
        Unmanaged.passUnretained(deadline).release()
    }
}
