import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The prefork master: binds the listening sockets, forks the workers and supervises them, as
/// gunicorn's arbiter and nginx's master process do. It serves no request itself.
///
/// Fork safety: the master never starts a thread or an event loop. It only forks, waits for
/// signals and reaps children, so at every fork it has one thread and nothing half-locked, and
/// each worker builds its own loops and threads after the fork (see `PreforkWorker`).
///
/// Workers stand at positions 0..<workers. With `accept: reuseport` each position has its own
/// SO_REUSEPORT sockets, which the master keeps open, so connections queued on them wait for
/// the position's next worker instead of failing. A worker leaves its position in one of three
/// ways: it dies (it is replaced at once), it retires (a recycling limit, or a rolling reload:
/// its replacement is started first, and it stops only after finishing its requests), or its
/// position is removed (TTOU).
///
/// Signals: TERM stops gracefully, INT and QUIT at once, HUP reloads the configuration and
/// replaces every worker, TTIN and TTOU add and remove a worker (never below one), USR1
/// reopens the log file in the master and every worker. A worker
/// that cannot boot three times in a row stops the master with its reason; one whose loop
/// misses its heartbeat for `worker_timeout` gets SIGABRT, then SIGKILL, and is replaced.
public final class PreforkMaster {
    private struct Worker {
        let pid: pid_t
        let position: Int
        /// Told to stop (TERM), when; it finishes its requests and exits.
        var stoppedAt: UInt64?
        /// When it was sent SIGABRT for a missed heartbeat.
        var abortedAt: UInt64?

        var retiring: Bool { stoppedAt != nil }
    }

    private var configuration: ServerConfiguration
    private let reload: () throws -> ServerConfiguration
    /// Reopens this process's log file; runs in the master on USR1, and in each worker.
    private let reopenLogs: @Sendable () -> Void
    private let logger: Logger
    private let scoreboard: Scoreboard
    /// Made here, before any fork, for every worker to inherit: the shm segment, or a
    /// preloaded local cache (see `makeCacheBeforeFork`).
    private var cacheForWorkers: (any CacheBackend)?
    private let pid = getpid()

    /// `accept: shared`: the sockets every worker accepts on.
    private let sharedSockets: ListeningSockets?
    /// `accept: reuseport`: each position's own sockets.
    private var positionSockets: [Int: ListeningSockets] = [:]
    private let firstSockets: ListeningSockets

    private var positions: Set<Int>
    /// By scoreboard slot.
    private var workers: [Int: Worker] = [:]
    /// Failed boots in a row, by position, and when the next attempt may start.
    private var bootFailures: [Int: Int] = [:]
    private var retryAt: [Int: UInt64] = [:]
    private var lastBootFailure: [Int: String] = [:]
    /// Workers (by slot) that keep serving until a new worker at their position is ready, then
    /// stop: the old workers of a reload, and workers that asked to be recycled.
    private var awaitingReplacement: Set<Int> = []
    private var stopping = false
    /// Tells systemd (Type=notify) about reloads and the stop.
    private let notifier: SystemdNotifier
    /// A HUP whose new workers are not all ready yet.
    private var reloading = false

    static let bootAttempts = 3
    /// The signals the master takes; blocked from the start, so none of them can end it early.
    public static let signals = [SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1]

    /// Binds the sockets, or takes `inherited` ones (socket activation), which every worker
    /// then shares; no worker runs yet. `reload` reads the configuration again, for HUP.
    public init(configuration: ServerConfiguration, inherited: [Int32]? = nil, notifier: SystemdNotifier = SystemdNotifier(environment: nil),
                logger: Logger, reopenLogs: @escaping @Sendable () -> Void,
                reload: @escaping () throws -> ServerConfiguration) throws {
        var configuration = configuration
        if inherited != nil && configuration.accept != "shared" {
            // A position's own SO_REUSEPORT sockets would be bound beside systemd's, on a port
            // the service manager holds; the sockets it passed are the ones to serve.
            logger.notice("accept: reuseport needs sockets bound here; the sockets passed in are shared by every worker")
            configuration.accept = "shared"
        }
        self.configuration = configuration
        self.reload = reload
        self.reopenLogs = reopenLogs
        self.logger = logger
        self.notifier = notifier
        scoreboard = try Scoreboard()
        cacheForWorkers = try configuration.makeCacheBeforeFork()
        let first = try ListeningSockets.opened(for: configuration, inherited: inherited)
        firstSockets = first
        if configuration.accept == "shared" {
            sharedSockets = first
        } else {
            sharedSockets = nil
            positionSockets[0] = first
        }
        positions = Set(0..<configuration.workers)
    }

