import CLibevent
#if canImport(Glibc)
import Glibc
#endif

/// The in-process cache over HTTP: what threads share and processes cannot.
enum CacheEndpoints {
    static let maxKeyBytes = 250
    static let untyped = "application/octet-stream"
    /// What a read-through answers: the hex text its computation makes.
    static let computedType = "text/plain; charset=utf-8"
    /// As memcached's relative expiry: up to 30 days.
    static let maxTimeToLive = 30 * 24 * 3_600

    static let statistics = Route.application(
        name: "cache_stats", pattern: .exact("/cache"), methods: [.get],
        summary: "cache statistics: backend, entries, bytes, hits, misses, evictions, expirations; every interpreter's and every worker's"
    ) { request, context throws(RequestError) in
        try QueryParameters(request.query).allowOnly([])
        return .awaitsCache(.statistics) { outcome, context throws(RequestError) in
            guard case .statistics(var statistics) = try settled(outcome, context) else { throw mismatch }
            let cache = context.cache
            let workers = context.status.seat.map { workersJSON($0, context.status, cache: cache, total: statistics) }
            // The one cache's reads are every worker's (see countsReadsPerProcess).
            if let total = workers?.total, cache.countsReadsPerProcess { (statistics.hits, statistics.misses) = (total.hits, total.misses) }
            var answer = statistics.json(entryLimit: cache.entryLimit, byteLimit: cache.byteLimit)
                .adding("backend", .string(cache.name)).adding("max_entry_bytes", .integer(cache.maxEntryBytes))
            for (name, value) in cache.details { answer = answer.adding(name, value) }
            if let counts = cache.referenceCounts { answer = answer.adding("refcount", counts.json) }
            let domains = context.status.domains
            if domains.count > 1 && !cache.isSharedByProcesses {
                answer = answer.adding("interpreters", interpretersJSON(domains))
            }
            if let workers { answer = answer.adding("workers", workers.json) }
            return .response(.json(answer))
        }
    }

    static let entry = Route.application(
        name: "cache", pattern: .prefix("/cache/"), methods: [.get, .put, .delete],
        summary: "GET the stored bytes (compute=N: read through, computing a missing value with N work units; touches=N: the handler reads the object N times, writing its reference count as cache.refcount says), PUT a body (201 created, 200 replaced; ttl=S: expires after S seconds), DELETE (204)",
        guarded: [.put, .delete]
    ) { request, context throws(RequestError) in
        let parameters = try QueryParameters(request.query)
        switch request.method {
        case .put: try parameters.allowOnly(["ttl"])
        case .get:
            guard parameters.has("compute") || !parameters.has("ttl") else {
                throw RequestError(400, "ttl on a read needs compute: it is how long the value a miss computes is kept")
            }
            try parameters.allowOnly(["compute", "ttl", "touches"])
        default: try parameters.allowOnly([])
        }
        let timeToLive = parameters.has("ttl") ? try parameters.integer("ttl", in: 0...maxTimeToLive) : 0
        let key = try decodeKey(String(request.path.dropFirst("/cache/".count)))
        switch request.method {
        case .put:
            let entry = CacheEntry(value: request.body, contentType: request.contentType ?? untyped)
            return .awaitsCache(.put(key, entry, timeToLive: timeToLive)) { outcome, context throws(RequestError) in
                guard case .stored(let stored) = try settled(outcome, context) else { throw mismatch }
                let answer: JSONValue = ["key": .string(String(decoding: key.bytes, as: UTF8.self)), "bytes": .integer(request.body.count)]
                switch stored {
                case .created: return .response(.json(answer, status: 201))
                case .replaced: return .response(.json(answer, status: 200))
                case .tooLarge:
                    throw RequestError(413, "entry of \(key.bytes.count + request.body.count) bytes is larger than the cache allows per entry (\(context.cache.maxEntryBytes))")
                }
            }
        case .delete:
            return .awaitsCache(.remove(key)) { outcome, context throws(RequestError) in
                guard case .removed(let removed) = try settled(outcome, context) else { throw mismatch }
                guard removed else { throw RequestError(404, "no cache entry for this key") }
                return .response(HTTPResponse(status: 204, contentType: "application/json", body: []))
            }
        default:
            let compute = parameters.has("compute") ? try parameters.integer("compute", in: 0...context.limits.cpuMaxWork) : nil
            if parameters.has("touches") && context.cache.referenceCounts == nil {
                throw RequestError(400, "touches reads a shared object, and cache.backend \(context.cache.name) gives each read a copy of its own")
            }
            let touches = try parameters.integer("touches", in: 0...context.limits.cpuMaxWork, default: 1)
            return .awaitsCache(.get(key, touches: touches)) { outcome, context throws(RequestError) in
                // Read-through, the pattern whose hit ratio decides a service's throughput: a miss
                // computes the value as handler code (under the lock, with its check points),
                // stores it and answers with it. A cache that cannot be reached (the memcached
                // server holding this key is down) is a miss that is not stored.
                if let compute, case .failure(let failure) = outcome, failure.status == 503, !failure.connectionsBusy {
                    _ = try? settled(outcome, context)
                    let value = Array(CPUWork.hex(try context.runPython(units: compute)).utf8)
                    return .response(HTTPResponse(status: 200, contentType: computedType, body: value,
                                                  headers: [("X-Cache", "unreachable")]))
                }
                guard case .entry(let found) = try settled(outcome, context) else { throw mismatch }
                if let found {
                    // A read-through's values are its computation's text, stored untyped (so
                    // memcached keeps no content-type note for them).
                    let type = compute != nil && found.contentType == untyped ? computedType : found.contentType
                    return .response(HTTPResponse(status: 200, contentType: type, body: found.value,
                                                  headers: compute == nil ? [] : [("X-Cache", "hit")]))
                }
                guard let compute else { throw RequestError(404, "no cache entry for this key") }
                let value = Array(CPUWork.hex(try context.runPython(units: compute)).utf8)
                let computed = CacheEntry(value: value, contentType: untyped)
                return .awaitsCache(.put(key, computed, timeToLive: timeToLive)) { outcome, context throws(RequestError) in
                    // Too large to keep (a tiny max_entry_bytes), or its server gone since the
                    // read, is still an answer, just not a stored one.
                    _ = try? settled(outcome, context)
                    return .response(HTTPResponse(status: 200, contentType: computedType, body: value,
                                                  headers: [("X-Cache", "miss")]))
                }
            }
        }
    }

