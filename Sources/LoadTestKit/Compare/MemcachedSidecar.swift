import CLibevent
import Foundation
import Yams
#if canImport(Glibc)
import Glibc
#endif

/// The memcached a mode's configuration relies on, run by compare beside the server. When the
/// mode's effective configuration (`threadbare config check`) says `cache.backend: memcached`
/// at a loopback address where no memcached answers, compare starts Debian's memcached there
/// for the mode's run, counts its memory with the server's (it is part of what the mode
/// costs) and stops it afterwards. A memcached already answering is used as it is.
final class MemcachedSidecar {
    private let process: Process
    let pid: Int32

    static let binary = "/usr/bin/memcached"

    /// The servers of the configuration's pool that compare must start: those on this machine
    /// where none answers. Any started before a failure are stopped.
    static func startIfNeeded(threadbare: String, config: String) throws -> [MemcachedSidecar] {
        var started: [MemcachedSidecar] = []
        do {
            for (host, port) in try memcachedAddresses(threadbare: threadbare, config: config)
            where ["127.0.0.1", "localhost", "::1"].contains(host) && !answers(host: host, port: port) {
                guard FileManager.default.isExecutableFile(atPath: binary) else {
                    throw ServerUnderTest.StartFailure(description: "\(config) uses cache.backend: memcached at \(host):\(port), where none answers, and \(binary) is not installed (apt-get install memcached)")
                }
                started.append(try MemcachedSidecar(host: host, port: port))
            }
        } catch {
            started.forEach { $0.stop() }
            throw error
        }
        return started
    }

    private init(host: String, port: Int) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        // -u: memcached refuses to run as root without being told which user to be.
        process.arguments = ["-p", String(port), "-l", host, "-U", "0", "-m", "64"] + (getuid() == 0 ? ["-u", "root"] : [])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw ServerUnderTest.StartFailure(description: "cannot run \(Self.binary): \(error)")
        }
        pid = process.processIdentifier
        let deadline = Date().addingTimeInterval(5)
        while !Self.answers(host: host, port: port) {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw ServerUnderTest.StartFailure(description: "memcached did not answer on \(host):\(port) within 5 s")
            }
            usleep(10_000)
        }
    }

    func stop() {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        process.waitUntilExit()
    }

    /// cache.backend and cache.memcached (a list, or one server) as the mode will run with them.
    static func memcachedAddresses(threadbare: String, config: String) throws -> [(host: String, port: Int)] {
        let check = Process(), output = Pipe()
        check.executableURL = URL(fileURLWithPath: threadbare)
        check.arguments = ["config", "check", config]
        check.standardOutput = output
        check.standardError = FileHandle.nullDevice
        try check.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        check.waitUntilExit()
        guard check.terminationStatus == 0, let root = try? Yams.load(yaml: text) as? [String: Any],
              let cache = root["cache"] as? [String: Any], cache["backend"] as? String == "memcached" else { return [] }
        let servers = (cache["memcached"] as? [String]) ?? (cache["memcached"] as? String).map { [$0] } ?? []
        return servers.compactMap { address in
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else { return nil }
            var host = String(address[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            return (host, port)
        }
    }

    /// True when a memcached answers `version` at the address.
    static func answers(host: String, port: Int) -> Bool {
        guard let address = try? ResolvedAddress(Target(url: "http://\(host.contains(":") ? "[\(host)]" : host):\(port)/")) else { return false }
        let fd = address.makeSocket(flags: Int32(SOCK_CLOEXEC.rawValue))
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var limit = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        guard address.withSockaddr({ connect(fd, $0, $1) }) == 0,
              send(fd, "version\r\n", 9, Int32(MSG_NOSIGNAL)) == 9 else { return false }
        var reply = [UInt8](repeating: 0, count: 64)
        let count = read(fd, &reply, reply.count)
        return count > 0 && reply[..<count].starts(with: Array("VERSION".utf8))
    }
}