    public var url: String { firstSockets.url }

    /// Forks the workers and supervises them until told to stop; returns the exit status.
    /// `onReady` runs once, when every worker has booted.
    public func run(onReady: () -> Void) -> Int32 {
        var signalSet = sigset_t()
        sigemptyset(&signalSet)
        for signal in Self.signals { sigaddset(&signalSet, signal) }
        // Blocked before the first fork: workers inherit the mask and sigwait for theirs.
        pthread_sigmask(SIG_BLOCK, &signalSet, nil)

        var announced = false
        while true {
            if !announced && allPositionsReady() {
                announced = true
                logger.info("workers ready", metadata: ["workers": "\(positions.count)", "accept": "\(configuration.accept)"])
                onReady()
            }
            var info = siginfo_t()
            var wait = timespec(tv_sec: 0, tv_nsec: 50_000_000)
            let signal = sigtimedwait(&signalSet, &info, &wait)
            switch signal {
            case SIGTERM:
                logger.info("SIGTERM: stopping gracefully", metadata: ["graceful_timeout_s": "\(configuration.gracefulTimeout)"])
                return stop(graceful: true, status: 0)
            case SIGINT, SIGQUIT:
                logger.info("\(signal == SIGINT ? "SIGINT" : "SIGQUIT"): stopping now")
                return stop(graceful: false, status: 0)
            case SIGHUP:
                beginReload()
            case SIGTTIN:
                addPosition()
            case SIGTTOU:
                removePosition()
            case SIGUSR1:
                // Each process holds its own descriptor: reopen here, then in every worker.
                reopenLogs()
                for worker in workers.values { kill(worker.pid, SIGUSR1) }
            default:
                break
            }
            if let status = reapWorkers() { return status }
            noticeRecyclingWorkers()
            if let status = staffPositions() { return status }
            stopReplacedWorkers()
            checkHeartbeats()
            if reloading && awaitingReplacement.isEmpty && allPositionsReady() {
                reloading = false
                logger.info("SIGHUP: reloaded", metadata: ["workers": "\(positions.count)"])
                notifier.ready(status: "serving \(positions.count) workers on \(url)")
            }
        }
    }

    private func allPositionsReady() -> Bool {
        positions.allSatisfy { position in
            workers.contains { $0.value.position == position && [.ready, .retiring].contains(scoreboard.state(slot: $0.key)) }
        }
    }

    /// The worker a position counts on from now: not stopping, not waiting to be replaced.
    private func freshWorker(at position: Int) -> (slot: Int, worker: Worker)? {
        workers.first { $0.value.position == position && !$0.value.retiring && !awaitingReplacement.contains($0.key) }
            .map { ($0.key, $0.value) }
    }

    /// Starts a worker at every position that has no fresh one (at the start, after a death, in
    /// a reload, for a recycling worker), waiting out the backoff after failed boots. A
    /// position that fails to boot three times in a row gives up: if an old worker still
    /// serves there, it stays; if none does, the master stops with the reason.
    private func staffPositions() -> Int32? {
        let now = MonotonicClock.now()
        for position in positions.sorted() {
            if let (slot, _) = freshWorker(at: position) {
                if scoreboard.state(slot: slot) == .ready { bootFailures[position] = nil }
                continue
            }
            if let due = retryAt[position], now < due { continue }
            if bootFailures[position, default: 0] >= Self.bootAttempts {
                let cause = lastBootFailure[position] ?? "unknown"
                let keeping = workers.filter { $0.value.position == position && !$0.value.retiring }
                guard !keeping.isEmpty else {
                    logger.critical("a worker failed to boot \(Self.bootAttempts) times in a row; giving up: \(cause)")
                    return stop(graceful: true, status: 1)
                }
                for (slot, worker) in keeping {
                    logger.error("no replacement for worker \(worker.pid) after \(Self.bootAttempts) failed boots (\(cause)); it keeps serving")
                    awaitingReplacement.remove(slot)
                    scoreboard.setState(.ready, slot: slot)
                }
                bootFailures[position] = nil
                continue
            }
            if !spawn(at: position) {
                noteBootFailure(at: position, cause: lastBootFailure[position] ?? "could not start a worker")
            }
        }
        return nil
    }

