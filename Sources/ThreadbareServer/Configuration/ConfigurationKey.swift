/// One configurable key: its dotted name (`cache.max_entries`), how its text becomes a value,
/// and how the value prints. The table `all` is the single source for the YAML file, the
/// THREADBARE_* environment, `--set`, validation messages and `config check`.
public struct ConfigurationKey: Sendable {
    public let name: String
    public let help: String
    let assign: @Sendable (inout ServerConfiguration, String) throws(ConfigurationValueError) -> Void
    let render: @Sendable (ServerConfiguration) -> String
    /// Gone, kept only to say what replaced it: never printed or listed.
    var isRetired = false
    /// Takes a YAML list in a file.
    var acceptsList = false

    /// The environment variable for this key: THREADBARE_ and the name in capitals, dots as `_`.
    public var environmentName: String {
        "THREADBARE_" + String(name.uppercased().map { $0 == "." ? "_" : $0 })
    }

    /// The YAML section the key sits in (`cache` for `cache.max_entries`), if any.
    var section: String? { name.contains(".") ? String(name.split(separator: ".")[0]) : nil }

    var leaf: String { String(name.split(separator: ".").last!) }

    public static let all: [ConfigurationKey] = [
        preset("mode", \.mode,
               help: "a preset that sets master, executor and lock: " + Mode.Preset.allCases.map(\.rawValue).joined(separator: " | ")),
        boolean("master", \.master, help: "a prefork master supervising `workers` processes (gunicorn's arbiter); false: this process serves"),
        integer("workers", \.workers, 1...Scoreboard.capacity / 2,
                help: "worker processes under the master (default: the machine's cores); 1 without a master"),
        choice("executor", \.executor,
               help: "threads (a pool of handler threads) or loop (handlers run on the event loop that read the request, as asyncio does)"),
        choice("lock", \.lock, help: "global (one GIL per process), per-interpreter (one per interpreter, PEP 684) or none (free threads)"),
        text("host", \.host, help: "address to listen on; 127.0.0.1 unless you mean to serve other hosts"),
        integer("port", \.port, 0...65_535, help: "TCP port; 0 picks a free one"),
        integer("loops", \.loops, 1...64, help: "event-loop threads per process, each with its own SO_REUSEPORT socket"),
        integer("threads", \.threads, 1...1_024,
                help: "handler threads per process (executor: threads), or run_in_executor's pool (executor: loop; default min(32, cores + 4), as asyncio's)"),
        choice("dispatch", \.dispatch,
               help: "executor threads with a lock: locked (a dispatcher thread holds the lock to hand each batch of requests over, and again per finished request, as gunicorn gthread's main thread does; the default) or direct (the loop hands them over, as a server in C does)"),
        number("switch_interval_ms", \.switchIntervalMilliseconds, 0.001...1_000,
               help: "lock global or per-interpreter: how long a waiting thread lets the holder run before asking it to drop the lock (sys.setswitchinterval)"),
        number("free_threading_overhead_percent", \.freeThreadingOverheadPercent, 0...1_000, unit: "percent",
               help: "lock none: extra work per unit of Python, as a free-threaded build runs single-threaded code slower (default \(Self.freeThreading314t) for CPython 3.14t; about 40 for 3.13t)"),
        integer("interpreters", \.interpreters, 1...64, help: "lock: per-interpreter: lock domains, each with its own lock, cache and share of the threads"),
        choice("accept", \.accept, among: ["reuseport", "shared"],
               help: "master: reuseport (a SO_REUSEPORT socket per worker) or shared (one socket all workers accept on)"),
        seconds("worker_timeout", \.workerTimeout, 3...3_600, help: "master: seconds a worker's loop may miss its heartbeat before the master replaces it"),
        integer("max_requests", \.maxRequests, 0...1_000_000_000, help: "master: a worker retires after this many requests; 0 never"),
        integer("max_requests_jitter", \.maxRequestsJitter, 0...1_000_000_000, help: "master: each worker adds a random 0..this to max_requests"),
        integer("max_rss_mb", \.maxRSSMegabytes, 0...1_048_576, help: "master: a worker whose RSS passes this many MiB retires; 0 never"),
        integer("queue_limit", \.queueLimit, 1...1_000_000, help: "requests waiting for a handler before 503"),
        integer("max_connections", \.maxConnections, 1...1_000_000,
                help: "client connections one process keeps open; beyond, a connection's first request gets 503 (gunicorn's worker_connections)"),
        boolean("keepalive", \.keepAlive,
                help: "false: every response closes its connection (gunicorn's sync worker; nginx's keepalive_timeout 0)"),
        boolean("accept_while_busy", \.acceptWhileBusy,
                help: "false: a process holds at most `threads` connections and accepts the next when one closes, so new ones wait in the backlog for a free process (gunicorn's sync worker); needs executor: threads and loops: 1"),
        integer("backlog", \.backlog, 1...65_535, help: "listen(2) backlog per socket"),
        seconds("graceful_timeout", \.gracefulTimeout, 0...3_600, help: "seconds in-flight requests get to finish on SIGTERM"),
        seconds("request_timeout", \.requestTimeout, 0...3_600,
                help: "seconds a handler thread has to answer before the client gets 504 and the handler stops at its next check point; 0 never"),
        seconds("request_read_timeout", \.requestReadTimeout, 0...3_600,
                help: "seconds a request has to arrive whole (head and body) from its first byte, however it trickles; then the connection closes (nginx's client_header_timeout); 0 never"),
        seconds("timeout", \.timeout, 0.001...3_600, help: "seconds a connection may stay silent reading or writing, idle keep-alive included"),
        choice("log_level", \.logLevel, among: ["trace", "debug", "info", "notice", "warning", "error", "critical"], help: "least severe log level printed"),
        secret("auth_token", \.authToken,
               help: "when set, PUT/DELETE /cache/{key}, GET /stats and GET /metrics need Authorization: Bearer <token>"),
        text("log_file", \.logFile, help: "file the logs are appended to (SIGUSR1 reopens it), or - for stderr"),
        integer("limits.max_header_bytes", \.maxHeaderBytes, 256...1_048_576,
                help: "request line plus headers, bytes; libevent refuses more with 400 before the limits below are checked"),
        integer("limits.request_line", \.requestLineBytes, 16...1_048_576, help: "request line, bytes (414 beyond; gunicorn's limit_request_line)"),
        integer("limits.request_fields", \.requestFields, 1...32_768, help: "header fields (431 beyond; gunicorn's limit_request_fields)"),
        integer("limits.request_field_size", \.requestFieldBytes, 8...1_048_576,
                help: "one header field, name to CRLF, bytes (431 beyond; gunicorn's limit_request_field_size)"),
        integer("limits.max_body_bytes", \.maxBodyBytes, 0...1_073_741_824, help: "request body, bytes (413 beyond)"),
        integer("io.max_ms", \.ioMaxMilliseconds, 0...3_600_000, help: "largest ms /io accepts"),
        integer("cpu.max_work", \.cpuMaxWork, 0...1_000_000_000, help: "largest work /cpu accepts"),
        choice("cache.backend", \.cacheBackend, among: ["local", "shm", "memcached"],
               help: "local (each process its own cache, shared by its threads), shm (one shared-memory cache every prefork worker maps) or memcached (a memcached server)"),
        list("cache.memcached", \.cacheMemcachedServers,
             help: "memcached: the pool's servers, host:port each (a YAML list, or comma-separated); keys spread over them as pylibmc's ketama spreads them") { servers throws(ConfigurationValueError) in
            do { _ = try MemcachedCache.parse(servers) } catch {
                let reason = "\(error)"
                throw ConfigurationValueError(reason.hasPrefix("cache.memcached: ") ? String(reason.dropFirst("cache.memcached: ".count)) : reason)
            }
        },
        integer("cache.memcached_connections", \.cacheMemcachedConnections, 1...1_024, help: "memcached: connections each process keeps"),
        integer("cache.memcached_timeout_ms", \.cacheMemcachedTimeoutMilliseconds, 1...60_000,
                help: "memcached: ms a connect, read or write may take before the request gets 503"),
        integer("cache.max_entries", \.cacheMaxEntries, 1...100_000_000, help: "entries the cache holds before evicting"),
        integer("cache.max_bytes", \.cacheMaxBytes, 1...1_099_511_627_776, help: "key plus value bytes the cache holds before evicting"),
        integer("cache.preload", \.cachePreload, 0...10_000_000,
                help: "entries made at start (preload-0, preload-1, ...), before the fork in prefork so workers share them copy-on-write"),
        integer("cache.preload_bytes", \.cachePreloadBytes, 0...1_048_576, help: "value bytes of each preloaded entry"),
        choice("cache.refcount", \.cacheRefcount,
               help: "what a read of a cached object writes: immortal (nothing), plain (a GIL build's count, under its lock) or atomic (a free-threaded build's shared count); default plain with a lock, atomic with lock none"),
        retired("cache.refcount_touch", becauseOf: "cache.refcount: plain (was true) or immortal (was false); atomic, a free-threaded build's shared count, is new"),
    ]

