/// Threadbare's application as an `HTTPService`: routes each request, runs it where its route
/// says (on the loop, or on a handler thread holding the interpreter lock), accounts for it, and
/// replies.
final class ThreadbareService: HTTPService {
    private let router: Router
    private let pool: HandlerPool
    private let context: HandlerContext
    private let queueLimit: Int
    /// The accounting of each route, in `router.routes` order.
    private let routeAccounting: [EndpointAccounting]
    /// 404s and 405s.
    private let unmatchedAccounting: EndpointAccounting

    init(router: Router, pool: HandlerPool, queueLimit: Int, context: HandlerContext) {
        self.router = router
        self.pool = pool
        self.queueLimit = queueLimit
        self.context = context
        routeAccounting = router.routes.map { context.status.accounting.endpoint($0.name) }
        unmatchedAccounting = context.status.accounting.endpoint("unmatched")
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
        case .found(let route, let index) where route.placement == .loop:
            let started = MonotonicClock.now()
            let response = respond(route, request)
            finish(routeAccounting[index], request, response, ServerTiming(app: MonotonicClock.elapsed(since: started)), reply)
        case .found(let route, let index):
            let accounting = routeAccounting[index]
            let handedOver = MonotonicClock.now()
            let accepted = pool.submit { [self] in
                let started = MonotonicClock.now()
                context.lock.acquire()
                let response = respond(route, request)
                context.lock.release()
                let finished = MonotonicClock.now()
                finish(accounting, request, response, ServerTiming(queue: started - handedOver, app: finished - started), reply)
            }
            if !accepted {
                let error = RequestError(503, "all handler threads are busy and the queue is full (queue_limit \(queueLimit)); retry later",
                                         headers: [("Retry-After", "1")])
                finish(accounting, request, .error(error), ServerTiming(), reply)
            }
        }
    }

    private func respond(_ route: Route, _ request: HTTPRequest) -> HTTPResponse {
        do {
            return try route.handle(request, context)
        } catch {
            return .error(error)
        }
    }

    private func finish(_ accounting: EndpointAccounting, _ request: HTTPRequest, _ response: HTTPResponse, _ timing: ServerTiming, _ reply: ReplyHandle) {
        accounting.record(status: response.status, nanoseconds: MonotonicClock.elapsed(since: request.receivedAt))
        reply.send(response, timing: timing)
    }
}
