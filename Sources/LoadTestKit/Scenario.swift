import Foundation
import Yams

/// A scenario file: the YAML that `loadtest scenario FILE` runs, for a load that is more than
/// one URL and one setting (k6's idea, in a file a user keeps next to the server's config).
///
/// ```yaml
/// target: http://127.0.0.1:8080
/// threads: 2
/// warmup: 1s
/// phases:
///   - connections: 8
///     duration: 10s
///   - rate: 2000
///     connections: 32
///     duration: 10s
/// slo: [p99<50ms, errors<1%]
/// endpoints:
///   - path: /cpu?work=100
///     weight: 1
///     slo: [p99<20ms]
///   - path: /cache/greeting
///     method: PUT
///     headers: {Content-Type: text/plain}
///     body: hello
///     weight: 3
/// ```
///
/// Every mistake is reported as `FILE:LINE: reason`, and nothing runs.
public struct Scenario: Sendable {
    /// One plan per phase, in order.
    public var phases: [LoadPlan]
    /// What every phase must meet (`slo:`, the whole run's and each endpoint's).
    public var objectives: [Objective] = []

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    static let topLevelKeys = ["target", "threads", "connections", "rate", "duration", "warmup", "timeout", "phases", "endpoints", "slo"]
    static let phaseKeys = ["connections", "rate", "duration"]
    static let endpointKeys = ["path", "url", "method", "headers", "body", "body_file", "weight", "keys", "slo"]

