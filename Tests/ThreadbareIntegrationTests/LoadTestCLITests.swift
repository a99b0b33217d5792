import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

/// The loadtest executable against a real threadbare.
extension LoadSensitive {
    @Suite("loadtest against threadbare", .serialized)
    struct LoadTestCLITests {
        static func loadtest(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            try runThreadbare(arguments, program: "loadtest")
        }

        static func json(_ text: String) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        }

        @Test func measuresThroughputLatencyAndTheServersOwnTimings() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            let hgrm = FileManager.default.temporaryDirectory.appendingPathComponent("loadtest-\(UUID().uuidString).hgrm")
            defer { try? FileManager.default.removeItem(at: hgrm) }
            let run = try Self.loadtest(["run", "http://127.0.0.1:\(server.port)/cpu?work=10", "-c", "4", "-t", "2", "-d", "1s", "--json",
                                         "--hgrm", hgrm.path])
            #expect(run.status == 0, "\(run.stderr)")
            let distribution = try String(contentsOf: hgrm, encoding: .utf8)
            #expect(distribution.contains("Percentile") && distribution.contains("#[Mean"), "\(distribution.prefix(300))")
            let report = try Self.json(run.stdout)
            let requests = try #require(report["requests"] as? Int)
            #expect(requests > 50)
            #expect((report["errors"] as? [String: Int])?["total"] == 0)
            let latency = try #require(report["latency_ms"] as? [String: Any])
            #expect((latency["p50"] as? Double ?? -1) <= (latency["max"] as? Double ?? 0))
            let timing = try #require(report["server_timing"] as? [String: Any])
            #expect(Set(timing.keys) == ["queue", "lock", "app", "loop"])
            // The server counted the same requests (plus those in flight at the end, which the
            // client reports separately, and the /stats request itself).
            let served = try #require((try server.json("/stats")["requests"] as? [String: [String: Int]])?["cpu"]?["200"])
            #expect(served >= requests)
            #expect(served <= requests + 4 + (report["in_flight_at_end"] as? Int ?? 0) + 4)
        }

        /// The open model against a server that stops for 500 ms (SIGSTOP) in a 3 s run at
        /// 200 requests/s: 100 requests are due during the stall and wait 0–500 ms, a sixth of
        /// all, so the corrected p90 is about 200 ms. Measured from the actual send, the same
        /// run looks healthy.
        @Test func theOpenModelShowsAStallThatTheUncorrectedViewHides() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            Thread.detachNewThread {
                Thread.sleep(forTimeInterval: 1)
                kill(server.pid, SIGSTOP)
                Thread.sleep(forTimeInterval: 0.5)
                kill(server.pid, SIGCONT)
            }
            let run = try Self.loadtest(["run", "http://127.0.0.1:\(server.port)/health", "--rate", "200", "-c", "4", "-d", "3s", "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let report = try Self.json(run.stdout)
            #expect(report["model"] as? String == "open")
            let corrected = try #require(report["latency_ms"] as? [String: Double])
            let uncorrected = try #require(report["latency_uncorrected_ms"] as? [String: Double])
            #expect((100...350).contains(corrected["p90"] ?? 0), "corrected \(corrected)")
            #expect((corrected["max"] ?? 0) >= 400, "corrected \(corrected)")
            #expect((uncorrected["p90"] ?? .infinity) < 50, "uncorrected \(uncorrected)")
            #expect((report["late_sends"] as? Int ?? 0) >= 50, "requests due during the stall waited for a connection")
            #expect(abs((report["rps"] as? Double ?? 0) - 200) < 20, "the schedule holds: \(report["rps"] ?? "")")
        }

        @Test func phasesEachHaveTheirOwnResults() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            let byConnections = try Self.loadtest(["run", "http://127.0.0.1:\(server.port)/health", "-c", "1,3", "-d", "0.5s", "--json"])
            #expect(byConnections.status == 0, "\(byConnections.stderr)")
            let phases = try #require(try Self.json(byConnections.stdout)["phases"] as? [[String: Any]])
            #expect(phases.compactMap { $0["connections"] as? Int } == [1, 3])
            #expect(phases.allSatisfy { ($0["requests"] as? Int ?? 0) > 0 })
            let byRate = try Self.loadtest(["run", "http://127.0.0.1:\(server.port)/health", "--rate", "50,150", "-c", "2", "-d", "1s", "--json"])
            #expect(byRate.status == 0, "\(byRate.stderr)")
            let rates = try #require(try Self.json(byRate.stdout)["phases"] as? [[String: Any]])
            #expect(rates.compactMap { $0["rate"] as? Double } == [50, 150])
            // The schedule, phase by phase (the last request or two may still be in flight at the end).
            let answered = rates.compactMap { $0["requests"] as? Int }
            #expect(answered.count == 2 && (46...50).contains(answered[0]) && (144...150).contains(answered[1]), "\(answered)")
        }

        @Test func non2xxAnswersAreErrorsByStatus() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            let run = try Self.loadtest(["run", "http://127.0.0.1:\(server.port)/nowhere", "-c", "2", "-d", "0.5s", "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let report = try Self.json(run.stdout)
            let errors = try #require(report["errors"] as? [String: Int])
            #expect(errors["status_404"] == report["requests"] as? Int)
            #expect((errors["status_404"] ?? 0) > 0)
        }

        /// A shipped scenario pointed at this server: every phase reports every endpoint.
        @Test func aScenarioRunsItsPhasesAndReportsEachEndpoint() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            let scenario = FileManager.default.temporaryDirectory.appendingPathComponent("scenario-\(UUID().uuidString).yaml")
            defer { try? FileManager.default.removeItem(at: scenario) }
            try """
                target: http://127.0.0.1:1
                phases:
                  - connections: 2
                    duration: 500ms
                  - rate: 100
                    connections: 2
                    duration: 500ms
                endpoints:
                  - path: /cache/k
                    method: PUT
                    body: v
                  - path: /cpu?work=10
                    weight: 3
                """.write(to: scenario, atomically: true, encoding: .utf8)
            let run = try Self.loadtest(["scenario", scenario.path, "--target", "http://127.0.0.1:\(server.port)", "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let phases = try #require(try Self.json(run.stdout)["phases"] as? [[String: Any]])
            #expect(phases.map { $0["model"] as? String } == ["closed", "open"])
            for phase in phases {
                let endpoints = try #require(phase["endpoints"] as? [[String: Any]])
                #expect(endpoints.map { $0["method"] as? String } == ["PUT", "GET"])
                #expect(endpoints.allSatisfy { ($0["requests"] as? Int ?? 0) > 0 })
                #expect(endpoints.allSatisfy { ($0["server_timing"] as? [String: Any])?["app"] != nil })
                #expect(endpoints.compactMap { $0["requests"] as? Int }.reduce(0, +) == phase["requests"] as? Int)
            }
            let text = try Self.loadtest(["scenario", scenario.path, "--target", "http://127.0.0.1:\(server.port)"])
            #expect(text.stdout.contains("by endpoint") && text.stdout.contains("PUT /cache/k"), "\(text.stdout)")
            #expect(!text.stdout.contains("\u{1B}["), "no progress line when stdout is not a terminal")
        }

        /// On a terminal (script(1) gives it one) a progress line is rewritten in place; --quiet
        /// turns it off.
        @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script")))
        func aTerminalGetsALiveProgressLine() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            let loadtest = ServerProcess.binary.deletingLastPathComponent().appendingPathComponent("loadtest").path
            let command = "\(loadtest) run http://127.0.0.1:\(server.port)/health -c 2 -d 2.5s"
            func onATerminal(_ command: String) throws -> String {
                let run = try runToCompletion(URL(fileURLWithPath: "/usr/bin/script"), ["-qec", command, "/dev/null"], deadline: 60)
                #expect(run.status == 0, "\(run.stdout)")
                return run.stdout
            }
            let shown = try onATerminal(command)
            #expect(shown.contains("\r\u{1B}[K") && shown.contains("req/s") && shown.contains("p99"), "\(shown)")
            #expect(shown.contains("requests in 2.50s"), "the summary follows: \(shown)")
            let quiet = try onATerminal(command + " --quiet")
            #expect(!quiet.contains("\u{1B}[K") && quiet.contains("requests in 2.50s"), "\(quiet)")
        }

        /// Two modes, two scenarios, tiny timings: the tables, the verdicts, the raw JSON; and
        /// a mode that cannot start is reported, with exit status 1, while the others still run.
        @Test func compareRunsTheModesSideBySide() throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("compare-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let suite = directory.appendingPathComponent("suite.yaml")
            try """
                quick: {duration: 300ms, warmup: 100ms}
                scenarios:
                  - {name: cpu, title: CPU scaling, question: does it scale?, kind: scaling, path: "/cpu?work=200", connections: [1, 4]}
                  - {name: memory, title: Memory, kind: memory, path: /health, connections: 2}
                  - {name: cache, title: Cache, kind: cache, path: "/cache/k{key}?compute=50", keys: {count: 50, zipf: 1}, connections: 2}
                  - {name: mixed, title: Capacity, kind: capacity, sla_p99_ms: 200, connections: 8, start_rate: 100, max_rate: 400, endpoints: [{path: /health}]}
                """.write(to: suite, atomically: true, encoding: .utf8)
            let configs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("config")
            let out = directory.appendingPathComponent("report")
            let run = try Self.loadtest(["compare", "--modes", "nogil,gil", "--suite", suite.path, "--out", out.path, "--config-dir", configs.path])
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stdout.contains("## CPU scaling — does it scale?") && run.stdout.contains("## Memory"), "\(run.stdout)")
            #expect(run.stdout.contains("\nnogil ") && run.stdout.contains("\ngil "), "\(run.stdout)")
            #expect(run.stdout.contains(" wins: ") || run.stdout.contains("Every mode is within 10%"), "a verdict: \(run.stdout)")
            let json = try Self.json(try String(contentsOf: out.appendingPathComponent("compare.json"), encoding: .utf8))
            let modes = try #require(json["modes"] as? [[String: Any]])
            #expect(modes.map { $0["mode"] as? String } == ["nogil", "gil"])
            #expect(modes.allSatisfy { ($0["outcomes"] as? [Any])?.count == 4 })
            // The capacity search doubles from 100 to the 400 ceiling, every step within the SLA.
            for mode in modes {
                let capacity = try #require((mode["outcomes"] as? [[String: Any]])?.last)
                let rates = (capacity["reports"] as? [[String: Any]])?.compactMap { $0["rate"] as? Double }
                #expect(rates == [100, 200, 400], "\(mode["mode"] ?? ""): \(rates ?? [])")
                #expect(capacity["note"] as? String == "met at the search's ceiling, 400 req/s")
                let intervals = (capacity["reports"] as? [[String: Any]])?.first?["intervals"] as? [Any]
                #expect(intervals?.count == 10, "ten intervals a step, for the chart over time")
            }
            #expect(run.stdout.contains("% of reads hitting"), "the cache verdict: \(run.stdout)")
            let page = try Data(contentsOf: out.appendingPathComponent("index.html"))
            let parser = XMLParser(data: page)
            #expect(parser.parse(), "index.html is well-formed XML: \(parser.parserError.map { "\($0)" } ?? "")")
            #expect(String(decoding: page, as: UTF8.self).components(separatedBy: "<svg ").count - 1 >= 5, "the charts")
            #expect(String(decoding: page, as: UTF8.self).contains("seconds into the search"), "capacity's latency over time")
            let distributions = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("hgrm").path)
            #expect(Set(distributions).isSuperset(of: ["nogil-cpu-1-c1.hgrm", "nogil-cpu-2-c4.hgrm", "gil-memory-1-c2.hgrm"]), "\(distributions)")

            let missing = directory.appendingPathComponent("configs")
            try FileManager.default.createDirectory(at: missing, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: configs.appendingPathComponent("nogil.yaml"), to: missing.appendingPathComponent("nogil.yaml"))
            let partial = try Self.loadtest(["compare", "--modes", "gil,nogil", "--suite", suite.path, "--scenarios", "memory",
                                             "--out", out.path, "--config-dir", missing.path])
            #expect(partial.status == 1)
            #expect(partial.stdout.contains("gil was not measured: no config file at"), "\(partial.stdout)")
            #expect(partial.stdout.contains("\nnogil "), "the other mode still ran: \(partial.stdout)")
            let badMode = try Self.loadtest(["compare", "--modes", "gil,turbo"])
            #expect(badMode.status == 2 && badMode.stderr.contains("unknown mode 'turbo'"), "\(badMode.stderr)")
        }

        /// An external target started from a command, Python's own wsgiref serving the
        /// reference app: it runs the suite right after its counterpart mode, its row, memory
        /// and stop are reported, and a target that cannot start is reported with its reason
        /// while the rest run.
        @Test func compareRunsAnExternalTargetBesideItsCounterpart() throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("compare-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let suite = directory.appendingPathComponent("suite.yaml")
            try """
                quick: {duration: 300ms, warmup: 100ms}
                server: {cache.preload: 20, cache.preload_bytes: 100}
                scenarios:
                  - {name: cpu, title: CPU scaling, kind: scaling, path: "/cpu?work=200", connections: [1, 2]}
                  - {name: cache, title: Cache, kind: cache, path: "/cache/k{key}?compute=50", keys: {count: 50, zipf: 1}, connections: 2}
                  - {name: native, title: Native, kind: native, path: "/cpu?work=200", native: [0, 0.5], connections: 2}
                  - {name: hot, title: Hot, kind: hot, path: "/cache/preload-3?touches=10", connections: [1, 2]}
                  - {name: memory, title: Memory, kind: memory, path: "/cache/preload-{key}", keys: {count: 20}, connections: 2}
                """.write(to: suite, atomically: true, encoding: .utf8)
            let targets = directory.appendingPathComponent("targets.yaml")
            try """
                targets:
                  - name: broken
                    command: python3 -c "import sys; sys.exit('address already in use')"
                    start_timeout: 10s
                  - name: wsgiref
                    counterpart: gil
                    command: python3 \(repository.path)/loadtest/python/wsgi.py --port {port}
                    ready_path: /health
                """.write(to: targets, atomically: true, encoding: .utf8)
            let out = directory.appendingPathComponent("report")
            let run = try Self.loadtest(["compare", "--modes", "gil", "--targets", targets.path, "--suite", suite.path, "--out", out.path,
                                         "--config-dir", repository.appendingPathComponent("config").path])
            #expect(run.status == 1, "broken did not start: \(run.stdout)\n\(run.stderr)")
            #expect(run.stderr.contains("passed to the targets as CPU_UNIT_NS"), "\(run.stderr)")
            #expect(run.stdout.contains("\ngil ") && run.stdout.contains("\nwsgiref "), "both rows: \(run.stdout)")
            #expect(run.stdout.contains("## Against their counterparts"), "\(run.stdout)")
            #expect(run.stdout.contains("wsgiref stopped on SIGTERM in "), "\(run.stdout)")
            #expect(run.stdout.contains("broken was not measured: broken did not start: its command exited with status 1: address already in use"),
                    "\(run.stdout)")
            let json = try Self.json(try String(contentsOf: out.appendingPathComponent("compare.json"), encoding: .utf8))
            let modes = try #require(json["modes"] as? [[String: Any]])
            #expect(modes.map { $0["mode"] as? String } == ["gil", "wsgiref", "broken"], "each target after its counterpart, the rest at the end")
            let reference = try #require(modes.first { $0["mode"] as? String == "wsgiref" })
            // The suite's start-up data reached both: the target as CACHE_PRELOAD, the mode as --set.
            #expect(modes.prefix(2).allSatisfy { ($0["outcomes"] as? [Any])?.count == 5 },
                    "\(modes.prefix(2).map { $0["scenario_failures"] ?? "" })")
            let external = try #require(reference["external"] as? [String: Any])
            #expect(external["counterpart"] as? String == "gil")
            #expect((external["stop"] as? String)?.hasPrefix("stopped on SIGTERM") == true, "\(external)")
            let idle = try #require(reference["idle_memory"] as? [String: Any])
            #expect(idle["processes"] as? Int == 1, "exec: python itself, no shell: \(idle)")
            #expect((idle["pss_bytes"] as? Int ?? 0) > 1_000_000, "a Python process's memory: \(idle)")
            // The reference app's /cache answered: a hit ratio like Threadbare's, not a blank.
            let cache = try #require((reference["outcomes"] as? [[String: Any]])?.first { $0["scenario"] as? String == "cache" })
            let hitRatio = (cache["figures"] as? [[String: Any]])?.first { ($0["measure"] as? [String: Any])?["hitRatio"] != nil }?["value"] as? Double
            #expect((hitRatio ?? 0) > 10, "\(cache)")
        }

        /// A mode whose configuration puts the cache in memcached: compare starts one for the
        /// mode's run, measures through it, counts it in the mode's memory, and stops it.
        @Test(.enabled(if: MemcachedServer.isInstalled))
        func compareStartsTheMemcachedAModeChooses() throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("compare-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let port = try MemcachedServer.freePort()
            try "mode: prefork\nworkers: 2\ncache:\n  backend: memcached\n  memcached: 127.0.0.1:\(port)\n"
                .write(to: directory.appendingPathComponent("prefork.yaml"), atomically: true, encoding: .utf8)
            let suite = directory.appendingPathComponent("suite.yaml")
            try """
                quick: {duration: 300ms, warmup: 100ms}
                scenarios:
                  - {name: cache, title: Cache, kind: cache, path: "/cache/k{key}?compute=50", keys: {count: 50, zipf: 1}, connections: 2}
                  - {name: memory, title: Memory, kind: memory, path: /health, connections: 2}
                """.write(to: suite, atomically: true, encoding: .utf8)
            let out = directory.appendingPathComponent("report")
            let run = try Self.loadtest(["compare", "--modes", "prefork", "--suite", suite.path, "--out", out.path, "--config-dir", directory.path])
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            let json = try Self.json(try String(contentsOf: out.appendingPathComponent("compare.json"), encoding: .utf8))
            let mode = try #require((json["modes"] as? [[String: Any]])?.first)
            #expect((mode["outcomes"] as? [Any])?.count == 2, "\(run.stdout)")
            #expect((mode["idle_memory"] as? [String: Any])?["processes"] as? Int == 4, "master, two workers and memcached: \(run.stdout)")
            #expect(!MemcachedServer.answersVersion(port: port), "compare stopped the memcached it started")
        }

        @Test func badInputExits2WithAReason() throws {
            let scenario = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).yaml")
            defer { try? FileManager.default.removeItem(at: scenario) }
            try "target: http://127.0.0.1:1\nendpoints:\n  - path: /\n    weight: heavy\n".write(to: scenario, atomically: true, encoding: .utf8)
            let badScenario = try Self.loadtest(["scenario", scenario.path])
            #expect(badScenario.status == 2)
            #expect(badScenario.stderr.contains("\(scenario.path):4: weight: expected a whole number"), "\(badScenario.stderr)")
            let cases: [(arguments: [String], reason: String)] = [
                (["run", "http://127.0.0.1:1/", "--url", "http://127.0.0.2:1/"], "same scheme, host and port"),
                (["run", "http://127.0.0.1:1/", "-d", "1s"], "cannot connect to 127.0.0.1:1"),
                (["run", "ftp://example.com/"], "only http:// and https:// URLs"),
                (["run", "http://127.0.0.1:1/", "--rate", "0"], "--rate must be"),
                (["run", "http://127.0.0.1:1/", "-c", "0"], "-c must be at least 1"),
            ]
            for (arguments, reason) in cases {
                let refused = try Self.loadtest(arguments)
                #expect(refused.status == 2, "\(arguments)")
                #expect(refused.stderr.contains(reason), "\(arguments): \(refused.stderr)")
            }
        }
    }
}
