/// Threadbare assembled from a configuration: the HTTP core, the concurrency model the mode
/// asks for, and the application.
public final class Server: Sendable {
    public let configuration: ServerConfiguration
    public let mode: Mode
    private let http: HTTPServer

    public init(configuration: ServerConfiguration) throws {
        self.configuration = configuration
        mode = try configuration.makeMode()

        let sockets = try ListeningSockets.bind(
            host: configuration.host, port: configuration.port, count: configuration.loops, backlog: configuration.backlog)
        let inFlight = SharedCounter()
        let metrics = MetricsExport()
        let domains = InterpreterDomain.make(
            mode: mode, switchInterval: configuration.switchInterval, queueLimit: configuration.queueLimit,
            cacheMaxEntries: configuration.cacheMaxEntries, cacheMaxBytes: configuration.cacheMaxBytes, metrics: metrics)
        let status = ServerStatus(
            mode: mode, loops: configuration.loops, switchInterval: configuration.switchInterval, metrics: metrics,
            accounting: RequestAccounting(metrics: metrics), inFlight: inFlight, domains: domains, routes: Endpoints.all)
        let service = ThreadbareService(
            router: Router(routes: Endpoints.all), domains: domains, queueLimit: configuration.queueLimit,
            limits: configuration.endpointLimits, status: status)
        http = try HTTPServer(sockets: sockets, limits: configuration.limits, service: service, inFlight: inFlight)
    }

    /// The address actually listened on (the real port when the configuration said 0).
    public var url: String {
        let host = http.host.contains(":") ? "[\(http.host)]" : http.host
        return "http://\(host):\(http.port)"
    }

    public func start() {
        http.start()
    }

    /// Stops accepting, lets in-flight requests finish for up to `graceful_timeout`, and stops.
    /// Returns how many requests were cut off.
    @discardableResult
    public func shutdown() -> Int {
        http.shutdown(gracefulTimeout: configuration.gracefulTimeout)
    }
}
