#if canImport(Glibc)
import Glibc
#endif

/// HUP for a single-process mode. A prefork master reloads by starting new workers beside the
/// old ones; one process has no one to hand its connections to. So it stops accepting,
/// finishes what is in flight (the caller's graceful shutdown), and executes its own command
/// line again, handing its listening sockets to the new image as systemd's socket activation
/// would (`LISTEN_FDS`, `LISTEN_PID`). The process id stays, so systemd's `Type=notify` sees
/// the same main process say `READY=1` again; connections that arrive meanwhile wait in the
/// listen queue, which the kernel keeps while any descriptor holds the socket. What that pause
/// costs is what prefork's reload avoids.
public enum InPlaceReload {
    /// Replaces this process's image with a fresh start of its command line, serving
    /// `descriptors` (copies of the listening sockets). Returns only when exec failed, with why.
    public static func exec(serving descriptors: [Int32]) -> String {
        let first = SocketActivation.firstDescriptor
        let count = Int32(descriptors.count)
        // Out of the way first: a socket may already sit at a number another one is moving to.
        var lifted: [Int32] = []
        for fd in descriptors {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, first + count)
            guard copy >= 0 else { return "cannot move a listening socket: \(String(cString: strerror(errno)))" }
            lifted.append(copy)
        }
        // Nothing else this process opened (log file, memcached connections, eventfds) may
        // live on in the next image.
        closeOnExec(from: first)
        for (index, fd) in lifted.enumerated() where dup2(fd, first + Int32(index)) < 0 {
            return "cannot place a listening socket at descriptor \(first + Int32(index)): \(String(cString: strerror(errno)))"
        }
        // The environment for the next image is built here rather than set: handler threads
        // may still run (requests past the graceful timeout) and read it.
        var environment = ConfigurationLoader.processEnvironment()
            .filter { !["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"].contains($0.key) }
            .map { "\($0.key)=\($0.value)" }
        environment += ["LISTEN_FDS=\(count)", "LISTEN_PID=\(getpid())"]
        fflush(nil)

        // The command as it was started (its name stays `threadbare` for ps and systemctl
        // status, and an upgraded binary is the one that starts), else this very image.
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        let environ = environment.map { strdup($0) } + [nil]
        defer { (arguments + environ).forEach { free($0) } }
        let program = CommandLine.arguments[0]
        execve(path(of: program), arguments, environ)
        let reason = String(cString: strerror(errno))
        execve("/proc/self/exe", arguments, environ)
        return "cannot execute \(program) (\(reason)) nor /proc/self/exe (\(String(cString: strerror(errno))))"
    }

    /// A program named without a slash, found on PATH as the shell found it.
    private static func path(of program: String) -> String {
        guard !program.contains("/") else { return program }
        let directories = (getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        return directories.map { "\($0)/\(program)" }.first { access($0, X_OK) == 0 } ?? program
    }

    /// Marks every open descriptor from `first` on close-on-exec.
    private static func closeOnExec(from first: Int32) {
        guard let directory = opendir("/proc/self/fd") else { return }
        defer { closedir(directory) }
        let own = dirfd(directory)
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard let fd = Int32(name), fd >= first, fd != own else { continue }
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }
    }
}
