import Foundation
import Testing

/// What the lock models do to requests, read from the server's own figures: `Server-Timing`
/// stamps and the per-domain lock statistics of `/stats`. Wall-clock bounds appear only where
/// the issue asks for them, with wide margins.
extension LoadSensitive {
    @Suite("gil, subinterpreters and nogil: what the lock does to requests", .serialized)
    struct LockModeTests {
        /// /cpu work that keeps a thread busy for a good fraction of a second in a debug build.
        static let longWork = 150_000

        /// The lock figures of `/stats`, one dictionary per domain.
        static func lockDomains(_ server: ServerProcess) throws -> [[String: Any]] {
            let lock = try #require(try server.json("/stats")["lock"] as? [String: Any])
            return try #require(lock["domains"] as? [[String: Any]])
        }

        @Test func gilLetsOneCPURequestHoldTheLockAtATime() throws {
            let server = try ServerProcess(["--mode", "gil", "--threads", "4"])
            defer { server.stop() }
            let replies = try concurrently(2) { _ in try server.get("/cpu?work=\(Self.longWork)") }
            #expect(replies.allSatisfy { $0.status == 200 })
            let domain = try #require(try Self.lockDomains(server).first)
            #expect(domain["most_holders"] as? Int == 1)
            #expect((domain["drops_honoured"] as? Int ?? 0) >= 1, "\(domain)")
            // Each waited for the other: together they spent a large share of their time waiting.
            let waited = replies.compactMap { $0.serverTiming("lock") }.reduce(0, +)
            let total = replies.compactMap { $0.serverTiming("app") }.reduce(0, +)
            #expect(waited > 0.15 * total, "lock \(waited) ms of app \(total) ms")
            let metrics = try server.get("/metrics").text
            for name in ["threadbare_lock_wait_seconds_count", "threadbare_lock_hold_seconds_count", "threadbare_lock_handovers_total",
                         "threadbare_lock_drop_requests_total", "threadbare_lock_drops_honoured_total"] {
                #expect(metrics.contains(name + #"{domain="0"}"#), "\(name) missing from /metrics")
            }
        }

