import Foundation
import Testing

/// What free threads, C extensions and shared objects cost, read from the server's own
/// counters, or from two servers measured side by side in the same test.
extension LoadSensitive {
    @Suite("Free threads' own costs, native work and reference counts", .serialized)
    struct FreeThreadingCostTests {
        static func lockDomain(_ server: ServerProcess) throws -> [String: Any] {
            let lock = try #require(try server.json("/stats")["lock"] as? [String: Any])
            return try #require((lock["domains"] as? [[String: Any]])?.first)
        }

        /// Seconds one connection takes for `requests` /cpu requests of `work` units.
        static func timeOfRequests(_ server: ServerProcess, work: Int, requests: Int) throws -> Double {
            let connection = try server.connect()
            let started = Date()
            for _ in 0..<requests { #expect(try connection.request("GET", "/cpu?work=\(work)").status == 200) }
            return Date().timeIntervalSince(started)
        }

        /// At one connection, nogil with 3.13t's overhead (40%) serves fewer requests per second
        /// than gil, by about that overhead: the same work, measured in turns, same test.
        /// nogil.yaml's default, 3.14t's figure, is the one the server reports.
        @Test func nogilIsSlowerThanGilAtOneConnectionByItsOverhead() throws {
            let gil = try ServerProcess(["--config", AsyncModeTests.config("gil")])
            defer { gil.stop() }
            let nogil = try ServerProcess(["--config", AsyncModeTests.config("nogil"), "--set", "free_threading_overhead_percent=40"])
            defer { nogil.stop() }
            let defaults = try ServerProcess(["--config", AsyncModeTests.config("nogil")])
            defer { defaults.stop() }
            #expect((try defaults.json("/stats")["lock"] as? [String: Any])?["free_threading_overhead_percent"] as? Double == 7)
            #expect((try gil.json("/stats")["lock"] as? [String: Any])?["free_threading_overhead_percent"] as? Double == 0)
            var gilTime = 0.0, nogilTime = 0.0
            for _ in 0..<4 {
                gilTime += try Self.timeOfRequests(gil, work: 5_000, requests: 8)
                nogilTime += try Self.timeOfRequests(nogil, work: 5_000, requests: 8)
            }
            // Rates: requests / time. 1.4× the work per unit is a rate of about 0.71.
            let ratio = gilTime / nogilTime
            #expect(ratio > 0.45 && ratio < 0.92, "nogil's rate is \(ratio) of gil's at one connection")
        }

        /// native=F runs the share F of the work with the lock released, one release per
        /// step of 100 units; release=1 is native=1, one release for the whole call.
        @Test func nativeReleasesTheLockForItsShare() throws {
            let server = try ServerProcess(["--config", AsyncModeTests.config("gil")])
            defer { server.stop() }
            func counters() throws -> (releases: Int, held: Int, released: Int) {
                let domain = try Self.lockDomain(server)
                let units = try #require(domain["work_units"] as? [String: Any])
                return (try #require(domain["releases"] as? Int), try #require(units["held"] as? Int), try #require(units["released"] as? Int))
            }
            let expected = try server.json("/cpu?work=10000")["result"] as? String
            for (query, held, released, releases) in [("native=0.9", 1_000, 9_000, 100), ("native=0.5", 5_000, 5_000, 100),
                                                      ("native=1", 0, 10_000, 1), ("release=1", 0, 10_000, 1), ("native=0", 10_000, 0, 0)] {
                let before = try counters()
                let answer = try server.json("/cpu?work=10000&\(query)")
                #expect(answer["result"] as? String == expected, "the same work, whatever runs it: \(query)")
                let after = try counters()
                #expect(after.held - before.held == held, "\(query)")
                #expect(after.released - before.released == released, "\(query)")
                #expect(after.releases - before.releases == releases, "\(query)")
            }
            for bad in ["native=1.5", "native=-0.5", "native=1e-1", "native=nan", "native=0.5&release=1"] {
                #expect(try server.get("/cpu?work=10&\(bad)").status == 400, "\(bad)")
            }
        }

        /// `touches=N` reads a start-up object N times: N counts written plainly under gil, N
        /// atomically under nogil (the object was made by another thread), none when immortal.
        @Test(arguments: [("gil", "plain", 50, 0), ("nogil", "atomic", 0, 50), ("nogil", "immortal", 0, 0)])
        func touchesWriteTheCountsTheModelSays(mode: String, model: String, plain: Int, atomic: Int) throws {
            let server = try ServerProcess(["--config", AsyncModeTests.config(mode), "--set", "cache.preload=4",
                                            "--set", "cache.refcount=\(model)"])
            defer { server.stop() }
            func writes() throws -> (plain: Int, atomic: Int) {
                let counts = try #require(try server.json("/cache")["refcount"] as? [String: Any])
                #expect(counts["model"] as? String == model)
                return (try #require(counts["plain_writes"] as? Int), try #require(counts["atomic_writes"] as? Int))
            }
            let before = try writes()
            let reply = try server.get("/cache/preload-3?touches=50")
            #expect(reply.status == 200 && reply.body.count == 1_024)
            let after = try writes()
            #expect(after.plain - before.plain == plain && after.atomic - before.atomic == atomic, "\(after) after \(before)")
            #expect(try server.get("/cache/preload-3?touches=-1").status == 400)
            #expect(try server.request("PUT", "/cache/preload-3", body: Array("x".utf8)).status == 409)
        }
    }
}
