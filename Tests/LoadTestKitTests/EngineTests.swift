import Foundation
import Testing
@testable import LoadTestKit

/// The load engine against servers inside the test that misbehave on cue.
@Suite("the load engine", .serialized)
struct EngineTests {
    static func plan(_ urls: [String], connections: Int = 2, duration: Double = 0.5, rate: Double? = nil, timeout: Double = 5) throws -> LoadPlan {
        var plan = try LoadPlan(endpoints: urls.map { try Endpoint(weightedURL: $0) }, connections: connections, threads: 1,
                                duration: duration, timeout: timeout)
        plan.rate = rate
        return plan
    }

    @Test func aRefusedConnectionIsAConnectErrorNotALatency() throws {
        // A port that was just free: nothing listens there.
        let server = try ScriptedServer { _ in .status(200) }
        let port = server.port
        server.stop()
        let summary = try LoadRun.run(try Self.plan(["http://127.0.0.1:\(port)/"], duration: 0.3))
        #expect(summary.results.completed == 0)
        #expect((summary.results.errors["connect"] ?? 0) > 0)
        #expect(summary.results.latency.totalCount == 0)
    }

    @Test func eachWayOfFailingHasItsKind() throws {
        let server = try ScriptedServer { line in
            switch line {
            case let l where l.contains("/cut"):
                ScriptedServer.Answer(bytes: Array("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".utf8), close: true)
            case let l where l.contains("/garbage"): ScriptedServer.Answer(bytes: Array("NOT HTTP AT ALL\r\n\r\n".utf8), close: true)
            case let l where l.contains("/silent"): ScriptedServer.Answer(bytes: [], close: true)
            case let l where l.contains("/fail"): .status(500, body: "boom")
            default: .status(200)
            }
        }
        defer { server.stop() }
        let summary = try LoadRun.run(try Self.plan(["/cut", "/garbage", "/silent", "/fail", "/ok"].map { server.url + $0 }, connections: 2))
        let byEndpoint = summary.endpoints.map(\.errors)
        #expect(byEndpoint[0].keys.sorted() == ["bad_response"], "cut short: \(byEndpoint[0])")
        #expect(byEndpoint[1].keys.sorted() == ["bad_response"], "garbage: \(byEndpoint[1])")
        #expect(byEndpoint[2].keys.sorted() == ["read"], "closed without an answer: \(byEndpoint[2])")
        #expect(byEndpoint[3].keys.sorted() == ["status_500"], "\(byEndpoint[3])")
        #expect(byEndpoint[4].isEmpty)
        #expect(summary.endpoints[3].completed == byEndpoint[3]["status_500"], "a 500 is an answer too")
        #expect(summary.endpoints[0].completed == 0 && summary.endpoints[1].completed == 0, "failures are not latencies")
        #expect(summary.endpoints[4].completed > 10)
    }

    @Test func anUnansweredRequestTimesOut() throws {
        let server = try ScriptedServer { line in
            if line.contains("/hang") { Thread.sleep(forTimeInterval: 2) }
            return .status(200)
        }
        defer { server.stop() }
        let summary = try LoadRun.run(try Self.plan([server.url + "/hang"], connections: 1, duration: 0.6, timeout: 0.2))
        #expect((1...3).contains(summary.results.errors["timeout"] ?? 0), "\(summary.results.errors)")
        #expect(summary.results.completed == 0)
    }

    /// Found in review: a timeout's failure sends a due request on another connection, stamped
    /// after the sweep's clock; the sweep then computed a negative age and trapped.
    @Test func timeoutsInTheOpenModelWhileOtherConnectionsAreFree() throws {
        let server = try ScriptedServer { line in
            if line.contains("/hang") { Thread.sleep(forTimeInterval: 1) }
            return .status(200)
        }
        defer { server.stop() }
        // The timeout is well above what a fast answer takes even under ThreadSanitizer on a
        // busy machine, and well below the hang.
        let summary = try LoadRun.run(try Self.plan([server.url + "/fast=20", server.url + "/hang"], connections: 40, duration: 0.6,
                                                    rate: 4000, timeout: 0.25))
        #expect((summary.endpoints[1].errors["timeout"] ?? 0) > 0)
        #expect(summary.endpoints[0].completed > 100)
    }

    /// A server that answers and closes while a large body is still being written: EPIPE is a
    /// write error, not a SIGPIPE that would end this very test process.
    @Test func aPeerClosingMidRequestIsAnErrorNotASignal() throws {
        let server = try ScriptedServer { _ in ScriptedServer.Answer(bytes: Array("HTTP/1.1 413 Too Big\r\nContent-Length: 0\r\n\r\n".utf8), close: true) }
        defer { server.stop() }
        var endpoint = try Endpoint(weightedURL: server.url + "/upload")
        endpoint.method = "POST"
        endpoint.body = Array(repeating: 0x61, count: 4 << 20)
        let plan = try LoadPlan(endpoints: [endpoint], connections: 2, threads: 1, duration: 0.5)
        let summary = try LoadRun.run(plan)
        #expect(summary.results.completed + summary.results.errorTotal > 0, "\(summary.results.errors)")
    }

