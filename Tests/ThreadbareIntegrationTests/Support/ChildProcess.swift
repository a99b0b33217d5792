import Foundation

/// A child process started with posix_spawn and reaped by this object alone, with waitpid on
/// its own pid. Not Foundation's `Process`: under ThreadSanitizer its SIGCHLD handling can miss
/// an exit, and then `waitUntilExit` waits for ever on a zombie (seen in CI).
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    private let lock = NSLock()
    private var exitStatus: Int32?

    /// Starts `executable` with `arguments` and exactly `environment`; stdin is /dev/null,
    /// stdout and stderr go to the files at those paths (or /dev/null).
    init(_ executable: String, _ arguments: [String], environment: [String: String],
         standardOutput: String? = nil, standardError: String? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, standardOutput ?? "/dev/null", O_WRONLY | O_APPEND, 0)
        posix_spawn_file_actions_addopen(&actions, 2, standardError ?? "/dev/null", O_WRONLY | O_APPEND, 0)
        // Nothing else of the runner's: a child holding a copy of some test's client socket
        // would keep that connection open after the test closed it. (glibc 2.34; Swift's Glibc
        // module does not declare the GNU extension, so look it up.)
        guard let closeFrom = Self.closeFrom else { throw SpawnFailed(executable: executable, reason: "glibc lacks posix_spawn_file_actions_addclosefrom_np") }
        _ = closeFrom(&actions, 3)
        // The test runner blocks no signal the child needs, but say so rather than inherit.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var spawned: pid_t = 0
        let status = posix_spawn(&spawned, executable, &actions, &attributes, argv, envp)
        guard status == 0 else { throw SpawnFailed(executable: executable, reason: String(cString: strerror(status))) }
        pid = spawned
    }

    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let closeFrom: CloseFrom? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        .map { unsafeBitCast($0, to: CloseFrom.self) }

    /// Reaps the child if it has exited.
    var isRunning: Bool {
        lock.withLock {
            guard exitStatus == nil else { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { exitStatus = status }
            return exitStatus == nil
        }
    }

    /// Waits up to `seconds` for the exit; true if it came.
    func waitForExit(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        return !isRunning
    }

    /// The exit code, or the signal that ended the process; -1 while it runs.
    var terminationStatus: Int32 {
        lock.withLock {
            guard let status = exitStatus else { return -1 }
            let signal = status & 0x7F
            return signal == 0 ? (status >> 8) & 0xFF : signal
        }
    }

    /// True when a signal, not an exit, ended it.
    var wasKilledBySignal: Bool {
        lock.withLock { exitStatus.map { $0 & 0x7F != 0 } ?? false }
    }
}

struct SpawnFailed: Error, CustomStringConvertible {
    let executable: String
    let reason: String
    var description: String { "cannot start \(executable): \(reason)" }
}
