import CLibevent

/// The application as the HTTP core sees it: one call per request, on the loop thread that read
/// it. The service must not block that thread; it answers through `reply` now or later, from
/// any thread.
public protocol HTTPService: Sendable {
    /// True when requests need their Authorization header; otherwise the loop does not look.
    var readsAuthorization: Bool { get }
    func serve(_ request: HTTPRequest, reply: ReplyHandle)
    /// A request the loop will not serve (its head breaks a limit): the service answers it with
    /// `status` and `reason` and the connection closes. `request` carries no headers or body.
    func refuse(_ request: HTTPRequest, status: Int, reason: String, reply: ReplyHandle)
}

/// The one way back to a client. Sending is safe from any thread: on the loop thread the reply
/// goes out at once, from elsewhere it is posted to the loop's outbox.
public struct ReplyHandle: Sendable {
    let loop: EventLoop
    let request: LoopConfinedRequest
    let headOnly: Bool

    public func send(_ response: HTTPResponse, timing: ServerTiming = ServerTiming()) {
        let reply = PendingReply(request: request, response: response, timing: timing, headOnly: headOnly)
        if loop.isCurrentThread {
            loop.sendNow(reply)
        } else {
            loop.post(reply)
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
}
