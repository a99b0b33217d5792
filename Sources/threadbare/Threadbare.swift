import ArgumentParser
import Logging
import ThreadbareServer
#if canImport(Glibc)
import Glibc
#endif

@main
struct Threadbare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "threadbare",
        abstract: "One HTTP server, every way Python services use a machine's cores: gil, subinterpreters, prefork, nogil, async, prefork-async.",
        version: ServerStatus.version,
        subcommands: [Serve.self, Config.self, CPUUnit.self],
        defaultSubcommand: Serve.self)
}

/// Flags shared by `serve` and `config check`: each becomes a setting of the same name, so
/// its value is checked by the same rules as in a file.
struct ConfigurationOptions: ParsableArguments {
    @Option(name: .long, help: "YAML config file (also THREADBARE_CONFIG).")
    var config: String?
    @Option(help: "A preset: nogil | gil | subinterpreters | prefork | async | prefork-async | nogil-async") var mode: String?
    @Option(help: "threads (a handler pool) | loop (handlers on the event loop, as asyncio)") var executor: String?
    @Option(help: "global | per-interpreter | none") var lock: String?
    @Option(help: "Address to listen on.") var host: String?
    @Option(help: "TCP port; 0 picks a free one.") var port: String?
    @Option(help: "Handler threads per process.") var threads: String?
    @Option(help: "Event-loop threads per process.") var loops: String?
    @Option(name: .customLong("switch-interval-ms"), help: "lock global or per-interpreter: the lock's switch interval (sys.setswitchinterval).") var switchInterval: String?
    @Option(help: "lock per-interpreter: lock domains, each with its own lock and cache.") var interpreters: String?
    @Option(help: "Worker processes under a prefork master (default with a master: the machine's cores).") var workers: String?
    @Option(help: "master: reuseport | shared listening sockets.") var accept: String?
    @Option(name: .customLong("queue-limit"), help: "Requests waiting for a handler before 503.") var queueLimit: String?
    @Option(name: .customLong("graceful-timeout"), help: "Seconds in-flight requests get on SIGTERM.") var gracefulTimeout: String?
    @Option(name: .customLong("log-level"), help: "trace | debug | info | notice | warning | error | critical") var logLevel: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Set any key, e.g. --set cache.max_entries=100.", valueName: "key=value"))
    var assignments: [String] = []

    func load() throws(ConfigurationError) -> LoadedConfiguration {
        var settings: [ConfigurationSetting] = []
        let named: [(String, String, String?)] = [
            ("mode", "--mode", mode), ("executor", "--executor", executor), ("lock", "--lock", lock), ("host", "--host", host), ("port", "--port", port),
            ("threads", "--threads", threads), ("loops", "--loops", loops),
            ("switch_interval_ms", "--switch-interval-ms", switchInterval), ("interpreters", "--interpreters", interpreters),
            ("workers", "--workers", workers), ("accept", "--accept", accept),
            ("queue_limit", "--queue-limit", queueLimit), ("graceful_timeout", "--graceful-timeout", gracefulTimeout),
            ("log_level", "--log-level", logLevel),
        ]
        for (key, flag, value) in named {
            if let value { settings.append(ConfigurationSetting(key: key, text: value, origin: "command line \(flag)")) }
        }
        for assignment in assignments {
            guard let equals = assignment.firstIndex(of: "=") else {
                throw ConfigurationError("command line --set \(assignment): expected key=value")
            }
            let key = String(assignment[..<equals])
            settings.append(ConfigurationSetting(
                key: key, text: String(assignment[assignment.index(after: equals)...]), origin: "command line --set \(key)"))
        }
        return try ConfigurationLoader.load(
            file: config, environment: ConfigurationLoader.processEnvironment(), commandLine: settings)
    }
}

/// Configuration problems exit 2 with one line on stderr, like a usage error.
func exitWithConfigurationError(_ error: any Error) -> Never {
    let line = "threadbare: \(error)\n"
    _ = line.utf8CString.withUnsafeBufferPointer { write(STDERR_FILENO, $0.baseAddress, $0.count - 1) }
    exit(2)
}