    /// Failed boots back off: 0.1 s, 0.2 s, 0.4 s … at most 5 s between attempts.
    private func noteBootFailure(at position: Int, cause: String) {
        let failures = bootFailures[position, default: 0] + 1
        bootFailures[position] = failures
        lastBootFailure[position] = cause
        let delay = min(100_000_000 << (failures - 1), 5_000_000_000)
        retryAt[position] = MonotonicClock.now() + UInt64(delay)
    }

    // MARK: Starting workers

    private func sockets(at position: Int) throws -> ListeningSockets {
        if let sharedSockets { return sharedSockets }
        if let existing = positionSockets[position] { return existing }
        let made = try ListeningSockets.bind(
            host: firstSockets.host, port: firstSockets.port, count: configuration.loops, backlog: configuration.backlog,
            joining: true)
        positionSockets[position] = made
        return made
    }

    private func spawn(at position: Int) -> Bool {
        let sockets: ListeningSockets
        do {
            sockets = try self.sockets(at: position)
        } catch {
            logger.critical("cannot open sockets for a new worker: \(error)")
            return false
        }
        guard let slot = (0..<Scoreboard.capacity).first(where: { workers[$0] == nil }) else {
            logger.critical("no free scoreboard slot for a new worker")
            return false
        }
        scoreboard.prepare(slot: slot)
        // Whatever sits in stdio buffers would otherwise be written twice.
        fflush(nil)
        let child = fork()
        if child == 0 {
            // Other positions' sockets stay with them: a removed position's sockets must close
            // when the master closes them, not live on in a sibling.
            for (other, otherSockets) in positionSockets where other != position { otherSockets.close() }
            PreforkWorker.run(slot: slot, sockets: sockets, configuration: configuration, inheritedCache: cacheForWorkers,
                              scoreboard: scoreboard, masterPID: pid,
                              reopenLogs: reopenLogs)
        }
        guard child > 0 else {
            logger.critical("fork failed: \(String(cString: strerror(errno)))")
            scoreboard.clear(slot: slot)
            return false
        }
        scoreboard.setPID(child, slot: slot)
        workers[slot] = Worker(pid: child, position: position)
        logger.debug("worker started", metadata: ["pid": "\(child)", "slot": "\(slot)", "position": "\(position)"])
        return true
    }

    // MARK: Changing the set of workers

    private func addPosition() {
        guard positions.count < Scoreboard.capacity / 2 else {
            logger.warning("SIGTTIN: already at the most workers (\(Scoreboard.capacity / 2))")
            return
        }
        let position = (0...).first { !positions.contains($0) }!
        positions.insert(position)
        logger.info("SIGTTIN: one worker more", metadata: ["workers": "\(positions.count)"])
    }

    private func removePosition() {
        guard positions.count > 1, let position = positions.max() else {
            logger.info("SIGTTOU: one worker is the fewest")
            return
        }
        positions.remove(position)
        logger.info("SIGTTOU: one worker fewer", metadata: ["workers": "\(positions.count)"])
        retirePosition(position)
    }

