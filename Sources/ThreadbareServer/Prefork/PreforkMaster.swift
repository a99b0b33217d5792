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
/// Signals: TERM stops gracefully (workers finish in-flight requests for up to
/// `graceful_timeout`), INT and QUIT stop at once, TTIN and TTOU add and remove a worker (never
/// below one). A dead worker is replaced; one that cannot boot three times in a row stops the
/// master with its reason. A worker whose loop misses its heartbeat for `worker_timeout` gets
/// SIGABRT, then SIGKILL, and is replaced.
public final class PreforkMaster {
    private let configuration: ServerConfiguration
    private let logger: Logger
    private let scoreboard: Scoreboard
    private let pid = getpid()

    /// `accept: shared`: the sockets every worker accepts on.
    private let sharedSockets: ListeningSockets?
    /// `accept: reuseport`: each slot's own SO_REUSEPORT sockets. The master keeps them open, so
    /// connections queued on a dead worker's socket wait for its replacement instead of failing.
    private var slotSockets: [Int: ListeningSockets] = [:]
    private let firstSockets: ListeningSockets

    /// Slots that should have a worker, and the worker each one has now.
    private var activeSlots: Set<Int>
    private var workers: [Int: pid_t] = [:]
    private var bootFailures: [Int: Int] = [:]
    /// When each stuck worker was sent SIGABRT.
    private var aborted: [Int: UInt64] = [:]
    private var stopping = false

    static let bootAttempts = 3
    static let signals = [SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1]

    /// Binds the sockets; no worker runs yet.
    public init(configuration: ServerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        scoreboard = try Scoreboard()
        let first = try ListeningSockets.bind(
            host: configuration.host, port: configuration.port, count: configuration.loops, backlog: configuration.backlog)
        firstSockets = first
        if configuration.accept == "shared" {
            sharedSockets = first
        } else {
            sharedSockets = nil
            slotSockets[0] = first
        }
        activeSlots = Set(0..<configuration.workers)
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

        for slot in activeSlots.sorted() {
            guard spawn(slot: slot) else { return stop(graceful: false, status: 1) }
        }
        var announced = false
        while true {
            if !announced && activeSlots.allSatisfy({ scoreboard.state(slot: $0) == .ready }) {
                announced = true
                logger.info("workers ready", metadata: ["workers": "\(activeSlots.count)", "accept": "\(configuration.accept)"])
                onReady()
            }
            var info = siginfo_t()
            var wait = timespec(tv_sec: 0, tv_nsec: 100_000_000)
            let signal = sigtimedwait(&signalSet, &info, &wait)
            switch signal {
            case SIGTERM:
                logger.info("SIGTERM: stopping gracefully", metadata: ["graceful_timeout_s": "\(configuration.gracefulTimeout)"])
                return stop(graceful: true, status: 0)
            case SIGINT, SIGQUIT:
                logger.info("\(signal == SIGINT ? "SIGINT" : "SIGQUIT"): stopping now")
                return stop(graceful: false, status: 0)
            case SIGTTIN:
                addWorker()
            case SIGTTOU:
                removeWorker()
            case SIGHUP:
                logger.warning("SIGHUP: rolling reload is not implemented yet; ignored")
            case SIGUSR1:
                logger.info("SIGUSR1: logs go to stderr; there is no log file to reopen")
            default:
                break
            }
            if let status = reapWorkers() { return status }
            checkHeartbeats()
        }
    }

    // MARK: Workers

    private func sockets(for slot: Int) throws -> ListeningSockets {
        if let sharedSockets { return sharedSockets }
        if let existing = slotSockets[slot] { return existing }
        let made = try ListeningSockets.bind(
            host: firstSockets.host, port: firstSockets.port, count: configuration.loops, backlog: configuration.backlog,
            joining: true)
        slotSockets[slot] = made
        return made
    }

    private func spawn(slot: Int) -> Bool {
        let sockets: ListeningSockets
        do {
            sockets = try self.sockets(for: slot)
        } catch {
            logger.critical("cannot open sockets for a new worker: \(error)")
            return false
        }
        scoreboard.prepare(slot: slot)
        // Whatever sits in stdio buffers would otherwise be written twice.
        fflush(nil)
        let child = fork()
        if child == 0 {
            // Another slot's sockets stay with that slot: a retired slot's sockets must close
            // when the master closes them, not live on in a sibling.
            for (other, otherSockets) in slotSockets where other != slot { otherSockets.close() }
            PreforkWorker.run(slot: slot, sockets: sockets, configuration: configuration, scoreboard: scoreboard, masterPID: pid)
        }
        guard child > 0 else {
            logger.critical("fork failed: \(String(cString: strerror(errno)))")
            scoreboard.clear(slot: slot)
            return false
        }
        scoreboard.setPID(child, slot: slot)
        workers[slot] = child
        aborted[slot] = nil
        logger.debug("worker started", metadata: ["pid": "\(child)", "slot": "\(slot)"])
        return true
    }

