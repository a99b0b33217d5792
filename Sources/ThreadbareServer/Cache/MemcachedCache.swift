import Foundation
import Synchronization

/// `cache.backend: memcached`: the entries live in a memcached server, as a Python service
/// moves shared state out of its processes; every lookup pays a round trip and the encoding.
/// Each process has its own small pool of connections (`MemcachedConnectionPool`); a prefork
/// master opens none, so no socket is shared across a fork.
///
/// It speaks memcached's meta protocol (1.6+): `mg` to read, `ms` to write (`MS` mode E, add,
/// first, so a PUT can say whether it created or replaced), `md` to delete, and `stats` for the
/// server's own figures. A key without spaces goes as it is; one with spaces goes base64-encoded
/// with the `b` flag (memcached keys cannot hold spaces), which allows 186 bytes. The content
/// type travels inside the value: one length byte, the content type, then the bytes.
///
/// Eviction and expiry are memcached's: LRU under its memory limit (`-m`), TTLs as given.
/// Expirations are what memcached counts as expired items it freed (`reclaimed`, by its LRU
/// maintenance and by reuse, and `crawler_reclaimed`, by its LRU crawler); its `get_expired`
/// does not count meta reads.
public final class MemcachedCache: CacheBackend {
    public let host: String
    public let port: Int
    private let pool: MemcachedConnectionPool
    private let hits = Atomic<Int>(0)
    private let misses = Atomic<Int>(0)
    /// The server's figures from the last `stats` this process read.
    private let lastSeen = Locked(CacheStatistics())
    private let memoryLimit = Atomic<Int>(0)

    /// memcached's default item size limit (`-I 1m`), less the item's own overhead and the
    /// content-type header; a larger item is refused by memcached and answered 413.
    public var maxEntryBytes: Int { 1_048_576 - 512 }
    public var name: String { "memcached" }
    public var isSharedByProcesses: Bool { true }
    public var blocksOnNetwork: Bool { true }
    public var entryLimit: Int? { nil }
    public var byteLimit: Int? {
        let limit = memoryLimit.load(ordering: .relaxed)
        return limit > 0 ? limit : nil
    }

    public var details: [(String, JSONValue)] {
        [("address", .string("\(host):\(port)")), ("reachable", .bool(isReachable))]
    }

    /// False from a failed connect until the next one that succeeds.
    public var isReachable: Bool { !pool.isUnreachable }

    /// `address` is `host:port`; the port is required.
    public init(address: String, connections: Int, timeoutMilliseconds: Int) throws {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (1...65_535).contains(port), colon != address.startIndex else {
            throw CacheSetupError(description: "cache.memcached: expected host:port, got '\(address)'")
        }
        host = String(address[..<colon]).trimmingBrackets
        self.port = port
        pool = MemcachedConnectionPool(host: host, port: port, capacity: connections, timeoutMilliseconds: timeoutMilliseconds)
    }

    public func get(_ key: CacheKey) throws(CacheFailure) -> CacheEntry? {
        let wire = try Self.wireKey(key)
        let entry = try pool.withConnection { connection throws(CacheFailure) -> CacheEntry? in
            try connection.send(Array("mg \(wire.key)\(wire.flags) v\r\n".utf8))
            let line = try connection.readLine()
            if line == "EN" { return nil }
            let fields = line.split(separator: " ")
            guard fields.count >= 2, fields[0] == "VA", let length = Int(fields[1]) else { throw Self.unexpected(line) }
            return try Self.decode(try connection.readData(length))
        }
        if entry == nil { misses.add(1, ordering: .relaxed) } else { hits.add(1, ordering: .relaxed) }
        return entry
    }

    public func put(_ key: CacheKey, _ entry: CacheEntry, timeToLive: Int) throws(CacheFailure) -> CachePutOutcome {
        let wire = try Self.wireKey(key)
        let contentType = Array(entry.contentType.utf8.prefix(255))
        let value = [UInt8(contentType.count)] + contentType + entry.value
        guard value.count <= maxEntryBytes else { return .tooLarge }
        return try pool.withConnection { connection throws(CacheFailure) -> CachePutOutcome in
            // Add first: stored means created; "not stored" means the key exists, so set it.
            for mode in ["E", "S"] {
                try connection.send(Array("ms \(wire.key) \(value.count)\(wire.flags) T\(timeToLive) M\(mode)\r\n".utf8) + value + [13, 10])
                let line = try connection.readLine()
                switch line {
                case "HD": return mode == "E" ? .created : .replaced
                case "NS" where mode == "E": continue
                case _ where line.hasPrefix("SERVER_ERROR object too large"): return .tooLarge
                default: throw Self.unexpected(line)
                }
            }
            throw Self.unexpected("NS")
        }
    }

    public func remove(_ key: CacheKey) throws(CacheFailure) -> Bool {
        let wire = try Self.wireKey(key)
        return try pool.withConnection { connection throws(CacheFailure) -> Bool in
            try connection.send(Array("md \(wire.key)\(wire.flags)\r\n".utf8))
            let line = try connection.readLine()
            switch line {
            case "HD": return true
            case "NF": return false
            default: throw Self.unexpected(line)
            }
        }
    }

    public var statistics: CacheStatistics {
        get throws(CacheFailure) {
            let figures = try pool.withConnection { connection throws(CacheFailure) -> [String: Int] in
                try connection.send(Array("stats\r\n".utf8))
                var figures: [String: Int] = [:]
                while true {
                    let line = try connection.readLine()
                    if line == "END" { return figures }
                    let fields = line.split(separator: " ")
                    guard fields.count == 3, fields[0] == "STAT" else { throw Self.unexpected(line) }
                    if let value = Int(fields[2]) { figures[String(fields[1])] = value }
                }
            }
            let statistics = CacheStatistics(
                entries: figures["curr_items"] ?? 0, bytes: figures["bytes"] ?? 0,
                hits: figures["get_hits"] ?? 0, misses: figures["get_misses"] ?? 0, evictions: figures["evictions"] ?? 0,
                expirations: (figures["reclaimed"] ?? 0) + (figures["crawler_reclaimed"] ?? 0))
            lastSeen.withLock { $0 = statistics }
            memoryLimit.store(figures["limit_maxbytes"] ?? 0, ordering: .relaxed)
            return statistics
        }
    }

    public var processStatistics: CacheStatistics {
        var figures = lastSeen.withLock { $0 }
        figures.hits = hits.load(ordering: .relaxed)
        figures.misses = misses.load(ordering: .relaxed)
        // Evictions and expirations happen inside memcached, to no one process.
        figures.evictions = 0
        figures.expirations = 0
        return figures
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

private extension String {
    /// `[::1]` names the IPv6 host `::1`.
    var trimmingBrackets: String { hasPrefix("[") && hasSuffix("]") ? String(dropFirst().dropLast()) : self }
}
