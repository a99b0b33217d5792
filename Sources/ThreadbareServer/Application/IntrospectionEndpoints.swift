import Prometheus
#if canImport(Glibc)
import Glibc
#endif

/// The server describing itself. These run on the loop thread: they never block and read only
/// counters, like nginx's stub_status.
enum IntrospectionEndpoints {
    static let health = Route(
        name: "health", pattern: .exact("/health"), methods: [.get], placement: .loop,
        summary: "liveness: 200 ok"
    ) { _, _ throws(RequestError) in
        .text("ok")
    }

    static let index = Route(
        name: "index", pattern: .exact("/"), methods: [.get], placement: .loop,
        summary: "this description"
    ) { _, context throws(RequestError) in
        let status = context.status
        return .json(IndexBody(
            name: "threadbare", version: ServerStatus.version, mode: status.mode.name.rawValue,
            pid: Int(getpid()), loops: status.loops, threads: status.mode.threadsPerProcess,
            endpoints: status.routes.flatMap { route in
                route.methods.map { EndpointBody(method: $0.rawValue, path: route.displayPath, summary: route.summary) }
            }))
    }

    static let stats = Route(
        name: "stats", pattern: .exact("/stats"), methods: [.get], placement: .loop,
        summary: "requests by endpoint and status, in flight, queue depth, uptime, RSS"
    ) { _, context throws(RequestError) in
        let status = context.status
        return .json(StatsBody(
            mode: status.mode.name.rawValue, pid: Int(getpid()), uptimeS: status.uptimeSeconds,
            rssBytes: ProcessMemory.residentBytes(), inFlight: status.inFlight.current,
            queueDepth: status.queueDepth(), requestsTotal: status.accounting.total,
            requests: status.accounting.countsByEndpoint()))
    }

    static let metrics = Route(
        name: "metrics", pattern: .exact("/metrics"), methods: [.get], placement: .loop,
        summary: "Prometheus text exposition: request counts and latency histograms"
    ) { _, context throws(RequestError) in
        let status = context.status
        let registry = status.accounting.registry
        let cache = context.cache.statistics
        // Gauges are sampled at scrape time rather than kept up to date on every request.
        let gauges: [(name: String, help: String, value: Int)] = [
            ("in_flight_requests", "Requests read and not yet fully answered", status.inFlight.current),
            ("handler_queue_depth", "Requests waiting for a handler thread", status.queueDepth()),
            ("resident_memory_bytes", "Resident set size of this process", ProcessMemory.residentBytes()),
            ("cache_entries", "Entries in this process's cache", cache.entries),
            ("cache_bytes", "Key plus value bytes in this process's cache", cache.bytes),
        ]
        for gauge in gauges {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "threadbare", metricName: gauge.name, unitName: "", helpText: gauge.help))
                .set(Int64(gauge.value))
        }
        return HTTPResponse(
            status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: registry.emitToBuffer())
    }
}

struct IndexBody: Codable {
    let name, version, mode: String
    let pid, loops, threads: Int
    let endpoints: [EndpointBody]
}

struct EndpointBody: Codable {
    let method, path, summary: String
}

struct StatsBody: Codable {
    let mode: String
    let pid: Int
    let uptimeS: Double
    let rssBytes, inFlight, queueDepth, requestsTotal: Int
    let requests: [String: [String: Int]]
}