        /// gil's handler threads are gunicorn gthread's: a dispatcher thread takes the lock to
        /// hand each request over, and again once it is answered (finish_request), unless one
        /// wake-up does both. Counted by the lock itself, against the same file with
        /// `dispatch: direct`, where only the handler thread takes it: for its work and once
        /// more after sending.
        @Test func gilHandsRequestsOverUnderTheLockAsGthreadsMainThreadDoes() throws {
            let locked = try ServerProcess(["--config", AsyncModeTests.config("gil")])
            defer { locked.stop() }
            let direct = try ServerProcess(["--config", AsyncModeTests.config("gil"), "--set", "dispatch=direct"])
            defer { direct.stop() }
            func acquisitionsPerRequest(_ server: ServerProcess) throws -> Double {
                let acquisitions = { () throws -> Int in try #require(try Self.lockDomains(server).first?["acquisitions"] as? Int) }
                let before = try acquisitions()
                let connection = try server.connect()
                for _ in 0..<40 { #expect(try connection.request("GET", "/cpu?work=0").status == 200) }
                // The last tidy-up follows the last reply.
                Thread.sleep(forTimeInterval: 0.2)
                return Double(try acquisitions() - before) / 40
            }
            #expect((try locked.json("/stats")["lock"] as? [String: Any])?["dispatch"] as? String == "locked")
            #expect((try direct.json("/stats")["lock"] as? [String: Any])?["dispatch"] as? String == "direct")
            #expect(try AsyncModeTests.threadNames(locked.pid).contains("tb-dispatch"))
            #expect(try !AsyncModeTests.threadNames(direct.pid).contains("tb-dispatch"))
            let handedOver = try acquisitionsPerRequest(locked), straight = try acquisitionsPerRequest(direct)
            #expect(abs(straight - 2) < 0.1, "direct: \(straight) takes per request")
            #expect(handedOver >= 3 && handedOver <= 4.05, "locked: \(handedOver) takes per request")
        }

        @Test func nogilRunsCPURequestsTogetherAndNeverWaits() throws {
            let server = try ServerProcess(["--mode", "nogil", "--threads", "4"])
            defer { server.stop() }
            let replies = try concurrently(2) { _ in try server.get("/cpu?work=\(Self.longWork)") }
            #expect(replies.allSatisfy { $0.status == 200 && $0.serverTiming("lock") == 0 })
            let lock = try #require(try server.json("/stats")["lock"] as? [String: Any])
            #expect(lock["model"] as? String == "none")
            let domain = try #require((lock["domains"] as? [[String: Any]])?.first)
            #expect(domain["most_holders"] as? Int == 2)
            #expect(domain["drop_requests"] as? Int == 0)
        }

        /// Same total work, done by one client and then by four: under the GIL four are not faster.
        /// The best of three runs each, so one slow moment on a shared machine does not decide.
        @Test func gilCPUThroughputDoesNotGrowWithClients() throws {
            let server = try ServerProcess(["--mode", "gil", "--threads", "4"])
            defer { server.stop() }
            func elapsed(clients: Int) throws -> TimeInterval {
                let started = Date()
                _ = try concurrently(clients) { _ in
                    let connection = try server.connect()
                    for _ in 0..<(8 / clients) {
                        #expect(try connection.request("GET", "/cpu?work=20000").status == 200)
                    }
                }
                return Date().timeIntervalSince(started)
            }
            var one: [TimeInterval] = [], four: [TimeInterval] = []
            for _ in 0..<3 {
                one.append(try elapsed(clients: 1))
                four.append(try elapsed(clients: 4))
            }
            let speedup = one.min()! / four.min()!
            #expect(speedup < 1.35, "4 clients ran \(speedup)× as fast as 1 (1: \(one), 4: \(four))")
        }

        @Test func gilStillOverlapsBlockingIO() throws {
            let server = try ServerProcess(["--mode", "gil", "--threads", "8"])
            defer { server.stop() }
            let started = Date()
            let replies = try concurrently(8) { _ in try server.get("/io?ms=200") }
            let elapsed = Date().timeIntervalSince(started)
            #expect(replies.allSatisfy { $0.status == 200 })
            // One after another: 1.6 s. The sleeps run with the lock released.
            #expect(elapsed < 0.9, "8 × /io?ms=200 took \(elapsed) s")
        }

        /// release=1 is a C extension that drops the GIL for its loop: two such requests do not
        /// wait for each other, where the same work holding the lock does.
        @Test func gilReleasedCPUWorkDoesNotWait() throws {
            let server = try ServerProcess(["--mode", "gil", "--threads", "4"])
            defer { server.stop() }
            let replies = try concurrently(2) { _ in try server.get("/cpu?work=\(Self.longWork)&release=1") }
            #expect(replies.allSatisfy { $0.status == 200 })
            for reply in replies {
                let waited = try #require(reply.serverTiming("lock")), app = try #require(reply.serverTiming("app"))
                #expect(waited < 0.1 * app, "lock \(waited) ms of app \(app) ms")
            }
            // The results are the ones the lock-holding path computes.
            let held = try server.get("/cpu?work=\(Self.longWork)").json()["result"] as? String
            #expect(try replies[0].json()["result"] as? String == held)
        }

        /// The convoy effect: while CPU work runs, an I/O request waits about one switch interval
        /// each time it needs the lock (twice before its reply), so its lock wait scales with the
        /// interval. Two computing requests, so that one of them wants the lock even when the
        /// other is not scheduled on this busy 2-core machine. The lock's own takes only: with
        /// `dispatch: locked` a dispatcher thread competes for it too, four threads on two cores,
        /// and how often it loses a round is the scheduler's, not the interval's.
        @Test func gilIOWaitsBehindCPUWorkAboutOneIntervalPerAcquisition() throws {
            func medianIOLockWait(intervalMilliseconds: Double) throws -> Double {
                let server = try ServerProcess(["--mode", "gil", "--threads", "4", "--switch-interval-ms", String(intervalMilliseconds),
                                                "--set", "dispatch=direct"])
                defer { server.stop() }
                let hogsDone = DispatchGroup()
                let hogFinished = LockedFlag()
                for _ in 0..<2 {
                    hogsDone.enter()
                    Thread.detachNewThread {
                        _ = try? server.get("/cpu?work=\(Self.longWork * 2)")
                        hogFinished.set()
                        hogsDone.leave()
                    }
                }
                Thread.sleep(forTimeInterval: 0.05)
                let connection = try server.connect()
                var waits: [Double] = []
                for _ in 0..<9 {
                    waits.append(try #require(try connection.request("GET", "/io?ms=0").serverTiming("lock")))
                }
                #expect(!hogFinished.isSet, "the CPU requests must still be running for the figures to count")
                hogsDone.wait()
                return waits.sorted()[waits.count / 2]
            }
            // Ten times the interval, so that the ratio has room: at 1 ms the scheduler's own
            // delays (a few ms under ASAN on CI) are most of the wait, and 5 ms against 1 ms came
            // out at 1.995 there.
            let atTen = try medianIOLockWait(intervalMilliseconds: 10)
            let atOne = try medianIOLockWait(intervalMilliseconds: 1)
            // Two acquisitions before the reply, each about one interval; on a busy machine a
            // computing thread is sometimes not scheduled and one of them finds the lock free,
            // so at least one interval in all.
            #expect(atTen >= 10 * 0.9, "lock wait \(atTen) ms at 10 ms")
            #expect(atOne >= 1 * 0.9, "lock wait \(atOne) ms at 1 ms")
            #expect(atTen / atOne > 2.5, "lock wait \(atTen) ms at 10 ms, \(atOne) ms at 1 ms")
        }

        /// Connections that landed in different interpreters: the header names the domain.
        static func connectionsInTwoDomains(_ server: ServerProcess) throws -> (HTTPConnection, HTTPConnection) {
            var byDomain: [String: HTTPConnection] = [:]
            for _ in 0..<8 where byDomain.count < 2 {
                let connection = try server.connect()
                let domain = try #require(try connection.request("GET", "/cache").headers["threadbare-interpreter"])
                if byDomain[domain] == nil { byDomain[domain] = connection }
            }
            return (try #require(byDomain["0"]), try #require(byDomain["1"]))
        }

        @Test func subinterpretersComputeInParallelAcrossDomains() throws {
            let server = try ServerProcess(["--mode", "subinterpreters", "--interpreters", "2", "--threads", "4"])
            defer { server.stop() }
            let (first, second) = try Self.connectionsInTwoDomains(server)
            let connections = [first, second]
            let replies = try concurrently(2) { index in
                try connections[index].request("GET", "/cpu?work=\(Self.longWork)")
            }
            for reply in replies {
                let waited = try #require(reply.serverTiming("lock")), app = try #require(reply.serverTiming("app"))
                #expect(waited < 0.1 * app, "lock \(waited) ms of app \(app) ms: the domains should not share a lock")
            }
            let domains = try Self.lockDomains(server)
            #expect(domains.count == 2)
            #expect(domains.allSatisfy { $0["most_holders"] as? Int == 1 && $0["threads"] as? Int == 2 })
        }

        @Test func subinterpreterConnectionsTakeTurns() throws {
            let server = try ServerProcess(["--mode", "subinterpreters", "--interpreters", "2", "--threads", "2"])
            defer { server.stop() }
            // A new connection for each request, as clients without keep-alive make them.
            let domains = try (0..<6).map { _ in try server.get("/cache").headers["threadbare-interpreter"] ?? "none" }
            #expect(Set(zip(domains, domains.dropFirst()).map { $0 == $1 }) == [false], "domains in order: \(domains)")
            // Keep-alive: a connection stays where it started.
            let connection = try server.connect()
            let first = try connection.request("GET", "/cache").headers["threadbare-interpreter"]
            for _ in 0..<4 {
                #expect(try connection.request("GET", "/cache").headers["threadbare-interpreter"] == first)
            }
        }

        @Test func subinterpretersShareNoCache() throws {
            let server = try ServerProcess(["--mode", "subinterpreters", "--interpreters", "2", "--threads", "2"])
            defer { server.stop() }
            let (first, second) = try Self.connectionsInTwoDomains(server)
            #expect(try first.request("PUT", "/cache/k", body: Array("one".utf8)).status == 201)
            #expect(try second.request("GET", "/cache/k").status == 404)
            #expect(try first.request("GET", "/cache/k").text == "one")
            #expect(try second.request("PUT", "/cache/k", body: Array("two".utf8)).status == 201, "a separate cache: created, not replaced")
            // Either interpreter's /cache reports both caches, as a prefork worker's reports every worker's.
            for connection in [first, second] {
                let interpreters = try #require(try connection.request("GET", "/cache").json()["interpreters"] as? [String: Any])
                let each = try #require(interpreters["each"] as? [[String: Any]])
                #expect(each.map { $0["interpreter"] as? Int } == [0, 1])
                #expect(each.allSatisfy { $0["entries"] as? Int == 1 && $0["misses"] as? Int == ($0["hits"] as? Int == 1 ? 0 : 1) })
                #expect((interpreters["total"] as? [String: Any])?["entries"] as? Int == 2)
            }
        }
    }
}

/// A flag one thread sets and another reads.
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
