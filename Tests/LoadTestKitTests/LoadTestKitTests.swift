import Foundation
import Testing
@testable import LoadTestKit

@Suite("loadtest's parsing and statistics")
struct LoadTestKitTests {
    @Test func urlsBecomeTargets() throws {
        let plain = try Target(url: "http://example.com/a/b?x=1")
        #expect(plain == (try Target(url: "http://example.com:80/a/b?x=1")))
        #expect(plain.host == "example.com" && plain.port == 80 && plain.pathAndQuery == "/a/b?x=1")
        #expect(plain.hostHeader == "example.com")
        let bare = try Target(url: "http://127.0.0.1:8080")
        #expect(bare.pathAndQuery == "/" && bare.port == 8080 && bare.hostHeader == "127.0.0.1:8080")
        #expect(try Target(url: "http://h?q=1").pathAndQuery == "/?q=1")
        let six = try Target(url: "http://[::1]:9000/health")
        #expect(six.host == "::1" && six.port == 9000 && six.hostHeader == "[::1]:9000")
        let secure = try Target(url: "https://example.com/a")
        #expect(secure.secure && secure.port == 443 && secure.hostHeader == "example.com" && secure.origin == "https://example.com")
        #expect(try Target(url: "https://example.com:8443").hostHeader == "example.com:8443")
        #expect(try Target(url: "http://example.com:443/").hostHeader == "example.com:443")
        for bad in ["ftp://x", "https://", "https://x:0/", "http://", "http://x:0/", "http://x:99999/", "http://x:port/", "http://[::1/", "http://x/a b"] {
            #expect(throws: Target.Invalid.self, "\(bad)") { try Target(url: bad) }
        }
    }

    @Test func serverTimingHeadersParse() {
        let metrics = serverTimingDurations("queue;dur=0.012, lock;dur=1.5;desc=\"x\", cache;desc=hit, app;dur=2")
        #expect(metrics.map(\.name) == ["queue", "lock", "app"])
        #expect(metrics.map(\.milliseconds) == [0.012, 1.5, 2])
        #expect(serverTimingDurations("").isEmpty)
    }

    /// 1…1000 µs, each once: every percentile is known exactly, to HdrHistogram's three
    /// significant digits.
    @Test func percentilesOfAKnownDistribution() {
        var results = Results()
        for value in 1...1000 { results.recordLatency(UInt64(value)) }
        let latency = Report.Percentiles(results.latency)
        #expect(latency.count == 1000)
        #expect(abs(latency.p50 - 0.500) <= 0.001)
        #expect(abs(latency.p90 - 0.900) <= 0.001)
        #expect(abs(latency.p99 - 0.990) <= 0.001)
        #expect(latency.max == 1.0, "the max is exact")
        #expect(abs(latency.mean - 0.5005) <= 0.001)
    }

    @Test func absurdFiguresAreClampedOrRefused() {
        var results = Results()
        results.record(status: 200, latency: 1, uncorrected: nil, serverTiming: Array("app;dur=1e300, lock;dur=-1, queue;dur=nan".utf8))
        #expect(results.serverTiming["app"]?.max ?? 0 >= Results.longestMicroseconds - 1_000_000, "a server may send any number")
        #expect(results.serverTiming["lock"] == nil && results.serverTiming["queue"] == nil)
        #expect(Seconds.parse("1e11") == nil && Seconds.parse("-1s") == nil && Seconds.parse("0.1ms") == nil)
        #expect(Seconds.parse("0") == 0 && Seconds.parse("500ms") == 0.5 && Seconds.parse("2m") == 120 && Seconds.parse("1.5") == 1.5)
    }

    @Test func threadResultsMerge() {
        var first = Results(), second = Results()
        for value in 1...500 { first.recordLatency(UInt64(value)) }
        for value in 501...1000 { second.recordLatency(UInt64(value)) }
        first.completed = 500
        second.completed = 500
        first.count(error: "timeout")
        second.count(error: "timeout")
        second.count(error: "status_500")
        first.recordServerTiming("app", milliseconds: 1)
        second.recordServerTiming("app", milliseconds: 3)
        second.recordServerTiming("queue", milliseconds: 0.5)
        second.recordLatency(Results.longestMicroseconds * 10)
        first.merge(second)
        #expect(first.completed == 1000)
        #expect(first.latency.totalCount == 1001)
        #expect(first.latency.max >= Results.longestMicroseconds - 1_000_000, "beyond an hour is counted as an hour, not dropped")
        #expect(first.errors == ["timeout": 2, "status_500": 1])
        #expect(first.errorTotal == 3)
        #expect(first.serverTiming["app"]?.totalCount == 2)
        #expect(first.serverTiming["queue"]?.totalCount == 1)
    }

    @Test func jsonHasTheDocumentedFields() throws {
        var results = Results()
        results.record(status: 200, latency: 1500, uncorrected: 900, serverTiming: Array("app;dur=1.2".utf8))
        results.count(error: "connect")
        var other = Results()
        other.record(status: 503, latency: 500, uncorrected: 500, serverTiming: [])
        let endpoints = try ["http://h/a", "http://h/b=3"].map { try Endpoint(weightedURL: $0) }
        var plan = try LoadPlan(endpoints: endpoints, connections: 2, threads: 4, duration: 2)
        plan.rate = 10
        let report = Report(plan: plan, summary: LoadRun.Summary(endpoints: [results, other], duration: 2))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any])
        #expect(json["requests"] as? Int == 2)
        #expect(json["rps"] as? Double == 1)
        #expect(json["threads"] as? Int == 2, "never more threads than connections")
        #expect((json["errors"] as? [String: Int]) == ["connect": 1, "status_503": 1, "total": 2])
        for key in ["latency_ms", "latency_uncorrected_ms"] {
            let latency = try #require(json[key] as? [String: Any], "\(key)")
            for field in ["p50", "p75", "p90", "p99", "p999", "p9999", "max", "mean", "stdev", "count"] { #expect(latency[field] != nil, "\(key).\(field)") }
        }
        #expect(((json["server_timing"] as? [String: Any])?["app"] as? [String: Any])?["p50"] as? Double == 1.2)
        #expect(json["duration_s"] as? Double == 2 && json["in_flight_at_end"] as? Int == 0 && json["late_sends"] as? Int == 0)
        let byEndpoint = try #require(json["endpoints"] as? [[String: Any]])
        #expect(byEndpoint.map { $0["url"] as? String } == ["http://h/a", "http://h/b"])
        #expect(byEndpoint.map { $0["weight"] as? Int } == [1, 3])
        #expect(byEndpoint.map { $0["requests"] as? Int } == [1, 1])
        #expect((byEndpoint[1]["errors"] as? [String: Int]) == ["status_503": 1, "total": 1])
        #expect(byEndpoint[0]["latency_ms"] != nil && byEndpoint[0]["server_timing"] != nil)
        let decoded = try JSONDecoder().decode(Report.self, from: Data(report.json().utf8))
        #expect(decoded.json() == report.json(), "the schema reads back")
    }
}
