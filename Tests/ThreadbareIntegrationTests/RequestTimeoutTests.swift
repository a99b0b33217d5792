import Foundation
import Testing

/// `request_timeout`: a handler past it gets its client a 504 on time; computing handler code
/// stops at its next check point and frees the thread; a blocking call cannot be stopped, so its
/// thread is counted as past its deadline until it returns; a request that expired in the queue
/// is never run; and the late answer never reaches the client.
@Suite("request_timeout answers 504 and frees or flags the handler thread")
struct RequestTimeoutTests {
    static func stats(_ server: ServerProcess) throws -> [String: Any] { try server.json("/stats") }

    @Test(arguments: ["gil", "nogil"])
    func computingHandlerStopsAtItsNextCheckPoint(mode: String) throws {
        // One handler thread, and work that would hold it for minutes.
        let server = try ServerProcess([
            "--set", "mode=\(mode)", "--set", "threads=1", "--set", "request_timeout=1", "--set", "cpu.max_work=1000000000",
        ])
        defer { server.stop() }
        let long = try server.get("/cpu?work=500000000")
        #expect(long.status == 504)
        #expect(try long.json()["error"] as? String == "the handler did not answer within request_timeout (1.0 s)")
        // The only thread is free again: the next request is computed, not queued behind minutes.
        let next = try HTTPConnection(port: server.port, timeoutSeconds: 60).request("GET", "/cpu?work=10")
        #expect(next.status == 200)
        #expect(BoundedWait.eventually(within: 20) { (try? Self.stats(server)["handlers_past_deadline"] as? Int) == 0 })
        let stats = try Self.stats(server)
        #expect(stats["request_timeouts"] as? Int == 1)
        #expect((stats["requests"] as? [String: [String: Int]])?["cpu"] == ["504": 1, "200": 1])
    }

    @Test func blockingHandlerIsFlaggedAndItsLateAnswerDropped() throws {
        let server = try ServerProcess(["--set", "threads=1", "--set", "request_timeout=0.5"])
        defer { server.stop() }
        let connection = try server.connect()
        #expect(try connection.request("GET", "/io?ms=6000").status == 504)
        // The sleep cannot be interrupted: its thread is flagged while it lasts.
        #expect(try Self.stats(server)["handlers_past_deadline"] as? Int == 1)
        // The connection goes on; when the sleep ends, its answer is dropped, not sent here.
        #expect(try connection.request("GET", "/health").text == "ok")
        #expect(BoundedWait.eventually(within: 30) { (try? Self.stats(server)["handlers_past_deadline"] as? Int) == 0 })
        let afterwards = try connection.request("GET", "/health")
        #expect(afterwards.status == 200)
        #expect(afterwards.text == "ok")
    }

    @Test func requestExpiredInTheQueueIsNeverRun() throws {
        let server = try ServerProcess(["--set", "threads=1", "--set", "request_timeout=0.5"])
        defer { server.stop() }
        let replies = try concurrently(2) { index in
            if index == 1 { Thread.sleep(forTimeInterval: 0.1) }
            return try server.get(index == 0 ? "/io?ms=3000" : "/cpu?work=1").status
        }
        #expect(replies == [504, 504])
        #expect(BoundedWait.eventually(within: 30) { (try? Self.stats(server)["handlers_past_deadline"] as? Int) == 0 })
        // The queued /cpu request was answered 504 and never computed: no 200 anywhere.
        let requests = try Self.stats(server)["requests"] as? [String: [String: Int]]
        #expect(requests?["cpu"] == ["504": 1])
        #expect(try server.get("/cpu?work=1").status == 200)
    }
}