    @Test func eachRequestCarriesAKeyOfItsOwn() throws {
        let seen = LockedLines()
        let server = try ScriptedServer { line in
            seen.append(line)
            return .status(200)
        }
        defer { server.stop() }
        var endpoint = try Endpoint(weightedURL: server.url + "/item-{key}")
        endpoint.keys = KeySpace(count: 5)
        let summary = try LoadRun.run(try LoadPlan(endpoints: [endpoint], connections: 2, threads: 1, duration: 0.3))
        #expect(summary.results.completed > 20)
        let paths = Set(seen.all.map { $0.split(separator: " ")[1] })
        #expect(paths.isSubset(of: (0..<5).map { "/item-\($0)" }) && paths.count == 5, "\(paths)")
    }

    @Test func weightsSplitTheRequestsAndEachEndpointKeepsItsOwnResults() throws {
        let server = try ScriptedServer { line in line.contains("/slow") ? { Thread.sleep(forTimeInterval: 0.002); return .status(200) }() : .status(200) }
        defer { server.stop() }
        let summary = try LoadRun.run(try Self.plan([server.url + "/fast=3", server.url + "/slow"], connections: 4, duration: 1))
        let fast = summary.endpoints[0], slow = summary.endpoints[1]
        #expect(fast.completed + slow.completed == summary.results.completed)
        // Chosen in a fixed 3:1 rotation; only the requests in flight at the end can tip it.
        #expect(abs(fast.completed - 3 * slow.completed) <= 4 * 4, "\(fast.completed) vs \(slow.completed)")
        #expect(slow.latency.valueAtPercentile(50) > fast.latency.valueAtPercentile(50), "each endpoint its own latency")
    }

    /// The server stops answering for 500 ms in a 3 s run at 200 requests/s. 100 requests are
    /// due during the stall and each waits for its end: 1/6 of all requests wait 0–500 ms, so
    /// the corrected p90 is about 200 ms and p99 about 470 ms. The uncorrected view measures
    /// from the late sends and sees almost nothing.
    @Test func theOpenModelChargesAStallToEveryRequestDueDuringIt() throws {
        let stallStart = Date().addingTimeInterval(1.0), stallEnd = stallStart.addingTimeInterval(0.5)
        let server = try ScriptedServer { _ in
            let now = Date()
            if now >= stallStart && now < stallEnd { Thread.sleep(forTimeInterval: stallEnd.timeIntervalSince(now)) }
            return .status(200)
        }
        defer { server.stop() }
        let summary = try LoadRun.run(try Self.plan([server.url + "/"], connections: 4, duration: 3, rate: 200))
        let corrected = Report.Percentiles(summary.results.latency), uncorrected = Report.Percentiles(summary.results.uncorrected)
        #expect((120...320).contains(corrected.p90), "corrected p90 \(corrected.p90)")
        #expect((380...560).contains(corrected.p99), "corrected p99 \(corrected.p99)")
        #expect(uncorrected.p90 < 50, "uncorrected p90 \(uncorrected.p90)")
        #expect(summary.results.lateSends >= 80, "only 4 connections for the 100 requests due in the stall")
        #expect((590...600).contains(summary.results.completed), "the schedule: \(summary.results.completed)")
    }
}

/// https against servers that do not speak TLS: every failure is an error of its kind, with
/// what OpenSSL said, and none of them hangs the run.
@Suite("the load engine over TLS", .serialized)
struct TLSEngineTests {
    @Test func aServerThatAnswersTheHandshakeWithHTTPIsAHandshakeError() throws {
        let server = try ScriptedServer(greeting: Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8)) { _ in .status(200) }
        defer { server.stop() }
        var plan = try EngineTests.plan(["https://127.0.0.1:\(server.port)/"], duration: 0.3)
        plan.tls = TLSOptions(insecure: true)
        let summary = try LoadRun.run(plan)
        #expect(summary.results.completed == 0 && summary.results.latency.totalCount == 0)
        #expect((summary.results.errors["tls_handshake"] ?? 0) > 0, "\(summary.results.errors)")
        let reason = try #require(summary.results.errorReasons["tls_handshake"])
        #expect(!reason.isEmpty && reason != "unknown error", "\(reason)")
        #expect(summary.results.tlsHandshakes == 0)
    }

    @Test func aServerThatNeverAnswersTheHandshakeTimesOut() throws {
        let server = try ScriptedServer { _ in .status(200) }
        defer { server.stop() }
        var plan = try EngineTests.plan(["https://127.0.0.1:\(server.port)/"], connections: 1, duration: 0.6, timeout: 0.2)
        plan.tls = TLSOptions(insecure: true)
        let started = Date()
        let summary = try LoadRun.run(plan)
        #expect((summary.results.errors["timeout"] ?? 0) >= 1, "\(summary.results.errors)")
        #expect(Date().timeIntervalSince(started) < 3, "the run ended on time")
    }

    @Test func theCheckBeforeARunNamesTheReason() throws {
        let server = try ScriptedServer(greeting: Array("not tls at all\r\n".utf8)) { _ in .status(200) }
        defer { server.stop() }
        #expect {
            try LoadRun.checkReachable(try Target(url: "https://127.0.0.1:\(server.port)/"), tls: TLSOptions(insecure: true), attempts: 1)
        } throws: { "\($0)".contains("TLS handshake with 127.0.0.1 failed: ") }
    }
}
