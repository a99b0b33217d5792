/// Threadbare's application as an `HTTPService`: routes each request, runs it where its route
/// says (on the loop, or on a handler thread of one interpreter domain, holding that domain's
/// lock), accounts for it, and replies.
final class ThreadbareService: HTTPService {
    private let router: Router
    private let domains: [InterpreterDomain]
    private let limits: EndpointLimits
    private let status: ServerStatus
    private let queueLimit: Int
    /// For routes on the loop, which run in no domain; see `HandlerContext`.
    private let loopContext: HandlerContext
    /// The accounting of each route, in `router.routes` order.
    private let routeAccounting: [EndpointAccounting]
    /// 404s and 405s.
    private let unmatchedAccounting: EndpointAccounting
    private let token: BearerToken?
    private let timeoutResponse: HTTPResponse

    var readsAuthorization: Bool { token != nil }

    init(router: Router, domains: [InterpreterDomain], queueLimit: Int, limits: EndpointLimits, status: ServerStatus,
         authToken: String = "", requestTimeoutSeconds: Double = 0) {
        timeoutResponse = .error(RequestError(504, "the handler did not answer within request_timeout (\(requestTimeoutSeconds) s)"))
        precondition(!domains.isEmpty)
        token = BearerToken(authToken)
        self.router = router
        self.domains = domains
        self.queueLimit = queueLimit
        self.limits = limits
        self.status = status
        loopContext = HandlerContext(lock: LockSession(lock: domains[0].lock), cache: domains[0].cache, limits: limits, status: status)
        routeAccounting = router.routes.map { status.accounting.endpoint($0.name) }
        unmatchedAccounting = status.accounting.endpoint("unmatched")
    }

    func serve(_ request: HTTPRequest, reply: ReplyHandle) {
        switch router.match(method: request.method, path: request.path) {
        case .notFound:
            finish(unmatchedAccounting, request, .error(RequestError(404, "no endpoint at this path; GET / lists them")), ServerTiming(), reply)
        case .methodNotAllowed(let allowed):
            let allow = Router.allowHeader(allowed)
            let error = RequestError(405, "method \(request.method.rawValue) not allowed here; allowed: \(allow)",
                                     headers: [("Allow", allow)])
            finish(unmatchedAccounting, request, .error(error), ServerTiming(), reply)
        case .found(let route, let index) where token.map { route.guarded.contains(request.method) && !$0.admits(request.authorization) } ?? false:
            finish(routeAccounting[index], request, .error(BearerToken.refusal), ServerTiming(), reply)
        case .found(let route, let index) where route.placement == .loop:
            let started = MonotonicClock.now()
            let response = respond(route, request, loopContext)
            finish(routeAccounting[index], request, response, ServerTiming(app: MonotonicClock.elapsed(since: started)), reply)
        case .found(let route, let index):
            let accounting = routeAccounting[index]
            let domain = domain(for: request)
            let handedOver = MonotonicClock.now()
            let receivedAt = request.receivedAt
            let reply = reply.withDeadline { [self] in
                status.requestTimeouts.add(1)
                count(timeoutResponse, accounting, nanoseconds: MonotonicClock.elapsed(since: receivedAt))
                return timeoutResponse
            }
            let accepted = domain.pool.submit { [self] in
                runInDomain(domain, route, request, accounting, handedOver: handedOver, reply)
            }
            if !accepted {
                let error = RequestError(503, "all handler threads are busy and the queue is full (queue_limit \(queueLimit)); retry later")
                finish(accounting, request, .error(error), ServerTiming(), reply)
            }
        }
    }

    /// gunicorn closes the connection after refusing a head: what follows on it cannot be trusted
    /// to start a request. A connection over the limit is closed to make room.
    func refuse(receivedAt: UInt64, status: Int, reason: String, reply: ReplyHandle) {
        let response = HTTPResponse.error(RequestError(status, reason, headers: [("Connection", "close")]))
        count(response, unmatchedAccounting, nanoseconds: MonotonicClock.elapsed(since: receivedAt))
        reply.send(response)
    }

    /// A connection stays in one domain for its whole life, as a connection stays with the
    /// interpreter that accepted it; connections take turns, in the order the loops see them.
    private func domain(for request: HTTPRequest) -> InterpreterDomain {
        domains.count == 1 ? domains[0] : domains[request.connection % domains.count]
    }

    /// On a handler thread: the request's code and its accounting run under its domain's lock.
    /// The reply is sent with the lock released, as a Python server's `socket.send` releases
    /// the GIL, and the thread takes the lock back afterwards, as Python code resumes after
    /// `send` returns. A request therefore takes the lock at least twice, and waits for it each
    /// time while another thread is busy computing.
    private func runInDomain(_ domain: InterpreterDomain, _ route: Route, _ request: HTTPRequest,
                             _ accounting: EndpointAccounting, handedOver: UInt64, _ reply: ReplyHandle) {
        let started = MonotonicClock.now()
        // Expired while queued: the client has its 504 and the work is not started.
        if let deadline = reply.deadline, deadline.hasExpired {
            status.lateHandlersDone.add(1)
            return
        }
        let session = LockSession(lock: domain.lock)
        session.acquire()
        var response = respond(route, request, HandlerContext(
            lock: session, cache: domain.cache, limits: limits, status: status, deadline: reply.deadline))
        let finished = MonotonicClock.now()
        if let deadline = reply.deadline, !deadline.claimForAnswer() {
            session.release()
            status.lateHandlersDone.add(1)
            return
        }
        // Counted before the reply leaves, so a client that reads /stats next finds it there.
        count(response, accounting, nanoseconds: finished - request.receivedAt)
        session.release()
        if domains.count > 1 {
            response.headers.append(("Threadbare-Interpreter", String(domain.index)))
        }
        reply.send(response, timing: ServerTiming(queue: started - handedOver, app: finished - started, lock: session.waited))
        session.acquire()
        session.release()
    }

    private func respond(_ route: Route, _ request: HTTPRequest, _ context: HandlerContext) -> HTTPResponse {
        do {
            return try route.handle(request, context)
        } catch {
            return .error(error)
        }
    }

    private func finish(_ accounting: EndpointAccounting, _ request: HTTPRequest, _ response: HTTPResponse, _ timing: ServerTiming, _ reply: ReplyHandle) {
        count(response, accounting, nanoseconds: MonotonicClock.elapsed(since: request.receivedAt))
        reply.send(response, timing: timing)
    }

    private func count(_ response: HTTPResponse, _ accounting: EndpointAccounting, nanoseconds: UInt64) {
        accounting.record(status: response.status, nanoseconds: nanoseconds)
        status.seat?.countRequest()
    }
}
