import CLibevent
#if canImport(Glibc)
import Glibc
#endif

/// The in-process cache over HTTP: what threads share and processes cannot.
enum CacheEndpoints {
    static let maxKeyBytes = 250
    /// As memcached's relative expiry: up to 30 days.
    static let maxTimeToLive = 30 * 24 * 3_600

    static let statistics = Route.responder(
        name: "cache_stats", pattern: .exact("/cache"), methods: [.get],
        summary: "cache statistics: backend, entries, bytes, hits, misses, evictions, expirations"
    ) { request, context throws(RequestError) in
        try QueryParameters(request.query).allowOnly([])
        let cache = context.cache
        let statistics = try using(context) { cache throws(CacheFailure) in try cache.statistics }
        var answer = statistics.json(entryLimit: cache.entryLimit, byteLimit: cache.byteLimit)
            .adding("backend", .string(cache.name)).adding("max_entry_bytes", .integer(cache.maxEntryBytes))
        for (name, value) in cache.details { answer = answer.adding(name, value) }
        if let seat = context.status.seat {
            answer = answer.adding("workers", workersJSON(seat, context.status, cache: cache, total: statistics))
        }
        return .json(answer)
    }

    static let entry = Route.responder(
        name: "cache", pattern: .prefix("/cache/"), methods: [.get, .put, .delete],
        summary: "GET the stored bytes (compute=N: read through, computing a missing value with N work units), PUT a body (201 created, 200 replaced; ttl=S: expires after S seconds), DELETE (204)",
        guarded: [.put, .delete]
    ) { request, context throws(RequestError) in
        let parameters = try QueryParameters(request.query)
        switch request.method {
        case .put: try parameters.allowOnly(["ttl"])
        case .get:
            guard parameters.has("compute") || !parameters.has("ttl") else {
                throw RequestError(400, "ttl on a read needs compute: it is how long the value a miss computes is kept")
            }
            try parameters.allowOnly(["compute", "ttl"])
        default: try parameters.allowOnly([])
        }
        let timeToLive = parameters.has("ttl") ? try parameters.integer("ttl", in: 0...maxTimeToLive) : 0
        let key = try decodeKey(String(request.path.dropFirst("/cache/".count)))
        // prefork: other workers' /cache answers read this worker's figures from the scoreboard.
        defer { context.status.seat?.publish(context.status) }
        switch request.method {
        case .put:
            let entry = CacheEntry(value: request.body, contentType: request.contentType ?? "application/octet-stream")
            let stored: JSONValue = ["key": .string(String(decoding: key.bytes, as: UTF8.self)), "bytes": .integer(request.body.count)]
            switch try using(context, { cache throws(CacheFailure) in try cache.put(key, entry, timeToLive: timeToLive) }) {
            case .created: return .json(stored, status: 201)
            case .replaced: return .json(stored, status: 200)
            case .tooLarge:
                throw RequestError(413, "entry of \(key.bytes.count + request.body.count) bytes is larger than the cache allows per entry (\(context.cache.maxEntryBytes))")
            }
        case .delete:
            guard try using(context, { cache throws(CacheFailure) in try cache.remove(key) }) else {
                throw RequestError(404, "no cache entry for this key")
            }
            return HTTPResponse(status: 204, contentType: "application/json", body: [])
        default:
            let compute = parameters.has("compute") ? try parameters.integer("compute", in: 0...context.limits.cpuMaxWork) : nil
            if let entry = try using(context, { cache throws(CacheFailure) in try cache.get(key) }) {
                return HTTPResponse(status: 200, contentType: entry.contentType, body: entry.value, headers: compute == nil ? [] : [("X-Cache", "hit")])
            }
            guard let compute else { throw RequestError(404, "no cache entry for this key") }
            // Read-through, the pattern whose hit ratio decides a service's throughput: a miss
            // computes the value as handler code (under the lock, with its check points),
            // stores it and answers with it.
            let value = Array(CPUWork.hex(try CPUWork.run(units: compute) { () throws(RequestError) in try context.checkpoint() }).utf8)
            // Too large to keep (a tiny max_entry_bytes) is still an answer, just not a stored one.
            let computed = CacheEntry(value: value, contentType: "text/plain; charset=utf-8")
            _ = try using(context) { cache throws(CacheFailure) in try cache.put(key, computed, timeToLive: timeToLive) }
            return HTTPResponse(status: 200, contentType: "text/plain; charset=utf-8", body: value, headers: [("X-Cache", "miss")])
        }
    }