    /// HUP: read the configuration again and replace every worker, one new worker per position,
    /// each old one stopping gracefully once its replacement is ready.
    private func beginReload() {
        var fresh: ServerConfiguration
        do {
            fresh = try reload()
            _ = try fresh.makeMode()
        } catch {
            logger.error("SIGHUP: configuration not reloaded, keeping the running one: \(error)")
            return
        }
        // The sockets stay: a new address, loop count or accept strategy needs a restart, and so
        // does giving up the master this process is.
        for (name, old, new) in [("master", String(configuration.master), String(fresh.master)),
                                 ("host", configuration.host, fresh.host), ("port", String(configuration.port), String(fresh.port)),
                                 ("loops", String(configuration.loops), String(fresh.loops)), ("accept", configuration.accept, fresh.accept)]
            where old != new && !(name == "port" && new == "0") && !(firstSockets.inherited && ["host", "port", "accept"].contains(name)) {
            logger.warning("SIGHUP: \(name) changes only with a restart; keeping \(old)")
        }
        // The shm segment was made at start and holds the workers' entries: it stays. A
        // preloaded local cache is made again for the new workers if its settings changed.
        let cacheKeys = ConfigurationKey.all.filter { $0.section == "cache" }
        let changedCacheKeys = cacheKeys.filter { $0.render(configuration) != $0.render(fresh) }
        var freshCache = cacheForWorkers
        if configuration.cacheBackend == "shm" || fresh.cacheBackend == "shm" {
            for key in changedCacheKeys {
                logger.warning("SIGHUP: \(key.name) changes only with a restart while the shm cache is in use; keeping \(key.render(configuration))")
                try? key.assign(&fresh, key.render(configuration))
            }
        } else if !changedCacheKeys.isEmpty {
            do {
                freshCache = try fresh.makeCacheBeforeFork()
            } catch {
                logger.error("SIGHUP: configuration not reloaded, keeping the running one: \(error)")
                return
            }
        }
        cacheForWorkers = freshCache
        fresh.master = configuration.master
        fresh.host = configuration.host
        fresh.port = firstSockets.port
        fresh.loops = configuration.loops
        fresh.accept = configuration.accept
        configuration = fresh
        logger.info("SIGHUP: reloading", metadata: ["workers": "\(fresh.workers)"])
        reloading = true
        notifier.reloading()

        let removed = positions.subtracting(0..<fresh.workers)
        positions = Set(0..<fresh.workers)
        for position in removed { retirePosition(position) }
        // Every running worker is old now; staffPositions starts the new ones.
        for (slot, worker) in workers where !worker.retiring { awaitingReplacement.insert(slot) }
        bootFailures.removeAll()
        retryAt.removeAll()
    }

    /// A position goes away: its workers stop, and the master closes its copy of the
    /// position's sockets at once, so the kernel stops sending new connections there as soon as
    /// the worker closes its own.
    private func retirePosition(_ position: Int) {
        for (slot, worker) in workers where worker.position == position && !worker.retiring {
            awaitingReplacement.remove(slot)
            tellToStop(slot)
        }
        if sharedSockets == nil { positionSockets.removeValue(forKey: position)?.close() }
        bootFailures[position] = nil
        retryAt[position] = nil
    }

    private func tellToStop(_ slot: Int) {
        guard let worker = workers[slot], !worker.retiring else { return }
        workers[slot]?.stoppedAt = MonotonicClock.now()
        kill(worker.pid, SIGTERM)
    }

    /// Reload: an old worker stops once a new worker at its position is ready.
    private func stopReplacedWorkers() {
        for slot in awaitingReplacement {
            guard let old = workers[slot] else {
                awaitingReplacement.remove(slot)
                continue
            }
            let replaced = workers.contains { other in
                other.key != slot && other.value.position == old.position && !other.value.retiring
                    && !awaitingReplacement.contains(other.key) && scoreboard.state(slot: other.key) == .ready
            }
            if replaced {
                awaitingReplacement.remove(slot)
                tellToStop(slot)
            }
        }
    }

    /// A worker that reached a recycling limit asks for a replacement and keeps serving; it
    /// stops, like an old worker in a reload, once the replacement is ready.
    private func noticeRecyclingWorkers() {
        for (slot, worker) in workers where !worker.retiring && !awaitingReplacement.contains(slot)
            && scoreboard.state(slot: slot) == .retiring {
            logger.info("worker \(worker.pid) is recycling; starting its replacement")
            awaitingReplacement.insert(slot)
        }
    }

