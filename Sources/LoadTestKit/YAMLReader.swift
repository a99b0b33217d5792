import Yams

/// Reads typed values out of YAML nodes, and words every error as `FILE:LINE: reason`, for
/// scenario and suite files alike.
struct YAMLReader {
    let path: String

    /// The file's text as one YAML document: refused when it is not YAML or holds nothing.
    func document(_ text: String) throws(Scenario.Invalid) -> Node {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw Scenario.Invalid(description: "\(path): not valid YAML: \(error)") }
        guard let root else { throw Scenario.Invalid(description: "\(path): the file is empty") }
        return root
    }

    func error(_ node: Node, _ reason: String) -> Scenario.Invalid {
        Scenario.Invalid(description: "\(path):\(node.mark?.line ?? 0): \(reason)")
    }

    func mapping(_ node: Node, keys: [String], what: String) throws(Scenario.Invalid) -> [String: Node] {
        guard let mapping = node.mapping else { throw error(node, "\(what): expected a mapping of keys to values") }
        var fields: [String: Node] = [:]
        for (key, value) in mapping {
            guard let name = key.string, keys.contains(name) else {
                throw error(key, "\(what): unknown key '\(key.string ?? "?")'; known: \(keys.joined(separator: ", "))")
            }
            fields[name] = value
        }
        return fields
    }

    /// `top[key]` as a non-empty list of entries (`what` names one: "scenario", "target"), each
    /// read by `entry`, no two with the same name. `root` is where a missing list is reported.
    func uniquelyNamedList<Entry>(_ top: [String: Node], _ key: String, of what: String, root: Node, name: (Entry) -> String,
                                  _ entry: (Node) throws(Scenario.Invalid) -> Entry) throws(Scenario.Invalid) -> [Entry] {
        guard let list = top[key]?.sequence, !list.isEmpty else {
            throw error(top[key] ?? root, "\(key): expected a list of \(key)")
        }
        var entries: [Entry] = []
        for node in list {
            let read = try entry(node)
            guard !entries.contains(where: { name($0) == name(read) }) else { throw error(node, "a second \(what) named '\(name(read))'") }
            entries.append(read)
        }
        return entries
    }

    func string(_ node: Node, _ name: String) throws(Scenario.Invalid) -> String {
        guard let scalar = node.scalar else { throw error(node, "\(name): expected a single value") }
        return scalar.string
    }

    func integer(_ node: Node?, _ name: String, in range: ClosedRange<Int>) throws(Scenario.Invalid) -> Int? {
        try value(node, name, in: range, "a whole number from \(range.lowerBound) to \(range.upperBound)")
    }

    func number(_ node: Node?, _ name: String, in range: ClosedRange<Double>) throws(Scenario.Invalid) -> Double? {
        try value(node, name, in: range, "a number from \(range.lowerBound) to \(Int(range.upperBound))")
    }

    private func value<Number: LosslessStringConvertible & Comparable>(
        _ node: Node?, _ name: String, in range: ClosedRange<Number>, _ expected: String
    ) throws(Scenario.Invalid) -> Number? {
        guard let node else { return nil }
        let text = try string(node, name)
        guard let value = Number(text), range.contains(value) else { throw error(node, "\(name): expected \(expected), got '\(text)'") }
        return value
    }

    func seconds(_ node: Node?, _ name: String, allowZero: Bool) throws(Scenario.Invalid) -> Double? {
        guard let node else { return nil }
        let text = try string(node, name)
        guard let value = Seconds.parse(text), allowZero || value > 0 else {
            throw error(node, "\(name): expected a duration such as 10s, 500ms or 2m\(allowZero ? "" : " (more than 0)"), got '\(text)'")
        }
        return value
    }
}