    /// A failure (memcached down) becomes the request's error. prefork: other workers' /cache
    /// answers read this worker's figures from the scoreboard, so they are published as each
    /// operation is done.
    private static func settled(_ outcome: Result<CacheOutcome, CacheFailure>, _ context: HandlerContext) throws(RequestError) -> CacheOutcome {
        context.status.seat?.publish(context.status)
        switch outcome {
        case .success(let value): return value
        case .failure(let failure): throw RequestError(failure.status, failure.message)
        }
    }

    private static let mismatch = RequestError(500, "the cache answered another operation than the one asked")

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

/// subinterpreters: each interpreter's own cache, read where it lies (every shard has its own
/// mutex), and their sum.
private func interpretersJSON(_ domains: [InterpreterDomain]) -> JSONValue {
    var total = CacheStatistics()
    let each: [JSONValue] = domains.map { domain in
        let figures = domain.cache.processStatistics
        total += figures
        return figures.json(entryLimit: domain.cache.entryLimit, byteLimit: domain.cache.byteLimit).adding("interpreter", .integer(domain.index))
    }
    let limit = { (one: Int?) in one.map { $0 * domains.count } }
    return ["each": .array(each), "total": total.json(entryLimit: limit(domains[0].cache.entryLimit), byteLimit: limit(domains[0].cache.byteLimit))]
}

/// prefork: each worker's figures (published after every cache request). With local caches
/// the total sums them, counting a key once per worker that stored it; with the shared cache
/// each worker lists the hits, misses, evictions and expirations its requests caused, beside
/// the one cache's entries, and the total is that cache.
private func workersJSON(_ seat: ScoreboardSeat, _ status: ServerStatus, cache: any CacheBackend,
                         total shared: CacheStatistics) -> (json: JSONValue, total: CacheStatistics) {
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
    if cache.isSharedByProcesses {
        // One cache; memcached's reads are counted by each worker (see countsReadsPerProcess).
        let reads = (total.hits, total.misses)
        total = shared
        if cache.countsReadsPerProcess { (total.hits, total.misses) = reads }
    }
    return (["each": .array(each), "total": total.json(entryLimit: cache.entryLimit.map { $0 * copies }, byteLimit: cache.byteLimit.map { $0 * copies })],
            total)
}

extension CacheStatistics {
    func json(entryLimit: Int?, byteLimit: Int?) -> JSONValue {
        ["entries": .integer(entries), "bytes": .integer(bytes), "hits": .integer(hits), "misses": .integer(misses),
         "evictions": .integer(evictions), "expirations": .integer(expirations),
         "max_entries": entryLimit.map { .integer($0) } ?? .null, "max_bytes": byteLimit.map { .integer($0) } ?? .null]
    }
}
