import Foundation
import Yams

/// The workloads `loadtest compare` runs against every mode (loadtest/suite.yaml): each
/// scenario names the question it answers and is one of four kinds.
///
/// - `scaling`: one path, closed model, at a list of connection counts. Does the work get
///   faster with more connections?
/// - `convoy`: an open-model probe at a fixed rate while a closed-model background load keeps
///   the handlers busy. How long does a quick request wait behind slow ones?
/// - `capacity`: weighted endpoints in the open model, the rate searched for as `loadtest
///   knee` does (doubling from `start_rate`, then bisecting). What is the highest rate with p99
///   under the SLA?
/// - `memory`: the server's memory (every process, RSS and Pss) idle and under a load.
/// - `cache`: read-through reads of `{key}`s drawn by Zipf's law. How often does each mode's
///   cache hit, and what does that do to its throughput?
/// - `native`: one path at 1 connection and at `connections`, with the share `native` of its
///   work in a C extension that lets go of the lock. How close to Amdahl's law does it scale?
/// - `hot`: like `scaling`, for reads of one object every thread shares. What do its reference
///   counts cost?
///
/// `server:` settings go to every mode's server, as `--set KEY=VALUE` before compare's own:
/// the start-up data every mode carries, for one.
///
/// Endpoints are paths: compare starts each server itself, on a port of its own.
/// A scenario's kind without its settings: what the tables, sentences and charts of a kind
/// are chosen by.
public enum ScenarioKind: String, Codable, Sendable {
    case scaling, convoy, capacity, memory, cache, native, hot
}

/// How a capacity scenario searches for its rate: `KneeSearch`'s settings.
public struct CapacitySearch: Sendable {
    public var startRate: Double
    public var maxRate: Double
    /// Bisect until the rates met and missed are this close, as a share.
    public var precision: Double
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
        case capacity(endpoints: [Endpoint], search: CapacitySearch, connections: Int, slaP99Milliseconds: Double)
        case memory(endpoint: Endpoint, connections: Int)
        case cache(endpoint: Endpoint, connections: Int)
        case native(endpoint: Endpoint, shares: [Double], connections: Int)
        case hot(endpoint: Endpoint, connections: [Int])

        public var name: ScenarioKind {
            switch self {
            case .scaling: .scaling
            case .convoy: .convoy
            case .capacity: .capacity
            case .memory: .memory
            case .cache: .cache
            case .native: .native
            case .hot: .hot
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
    /// `server:`: settings for every mode's server, in the order given.
    public var serverSettings: [(key: String, value: String)] = []

    /// Where suite endpoints point until compare knows a server's port.
    static let placeholder = try! Target(url: "http://127.0.0.1:1")

    static let topLevelKeys = ["quick", "full", "server", "scenarios"]
    static let timingKeys = ["duration", "warmup"]
    static let commonKeys = ["name", "title", "question", "kind"]
    static let kindKeys: [String: [String]] = [
        "scaling": ["path", "connections"],
        "convoy": ["probe", "background"],
        "capacity": ["endpoints", "start_rate", "max_rate", "precision", "connections", "sla_p99_ms"],
        "memory": ["path", "keys", "connections"],
        "cache": ["path", "keys", "connections"],
        "native": ["path", "native", "connections"],
        "hot": ["path", "connections"],
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
        var suite = Suite(quick: quick, full: full, scenarios: scenarios)
        if let server = top["server"] {
            guard let mapping = server.mapping else { throw reader.error(server, "server: expected settings such as cache.preload: 5000") }
            for (key, value) in mapping {
                let name = try reader.string(key, "server")
                guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ".") }) else {
                    throw reader.error(key, "server: a setting's name is a threadbare key such as cache.preload, got '\(name)'")
                }
                guard let text = value.scalar?.string, !text.isEmpty else { throw reader.error(value, "server: \(name): expected a value") }
                suite.serverSettings.append((name, text))
            }
        }
        return suite
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
        if kindName == "capacity", let rates = mapping["rates"] {
            throw reader.error(rates, "rates: capacity searches for the highest rate itself now; give start_rate: (its first step) instead")
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
            let start = try reader.number(fields["start_rate"], "start_rate", in: 1...1_000_000) ?? 250
            let search = CapacitySearch(
                startRate: start,
                maxRate: try reader.number(fields["max_rate"], "max_rate", in: start...1_000_000) ?? 100_000,
                precision: try reader.number(fields["precision"], "precision", in: 0.01...0.5) ?? 0.05)
            kind = .capacity(endpoints: parsed, search: search,
                             connections: try reader.integer(fields["connections"], "connections", in: 1...10_000) ?? 64,
                             slaP99Milliseconds: try reader.number(try required("sla_p99_ms"), "sla_p99_ms", in: 0.001...3_600_000)!)
        case "cache":
            var endpoint = try pathEndpoint(try required("path"), reader: reader)
            endpoint.keys = try Scenario.keySpace(try required("keys"), reader: reader)
            if let problem = endpoint.problem { throw reader.error(fields["path"]!, problem) }
            kind = .cache(endpoint: endpoint, connections: try reader.integer(fields["connections"], "connections", in: 1...10_000) ?? 8)
        case "native":
            let endpoint = try pathEndpoint(try required("path"), reader: reader)
            guard !endpoint.target.pathAndQuery.contains("native=") && !endpoint.target.pathAndQuery.contains("release=") else {
                throw reader.error(fields["path"]!, "path: native is the scenario's to set, once per share in native:")
            }
            let shares = try risingNumbers(try required("native"), "native", in: 0...1, example: "of shares such as [0, 0.5, 0.9, 1]",
                                           shown: Comparison.share, reader: reader)
            kind = .native(endpoint: endpoint, shares: shares,
                           connections: try reader.integer(try required("connections"), "connections", in: 2...10_000)!)
        case "hot":
            kind = .hot(endpoint: try pathEndpoint(try required("path"), reader: reader),
                        connections: try counts(try required("connections"), "connections", reader: reader))
        default:
            var endpoint = try pathEndpoint(try required("path"), reader: reader)
            if let keys = fields["keys"] {
                endpoint.keys = try Scenario.keySpace(keys, reader: reader)
                if let problem = endpoint.problem { throw reader.error(fields["path"]!, problem) }
            }
            kind = .memory(endpoint: endpoint, connections: try reader.integer(fields["connections"], "connections", in: 1...10_000) ?? 8)
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

    /// A non-empty list of numbers in `range`, each above the one before.
    private static func risingNumbers(_ node: Node, _ name: String, in range: ClosedRange<Double>, example: String,
                                      shown: (Double) -> String, reader: YAMLReader) throws(Scenario.Invalid) -> [Double] {
        guard let list = node.sequence, !list.isEmpty else { throw reader.error(node, "\(name): expected a list \(example)") }
        var values: [Double] = []
        for item in list {
            let value = try reader.number(item, name, in: range)!
            if let last = values.last, value <= last { throw reader.error(item, "\(name): must rise, but \(shown(value)) follows \(shown(last))") }
            values.append(value)
        }
        return values
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
    func on(_ server: ServerUnderTest) -> Endpoint {
        var moved = self
        moved.target = (try? Target(url: server.target.origin + target.pathAndQuery)) ?? target
        moved.tls = server.tls
        return moved
    }
}
