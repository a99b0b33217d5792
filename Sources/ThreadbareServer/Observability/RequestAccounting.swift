import CoreMetrics
import Prometheus
import Synchronization

/// Counts every answered request by endpoint and status, and times it.
///
/// Each (endpoint, status) pair gets one recorder, made on first use and then only looked up:
/// a swift-metrics counter and timer backed by this server's own Prometheus registry (no global
/// `MetricsSystem` bootstrap, so tests can make as many servers as they like), plus a plain
/// atomic that `/stats` reads.
public final class RequestAccounting: Sendable {
    private struct Key: Hashable {
        let endpoint: String
        let status: Int
    }

    private final class Recorder: Sendable {
        let counter: CoreMetrics.Counter
        let timer: CoreMetrics.Timer
        let count = Atomic<Int>(0)

        init(_ key: Key, factory: PrometheusMetricsFactory) {
            let dimensions = [("endpoint", key.endpoint), ("status", String(key.status))]
            counter = CoreMetrics.Counter(label: "threadbare_requests_total", dimensions: dimensions, factory: factory)
            timer = CoreMetrics.Timer(label: "threadbare_request_duration_seconds", dimensions: dimensions, factory: factory)
        }
    }

    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let recorders = Locked<[Key: Recorder]>([:])

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Finer than the library's default (5 ms and up): most answers here take well under 1 ms.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2), .seconds(5), .seconds(10),
        ]
        self.factory = factory
    }

    /// Records one answer. `nanoseconds` runs from the loop reading the request to the answer
    /// being handed back to it.
    public func record(endpoint: String, status: Int, nanoseconds: UInt64) {
        let key = Key(endpoint: endpoint, status: status)
        let recorder = recorders.withLock { table in
            if let existing = table[key] { return existing }
            let made = Recorder(key, factory: factory)
            table[key] = made
            return made
        }
        recorder.count.add(1, ordering: .relaxed)
        recorder.counter.increment()
        recorder.timer.recordNanoseconds(Int64(clamping: nanoseconds))
    }

    /// Requests so far: endpoint → status → count.
    public func countsByEndpoint() -> [String: [String: Int]] {
        let all = recorders.withLock { Array($0) }
        var counts: [String: [String: Int]] = [:]
        for (key, recorder) in all {
            counts[key.endpoint, default: [:]][String(key.status)] = recorder.count.load(ordering: .relaxed)
        }
        return counts
    }

    public var total: Int {
        recorders.withLock { table in table.values.reduce(0) { $0 + $1.count.load(ordering: .relaxed) } }
    }
}