    private func addWorker() {
        guard activeSlots.count < Scoreboard.capacity else {
            logger.warning("SIGTTIN: already at the most workers (\(Scoreboard.capacity))")
            return
        }
        let slot = (0...).first { !activeSlots.contains($0) && workers[$0] == nil }!
        activeSlots.insert(slot)
        logger.info("SIGTTIN: one worker more", metadata: ["workers": "\(activeSlots.count)"])
        if !spawn(slot: slot) { activeSlots.remove(slot) }
    }

    private func removeWorker() {
        guard activeSlots.count > 1, let slot = activeSlots.max() else {
            logger.info("SIGTTOU: one worker is the fewest")
            return
        }
        activeSlots.remove(slot)
        logger.info("SIGTTOU: one worker fewer", metadata: ["workers": "\(activeSlots.count)"])
        if let worker = workers[slot] { kill(worker, SIGTERM) }
    }

    /// Reaps every exited worker and replaces those still wanted. Returns an exit status when
    /// the master must give up.
    private func reapWorkers() -> Int32? {
        while true {
            var status: Int32 = 0
            let child = waitpid(-1, &status, WNOHANG)
            guard child > 0 else { return nil }
            guard let slot = workers.first(where: { $0.value == child })?.key else { continue }
            workers[slot] = nil
            let wasBooting = scoreboard.state(slot: slot) == .booting
            let bootError = scoreboard.bootError(slot: slot)
            scoreboard.clear(slot: slot)
            let how = Self.describe(status)
            guard activeSlots.contains(slot), !stopping else {
                // Retired by TTOU: its sockets go with it.
                if !activeSlots.contains(slot), sharedSockets == nil, let retired = slotSockets.removeValue(forKey: slot) {
                    retired.close()
                }
                logger.info("worker stopped", metadata: ["pid": "\(child)", "status": "\(how)"])
                continue
            }
            if wasBooting {
                let failures = bootFailures[slot, default: 0] + 1
                bootFailures[slot] = failures
                let cause = bootError ?? how
                if failures >= Self.bootAttempts {
                    logger.critical("a worker failed to boot \(failures) times in a row; giving up: \(cause)")
                    return stop(graceful: false, status: 1)
                }
                logger.error("worker \(child) failed to boot (\(cause)); trying again")
            } else {
                bootFailures[slot] = 0
                logger.warning("worker \(child) \(how); starting a replacement")
            }
            guard spawn(slot: slot) else { return stop(graceful: false, status: 1) }
        }
    }

    /// A worker whose first loop has not beaten for `worker_timeout` is stuck: SIGABRT (a core
    /// dump shows where), and SIGKILL if that does not end it within two seconds.
    private func checkHeartbeats() {
        let now = MonotonicClock.now()
        let timeout = UInt64(configuration.workerTimeout * 1e9)
        for (slot, worker) in workers {
            if let abortedAt = aborted[slot] {
                if now - abortedAt > 2_000_000_000 { kill(worker, SIGKILL) }
                continue
            }
            let state = scoreboard.state(slot: slot)
            guard state == .ready || state == .booting else { continue }
            let last = scoreboard.heartbeat(slot: slot)
            if now > last && now - last > timeout {
                logger.error("worker \(worker) missed its heartbeat for \(configuration.workerTimeout) s; aborting it")
                kill(worker, SIGABRT)
                aborted[slot] = now
            }
        }
    }

    /// Signals every worker (TERM to finish in-flight requests, INT to stop now), waits for
    /// them, and kills any still running after the grace period.
    private func stop(graceful: Bool, status: Int32) -> Int32 {
        stopping = true
        for worker in workers.values { kill(worker, graceful ? SIGTERM : SIGINT) }
        let grace = graceful ? configuration.gracefulTimeout + 5 : 5
        let deadline = MonotonicClock.now() + UInt64(grace * 1e9)
        while !workers.isEmpty && MonotonicClock.now() < deadline {
            _ = reapWorkers()
            if !workers.isEmpty { usleep(10_000) }
        }
        for (slot, worker) in workers {
            logger.warning("worker \(worker) did not stop in time; killing it")
            kill(worker, SIGKILL)
            var ignored: Int32 = 0
            waitpid(worker, &ignored, 0)
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
