import CLibevent

/// The application as the HTTP core sees it: one call per request, on the loop thread that read
/// it. Whatever the service runs there holds up every other connection of that loop (which an
/// event-loop mode shows on purpose), so it must never block on I/O; it answers through `reply`
/// now or later, from any thread.
public protocol HTTPService: Sendable {
    /// True when requests need their Authorization header; otherwise the loop does not look.
    var readsAuthorization: Bool { get }
    func serve(_ request: HTTPRequest, reply: ReplyHandle)
    /// A request the loop will not serve (its method is unknown, its head breaks a limit, its
    /// connection is over the limit): the service answers it with `status` and `reason`, and the
    /// connection closes.
    func refuse(receivedAt: UInt64, status: Int, reason: String, reply: ReplyHandle)
    /// On `loop`'s thread, after each turn of the loop, as it goes back to waiting for sockets:
    /// where an asyncio loop's `select` lets go of the GIL.
    func loopTurnEnded(_ loop: LoopHandle)
}

/// The one way back to a client. Sending is safe from any thread: on the loop thread the reply
/// goes out at once, from elsewhere it is posted to the loop's outbox. A handle with a deadline
/// sends only if the deadline has not answered first.
public struct ReplyHandle: Sendable {
    /// The loop that read the request, and must write its answer.
    public let loop: LoopHandle
    let request: LoopConfinedRequest
    let headOnly: Bool
    public private(set) var deadline: ReplyDeadline?

    init(loop: LoopHandle, request: LoopConfinedRequest, headOnly: Bool) {
        self.loop = loop
        self.request = request
        self.headOnly = headOnly
    }

    /// On the loop thread, as the request goes to a handler: the same handle, now answered with
    /// `lateResponse()` if the handler has not answered within the configured
    /// `request_timeout`. Without one, the handle is returned as it is.
    public func withDeadline(_ lateResponse: @escaping @Sendable () -> HTTPResponse) -> ReplyHandle {
        var armed = self
        armed.deadline = loop.loop.armDeadline(for: request, headOnly: headOnly, lateResponse: lateResponse)
        return armed
    }

    public func send(_ response: HTTPResponse, timing: ServerTiming = ServerTiming()) {
        if let deadline, !deadline.claimForAnswer() { return }
        let reply = PendingReply(request: request, response: response, timing: timing, headOnly: headOnly, deadline: deadline)
        if loop.isCurrent {
            loop.loop.sendNow(reply)
        } else {
            loop.loop.post(.reply(reply))
        }
    }
}

/// An evhttp request pointer travelling between threads. Only its loop thread ever
/// dereferences it; other threads merely carry it back to that loop.
struct LoopConfinedRequest: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<evhttp_request>
}

struct PendingReply: Sendable {
    let request: LoopConfinedRequest
    let response: HTTPResponse
    let timing: ServerTiming
    let headOnly: Bool
    /// Disarmed as the reply is sent.
    var deadline: ReplyDeadline?
}
