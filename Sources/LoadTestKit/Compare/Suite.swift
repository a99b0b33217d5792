import Foundation
import Yams

/// The workloads `loadtest compare` runs against every mode (loadtest/suite.yaml): each
/// scenario names the question it answers and is one of four kinds.
///
/// - `scaling`: one path, closed model, at a list of connection counts. Does the work get
///   faster with more connections?
/// - `convoy`: an open-model probe at a fixed rate while a closed-model background load keeps
///   the handlers busy. How long does a quick request wait behind slow ones?
/// - `capacity`: weighted endpoints at rising rates. What is the highest rate with p99 under
///   the SLA?
/// - `memory`: the server's memory (every process, RSS and Pss) idle and under a load.
/// - `cache`: read-through reads of `{key}`s drawn by Zipf's law. How often does each mode's
///   cache hit, and what does that do to its throughput?
///
/// Endpoints are paths: compare starts each server itself, on a port of its own.
/// A scenario's kind without its settings: what the tables, sentences and charts of a kind
/// are chosen by.
public enum ScenarioKind: String, Codable, Sendable {
    case scaling, convoy, capacity, memory, cache
}

public struct Suite: Sendable {
    public struct Timing: Sendable {
        /// Per phase, and before each phase.
        public var duration: Double
        public var warmup: Double
    }

    public enum Kind: Sendable {
        case scaling(endpoint: Endpoint, connections: [Int])
        case convoy(probe: Endpoint, rate: Double, probeConnections: Int, background: Endpoint, backgroundConnections: Int)
        case capacity(endpoints: [Endpoint], rates: [Double], connections: Int, slaP99Milliseconds: Double)
        case memory(endpoint: Endpoint, connections: Int)
        case cache(endpoint: Endpoint, connections: Int)

        public var name: ScenarioKind {
            switch self {
            case .scaling: .scaling
            case .convoy: .convoy
            case .capacity: .capacity
            case .memory: .memory
            case .cache: .cache
            }
        }
    }

    public struct Entry: Sendable {
        public var name: String
        public var title: String
        public var question: String
        public var kind: Kind
    }

    public var quick: Timing
    public var full: Timing
    public var scenarios: [Entry]

    /// Where suite endpoints point until compare knows a server's port.
    static let placeholder = try! Target(url: "http://127.0.0.1:1")

    static let topLevelKeys = ["quick", "full", "scenarios"]
    static let timingKeys = ["duration", "warmup"]
    static let commonKeys = ["name", "title", "question", "kind"]
    static let kindKeys: [String: [String]] = [
        "scaling": ["path", "connections"],
        "convoy": ["probe", "background"],
        "capacity": ["endpoints", "rates", "connections", "sla_p99_ms"],
        "memory": ["path", "connections"],
        "cache": ["path", "keys", "connections"],
    ]

