import Foundation
import Testing

/// loadtest's run over time against a real threadbare: the interval log as HdrHistogram's own
/// Python reader decodes it, and `loadtest merge` of two runs made at the same moment.
extension LoadSensitive {
    @Suite("loadtest: the run over time and merging", .serialized)
    struct LoadTestOverTimeTests {
        static func temporaryPath(_ suffix: String) -> String {
            FileManager.default.temporaryDirectory.appendingPathComponent("loadtest-\(UUID().uuidString)\(suffix)").path
        }

        @Test func hdrHistogramsOwnReaderDecodesTheIntervalLog() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            let log = Self.temporaryPath(".hlog")
            defer { try? FileManager.default.removeItem(atPath: log) }
            let base = "http://127.0.0.1:\(server.port)"
            let run = try LoadTestCLITests.loadtest(["run", base + "/health", "--url", base + "/io?ms=2=3", "--rate", "200", "-c", "8",
                                                      "-d", "2s", "--interval", "500ms", "--interval-log", log, "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let report = try LoadTestCLITests.json(run.stdout)
            let requests = try #require(report["requests"] as? Int)
            let intervals = try #require(report["intervals"] as? [[String: Any]])
            #expect(intervals.count == 4)
            #expect(intervals.reduce(0) { $0 + ($1["requests"] as? Int ?? 0) } == requests)
            let endpoints = try #require(report["endpoints"] as? [[String: Any]])

            let python = try pythonEnvironment("hdrhistogram", installing: "hdrhistogram==0.10.8", module: "hdrh")
            let script = repositoryRoot.appendingPathComponent("Tests/reference/hlog_reader.py")
            let read = try runToCompletion(python, [script.path, log])
            #expect(read.status == 0, "\(read.stderr)")
            let tags = try #require(try JSONSerialization.jsonObject(with: Data(read.stdout.utf8)) as? [String: [String: Int]])
            #expect(Set(tags.keys) == ["", "uncorrected", "/health", "/health|uncorrected", "/io?ms=2", "/io?ms=2|uncorrected"], "\(tags.keys)")
            #expect(tags[""]?["count"] == requests && tags["uncorrected"]?["count"] == requests)
            #expect(tags[""]?["intervals"] == 4)
            #expect(tags["/health"]?["count"] == endpoints[0]["requests"] as? Int)
            #expect(tags["/io?ms=2"]?["count"] == endpoints[1]["requests"] as? Int)
            // The same distribution: the log's percentiles are the report's, to the bucket.
            let latency = try #require(report["latency_ms"] as? [String: Double])
            let logged = Double(tags[""]?["p99"] ?? 0) / 1000
            #expect(abs(logged - (latency["p99"] ?? 0)) <= max(0.002, (latency["p99"] ?? 0) * 0.002), "log p99 \(logged), report \(latency)")

            // And HdrHistogram's Java HistogramLogProcessor (Debian's libhdrhistogram-java), for
            // the whole run and for one endpoint's tag.
            let java = try #require(["/usr/bin/java", "/usr/lib/jvm/default-java/bin/java"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                    "make setup installs a JRE and libhdrhistogram-java")
            for (tag, count) in [(nil, requests), ("/health", endpoints[0]["requests"] as? Int ?? -1)] as [(String?, Int)] {
                let processed = try runToCompletion(URL(fileURLWithPath: java),
                                                    ["-cp", "/usr/share/java/hdrhistogram.jar", "org.HdrHistogram.HistogramLogProcessor",
                                                     "-i", log, "-outputValueUnitRatio", "1000"] + (tag.map { ["-tag", $0] } ?? []))
                #expect(processed.status == 0, "\(processed.stderr)")
                // "#[Max     =       13.983, Total count    =          900]"
                let total = processed.stdout.components(separatedBy: "Total count    =").last?.prefix { $0 != "]" }
                #expect(total.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } == count, "\(tag ?? "total"): \(processed.stdout.suffix(300))")
            }
        }

        /// Two loadtests at one moment against one server, as from two machines: the merge has
        /// every request of both, and judges objectives on the whole.
        @Test func mergeOfTwoSimultaneousRunsIsTheirSum() throws {
            let server = try ServerProcess()
            defer { server.stop() }
            let logs = [Self.temporaryPath(".hlog"), Self.temporaryPath(".hlog")]
            defer { for log in logs { try? FileManager.default.removeItem(atPath: log) } }
            let url = "http://127.0.0.1:\(server.port)/io?ms=1"
            let runs = try concurrently(2) { index in
                try LoadTestCLITests.loadtest(["run", url, "--rate", index == 0 ? "100" : "150", "-c", "4", "-d", "2s",
                                               "--interval-log", logs[index], "--json"])
            }
            for run in runs { #expect(run.status == 0, "\(run.stderr)") }
            let reports = try runs.map { try LoadTestCLITests.json($0.stdout) }
            let counts = reports.map { $0["requests"] as? Int ?? 0 }
            let merge = try LoadTestCLITests.loadtest(["merge", logs[0], logs[1], "--json", "--slo", "p99<10s"])
            #expect(merge.status == 0, "\(merge.stderr)")
            let merged = try LoadTestCLITests.json(merge.stdout)
            #expect(merged["requests"] as? Int == counts[0] + counts[1], "\(counts)")
            #expect(merged["rate"] as? Double == 250 && merged["connections"] as? Int == 8)
            let intervals = try #require(merged["intervals"] as? [[String: Any]])
            #expect(intervals.reduce(0) { $0 + ($1["requests"] as? Int ?? 0) } == counts[0] + counts[1])
            #expect((2...3).contains(intervals.count), "two runs begun a moment apart line up: \(intervals.count)")
            #expect((merged["slo"] as? [[String: Any]])?.first?["met"] as? Bool == true)

            let missed = try LoadTestCLITests.loadtest(["merge", logs[0], logs[1], "--slo", "rps>100000"])
            #expect(missed.status == 1 && missed.stdout.contains("merged from 2 interval logs") && missed.stdout.contains("MISSED rps>100000"))
            let notALog = try LoadTestCLITests.loadtest(["merge", logs[0], "/nonexistent.hlog"])
            #expect(notALog.status == 2 && notALog.stderr.contains("/nonexistent.hlog: cannot read it"), "\(notALog.stderr)")
        }
    }
}