    // MARK: Ends of workers

    /// Reaps every exited worker; `staffPositions` then replaces those still needed. A worker
    /// that dies while booting counts towards giving up on its position.
    private func reapWorkers() -> Int32? {
        while true {
            var status: Int32 = 0
            let child = waitpid(-1, &status, WNOHANG)
            guard child > 0 else { return nil }
            guard let slot = workers.first(where: { $0.value.pid == child })?.key, let worker = workers.removeValue(forKey: slot) else {
                continue
            }
            awaitingReplacement.remove(slot)
            let wasBooting = scoreboard.state(slot: slot) == .booting
            let bootError = scoreboard.bootError(slot: slot)
            scoreboard.clear(slot: slot)
            let how = Self.describe(status)
            if stopping || worker.retiring || !positions.contains(worker.position) {
                logger.info("worker stopped", metadata: ["pid": "\(child)", "status": "\(how)"])
            } else if wasBooting {
                let cause = bootError ?? how
                noteBootFailure(at: worker.position, cause: cause)
                logger.error("worker \(child) failed to boot (\(cause))")
            } else {
                logger.warning("worker \(child) \(how); starting a replacement")
            }
        }
    }

    /// A worker whose first loop has not beaten for `worker_timeout` is stuck: SIGABRT (a core
    /// dump shows where), and SIGKILL if that does not end it within two seconds.
    private func checkHeartbeats() {
        let now = MonotonicClock.now()
        let timeout = UInt64(configuration.workerTimeout * 1e9)
        let stopGrace = UInt64((configuration.gracefulTimeout + 5) * 1e9)
        for (slot, worker) in workers {
            if let abortedAt = worker.abortedAt {
                if now - abortedAt > 2_000_000_000 { kill(worker.pid, SIGKILL) }
                continue
            }
            // A worker told to stop that is still here long after its grace period is stuck.
            if let stoppedAt = worker.stoppedAt {
                if now - stoppedAt > stopGrace {
                    logger.error("worker \(worker.pid) did not stop within graceful_timeout; killing it")
                    kill(worker.pid, SIGKILL)
                    workers[slot]?.abortedAt = now
                }
                continue
            }
            let state = scoreboard.state(slot: slot)
            guard state == .ready || state == .booting || state == .retiring else { continue }
            let last = scoreboard.heartbeat(slot: slot)
            if now > last && now - last > timeout {
                logger.error("worker \(worker.pid) missed its heartbeat for \(configuration.workerTimeout) s; aborting it")
                kill(worker.pid, SIGABRT)
                workers[slot]?.abortedAt = now
            }
        }
    }

    /// Signals every worker (TERM to finish in-flight requests, INT to stop now), waits for
    /// them, and kills any still running after the grace period.
    private func stop(graceful: Bool, status: Int32) -> Int32 {
        stopping = true
        notifier.stopping()
        for worker in workers.values { kill(worker.pid, graceful ? SIGTERM : SIGINT) }
        let grace = graceful ? configuration.gracefulTimeout + 5 : 5
        let deadline = MonotonicClock.now() + UInt64(grace * 1e9)
        while !workers.isEmpty && MonotonicClock.now() < deadline {
            _ = reapWorkers()
            if !workers.isEmpty { usleep(10_000) }
        }
        for (slot, worker) in workers {
            logger.warning("worker \(worker.pid) did not stop in time; killing it")
            kill(worker.pid, SIGKILL)
            var ignored: Int32 = 0
            waitpid(worker.pid, &ignored, 0)
            scoreboard.clear(slot: slot)
        }
        workers.removeAll()
        return status
    }

    static func describe(_ status: Int32) -> String {
        let signal = status & 0x7f
        if signal == 0 { return "exited with status \((status >> 8) & 0xff)" }
        return "was killed by signal \(signal) (\(String(cString: strsignal(signal))))"
    }
}
