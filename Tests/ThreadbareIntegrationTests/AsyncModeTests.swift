import Foundation
import Testing

/// async, prefork-async and nogil-async, started from their files in config/ as a user would:
/// what running the handlers on the event loop does to waiting, computing and offloading, read
/// from the server's own counters and `Server-Timing` stamps.
extension LoadSensitive {
    @Suite("async: handlers on the event loop", .serialized)
    struct AsyncModeTests {
        static func config(_ name: String) -> String {
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("config/\(name).yaml").path
        }

        /// The names of a process's threads, as `top -H` shows them.
        static func threadNames(_ pid: Int32) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").map { task in
                try String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }

        /// /cpu work that keeps the loop busy for a good fraction of a second in a debug build.
        static let longWork = 150_000

        @Test func fiveHundredWaitsAtOnceHoldNoThread() throws {
            let server = try ServerProcess(["--config", Self.config("async")])
            defer { server.stop() }
            // Long enough that every request is read before the first one's wait is over, even
            // under a sanitizer.
            let milliseconds = underSanitizer ? 2_000 : 200
            let connections = try (0..<500).map { _ in try server.connect() }
            for connection in connections {
                try connection.send(Array("GET /io?ms=\(milliseconds) HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            }
            let replies = try connections.map { try $0.readReply() }
            #expect(replies.allSatisfy { $0.status == 200 })
            let stats = try server.json("/stats")
            let most = try #require(stats["most_in_flight"] as? Int)
            #expect(most >= 450, "at most \(most) of 500 waits were in flight at once")
            let threads = try Self.threadNames(server.pid)
            #expect(threads.filter { $0.hasPrefix("tb-loop") }.count == 1, "\(threads)")
            #expect(!threads.contains { $0.hasPrefix("tb-handler") || $0.hasPrefix("tb-offload") }, "\(threads)")
        }

        /// X keeps the loop busy while A (CPU work) and then B (a quick request) arrive; the loop
        /// reads both in its next turn and runs A first, so B waits for all of A.
        @Test func cpuOnTheLoopDelaysAConcurrentQuickRequest() throws {
            let server = try ServerProcess(["--config", Self.config("async")])
            defer { server.stop() }
            let (x, a, b) = (try server.connect(), try server.connect(), try server.connect())
            _ = try b.request("GET", "/health")
            try x.send(Array("GET /cpu?work=\(Self.longWork) HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            Thread.sleep(forTimeInterval: 0.05)
            try a.send(Array("GET /cpu?work=\(Self.longWork) HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            Thread.sleep(forTimeInterval: 0.01)
            try b.send(Array("GET /cpu?work=1 HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            let (first, cpu, quick) = (try x.readReply(), try a.readReply(), try b.readReply())
            #expect([first.status, cpu.status, quick.status] == [Int](repeating: 200, count: 3))
            let cpuApp = try #require(cpu.serverTiming("app"))
            let quickLoop = try #require(quick.serverTiming("loop"))
            #expect(quickLoop >= cpuApp, "the quick request waited \(quickLoop) ms for the loop; the CPU request ran \(cpuApp) ms")
            #expect(try #require(quick.serverTiming("app")) < cpuApp / 10)
        }

        /// The same CPU work offloaded (run_in_executor) leaves the loop free: a quick request
        /// arriving meanwhile is answered long before the work is done, after at most a few
        /// switch intervals of waiting for the GIL the pool thread holds.
        @Test func offloadFreesTheLoop() throws {
            let server = try ServerProcess(["--config", Self.config("async")])
            defer { server.stop() }
            let (a, b) = (try server.connect(), try server.connect())
            _ = try b.request("GET", "/health")
            try a.send(Array("GET /cpu?work=\(Self.longWork)&offload=1 HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            Thread.sleep(forTimeInterval: 0.05)
            let sent = Date()
            let quick = try b.request("GET", "/cpu?work=1")
            let quickLatency = Date().timeIntervalSince(sent) * 1000
            let offloaded = try a.readReply()
            #expect(quick.status == 200 && offloaded.status == 200)
            let offloadedApp = try #require(offloaded.serverTiming("app"))
            #expect(quickLatency < offloadedApp / 3, "quick \(quickLatency) ms beside \(offloadedApp) ms of offloaded work")
            #expect(try #require(quick.serverTiming("loop")) < offloadedApp / 10)
            #expect(try Self.threadNames(server.pid).contains { $0.hasPrefix("tb-offload") }, "the pool starts with its first job")
        }

        /// gunicorn's uvicorn workers accept from one shared socket, and so does
        /// config/prefork-async.yaml: a worker whose loop is computing accepts nothing, so a new
        /// connection meanwhile goes to the other worker, every time.
        @Test func preforkAsyncGivesANewConnectionToAWorkerWhoseLoopIsFree() throws {
            let server = try ServerProcess(["--config", Self.config("prefork-async"), "--workers", "2"])
            defer { server.stop() }
            let index = try server.json("/")
            #expect(index["mode"] as? String == "prefork-async")
            #expect(index["executor"] as? String == "loop")
            #expect(PreforkTests.workers(of: server.pid).count == 2)
            for _ in 0..<3 {
                let busy = try server.connect()
                try busy.send(Array("GET /cpu?work=\(Self.longWork) HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
                Thread.sleep(forTimeInterval: 0.05)
                let quick = try server.get("/cpu?work=0")
                let computing = try busy.readReply()
                let quickWorker = try #require(quick.headers["x-worker"]), busyWorker = try #require(computing.headers["x-worker"])
                #expect(quickWorker != busyWorker, "both connections reached worker \(busyWorker)")
            }
        }

        /// nogil-async: each loop thread computes its own connections' work, at once with the
        /// other loop's.
        @Test func freeThreadedLoopsComputeAtOnce() throws {
            let server = try ServerProcess(["--config", Self.config("nogil-async")])
            defer { server.stop() }
            let replies = try concurrently(8) { _ in try server.get("/cpu?work=\(Self.longWork / 4)") }
            #expect(replies.allSatisfy { $0.status == 200 && $0.serverTiming("lock") == 0 })
            let lock = try #require(try server.json("/stats")["lock"] as? [String: Any])
            #expect(lock["model"] as? String == "none")
            let domain = try #require((lock["domains"] as? [[String: Any]])?.first)
            #expect(domain["most_holders"] as? Int == 2, "\(domain)")
            #expect(try Self.threadNames(server.pid).filter { $0.hasPrefix("tb-loop") }.count == 2)
        }

        /// A wait past `request_timeout` gets its 504 on time from the loop; the continuation
        /// that would have answered is dropped when its timer fires, and nothing else waits.
        @Test func aWaitPastItsDeadlineGets504AndItsLateAnswerIsDropped() throws {
            let server = try ServerProcess(["--config", Self.config("async"), "--set", "request_timeout=0.5"])
            defer { server.stop() }
            let connection = try server.connect()
            let late = try connection.request("GET", "/io?ms=2000")
            #expect(late.status == 504)
            #expect(try server.json("/stats")["handlers_past_deadline"] as? Int == 1)
            #expect(try connection.request("GET", "/health").text == "ok")
            #expect(BoundedWait.eventually(within: 20) { (try? server.json("/stats")["handlers_past_deadline"] as? Int) == 0 })
            #expect(try connection.request("GET", "/cpu?work=1").status == 200, "the late answer never reached this connection")
        }

        /// SIGTERM while requests wait on the loop's timers: they are answered, then the server exits 0.
        @Test func waitsInFlightFinishOnSIGTERM() throws {
            let server = try ServerProcess(["--config", Self.config("async")])
            let connections = try (0..<3).map { _ in try server.connect() }
            for connection in connections { try connection.send(Array("GET /io?ms=600 HTTP/1.1\r\nHost: t\r\n\r\n".utf8)) }
            Thread.sleep(forTimeInterval: 0.2)
            kill(server.pid, SIGTERM)
            for connection in connections {
                let reply = try connection.readReply()
                #expect(reply.status == 200 && reply.headers["connection"] == "close")
            }
            #expect(server.stop() == 0)
        }
    }
}
