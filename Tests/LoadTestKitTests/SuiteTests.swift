import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import LoadTestKit

@Suite("the compare suite and its verdicts")
struct SuiteTests {
    @Test func theShippedSuiteIsValid() throws {
        let suite = try Suite.load(path: ScenarioTests.shipped.appendingPathComponent("suite.yaml").path)
        #expect(suite.scenarios.map(\.kind.name) == [.scaling, .scaling, .convoy, .capacity, .cache, .native, .hot, .memory] as [ScenarioKind])
        // Every mode carries start-up data, and the memory scenario reads all of it.
        let settings = Dictionary(uniqueKeysWithValues: suite.serverSettings.map { ($0.key, $0.value) })
        let entries = try #require(settings["cache.preload"].flatMap(Int.init))
        #expect(entries * (settings["cache.preload_bytes"].flatMap(Int.init) ?? 0) >= 16 << 20)
        guard case .memory(let reads, _) = suite.scenarios.last!.kind else { Issue.record("the last scenario is memory"); return }
        #expect(reads.keys?.count == entries && reads.name.contains("/cache/preload-{key}"))
        #expect(suite.scenarios.allSatisfy { !$0.question.isEmpty })
        #expect(suite.quick.duration < suite.full.duration)
    }

    @Test(arguments: [
        ("scenarios:\n  - name: a\n    kind: speed\n", "s.yaml:3: kind: expected one of"),
        ("scenarios:\n  - name: a\n    kind: scaling\n    path: /\n", "s.yaml:2: a scaling scenario needs connections"),
        ("scenarios:\n  - name: a\n    kind: scaling\n    path: /\n    connections: []\n", "s.yaml:5: connections: expected a list"),
        ("scenarios:\n  - name: a b\n    kind: memory\n    path: /\n", "s.yaml:2: name: letters, digits"),
        ("scenarios:\n  - name: a\n    kind: memory\n    path: /\n    rate: 5\n", "s.yaml:5: a memory scenario: unknown key 'rate'"),
        ("scenarios:\n  - {name: a, kind: memory, path: /}\n  - {name: a, kind: memory, path: /}\n", "s.yaml:3: a second scenario named 'a'"),
        ("scenarios:\n  - name: c\n    kind: convoy\n    probe: {path: /}\n    background: {path: /}\n", "s.yaml:2: convoy: probe needs path and rate"),
        ("quick: {duration: 0s}\nscenarios:\n  - {name: a, kind: memory, path: /}\n", "s.yaml:1: duration: expected a duration"),
        ("scenarios: []\n", "s.yaml:1: scenarios: expected a list"),
        ("scenarios:\n  - {name: c, kind: cache, path: /cache/x, keys: {count: 10}}\n", "s.yaml:2: /cache/x: keys are given but the path has no {key}"),
        ("scenarios:\n  - {name: c, kind: cache, path: \"/cache/{key}\", keys: {zipf: 1}}\n", "s.yaml:2: keys: needs a count"),
        ("scenarios:\n  - {name: a, kind: scaling, path: /, connections: [1, 8, 4]}\n", "s.yaml:2: connections: must rise, but 4 follows 8"),
        ("scenarios:\n  - name: m\n    kind: capacity\n    sla_p99_ms: 5\n    endpoints: [{path: /}]\n    rates: [400, 100]\n", "s.yaml:6: rates: capacity searches for the highest rate itself now; give start_rate:"),
        ("scenarios:\n  - name: m\n    kind: capacity\n    sla_p99_ms: 5\n    endpoints: [{path: /}]\n    start_rate: 400\n    max_rate: 100\n", "s.yaml:7: max_rate:"),
        ("scenarios:\n  - {name: n, kind: native, path: /cpu, native: [0, 1]}\n", "s.yaml:2: a native scenario needs connections"),
        ("scenarios:\n  - {name: n, kind: native, path: /cpu, native: [0, 1.5], connections: 4}\n", "s.yaml:2: native: expected a number from 0.0 to 1"),
        ("scenarios:\n  - {name: n, kind: native, path: /cpu, native: [0.5, 0.5], connections: 4}\n", "s.yaml:2: native: must rise"),
        ("scenarios:\n  - {name: n, kind: native, path: \"/cpu?native=1\", native: [0], connections: 4}\n", "s.yaml:2: path: native is the scenario's"),
        ("scenarios:\n  - {name: h, kind: hot, path: /cache/x}\n", "s.yaml:2: a hot scenario needs connections"),
        ("server: [a]\nscenarios:\n  - {name: a, kind: memory, path: /}\n", "s.yaml:1: server: expected settings"),
        ("server: {\"a b\": 1}\nscenarios:\n  - {name: a, kind: memory, path: /}\n", "s.yaml:1: server: a setting's name"),
    ])
    func mistakesNameTheFileAndLine(text: String, expected: String) {
        ScenarioTests.expectRefusal(text, startingWith: expected) { text throws(Scenario.Invalid) in _ = try Suite.parse(text, path: "s.yaml") }
    }

