/// Where a route's handler runs.
public enum Placement: Sendable {
    /// On the loop thread that read the request: only for answers that never block and touch no
    /// application state (the server's own health, stats and metrics).
    case loop
    /// On a handler thread, holding the process's interpreter lock.
    case handler
}

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
    public let placement: Placement
    public let summary: String
    /// The methods that need the bearer token when `auth_token` is set.
    public let guarded: Set<HTTPMethod>
    public let handle: @Sendable (HTTPRequest, HandlerContext) throws(RequestError) -> HTTPResponse

    public init(
        name: String, pattern: Pattern, methods: [HTTPMethod], placement: Placement, summary: String,
        guarded: Set<HTTPMethod> = [],
        handle: @escaping @Sendable (HTTPRequest, HandlerContext) throws(RequestError) -> HTTPResponse
    ) {
        self.name = name
        self.pattern = pattern
        self.guarded = guarded
        self.methods = methods
        self.placement = placement
        self.summary = summary
        self.handle = handle
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
