import CoreMetrics
import Prometheus
import Synchronization

/// Counts every answered request by endpoint and status, and times it.
///
/// Each endpoint has its own `EndpointAccounting`, which the service looks up once, at start,
/// rather than hashing the endpoint's name for every request. Each (endpoint, status) pair then
/// gets one recorder, made on first use: a swift-metrics counter and timer backed by this
/// server's own Prometheus registry, plus a plain atomic that `/stats` reads.
public final class RequestAccounting: Sendable {
    private let factory: PrometheusMetricsFactory
    private let endpoints = Locked<[EndpointAccounting]>([])

    public init(metrics: MetricsExport) {
        factory = metrics.factory
    }

    /// The accounting of the endpoint labelled `name`, made on first request for it.
    public func endpoint(_ name: String) -> EndpointAccounting {
        endpoints.withLock { all in
            if let existing = all.first(where: { $0.name == name }) { return existing }
            let made = EndpointAccounting(name: name, factory: factory)
            all.append(made)
            return made
        }
    }

    /// Requests so far: endpoint → status → count.
    public func countsByEndpoint() -> [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        for endpoint in endpoints.withLock({ $0 }) {
            let byStatus = endpoint.countsByStatus()
            if !byStatus.isEmpty {
                counts[endpoint.name] = Dictionary(uniqueKeysWithValues: byStatus.map { (String($0.status), $0.count) })
            }
        }
        return counts
    }

    public var total: Int {
        endpoints.withLock { $0 }.reduce(0) { sum, endpoint in
            endpoint.countsByStatus().reduce(sum) { $0 + $1.count }
        }
    }
}

/// One endpoint's requests by status.
public final class EndpointAccounting: Sendable {
    private final class Recorder: Sendable {
        let status: Int
        let counter: CoreMetrics.Counter
        let timer: CoreMetrics.Timer
        let count = Atomic<Int>(0)

        init(endpoint: String, status: Int, factory: PrometheusMetricsFactory) {
            self.status = status
            let dimensions = [("endpoint", endpoint), ("status", String(status))]
            counter = CoreMetrics.Counter(label: "threadbare_requests_total", dimensions: dimensions, factory: factory)
            timer = CoreMetrics.Timer(label: "threadbare_request_duration_seconds", dimensions: dimensions, factory: factory)
        }
    }

    /// The label in /stats and /metrics.
    public let name: String
    private let factory: PrometheusMetricsFactory
    /// An endpoint answers with a handful of statuses: a short list beats a hash table.
    private let recorders = Locked<[Recorder]>([])

    fileprivate init(name: String, factory: PrometheusMetricsFactory) {
        self.name = name
        self.factory = factory
    }

    /// Records one answer. `nanoseconds` runs from the loop reading the request to the answer
    /// being handed back to it.
    public func record(status: Int, nanoseconds: UInt64) {
        let recorder = recorders.withLock { list in
            if let existing = list.first(where: { $0.status == status }) { return existing }
            let made = Recorder(endpoint: name, status: status, factory: factory)
            list.append(made)
            return made
        }
        recorder.count.add(1, ordering: .relaxed)
        recorder.counter.increment()
        recorder.timer.recordNanoseconds(Int64(clamping: nanoseconds))
    }

    func countsByStatus() -> [(status: Int, count: Int)] {
        recorders.withLock { $0 }.map { ($0.status, $0.count.load(ordering: .relaxed)) }
    }
}
