import Prometheus

/// This server's own Prometheus registry and the swift-metrics factory that feeds it. Each
/// server has its own (no global `MetricsSystem` bootstrap), so tests can make as many servers
/// as they like; `/metrics` prints the registry.
public final class MetricsExport: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Finer than the library's default (5 ms and up): most answers and lock waits here take
        // well under 1 ms.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(10), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2), .seconds(5), .seconds(10),
        ]
        self.factory = factory
    }
}