    /// Runs one cache operation, without the interpreter lock when it waits on the network; a
    /// failure (memcached down) becomes the request's error.
    private static func using<Result>(_ context: HandlerContext, _ operation: (any CacheBackend) throws(CacheFailure) -> Result) throws(RequestError) -> Result {
        let cache = context.cache
        let outcome: Swift.Result<Result, CacheFailure> = cache.blocksOnNetwork
            ? context.lock.withReleased { Swift.Result { () throws(CacheFailure) in try operation(cache) } }
            : Swift.Result { () throws(CacheFailure) in try operation(cache) }
        switch outcome {
        case .success(let value): return value
        case .failure(let failure):
            throw RequestError(failure.status, failure.message)
        }
    }

    /// The key is the percent-decoded rest of the path: non-empty, at most 250 bytes (as in
    /// memcached), no control characters, valid UTF-8 (so it can be echoed in JSON).
    static func decodeKey(_ raw: String) throws(RequestError) -> CacheKey {
        var size = 0
        guard let decoded = evhttp_uridecode(raw, 0, &size) else { throw RequestError(400, "malformed cache key") }
        defer { free(decoded) }
        let bytes = UnsafeRawBufferPointer(start: decoded, count: size)
        guard !bytes.isEmpty else { throw RequestError(400, "empty cache key") }
        guard bytes.count <= maxKeyBytes else {
            throw RequestError(400, "cache key is \(bytes.count) bytes; the limit is \(maxKeyBytes)")
        }
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
            throw RequestError(400, "cache key contains a control character")
        }
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw RequestError(400, "cache key is not valid UTF-8")
        }
        return CacheKey(Array(bytes))
    }
}

/// prefork: each worker's figures (published after every cache request). With local caches
/// the total sums them, counting a key once per worker that stored it; with the shared cache
/// each worker lists the hits, misses, evictions and expirations its requests caused, beside
/// the one cache's entries, and the total is that cache.
private func workersJSON(_ seat: ScoreboardSeat, _ status: ServerStatus, cache: any CacheBackend, total shared: CacheStatistics) -> JSONValue {
    seat.publish(status)
    let workers = seat.scoreboard.workers()
    let copies = cache.isSharedByProcesses ? 1 : workers.count
    var total = CacheStatistics()
    let each: [JSONValue] = workers.map { worker in
        total += worker.cache
        var figures = worker.cache
        // One cache: its entries as just counted, not as each worker last saw them.
        if cache.isSharedByProcesses { (figures.entries, figures.bytes) = (shared.entries, shared.bytes) }
        return figures.json(entryLimit: cache.entryLimit, byteLimit: cache.byteLimit).adding("pid", .integer(Int(worker.pid)))
    }
    if cache.isSharedByProcesses { total = shared }
    return ["each": .array(each), "total": total.json(entryLimit: cache.entryLimit.map { $0 * copies }, byteLimit: cache.byteLimit.map { $0 * copies })]
}

extension CacheStatistics {
    func json(entryLimit: Int?, byteLimit: Int?) -> JSONValue {
        ["entries": .integer(entries), "bytes": .integer(bytes), "hits": .integer(hits), "misses": .integer(misses),
         "evictions": .integer(evictions), "expirations": .integer(expirations),
         "max_entries": entryLimit.map { .integer($0) } ?? .null, "max_bytes": byteLimit.map { .integer($0) } ?? .null]
    }
}
