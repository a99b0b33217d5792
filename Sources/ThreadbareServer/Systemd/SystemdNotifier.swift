#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd, as gunicorn's systemd.sd_notify sends it: one datagram of
/// `KEY=value` lines to the Unix socket named by `NOTIFY_SOCKET` (a leading `@` is the abstract
/// namespace). With `Type=notify` systemd counts the service started at `READY=1`, shows
/// `STATUS=`, holds `systemctl reload` until the `READY=1` that follows `RELOADING=1`, and
/// knows a stop is under way at `STOPPING=1`.
///
/// The variable stays set: a single-process server reloading in place is the same process
/// after exec and must still be able to say it is ready.
public struct SystemdNotifier: Sendable {
    private let path: [UInt8]?

    public init(environment value: String? = getenv("NOTIFY_SOCKET").map { String(cString: $0) }) {
        guard let value, value.count > 1, value.hasPrefix("/") || value.hasPrefix("@") else {
            path = nil
            return
        }
        var bytes = Array(value.utf8)
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }
        path = bytes
    }

    public func ready(status: String) { send(["READY=1", "STATUS=\(status)", "MAINPID=\(getpid())"]) }

    /// `MONOTONIC_USEC` is what `Type=notify-reload` (systemd 253) requires with RELOADING=1.
    public func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        send(["RELOADING=1", "MONOTONIC_USEC=\(Int(now.tv_sec) * 1_000_000 + Int(now.tv_nsec) / 1000)", "STATUS=reloading"])
    }

    public func stopping() { send(["STOPPING=1", "STATUS=stopping"]) }

    /// Best effort, as sd_notify is: a supervisor that went away must not stop the server.
    func send(_ lines: [String]) {
        guard let path, path.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        // An abstract name is exactly its bytes; a path ends at its NUL.
        let length = MemoryLayout<sa_family_t>.size + path.count + (path[0] == 0 ? 0 : 1)
        let message = Array(lines.joined(separator: "\n").utf8)
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { target in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), target, socklen_t(length)) }
            }
        }
    }
}
