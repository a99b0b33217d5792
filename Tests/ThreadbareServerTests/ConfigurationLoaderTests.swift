import Glibc
import Testing
@testable import ThreadbareServer

@Suite("Configuration layering and validation")
struct ConfigurationLoaderTests {
    @Test func defaultsServeWithNoFile() throws {
        let loaded = try ConfigurationLoader.load(file: nil, environment: [:], commandLine: [])
        #expect(loaded.configuration == ServerConfiguration())
        #expect(loaded.configuration.host == "127.0.0.1")
        #expect(loaded.configuration.port == 8080)
        #expect(try loaded.configuration.makeMode().preset == .nogil)
        #expect(loaded.configuration.threads == 8)
        #expect(loaded.configuration.loops == 1)
    }

    @Test func fileSettingsFlattenSections() throws {
        let settings = try ConfigurationLoader.fileSettings(path: "f.yaml", text: "port: 9\ncache:\n  max_bytes: 10\n")
        #expect(settings.map(\.key) == ["port", "cache.max_bytes"])
        #expect(settings.map(\.origin) == ["f.yaml:1", "f.yaml:3"])
    }

    @Test func emptyFileMeansDefaults() throws {
        #expect(try ConfigurationLoader.fileSettings(path: "f.yaml", text: "# nothing\n").isEmpty)
    }

    @Test func environmentNamesFollowKeys() {
        #expect(ConfigurationKey.named("cache.max_entries")?.environmentName == "THREADBARE_CACHE_MAX_ENTRIES")
        #expect(ConfigurationKey.named("port")?.environmentName == "THREADBARE_PORT")
    }

    @Test func laterLayersWin() throws {
        let loaded = try ConfigurationLoader.load(
            file: nil, environment: ["THREADBARE_PORT": "81", "THREADBARE_THREADS": "2", "PATH": "/bin"],
            commandLine: [ConfigurationSetting(key: "port", text: "82", origin: "command line --port")])
        #expect(loaded.configuration.port == 82)
        #expect(loaded.configuration.threads == 2)
        #expect(loaded.origins["port"] == "command line --port")
        #expect(loaded.origins["threads"] == "environment THREADBARE_THREADS")
    }

    @Test func fractionalSecondsAreAccepted() throws {
        let loaded = try ConfigurationLoader.load(
            file: nil, environment: ["THREADBARE_GRACEFUL_TIMEOUT": "0.25"], commandLine: [])
        #expect(loaded.configuration.gracefulTimeout == 0.25)
    }

    @Test func renderedConfigurationReadsBack() throws {
        let loaded = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_THREADS": "3"], commandLine: [])
        let settings = try ConfigurationLoader.fileSettings(path: "rendered", text: loaded.rendered())
        #expect(settings.count == ConfigurationKey.all.filter { !$0.isRetired }.count)
        #expect(settings.first { $0.key == "threads" }?.text == "3")
    }

    @Test func suggestionsCatchTypos() {
        #expect(ConfigurationLoader.suggestion(for: "treads", among: ["threads", "loops"]) == " (did you mean 'threads'?)")
        #expect(ConfigurationLoader.suggestion(for: "zzzzzz", among: ["threads", "loops"]) == "")
    }