    public static func load(path: String) throws(Scenario.Invalid) -> Suite {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Scenario.Invalid(description: "\(path): cannot read the suite file")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    static func parse(_ text: String, path: String) throws(Scenario.Invalid) -> Suite {
        let reader = YAMLReader(path: path)
        let root = try reader.document(text)
        let top = try reader.mapping(root, keys: topLevelKeys, what: "the suite")
        let quick = try timing(top["quick"], reader: reader) ?? Timing(duration: 1, warmup: 0.2)
        let full = try timing(top["full"], reader: reader) ?? Timing(duration: 8, warmup: 2)
        let scenarios = try reader.uniquelyNamedList(top, "scenarios", of: "scenario", root: root, name: \Entry.name) { node throws(Scenario.Invalid) in
            try scenario(node, reader: reader)
        }
        return Suite(quick: quick, full: full, scenarios: scenarios)
    }

    private static func timing(_ node: Node?, reader: YAMLReader) throws(Scenario.Invalid) -> Timing? {
        guard let node else { return nil }
        let fields = try reader.mapping(node, keys: timingKeys, what: "a timing")
        return Timing(duration: try reader.seconds(fields["duration"], "duration", allowZero: false) ?? 1,
                      warmup: try reader.seconds(fields["warmup"], "warmup", allowZero: true) ?? 0)
    }

    private static func scenario(_ node: Node, reader: YAMLReader) throws(Scenario.Invalid) -> Entry {
        guard let mapping = node.mapping, let kindNode = mapping["kind"] else {
            throw reader.error(node, "a scenario needs a kind: \(kindKeys.keys.sorted().joined(separator: ", "))")
        }
        let kindName = try reader.string(kindNode, "kind")
        guard let keys = kindKeys[kindName] else {
            throw reader.error(kindNode, "kind: expected one of \(kindKeys.keys.sorted().joined(separator: ", ")), got '\(kindName)'")
        }
        let fields = try reader.mapping(node, keys: commonKeys + keys, what: "a \(kindName) scenario")
        func required(_ key: String) throws(Scenario.Invalid) -> Node {
            guard let value = fields[key] else { throw reader.error(node, "a \(kindName) scenario needs \(key)") }
            return value
        }
        let name = try reader.string(try required("name"), "name")
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw reader.error(fields["name"]!, "name: letters, digits, - and _ only (it names files), got '\(name)'")
        }
        let kind: Kind
        switch kindName {
        case "scaling":
            kind = .scaling(endpoint: try pathEndpoint(try required("path"), reader: reader),
                            connections: try counts(try required("connections"), "connections", reader: reader))
        case "convoy":
            let probe = try reader.mapping(try required("probe"), keys: ["path", "rate", "connections"], what: "probe")
            let background = try reader.mapping(try required("background"), keys: ["path", "connections"], what: "background")
            guard let probePath = probe["path"], let rate = probe["rate"], let backgroundPath = background["path"] else {
                throw reader.error(node, "convoy: probe needs path and rate, background needs path")
            }
            kind = .convoy(probe: try pathEndpoint(probePath, reader: reader),
                           rate: try reader.number(rate, "rate", in: 0.1...100_000)!,
                           probeConnections: try reader.integer(probe["connections"], "connections", in: 1...10_000) ?? 4,
                           background: try pathEndpoint(backgroundPath, reader: reader),
                           backgroundConnections: try reader.integer(background["connections"], "connections", in: 1...10_000) ?? 4)
        case "capacity":
            let list = try required("endpoints")
            guard let endpoints = list.sequence, !endpoints.isEmpty else { throw reader.error(list, "endpoints: expected a list") }
            var parsed: [Endpoint] = []
            for endpoint in endpoints { parsed.append(try Scenario.endpoint(endpoint, base: placeholder, reader: reader)) }
            let ratesNode = try required("rates")
            guard let rates = ratesNode.sequence, !rates.isEmpty else { throw reader.error(ratesNode, "rates: expected a list such as [100, 200, 400]") }
            var values: [Double] = []
            for rate in rates {
                let value = try reader.number(rate, "rates", in: 0.1...1_000_000)!
                // Rising: the steps after the first miss are skipped as harder still.
                if let last = values.last, value <= last { throw reader.error(rate, "rates: must rise, but \(Comparison.format(value)) follows \(Comparison.format(last))") }
                values.append(value)
            }
            kind = .capacity(endpoints: parsed, rates: values,
                             connections: try reader.integer(fields["connections"], "connections", in: 1...10_000) ?? 64,
                             slaP99Milliseconds: try reader.number(try required("sla_p99_ms"), "sla_p99_ms", in: 0.001...3_600_000)!)
        case "cache":
            var endpoint = try pathEndpoint(try required("path"), reader: reader)
            endpoint.keys = try Scenario.keySpace(try required("keys"), reader: reader)
            if let problem = endpoint.problem { throw reader.error(fields["path"]!, problem) }
            kind = .cache(endpoint: endpoint, connections: try reader.integer(fields["connections"], "connections", in: 1...10_000) ?? 8)
        default:
            kind = .memory(endpoint: try pathEndpoint(try required("path"), reader: reader),
                           connections: try reader.integer(fields["connections"], "connections", in: 1...10_000) ?? 8)
        }
        return Entry(name: name, title: try fields["title"].map { (node) throws(Scenario.Invalid) in try reader.string(node, "title") } ?? name,
                     question: try fields["question"].map { (node) throws(Scenario.Invalid) in try reader.string(node, "question") } ?? "",
                     kind: kind)
    }

    private static func pathEndpoint(_ node: Node, reader: YAMLReader) throws(Scenario.Invalid) -> Endpoint {
        let path = try reader.string(node, "path")
        guard path.hasPrefix("/") else { throw reader.error(node, "path: must start with /, got '\(path)'") }
        do { return Endpoint(target: try Target(url: "http://\(placeholder.hostHeader)\(path)"), name: path) } catch {
            throw reader.error(node, "path: \(error)")
        }
    }

    private static func counts(_ node: Node, _ name: String, reader: YAMLReader) throws(Scenario.Invalid) -> [Int] {
        guard let list = node.sequence, !list.isEmpty else { throw reader.error(node, "\(name): expected a list such as [1, 2, 4, 8]") }
        var values: [Int] = []
        for item in list {
            let value = try reader.integer(item, name, in: 1...10_000)!
            // Rising: the last is "the most", which the ranking and the verdict use.
            if let last = values.last, value <= last { throw reader.error(item, "\(name): must rise, but \(value) follows \(last)") }
            values.append(value)
        }
        return values
    }
}

extension Endpoint {
    /// The same request, sent to `server` (a suite's endpoints are paths until compare has
    /// started a server).
    func on(_ server: Target) -> Endpoint {
        var moved = self
        moved.target = (try? Target(url: "http://\(server.hostHeader)\(target.pathAndQuery)")) ?? target
        return moved
    }
}
