import Foundation
import Testing

/// loadtest's objectives against a real threadbare: the exit statuses a CI job reads, and the
/// knee search against a server whose capacity is known.
extension LoadSensitive {
    @Suite("loadtest: objectives and the knee", .serialized)
    struct LoadTestObjectiveTests {
        @Test func objectivesSetTheExitStatus() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            let url = "http://127.0.0.1:\(server.port)/health"
            let met = try LoadTestCLITests.loadtest(["run", url, "-c", "2", "-d", "0.5s", "--slo", "p99<10s", "--slo", "errors<1%", "--slo", "rps>1"])
            #expect(met.status == 0, "\(met.stdout)\(met.stderr)")
            #expect(met.stdout.contains("objectives: all met") && met.stdout.contains("met    p99<10s  (measured "))

            let missed = try LoadTestCLITests.loadtest(["run", url, "-c", "2", "-d", "0.5s", "--json", "--slo", "p99<10s", "--slo", "rps>100000000"])
            #expect(missed.status == 1, "\(missed.stderr)")
            let slo = try #require(try LoadTestCLITests.json(missed.stdout)["slo"] as? [[String: Any]])
            #expect(slo.compactMap { $0["met"] as? Bool } == [true, false])
            #expect(slo.compactMap { $0["objective"] as? String } == ["p99<10s", "rps>100000000"])
            #expect((slo[1]["measured"] as? Double ?? 0) > 1 && slo[1]["unit"] as? String == "req/s")

            let malformed = try LoadTestCLITests.loadtest(["run", url, "-d", "0.5s", "--slo", "p99<fast"])
            #expect(malformed.status == 2 && malformed.stderr.contains("--slo: 'p99<fast': a latency is a number with its unit"), "\(malformed.stderr)")
            let unknown = try LoadTestCLITests.loadtest(["run", url, "-d", "0.5s", "--slo", "/other:p99<1s"])
            #expect(unknown.status == 2 && unknown.stderr.contains("no endpoint is '/other'"), "\(unknown.stderr)")

            // A scenario's own objectives, an endpoint's among them.
            let scenario = try temporaryConfig("""
                target: http://127.0.0.1:\(server.port)
                duration: 0.5s
                connections: 2
                slo: [p99<10s]
                endpoints:
                  - path: /health
                    slo: ["errors<1%"]
                  - path: /nowhere
                    slo: ["errors<1%"]
                """)
            defer { try? FileManager.default.removeItem(at: scenario) }
            let judged = try LoadTestCLITests.loadtest(["scenario", scenario.path])
            #expect(judged.status == 1, "/nowhere answers 404s: \(judged.stdout)")
            #expect(judged.stdout.contains("met    /health:errors<1%") && judged.stdout.contains("MISSED /nowhere:errors<1%"), "\(judged.stdout)")
        }

        /// Four handler threads each waiting 20 ms (the lock let go) serve at most 200 requests
        /// a second; the closed model measures what they do serve in this test, and the knee
        /// must find it within 15%.
        @Test func theKneeFindsAKnownCapacity() throws {
            let server = try ServerProcess(["--config", "config/gil.yaml", "--threads", "4"])
            defer { server.stop() }
            let url = "http://127.0.0.1:\(server.port)/io?ms=20"
            let closed = try LoadTestCLITests.loadtest(["run", url, "-c", "16", "-d", "2s", "--json"])
            #expect(closed.status == 0, "\(closed.stderr)")
            let capacity = try #require(try LoadTestCLITests.json(closed.stdout)["rps"] as? Double)
            let knee = try LoadTestCLITests.loadtest(["knee", url, "--slo", "p99<100ms", "--start", "50", "--step", "2s", "--warmup", "500ms",
                                                      "-c", "32", "--json"])
            #expect(knee.status == 0, "\(knee.stdout)\(knee.stderr)")
            let outcome = try LoadTestCLITests.json(knee.stdout)
            let found = try #require(outcome["max_rate"] as? Double, "\(knee.stdout)")
            #expect(abs(found - capacity) / capacity <= 0.15, "knee \(found) against a capacity of \(capacity): \(knee.stdout)")
            let steps = try #require(outcome["steps"] as? [[String: Any]])
            #expect(steps.compactMap { $0["rate"] as? Double }.prefix(3) == [50, 100, 200])
            #expect(steps.contains { $0["met"] as? Bool == false }, "a step beyond the capacity misses")

            let none = try LoadTestCLITests.loadtest(["knee", url, "--slo", "p99<1ms", "--start", "2", "--step", "1s", "--warmup", "0"])
            #expect(none.status == 1 && none.stdout.contains("no rate tried met the objectives"), "\(none.stdout)")
            let noObjective = try LoadTestCLITests.loadtest(["knee", url])
            #expect(noObjective.status == 2 && noObjective.stderr.contains("--slo"), "\(noObjective.stderr)")
        }
    }
}