    /// CPython 3.14t's single-thread cost against the GIL build, in percent (see config/nogil.yaml).
    public static let freeThreading314t = 7.0

    public static func named(_ name: String) -> ConfigurationKey? {
        all.first { $0.name == name }
    }

    static var sections: Set<String> { Set(all.compactMap(\.section)) }

    // MARK: Kinds of value

    static func integer(_ name: String, _ path: WritableKeyPath<ServerConfiguration, Int> & Sendable,
                        _ range: ClosedRange<Int>, help: String) -> ConfigurationKey {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            guard let value = Int(text) else {
                throw ConfigurationValueError("expected an integer from \(range.lowerBound) to \(range.upperBound), got '\(text)'")
            }
            guard range.contains(value) else {
                throw ConfigurationValueError("must be from \(range.lowerBound) to \(range.upperBound), got \(value)")
            }
            configuration[keyPath: path] = value
        }, render: { String($0[keyPath: path]) })
    }

    static func boolean(_ name: String, _ path: WritableKeyPath<ServerConfiguration, Bool> & Sendable, help: String) -> ConfigurationKey {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            switch text {
            case "true": configuration[keyPath: path] = true
            case "false": configuration[keyPath: path] = false
            default: throw ConfigurationValueError("expected true or false, got '\(text)'")
            }
        }, render: { String($0[keyPath: path]) })
    }

    static func seconds(_ name: String, _ path: WritableKeyPath<ServerConfiguration, Double> & Sendable,
                        _ range: ClosedRange<Double>, help: String) -> ConfigurationKey {
        number(name, path, range, unit: "seconds", help: help)
    }

    static func number(_ name: String, _ path: WritableKeyPath<ServerConfiguration, Double> & Sendable,
                       _ range: ClosedRange<Double>, unit: String? = nil, help: String) -> ConfigurationKey {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            guard let value = Double(text), value.isFinite else {
                throw ConfigurationValueError("expected a number\(unit.map { " of \($0)" } ?? ""), got '\(text)'")
            }
            guard range.contains(value) else {
                throw ConfigurationValueError("must be from \(range.lowerBound) to \(range.upperBound)\(unit.map { " \($0)" } ?? ""), got \(value)")
            }
            configuration[keyPath: path] = value
        }, render: { String($0[keyPath: path]) })
    }

    static func text(_ name: String, _ path: WritableKeyPath<ServerConfiguration, String> & Sendable, help: String) -> ConfigurationKey {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            guard !text.isEmpty else { throw ConfigurationValueError("must not be empty") }
            configuration[keyPath: path] = text
        }, render: { yamlScalar($0[keyPath: path]) })
    }

    /// Several values: a YAML list in a file, comma-separated anywhere (the file's list arrives
    /// joined with commas). Printed as a YAML flow list.
    /// `check` refuses a list whose items do not make sense together or alone.
    static func list(_ name: String, _ path: WritableKeyPath<ServerConfiguration, [String]> & Sendable, help: String,
                     check: @escaping @Sendable ([String]) throws(ConfigurationValueError) -> Void) -> ConfigurationKey {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            // What `render` prints reads back: a flow list's brackets are not part of the items.
            var listed = Substring(text.filter { !$0.isNewline })
            if listed.first == "[" && listed.last == "]" { listed = listed.dropFirst().dropLast() }
            let items = listed.split(separator: ",", omittingEmptySubsequences: false).map {
                String($0.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
            }
            guard !items.contains(where: \.isEmpty) else {
                throw ConfigurationValueError(items.count == 1 ? "must not be empty" : "expected comma-separated values, got an empty one in '\(text)'")
            }
            try check(items)
            configuration[keyPath: path] = items
        }, render: { "[" + $0[keyPath: path].map(yamlScalar).joined(separator: ", ") + "]" }, acceptsList: true)
    }

    /// A key that is gone: setting it says what replaced it.
    static func retired(_ name: String, becauseOf replacement: String) -> ConfigurationKey {
        ConfigurationKey(name: name, help: "retired: use \(replacement)", assign: { _, _ throws(ConfigurationValueError) in
            throw ConfigurationValueError("retired; use \(replacement)")
        }, render: { _ in "" }, isRetired: true)
    }

    /// A value `config check` never prints: it shows whether one is set.
    static func secret(_ name: String, _ path: WritableKeyPath<ServerConfiguration, String> & Sendable, help: String) -> ConfigurationKey {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            guard text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
                throw ConfigurationValueError("must be printable ASCII without spaces (it travels in an HTTP header)")
            }
            configuration[keyPath: path] = text
        }, render: { $0[keyPath: path].isEmpty ? "\"\"" : "\"(set, not shown)\"" })
    }

    static func choice(_ name: String, _ path: WritableKeyPath<ServerConfiguration, String> & Sendable,
                       among choices: [String], help: String) -> ConfigurationKey {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            guard choices.contains(text) else {
                throw ConfigurationValueError("expected one of \(choices.joined(separator: ", ")), got '\(text)'")
            }
            configuration[keyPath: path] = text
        }, render: { $0[keyPath: path] })
    }

    /// One of an enumeration's values, by its raw name.
    static func choice<Value: RawRepresentable & CaseIterable & Sendable>(
        _ name: String, _ path: WritableKeyPath<ServerConfiguration, Value> & Sendable, help: String
    ) -> ConfigurationKey where Value.RawValue == String {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            configuration[keyPath: path] = try parseChoice(text)
        }, render: { $0[keyPath: path].rawValue })
    }

    /// The `mode` key: a preset, or (when nothing set it) the preset the axes amount to.
    static func preset(_ name: String, _ path: WritableKeyPath<ServerConfiguration, Mode.Preset?> & Sendable, help: String) -> ConfigurationKey {
        ConfigurationKey(name: name, help: help, assign: { configuration, text throws(ConfigurationValueError) in
            configuration[keyPath: path] = try parseChoice(text) as Mode.Preset
        }, render: { configuration in
            (configuration[keyPath: path] ?? (try? configuration.makeMode())?.preset)?.rawValue ?? "custom"
        })
    }

    private static func parseChoice<Value: RawRepresentable & CaseIterable>(_ text: String) throws(ConfigurationValueError) -> Value
    where Value.RawValue == String {
        guard let value = Value(rawValue: text) else {
            throw ConfigurationValueError("expected one of \(Value.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
        }
        return value
    }
}

/// `text` as a YAML scalar that reads back as the same string: plain when it is safely plain
/// (`127.0.0.1`, `/var/log/threadbare.log`), double-quoted otherwise (`"-"`, which plain would
/// start a list).
func yamlScalar(_ text: String) -> String {
    let safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/:-"
    if !text.isEmpty && text.first != "-" && text.allSatisfy({ safe.contains($0) }) { return text }
    var quoted = "\""
    for character in text {
        if character == "\"" || character == "\\" { quoted.append("\\") }
        quoted.append(character)
    }
    return quoted + "\""
}

/// Why a value is wrong, before it is known where the value came from.
public struct ConfigurationValueError: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// A configuration problem, naming where it is (file and line, variable, or flag), the key,
/// and the reason.
public struct ConfigurationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
