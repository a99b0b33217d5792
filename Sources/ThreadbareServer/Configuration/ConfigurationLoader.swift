import Yams
#if canImport(Glibc)
import Glibc
#endif

/// One value for one key, and where it came from.
public struct ConfigurationSetting: Sendable {
    public let key: String
    public let text: String
    /// Where it was set, as an error message names it: `config/gil.yaml:4`,
    /// `environment THREADBARE_PORT`, `command line --port`.
    public let origin: String

    public init(key: String, text: String, origin: String) {
        self.key = key
        self.text = text
        self.origin = origin
    }
}

/// The effective configuration and the origin of every value in it.
public struct LoadedConfiguration: Sendable {
    public let configuration: ServerConfiguration
    /// Key → where its value came from ("default" when nothing set it).
    public let origins: [String: String]

    /// The configuration as YAML that `--config` accepts back, each value commented with its
    /// origin.
    public func rendered() -> String {
        var lines = ["# threadbare effective configuration; precedence: command line > environment > file > default"]
        let keys = ConfigurationKey.all.filter { !$0.isRetired }
        for key in keys where key.section == nil {
            if key.name == "mode" && key.render(configuration) == "custom" {
                lines.append("# mode: no preset is this combination; master, executor and lock spell it out")
                continue
            }
            if key.name == "mode" && origins["mode"] == nil {
                lines.append("mode: \(key.render(configuration))  # what master, executor and lock spell")
                continue
            }
            lines.append("\(key.name): \(key.render(configuration))  # \(origins[key.name] ?? "default")")
        }
        var seen: [String] = []
        for section in keys.compactMap(\.section) where !seen.contains(section) {
            seen.append(section)
            lines.append("\(section):")
            for key in keys where key.section == section {
                lines.append("  \(key.leaf): \(key.render(configuration))  # \(origins[key.name] ?? "default")")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Builds the configuration from its layers. Precedence: command line > environment > file >
/// built-in default. A key nobody knows, a value of the wrong type and an impossible value are
/// all errors that name the source and the key: a typo never passes silently.
public enum ConfigurationLoader {
    public static let fileVariable = "THREADBARE_CONFIG"

    /// `file` is the --config path; without one, THREADBARE_CONFIG names it; without that, only
    /// defaults, environment and command line apply.
    public static func load(file: String?, environment: [String: String], commandLine: [ConfigurationSetting]) throws(ConfigurationError) -> LoadedConfiguration {
        var settings: [ConfigurationSetting] = []
        if let path = file ?? environment[fileVariable] {
            settings += try fileSettings(path: path, text: readFile(path))
        }
        settings += try environmentSettings(environment)
        settings += commandLine

        var configuration = ServerConfiguration()
        var origins: [String: String] = [:]
        for setting in settings {
            guard let key = ConfigurationKey.named(setting.key) else {
                throw ConfigurationError("\(setting.origin): unknown key '\(setting.key)'\(suggestion(for: setting.key, among: ConfigurationKey.all.map(\.name)))")
            }
            do {
                try key.assign(&configuration, setting.text)
            } catch {
                throw ConfigurationError("\(setting.origin): \(key.name): \(error.reason)")
            }
            origins[key.name] = setting.origin
        }
        try applyMode(to: &configuration, origins: &origins)
        // The local cache keeps start-up data apart; the shared ones hold it as entries.
        if configuration.cacheBackend != "local" && configuration.cachePreload > configuration.cacheMaxEntries {
            throw ConfigurationError("\(origins["cache.preload"] ?? "default"): cache.preload: \(configuration.cachePreload) entries do not fit cache.max_entries \(configuration.cacheMaxEntries)")
        }
        for (name, bytes) in [("limits.request_line", configuration.requestLineBytes), ("limits.request_field_size", configuration.requestFieldBytes)]
        where bytes > configuration.maxHeaderBytes {
            throw ConfigurationError("\(origins[name] ?? "default"): \(name): \(bytes) bytes exceeds limits.max_header_bytes \(configuration.maxHeaderBytes), which libevent enforces first (with a plain 400)")
        }
        if !configuration.acceptWhileBusy {
            let origin = origins["accept_while_busy"] ?? "default"
            if configuration.executor != .threads {
                throw ConfigurationError("\(origin): accept_while_busy: false counts handler threads, so it needs executor: threads; executor is \(configuration.executor.rawValue) (\(origins["executor"] ?? origins["mode"] ?? "default"))")
            }
            if configuration.loops != 1 {
                throw ConfigurationError("\(origin): accept_while_busy: false needs loops: 1, the one loop that knows when a handler thread is free; loops is \(configuration.loops) (\(origins["loops"] ?? "default"))")
            }
        }
        do {
            _ = try configuration.makeMode()
        } catch {
            let keys = ["mode", "master", "workers", "executor", "lock", "interpreters", "threads", "loops"]
                .compactMap { key in origins[key].map { "\(key) from \($0)" } }
            throw ConfigurationError("mode: \(error) (\(keys.isEmpty ? "defaults" : keys.joined(separator: ", ")))")
        }
        return LoadedConfiguration(configuration: configuration, origins: origins)
    }

    /// The mode's keys. The preset `mode` names fills in each axis (master, executor, lock) that
    /// nothing set, and overrides one set in a layer below its own (`--mode async` over a
    /// file's `executor: threads`); in its own layer an axis must agree with it, and one set
    /// above it wins. Without `mode`, the axes not set are nogil's. Then the sizes the axes
    /// imply, where nothing set them.
    static func applyMode(to configuration: inout ServerConfiguration, origins: inout [String: String]) throws(ConfigurationError) {
        let preset = configuration.mode ?? .nogil
        let presetOrigin = configuration.mode.map { "mode \($0.rawValue)" } ?? "default"
        let modeLayer = origins["mode"].map(layer) ?? 0
        func axis<Value: Equatable>(_ key: String, _ path: WritableKeyPath<ServerConfiguration, Value>, _ presetValue: Value,
                                    _ text: (Value) -> String) throws(ConfigurationError) {
            guard let origin = origins[key], layer(origin) >= modeLayer else {
                configuration[keyPath: path] = presetValue
                origins[key] = presetOrigin
                return
            }
            if let mode = configuration.mode, layer(origin) == modeLayer, configuration[keyPath: path] != presetValue {
                throw ConfigurationError("\(origin): \(key): \(text(configuration[keyPath: path])) contradicts mode: \(mode.rawValue) (\(origins["mode"] ?? "default")), whose \(key) is \(text(presetValue)); set one of them")
            }
        }
        try axis("master", \.master, preset.supervised) { String($0) }
        try axis("executor", \.executor, preset.executor) { $0.rawValue }
        try axis("lock", \.lock, preset.lock) { $0.rawValue }

        if let origin = origins["interpreters"], configuration.lock != .perInterpreter {
            throw ConfigurationError("\(origin): interpreters: splits a process into lock domains only with lock: per-interpreter; lock is \(configuration.lock.rawValue) (\(origins["lock"] ?? "default"))")
        }
        func size(_ key: String, _ path: WritableKeyPath<ServerConfiguration, Int>, _ value: Int, _ why: String) {
            guard origins[key] == nil else { return }
            configuration[keyPath: path] = value
            origins[key] = why
        }
        let cores = ServerConfiguration.onlineCores
        if configuration.master {
            size("workers", \.workers, cores, "default with a master: the machine's cores")
        }
        switch configuration.executor {
        case .loop:
            // asyncio's default executor: ThreadPoolExecutor(max_workers=min(32, os.cpu_count() + 4)).
            size("threads", \.threads, min(32, cores + 4), "default for executor loop: asyncio's min(32, cores + 4)")
            if configuration.lock == .perInterpreter {
                size("loops", \.loops, configuration.interpreters, "default for executor loop: one loop per interpreter")
            }
        case .threads where configuration.master:
            // gunicorn's sync worker; more threads make it a gthread worker.
            size("threads", \.threads, 1, "default with a master: gunicorn's sync worker")
        case .threads: break
        }
        // A free-threaded build's own cost belongs to lock none. Set beside another lock in a
        // lower layer (config/nogil.yaml under --mode gil), it gives way, as its axes do.
        if let origin = origins["free_threading_overhead_percent"], configuration.lock != .none {
            let lockOrigin = origins["lock"] ?? "default"
            let lockLayer = lockOrigin.hasPrefix("mode ") ? modeLayer : layer(lockOrigin)
            guard layer(origin) < lockLayer else {
                throw ConfigurationError("\(origin): free_threading_overhead_percent: is what a free-threaded build costs, so it needs lock: none; lock is \(configuration.lock.rawValue) (\(lockOrigin))")
            }
            configuration.freeThreadingOverheadPercent = 0
            origins["free_threading_overhead_percent"] = "lock \(configuration.lock.rawValue) from \(lockOrigin), over \(origin)"
        } else if origins["free_threading_overhead_percent"] == nil {
            configuration.freeThreadingOverheadPercent = configuration.lock == .none ? ConfigurationKey.freeThreading314t : 0
            origins["free_threading_overhead_percent"] = configuration.lock == .none ? "default for lock none: CPython 3.14t" : "default for lock \(configuration.lock.rawValue): a GIL build"
        }
        // With a lock, a read writes the object's count plainly, under the lock; a free-threaded
        // build writes the shared count of an object other threads made atomically (PEP 703).
        if let origin = origins["cache.refcount"] {
            if configuration.cacheRefcount == .plain && configuration.lock == .none {
                throw ConfigurationError("\(origin): cache.refcount: plain counts under a lock, and lock is none (\(origins["lock"] ?? "default")): a free-threaded build writes shared counts atomically (atomic) or not at all (immortal)")
            }
        } else {
            configuration.cacheRefcount = configuration.lock == .none ? .atomic : .plain
            origins["cache.refcount"] = "default for lock \(configuration.lock.rawValue)"
        }
        // Handler threads behind a lock are gunicorn gthread's: its main thread hands requests
        // over under the GIL. One thread (prefork's sync worker) accepts and handles alike, and
        // free threads have no lock to wait for.
        if let origin = origins["dispatch"], configuration.dispatch == .locked {
            let conflict: (key: String, reason: String)? =
                configuration.executor != .threads ? ("executor", "hands requests to handler threads; executor is loop, which runs them on the loop")
                : configuration.lock == .none ? ("lock", "needs a lock to hold; lock is none") : nil
            if let conflict {
                // config/gil.yaml's `dispatch: locked` gives way to `--mode nogil` above it, as
                // its axes do; in the same layer or above, it is a contradiction.
                let conflictOrigin = origins[conflict.key] ?? "default"
                let conflictLayer = conflictOrigin.hasPrefix("mode ") ? modeLayer : layer(conflictOrigin)
                guard layer(origin) < conflictLayer else {
                    throw ConfigurationError("\(origin): dispatch: locked \(conflict.reason) (\(conflictOrigin))")
                }
                configuration.dispatch = .direct
                origins["dispatch"] = "\(conflict.key) from \(conflictOrigin), over dispatch: locked from \(origin)"
            }
        } else if origins["dispatch"] == nil {
            let locked = configuration.executor == .threads && configuration.lock != .none && configuration.threads > 1
            configuration.dispatch = locked ? .locked : .direct
            origins["dispatch"] = locked ? "default for handler threads behind a lock"
                : "default for \(configuration.executor == .loop ? "executor loop" : configuration.lock == .none ? "lock none" : "one handler thread")"
        }
    }

    /// Which layer a setting came from, by its origin: the file 1, the environment 2, the
    /// command line 3.
    private static func layer(_ origin: String) -> Int {
        origin.hasPrefix("command line") ? 3 : origin.hasPrefix("environment") ? 2 : 1
    }

    /// Settings from a YAML file: top-level keys, and one level of sections (`cache:` holding
    /// `max_entries:`), each value a scalar.
    static func fileSettings(path: String, text: String) throws(ConfigurationError) -> [ConfigurationSetting] {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError("\(path): not valid YAML: \(error)")
        }
        guard let root else { return [] }
        guard let mapping = root.mapping else {
            throw ConfigurationError("\(path):\(line(root)): expected a mapping of keys to values at the top level")
        }
        var settings: [ConfigurationSetting] = []
        try collect(mapping, prefix: "", path: path, into: &settings)
        return settings
    }

    private static func collect(_ mapping: Node.Mapping, prefix: String, path: String, into settings: inout [ConfigurationSetting]) throws(ConfigurationError) {
        // Yams itself refuses a key given twice.
        for (keyNode, valueNode) in mapping {
            let location = "\(path):\(line(keyNode))"
            guard let leaf = keyNode.string else { throw ConfigurationError("\(location): keys must be plain names") }
            let name = prefix + leaf
            if prefix.isEmpty && ConfigurationKey.sections.contains(leaf) {
                guard let section = valueNode.mapping else {
                    throw ConfigurationError("\(location): '\(name)' is a section; expected a mapping of its keys")
                }
                try collect(section, prefix: name + ".", path: path, into: &settings)
                continue
            }
            guard let key = ConfigurationKey.named(name) else {
                let candidates = ConfigurationKey.all.map(\.name) + (prefix.isEmpty ? ConfigurationKey.sections.sorted() : [])
                throw ConfigurationError("\(location): unknown key '\(name)'\(suggestion(for: name, among: candidates))")
            }
            if key.acceptsList, let items = valueNode.sequence {
                var texts: [String] = []
                for item in items {
                    guard let scalar = item.scalar, !scalar.string.isEmpty, !scalar.string.contains(",") else {
                        throw ConfigurationError("\(path):\(line(item)): \(name): each item of the list must be one value without commas")
                    }
                    texts.append(scalar.string)
                }
                guard !texts.isEmpty else { throw ConfigurationError("\(location): \(name): the list is empty") }
                settings.append(ConfigurationSetting(key: name, text: texts.joined(separator: ","), origin: location))
                continue
            }
            guard let scalar = valueNode.scalar else {
                throw ConfigurationError("\(location): \(name): expected a single value, got a \(valueNode.mapping != nil ? "mapping" : "list")")
            }
            guard scalar.style != .plain || !["", "~", "null", "Null", "NULL"].contains(scalar.string) else {
                throw ConfigurationError("\(location): \(name): has no value")
            }
            settings.append(ConfigurationSetting(key: name, text: scalar.string, origin: location))
        }
    }

    static func environmentSettings(_ environment: [String: String]) throws(ConfigurationError) -> [ConfigurationSetting] {
        let byVariable = Dictionary(uniqueKeysWithValues: ConfigurationKey.all.map { ($0.environmentName, $0.name) })
        var settings: [ConfigurationSetting] = []
        for (variable, value) in environment.sorted(by: { $0.key < $1.key }) where variable.hasPrefix("THREADBARE_") {
            if variable == fileVariable { continue }
            guard let key = byVariable[variable] else {
                throw ConfigurationError("environment \(variable): unknown variable\(suggestion(for: variable, among: Array(byVariable.keys) + [fileVariable]))")
            }
            settings.append(ConfigurationSetting(key: key, text: value, origin: "environment \(variable)"))
        }
        return settings
    }

    /// The process environment, read through libc so the server needs no Foundation for it.
    public static func processEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let pair = String(cString: pointer)
            if let equals = pair.firstIndex(of: "=") {
                result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            }
            entry += 1
        }
        return result
    }

    private static func readFile(_ path: String) throws(ConfigurationError) -> String {
        guard let file = fopen(path, "r") else {
            throw ConfigurationError("\(path): cannot read config file: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 8192)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        guard ferror(file) == 0 else {
            throw ConfigurationError("\(path): cannot read config file: \(String(cString: strerror(errno)))")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func line(_ node: Node) -> Int {
        node.mark?.line ?? 0
    }

    /// ` (did you mean 'x'?)` when one known name is within two edits of `name`.
    static func suggestion(for name: String, among known: [String]) -> String {
        let scored = known.map { ($0, editDistance(name.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= 2 else { return "" }
        return " (did you mean '\(best.0)'?)"
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return a.isEmpty ? b.count : previous[b.count]
    }
}