    /// Reads the file at `path`; `target`, if given, replaces the file's (the same scenario
    /// against another server or port).
    public static func load(path: String, target: String? = nil) throws(Invalid) -> Scenario {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Invalid(description: "\(path): cannot read the scenario file")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path, target: target)
    }

    static func parse(_ text: String, path: String, target overriding: String? = nil) throws(Invalid) -> Scenario {
        let reader = YAMLReader(path: path)
        let root = try reader.document(text)
        let top = try reader.mapping(root, keys: topLevelKeys, what: "the scenario")

        let targetText: String
        if let overriding {
            targetText = overriding
        } else {
            guard let node = top["target"] else { throw reader.error(root, "no target (such as target: http://127.0.0.1:8080)") }
            targetText = try reader.string(node, "target")
        }
        let base: Target
        do {
            base = try Target(url: targetText)
            guard base.pathAndQuery == "/" else {
                throw Target.Invalid(description: "'\(targetText)': only the server (http://HOST:PORT); paths belong to the endpoints")
            }
        } catch {
            throw overriding == nil ? reader.error(top["target"]!, "target: \(error)") : Invalid(description: "--target: \(error)")
        }
        let threads = try reader.integer(top["threads"], "threads", in: 1...1024) ?? 1
        let timeout = try reader.seconds(top["timeout"], "timeout", allowZero: false) ?? 5
        let warmup = try reader.seconds(top["warmup"], "warmup", allowZero: true) ?? 0
        let defaults = try phase(top, reader: reader, inherited: (connections: 8, rate: nil, duration: 10))

        guard let endpointsNode = top["endpoints"] else { throw reader.error(root, "no endpoints (a list, each with at least a path)") }
        guard let endpointList = endpointsNode.sequence, !endpointList.isEmpty else {
            throw reader.error(endpointsNode, "endpoints: expected a list of endpoints, each with at least a path")
        }
        let endpoints = try endpointList.map { node throws(Invalid) in try endpoint(node, base: base, reader: reader) }
        var objectives = try objectiveList(top["slo"], reader: reader, endpoint: nil)
        for (index, (node, endpoint)) in zip(endpointList, endpoints).enumerated() {
            objectives += try objectiveList(reader.mapping(node, keys: endpointKeys, what: "an endpoint")["slo"], reader: reader, endpoint: endpoint)
                .map { objective in
                    var bound = objective
                    bound.endpointIndex = index
                    return bound
                }
        }
        if let problem = Objective.problem(objectives, endpoints: endpoints) { throw reader.error(top["slo"] ?? root, "slo: \(problem)") }

        var phaseSettings = [defaults]
        if let phasesNode = top["phases"] {
            guard let list = phasesNode.sequence, !list.isEmpty else {
                throw reader.error(phasesNode, "phases: expected a list, each with connections, rate and/or duration")
            }
            phaseSettings = try list.map { node throws(Invalid) in
                try phase(try reader.mapping(node, keys: phaseKeys, what: "a phase"), reader: reader, inherited: defaults)
            }
        }
        do {
            return Scenario(phases: try phaseSettings.map { settings throws(LoadError) in
                var plan = try LoadPlan(endpoints: endpoints, connections: settings.connections, threads: threads,
                                        duration: settings.duration, warmup: warmup, timeout: timeout)
                plan.rate = settings.rate
                return plan
            }, objectives: objectives)
        } catch {
            throw reader.error(endpointsNode, "endpoints: \(error)")
        }
    }

    private typealias PhaseSettings = (connections: Int, rate: Double?, duration: Double)

    private static func phase(_ mapping: [String: Node], reader: YAMLReader, inherited: PhaseSettings) throws(Invalid) -> PhaseSettings {
        (connections: try reader.integer(mapping["connections"], "connections", in: 1...100_000) ?? inherited.connections,
         rate: try reader.number(mapping["rate"], "rate", in: 0.001...10_000_000) ?? inherited.rate,
         duration: try reader.seconds(mapping["duration"], "duration", allowZero: false) ?? inherited.duration)
    }

    static func endpoint(_ node: Node, base: Target, reader: YAMLReader) throws(Invalid) -> Endpoint {
        let fields = try reader.mapping(node, keys: endpointKeys, what: "an endpoint")
        var endpoint: Endpoint
        switch (fields["path"], fields["url"]) {
        case (let path?, nil):
            let text = try reader.string(path, "path")
            guard text.hasPrefix("/") else { throw reader.error(path, "path: must start with /, got '\(text)'") }
            let url = base.origin + text
            do { endpoint = Endpoint(target: try Target(url: url), name: text) } catch { throw reader.error(path, "path: \(error)") }
        case (nil, let url?):
            let text = try reader.string(url, "url")
            do { endpoint = Endpoint(target: try Target(url: text), name: text) } catch { throw reader.error(url, "url: \(error)") }
            guard endpoint.target.host == base.host && endpoint.target.port == base.port && endpoint.target.secure == base.secure else {
                throw reader.error(url, "url: '\(text)' is not on the target's host and port (\(base.hostHeader)); connections are shared")
            }
        case (.some, .some):
            throw reader.error(node, "an endpoint has a path or a url, not both")
        case (nil, nil):
            throw reader.error(node, "an endpoint needs a path (such as path: /health)")
        }
        if let method = fields["method"] {
            let text = try reader.string(method, "method").uppercased()
            guard Endpoint.methods.contains(text) else {
                throw reader.error(method, "method: must be one of \(Endpoint.methods.joined(separator: ", ")), got '\(text)'")
            }
            endpoint.method = text
        }
        if let headers = fields["headers"] {
            guard let mapping = headers.mapping else { throw reader.error(headers, "headers: expected a mapping of names to values") }
            for (name, value) in mapping {
                let headerName = try reader.string(name, "headers")
                guard !headerName.isEmpty, headerName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_".contains($0)) }) else {
                    throw reader.error(name, "headers: '\(headerName)' is not a header name")
                }
                if let problem = Endpoint.problem(withHeader: headerName) { throw reader.error(name, "headers: \(problem)") }
                let headerValue = try reader.string(value, headerName)
                guard !headerValue.contains(where: \.isNewline) else { throw reader.error(value, "\(headerName): a header value cannot hold a line break") }
                endpoint.headers.append((headerName, headerValue))
            }
        }
        switch (fields["body"], fields["body_file"]) {
        case (let body?, nil):
            endpoint.body = Array(try reader.string(body, "body").utf8)
        case (nil, let file?):
            let name = try reader.string(file, "body_file")
            // Relative to the scenario file, as a user writing one next to its bodies expects.
            let resolved = name.hasPrefix("/") ? name : URL(fileURLWithPath: reader.path).deletingLastPathComponent().appendingPathComponent(name).path
            guard let data = FileManager.default.contents(atPath: resolved) else { throw reader.error(file, "body_file: cannot read \(resolved)") }
            endpoint.body = Array(data)
        case (.some, .some):
            throw reader.error(node, "an endpoint has a body or a body_file, not both")
        case (nil, nil):
            break
        }
        endpoint.weight = try reader.integer(fields["weight"], "weight", in: Endpoint.weights) ?? 1
        endpoint.keys = try keySpace(fields["keys"], reader: reader)
        if let problem = endpoint.problem { throw reader.error(node, problem) }
        return endpoint
    }

    /// `slo: [p99<50ms, errors<1%]`: the whole run's objectives, or (under an endpoint) that
    /// endpoint's, which need no `ENDPOINT:` before them.
    static func objectiveList(_ node: Node?, reader: YAMLReader, endpoint: Endpoint?) throws(Invalid) -> [Objective] {
        guard let node else { return [] }
        guard let list = node.sequence else { throw reader.error(node, "slo: expected a list of objectives, such as [p99<50ms, errors<1%]") }
        return try list.map { item throws(Invalid) in
            var objective: Objective
            do { objective = try Objective(parsing: try reader.string(item, "slo")) } catch let error as Objective.Invalid {
                throw reader.error(item, "slo: \(error)")
            } catch { throw error as! Invalid }
            if let endpoint {
                guard objective.endpoint == nil else { throw reader.error(item, "slo: '\(objective)' is under an endpoint already; leave out its ENDPOINT:") }
                objective.endpoint = endpoint.name
            }
            return objective
        }
    }

    /// `keys: {count: 10000, zipf: 1.1}`: what `{key}` in the path stands for.
    static func keySpace(_ node: Node?, reader: YAMLReader) throws(Invalid) -> KeySpace? {
        guard let node else { return nil }
        let fields = try reader.mapping(node, keys: ["count", "zipf"], what: "keys")
        guard let count = try reader.integer(fields["count"], "count", in: KeySpace.counts) else {
            throw reader.error(node, "keys: needs a count, such as {count: 10000, zipf: 1.1}")
        }
        return KeySpace(count: count, zipfExponent: try reader.number(fields["zipf"], "zipf", in: 0...10) ?? 0)
    }
}

