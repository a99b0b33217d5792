import Foundation
import Testing

extension LoadSensitive {
    @Suite("nogil: handler threads run in parallel", .serialized)
    struct ConcurrencyTests {
        @Test func eightBlockingRequestsOverlap() throws {
            let server = try ServerProcess(["--threads", "8"])
            defer { server.stop() }
            let started = Date()
            let replies = try concurrently(8) { _ in try server.get("/io?ms=300") }
            let elapsed = Date().timeIntervalSince(started)
            #expect(replies.allSatisfy { $0.status == 200 })
            // One after another would take 8 × 300 ms = 2.4 s; together they take about 300 ms.
            #expect(elapsed < 1.2, "8 × /io?ms=300 took \(elapsed) s")
            // The server's own stamps agree: no request waited for a handler thread.
            let queued = replies.compactMap { $0.serverTiming("queue") }
            #expect(queued.count == 8)
            #expect(queued.allSatisfy { $0 < 150 }, "queue times \(queued)")
        }

        @Test func fewerThreadsQueueTheRest() throws {
            let server = try ServerProcess(["--threads", "2"])
            defer { server.stop() }
            let replies = try concurrently(4) { _ in try server.get("/io?ms=300") }
            #expect(replies.allSatisfy { $0.status == 200 })
            // Two run at once, two wait about one sleep for a free thread, as the server reports.
            let queued = replies.compactMap { $0.serverTiming("queue") }.sorted()
            #expect(queued.count == 4)
            #expect(queued[3] > 200, "queue times \(queued)")
        }

        @Test func manyLoopsShareTheLoad() throws {
            let server = try ServerProcess(["--loops", "4", "--threads", "4"])
            defer { server.stop() }
            let replies = try concurrently(16) { index in
                let connection = try server.connect()
                return try (0..<20).map { _ in try connection.request("GET", "/cpu?work=\(index)").status }
            }
            #expect(replies.flatMap { $0 }.allSatisfy { $0 == 200 })
        }
    }
}
