/// A request's query string, decoded as libevent's `evhttp_parse_query_str` decodes one (`&`
/// between pairs, `=` in each; names as sent, values with percent escapes and `+` for a space;
/// a trailing `&` is ignored; a pair without `=` or with an empty name is malformed), with typed, range-checked lookups whose errors name the parameter.
/// Decoded here, in the request's own bytes: libevent's parser made three allocations per pair,
/// among the largest costs of a `/cpu?work=0` request on the loop (perf, bench/http_core.sh).
public struct QueryParameters: Sendable {
    private(set) var pairs: [(name: String, value: String)] = []

    public init(_ query: String?) throws(RequestError) {
        guard let query, !query.isEmpty else { return }
        var text = query, decoded: [(name: String, value: String)] = [], failure: RequestError?
        text.withUTF8 { bytes in
            // %00 anywhere, in a name too: whatever reads it as a C string would cut it short.
            if bytes.indices.contains(where: { bytes[$0] == UInt8(ascii: "%") && bytes.count - $0 >= 3
                && bytes[$0 + 1] == UInt8(ascii: "0") && bytes[$0 + 2] == UInt8(ascii: "0") }) {
                failure = RequestError(400, "query string contains an encoded NUL byte (%00)")
                return
            }
            var pairs = bytes.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: false)
            // A trailing `&` ends the list; an empty pair anywhere else is malformed.
            if pairs.count > 1 && pairs.last!.isEmpty { pairs.removeLast() }
            for pair in pairs {
                guard let equals = pair.firstIndex(of: UInt8(ascii: "=")), equals != pair.startIndex else {
                    failure = RequestError(400, "malformed query string")
                    return
                }
                decoded.append((String(decoding: pair[..<equals], as: UTF8.self), Self.decode(pair[(equals + 1)...])))
            }
        }
        if let failure { throw failure }
        pairs = decoded
    }

    /// Percent escapes with two hex digits decode, `+` is a space, anything else stays as sent.
    /// (`%00` never gets here.)
    private static func decode(_ encoded: Slice<UnsafeBufferPointer<UInt8>>) -> String {
        guard encoded.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else {
            return String(decoding: encoded, as: UTF8.self)
        }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(encoded.count)
        var index = encoded.startIndex
        while index < encoded.endIndex {
            let byte = encoded[index]
            if byte == UInt8(ascii: "%"), encoded.endIndex - index >= 3,
               let high = hexValue(encoded[index + 1]), let low = hexValue(encoded[index + 2]) {
                decoded.append(high << 4 | low)
                index += 3
            } else {
                decoded.append(byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
                index += 1
            }
        }
        return String(decoding: decoded, as: UTF8.self)
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
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
        guard let text = try value(name) else {
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

    /// A share from 0 to 1, written as decimal digits (`0.9`, `1`, `.5`): no exponent, sign,
    /// `nan` or `inf`, which Double's own parser would take.
    public func fraction(_ name: String, default fallback: Double) throws(RequestError) -> Double {
        guard let text = try value(name) else { return fallback }
        let digits = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard !text.isEmpty, text != ".", digits.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
              let value = Double(text) else {
            throw RequestError(400, "query parameter '\(name)' must be a decimal from 0 to 1, got '\(Self.clip(text))'")
        }
        guard (0...1).contains(value) else {
            throw RequestError(400, "query parameter '\(name)' must be from 0 to 1, got \(Self.clip(text))")
        }
        return value
    }

    /// The one value of `name`, or nil when it is absent.
    private func value(_ name: String) throws(RequestError) -> String? {
        var found: String?
        for pair in pairs where pair.name == name {
            guard found == nil else { throw RequestError(400, "query parameter '\(name)' is given more than once") }
            found = pair.value
        }
        return found
    }

    /// Echoed input is cut short so an error body never grows with what a client sends.
    private static func clip(_ text: String) -> String {
        text.count <= 64 ? text : String(text.prefix(64)) + "…"
    }
}
