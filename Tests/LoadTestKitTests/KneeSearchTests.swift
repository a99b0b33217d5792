import Testing
@testable import LoadTestKit

@Suite("the knee search")
struct KneeSearchTests {
    /// A server that answers in 2 ms up to `capacity` requests a second and falls behind beyond.
    static func measure(capacity: Double) -> (LoadPlan) -> LoadRun.Summary {
        { plan in
            let rate = plan.rate!
            var results = Results()
            let served = Int(min(rate, capacity) * plan.duration)
            for _ in 0..<served { results.record(status: 200, latency: rate <= capacity ? 2000 : 900_000, uncorrected: nil, serverTiming: []) }
            return LoadRun.Summary(endpoints: [results], duration: plan.duration)
        }
    }

    static func search(start: Double = 100, highest: Double = 1_000_000, objective: String = "p99<50ms") throws -> KneeSearch {
        let endpoint = Endpoint(target: try Target(url: "http://127.0.0.1:1/x"), name: "/x")
        var search = KneeSearch(plan: try LoadPlan(endpoints: [endpoint], connections: 8, threads: 1, duration: 2),
                                objectives: [try Objective(parsing: objective)], startRate: start, highestRate: highest)
        search.settles = false
        return search
    }

    @Test func itDoublesThenBisectsToWithinFivePercent() throws {
        let outcome = try Self.search().run(measure: Self.measure(capacity: 1234))
        let found = try #require(outcome.maxRate)
        #expect(found <= 1234 && found >= 1234 / 1.05, "\(found)")
        #expect(Array(outcome.steps.map(\.rate).prefix(6)) == [100, 200, 400, 800, 1600, 1200])
        #expect(outcome.steps.allSatisfy { $0.met == ($0.rate <= 1234) })
        #expect(outcome.steps.count <= 10)
    }

    @Test func aStepThatFallsBehindMissesWhateverItsLatency() throws {
        let endpoint = Endpoint(target: try Target(url: "http://127.0.0.1:1/x"), name: "/x")
        // Fast answers, but only 500 a second of whatever is asked.
        var search = KneeSearch(plan: try LoadPlan(endpoints: [endpoint], connections: 8, threads: 1, duration: 2),
                                objectives: [try Objective(parsing: "p99<50ms")], startRate: 100)
        search.settles = false
        let outcome = try search.run(measure: { plan in
            var results = Results()
            for _ in 0..<Int(min(plan.rate!, 500) * plan.duration) { results.record(status: 200, latency: 1000, uncorrected: nil, serverTiming: []) }
            return LoadRun.Summary(endpoints: [results], duration: plan.duration)
        })
        let found = try #require(outcome.maxRate)
        #expect(found <= 500 / 0.95 && found >= 500 / 1.05, "\(found)")
        #expect(outcome.steps.contains { !$0.met && $0.slo.allSatisfy(\.met) }, "a miss by falling behind alone")
    }

    /// Answers that take 400 ms, from as many connections as it takes: a 2 s step ends with a
    /// fifth of its requests still on their way, which is not falling behind.
    @Test func aSlowServerThatKeepsUpIsNotBehind() throws {
        let outcome = try Self.search(start: 100, highest: 800, objective: "p99<1s").run(measure: { plan in
            let rate = plan.rate!
            var results = Results()
            let due = Int(rate * plan.duration), onTheirWay = Int(rate * 0.4)
            for _ in 0..<(due - onTheirWay) { results.record(status: 200, latency: 400_000, uncorrected: nil, serverTiming: []) }
            results.inFlightAtEnd = onTheirWay
            return LoadRun.Summary(endpoints: [results], duration: plan.duration)
        })
        let steps = outcome.steps.map { $0.text }
        #expect(outcome.steps.allSatisfy { $0.met }, "\(steps)")
        #expect(outcome.maxRate == 800 && outcome.atCeiling)
    }

    @Test func theStartTooHighHalvesAndTheCeilingIsSaid() throws {
        let low = try Self.search(start: 1000).run(measure: Self.measure(capacity: 150))
        #expect(Array(low.steps.map(\.rate).prefix(4)) == [1000, 500, 250, 125])
        #expect(try #require(low.maxRate) >= 150 / 1.05)
        let capped = try Self.search(start: 100, highest: 300).run(measure: Self.measure(capacity: 10_000))
        #expect(capped.maxRate == 300 && capped.atCeiling)
        let never = try Self.search(start: 4).run(measure: Self.measure(capacity: 0.5))
        #expect(never.maxRate == nil && never.steps.map(\.rate) == [4, 2, 1])
    }
}
