import Foundation
import Testing

/// A real memcached (Debian's package, which `make test` installs), started on a free port for
/// one test and stopped after it.
final class MemcachedServer: @unchecked Sendable {
    static let binary = "/usr/bin/memcached"
    static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    let port: Int
    let megabytes: Int
    private var process: ChildProcess?

    var address: String { "127.0.0.1:\(port)" }

    init(megabytes: Int = 64) throws {
        guard Self.isInstalled else {
            throw MemcachedMissing()
        }
        self.megabytes = megabytes
        port = try Self.freePort()
        try start()
    }

    /// Starts (or starts again, on the same port) and waits until it accepts connections.
    func start() throws {
        // -u: memcached refuses to run as root without being told which user to be.
        let process = try ChildProcess(Self.binary, ["-p", String(port), "-l", "127.0.0.1", "-U", "0", "-m", String(megabytes), "-t", "2"]
                                       + (getuid() == 0 ? ["-u", "root"] : []), environment: [:])
        self.process = process
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && process.isRunning {
            if Self.answersVersion(port: port) { return }
            Thread.sleep(forTimeInterval: 0.01)
        }
        throw MemcachedMissing(reason: process.isRunning ? "memcached did not answer on port \(port) within 10 s"
                                                         : "memcached exited at start (port \(port) taken?)")
    }

    /// True when what listens on `port` is a memcached (not whatever else took the port).
    static func answersVersion(port: Int) -> Bool {
        guard let fd = try? HTTPConnection.connectedSocket(port: port, timeoutSeconds: 1) else { return false }
        defer { close(fd) }
        guard send(fd, "version\r\n", 9, Int32(MSG_NOSIGNAL)) == 9 else { return false }
        var reply = [UInt8](repeating: 0, count: 64)
        let count = recv(fd, &reply, reply.count, 0)
        return count > 0 && String(decoding: reply[..<count], as: UTF8.self).hasPrefix("VERSION")
    }

    func stop() {
        guard let process, process.isRunning else { return }
        kill(process.pid, SIGKILL)
        _ = process.waitForExit(within: 10)
        self.process = nil
    }

    deinit { stop() }

    /// A free port below the kernel's ephemeral range (32768 and up), so that while memcached
    /// is stopped and started again no port-0 server and no outgoing connection takes it.
    static func freePort() throws -> Int {
        for _ in 0..<100 {
            let port = Int.random(in: 20_000..<32_000)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            if bound { return port }
        }
        throw MemcachedMissing(reason: "no free port for memcached between 20000 and 32000")
    }
}

struct MemcachedMissing: Error, CustomStringConvertible {
    var reason = "memcached is not installed: `make test` installs it (apt-get install memcached)"
    var description: String { reason }
}
