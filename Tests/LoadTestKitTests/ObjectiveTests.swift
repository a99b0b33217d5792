import Testing
@testable import LoadTestKit

@Suite("service-level objectives")
struct ObjectiveTests {
    @Test func objectivesParseWithTheirUnits() throws {
        let p99 = try Objective(parsing: "p99<50ms")
        #expect(p99.metric == .percentile(99) && p99.comparison == .below && p99.threshold == 50 && p99.endpoint == nil)
        #expect(try Objective(parsing: "p99.9 <= 1.5s").threshold == 1500)
        #expect(try Objective(parsing: "p50<250us").threshold == 0.25)
        #expect(try Objective(parsing: "max<1s").metric == .max)
        #expect(try Objective(parsing: "mean<20ms").metric == .mean)
        let share = try Objective(parsing: "errors<1%")
        #expect(share.metric == .errorShare && share.threshold == 0.01)
        #expect(try Objective(parsing: "errors<10").metric == .errorCount)
        let rps = try Objective(parsing: "rps>=1000")
        #expect(rps.metric == .rps && rps.comparison == .atLeast && rps.threshold == 1000)
        let scoped = try Objective(parsing: "http://127.0.0.1:8080/cache/{key}:p99<5ms")
        #expect(scoped.endpoint == "http://127.0.0.1:8080/cache/{key}" && scoped.threshold == 5)
        #expect(scoped.description == "http://127.0.0.1:8080/cache/{key}:p99<5ms")
    }

    @Test(arguments: ["", "p99", "p99<", "p99<50", "p99<fast", "p0<5ms", "p101<5ms", "latency<5ms", "errors<1.5", "errors<150%",
                      "rps>lots", ":p99<5ms", "p99=50ms"])
    func aMalformedObjectiveSaysWhatWasExpected(_ text: String) {
        #expect {
            try Objective(parsing: text)
        } throws: { error in
            // It quotes what was given and says what would do instead.
            "\(error)".contains("'\(text)'") && "\(error)".contains("such as")
        }
    }

    /// 1 … 1000 µs, one each, of which 10 are 500s, and 5 connection errors beside them.
    static func knownRun() -> LoadRun.Summary {
        var results = Results()
        for value in 1...1000 {
            results.record(status: value <= 10 ? 500 : 200, latency: UInt64(value), uncorrected: nil, serverTiming: [])
        }
        for _ in 0..<5 { results.count(error: "connect") }
        return LoadRun.Summary(endpoints: [results], duration: 2)
    }

    @Test(arguments: [
        ("p50<0.6ms", true), ("p50<0.4ms", false), ("p99<=990us", true), ("p99<980us", false),
        ("max<=1ms", true), ("max<1ms", false), ("mean>0.4ms", true), ("mean>0.6ms", false),
        ("errors<2%", true), ("errors<1%", false), ("errors<=15", true), ("errors<15", false),
        ("rps>=500", true), ("rps>500", false), ("rps<600", true),
    ])
    func eachOperatorIsMetOrMissed(_ text: String, _ met: Bool) throws {
        let endpoint = Endpoint(target: try Target(url: "http://127.0.0.1:1/x"), name: "/x")
        let outcome = Objective.judge([try Objective(parsing: text)], endpoints: [endpoint], summary: Self.knownRun())
        #expect(outcome.map(\.met) == [met], "\(outcome)")
    }

    @Test func anEndpointsObjectiveJudgesThatEndpointAlone() throws {
        let fast = Endpoint(target: try Target(url: "http://127.0.0.1:1/fast"), name: "/fast")
        let slow = Endpoint(target: try Target(url: "http://127.0.0.1:1/slow"), name: "/slow")
        var quick = Results(), late = Results()
        for _ in 0..<100 { quick.recordLatency(1000) }
        for _ in 0..<100 { late.recordLatency(100_000) }
        let summary = LoadRun.Summary(endpoints: [quick, late], duration: 1)
        let objectives = try ["/fast:p99<5ms", "/slow:p99<5ms", "p90<5ms"].map { try Objective(parsing: $0) }
        #expect(Objective.judge(objectives, endpoints: [fast, slow], summary: summary).map(\.met) == [true, false, false])
        #expect(Objective.problem(objectives, endpoints: [fast, slow]) == nil)
        let unknown = Objective.problem([try Objective(parsing: "/other:p99<5ms")], endpoints: [fast, slow])
        #expect(unknown?.contains("'/fast', '/slow'") == true, "\(unknown ?? "")")
    }

    @Test func nothingAnsweredMissesALatencyObjective() throws {
        var failed = Results()
        failed.count(error: "connect")
        let endpoint = Endpoint(target: try Target(url: "http://127.0.0.1:1/x"), name: "/x")
        let outcome = Objective.judge([try Objective(parsing: "p99<1s")], endpoints: [endpoint],
                                      summary: LoadRun.Summary(endpoints: [failed], duration: 1))
        #expect(outcome[0].met == false && outcome[0].measured == nil)
    }

    @Test func aScenarioCarriesItsObjectives() throws {
        let scenario = try Scenario.parse("""
            target: http://127.0.0.1:8080
            slo: [p99<50ms, "errors<1%"]
            endpoints:
              - path: /health
                slo: [p99<5ms]
              - path: /cpu?work=10
            """, path: "s.yaml")
        #expect(scenario.objectives.map(\.description) == ["p99<50ms", "errors<1%", "/health:p99<5ms"])
        #expect(scenario.objectives[2].endpoint == "/health")
        // Two endpoints on one path: the objective under the second judges the second.
        let twins = try Scenario.parse("""
            target: http://127.0.0.1:8080
            endpoints:
              - path: /x
              - path: /x
                method: PUT
                slo: [p99<5ms]
            """, path: "s.yaml")
        var get = Results(), put = Results()
        for _ in 0..<10 { get.recordLatency(100_000); put.recordLatency(1000) }
        let judged = Objective.judge(twins.objectives, endpoints: twins.phases[0].endpoints,
                                     summary: LoadRun.Summary(endpoints: [get, put], duration: 1))
        #expect(judged.map(\.met) == [true])
        #expect {
            try Scenario.parse("target: http://127.0.0.1:8080\nslo: [p99<fast]\nendpoints:\n  - path: /health\n", path: "s.yaml")
        } throws: { "\($0)".hasPrefix("s.yaml:2:") && "\($0)".contains("a latency is a number with its unit") }
        #expect {
            try Scenario.parse("target: http://127.0.0.1:8080\nendpoints:\n  - path: /health\n    slo: [/cpu:p99<5ms]\n", path: "s.yaml")
        } throws: { "\($0)".contains("leave out its ENDPOINT:") }
    }
}
