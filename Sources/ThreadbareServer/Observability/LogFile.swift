import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The file the logs go to when `log_file` names one. After logrotate has moved it away,
/// SIGUSR1 makes the server reopen the path, as nginx and gunicorn do. Reopening puts the new
/// file under the same descriptor number (dup2), so a line being written meanwhile lands whole
/// in one file or the other.
public final class LogFile: Sendable {
    public let path: String
    private let descriptor: Int32

    public init(path: String) throws {
        self.path = path
        descriptor = try Self.open(path)
    }

    deinit {
        close(descriptor)
    }

    public func reopen() throws {
        let fresh = try Self.open(path)
        defer { close(fresh) }
        guard dup2(fresh, descriptor) >= 0 else {
            throw SocketError(description: "cannot reopen log file \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Lines this process could not write (a full disk, a file system gone read-only). The
    /// server goes on serving without them; `/stats` reports how many.
    public static let linesLost = Atomic<Int>(0)

    /// One write(2) per line: with O_APPEND, lines from several processes never interleave.
    func write(_ text: String) {
        var text = text
        let written = text.withUTF8 { bytes in Glibc.write(descriptor, bytes.baseAddress, bytes.count) }
        if written < 0 { Self.linesLost.add(1, ordering: .relaxed) }
    }

    private static func open(_ path: String) throws -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw SocketError(description: "cannot open log file \(path): \(String(cString: strerror(errno)))")
        }
        return fd
    }
}

/// A `LogFile` as swift-log's `StreamLogHandler` writes to it.
public struct LogFileStream: TextOutputStream, Sendable {
    let file: LogFile

    public init(_ file: LogFile) {
        self.file = file
    }

    public mutating func write(_ string: String) {
        file.write(string)
    }
}
