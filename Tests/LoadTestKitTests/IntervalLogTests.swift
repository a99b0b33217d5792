import Foundation
import Testing
@testable import LoadTestKit

@Suite("the run over time: intervals, the interval log, merging", .serialized)
struct IntervalLogTests {
    static func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("loadtest-\(UUID().uuidString).hlog").path
    }

    @Test func intervalsAddUpToTheRunAndTheLogHoldsThemAll() throws {
        let server = try ScriptedServer { line in line.contains("/fail") ? .status(503) : .status(200) }
        defer { server.stop() }
        var plan = try EngineTests.plan([server.url + "/ok=3", server.url + "/fail"], connections: 4, duration: 2, rate: 200)
        plan.interval = 0.5
        plan.warmup = 0.3
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try IntervalLog.Writer(path: path, plan: plan)
        var handed: [Int] = []
        let summary = try LoadRun.run(plan, interval: { slice, startedAt in
            handed.append(slice.index)
            writer.write(slice, startedAt: startedAt)
        })
        writer.finish(summary)
        let intervals = try #require(summary.intervals)
        #expect(handed == [0, 1, 2, 3], "each interval once, in order")
        #expect(intervals.map(\.startS) == [0, 0.5, 1, 1.5])
        #expect(intervals.reduce(0) { $0 + $1.requests } == summary.results.completed)
        #expect(intervals.reduce(0) { $0 + $1.errors } == summary.results.errorTotal)
        #expect(intervals.allSatisfy { (80...120).contains($0.requests) }, "200/s in half seconds: \(intervals.map(\.requests))")

        let log = try IntervalLog.read(path: path)
        #expect(log.run.model == "open" && log.run.endpoints.map(\.tag) == ["/ok", "/fail"])
        #expect(abs(log.startTime - summary.startedAt) < 0.002)
        #expect(log.intervals.count == 4)
        for (index, endpoint) in summary.endpoints.enumerated() {
            var total = IntervalCounts(openModel: true)
            for interval in log.intervals { total.merge(interval.slice.endpoints[index]) }
            #expect(total.completed == endpoint.completed)
            #expect(total.uncorrected?.totalCount == UInt64(endpoint.completed))
            #expect(total.errors == endpoint.errors)
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasPrefix("#[Histogram log format version 1.3]\n#[StartTime: "))
        #expect(text.contains("\nTag=uncorrected,0.000,0.500,") && text.contains("\nTag=/fail|uncorrected,1.500,0.500,"))
    }

    /// Two machines' logs of one moment: one saw 1 … 500 µs, the other 501 … 1000 µs, so the
    /// merged percentiles are those of 1 … 1000 µs exactly, which averaging either machine's
    /// percentiles would not give.
    @Test func mergingAddsTheHistogramsExactly() throws {
        // A templated endpoint: the merge must know its keys to take it as it ran.
        var endpoint = Endpoint(target: try Target(url: "http://10.0.0.1:8080/x-{key}"), name: "/x-{key}")
        endpoint.keys = KeySpace(count: 100, zipfExponent: 1)
        var plan = try LoadPlan(endpoints: [endpoint], connections: 8, threads: 2, duration: 2)
        plan.rate = 250
        let started = 1_800_000_000.0
        let paths = [Self.temporaryPath(), Self.temporaryPath()]
        defer { for path in paths { try? FileManager.default.removeItem(atPath: path) } }
        for (machine, path) in paths.enumerated() {
            let writer = try IntervalLog.Writer(path: path, plan: plan)
            for index in 0..<2 {
                var counts = IntervalCounts(openModel: true)
                for value in stride(from: machine * 500 + index + 1, through: machine * 500 + 500, by: 2) {
                    counts.latency.record(UInt64(value))
                    counts.uncorrected!.record(UInt64(value))
                    counts.completed += 1
                }
                counts.errors = ["timeout": machine + 1]
                // The second machine's clock is 4 ms behind: its intervals still line up.
                writer.write(IntervalSlice(index: index, endpoints: [counts]), startedAt: started - Double(machine) * 0.004)
            }
            var results = Results()
            results.inFlightAtEnd = 3
            writer.finish(LoadRun.Summary(endpoints: [results], duration: 2))
        }
        let merged = try LogMerge.merge(paths.map { try IntervalLog.read(path: $0) })
        let latency = Report.Percentiles(merged.summary.results.latency)
        #expect(latency.count == 1000)
        #expect(latency.p50 == 0.5 && latency.p90 == 0.9 && latency.p99 == 0.99 && latency.max == 1)
        #expect(merged.summary.results.errors == ["timeout": 6])
        #expect(merged.summary.results.inFlightAtEnd == 6)
        #expect(merged.plan.rate == 500 && merged.plan.connections == 16)
        #expect(merged.plan.endpoints.map(\.keys) == [KeySpace(count: 100, zipfExponent: 1)])
        #expect(merged.summary.intervals?.map(\.requests) == [500, 500], "\(merged.summary.intervals ?? [])")
        #expect(abs(merged.summary.duration - 2.004) < 0.0015)
        let report = Report(plan: merged.plan, summary: merged.summary, objectives: [try Objective(parsing: "p99<1ms"), try Objective(parsing: "errors<0.5%")])
        #expect(report.slo?.map(\.met) == [true, false])
    }

    @Test func aLogThatIsNotLoadtestsIsRefusedWithTheLine() throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "#[StartTime: 1.000 (seconds since epoch)]\n0.000,1.000,1.000,HISTFAAAAB\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try IntervalLog.read(path: path) } throws: { "\($0)".contains(":2:") && "\($0)".contains("--interval-log") }
        #expect { try IntervalLog.read(path: path + ".missing") } throws: { "\($0)".contains("cannot read") }
    }
}