    @Test func theShippedTargetsAreValid() throws {
        let targets = try ExternalTarget.load(path: ScenarioTests.shipped.appendingPathComponent("python/targets.yaml").path)
        #expect(targets.map(\.counterpart) == ["gil", "prefork", "async", "prefork-async"])
        #expect(targets.allSatisfy { $0.command.contains("{port}") && $0.readyPath == "/health" })
    }

    @Test(arguments: [
        ("targets:\n  - name: a\n", "t.yaml:2: a target needs command"),
        ("targets:\n  - {name: a b, command: x}\n", "t.yaml:2: name: letters, digits"),
        ("targets:\n  - {name: a, command: x, port: 8}\n", "t.yaml:2: a target: unknown key 'port'"),
        ("targets:\n  - {name: a, command: x}\n  - {name: a, command: y}\n", "t.yaml:3: a second target named 'a'"),
        ("targets:\n  - {name: a, command: x, url: \"ftp://h:{port}\"}\n", "t.yaml:2: url: 'ftp://h:1': only http:// and https://"),
        ("targets:\n  - {name: a, command: x, insecure: maybe}\n", "t.yaml:2: insecure: expected true or false"),
        ("targets:\n  - {name: a, command: x, cacert: /nonexistent.pem}\n", "t.yaml:2: cacert: cannot read /nonexistent.pem"),
        ("targets:\n  - {name: a, command: x, ready_path: health}\n", "t.yaml:2: ready_path: a path starting with /"),
        ("targets:\n  - {name: a, command: x, start_timeout: soon}\n", "t.yaml:2: start_timeout: expected a duration"),
        ("targets:\n  - {name: a, command: x, environment: [A]}\n", "t.yaml:2: environment: expected a mapping"),
        ("targets:\n  - {name: a, command: \" \"}\n", "t.yaml:2: command: is empty"),
        ("targets: []\n", "t.yaml:1: targets: expected a list"),
    ])
    func targetFileMistakesNameTheFileAndLine(text: String, expected: String) {
        ScenarioTests.expectRefusal(text, startingWith: expected) { text throws(Scenario.Invalid) in _ = try ExternalTarget.parse(text, path: "t.yaml") }
    }

    static func outcome(_ scenario: String, _ figures: [(ScenarioOutcome.Measure, Double?)], headline: ScenarioOutcome.Measure,
                        higherIsBetter: Bool, serverTime: [String: Double] = [:]) -> ScenarioOutcome {
        ScenarioOutcome(scenario: scenario, figures: figures.map { .init($0.0, $0.1) }, headline: headline,
                        higherIsBetter: higherIsBetter, reports: [], serverTimeMs: serverTime)
    }

