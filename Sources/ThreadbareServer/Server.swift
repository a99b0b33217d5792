/// Threadbare assembled from a configuration: the HTTP core, the concurrency model the mode
/// asks for, and the application.
public final class Server: Sendable {
    public let configuration: ServerConfiguration
    public let mode: Mode
    private let http: HTTPServer

    /// A server on `sockets` (`ListeningSockets.opened(for:inherited:)`, or a prefork worker's,
    /// inherited from its master).
    /// `fixedHeaders` go on every answer; `tick` runs once a second on the first loop thread.
    /// `seat` is a prefork worker's place on its master's scoreboard: once a second the first
    /// loop beats there and publishes the worker's figures. `inheritedCache` is the cache a
    /// prefork master made before forking (`makeCacheBeforeFork`), which also put the preloaded
    /// entries in when `preloadedBeforeFork`.
    public init(configuration: ServerConfiguration, sockets: ListeningSockets,
                fixedHeaders: [(name: String, value: String)] = [], seat: ScoreboardSeat? = nil,
                inheritedCache: (any CacheBackend)? = nil, preloadedBeforeFork: Bool = false) throws {
        self.configuration = configuration
        mode = try configuration.makeMode()

        // The shm and memcached caches are one for every domain; local caches are one per
        // domain, as interpreters share no objects.
        let preloading = !preloadedBeforeFork
        let shared = try inheritedCache ?? (configuration.cacheBackend != "local" ? configuration.makeCache(preloading: preloading) : nil)
        let counters = HTTPCounters()
        let metrics = MetricsExport()
        let domains = try InterpreterDomain.make(
            mode: mode, switchInterval: configuration.switchInterval, queueLimit: configuration.queueLimit,
            lockedDispatch: mode.executor == .threads && configuration.dispatch == .locked,
            cache: { _ in try shared ?? configuration.makeCache(preloading: preloading) }, metrics: metrics)
        let status = ServerStatus(
            mode: mode, loops: configuration.loops, switchInterval: configuration.switchInterval, metrics: metrics,
            accounting: RequestAccounting(metrics: metrics), counters: counters, domains: domains, seat: seat, routes: Endpoints.all)
        let server = ServerContext(limits: configuration.endpointLimits, status: status, interpreter: configuration.interpreterCost)
        let rules = ExecutionRules(domains: domains, server: server, queueLimit: configuration.queueLimit,
                                   requestTimeoutSeconds: configuration.requestTimeout)
        let executor: any HandlerExecutor = switch mode.executor {
        case .threads: ThreadPoolExecutor(rules: rules)
        case .loop: LoopExecutor(rules: rules, loops: configuration.loops)
        }
        let service = ThreadbareService(router: Router(routes: Endpoints.all), executor: executor, server: server,
                                        authToken: configuration.authToken)
        var tick: (@Sendable () -> Void)?
        if let seat {
            tick = { seat.beat(publishing: status) }
        }
        http = try HTTPServer(sockets: sockets, limits: configuration.limits, service: service, counters: counters,
                              fixedHeaders: fixedHeaders, tick: tick)
    }

    /// The address actually listened on (the real port when the configuration said 0).
    public var url: String {
        let host = http.host.contains(":") ? "[\(http.host)]" : http.host
        return "http://\(host):\(http.port)"
    }

    public func start() throws {
        try http.start()
    }

    /// Stops accepting, lets in-flight requests finish for up to `graceful_timeout`, and stops.
    /// Returns how many requests were cut off.
    @discardableResult
    public func shutdown() -> Int {
        shutdown(gracefulTimeout: configuration.gracefulTimeout)
    }

    /// The same with another limit: 0 stops at once.
    @discardableResult
    public func shutdown(gracefulTimeout: Double) -> Int {
        http.shutdown(gracefulTimeout: gracefulTimeout)
    }
}
