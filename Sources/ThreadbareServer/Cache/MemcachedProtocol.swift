import Foundation

/// memcached's meta protocol, apart from any socket: each operation is a request to write and
/// a parser for its reply, so the blocking connection (a handler thread's) and the loop's
/// non-blocking one speak it the same way.
///
/// `mg` reads, `ms` writes (mode E, add, first, so a PUT can say whether it created or
/// replaced; then mode S), `md` deletes and `stats` reads the server's figures. A key without
/// spaces goes as it is; one with spaces goes base64-encoded with the `b` flag (memcached keys
/// cannot hold spaces), which allows 186 bytes.
///
/// A value is stored as the bytes that were PUT, with client flags 0, so any other client
/// (pylibmc reads flags 0 as `bytes`) reads what Threadbare wrote, and Threadbare reads what
/// they wrote. The content type lives beside it in a note (`ContentTypeNote`) under a binary
/// key no text-protocol client can name, on the same server, sent in the same write as the
/// value and read in the same round trip.
struct MemcachedCommand: Sendable {
    let request: [UInt8]
    /// The reply, parsed from the front of `input` and consumed; nil while it is incomplete.
    let parse: @Sendable (inout MemcachedInput) throws(CacheFailure) -> MemcachedReply?

    /// memcached's default item size limit (`-I 1m`), less the item's own overhead.
    static let maxEntryBytes = 1_048_576 - 512
    /// What a value that carries no note of its own is.
    static let untypedContentType = "application/octet-stream"

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
        let note = ContentTypeNote.wireKey(for: key)
        return MemcachedCommand(request: Array("mg \(wire.key)\(wire.flags) v\r\nmg \(note) b v\r\n".utf8)) { input throws(CacheFailure) in
            var probe = input
            guard let value = try readValue(&probe), let noted = try readValue(&probe) else { return nil }
            input = probe
            guard let bytes = value else { return .outcome(.entry(nil)) }
            let contentType = noted.flatMap { ContentTypeNote.contentType(in: $0, for: key, describing: bytes) }
            return .outcome(.entry(CacheEntry(value: bytes, contentType: contentType ?? untypedContentType)))
        }
    }

    /// One `mg … v` reply: `.some(nil)` for a miss, nil while incomplete.
    private static func readValue(_ input: inout MemcachedInput) throws(CacheFailure) -> [UInt8]?? {
        guard let line = input.line() else { return nil }
        if line == "EN" { return .some(nil) }
        let fields = line.split(separator: " ")
        guard fields.count >= 2, fields[0] == "VA", let length = Int(fields[1]) else { throw unexpected(line) }
        guard let data = input.data(length) else { return nil }
        return .some(data)
    }

    static func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int) throws(CacheFailure) -> MemcachedCommand {
        let wire = try wireKey(key)
        let value = entry.value
        guard value.count <= maxEntryBytes else {
            return MemcachedCommand(request: []) { _ throws(CacheFailure) in .outcome(.stored(.tooLarge)) }
        }
        // The note follows the value, so it never describes bytes that are not stored: after an
        // add that created the key, or with the set that replaces it. Stored, or removed when
        // there is nothing to note.
        let noteKey = ContentTypeNote.wireKey(for: key)
        let note: [UInt8] = entry.contentType == untypedContentType
            ? Array("md \(noteKey) b\r\n".utf8)
            : { (text: [UInt8]) in Array("ms \(noteKey) \(text.count) b T\(timeToLive) MS\r\n".utf8) + text + [13, 10] }(
                ContentTypeNote.text(entry.contentType, for: key, describing: value))
        @Sendable func noting(_ outcome: CachePutOutcome, after request: [UInt8]) -> MemcachedCommand {
            MemcachedCommand(request: request + note) { input throws(CacheFailure) in
                var probe = input
                if !request.isEmpty {
                    guard let line = probe.line() else { return nil }
                    guard line == "HD" else { throw unexpected(line) }
                }
                guard let noted = probe.line() else { return nil }
                guard ["HD", "NF"].contains(noted) || noted.hasPrefix("SERVER_ERROR") else { throw unexpected(noted) }
                input = probe
                return .outcome(.stored(outcome))
            }
        }
        @Sendable func write(_ mode: String) -> [UInt8] {
            Array("ms \(wire.key) \(value.count)\(wire.flags) T\(timeToLive) M\(mode)\r\n".utf8) + value + [13, 10]
        }
        let untyped = entry.contentType == untypedContentType
        // Add first: stored means created; "not stored" means the key exists, so set it. A new
        // untyped value needs no note at all (a stale one left by an evicted value describes
        // other bytes), which keeps a read-through's miss to one round trip.
        return MemcachedCommand(request: write("E")) { input throws(CacheFailure) in
            guard let line = input.line() else { return nil }
            switch line {
            case "HD" where untyped: return .outcome(.stored(.created))
            case "HD": return .next(noting(.created, after: []))
            case "NS": return .next(noting(.replaced, after: write("S")))
            case _ where line.hasPrefix("SERVER_ERROR object too large"): return .outcome(.stored(.tooLarge))
            default: throw unexpected(line)
            }
        }
    }

    static func remove(_ key: CacheKey) throws(CacheFailure) -> MemcachedCommand {
        let wire = try wireKey(key)
        let request = "md \(wire.key)\(wire.flags)\r\nmd \(ContentTypeNote.wireKey(for: key)) b\r\n"
        return MemcachedCommand(request: Array(request.utf8)) { input throws(CacheFailure) in
            var probe = input
            guard let line = probe.line(), let noted = probe.line() else { return nil }
            guard ["HD", "NF"].contains(noted) else { throw unexpected(noted) }
            input = probe
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

    static func unexpected(_ line: String) -> CacheFailure {
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
