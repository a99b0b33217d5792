import CLibevent

/// A request's query string, decoded by libevent, with typed, range-checked lookups whose
/// errors name the parameter.
public struct QueryParameters: Sendable {
    private var pairs: [(name: String, value: String)] = []

    public init(_ query: String?) throws(RequestError) {
        guard let query, !query.isEmpty else { return }
        // libevent decodes into C strings, where %00 would silently cut a name or value short.
        guard !Self.containsEncodedNUL(query) else {
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

    /// `%00` in any case, found in the bytes: this runs for every request with a query.
    private static func containsEncodedNUL(_ query: String) -> Bool {
        var utf8 = query.utf8.makeIterator()
        var zeros = -1
        while let byte = utf8.next() {
            if byte == UInt8(ascii: "%") {
                zeros = 0
            } else if byte == UInt8(ascii: "0") && zeros >= 0 {
                zeros += 1
                if zeros == 2 { return true }
            } else {
                zeros = -1
            }
        }
        return false
    }

    /// Refuses parameters other than `known`, so a typo is an error rather than a default.
    /// A handful of names: a list compares faster than a set is built.
    public func allowOnly(_ known: [String]) throws(RequestError) {
        for pair in pairs where !known.contains(pair.name) {
            throw RequestError(400, "unknown query parameter '\(Self.clip(pair.name))'")
        }
    }

    public func has(_ name: String) -> Bool {
        pairs.contains { $0.name == name }
    }

    public func integer(_ name: String, in range: ClosedRange<Int>, default fallback: Int? = nil) throws(RequestError) -> Int {
        var found: String?
        for pair in pairs where pair.name == name {
            guard found == nil else { throw RequestError(400, "query parameter '\(name)' is given more than once") }
            found = pair.value
        }
        guard let text = found else {
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
