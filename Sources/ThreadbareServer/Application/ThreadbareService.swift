/// Threadbare's application as an `HTTPService`: routes each request, answers the server's own
/// routes on the loop, hands application code to the mode's executor, and counts every answer.
final class ThreadbareService: HTTPService {
    private let router: Router
    private let executor: any HandlerExecutor
    private let server: ServerContext
    /// The accounting of each route, in `router.routes` order.
    private let routeAccounting: [RouteAccounting]
    /// 404s and 405s.
    private let unmatchedAccounting: RouteAccounting
    private let token: BearerToken?

    var readsAuthorization: Bool { token != nil }

    init(router: Router, executor: any HandlerExecutor, server: ServerContext, authToken: String = "") {
        token = BearerToken(authToken)
        self.router = router
        self.executor = executor
        self.server = server
        let status = server.status
        routeAccounting = router.routes.map { RouteAccounting(status.accounting.endpoint($0.name), status) }
        unmatchedAccounting = RouteAccounting(status.accounting.endpoint("unmatched"), status)
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
        case .found(let route, let index):
            switch route.handler {
            case .server(let serve):
                let started = MonotonicClock.now()
                let response: HTTPResponse
                do { response = try serve(request, server) } catch { response = .error(error) }
                finish(routeAccounting[index], request, response, ServerTiming(app: MonotonicClock.elapsed(since: started)), reply)
            case .application(let handle):
                executor.execute(HandlerJob(request: request, handle: handle, accounting: routeAccounting[index]), reply: reply)
            }
        }
    }

    /// gunicorn closes the connection after refusing a head: what follows on it cannot be trusted
    /// to start a request. A connection over the limit is closed to make room.
    func refuse(receivedAt: UInt64, status: Int, reason: String, reply: ReplyHandle) {
        let response = HTTPResponse.error(RequestError(status, reason, headers: [("Connection", "close")]))
        unmatchedAccounting.record(response, nanoseconds: MonotonicClock.elapsed(since: receivedAt))
        reply.send(response)
    }

    func loopTurnEnded(_ loop: LoopHandle) {
        executor.loopTurnEnded(loop)
    }

    private func finish(_ accounting: RouteAccounting, _ request: HTTPRequest, _ response: HTTPResponse, _ timing: ServerTiming, _ reply: ReplyHandle) {
        accounting.record(response, nanoseconds: MonotonicClock.elapsed(since: request.receivedAt))
        reply.send(response, timing: timing)
    }
}

/// One route's answers: by status in /stats and /metrics, and on a prefork worker's
/// scoreboard seat.
final class RouteAccounting: AnswerAccounting {
    private let endpoint: EndpointAccounting
    private let seat: ScoreboardSeat?

    init(_ endpoint: EndpointAccounting, _ status: ServerStatus) {
        self.endpoint = endpoint
        seat = status.seat
    }

    func record(_ response: HTTPResponse, nanoseconds: UInt64) {
        endpoint.record(status: response.status, nanoseconds: nanoseconds)
        seat?.countRequest()
    }
}
