/// Runs application code for the mode: on which thread, in which lock domain, holding what,
/// and with which deadline. The application routes and counts, and never learns which
/// executor runs it.
public protocol HandlerExecutor: Sendable {
    /// On the loop thread that read the request.
    func execute(_ job: HandlerJob, reply: ReplyHandle)
    /// On a loop's thread after each of its turns.
    func loopTurnEnded(_ loop: LoopHandle)
}

/// The application's side of one request.
public struct HandlerJob: Sendable {
    public let request: HTTPRequest
    public let handle: @Sendable (HTTPRequest, HandlerContext) throws(RequestError) -> HandlerResult
    public let accounting: any AnswerAccounting

    public init(request: HTTPRequest, handle: @escaping @Sendable (HTTPRequest, HandlerContext) throws(RequestError) -> HandlerResult,
                accounting: any AnswerAccounting) {
        self.request = request
        self.handle = handle
        self.accounting = accounting
    }
}

/// Where the application counts its answers.
public protocol AnswerAccounting: AnyObject, Sendable {
    /// Counts `response`, `nanoseconds` after its request was read. Called before the answer
    /// leaves, so a client that reads /stats next finds it there.
    func record(_ response: HTTPResponse, nanoseconds: UInt64)
}

/// What both executors do alike: running handler code, the deadline, the answer.
struct ExecutionRules: Sendable {
    let domains: [InterpreterDomain]
    let server: ServerContext
    let queueLimit: Int
    let timeoutResponse: HTTPResponse

    init(domains: [InterpreterDomain], server: ServerContext, queueLimit: Int, requestTimeoutSeconds: Double) {
        precondition(!domains.isEmpty)
        self.domains = domains
        self.server = server
        self.queueLimit = queueLimit
        timeoutResponse = .error(RequestError(504, "the handler did not answer within request_timeout (\(requestTimeoutSeconds) s)"))
    }

    func context(_ session: LockSession, _ domain: InterpreterDomain, _ deadline: ReplyDeadline?) -> HandlerContext {
        HandlerContext(lock: session, cache: domain.cache, server: server, deadline: deadline)
    }

    /// Handler code; what it throws is its answer.
    func run(_ body: HandlerResult.Continuation, _ context: HandlerContext) -> HandlerResult {
        do {
            return try body(context)
        } catch {
            return .response(.error(error))
        }
    }

    /// On the loop thread: the reply, now answered with a 504 if the handler has not answered
    /// within `request_timeout`.
    func armDeadline(_ reply: ReplyHandle, _ job: HandlerJob) -> ReplyHandle {
        let receivedAt = job.request.receivedAt
        return reply.withDeadline { [status = server.status, timeoutResponse, accounting = job.accounting] in
            status.requestTimeouts.add(1)
            accounting.record(timeoutResponse, nanoseconds: MonotonicClock.elapsed(since: receivedAt))
            return timeoutResponse
        }
    }

    /// False, and counted, if the deadline answered the request first.
    func stillWanted(_ reply: ReplyHandle) -> Bool {
        guard let deadline = reply.deadline, !deadline.claimForAnswer() else { return true }
        server.status.lateHandlersDone.add(1)
        return false
    }

    /// True, and counted, if the request's 504 went out before its next stretch of handler
    /// code could start: the work is not done.
    func expiredBeforeStart(_ reply: ReplyHandle) -> Bool {
        guard let deadline = reply.deadline, deadline.hasExpired else { return false }
        server.status.lateHandlersDone.add(1)
        return true
    }

    func refuseQueueFull(_ job: HandlerJob, _ reply: ReplyHandle) {
        let error = RequestError(503, "all handler threads are busy and the queue is full (queue_limit \(queueLimit)); retry later")
        answer(job, .error(error), reply, ServerTiming(), domain: nil)
    }

    /// Counts the answer and sends it. The domain is named when there are several.
    func answer(_ job: HandlerJob, _ response: HTTPResponse, _ reply: ReplyHandle, _ timing: ServerTiming, domain: InterpreterDomain?) {
        job.accounting.record(response, nanoseconds: MonotonicClock.elapsed(since: job.request.receivedAt))
        reply.send(named(response, domain), timing: timing)
    }

    func named(_ response: HTTPResponse, _ domain: InterpreterDomain?) -> HTTPResponse {
        guard let domain, domains.count > 1 else { return response }
        var named = response
        named.headers.append(("Threadbare-Interpreter", String(domain.index)))
        return named
    }
}
