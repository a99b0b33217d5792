import Foundation

/// memcached's meta protocol, apart from any socket: each operation is a request to write and
/// a parser for its reply, so the blocking connection (a handler thread's) and the loop's
/// non-blocking one speak it the same way.
///
/// `mg` reads, `ms` writes (mode E, add, first, so a PUT can say whether it created or
/// replaced; then mode S), `md` deletes and `stats` reads the server's figures. A key without
/// spaces goes as it is; one with spaces goes base64-encoded with the `b` flag (memcached keys
/// cannot hold spaces), which allows 186 bytes. The content type travels inside the value: one
/// length byte, the content type, then the bytes.
struct MemcachedCommand: Sendable {
    let request: [UInt8]
    /// The reply, parsed from the front of `input` and consumed; nil while it is incomplete.
    let parse: @Sendable (inout MemcachedInput) throws(CacheFailure) -> MemcachedReply?

    /// memcached's default item size limit (`-I 1m`), less the item's own overhead and the
    /// content-type header.
    static let maxEntryBytes = 1_048_576 - 512

    /// The reply of a command that needs no round trip (a PUT too large for memcached), which
    /// no connection should be taken for: memcached being down must not turn a 413 into a 503.
    func answerWithoutSending() throws(CacheFailure) -> MemcachedReply? {
        guard request.isEmpty else { return nil }
        var nothing = MemcachedInput()
        return try parse(&nothing)
    }

    static func make(_ operation: CacheOperation) throws(CacheFailure) -> MemcachedCommand {
        switch operation {
        case .get(let key, _): return try get(key)
        case .put(let key, let entry, let timeToLive): return try put(key, entry, timeToLive: timeToLive)
        case .remove(let key): return try remove(key)
        case .statistics: return statistics
        }
    }

    static func get(_ key: CacheKey) throws(CacheFailure) -> MemcachedCommand {
        let wire = try wireKey(key)
        return MemcachedCommand(request: Array("mg \(wire.key)\(wire.flags) v\r\n".utf8)) { input throws(CacheFailure) in
            var probe = input
            guard let line = probe.line() else { return nil }
            if line == "EN" {
                input = probe
                return .outcome(.entry(nil))
            }
            let fields = line.split(separator: " ")
            guard fields.count >= 2, fields[0] == "VA", let length = Int(fields[1]) else { throw unexpected(line) }
            guard let data = probe.data(length) else { return nil }
            input = probe
            return .outcome(.entry(try decode(data)))
        }
    }

    static func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int) throws(CacheFailure) -> MemcachedCommand {
        let wire = try wireKey(key)
        let contentType = Array(entry.contentType.utf8.prefix(255))
        let value = [UInt8(contentType.count)] + contentType + entry.value
        guard value.count <= maxEntryBytes else {
            return MemcachedCommand(request: []) { _ throws(CacheFailure) in .outcome(.stored(.tooLarge)) }
        }
        // Add first: stored means created; "not stored" means the key exists, so set it.
        @Sendable func store(mode: String) -> MemcachedCommand {
            MemcachedCommand(request: Array("ms \(wire.key) \(value.count)\(wire.flags) T\(timeToLive) M\(mode)\r\n".utf8) + value + [13, 10]) { input throws(CacheFailure) in
                guard let line = input.line() else { return nil }
                switch line {
                case "HD": return .outcome(.stored(mode == "E" ? .created : .replaced))
                case "NS" where mode == "E": return .next(store(mode: "S"))
                case _ where line.hasPrefix("SERVER_ERROR object too large"): return .outcome(.stored(.tooLarge))
                default: throw unexpected(line)
                }
            }
        }
        return store(mode: "E")
    }

    static func remove(_ key: CacheKey) throws(CacheFailure) -> MemcachedCommand {
        let wire = try wireKey(key)
        return MemcachedCommand(request: Array("md \(wire.key)\(wire.flags)\r\n".utf8)) { input throws(CacheFailure) in
            guard let line = input.line() else { return nil }
            switch line {
            case "HD": return .outcome(.removed(true))
            case "NF": return .outcome(.removed(false))
            default: throw unexpected(line)
            }
        }
    }

    /// Expirations are what memcached counts as expired items it freed (`reclaimed`, by its LRU
    /// maintenance and by reuse, and `crawler_reclaimed`, by its LRU crawler); its
    /// `get_expired` does not count meta reads. `limit_maxbytes` is its `-m`.
    static let statistics = MemcachedCommand(request: Array("stats\r\n".utf8)) { input throws(CacheFailure) in
        var probe = input
        var figures: [String: Int] = [:]
        while let line = probe.line() {
            if line == "END" {
                input = probe
                return .figures(figures)
            }
            let fields = line.split(separator: " ")
            guard fields.count == 3, fields[0] == "STAT" else { throw unexpected(line) }
            if let value = Int(fields[2]) { figures[String(fields[1])] = value }
        }
        return nil
    }

    /// The key as memcached reads it, and the flag to send with it: as it is, or base64 with
    /// the `b` flag when it holds a space.
    static func wireKey(_ key: CacheKey) throws(CacheFailure) -> (key: String, flags: String) {
        guard key.bytes.contains(UInt8(ascii: " ")) else { return (String(decoding: key.bytes, as: UTF8.self), "") }
        let encoded = Data(key.bytes).base64EncodedString()
        guard encoded.count <= 250 else {
            throw CacheFailure(400, "a cache key with spaces can be at most 186 bytes in memcached; this one is \(key.bytes.count)")
        }
        return (encoded, " b")
    }

    private static func decode(_ value: [UInt8]) throws(CacheFailure) -> CacheEntry {
        guard let length = value.first.map(Int.init), value.count > length else {
            throw CacheFailure(502, "memcached holds a value for this key that Threadbare did not store (no content-type header)")
        }
        return CacheEntry(value: Array(value[(1 + length)...]), contentType: String(decoding: value[1..<(1 + length)], as: UTF8.self))
    }

    private static func unexpected(_ line: String) -> CacheFailure {
        CacheFailure(502, "memcached answered '\(line.prefix(120))'")
    }
}

/// What a reply amounts to: an outcome, the server's figures, or another command to send
/// (a PUT whose add found the key).
enum MemcachedReply: Sendable {
    case outcome(CacheOutcome)
    case figures([String: Int])
    case next(MemcachedCommand)
}

/// Bytes read from memcached and not yet parsed.
struct MemcachedInput {
    private(set) var bytes: [UInt8] = []
    private var start = 0

    mutating func append(_ more: UnsafeRawBufferPointer) {
        if start > 0 && start == bytes.count {
            bytes.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 64 * 1024 {
            bytes.removeFirst(start)
            start = 0
        }
        bytes.append(contentsOf: more)
    }

    /// The next line without its CRLF, consumed; nil until a whole line is there.
    mutating func line() -> String? {
        guard let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let line = bytes[start..<end].last == UInt8(ascii: "\r") ? bytes[start..<(end - 1)] : bytes[start..<end]
        start = end + 1
        return String(decoding: line, as: UTF8.self)
    }

    /// `count` bytes of data and the CRLF that ends them, consumed; nil until all are there.
    mutating func data(_ count: Int) -> [UInt8]? {
        guard bytes.count - start >= count + 2 else { return nil }
        let data = Array(bytes[start..<(start + count)])
        start += count + 2
        return data
    }
}
