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
        ok
    }

    /// Made once: the answer a load balancer asks for thousands of times a second.
    private static let ok = HTTPResponse.text("ok")

    static let index = Route(
        name: "index", pattern: .exact("/"), methods: [.get], placement: .loop,
        summary: "this description"
    ) { _, context throws(RequestError) in
        let status = context.status
        let endpoints: [JSONValue] = status.routes.flatMap { route in
            route.methods.map { ["method": .string($0.rawValue), "path": .string(route.displayPath), "summary": .string(route.summary)] }
        }
        return .json([
            "name": "threadbare", "version": .string(ServerStatus.version), "mode": .string(status.mode.name.rawValue),
            "pid": .integer(Int(getpid())), "loops": .integer(status.loops), "threads": .integer(status.mode.threadsPerProcess),
            "endpoints": .array(endpoints),
        ])
    }

    static let stats = Route(
        name: "stats", pattern: .exact("/stats"), methods: [.get], placement: .loop,
        summary: "requests by endpoint and status, in flight, queue depth, uptime, RSS"
    ) { _, context throws(RequestError) in
        let status = context.status
        let requests = status.accounting.countsByEndpoint().sorted { $0.key < $1.key }.map { endpoint, byStatus in
            (endpoint, JSONValue.object(byStatus.sorted { $0.key < $1.key }.map { ($0.key, .integer($0.value)) }))
        }
        return .json([
            "mode": .string(status.mode.name.rawValue), "pid": .integer(Int(getpid())),
            "uptime_s": .number(status.uptimeSeconds), "rss_bytes": .integer(ProcessMemory.residentBytes()),
            "in_flight": .integer(status.inFlight.current), "queue_depth": .integer(status.queueDepth()),
            "requests_total": .integer(status.accounting.total), "requests": .object(requests),
        ])
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
