import CLibevent

/// A request's query string, decoded by libevent, with typed, range-checked lookups whose
/// errors name the parameter.
public struct QueryParameters: Sendable {
    private var pairs: [(name: String, value: String)] = []

    public init(_ query: String?) throws(RequestError) {
        guard let query, !query.isEmpty else { return }
        // libevent decodes into C strings, where %00 would silently cut a name or value short.
        guard !query.lowercased().contains("%00") else {
            throw RequestError(400, "query string contains an encoded NUL byte (%00)")
        }
        let list = UnsafeMutablePointer<evkeyvalq>.allocate(capacity: 1)
        defer { list.deallocate() }
        // evhttp_parse_query_str initialises the list itself, and empties it on failure.
        guard evhttp_parse_query_str(query, list) == 0 else {
            throw RequestError(400, "malformed query string")
        }
        defer { evhttp_clear_headers(list) }
        var entry = list.pointee.tqh_first
        while let current = entry {
            pairs.append((String(cString: current.pointee.key), String(cString: current.pointee.value)))
            entry = current.pointee.next.tqe_next
        }
    }

    /// Refuses parameters other than `known`, so a typo is an error rather than a default.
    public func allowOnly(_ known: Set<String>) throws(RequestError) {
        for pair in pairs where !known.contains(pair.name) {
            throw RequestError(400, "unknown query parameter '\(Self.clip(pair.name))'")
        }
    }

    public func has(_ name: String) -> Bool {
        pairs.contains { $0.name == name }
    }

    public func integer(_ name: String, in range: ClosedRange<Int>, default fallback: Int? = nil) throws(RequestError) -> Int {
        let matches = pairs.filter { $0.name == name }
        guard matches.count <= 1 else { throw RequestError(400, "query parameter '\(name)' is given more than once") }
        guard let text = matches.first?.value else {
            if let fallback { return fallback }
            throw RequestError(400, "missing query parameter '\(name)'")
        }
        guard let value = Int(text) else {
            throw RequestError(400, "query parameter '\(name)' must be an integer, got '\(Self.clip(text))'")
        }
        guard range.contains(value) else {
            throw RequestError(400, "query parameter '\(name)' must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
        return value
    }

    /// Echoed input is cut short so an error body never grows with what a client sends.
    private static func clip(_ text: String) -> String {
        text.count <= 64 ? text : String(text.prefix(64)) + "…"
    }
}
