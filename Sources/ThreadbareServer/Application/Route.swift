/// A request the handler refuses; it becomes `{"error": message, "status": status}`.
public struct RequestError: Error, Sendable {
    public let status: Int
    public let message: String
    public var headers: [(name: String, value: String)] = []

    public init(_ status: Int, _ message: String, headers: [(name: String, value: String)] = []) {
        self.status = status
        self.message = message
        self.headers = headers
    }
}

/// A class, so the request path passes one reference around instead of copying its fields.
public final class Route: Sendable {
    public enum Pattern: Sendable {
        case exact(String)
        /// The path continues past the prefix; the rest is the route's parameter.
        case prefix(String)
    }

    /// The endpoint's label in /stats and /metrics.
    public let name: String
    public let pattern: Pattern
    public let methods: [HTTPMethod]
    public let summary: String
    /// The methods that need the bearer token when `auth_token` is set.
    public let guarded: Set<HTTPMethod>
    public let handler: Handler

    /// What answers a route, and so where it runs.
    public enum Handler: Sendable {
        /// The server's own answers (health, stats, metrics): on the loop thread that read the
        /// request, outside every lock domain. They never block and touch no application state,
        /// and their context has no lock or cache to touch.
        case server(@Sendable (HTTPRequest, ServerContext) throws(RequestError) -> HTTPResponse)
        /// Application code, run by the mode's executor inside a lock domain.
        case application(@Sendable (HTTPRequest, HandlerContext) throws(RequestError) -> HandlerResult)
    }

    /// A route of the server's own.
    public static func server(name: String, pattern: Pattern, methods: [HTTPMethod], summary: String, guarded: Set<HTTPMethod> = [],
                              _ serve: @escaping @Sendable (HTTPRequest, ServerContext) throws(RequestError) -> HTTPResponse) -> Route {
        Route(name: name, pattern: pattern, methods: methods, summary: summary, guarded: guarded, handler: .server(serve))
    }

    /// Application code that may wait before it answers.
    public static func application(name: String, pattern: Pattern, methods: [HTTPMethod], summary: String, guarded: Set<HTTPMethod> = [],
                                   _ handle: @escaping @Sendable (HTTPRequest, HandlerContext) throws(RequestError) -> HandlerResult) -> Route {
        Route(name: name, pattern: pattern, methods: methods, summary: summary, guarded: guarded, handler: .application(handle))
    }

    private init(name: String, pattern: Pattern, methods: [HTTPMethod], summary: String, guarded: Set<HTTPMethod>, handler: Handler) {
        self.name = name
        self.pattern = pattern
        self.guarded = guarded
        self.methods = methods
        self.summary = summary
        self.handler = handler
    }

    /// How `GET /` lists the route.
    var displayPath: String {
        switch pattern {
        case .exact(let path): path
        case .prefix(let prefix): prefix + "{key}"
        }
    }

    func matches(_ path: String) -> Bool {
        switch pattern {
        case .exact(let exact): path == exact
        case .prefix(let prefix): path.hasPrefix(prefix)
        }
    }
}

/// Finds the route for a request, or says why there is none (404, or 405 with the methods the
/// path does accept).
public struct Router: Sendable {
    public enum Match {
        /// The route, and where it stands in `routes`.
        case found(Route, index: Int)
        case methodNotAllowed(allowed: [HTTPMethod])
        case notFound
    }

    public let routes: [Route]

    public func match(method: HTTPMethod, path: String) -> Match {
        var allowed: [HTTPMethod] = []
        for (index, route) in routes.enumerated() where route.matches(path) {
            if route.methods.contains(method) { return .found(route, index: index) }
            allowed += route.methods
        }
        return allowed.isEmpty ? .notFound : .methodNotAllowed(allowed: allowed)
    }

    /// The Allow header for a 405: GET routes answer HEAD too.
    static func allowHeader(_ methods: [HTTPMethod]) -> String {
        var names = methods.map(\.rawValue)
        if methods.contains(.get) { names.append(HTTPMethod.head.rawValue) }
        return names.joined(separator: ", ")
    }
}
