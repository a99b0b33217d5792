#if canImport(Glibc)
import Glibc
#endif

/// systemd's socket activation, read as sd_listen_fds(3) describes it and gunicorn's
/// systemd.listen_fds reads it, without libsystemd: when `LISTEN_PID` is this process,
/// `LISTEN_FDS` listening sockets wait at descriptors 3, 4, … and are served instead of binding.
/// The variables are removed once read, so nothing this process starts takes them for its own.
///
/// A single-process server reloading in place (`InPlaceReload`) hands its sockets to its next
/// image the same way, so a HUP keeps every connection waiting in the listen queue.
public enum SocketActivation {
    /// sd_listen_fds' SD_LISTEN_FDS_START.
    static let firstDescriptor: Int32 = 3

    /// The sockets passed to this process, or nil when none were (no `LISTEN_PID`, or one naming
    /// another process, as after a fork). Throws for a malformed count or a descriptor that is
    /// not a listening TCP socket.
    public static func takeInheritedDescriptors() throws -> [Int32]? {
        guard let pidText = getenv("LISTEN_PID").map({ String(cString: $0) }) else { return nil }
        let countText = getenv("LISTEN_FDS").map { String(cString: $0) } ?? ""
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(name) }
        guard let pid = Int32(pidText), pid > 0 else {
            throw SocketError(description: "socket activation: LISTEN_PID=\(pidText) is not a process id")
        }
        guard pid == getpid() else { return nil }
        guard let count = Int32(countText), count >= 1, count <= 64 else {
            throw SocketError(description: "socket activation: LISTEN_FDS=\(countText) is not a number of sockets from 1 to 64")
        }
        let descriptors = Array(firstDescriptor..<(firstDescriptor + count))
        for fd in descriptors {
            try checkListening(fd)
            // Like sd_listen_fds: the sockets are this process's own now, closed on exec.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        return descriptors
    }

    /// A listening stream socket of the internet families. libevent 2.1's evhttp cannot serve a
    /// Unix socket (it gives up on a connection whose peer has no numeric host name).
    private static func checkListening(_ fd: Int32) throws {
        func option(_ name: Int32) -> Int32? {
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            return getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0 ? value : nil
        }
        guard let type = option(SO_TYPE) else {
            throw SocketError(description: "socket activation: descriptor \(fd) is not a socket (\(String(cString: strerror(errno))))")
        }
        guard type == Int32(SOCK_STREAM.rawValue), option(SO_ACCEPTCONN) == 1 else {
            throw SocketError(description: "socket activation: descriptor \(fd) is not a listening stream socket (ListenStream= in the .socket unit)")
        }
        guard let family = option(SO_DOMAIN), family == AF_INET || family == AF_INET6 else {
            throw SocketError(description: "socket activation: descriptor \(fd) is not a TCP socket; libevent 2.1's HTTP server cannot serve Unix sockets")
        }
    }
}

extension ListeningSockets {
    /// What `configuration` serves: the sockets passed in, or its own bound to host:port.
    public static func opened(for configuration: ServerConfiguration, inherited: [Int32]?) throws -> ListeningSockets {
        if let inherited { return try ListeningSockets.inherited(inherited, loops: configuration.loops) }
        return try ListeningSockets.bind(host: configuration.host, port: configuration.port, count: configuration.loops,
                                         backlog: configuration.backlog)
    }

    /// Sockets passed in by systemd (or by this process's previous image), spread over `loops`
    /// event loops. Each loop gets a descriptor of its own: with more loops than sockets the
    /// extra loops get duplicates (evhttp closes the descriptor it was given when a loop stops
    /// accepting, so two loops must never hold one number), and with more sockets than loops
    /// every socket still gets a loop. Loops sharing one socket share its accept queue, as
    /// prefork's `accept: shared` workers do; one socket per loop (several ListenStream= lines
    /// with ReusePort=) lets the kernel spread connections evenly instead.
    public static func inherited(_ descriptors: [Int32], loops: Int) throws -> ListeningSockets {
        precondition(!descriptors.isEmpty)
        var fds = descriptors
        while fds.count < loops {
            let copy = fcntl(descriptors[fds.count % descriptors.count], F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else {
                throw SocketError(description: "socket activation: cannot duplicate a socket for a loop: \(String(cString: strerror(errno)))")
            }
            fds.append(copy)
        }
        let (host, port) = localAddress(of: descriptors[0])
        return ListeningSockets(fds: fds, host: host, port: port, inherited: true, distinctCount: descriptors.count)
    }

    /// Copies of these sockets that outlive the loops (which close theirs when they stop
    /// accepting): what a reload hands to the next image.
    /// Only the distinct sockets: the next image spreads them over its own loops.
    public func duplicated() throws -> [Int32] {
        var copies: [Int32] = []
        for fd in fds.prefix(distinctCount) {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else {
                copies.forEach { _ = Glibc.close($0) }
                throw SocketError(description: "cannot duplicate a listening socket: \(String(cString: strerror(errno)))")
            }
            copies.append(copy)
        }
        return copies
    }
}