    @Test func preforkWorkersHaveOneThreadUnlessTold() throws {
        let plain = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "prefork", "THREADBARE_WORKERS": "3"], commandLine: [])
        #expect(try plain.configuration.makeMode() == Mode(supervised: true, workers: 3, executor: .threads, lock: .global, threads: 1))
        #expect(plain.origins["threads"] == "default with a master: gunicorn's sync worker")
        let threaded = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "prefork", "THREADBARE_THREADS": "4"], commandLine: [])
        #expect(threaded.configuration.threads == 4)
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "prefork", "THREADBARE_ACCEPT": "fastest"], commandLine: [])
        }
    }

    /// Reads write counts plainly in the modes that model CPython with a GIL and atomically in
    /// nogil (a free-threaded build's shared counts), unless a deployment says otherwise; plain
    /// counts without a lock, and the retired key, are refused with what to write instead.
    @Test func refcountFollowsTheModeUnlessSet() throws {
        for (mode, model) in [("gil", ReferenceCounting.plain), ("subinterpreters", .plain), ("prefork", .plain), ("nogil", .atomic)] {
            let loaded = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": mode], commandLine: [])
            #expect(loaded.configuration.cacheRefcount == model, "\(mode)")
        }
        let set = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "nogil", "THREADBARE_CACHE_REFCOUNT": "immortal"], commandLine: [])
        #expect(set.configuration.cacheRefcount == .immortal)
        let plain = #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "nogil", "THREADBARE_CACHE_REFCOUNT": "plain"], commandLine: [])
        }
        #expect(plain?.description.contains("atomic") == true)
        let retired = #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_CACHE_REFCOUNT_TOUCH": "true"], commandLine: [])
        }
        #expect(retired?.description.contains("cache.refcount: plain") == true)
    }

    /// The free-threaded build's own cost is on by default in nogil and absent with a lock;
    /// set beside a lock it is refused, unless a higher layer switched the lock.
    @Test func freeThreadingOverheadBelongsToLockNone() throws {
        let nogil = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "nogil"], commandLine: [])
        #expect(nogil.configuration.freeThreadingOverheadPercent == ConfigurationKey.freeThreading314t)
        #expect(nogil.configuration.interpreterCost.extraRounds > 0)
        let gil = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "gil"], commandLine: [])
        #expect(gil.configuration.interpreterCost.extraRounds == 0)
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "gil", "THREADBARE_FREE_THREADING_OVERHEAD_PERCENT": "40"], commandLine: [])
        }
        let switched = try ConfigurationLoader.load(
            file: nil, environment: ["THREADBARE_FREE_THREADING_OVERHEAD_PERCENT": "40"],
            commandLine: [ConfigurationSetting(key: "mode", text: "gil", origin: "command line --mode")])
        #expect(switched.configuration.freeThreadingOverheadPercent == 0)
    }

    @Test func subinterpretersNeedAThreadPerInterpreter() throws {
        let error = #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "subinterpreters", "THREADBARE_THREADS": "3"],
                                         commandLine: [ConfigurationSetting(key: "interpreters", text: "4", origin: "command line --interpreters")])
        }
        #expect(error?.description.contains("threads 3 < interpreters 4") == true, "\(String(describing: error))")
        let loaded = try ConfigurationLoader.load(
            file: nil, environment: ["THREADBARE_MODE": "subinterpreters", "THREADBARE_SWITCH_INTERVAL_MS": "0.1"], commandLine: [])
        #expect(try loaded.configuration.makeMode() == Mode(executor: .threads, lock: .perInterpreter, interpreters: 2, threads: 8))
        #expect(loaded.configuration.switchInterval == .microseconds(100))
    }

    /// Each preset is a value of the keys, and the keys alone reach the same value.
    @Test func everyPresetIsItsKeys() throws {
        for preset in Mode.Preset.allCases {
            let named = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": preset.rawValue], commandLine: []).configuration
            let spelled = try ConfigurationLoader.load(file: nil, environment: [
                "THREADBARE_MASTER": String(preset.supervised), "THREADBARE_EXECUTOR": preset.executor.rawValue,
                "THREADBARE_LOCK": preset.lock.rawValue,
            ], commandLine: []).configuration
            #expect(try named.makeMode() == spelled.makeMode(), "\(preset)")
            #expect(try named.makeMode().preset == preset)
        }
        let prefork = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MASTER": "true"], commandLine: []).configuration
        #expect(try prefork.makeMode().name == "custom", "a master over free threads is no preset")
        #expect(prefork.workers == ServerConfiguration.onlineCores)
    }

    /// A higher layer's mode overrides a lower layer's axes; in one layer they must agree.
    /// Handler threads behind a lock default to the locked dispatcher; a file's `dispatch:
    /// locked` gives way to a mode above it that has no lock, and contradicts one beside it.
    @Test func dispatchFollowsTheModeAndGivesWayAsAnAxisDoes() throws {
        let defaults = { (mode: String) throws in
            try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": mode], commandLine: []).configuration.dispatch
        }
        #expect(try defaults("gil") == .locked && defaults("subinterpreters") == .locked)
        #expect(try defaults("nogil") == .direct && defaults("prefork") == .direct && defaults("async") == .direct)
        let file = try temporaryFile("mode: gil\ndispatch: locked\n")
        let overridden = try ConfigurationLoader.load(
            file: file, environment: [:], commandLine: [ConfigurationSetting(key: "mode", text: "nogil", origin: "command line --mode")])
        #expect(overridden.configuration.dispatch == .direct)
        #expect(overridden.origins["dispatch"]?.hasPrefix("lock from mode nogil, over dispatch: locked from") == true)
        let clash = try temporaryFile("mode: nogil\ndispatch: locked\n")
        let error = #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(file: clash, environment: [:], commandLine: []) }
        #expect(error?.description.contains(":2: dispatch: locked needs a lock to hold; lock is none") == true, "\(String(describing: error))")
    }

    @Test func modeOverridesLowerLayersAndMustAgreeWithItsOwn() throws {
        let file = try temporaryFile("executor: threads\nlock: none\n")
        let overridden = try ConfigurationLoader.load(
            file: file, environment: [:], commandLine: [ConfigurationSetting(key: "mode", text: "async", origin: "command line --mode")])
        #expect(overridden.configuration.executor == .loop && overridden.configuration.lock == .global)
        #expect(overridden.origins["executor"] == "mode async")
        let clash = try temporaryFile("mode: gil\nlock: none\n")
        let error = #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(file: clash, environment: [:], commandLine: []) }
        #expect(error?.description.contains(":2: lock: none contradicts mode: gil") == true, "\(String(describing: error))")
    }

    @Test func impossibleCombinationsNameTheirKeys() throws {
        let cases: [([String: String], String)] = [
            (["THREADBARE_WORKERS": "3"], "workers: 3 needs master: true"),
            (["THREADBARE_MODE": "gil", "THREADBARE_INTERPRETERS": "3"], "interpreters: splits a process into lock domains only with lock: per-interpreter"),
            (["THREADBARE_EXECUTOR": "loop", "THREADBARE_LOCK": "per-interpreter", "THREADBARE_INTERPRETERS": "2", "THREADBARE_LOOPS": "1"],
             "loops 1 must equal interpreters 2"),
            (["THREADBARE_MODE": "fastest"], "expected one of nogil, gil, subinterpreters, prefork, async, prefork-async, nogil-async"),
            (["THREADBARE_MODE": "prefork-async", "THREADBARE_ACCEPT_WHILE_BUSY": "false"],
             "environment THREADBARE_ACCEPT_WHILE_BUSY: accept_while_busy: false counts handler threads, so it needs executor: threads; executor is loop"),
            (["THREADBARE_MODE": "prefork", "THREADBARE_LOOPS": "2", "THREADBARE_ACCEPT_WHILE_BUSY": "false"], "accept_while_busy: false needs loops: 1"),
        ]
        for (environment, message) in cases {
            let error = #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(file: nil, environment: environment, commandLine: []) }
            #expect(error?.description.contains(message) == true, "\(environment): \(String(describing: error))")
        }
        let loops = try ConfigurationLoader.load(
            file: nil, environment: ["THREADBARE_EXECUTOR": "loop", "THREADBARE_LOCK": "per-interpreter", "THREADBARE_INTERPRETERS": "3"], commandLine: [])
        #expect(loops.configuration.loops == 3, "one loop per interpreter unless set")
    }

    /// gunicorn's sync worker: a worker holds as many connections as it has handler threads,
    /// and none outlives its answer.
    @Test func theSyncWorkerAcceptsUpToItsThreads() throws {
        let sync = try ConfigurationLoader.load(
            file: nil, environment: ["THREADBARE_MODE": "prefork", "THREADBARE_KEEPALIVE": "false", "THREADBARE_ACCEPT_WHILE_BUSY": "false"], commandLine: [])
        #expect(sync.configuration.limits.acceptsUpTo == 1 && !sync.configuration.limits.keepAlive)
        let plain = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_MODE": "prefork"], commandLine: [])
        #expect(plain.configuration.limits.acceptsUpTo == nil && plain.configuration.limits.keepAlive)
    }

    private func temporaryFile(_ text: String) throws -> String {
        let path = "/tmp/threadbare-loader-\(UInt64.random(in: 0...UInt64.max)).yaml"
        guard let file = fopen(path, "w") else { throw ConfigurationError("cannot write \(path)") }
        fputs(text, file)
        fclose(file)
        return path
    }
}
