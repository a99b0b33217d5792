import CLibevent
#if canImport(Glibc)
import Glibc
#endif

/// One prefork worker: a whole Threadbare server in a process of its own, on sockets its master
/// bound. It runs in a child the master has just forked. The master never starts a thread or
/// an event loop (it only forks, waits and signals), so the child starts with the one thread
/// that called fork and consistent memory, and builds its loops and handler threads from
/// scratch, like a process that has just started.
///
/// Except in one respect: the Swift runtime's own locks (`swift_once`, the metadata caches)
/// are futexes that record their owner's kernel thread id, which the runtime caches per thread
/// and never refreshes (swift/Threading/Impl/Linux/ulock.h). In the child, the thread that
/// forked still carries its parent's id: it takes those locks in the master's name, so a second
/// thread waiting on one (FUTEX_LOCK_PI) waits for a thread of another process, the unlock
/// fails with EPERM, and the worker hangs while it boots. This was seen under ThreadSanitizer,
/// which widens the race, but nothing confines it there. So the forked thread runs no Swift
/// code once another thread exists: it starts one fresh thread, whose id is its own, to be the
/// worker, and waits for it.
enum PreforkWorker {
    /// The worker's exit status when it could not boot, as gunicorn's WORKER_BOOT_ERROR.
    static let bootFailureStatus: Int32 = 3

    static func run(slot: Int, sockets: ListeningSockets, configuration: ServerConfiguration, inheritedCache: (any CacheBackend)?,
                    scoreboard: Scoreboard, masterPID: pid_t, reopenLogs: @escaping @Sendable () -> Void) -> Never {
        // Orphan detection: the kernel sends TERM (a graceful stop) when the master dies. The
        // master may already have died between fork and here, so look once ourselves.
        threadbare_set_parent_death_signal(SIGTERM)
        if getppid() != masterPID { exit(0) }

        let worker: OSThread
        do {
            worker = try OSThread(name: "tb-worker") {
                serve(slot: slot, sockets: sockets, configuration: configuration, inheritedCache: inheritedCache,
                      scoreboard: scoreboard, reopenLogs: reopenLogs)
            }
        } catch {
            scoreboard.recordBootError("\(error)", slot: slot)
            exit(bootFailureStatus)
        }
        // `serve` ends the process; this thread only waits, in the kernel.
        worker.join()
        exit(0)
    }

    /// The worker itself, on its own thread. Signals stay blocked in every thread (the master
    /// blocked them before forking), so sigwait here receives those sent to the process.
    private static func serve(slot: Int, sockets: ListeningSockets, configuration: ServerConfiguration, inheritedCache: (any CacheBackend)?,
                              scoreboard: Scoreboard, reopenLogs: @Sendable () -> Void) -> Never {
        let pid = getpid()
        scoreboard.setPID(pid, slot: slot)
        // Each worker its own jitter, so workers started together do not retire together.
        let jitter = configuration.maxRequestsJitter > 0 ? Int.random(in: 0...configuration.maxRequestsJitter) : 0
        let seat = ScoreboardSeat(
            scoreboard: scoreboard, slot: slot,
            maxRequests: configuration.maxRequests > 0 ? configuration.maxRequests + jitter : 0,
            maxResidentBytes: configuration.maxRSSMegabytes * 1_048_576)
        let server: Server
        do {
            server = try Server(
                configuration: configuration, sockets: sockets, fixedHeaders: [("X-Worker", String(pid))], seat: seat,
                inheritedCache: inheritedCache, preloadedBeforeFork: true)
            try server.start()
        } catch {
            scoreboard.recordBootError("\(error)", slot: slot)
            exit(bootFailureStatus)
        }
        scoreboard.beat(slot: slot)
        seat.finishBooting()

        // The master blocked these before forking; the mask is inherited, so sigwait takes them.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        for signal in [SIGTERM, SIGINT, SIGQUIT, SIGUSR1] { sigaddset(&stopSignals, signal) }
        var received: Int32 = 0
        while sigwait(&stopSignals, &received) == 0 && received == SIGUSR1 {
            reopenLogs()
        }
        scoreboard.setState(.stopping, slot: slot)
        // TERM: finish what is in flight (gunicorn's graceful stop); INT and QUIT: stop now.
        server.shutdown(gracefulTimeout: received == SIGTERM ? configuration.gracefulTimeout : 0)
        exit(0)
    }
}
