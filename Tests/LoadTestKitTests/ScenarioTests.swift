import Foundation
import Testing
@testable import LoadTestKit

@Suite("scenario files")
struct ScenarioTests {
    static var shipped: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("loadtest")
    }

    @Test func theShippedExamplesAreValid() throws {
        // suite.yaml is compare's, not a scenario (SuiteTests reads it).
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.shipped.path).filter { $0.hasSuffix(".yaml") && $0 != "suite.yaml" }
        #expect(files.count >= 3)
        for file in files {
            let scenario = try Scenario.load(path: Self.shipped.appendingPathComponent(file).path)
            #expect(!scenario.phases.isEmpty, "\(file)")
        }
    }

    @Test func aScenarioBecomesPhasesOfWeightedEndpoints() throws {
        let scenario = try Scenario.parse("""
            target: http://127.0.0.1:8080
            threads: 2
            connections: 4
            warmup: 500ms
            phases:
              - duration: 2s
              - rate: 100
                connections: 8
            endpoints:
              - path: /cpu?work=10
                weight: 3
              - url: http://127.0.0.1:8080/cache/k
                method: put
                headers: {Content-Type: text/plain, X-Trace: "1"}
                body: hi
            """, path: "s.yaml")
        #expect(scenario.phases.count == 2)
        let first = scenario.phases[0], second = scenario.phases[1]
        #expect(first.connections == 4 && first.rate == nil && first.duration == 2 && first.warmup == 0.5 && first.threads == 2)
        #expect(second.connections == 8 && second.rate == 100 && second.duration == 10, "a phase inherits what it does not say")
        let endpoints = first.endpoints
        #expect(endpoints.map(\.name) == ["/cpu?work=10", "http://127.0.0.1:8080/cache/k"])
        #expect(endpoints.map(\.weight) == [3, 1])
        #expect(endpoints[1].method == "PUT" && endpoints[1].body == Array("hi".utf8))
        #expect(endpoints[1].headers.map(\.name) == ["Content-Type", "X-Trace"])
        let elsewhere = try Scenario.parse("target: http://a:1\nendpoints: [{path: /x}]", path: "s.yaml", target: "http://b:2")
        #expect(elsewhere.phases[0].target.host == "b" && elsewhere.phases[0].target.port == 2, "--target wins")
    }

    @Test(arguments: [
        ("target: http://h\nendpoints:\n  - path: /\n    wieght: 2\n", "s.yaml:4: an endpoint: unknown key 'wieght'"),
        ("target: ftp://h\nendpoints: [{path: /}]\n", "s.yaml:1: target: 'ftp://h': only http:// and https:// URLs"),
        ("endpoints: [{path: /}]\n", "s.yaml:1: no target"),
        ("target: http://h\n", "s.yaml:1: no endpoints"),
        ("target: http://h\nendpoints: []\n", "s.yaml:2: endpoints: expected a list"),
        ("target: http://h\nendpoints:\n  - path: health\n", "s.yaml:3: path: must start with /"),
        ("target: http://h\nendpoints:\n  - method: GET\n", "s.yaml:3: an endpoint needs a path"),
        ("target: http://h\nendpoints:\n  - path: /\n    method: FETCH\n", "s.yaml:4: method: must be one of"),
        ("target: http://h\nendpoints:\n  - path: /\n    weight: 0\n", "s.yaml:4: weight: expected a whole number from 1"),
        ("target: http://h\nconnections: many\nendpoints: [{path: /}]\n", "s.yaml:2: connections: expected a whole number"),
        ("target: http://h\nphases:\n  - rate: -5\nendpoints: [{path: /}]\n", "s.yaml:3: rate: expected a number"),
        ("target: http://h\nphases:\n  - duration: soon\nendpoints: [{path: /}]\n", "s.yaml:3: duration: expected a duration"),
        ("target: http://h\nendpoints:\n  - url: http://other/\n  - path: /\n", "s.yaml:3: url: 'http://other/' is not on the target's host and port (h)"),
        ("target: http://h\nendpoints:\n  - path: /\n    body_file: missing.json\n", "s.yaml:4: body_file: cannot read"),
        ("target: http://h/api\nendpoints: [{path: /}]\n", "s.yaml:1: target: 'http://h/api': only the server"),
        ("target: http://h\nendpoints:\n  - path: /\n    headers: {Content-Length: 5}\n", "s.yaml:4: headers: Content-Length is set from the body"),
        ("target: http://h\ntimeout: 1e11\nendpoints: [{path: /}]\n", "s.yaml:2: timeout: expected a duration"),
        ("target: [\n", "s.yaml: not valid YAML"),
        ("", "s.yaml: the file is empty"),
    ])
    func mistakesNameTheFileAndLine(text: String, expected: String) {
        Self.expectRefusal(text, startingWith: expected) { text throws(Scenario.Invalid) in _ = try Scenario.parse(text, path: "s.yaml") }
    }

    /// `parse` must refuse `text` with a reason that starts with `expected`.
    static func expectRefusal(_ text: String, startingWith expected: String, sourceLocation: SourceLocation = #_sourceLocation,
                              _ parse: (String) throws(Scenario.Invalid) -> Void) {
        do {
            try parse(text)
            Issue.record("accepted: \(text)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.description.hasPrefix(expected), "\(error.description)", sourceLocation: sourceLocation)
        }
    }
}
