import ArgumentParser
import Logging
import ThreadbareServer
#if canImport(Glibc)
import Glibc
#endif

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve HTTP until SIGTERM or SIGINT.")

    @OptionGroup var options: ConfigurationOptions

    func run() throws {
        let loaded: LoadedConfiguration
        do { loaded = try options.load() } catch { exitWithConfigurationError(error) }
        let configuration = loaded.configuration

        var logFile: LogFile?
        if configuration.logFile != "-" {
            do {
                logFile = try LogFile(path: configuration.logFile)
            } catch {
                exitWithConfigurationError(ConfigurationError("log_file: \(error)"))
            }
        }
        LoggingSystem.bootstrap { [logFile] label in
            var handler = logFile.map { StreamLogHandler(label: label, stream: LogFileStream($0)) }
                ?? StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
            return handler
        }
        let logger = Logger(label: "threadbare")

        // Signals are taken by sigwait on this thread, so every thread started from here on
        // inherits the mask and none of them is interrupted by them.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGTERM)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGUSR1)
        sigaddset(&stopSignals, SIGHUP)
        if configuration.master {
            for signal in PreforkMaster.signals { sigaddset(&stopSignals, signal) }
        }
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
        // A client that goes away mid-reply must not kill the server.
        signal(SIGPIPE, SIG_IGN)

        let notifier = SystemdNotifier()
        let inherited: [Int32]?
        do {
            inherited = try SocketActivation.takeInheritedDescriptors()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        if inherited != nil {
            logger.info("serving the sockets passed in (socket activation); host and port are not used")
        }

        if configuration.master {
            try runMaster(configuration, inherited: inherited, notifier: notifier, logger, logFile)
            return
        }

        let sockets: ListeningSockets
        let server: Server
        do {
            sockets = try ListeningSockets.opened(for: configuration, inherited: inherited)
            server = try Server(configuration: configuration, sockets: sockets)
            try server.start()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        logger.info("serving", metadata: [
            "mode": "\(server.mode.name)", "spelled_out": "\(server.mode.spelledOut)", "pid": "\(getpid())",
            "loops": "\(configuration.loops)", "threads": "\(server.mode.threads)",
        ])
        // Tests and scripts wait for this line, so what starting does is done before it; it
        // must not sit in a pipe's buffer.
        print("listening on \(server.url)")
        fflush(nil)
        notifier.ready(status: "serving \(server.mode.name) on \(server.url)")

        var received: Int32 = 0
        while sigwait(&stopSignals, &received) == 0 {
            if received == SIGUSR1 {
                Self.reopen(logFile, logger)
            } else if received == SIGHUP {
                try reloadInPlace(configuration, server: server, sockets: sockets, notifier: notifier, logger)
            } else {
                break
            }
        }
        notifier.stopping()
        logger.info("stopping: finishing in-flight requests", metadata: [
            "signal": "\(received == SIGTERM ? "TERM" : "INT")", "graceful_timeout_s": "\(configuration.gracefulTimeout)",
        ])
        let cutOff = server.shutdown()
        if cutOff > 0 {
            logger.warning("graceful timeout passed with requests still in flight", metadata: ["cut_off": "\(cutOff)"])
        }
        logger.info("stopped")
    }

    /// SIGHUP in a single-process mode: with a configuration that loads, finish what is in
    /// flight and start again in this process on the same sockets (`InPlaceReload`). A
    /// configuration that does not load is logged and the server keeps running as it was.
    private func reloadInPlace(_ running: ServerConfiguration, server: Server, sockets: ListeningSockets,
                               notifier: SystemdNotifier, _ logger: Logger) throws {
        let fresh: ServerConfiguration
        do {
            fresh = try options.load().configuration
            _ = try fresh.makeMode()
        } catch {
            logger.error("SIGHUP: configuration not reloaded, keeping the running one: \(error)")
            return
        }
        for (name, old, new) in [("host", running.host, fresh.host), ("port", String(running.port), String(fresh.port))]
            where old != new && !(name == "port" && new == "0") {
            logger.warning("SIGHUP: \(name) changes only with a restart; keeping the sockets on \(server.url)")
        }
        let handover: [Int32]
        do {
            handover = try sockets.duplicated()
        } catch {
            logger.error("SIGHUP: configuration not reloaded, keeping the running one: \(error)")
            return
        }
        notifier.reloading()
        logger.info("SIGHUP: reloading in place: finishing in-flight requests, then starting again on the same sockets",
                    metadata: ["graceful_timeout_s": "\(fresh.gracefulTimeout)"])
        let cutOff = server.shutdown(gracefulTimeout: fresh.gracefulTimeout)
        if cutOff > 0 {
            logger.warning("graceful timeout passed with requests still in flight", metadata: ["cut_off": "\(cutOff)"])
        }
        let failure = InPlaceReload.exec(serving: handover)
        // The log file's descriptor may now hold a listening socket: say it on stderr.
        let line = "threadbare: SIGHUP: \(failure); stopping\n"
        _ = line.utf8CString.withUnsafeBufferPointer { write(STDERR_FILENO, $0.baseAddress, $0.count - 1) }
        throw ExitCode(1)
    }

    /// SIGUSR1: after logrotate moved the log file away, write to a fresh one at the same path.
    static func reopen(_ logFile: LogFile?, _ logger: Logger) {
        guard let logFile else {
            logger.info("SIGUSR1: logs go to stderr; there is no log file to reopen")
            return
        }
        do {
            try logFile.reopen()
            logger.info("SIGUSR1: log file reopened", metadata: ["path": "\(logFile.path)"])
        } catch {
            logger.error("SIGUSR1: \(error); logging on to the old file")
        }
    }

    /// master: true: this process becomes the prefork master; the workers are its forked children.
    private func runMaster(_ configuration: ServerConfiguration, inherited: [Int32]?, notifier: SystemdNotifier,
                           _ logger: Logger, _ logFile: LogFile?) throws {
        let master: PreforkMaster
        do {
            master = try PreforkMaster(configuration: configuration, inherited: inherited, notifier: notifier, logger: logger,
                                       reopenLogs: { Self.reopen(logFile, logger) }) {
                try options.load().configuration
            }
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        logger.info("master started", metadata: [
            "pid": "\(getpid())", "workers": "\(configuration.workers)", "executor": "\(configuration.executor.rawValue)",
            "threads": "\(configuration.threads)",
        ])
        let status = master.run {
            print("listening on \(master.url)")
            fflush(nil)
            notifier.ready(status: "serving \(configuration.workers) workers on \(master.url)")
        }
        if status != 0 { throw ExitCode(status) }
        logger.info("stopped")
    }
}