    /// The sentence comes from the numbers: change them and it names another winner and cause.
    @Test func theVerdictNamesTheWinnerAndWhyFromTheNumbers() {
        let scaling = Comparison.ScenarioInfo(name: "cpu", title: "CPU", question: "", kind: .scaling)
        func comparison(gil: Double, nogil: Double, gilLock: Double, gilLoop: Double = 0, gilName: String = "gil") -> Comparison {
            Comparison(timing: "quick", cores: 2, scenarios: [scaling], modes: [
                .init(mode: gilName, outcomes: [Self.outcome("cpu", [(.throughput(connections: 1), 800), (.throughput(connections: 8), gil),
                                                                     (.scaling, gil / 800)], headline: .throughput(connections: 8), higherIsBetter: true,
                                                             serverTime: ["loop": gilLoop, "queue": 1, "lock": gilLock, "work": 1])],
                      scenarioFailures: [:]),
                .init(mode: "nogil", outcomes: [Self.outcome("cpu", [(.throughput(connections: 1), 800), (.throughput(connections: 8), nogil),
                                                                     (.scaling, nogil / 800)], headline: .throughput(connections: 8), higherIsBetter: true,
                                                             serverTime: ["queue": 0.1, "lock": 0, "work": 1])],
                      scenarioFailures: [:]),
            ])
        }
        let lockBound = comparison(gil: 880, nogil: 1700, gilLock: 8).verdict(scaling) ?? ""
        #expect(lockBound.hasPrefix("nogil wins: 1700 req/s at 8 connections"), "\(lockBound)")
        #expect(lockBound.contains("gil reaches 1.10×") && lockBound.contains("of its server time per request, 80.0% (mean 8.00 ms) waiting for the lock"), "\(lockBound)")
        let loopBound = comparison(gil: 880, nogil: 1700, gilLock: 0, gilLoop: 8, gilName: "async").verdict(scaling) ?? ""
        #expect(loopBound.contains("async reaches 1.10×") && loopBound.contains("80.0% (mean 8.00 ms) waiting for the event loop"), "\(loopBound)")
        let even = comparison(gil: 1650, nogil: 1700, gilLock: 0.01).verdict(scaling) ?? ""
        #expect(even.hasPrefix("Every mode is within 10%"), "\(even)")
        let reversed = comparison(gil: 1900, nogil: 900, gilLock: 0.01).verdict(scaling) ?? ""
        #expect(reversed.hasPrefix("gil wins") && reversed.contains("its limit is the work itself"), "\(reversed)")
        let tied = comparison(gil: 1700, nogil: 1700, gilLock: 0).verdict(scaling) ?? ""
        #expect(tied.hasPrefix("Every mode measured the same"), "not 'only gil was measured': \(tied)")
        let table = comparison(gil: 880, nogil: 1700, gilLock: 8).text()
        #expect(table.contains("0.52×") && table.contains("1.00×"), "\(table)")
        let page = comparison(gil: 880, nogil: 1700, gilLock: 8).page()
        let parser = XMLParser(data: Data(page.utf8))
        #expect(parser.parse(), "the page is well-formed XML: \(parser.parserError.map { "\($0)" } ?? "")")
        #expect(page.contains("<polyline") && page.contains("nogil wins"), "a line per mode and the verdict")
    }

    /// The native scenario's sentence sets each mode's speedup beside Amdahl's law, and the hot
    /// object's says why a mode does not scale, from the reference counts its reads write.
    @Test func nativeAndHotVerdictsExplainThemselvesFromTheNumbers() {
        let native = Comparison.ScenarioInfo(name: "native", title: "Native", question: "", kind: .native)
        let hot = Comparison.ScenarioInfo(name: "hot", title: "Hot", question: "", kind: .hot)
        func nativeOutcome(_ speedups: [Double]) -> ScenarioOutcome {
            Self.outcome("native", zip([0, 50, 90, 100], speedups).map { (.nativeSpeedup(percent: $0, connections: 4), $1) },
                         headline: .nativeSpeedup(percent: 90, connections: 4), higherIsBetter: true, serverTime: ["lock": 3, "work": 1])
        }
        func hotOutcome(_ scaling: Double, model: String) -> ScenarioOutcome {
            var outcome = Self.outcome("hot", [(.throughput(connections: 1), 1000), (.throughput(connections: 8), 1000 * scaling), (.scaling, scaling)],
                                       headline: .throughput(connections: 8), higherIsBetter: true)
            outcome.note = "cache.refcount: \(model)"
            return outcome
        }
        let comparison = Comparison(timing: "quick", cores: 2, scenarios: [native, hot], modes: [
            .init(mode: "gil", outcomes: [nativeOutcome([1, 1.2, 1.3, 1.9]), hotOutcome(1.0, model: "plain")], scenarioFailures: [:]),
            .init(mode: "nogil", outcomes: [nativeOutcome([1.8, 1.9, 1.9, 1.9]), hotOutcome(0.6, model: "atomic")], scenarioFailures: [:]),
        ])
        let nativeVerdict = comparison.verdict(native) ?? ""
        #expect(nativeVerdict.contains("90% of each request's time") && nativeVerdict.contains("nogil scales 1.90×")
                && nativeVerdict.contains("Amdahl's law allows 1.82×") && nativeVerdict.contains("gil reaches 1.30×"), "\(nativeVerdict)")
        #expect(comparison.text().contains("allows 1.00× at native 0, 1.33× at native 0.5, 1.82× at native 0.9, 2.00× at native 1"),
                "\(comparison.text())")
        let hotVerdict = comparison.verdict(hot) ?? ""
        #expect(hotVerdict.contains("gil serves the most") && hotVerdict.contains("nogil reaches 0.600×")
                && hotVerdict.contains("shared reference count atomically"), "\(hotVerdict)")
    }
}
